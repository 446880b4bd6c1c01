"""Top-down queries of an Einsum network: sampling, conditional sampling and approximate MPE.

An upward pass on the observed part (missing variables contribute log 1) stores every node's
value. Going down from the root, each reached sum chooses one child with probability
proportional to weight * child value, which is the exact posterior over the induced tree given
the evidence; without evidence every child value is 1 and the choice follows the weights. MPE
takes the most probable choice instead of a random one, and the mode at the leaves. All samples
and all regions of a layer are handled at once: `chosen[b, slot]` is the vector entry that
sample b selected at a region slot, or -1 where its induced tree does not pass.
"""

from __future__ import annotations

import contextlib
import operator

import torch

from .inputs import check_input


def _choose(logits: torch.Tensor, mode: str) -> torch.Tensor:
    if mode == "mpe":
        return logits.argmax(-1)
    return torch.distributions.Categorical(logits=logits).sample()


def _pick(values: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Select values[b, index[b, r], ...] for (batch, items, ...) values and (batch, regions) index."""
    shape = index.shape + values.shape[2:]
    expanded = index.reshape(index.shape + (1,) * (values.dim() - 2)).expand(shape)
    return values.gather(1, expanded)


def top_down(net, n: int | None, evidence: torch.Tensor | None, mask: torch.Tensor | None, mode: str, seed: int | None = None):
    """Sample (mode "sample") or complete by approximate MPE (mode "mpe"); see `EinsumNetwork.sample`."""
    if evidence is None:
        if mask is not None:
            raise ValueError("a mask needs evidence: pass evidence=x together with mask")
        if mode == "mpe":
            raise ValueError("mpe needs evidence (the observed values); pass evidence=x and mask")
        n = _check_count(n)
        x = torch.zeros(n, net.num_vars, net.num_dims, dtype=net.dtype, device=net.device)
        observed = torch.zeros(n, net.num_vars, dtype=torch.bool, device=net.device)
        squeeze = net.num_dims == 1
    else:
        x, observed = check_input(net, evidence, mask, name="evidence")
        if n is not None and n != x.shape[0]:
            raise ValueError(
                f"n={n} does not match the {x.shape[0]} rows of evidence; conditional sampling draws one "
                "completion per row, so leave n out (repeat rows of evidence for several completions)"
            )
        squeeze = evidence.dim() == 2
        if observed is None:
            return x.squeeze(-1).clone() if squeeze else x.clone()

    rng = contextlib.nullcontext()
    if seed is not None:
        rng = torch.random.fork_rng(devices=[net.device] if net.device.type == "cuda" else [])
    with rng, torch.no_grad():
        if seed is not None:
            torch.manual_seed(seed)
        _, trace = net.evaluate(x, observed, trace=True)
        chosen = _choose_entries(net, trace, mode)
        filled = _draw_leaves(net, chosen, mode)
    out = torch.where(observed.unsqueeze(-1), x, filled)
    return out.squeeze(-1) if squeeze else out


def _check_count(n) -> int:
    """Return the number of samples n as an int, or raise naming the value."""
    if n is None:
        raise ValueError("n must be a positive number of samples, got None; pass n, or evidence and mask")
    if isinstance(n, bool):
        raise TypeError(f"n must be an integer number of samples, got {n!r}")
    try:
        count = operator.index(n)
    except TypeError:
        raise TypeError(f"n must be an integer number of samples, got {n!r}; pass int(n)") from None
    if count < 1:
        raise ValueError(f"n must be a positive number of samples, got {n}")
    return count


def _choose_entries(net, trace, mode: str) -> torch.Tensor:
    """Walk from the root to the leaves and return `chosen` (batch, leaf regions)."""
    batch = trace.leaves.shape[0]
    offsets = net._slot_offsets
    sink = offsets[-1]
    chosen = torch.full((batch, sink + 1), -1, dtype=torch.long, device=trace.leaves.device)
    chosen[:, sink - 1] = 0

    for depth in reversed(range(len(net.einsum_layers))):
        layer = net.einsum_layers[depth]
        entry = chosen[:, offsets[depth + 1] : offsets[depth + 2]]
        active = entry >= 0
        k = entry.clamp_min(0)
        regions = torch.arange(entry.shape[1], device=entry.device).expand_as(entry)

        if net._has_mixing[depth]:
            mixing = net.mixing_layers[depth]
            log_w = trace.mixing_log_weights[depth][regions, k]
            child_values = mixing.gather(trace.einsum[depth])
            child_values = child_values.gather(2, k[..., None, None].expand(-1, -1, 1, child_values.shape[-1])).squeeze(2)
            which = _choose(log_w + child_values, mode)
            part = mixing.children_index[regions, which]
        else:
            part = regions

        log_w = trace.log_weights[depth]
        if log_w.dim() == 4:
            pair_weights = log_w[part, k]
        else:
            pair_weights = log_w[torch.arange(log_w.shape[0], device=k.device)[:, None], part, k]
        left = _pick(trace.left[depth], part)
        right = _pick(trace.right[depth], part)
        logits = pair_weights + left.unsqueeze(-1) + right.unsqueeze(-2)
        pair = _choose(logits.flatten(-2), mode)

        K = layer.K
        left_slot = torch.where(active, layer.left_slots[part], sink)
        right_slot = torch.where(active, layer.right_slots[part], sink)
        chosen.scatter_(1, left_slot, torch.where(active, pair // K, -1))
        chosen.scatter_(1, right_slot, torch.where(active, pair % K, -1))
    return chosen[:, : offsets[1]]


def _draw_leaves(net, chosen: torch.Tensor, mode: str) -> torch.Tensor:
    """Return (batch, num_vars, num_dims) values drawn from (or modes of) the chosen leaf densities."""
    leaf = net.leaf
    batch, regions = chosen.shape
    active = chosen >= 0
    k = chosen.clamp_min(0)
    params = leaf.params[torch.arange(regions, device=k.device)[None, :], :, k]
    if mode == "mpe":
        values = leaf.family.mode(params)
    else:
        values = leaf.family.distribution(params).sample()
    values = values.to(leaf.params.dtype)

    num_vars = leaf.num_vars
    target = torch.where(active.unsqueeze(-1), leaf.index.unsqueeze(0), num_vars)
    out = values.new_zeros(batch, num_vars + 1, leaf.num_dims)
    target = target.reshape(batch, -1, 1).expand(-1, -1, leaf.num_dims)
    out.scatter_(1, target, values.reshape(batch, -1, leaf.num_dims))
    return out[:, :num_vars]
