"""Exponential-family leaves and the factorised leaf layer.

Every leaf region holds K densities, each a product over the region's variables (and over the
dims of a multi-dimensional variable) of one exponential-family density

    log p(x) = <theta, T(x)> - A(theta) + log h(x).

Because this is linear in the sufficient statistics T(x), the log-density of a whole leaf region
is one contraction of the stacked features [T(x), 1] against [theta, -A(theta)]. The layer
gathers each region's variables through a padded index (no dense scope tensor) and contracts
blocks of regions with batched matrix products. Marginalising a variable sets its features to
0, so it contributes log 1. The gradient of the output with respect to [theta, -A] is the
responsibility-weighted sum of [T(x), 1], which is exactly what an EM step needs.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class LeafFamily:
    """An exponential family with one parameter vector per (density, dim).

    Subclasses define the unconstrained parameters, the map to natural parameters and
    log-normaliser, the sufficient statistics, the support check, EM's maximum-likelihood
    update from expected statistics, sampling and the mode. Parameter tensors have shape
    (..., num_params) and statistics (..., num_stats).
    """

    name: str = ""
    num_params: int = 1
    num_stats: int = 1
    discrete: bool = True

    def init_params(self, shape: tuple[int, ...], data: torch.Tensor | None, generator: torch.Generator) -> torch.Tensor:
        raise NotImplementedError

    def natural(self, params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return natural parameters (..., num_stats) and log-normaliser (...,) incl. constant log h."""
        raise NotImplementedError

    def statistics(self, x: torch.Tensor) -> torch.Tensor:
        """Return T(x) with shape x.shape + (num_stats,)."""
        raise NotImplementedError

    def log_base_measure(self, x: torch.Tensor) -> torch.Tensor | None:
        """Return log h(x) where it depends on x, else None (constants live in the normaliser)."""
        return None

    def outside_support(self, x: torch.Tensor) -> torch.Tensor:
        """Return a bool tensor shaped like x, True where a value lies outside the support."""
        raise NotImplementedError

    def support(self) -> str:
        """Describe the support in a few words, for error messages."""
        raise NotImplementedError

    def support_fix(self) -> str:
        """Return one sentence on how to bring data into the support, for error messages."""
        raise NotImplementedError

    def from_expected(self, mean_stats: torch.Tensor) -> torch.Tensor:
        """Return parameters that match the given expected statistics (the EM M-step), projected into range."""
        raise NotImplementedError

    def distribution(self, params: torch.Tensor) -> torch.distributions.Distribution:
        raise NotImplementedError

    def mean_statistics(self, params: torch.Tensor) -> torch.Tensor:
        """Return E[T(x)] under each density, shape params.shape[:-1] + (num_stats,)."""
        return self.distribution(params).mean.unsqueeze(-1)

    def mode(self, params: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def config(self) -> dict:
        """Return the constructor arguments, for checkpoints."""
        return {}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v}" for k, v in self.config().items())
        return f"{type(self).__name__}({args})"


def _outside_integers(x: torch.Tensor, low: int, high: int) -> torch.Tensor:
    """Return True where x is not an integer in [low, high] (NaN included)."""
    return (x != torch.round(x)) | (x < low) | (x > high)


class Bernoulli(LeafFamily):
    """Bernoulli leaves on {0, 1}; the parameter is the logit of p(x = 1)."""

    name = "bernoulli"

    def __init__(self, min_prob: float = 1e-6):
        self.min_prob = min_prob

    def init_params(self, shape, data, generator):
        p = torch.rand(shape + (1,), generator=generator) * 0.8 + 0.1
        if data is not None:
            p = 0.5 * p + 0.5 * data.float().mean()
        return torch.logit(p)

    def natural(self, params):
        return params, F.softplus(params[..., 0])

    def statistics(self, x):
        return x.unsqueeze(-1)

    def outside_support(self, x):
        return _outside_integers(x, 0, 1)

    def support(self):
        return "integers in [0, 1]"

    def support_fix(self):
        return "Binarise the data, e.g. with (x > 0.5).float()"

    def from_expected(self, mean_stats):
        p = mean_stats.clamp(self.min_prob, 1 - self.min_prob)
        return torch.logit(p)

    def distribution(self, params):
        return torch.distributions.Bernoulli(logits=params[..., 0])

    def mode(self, params):
        return (params[..., 0] > 0).to(params.dtype)

    def config(self):
        return {"min_prob": self.min_prob}


class Binomial(LeafFamily):
    """Binomial leaves with `num_trials` trials on {0, ..., num_trials}; the parameter is a logit."""

    name = "binomial"

    def __init__(self, num_trials: int, min_prob: float = 1e-6):
        if num_trials < 1:
            raise ValueError(f"num_trials must be at least 1, got {num_trials}")
        self.num_trials = int(num_trials)
        self.min_prob = min_prob

    def init_params(self, shape, data, generator):
        p = torch.rand(shape + (1,), generator=generator) * 0.8 + 0.1
        if data is not None:
            p = 0.5 * p + 0.5 * (data.float().mean() / self.num_trials).clamp(0.05, 0.95)
        return torch.logit(p)

    def natural(self, params):
        return params, self.num_trials * F.softplus(params[..., 0])

    def statistics(self, x):
        return x.unsqueeze(-1)

    def log_base_measure(self, x):
        n = self.num_trials
        return math.lgamma(n + 1) - torch.lgamma(x + 1) - torch.lgamma(n - x + 1)

    def outside_support(self, x):
        return _outside_integers(x, 0, self.num_trials)

    def support(self):
        return f"integers in [0, {self.num_trials}]"

    def support_fix(self):
        return f"Pass integer counts from 0 to {self.num_trials} or build the leaf with a larger num_trials"

    def from_expected(self, mean_stats):
        p = (mean_stats / self.num_trials).clamp(self.min_prob, 1 - self.min_prob)
        return torch.logit(p)

    def distribution(self, params):
        return torch.distributions.Binomial(self.num_trials, logits=params[..., 0])

    def mode(self, params):
        p = torch.sigmoid(params[..., 0])
        return torch.floor((self.num_trials + 1) * p).clamp(max=self.num_trials)

    def config(self):
        return {"num_trials": self.num_trials, "min_prob": self.min_prob}


class Categorical(LeafFamily):
    """Categorical leaves on {0, ..., num_values - 1}; the parameters are logits.

    T(x) is the one-hot vector of x, so the feature width grows with `num_values`.
    """

    name = "categorical"

    def __init__(self, num_values: int, min_prob: float = 1e-6):
        if num_values < 2:
            raise ValueError(f"num_values must be at least 2, got {num_values}")
        self.num_values = int(num_values)
        self.num_params = self.num_stats = self.num_values
        self.min_prob = min_prob

    def init_params(self, shape, data, generator):
        p = torch.rand(shape + (self.num_values,), generator=generator) + 0.1
        if data is not None:
            counts = torch.bincount(data.long().flatten(), minlength=self.num_values).float()
            p = p / p.sum(-1, keepdim=True) + counts / counts.sum()
        return torch.log(p / p.sum(-1, keepdim=True))

    def natural(self, params):
        log_probs = torch.log_softmax(params, dim=-1)
        return log_probs, torch.zeros_like(log_probs[..., 0])

    def statistics(self, x):
        return F.one_hot(x.long(), self.num_values).to(x.dtype)

    def outside_support(self, x):
        return _outside_integers(x, 0, self.num_values - 1)

    def support(self):
        return f"integers in [0, {self.num_values - 1}]"

    def support_fix(self):
        return f"Map the data to integer codes 0 to {self.num_values - 1} or build the leaf with a larger num_values"

    def from_expected(self, mean_stats):
        p = mean_stats.clamp_min(self.min_prob)
        return torch.log(p / p.sum(-1, keepdim=True))

    def distribution(self, params):
        return torch.distributions.Categorical(logits=params)

    def mean_statistics(self, params):
        return torch.softmax(params, dim=-1)

    def mode(self, params):
        return params.argmax(-1).to(params.dtype)

    def config(self):
        return {"num_values": self.num_values, "min_prob": self.min_prob}


class Normal(LeafFamily):
    """Normal leaves with the variance kept in [min_var, max_var].

    Parameters are the mean and a raw value r with variance = min_var + (max_var - min_var) * sigmoid(r).
    """

    name = "normal"
    num_params = 2
    num_stats = 2
    discrete = False

    def __init__(self, min_var: float = 1e-4, max_var: float = 1.0):
        if not 0 < min_var < max_var:
            raise ValueError(f"need 0 < min_var < max_var, got min_var={min_var}, max_var={max_var}")
        self.min_var = float(min_var)
        self.max_var = float(max_var)

    def variance(self, params: torch.Tensor) -> torch.Tensor:
        return self.min_var + (self.max_var - self.min_var) * torch.sigmoid(params[..., 1])

    def init_params(self, shape, data, generator):
        if data is None:
            mean = torch.rand(shape, generator=generator)
            var = torch.full(shape, 0.5 * (self.min_var + self.max_var))
        else:
            # Means at random data values keep the K densities of a region apart.
            flat = data.float().flatten()
            picks = torch.randint(len(flat), shape, generator=generator)
            mean = flat[picks] + 0.01 * torch.randn(shape, generator=generator) * flat.std()
            var = torch.full(shape, float(flat.var())).clamp(self.min_var, self.max_var)
        return torch.stack([mean, self._raw_variance(var)], dim=-1)

    def _raw_variance(self, var: torch.Tensor) -> torch.Tensor:
        fraction = (var - self.min_var) / (self.max_var - self.min_var)
        return torch.logit(fraction.clamp(1e-6, 1 - 1e-6))

    def natural(self, params):
        # One reciprocal shared by both natural parameters keeps the op count (and autograd graph) small.
        mean, raw = params.unbind(-1)
        var = self.min_var + (self.max_var - self.min_var) * torch.sigmoid(raw)
        precision = 1 / var
        scaled_mean = mean * precision
        natural = torch.stack([scaled_mean, -0.5 * precision], dim=-1)
        log_normaliser = 0.5 * (mean * scaled_mean + torch.log(2 * math.pi * var))
        return natural, log_normaliser

    def statistics(self, x):
        return torch.stack([x, x * x], dim=-1)

    def outside_support(self, x):
        return ~torch.isfinite(x)

    def support(self):
        return "finite real numbers"

    def support_fix(self):
        return "Replace the infinite values"

    def from_expected(self, mean_stats):
        mean = mean_stats[..., 0]
        var = (mean_stats[..., 1] - mean**2).clamp(self.min_var, self.max_var)
        return torch.stack([mean, self._raw_variance(var)], dim=-1)

    def distribution(self, params):
        return torch.distributions.Normal(params[..., 0], self.variance(params).sqrt())

    def mean_statistics(self, params):
        mean = params[..., 0]
        return torch.stack([mean, self.variance(params) + mean**2], dim=-1)

    def mode(self, params):
        return params[..., 0]

    def config(self):
        return {"min_var": self.min_var, "max_var": self.max_var}


LEAF_FAMILIES = {cls.name: cls for cls in (Bernoulli, Binomial, Categorical, Normal)}


def leaf_from_config(name: str, config: dict) -> LeafFamily:
    """Rebuild a leaf family from its name and `config()`."""
    if name not in LEAF_FAMILIES:
        raise ValueError(f"unknown leaf family {name!r}; expected one of {sorted(LEAF_FAMILIES)}")
    return LEAF_FAMILIES[name](**config)


# Gathered bytes per block of leaf regions in the leaf contraction. Blocks of a few MB stay in the
# CPU caches and keep the gathered copy from growing with the number of regions. The value was
# chosen with benchmarks/einet_speed.py --leaf-variants; see benchmarks/README.md.
DEFAULT_BLOCK_BYTES = 4 * 2**20


class _LeafContraction(torch.autograd.Function):
    """Contract every leaf region's gathered features [T(x), 1] with its weights [theta, -A].

    Inputs: per_var (num_vars + 1, F', batch) with the padding variable last; features
    (regions, width, K, F); index (regions * width,) variable of each position; real (regions,
    width), 1 at positions that contain a variable; with_count is True when per_var has the count
    column (F' = F) and False when every variable is observed and per_var leaves it out
    (F' = F - 1). Returns (regions, K, batch).

    Without the count column, each region's count weights add the constant sum over its real
    positions of -A. Blocks of `chunk` regions are gathered into one reused buffer, and the
    backward pass gathers them again instead of keeping them, so memory stays at one block and
    gradients flow to both per_var and features.
    """

    @staticmethod
    def forward(ctx, per_var, features, index, real, with_count, chunk):
        regions, width, K, _ = features.shape
        used, batch = per_var.shape[1:]
        out = per_var.new_empty(regions, K, batch)
        buffer = per_var.new_empty(min(chunk, regions) * width, used, batch)
        for start in range(0, regions, chunk):
            stop = min(start + chunk, regions)
            rows = index[start * width : stop * width]
            gathered = torch.index_select(per_var, 0, rows, out=buffer[: len(rows)]).view(stop - start, -1, batch)
            # (block, K, width * F'): contiguous rows give a faster product than a transposed view.
            block = features[start:stop, :, :, :used].transpose(1, 2).reshape(stop - start, K, -1)
            torch.bmm(block, gathered, out=out[start:stop])
        if not with_count:
            bias = (features[..., -1] * real.unsqueeze(-1)).sum(1)
            out += bias.unsqueeze(-1)
        ctx.save_for_backward(per_var, features, index, real)
        ctx.with_count, ctx.chunk = with_count, chunk
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        per_var, features, index, real = ctx.saved_tensors
        regions, width, K, _ = features.shape
        used, batch = per_var.shape[1:]
        grad_out = grad_out.contiguous()
        need_per_var, need_features = ctx.needs_input_grad[:2]

        grad_per_var = torch.zeros_like(per_var) if need_per_var else None
        # (regions, K, width * F'), the layout in which the product per block is fastest.
        grad_weights = features.new_empty(regions, K, width * used) if need_features else None
        buffer = per_var.new_empty(min(ctx.chunk, regions) * width, used, batch)
        for start in range(0, regions, ctx.chunk):
            stop = min(start + ctx.chunk, regions)
            rows = index[start * width : stop * width]
            grad_block = grad_out[start:stop]
            if need_features:
                gathered = torch.index_select(per_var, 0, rows, out=buffer[: len(rows)]).view(stop - start, -1, batch)
                torch.bmm(grad_block, gathered.transpose(1, 2), out=grad_weights[start:stop])
            if need_per_var:
                block = features[start:stop, :, :, :used].permute(0, 1, 3, 2).reshape(stop - start, -1, K)
                grad_gathered = torch.bmm(block, grad_block)
                grad_per_var.index_add_(0, rows, grad_gathered.view(-1, used, batch))
        grad_features = None
        if need_features:
            grad_features = torch.empty_like(features)
            grad_features[..., :used] = grad_weights.view(regions, K, width, used).transpose(1, 2)
            if not ctx.with_count:
                grad_features[..., -1] = real.unsqueeze(-1) * grad_out.sum(-1).unsqueeze(1)
        return grad_per_var, grad_features, None, None, None, None


class LeafLayer(nn.Module):
    """K factorised densities for every leaf region.

    Args:
        family: the exponential family of every density.
        index: (regions, width) variable indices of each leaf region, padded with num_vars.
        num_vars: number of variables.
        K: densities per leaf region.
        num_dims: dims per variable (3 for an RGB pixel).

    Shapes: `forward` maps x (batch, num_vars, num_dims) to (batch, regions, K).
    """

    def __init__(self, family: LeafFamily, index: torch.Tensor, num_vars: int, K: int, num_dims: int = 1):
        super().__init__()
        self.family = family
        self.num_vars = num_vars
        self.K = K
        self.num_dims = num_dims
        self.register_buffer("index", index, persistent=False)
        regions, width = index.shape
        self.register_buffer("real", (index < num_vars).to(torch.get_default_dtype()), persistent=False)
        self.block_bytes = DEFAULT_BLOCK_BYTES
        generator = torch.Generator().manual_seed(0)
        self.params = nn.Parameter(family.init_params((regions, width, K, num_dims), None, generator))

    def initialize_from_data(self, x: torch.Tensor, seed: int = 0) -> None:
        """Re-draw the parameters around the statistics of `x` (batch, num_vars, num_dims)."""
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            new = self.family.init_params(tuple(self.params.shape[:-1]), x.detach().cpu(), generator)
            self.params.copy_(new)

    def features(self, params: torch.Tensor | None = None) -> torch.Tensor:
        """Return [theta, -A(theta)] per (region, position, density) as (regions, width, K, F).

        F = num_dims * num_stats + 1: the natural parameters of each dim in turn, then minus the
        log-normaliser summed over the dims. These are the weights of the contraction in `forward`.
        """
        params = self.params if params is None else params
        natural, log_normaliser = self.family.natural(params)
        natural = natural.flatten(-2)
        return torch.cat([natural, -log_normaliser.sum(-1, keepdim=True)], dim=-1)

    def forward(self, x: torch.Tensor, observed: torch.Tensor | None, features: torch.Tensor) -> torch.Tensor:
        """Return log-densities (batch, regions, K), a view of a contiguous (regions, K, batch) tensor.

        Args:
            x: (batch, num_vars, num_dims) values; entries where `observed` is False are ignored.
            observed: (batch, num_vars) bool, or None when every variable is observed.
            features: output of `features()`, or a detached copy that records EM statistics.
        """
        batch = x.shape[0]
        # Variables first and the batch last, so that gathering a variable copies one contiguous row.
        x_t = x.permute(1, 2, 0)
        observed_t = None
        if observed is not None:
            observed_t = observed.t().unsqueeze(1)
            x_t = torch.where(observed_t, x_t, self.safe_value(x))
        stats = self.family.statistics(x_t).movedim(-1, 2).reshape(self.num_vars, -1, batch)
        if observed_t is not None:
            stats = torch.cat([stats, torch.ones_like(stats[:, :1])], dim=1) * observed_t.to(stats.dtype)
        # Row num_vars is the padding variable: all features 0, so padded positions add nothing.
        per_var = torch.cat([stats, stats.new_zeros(1, stats.shape[1], batch)], dim=0)

        with_count = observed_t is not None
        out = _LeafContraction.apply(per_var, features, self.index.flatten(), self.real, with_count, self.chunk_size(batch))

        log_h = self.family.log_base_measure(x_t)
        if log_h is not None:
            log_h = log_h.sum(1)
            if observed_t is not None:
                log_h = log_h * observed_t.squeeze(1).to(log_h.dtype)
            log_h = torch.cat([log_h, log_h.new_zeros(1, batch)], dim=0)
            out = out + log_h[self.index].sum(1).unsqueeze(1)
        return out.permute(2, 0, 1)

    def chunk_size(self, batch: int) -> int:
        """Return the leaf regions per block of the contraction: as many as fit in `block_bytes` of gathered features."""
        width = self.index.shape[1]
        features = self.num_dims * self.family.num_stats + 1
        per_region = width * features * batch * self.params.element_size()
        return max(1, self.block_bytes // per_region)

    def safe_value(self, x: torch.Tensor) -> torch.Tensor:
        """Return a value inside the support, used in place of marginalised entries."""
        return torch.zeros((), dtype=x.dtype, device=x.device)

    def extra_repr(self) -> str:
        regions, width = self.index.shape
        return f"family={self.family}, regions={regions}, max_region_size={width}, K={self.K}, num_dims={self.num_dims}"
