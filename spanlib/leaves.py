"""Exponential-family leaves and the factorised leaf layer.

Every leaf region holds K densities, each a product over the region's variables (and over the
dims of a multi-dimensional variable) of one exponential-family density

    log p(x) = <theta, T(x)> - A(theta) + log h(x).

Because this is linear in the sufficient statistics T(x), the log-density of a whole leaf region
is one contraction of the stacked features [T(x), 1] against [theta, -A(theta)]. The layer
gathers each region's variables once (a padded index, no dense scope tensor) and contracts all
regions in one batched matrix product. Marginalising a variable sets its features to 0, so it
contributes log 1. The gradient of the output with respect to [theta, -A] is the
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

    def check_support(self, x: torch.Tensor) -> str | None:
        """Return a description of the first value outside the support, or None."""
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


def _discrete_support(x: torch.Tensor, low: int, high: int, family: str) -> str | None:
    bad = (x != torch.round(x)) | (x < low) | (x > high)
    if bad.any():
        value = x[bad].flatten()[0].item()
        return f"{family} leaves take integers in [{low}, {high}], got {value}"
    return None


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

    def check_support(self, x):
        return _discrete_support(x, 0, 1, "Bernoulli")

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

    def check_support(self, x):
        return _discrete_support(x, 0, self.num_trials, f"Binomial({self.num_trials})")

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

    def check_support(self, x):
        return _discrete_support(x, 0, self.num_values - 1, f"Categorical({self.num_values})")

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
        mean, var = params[..., 0], self.variance(params)
        natural = torch.stack([mean / var, -0.5 / var], dim=-1)
        log_normaliser = 0.5 * mean**2 / var + 0.5 * torch.log(2 * math.pi * var)
        return natural, log_normaliser

    def statistics(self, x):
        return torch.stack([x, x * x], dim=-1)

    def check_support(self, x):
        if not torch.isfinite(x).all():
            return f"Normal leaves need finite values, got {x[~torch.isfinite(x)].flatten()[0].item()}"
        return None

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
        generator = torch.Generator().manual_seed(0)
        self.params = nn.Parameter(family.init_params((regions, width, K, num_dims), None, generator))

    def initialize_from_data(self, x: torch.Tensor, seed: int = 0) -> None:
        """Re-draw the parameters around the statistics of `x` (batch, num_vars, num_dims)."""
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            new = self.family.init_params(tuple(self.params.shape[:-1]), x.detach().cpu(), generator)
            self.params.copy_(new)

    def features(self, params: torch.Tensor | None = None) -> torch.Tensor:
        """Return [theta, -A(theta)] per (region, position, K) as (regions, width * F, K).

        F = num_dims * num_stats + 1; these are the weights of the contraction in `forward`.
        """
        params = self.params if params is None else params
        natural, log_normaliser = self.family.natural(params)
        regions, width, K = natural.shape[:3]
        natural = natural.permute(0, 1, 3, 4, 2).reshape(regions, width, -1, K)
        features = torch.cat([natural, -log_normaliser.sum(-1).unsqueeze(2)], dim=2)
        return features.reshape(regions, -1, K)

    def forward(self, x: torch.Tensor, observed: torch.Tensor | None, features: torch.Tensor) -> torch.Tensor:
        """Return log-densities (batch, regions, K).

        Args:
            x: (batch, num_vars, num_dims) values; entries where `observed` is False are ignored.
            observed: (batch, num_vars) bool, or None when every variable is observed.
            features: output of `features()`, or a detached copy that records EM statistics.
        """
        batch = x.shape[0]
        if observed is not None:
            x = torch.where(observed.unsqueeze(-1), x, self.safe_value(x))
        stats = self.family.statistics(x).reshape(batch, self.num_vars, -1)
        ones = torch.ones_like(stats[..., :1])
        per_var = torch.cat([stats, ones], dim=-1)
        if observed is not None:
            per_var = per_var * observed.unsqueeze(-1).to(per_var.dtype)
        per_var = torch.cat([per_var, per_var.new_zeros(batch, 1, per_var.shape[-1])], dim=1)

        gathered = per_var[:, self.index.flatten()].reshape(batch, self.index.shape[0], -1)
        out = torch.bmm(gathered.transpose(0, 1), features).transpose(0, 1)

        log_h = self.family.log_base_measure(x)
        if log_h is not None:
            log_h = log_h.sum(-1)
            if observed is not None:
                log_h = log_h * observed.to(log_h.dtype)
            log_h = torch.cat([log_h, log_h.new_zeros(batch, 1)], dim=1)
            out = out + log_h[:, self.index].sum(-1, keepdim=True)
        return out

    def safe_value(self, x: torch.Tensor) -> torch.Tensor:
        """Return a value inside the support, used in place of marginalised entries."""
        return torch.zeros((), dtype=x.dtype, device=x.device)

    def extra_repr(self) -> str:
        regions, width = self.index.shape
        return f"family={self.family}, regions={regions}, max_region_size={width}, K={self.K}, num_dims={self.num_dims}"
