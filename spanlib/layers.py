"""Einsum and mixing layers, computed in log space.

An einsum layer evaluates, for every partition p of one layer at once,

    S[p, k] = sum_ij W[p, k, i, j] * N'[p, i] * N''[p, j],

where N' and N'' are the K-vectors of the partition's two child regions and W[p, k] sums to 1
over (i, j). A mixing layer forms convex combinations, entry by entry, of the vectors of all
partitions of one region. Both work on log-values: subtracting the maximum of each child vector
before exponentiating is exact (the maxima factor out of the bilinear form) and keeps the values
in (0, 1], so inputs of -1e4 lose nothing. A child vector that is -inf everywhere gives -inf,
never NaN.
"""

from __future__ import annotations

import torch
from torch import nn


def finite_max(x: torch.Tensor, dim: int | tuple[int, ...]) -> torch.Tensor:
    """Return the maximum over `dim` (kept), with 0 where every entry is -inf."""
    m = torch.amax(x, dim=dim, keepdim=True)
    return torch.where(torch.isfinite(m), m, torch.zeros_like(m)).detach()


def safe_log(x: torch.Tensor) -> torch.Tensor:
    """Return log(x) with -inf where x == 0 and a finite gradient everywhere."""
    positive = x > 0
    return torch.where(positive, torch.log(torch.where(positive, x, torch.ones_like(x))), float("-inf"))


def log_sum_exp(x: torch.Tensor, dim: int | tuple[int, ...]) -> torch.Tensor:
    """Return log(sum(exp(x))) over `dim`; an all -inf slice gives -inf without NaN gradients."""
    m = finite_max(x, dim)
    total = torch.exp(x - m).sum(dim=dim, keepdim=True)
    out = safe_log(total) + m
    dims = (dim,) if isinstance(dim, int) else dim
    for d in sorted((d % x.dim() for d in dims), reverse=True):
        out = out.squeeze(d)
    return out


def normalize_log_weights(logits: torch.Tensor, num_dims: int) -> torch.Tensor:
    """Apply log-softmax jointly over the last `num_dims` dims."""
    flat = logits.flatten(-num_dims)
    return torch.log_softmax(flat, dim=-1).view(logits.shape)


class EinsumLayer(nn.Module):
    """Products and sums of all partitions of one layer.

    Args:
        num_partitions: partitions computed by this layer (P).
        K: entries of each child vector.
        out_size: entries of each output vector (K, or 1 for the root).
        left_slots, right_slots: (P,) slot of the left and right child of each partition.

    Shapes: children (batch, P, K) each; weights (P, out, K, K), or (batch, P, out, K, K) when they
    depend on the sample (SPAN); output (batch, P, out).
    """

    def __init__(self, num_partitions: int, K: int, out_size: int, left_slots: torch.Tensor, right_slots: torch.Tensor):
        super().__init__()
        self.num_partitions, self.K, self.out_size = num_partitions, K, out_size
        self.register_buffer("left_slots", left_slots, persistent=False)
        self.register_buffer("right_slots", right_slots, persistent=False)
        generator = torch.Generator().manual_seed(num_partitions * 31 + K)
        weights = torch.rand(num_partitions, out_size, K, K, generator=generator) * 0.98 + 0.01
        self.logits = nn.Parameter(torch.log(weights))

    def log_weights(self) -> torch.Tensor:
        """Return log W (P, out, K, K), normalised over the last two dims."""
        return normalize_log_weights(self.logits, 2)

    def forward(self, left: torch.Tensor, right: torch.Tensor, log_weights: torch.Tensor) -> torch.Tensor:
        left_max = finite_max(left, -1)
        right_max = finite_max(right, -1)
        left_exp = torch.exp(left - left_max)
        right_exp = torch.exp(right - right_max)
        weights = torch.exp(log_weights)

        pairs = left_exp.unsqueeze(-1) * right_exp.unsqueeze(-2)
        if weights.dim() == 4:
            out = torch.einsum("bpij,pkij->bpk", pairs, weights)
        else:
            out = torch.einsum("bpij,bpkij->bpk", pairs, weights)
        return safe_log(out) + left_max + right_max

    def extra_repr(self) -> str:
        return f"partitions={self.num_partitions}, K={self.K}, out_size={self.out_size}"


class MixingLayer(nn.Module):
    """Convex combinations, per vector entry, of the partitions of each region.

    Args:
        children: (regions, C) positions of each region's partitions in the einsum output,
            padded with -1 where a region has fewer than C partitions.
        size: entries of each vector.

    Shapes: input (batch, partitions, size); weights (regions, size, C); output (batch, regions, size).
    """

    def __init__(self, children: torch.Tensor, size: int):
        super().__init__()
        self.num_regions, self.num_children = children.shape
        self.size = size
        self.register_buffer("children_index", children.clamp_min(0), persistent=False)
        self.register_buffer("valid", (children >= 0).unsqueeze(1).expand(-1, size, -1).clone(), persistent=False)
        generator = torch.Generator().manual_seed(self.num_regions * 17 + self.num_children)
        weights = torch.rand(self.num_regions, size, self.num_children, generator=generator) * 0.98 + 0.01
        self.logits = nn.Parameter(torch.log(weights))

    def log_weights(self) -> torch.Tensor:
        """Return log weights (regions, size, C): padded children get -inf, the rest sum to 1."""
        masked = self.logits.masked_fill(~self.valid, float("-inf"))
        return torch.log_softmax(masked, dim=-1)

    def gather(self, values: torch.Tensor) -> torch.Tensor:
        """Return (batch, regions, size, C) child values, -inf for padding."""
        picked = values[:, self.children_index]
        picked = picked.transpose(-1, -2)
        return picked.masked_fill(~self.valid, float("-inf"))

    def forward(self, values: torch.Tensor, log_weights: torch.Tensor) -> torch.Tensor:
        return log_sum_exp(self.gather(values) + log_weights, dim=-1)

    def extra_repr(self) -> str:
        return f"regions={self.num_regions}, children={self.num_children}, size={self.size}"
