"""Attention heads: from the encoder's summary vector to logits over the child pairs of each sum.

A head maps (batch, d_model) to logits z (batch, partitions, out, K, K). The softmax over the
last two dims gives the attention A(x); the re-weighted weights are
W^S(x) = W * A(x) / sum_ij (W * A(x)), i.e. log W^S = log_softmax_ij(log W + z). The output
layer starts at zero, so an untrained head gives uniform attention and SPAN equals its Einsum
network.

"The paper" here is the SPAN paper (Yu, Dhami and Kersting, arXiv:2109.06587).
"""

from __future__ import annotations

import math

import torch
from torch import nn


class DenseHead(nn.Module):
    """One linear layer from d_model to every logit (d_model * P * out * K * K weights).

    This is our reading of the paper's "feed-forward layer and softmax", which it does not detail.
    """

    def __init__(self, d_model: int, shape: tuple[int, ...]):
        super().__init__()
        self.shape = tuple(shape)
        self.linear = nn.Linear(d_model, math.prod(shape))
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, summary: torch.Tensor) -> torch.Tensor:
        return self.linear(summary).view(-1, *self.shape)

    def extra_repr(self) -> str:
        return f"shape={self.shape}"


class LowRankHead(nn.Module):
    """The dense head factorised through `rank` units: d_model -> rank -> logits.

    With rank much smaller than d_model this cuts the head's parameters and time by about
    d_model / rank at the paper's sizes, where the dense head dominates the model.
    """

    def __init__(self, d_model: int, shape: tuple[int, ...], rank: int = 64):
        super().__init__()
        if rank < 1:
            raise ValueError(f"rank must be at least 1, got {rank}")
        self.shape = tuple(shape)
        self.down = nn.Linear(d_model, rank, bias=False)
        self.up = nn.Linear(rank, math.prod(shape))
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, summary: torch.Tensor) -> torch.Tensor:
        return self.up(self.down(summary)).view(-1, *self.shape)

    def extra_repr(self) -> str:
        return f"shape={self.shape}, rank={self.down.out_features}"


def make_head(kind: str, d_model: int, shape: tuple[int, ...], rank: int) -> nn.Module:
    """Build a head by name: "dense" or "lowrank"."""
    if kind == "dense":
        return DenseHead(d_model, shape)
    if kind == "lowrank":
        return LowRankHead(d_model, shape, rank)
    raise ValueError(f"unknown head {kind!r}; expected 'dense' or 'lowrank'")
