"""Token embeddings that turn circuit input into Transformer tokens.

Every embedding maps x (batch, num_vars, num_dims) and a bool `observed` (batch, num_vars) to
token features (batch, tokens, features); SPAN projects them to d_model and adds positions.
Missing values are zeroed and flagged, so a token whose variables are all missing is a valid
input (all features 0) and cannot make attention NaN, even where x contains NaN at missing entries.
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import nn


class Embedding(nn.Module):
    """Base class: fixes the token layout for a given number of variables and dims."""

    name = ""

    def bind(self, num_vars: int, num_dims: int, leaf=None) -> None:
        """Check that the embedding fits the circuit's variables; raise ValueError naming the numbers.

        `leaf` is the circuit's leaf family, which SPAN passes so that an embedding can check the kind
        of variables it codes.
        """
        self.num_vars, self.num_dims = num_vars, num_dims

    @property
    def num_tokens(self) -> int:
        """Number of tokens: one per variable unless a subclass groups variables (see variable_mask)."""
        return self.num_vars

    @property
    def token_features(self) -> int:
        raise NotImplementedError

    def variable_mask(self, token_mask: torch.Tensor) -> torch.Tensor:
        """Map a (batch, tokens) mask to (batch, num_vars): a masked token masks its variables."""
        return token_mask

    def config(self) -> dict:
        return {}


class BernoulliEmbedding(Embedding):
    """One token per binary variable: 1 becomes (1, 0) and 0 becomes (0, 1); missing is (0, 0).

    This is the 2-dim one-hot code of a binary variable, so d_model is 2 before the projection.
    """

    name = "bernoulli"

    def bind(self, num_vars, num_dims, leaf=None):
        if num_dims != 1:
            raise ValueError(f"BernoulliEmbedding needs one dim per variable, the circuit has num_dims={num_dims}")
        if leaf is not None and not _binary_support(leaf):
            raise ValueError(
                f"BernoulliEmbedding codes binary variables, but the circuit's {leaf} leaves take {leaf.support()}. "
                "Use LinearEmbedding(1) for them"
            )
        super().bind(num_vars, num_dims, leaf)

    @property
    def token_features(self):
        return 2

    def forward(self, x: torch.Tensor, observed: torch.Tensor) -> torch.Tensor:
        value = x[..., 0]
        code = torch.stack([value, 1 - value], dim=-1)
        # torch.where, not a product with the flag: a missing entry may hold NaN, and NaN * 0 is NaN.
        return torch.where(observed.unsqueeze(-1), code, torch.zeros_like(code))


class LinearEmbedding(Embedding):
    """One token per continuous variable: its `num_dims` values (0 when missing) and an observed flag."""

    name = "linear"

    def __init__(self, num_dims: int = 1):
        super().__init__()
        self.expected_dims = num_dims

    def bind(self, num_vars, num_dims, leaf=None):
        if num_dims != self.expected_dims:
            raise ValueError(f"LinearEmbedding({self.expected_dims}) does not fit a circuit with num_dims={num_dims}")
        super().bind(num_vars, num_dims, leaf)

    @property
    def token_features(self):
        return self.num_dims + 1

    def forward(self, x, observed):
        flag = observed.unsqueeze(-1)
        values = torch.where(flag, x, torch.zeros_like(x))
        return torch.cat([values, flag.to(x.dtype)], dim=-1)

    def config(self):
        return {"num_dims": self.expected_dims}


class PatchEmbedding(Embedding):
    """Vision Transformer patches: each flattened p x p x C patch of the image is one token.

    The circuit's variable `row * width + col` is pixel (row, col) with `channels` dims. Each token
    holds the patch values (0 where missing) followed by the patch's observed flags.
    """

    name = "patch"

    def __init__(self, channels: int, height: int, width: int, patch_size: int):
        super().__init__()
        if patch_size < 1 or height % patch_size or width % patch_size:
            raise ValueError(
                f"patch_size={patch_size} must divide the image size {height} x {width}; "
                f"choose a divisor of both, e.g. {_common_divisor(height, width)}"
            )
        self.channels, self.height, self.width, self.patch_size = channels, height, width, patch_size

    def bind(self, num_vars, num_dims, leaf=None):
        if num_vars != self.height * self.width or num_dims != self.channels:
            raise ValueError(
                f"PatchEmbedding for {self.channels} x {self.height} x {self.width} images needs "
                f"{self.height * self.width} variables with {self.channels} dims, the circuit has {num_vars} with {num_dims}"
            )
        super().bind(num_vars, num_dims, leaf)

    @property
    def num_tokens(self):
        return (self.height // self.patch_size) * (self.width // self.patch_size)

    @property
    def token_features(self):
        return 2 * self.patch_size**2 * self.channels

    def _patches(self, x: torch.Tensor) -> torch.Tensor:
        p = self.patch_size
        return rearrange(x, "b (h p1 w p2) c -> b (h w) (p1 p2 c)", p1=p, p2=p, w=self.width // p)

    def forward(self, x, observed):
        flag = observed.unsqueeze(-1).expand_as(x)
        values = torch.where(flag, x, torch.zeros_like(x))
        return torch.cat([self._patches(values), self._patches(flag.to(x.dtype))], dim=-1)

    def variable_mask(self, token_mask):
        p = self.patch_size
        grid = rearrange(token_mask, "b (h w) -> b h w", w=self.width // p)
        pixels = grid.repeat_interleave(p, dim=1).repeat_interleave(p, dim=2)
        return pixels.flatten(1)

    def config(self):
        return {"channels": self.channels, "height": self.height, "width": self.width, "patch_size": self.patch_size}


def _binary_support(leaf) -> bool:
    """Return True if the leaf family's support is exactly {0, 1} (Bernoulli, Categorical(2), Binomial(1))."""
    if not leaf.discrete:
        return False
    probes = torch.tensor([-1.0, 0.0, 1.0, 2.0])
    return leaf.outside_support(probes).tolist() == [True, False, False, True]


def _common_divisor(height: int, width: int) -> int:
    for size in (8, 4, 2, 1):
        if height % size == 0 and width % size == 0:
            return size
    return 1


EMBEDDINGS = {cls.name: cls for cls in (BernoulliEmbedding, LinearEmbedding, PatchEmbedding)}
