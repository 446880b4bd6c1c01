"""Einsum and mixing layers, computed in log space.

An einsum layer evaluates, for every partition p of one layer at once,

    S[p, k] = sum_ij W[p, k, i, j] * N'[p, i] * N''[p, j],

where N' and N'' are the K-vectors of the partition's two child regions and W[p, k] sums to 1
over (i, j). A mixing layer forms convex combinations, entry by entry, of the vectors of all
partitions of one region. Both work on log-values: subtracting the maximum of each child vector
before exponentiating is exact (the maxima factor out of the bilinear form) and keeps the values
in (0, 1], so inputs of -1e4 lose nothing. A child vector that is -inf everywhere gives -inf,
never NaN.

Memory layout: the layers take and return (batch, P, K) tensors but compute on the permuted
(P, K, batch) layout. There the batch is contiguous, so the sums over K are vectorised over it,
and the einsum is one plain batched matrix product. `EinsumNetwork` keeps every value in that
layout, so the permutes at the layer boundaries cost nothing there. Tensors in the ordinary
(batch, P, K) layout work too, at the price of one copy each.
"""

from __future__ import annotations

import torch
from torch import nn


def finite_max(x: torch.Tensor, dim: int | tuple[int, ...]) -> torch.Tensor:
    """Return the maximum over `dim` (kept, detached), with 0 where every entry is -inf."""
    m = torch.amax(x.detach(), dim=dim, keepdim=True)
    return m.masked_fill_(m == float("-inf"), 0.0)


def batch_last(x: torch.Tensor) -> torch.Tensor:
    """Return (batch, P, K) values as a contiguous (P, K, batch) tensor; free for a permuted view of one."""
    return x.permute(1, 2, 0).contiguous()


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
        left, right = batch_last(left), batch_last(right)
        batch = left.shape[-1]
        left_max = finite_max(left, 1)
        right_max = finite_max(right, 1)
        left_exp = torch.exp(left - left_max)
        right_exp = torch.exp(right - right_max)
        # pairs[p, i * K + j, b] = left[p, i, b] * right[p, j, b]
        pairs = (left_exp.unsqueeze(2) * right_exp.unsqueeze(1)).view(self.num_partitions, -1, batch)

        weights = torch.exp(log_weights)
        if weights.dim() == 4:
            out = torch.bmm(weights.view(self.num_partitions, self.out_size, -1), pairs)
        else:
            # Per-sample weights (batch, P, out, K, K): one small matrix-vector product per (sample, partition).
            per_sample = torch.matmul(weights.flatten(-2), pairs.permute(2, 0, 1).unsqueeze(-1))
            out = per_sample.squeeze(-1).permute(1, 2, 0)
        out = safe_log(out) + (left_max + right_max)
        return out.permute(2, 0, 1)

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
        """Return (batch, regions, size) mixtures of values (batch, partitions, size).

        `log_weights` is (regions, size, C), or (batch, regions, size, C) for per-sample weights.
        """
        values = batch_last(values)
        batch = values.shape[-1]
        picked = values.index_select(0, self.children_index.flatten())
        picked = picked.view(self.num_regions, self.num_children, self.size, batch)
        # Padded children get weight -inf, so whatever value they picked drops out of the sum.
        weights = log_weights.masked_fill(~self.valid, float("-inf"))
        if weights.dim() == 3:
            weights = weights.transpose(1, 2).unsqueeze(-1)
        else:
            weights = weights.permute(1, 3, 2, 0)
        out = log_sum_exp(picked + weights, dim=1)
        return out.permute(2, 0, 1)

    def extra_repr(self) -> str:
        return f"regions={self.num_regions}, children={self.num_children}, size={self.size}"
