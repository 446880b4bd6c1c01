"""Stochastic online EM for Einsum networks, with expected counts from autograd.

The circuit is multilinear in its sum weights, so for a weight w the expected number of times a
sample's induced tree uses that edge is w * d log p(x) / d w = d log p(x) / d log w. Running the
forward pass with the log weights as detached leaf tensors and calling backward therefore leaves
the batch's expected counts in their `.grad`. The same holds for the leaves: the gradient with
respect to the contraction weights [theta, -A] is the responsibility-weighted sum of [T(x), 1],
i.e. the expected sufficient statistics and the expected number of observations.

The M-step normalises the counts, blends old and new parameters with the step size
(step 1 is classical full-batch EM) and projects them back into the valid set.
"""

from __future__ import annotations

import torch

from .inputs import check_input

WEIGHT_FLOOR = 1e-12


def _blend_weights(logits: torch.Tensor, log_weights: torch.Tensor, counts: torch.Tensor, step: float, dims: int) -> None:
    """Update logits in place: W <- (1 - step) W + step * counts / sum(counts), floored and renormalised."""
    flat_counts = counts.flatten(-dims)
    totals = flat_counts.sum(-1, keepdim=True)
    old = torch.exp(log_weights).flatten(-dims)
    new = torch.where(totals > 0, flat_counts / totals.clamp_min(1e-30), old)
    blended = ((1 - step) * old + step * new).clamp_min(WEIGHT_FLOOR)
    blended = torch.where(torch.isfinite(log_weights.flatten(-dims)), blended, torch.zeros_like(blended))
    blended = blended / blended.sum(-1, keepdim=True)
    logits.copy_(torch.log(blended).view(logits.shape).clamp_min(-1e4))


def em_step(net, x: torch.Tensor, step_size: float = 0.05, marginalize: torch.Tensor | None = None) -> torch.Tensor:
    """Run one EM step of `net` on batch x; return the batch's mean log-likelihood before the step."""
    if not 0 < step_size <= 1:
        raise ValueError(f"step_size must be in (0, 1], got {step_size}")
    x, observed = check_input(net, x, marginalize)

    with torch.no_grad():
        log_weights = [w.detach().requires_grad_() for w in net.log_weights()]
        mixing = [None if w is None else w.detach().requires_grad_() for w in net.mixing_log_weights()]
        features = net.leaf.features().detach().requires_grad_()
    with torch.enable_grad():
        log_likelihood = net.evaluate(x, observed, log_weights, mixing, features)
        log_likelihood.sum().backward()

    with torch.no_grad():
        for layer, w in zip(net.einsum_layers, log_weights):
            _blend_weights(layer.logits, w, w.grad, step_size, 2)
        for layer, w in zip(net.mixing_layers, mixing):
            if w is not None:
                _blend_weights(layer.logits, w, w.grad, step_size, 1)
        _update_leaves(net.leaf, features.grad, step_size)
    return log_likelihood.detach().mean()


def _update_leaves(leaf, grad: torch.Tensor, step: float) -> None:
    """M-step of the leaves from the gradient of the contraction weights (regions, width, K, F)."""
    regions, width = leaf.index.shape
    family, dims = leaf.family, leaf.num_dims
    counts = grad[..., -1]
    stats = grad[..., :-1].reshape(regions, width, leaf.K, dims, family.num_stats)

    seen = counts > 1e-12
    mean_stats = stats / counts.clamp_min(1e-12)[..., None, None]
    current = family.mean_statistics(leaf.params)
    blended = (1 - step) * current + step * mean_stats
    target = torch.where(seen[..., None, None], blended, current)
    new_params = family.from_expected(target)
    leaf.params.copy_(torch.where(seen[..., None, None], new_params, leaf.params))

