"""Evaluation: OOD scores and metrics (AUROC, AUPR, FPR at 95% TPR), inpainting masks and MSE.

OOD detection follows the paper (Sec. 4, Q1): a model trained on the in-distribution set scores
every test image, higher meaning "more in-distribution" (a log-likelihood, or a negative energy);
the in-distribution test images are the **positive** class. So AUROC is the probability that a
random in-distribution image scores higher than a random OOD image (ties count one half), and a
model that scores OOD data higher gets an AUROC below 0.5. AUPR is the average precision with
in-distribution positive ("AUPR-In"). FPR95 is the fraction of OOD images accepted at the highest
threshold that keeps at least 95% of the in-distribution images (lower is better).

Inpainting follows Table 2: the top or left half of each image is missing and filled in by the
model; the error of one image is the mean squared error over **all** its pixels and channels
(pixels in [0, 1]), and the table reports the mean and standard deviation over the test images.
Observed pixels are copied from the input, so they contribute zero error: the all-pixel MSE is the
missing-pixel MSE times the missing fraction. Pass ``mask`` to `inpainting_mse` for the
missing-pixel MSE instead.

"The paper" here is the SPAN paper (Yu, Dhami and Kersting, arXiv:2109.06587).
"""

from __future__ import annotations

import math
from typing import Mapping

import numpy as np
import torch
from tqdm.auto import tqdm

__all__ = [
    "NonFiniteScoreError",
    "inpainting_mask",
    "inpainting_mse",
    "mse_summary",
    "ood_metrics",
    "ood_table",
    "score_dataset",
]


class NonFiniteScoreError(ValueError):
    """A model produced NaN or infinite OOD scores."""


def _model_name(model) -> str:
    name = getattr(model, "name", None)
    if isinstance(name, str):
        return name
    return getattr(model, "__name__", type(model).__name__)


def _check_finite(scores: np.ndarray, what: str) -> None:
    bad = ~np.isfinite(scores)
    if bad.any():
        n_nan = int(np.isnan(scores).sum())
        raise NonFiniteScoreError(
            f"{what}: {int(bad.sum())} of {scores.size} scores are not finite ({n_nan} NaN, {int(bad.sum()) - n_nan} inf)"
        )


def _as_numpy(scores) -> np.ndarray:
    if isinstance(scores, torch.Tensor):
        scores = scores.detach().cpu().double().numpy()
    return np.asarray(scores, dtype=np.float64).reshape(-1)


def _module_device(model) -> torch.device | None:
    if isinstance(model, torch.nn.Module):
        for tensor in model.parameters():
            return tensor.device
        for tensor in model.buffers():
            return tensor.device
    return None


def score_dataset(
    model_or_fn,
    images: torch.Tensor,
    batch_size: int = 256,
    *,
    name: str | None = None,
    device: torch.device | str | None = None,
    progress: bool | None = None,
) -> np.ndarray:
    """OOD scores (N,) float64 of ``images`` (N, ...): ``model.score(x)``, or ``fn(x)`` for a plain function.

    Runs batch by batch under ``torch.no_grad()``; an ``nn.Module`` is put in eval mode for the call
    (and restored afterwards) and each batch is moved to its device (or to ``device``). The tqdm bar
    is shown when there is more than one batch (``progress`` forces it on or off).

    Raises:
        NonFiniteScoreError: some scores are NaN or infinite; the message names the model and the counts.
    """
    score = getattr(model_or_fn, "score", None)
    if score is None:
        if not callable(model_or_fn):
            raise TypeError(f"expected a model with a .score(x) method or a function, got {type(model_or_fn).__name__}")
        score = model_or_fn
    label = name or _model_name(model_or_fn)
    device = torch.device(device) if device is not None else _module_device(model_or_fn)
    n = len(images)
    n_batches = math.ceil(n / batch_size)
    show = n_batches > 1 if progress is None else progress
    was_training = isinstance(model_or_fn, torch.nn.Module) and model_or_fn.training
    if was_training:
        model_or_fn.eval()
    out = np.empty(n, dtype=np.float64)
    try:
        with torch.no_grad():
            starts = range(0, n, batch_size)
            for start in tqdm(starts, total=n_batches, desc=f"scoring ({label})", disable=not show, leave=False):
                batch = images[start : start + batch_size]
                if device is not None:
                    batch = batch.to(device)
                values = _as_numpy(score(batch))
                if values.size != len(batch):
                    raise ValueError(f"{label}: score returned {values.size} values for a batch of {len(batch)} images")
                out[start : start + len(batch)] = values
    finally:
        if was_training:
            model_or_fn.train()
    _check_finite(out, f"model {label!r}")
    return out


def ood_metrics(scores_in, scores_out, model: str | None = None) -> dict[str, float]:
    """AUROC, AUPR (in-distribution positive) and FPR at 95% TPR from two score arrays; higher = in-distribution.

    ``model`` only names the model in the error raised for NaN or infinite scores.
    """
    from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

    s_in, s_out = _as_numpy(scores_in), _as_numpy(scores_out)
    what = f"model {model!r}" if model else "ood_metrics"
    _check_finite(s_in, f"{what} (in-distribution scores)")
    _check_finite(s_out, f"{what} (OOD scores)")
    if s_in.size == 0 or s_out.size == 0:
        raise ValueError(f"{what}: need at least one in-distribution and one OOD score, got {s_in.size} and {s_out.size}")
    y = np.concatenate([np.ones(s_in.size), np.zeros(s_out.size)])
    s = np.concatenate([s_in, s_out])
    fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)
    # roc_curve's thresholds decrease, so tpr is non-decreasing: the first point with tpr >= 0.95 is the
    # highest threshold that keeps 95% of the in-distribution images (tied scores enter together).
    fpr95 = float(fpr[np.searchsorted(tpr, 0.95, side="left")])
    return {"auroc": float(roc_auc_score(y, s)), "aupr": float(average_precision_score(y, s)), "fpr95": fpr95}


def ood_table(
    scores_in: Mapping[str, np.ndarray],
    scores_out: Mapping[str, Mapping[str, np.ndarray]],
    metric: str | None = None,
):
    """A pandas DataFrame of OOD metrics for several models and OOD sets.

    Args:
        scores_in: model name -> scores of the in-distribution test images.
        scores_out: model name -> {OOD set name -> scores}.
        metric: None for a long table (columns model, ood, auroc, aupr, fpr95; one row per pair), or
            ``"auroc"``/``"aupr"``/``"fpr95"`` for a table like the paper's Table 1 (rows: OOD sets,
            columns: models).
    """
    import pandas as pd

    missing = set(scores_out) - set(scores_in)
    if missing:
        raise KeyError(f"no in-distribution scores for model(s) {sorted(missing)}")
    rows = [
        {"model": model, "ood": ood_name, **ood_metrics(scores_in[model], scores, model=model)}
        for model, sets in scores_out.items()
        for ood_name, scores in sets.items()
    ]
    table = pd.DataFrame(rows, columns=["model", "ood", "auroc", "aupr", "fpr95"])
    if metric is None:
        return table
    if metric not in ("auroc", "aupr", "fpr95"):
        raise ValueError(f"metric must be None, 'auroc', 'aupr' or 'fpr95', got {metric!r}")
    wide = table.pivot(index="ood", columns="model", values=metric)
    # keep the order in which models and sets were given, not alphabetical
    models = list(scores_out)
    sets = list(dict.fromkeys(name for s in scores_out.values() for name in s))
    return wide.reindex(index=sets, columns=models).rename_axis(index="ood", columns=None)


def inpainting_mask(height: int, width: int, kind: str) -> torch.Tensor:
    """Boolean (height, width) mask, True = missing.

    ``"top"``: the first ``height // 2`` rows are missing; ``"left"``: the first ``width // 2``
    columns. For an odd size the middle row (column) is therefore observed.
    """
    if height < 1 or width < 1:
        raise ValueError(f"mask size must be positive, got {height}x{width}")
    mask = torch.zeros(height, width, dtype=torch.bool)
    if kind == "top":
        mask[: height // 2, :] = True
    elif kind == "left":
        mask[:, : width // 2] = True
    else:
        raise ValueError(f"kind must be 'top' or 'left', got {kind!r}")
    return mask


def inpainting_mse(
    reconstructed: torch.Tensor, original: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Per-image MSE (N,) between images (N, C, H, W) with pixels in [0, 1].

    Without ``mask`` the mean runs over all C*H*W values of each image (as in the paper's Table 2).
    With a boolean ``mask`` (H, W) or (N, H, W) or (N, C, H, W), True = missing, it runs over the masked
    values only.
    """
    if reconstructed.shape != original.shape:
        raise ValueError(f"shapes differ: reconstructed {tuple(reconstructed.shape)}, original {tuple(original.shape)}")
    err = (reconstructed.double() - original.double()).pow(2)
    if mask is None:
        return err.flatten(1).mean(dim=1)
    m = mask.to(device=err.device, dtype=torch.bool)
    if m.ndim == 2:
        m = m[None, None]
    elif m.ndim == 3:
        m = m[:, None]
    m = m.expand_as(err)
    counts = m.flatten(1).sum(dim=1)
    if (counts == 0).any():
        raise ValueError("the mask marks no pixel as missing for some images")
    return (err * m).flatten(1).sum(dim=1) / counts


def mse_summary(per_image) -> dict[str, float]:
    """Mean and standard deviation (population, ddof=0) of per-image errors, as Table 2 reports them."""
    values = _as_numpy(per_image)
    _check_finite(values, "mse_summary")
    return {"mean": float(values.mean()), "std": float(values.std())}
