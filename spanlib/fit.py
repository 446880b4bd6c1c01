"""Training loops for the plain Einsum network: stochastic EM or gradient ascent, with a history."""

from __future__ import annotations

import time

import torch
from tqdm.auto import tqdm

from .span.training import as_loader, batches


@torch.no_grad()
def mean_log_likelihood(net, data, batch_size: int = 500) -> float:
    """Return the mean log p(x) of `net` over a tensor or DataLoader of inputs."""
    loader = as_loader(data, batch_size, shuffle=False, seed=0)
    total, count = 0.0, 0
    for x, _ in batches(loader, net.device):
        total += float(net(x).sum())
        count += len(x)
    return total / count


def fit_einet(
    net,
    data,
    epochs: int,
    *,
    method: str = "em",
    batch_size: int = 100,
    step_size: float = 0.05,
    lr: float = 1e-2,
    validation=None,
    seed: int = 0,
    progress: bool = True,
) -> list[dict]:
    """Train an Einsum network and return one record per epoch (epoch, train, validation, seconds).

    Args:
        net: the `EinsumNetwork`, trained in place on its device.
        data: training inputs, a tensor (n, num_vars[, num_dims]) or a DataLoader.
        epochs: passes over the data.
        method: "em" (stochastic online EM with `step_size`) or "gradient" (Adam with `lr` on
            the unconstrained parameters).
        validation: optional inputs whose mean log-likelihood is recorded after each epoch.
        seed: seeds torch and the batch order.
    """
    if method not in ("em", "gradient"):
        raise ValueError(f"method must be 'em' or 'gradient', got {method!r}")
    torch.manual_seed(seed)
    loader = as_loader(data, batch_size, shuffle=True, seed=seed)
    optimizer = torch.optim.Adam(net.parameters(), lr=lr) if method == "gradient" else None
    history = []
    bar = tqdm(range(epochs), desc=f"Einsum network ({method})", disable=not progress)
    for epoch in bar:
        start = time.perf_counter()
        net.train()
        for x, _ in batches(loader, net.device):
            if optimizer is None:
                net.em_step(x, step_size)
            else:
                optimizer.zero_grad(set_to_none=True)
                (-net(x).mean()).backward()
                optimizer.step()
        net.eval()
        record = {
            "epoch": epoch + 1,
            "train": mean_log_likelihood(net, data, batch_size),
            "validation": None if validation is None else mean_log_likelihood(net, validation, batch_size),
            "seconds": time.perf_counter() - start,
        }
        history.append(record)
        bar.set_postfix(train=f"{record['train']:.2f}")
    return history
