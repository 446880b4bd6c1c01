"""The partition function of SPAN: Z = sum (or integral) over x of exp(-E(x)).

Two estimators:

* "exact": enumerate every joint state of a small discrete model, in batches, and take the
  log-sum-exp of -E(x) (up to `max_states` states, about 2**20 by default).
* "importance": draw x from the Einsum network q (SPAN's own circuit with attention off) and
  average the weights w = exp(-E(x)) / q(x). Returns log Z, its standard error (delta method:
  se(Z) / Z) and the effective sample size (sum w)**2 / sum w**2. With uniform attention
  every weight is 1, so Z = 1 exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class LogPartition:
    """An estimate of log Z with its standard error (0 for exact) and effective sample size."""

    value: float
    std_error: float
    effective_sample_size: float | None
    method: str
    num_samples: int

    def __float__(self) -> float:
        return self.value


def _support_size(family) -> int:
    sizes = {"bernoulli": 2, "categorical": getattr(family, "num_values", 0), "binomial": getattr(family, "num_trials", 0) + 1}
    if family.name not in sizes:
        raise ValueError(f"exact enumeration needs discrete leaves, got {family}; use method='importance'")
    return sizes[family.name]


def _states(start: int, stop: int, values: int, cells: int, device: torch.device) -> torch.Tensor:
    """Return the joint states numbered start, ..., stop - 1 as their base-`values` digits (stop - start, cells)."""
    codes = torch.arange(start, stop, device=device).unsqueeze(1)
    powers = values ** torch.arange(cells, device=device)
    return (codes // powers) % values


@torch.no_grad()
def _exact(span, batch_size: int, max_states: int) -> LogPartition:
    einet = span.einet
    values = _support_size(einet.leaf_family)
    cells = einet.num_vars * einet.num_dims
    states = values**cells
    if states > max_states:
        raise ValueError(
            f"exact enumeration needs {values}**{cells} = {states} states, more than max_states={max_states}; "
            "use method='importance' or raise max_states"
        )
    total = []
    for start in range(0, states, batch_size):
        x = _states(start, min(start + batch_size, states), values, cells, einet.device)
        total.append(span(x.to(einet.dtype).view(-1, einet.num_vars, einet.num_dims)))
    log_z = torch.logsumexp(torch.cat(total).double(), dim=0)
    return LogPartition(float(log_z), 0.0, None, "exact", states)


@torch.no_grad()
def _importance(span, num_samples: int, batch_size: int, seed: int) -> LogPartition:
    log_weights = []
    for start in range(0, num_samples, batch_size):
        n = min(batch_size, num_samples - start)
        x = span.einet.sample(n, seed=seed + start)
        x = x.unsqueeze(-1) if x.dim() == 2 else x
        log_weights.append(span(x).double() - span.einet(x).double())
    log_w = torch.cat(log_weights)
    log_mean = torch.logsumexp(log_w, 0) - math.log(num_samples)
    relative = torch.exp(log_w - log_mean)
    std_error = float(relative.std(unbiased=True) / math.sqrt(num_samples)) if num_samples > 1 else float("inf")
    ess = float(relative.sum() ** 2 / (relative**2).sum())
    return LogPartition(float(log_mean), std_error, ess, "importance", num_samples)


def log_partition_function(
    span,
    method: str = "exact",
    *,
    num_samples: int = 10_000,
    batch_size: int = 4096,
    max_states: int = 2**20,
    seed: int = 0,
) -> LogPartition:
    """Estimate log Z of a SPAN model (in eval mode) by enumeration or importance sampling."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    was_training = span.training
    span.eval()
    try:
        if method == "exact":
            return _exact(span, batch_size, max_states)
        if method == "importance":
            if num_samples < 2:
                raise ValueError(f"num_samples must be at least 2, got {num_samples}")
            return _importance(span, num_samples, batch_size, seed)
        raise ValueError(f"unknown method {method!r}; expected 'exact' or 'importance'")
    finally:
        span.train(was_training)
