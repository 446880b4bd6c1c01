"""Three-phase training of SPAN.

1. Warm-up: only the Einsum network learns, on its own log-likelihood (EM or gradient); the
   encoders stay as they are.
2. Coordinate descent: on every batch, one gradient step on the Einsum network with the encoders
   fixed, then one on the encoders with the Einsum network fixed, both maximising -E(x).
3. Fine-tuning: the encoders are frozen and the Einsum network maximises -E(x). Frozen encoders
   give the same summary of a sample in every epoch, so they run once over the training set and
   each step runs only the heads and the circuit.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

PHASES = ("warmup", "coordinate", "finetune")


@dataclass
class History:
    """Per-epoch records: phase, epoch within the phase, mean -E on train and validation data, seconds."""

    records: list[dict] = field(default_factory=list)

    def add(self, **record) -> None:
        self.records.append(record)

    def phase(self, name: str) -> list[dict]:
        return [r for r in self.records if r["phase"] == name]

    def to_frame(self):
        import pandas as pd

        return pd.DataFrame(self.records)


class IndexedSamples(Dataset):
    """The rows of a tensor, each with its row index, so that a training step can look up per-sample caches."""

    def __init__(self, data: torch.Tensor):
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int):
        return self.data[index], index


def as_loader(data, batch_size: int, shuffle: bool, seed: int, name: str = "data") -> DataLoader:
    """Return a DataLoader over `data` (a tensor, whose rows come with their indices, or an existing DataLoader).

    `name` is the argument's name in error messages.
    """
    if isinstance(data, DataLoader):
        return data
    if not isinstance(data, torch.Tensor):
        raise TypeError(f"{name} must be a tensor or a DataLoader, got {type(data).__name__}")
    if len(data) == 0:
        raise ValueError(f"{name} is empty. Pass at least one sample")
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(IndexedSamples(data), batch_size=batch_size, shuffle=shuffle, generator=generator)


def batches(loader: DataLoader, device: torch.device):
    """Yield (x, index) with x on `device` from a loader of tensors or (x, label) tuples.

    `index` contains the row indices for a loader made by `as_loader` from a tensor, and is None otherwise.
    """
    indexed = isinstance(loader.dataset, IndexedSamples)
    for item in loader:
        if indexed:
            x, index = item
        else:
            x, index = (item[0] if isinstance(item, (list, tuple)) else item), None
        yield x.to(device), index


@torch.no_grad()
def mean_score(model, loader: DataLoader, device: torch.device) -> float:
    """Return the mean of model(x) over a loader, in eval mode.

    The CPU random state is restored afterwards: iterating a DataLoader without its own generator
    draws a seed from it, and scoring validation data must not change the training run.
    """
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    with torch.random.fork_rng(devices=[]):
        for x, _ in batches(loader, device):
            total += float(model(x).sum())
            count += len(x)
    model.train(was_training)
    return total / count


def train_span(
    span,
    data,
    warmup_epochs: int,
    coordinate_epochs: int,
    finetune_epochs: int,
    *,
    validation=None,
    batch_size: int = 100,
    warmup: str = "em",
    em_step_size: float = 0.05,
    lr: float = 1e-2,
    encoder_lr: float = 1e-3,
    patience: int | None = None,
    seed: int = 0,
    progress: bool = True,
    cache_encoders: bool = True,
) -> History:
    """Train `span` in three phases and return the per-epoch `History`.

    Args:
        span: the `SPAN` model; trained in place on its own device.
        data: training inputs, a tensor (n, num_vars[, num_dims]) or a DataLoader.
        warmup_epochs, coordinate_epochs, finetune_epochs: epochs of the three phases.
        validation: optional validation inputs (tensor or DataLoader) for the history and early stopping.
        batch_size: batch size when `data` is a tensor.
        warmup: "em" (stochastic EM with `em_step_size`) or "gradient" (Adam with `lr`) for phase 1.
        lr, encoder_lr: Adam learning rates of the Einsum network and of the encoders.
        patience: end a phase early after this many epochs without a better validation score,
            and restore the best parameters of that phase. Needs `validation`.
        seed: seeds torch and the batch order.
        progress: show a tqdm bar per phase.
        cache_encoders: in the fine-tune phase, run the frozen encoders once over `data` and reuse
            their summaries (layers x n x d_model floats on the model's device), instead of running
            them on every batch of every epoch. Only the cheap heads run per batch. This needs
            `data` as a tensor and `mask_probability == 0`, and is skipped otherwise.
    """
    if warmup not in ("em", "gradient"):
        raise ValueError(f"warmup must be 'em' or 'gradient', got {warmup!r}")
    if min(warmup_epochs, coordinate_epochs, finetune_epochs) < 0:
        raise ValueError("epoch counts must be non-negative")
    if patience is not None and validation is None:
        raise ValueError("early stopping (patience) needs validation data")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if patience is not None and patience < 1:
        raise ValueError(f"patience must be at least 1 epoch, got {patience}. Pass None to train every epoch")
    torch.manual_seed(seed)
    device = span.device
    loader = as_loader(data, batch_size, shuffle=True, seed=seed)
    eval_loader = as_loader(data, batch_size, shuffle=False, seed=seed) if isinstance(data, torch.Tensor) else loader
    val_loader = None if validation is None else as_loader(validation, batch_size, False, seed, name="validation")

    einet_opt = torch.optim.Adam(span.einet_parameters(), lr=lr)
    encoder_opt = torch.optim.Adam(span.encoder_parameters(), lr=encoder_lr)
    history = History()
    span.train()
    summaries = None  # the fine-tune phase's cached encoder summaries, set when that phase starts

    def warmup_step(x, index):
        if warmup == "em":
            span.einet.em_step(x, em_step_size)
        else:
            _gradient_step(span.einet, x, einet_opt, span.einet_parameters())

    def finetune(x, index):
        finetune_step(span, x, einet_opt, None if summaries is None else [s[index.to(device)] for s in summaries])

    steps = {
        "warmup": warmup_step,
        "coordinate": lambda x, index: coordinate_step(span, x, einet_opt, encoder_opt),
        "finetune": finetune,
    }
    epochs = {"warmup": warmup_epochs, "coordinate": coordinate_epochs, "finetune": finetune_epochs}
    for phase in PHASES:
        if phase == "finetune" and finetune_epochs > 0 and cache_encoders:
            summaries = _cached_summaries(span, data, batch_size)
        _run_phase(span, phase, epochs[phase], steps[phase], loader, eval_loader, val_loader, device, history,
                   patience, progress)
    span.eval()
    return history


def coordinate_step(span, x, einet_opt, encoder_opt) -> None:
    """Update the Einsum network with the encoders fixed, then the encoders with the updated network.

    The encoders run once per batch: their logits do not depend on the Einsum network, so the
    second update reuses them (with their graph) for a circuit pass with the new parameters. The
    result equals two full forward passes, except that token masking and dropout draw once.
    """
    x, observed = span._prepare(x, None)
    logits, mixing_logits = span._attention_logits(x, observed)
    fixed_logits = [z.detach() for z in logits]
    fixed_mixing = [None if z is None else z.detach() for z in mixing_logits]
    _apply_gradient(-span._energy(x, observed, fixed_logits, fixed_mixing).mean(), einet_opt, span.einet_parameters())
    _apply_gradient(-span._energy(x, observed, logits, mixing_logits).mean(), encoder_opt, span.encoder_parameters())


def finetune_step(span, x, einet_opt, summaries: list[torch.Tensor] | None = None) -> None:
    """Update the Einsum network with the encoders frozen; the encoders run without autograd.

    `train_span` puts the encoders in eval mode for this phase, so their dropout is off. With
    `summaries` (per layer, (batch, d_model), from `_cached_summaries`), only the heads run.
    """
    x, observed = span._prepare(x, None)
    with torch.no_grad():
        if summaries is None:
            logits, mixing_logits = span._attention_logits(x, observed)
        else:
            logits, mixing_logits = span._head_logits(summaries)
    _apply_gradient(-span._energy(x, observed, logits, mixing_logits).mean(), einet_opt, span.einet_parameters())


@torch.no_grad()
def _cached_summaries(span, data, batch_size: int) -> list[torch.Tensor] | None:
    """Return the eval-mode encoder summaries of every row of `data`, per layer (n, d_model), or None.

    None when the summaries cannot stand in for the encoders during fine-tuning: `data` is a
    DataLoader (no row indices) or token masking draws a different input on every step.
    """
    if not isinstance(data, torch.Tensor) or span.mask_probability > 0:
        return None
    was_training = span.encoders.training
    span.encoders.eval()
    parts = [[] for _ in span.encoders]
    for start in range(0, len(data), batch_size):
        x, observed = span._prepare(data[start : start + batch_size].to(span.device), None)
        for layer, summary in enumerate(span._attention_summaries(x, observed)):
            parts[layer].append(summary)
    span.encoders.train(was_training)
    return [torch.cat(layer_parts) for layer_parts in parts]


def _gradient_step(model, x, optimizer, parameters) -> None:
    """Take one Adam step on `parameters` maximising mean model(x); other parameters get no update."""
    _apply_gradient(-model(x).mean(), optimizer, parameters)


def _apply_gradient(loss, optimizer, parameters) -> None:
    grads = torch.autograd.grad(loss, parameters, allow_unused=True)
    for p, g in zip(parameters, grads):
        p.grad = g
    optimizer.step()


def _run_phase(span, phase, num_epochs, step, loader, eval_loader, val_loader, device, history, patience, progress):
    best, best_state, waited = -float("inf"), None, 0
    bar = tqdm(range(num_epochs), desc=f"SPAN {phase}", disable=not progress or num_epochs == 0)
    for epoch in bar:
        start = time.perf_counter()
        span.train()
        if phase == "finetune":
            # The encoders are frozen in this phase, so they also run without dropout, as when scoring.
            for module in (span.encoders, span.heads, span.mixing_heads):
                module.eval()
        for x, index in batches(loader, device):
            step(x, index)
        train_score = mean_score(span, eval_loader, device)
        val_score = None if val_loader is None else mean_score(span, val_loader, device)
        history.add(phase=phase, epoch=epoch + 1, train=train_score, validation=val_score,
                    seconds=time.perf_counter() - start)
        bar.set_postfix(train=f"{train_score:.2f}", validation="-" if val_score is None else f"{val_score:.2f}")
        if patience is None:
            continue
        if val_score > best:
            best, best_state, waited = val_score, copy.deepcopy(span.state_dict()), 0
        else:
            waited += 1
            if waited >= patience:
                break
    if best_state is not None:
        span.load_state_dict(best_state)
