"""Figures of the book and of `python -m spanlib reproduce`: weight heat maps, score histograms, image grids."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns
import torch
from matplotlib.patches import Patch
from matplotlib.scale import SymmetricalLogTransform

from .reproduce.paper import MODEL_LABELS


def image_grid(images: torch.Tensor, ax=None, columns: int = 8, title: str | None = None):
    """Show images (n, channels, height, width) in [0, 1] as one grid on `ax`."""
    images = images.detach().cpu().clamp(0, 1)
    n, channels, height, width = images.shape
    rows = -(-n // columns)
    canvas = torch.ones(channels, rows * (height + 1) - 1, columns * (width + 1) - 1)
    for i, image in enumerate(images):
        r, c = divmod(i, columns)
        canvas[:, r * (height + 1) : r * (height + 1) + height, c * (width + 1) : c * (width + 1) + width] = image
    ax = ax or plt.gca()
    picture = canvas.permute(1, 2, 0).numpy()
    ax.imshow(picture[..., 0] if channels == 1 else picture, cmap="gray", vmin=0, vmax=1)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title)
    return ax


def weight_heatmaps(span_weights: list[torch.Tensor], einet_weights: list[torch.Tensor], sample: int = 0,
                    partition: int = 0, entry: int = 0, mixing: torch.Tensor | None = None):
    """Draw Figure 1: W^S(x)[k, :, :] of SPAN beside W[k, :, :] of the Einsum network for every einsum layer.

    Args:
        span_weights: per layer (batch, partitions, out, K, K) from `span.sum_weights(x)`.
        einet_weights: per layer (partitions, out, K, K) normalised weights of the Einsum network.
        sample, partition, entry: which image, sum node (partition) and output entry k to show.
        mixing: optional (R,) replica mixing weights, drawn as a 1 x R strip.
    """
    layers = len(span_weights)
    rows = 3 if mixing is not None else 2
    fig, axes = plt.subplots(rows, layers, figsize=(3.0 * layers, 2.4 * rows + 0.4), squeeze=False)
    for depth in range(layers):
        p = min(partition, span_weights[depth].shape[1] - 1)
        k = min(entry, span_weights[depth].shape[2] - 1)
        panels = ((span_weights[depth][sample, p, k], "SPAN $W^S(x)$"), (einet_weights[depth][p, k], "EiNet $W$"))
        # One colour scale per layer, so that the two models' panels of a column compare directly.
        top = max(float(weights.max()) for weights, _ in panels)
        for row, (weights, label) in enumerate(panels):
            ax = axes[row, depth]
            sns.heatmap(weights.detach().cpu().numpy(), ax=ax, vmin=0, vmax=top, cmap="viridis", square=True,
                        cbar=True, cbar_kws={"shrink": 0.8}, annot=weights.shape[-1] <= 6, fmt=".2f",
                        annot_kws={"size": 6})
            ax.set_title(f"{label}\nlayer {depth + 1}, node {p}, k={k}", fontsize=8)
            ax.set_xlabel("right child entry j")
            ax.set_ylabel("left child entry i")
            ax.tick_params(axis="y", labelrotation=0)
    if mixing is not None:
        for ax in axes[2]:
            ax.axis("off")
        strip = fig.add_subplot(rows, 1, rows)
        sns.heatmap(mixing.detach().cpu().numpy()[None, :], ax=strip, cmap="viridis", cbar=True, yticklabels=False)
        strip.set_title("replica mixing weights of the root (1 x R)")
        strip.set_xlabel("replica")
    fig.suptitle("Normalised weights at one sum node per einsum layer (probability, no unit)")
    fig.tight_layout()
    return fig


SCORE_NAMES = {
    "span": "negative energy -E(x)",
    "ebm": "negative energy -E(x)",
    "einet": "log-likelihood log p(x)",
    "maf": "log-likelihood log p(x)",
    "vae": "ELBO, a lower bound on log p(x)",
}


def symlog_threshold(scores: dict[str, np.ndarray], decades: float = 1.0) -> float | None:
    """Return the linear range of a symmetric log axis for `scores`, or None when a linear axis suits them.

    The threshold is the smallest power of ten at or above the largest absolute in-distribution
    score (the first set if there is no "in-distribution" key). A log axis is chosen only when some
    score lies more than `decades` powers of ten beyond it, as the negative energies of very
    unlikely images do.
    """
    reference = scores.get("in-distribution", next(iter(scores.values())))
    largest_in = float(np.max(np.abs(reference)))
    largest = float(np.max(np.abs(np.concatenate(list(scores.values())))))
    if largest_in == 0:
        return None
    threshold = 10.0 ** np.ceil(np.log10(largest_in))
    return threshold if largest > threshold * 10**decades else None


def score_histograms(scores: dict[str, np.ndarray], model: str = "span", ax=None, bins: int = 50,
                     rescale: dict[str, float] | None = None, linthresh: float | str | None = "auto"):
    """Draw Figure 2: histograms of per-image scores, in-distribution test set against each OOD set.

    `scores` maps "in-distribution" and each OOD set name to scores. `rescale` multiplies the counts
    of a set, as Figure 2 of Yu, Dhami and Kersting's SPAN paper does for Semeion. With a number
    `linthresh`, the x axis is a symmetric log scale, linear within +-linthresh and logarithmic
    beyond, and all sets share bins of equal width on that scale. "auto" takes
    `symlog_threshold(scores)`. On a linear axis, sets whose scores lie far below the others are
    drawn with their own bins so that their bars stay visible.
    """
    ax = ax or plt.gca()
    everything = np.concatenate(list(scores.values()))
    if linthresh == "auto":
        linthresh = symlog_threshold(scores)
    if linthresh is not None:
        transform = SymmetricalLogTransform(base=10, linthresh=linthresh, linscale=1.0)
        ends = transform.transform(np.array([everything.min(), everything.max()]))
        shared = transform.inverted().transform(np.linspace(ends[0], ends[1], bins + 1))
        shared[0], shared[-1] = everything.min(), everything.max()  # exact ends, free of rounding in the transform
        low = everything.min()
    else:
        low, high = np.percentile(everything, [1, 100])
        shared = np.linspace(low, high, bins)
    hidden = 0  # scores left of the shared bins, which a linear axis leaves out
    for name, values in scores.items():
        edges = shared if np.median(values) >= low else np.linspace(values.min(), values.max(), bins)
        hidden += int(np.sum(values < edges[0]))
        weights = np.full(len(values), (rescale or {}).get(name, 1.0))
        ax.hist(values, bins=edges, weights=weights, alpha=0.5, label=f"{name} (n={len(values)})")
    if linthresh is not None:
        ax.set_xscale("symlog", linthresh=linthresh, linscale=1.0)
        # Ticks at 0 and at whole decades outside the linear range; the default ticks inside it crowd 0.
        low_decade = int(np.ceil(np.log10(linthresh)))
        high_decade = int(np.ceil(np.log10(np.abs(everything).max())))
        decades = [10.0**k for k in range(low_decade, high_decade + 1)]
        ticks = [-d for d in reversed(decades)] + [0.0] + decades
        ax.set_xticks([t for t in ticks if everything.min() <= t <= everything.max() or t == 0.0])
    score_name = SCORE_NAMES.get(model, "score")
    notes = [] if linthresh is None else [f"log scale beyond +-{linthresh:g}"]
    if hidden:
        notes.append(f"{hidden} lower score{'s' if hidden > 1 else ''} not shown")
    # The notes go on a second line, so that labels of side-by-side panels do not run into each other.
    ax.set_xlabel(f"{score_name} (nats per image)" + (f"\n{'; '.join(notes)}" if notes else ""))
    ax.set_ylabel("number of images")
    ax.set_title(f"{MODEL_LABELS.get(model, model)}: scores of in-distribution and OOD test images")
    ax.legend(fontsize=8)
    return ax


def training_curve(history, ax=None):
    """Plot SPAN's per-epoch mean -E(x) with the three phases shaded; `history` is a `History`."""
    ax = ax or plt.gca()
    records = history.records if hasattr(history, "records") else history
    colours = {"warmup": "tab:blue", "coordinate": "tab:orange", "finetune": "tab:green"}
    for step, record in enumerate(records, start=1):
        ax.axvspan(step - 0.5, step + 0.5, color=colours[record["phase"]], alpha=0.12, lw=0)
    steps = np.arange(1, len(records) + 1)
    ax.plot(steps, [r["train"] for r in records], "o-", label="train")
    if any(r["validation"] is not None for r in records):
        ax.plot(steps, [r["validation"] for r in records], "s--", label="validation")
    # Legend-only patches: a zero-width axvspan would draw a line at x=0 and stretch the axis to it.
    phase_patches = [Patch(color=colour, alpha=0.3, label=f"phase: {phase}") for phase, colour in colours.items()]
    ax.set_xlabel("epoch (all phases)")
    ax.set_ylabel("mean -E(x) (nats per image)")
    ax.set_title("SPAN's three-phase training")
    handles, _ = ax.get_legend_handles_labels()
    ax.legend(handles=handles + phase_patches, fontsize=8)
    return ax


def save_ood_figures(experiment, scores: dict) -> None:
    """Write Figure 2 (one histogram per model) into the run's figures folder."""
    for name, sets in scores.items():
        fig, ax = plt.subplots(figsize=(7, 4))
        score_histograms(sets, name, ax=ax)
        fig.tight_layout()
        fig.savefig(experiment.figure_path(f"figure2_{name}"), dpi=120)
        plt.close(fig)


def save_inpainting_figures(experiment, reconstructions: dict, samples: dict) -> None:
    """Write Figure 4 (samples, and the top and left halves filled in) into the run's figures folder."""
    fig, axes = plt.subplots(1, len(samples), figsize=(4 * len(samples), 4))
    for ax, (name, images) in zip(np.atleast_1d(axes), samples.items()):
        image_grid(images, ax=ax, columns=4, title=f"{MODEL_LABELS[name]} samples")
    fig.tight_layout()
    fig.savefig(experiment.figure_path("figure4_samples"), dpi=120)
    plt.close(fig)

    names = sorted({name for name, _ in reconstructions}, key=list(MODEL_LABELS).index)
    fig, axes = plt.subplots(2, len(names), figsize=(4 * len(names), 8), squeeze=False)
    for col, name in enumerate(names):
        for row, kind in enumerate(("top", "left")):
            image_grid(reconstructions[(name, kind)][:16], ax=axes[row, col], columns=4,
                       title=f"{MODEL_LABELS[name]}: {kind} half filled in")
    fig.tight_layout()
    fig.savefig(experiment.figure_path("figure4_inpainting"), dpi=120)
    plt.close(fig)


def save_weight_figure(experiment) -> None:
    """Write Figure 1 (weight heat maps of the first test image) into the run's figures folder."""
    from .imaging import images_to_variables

    span = experiment.model("span").model
    einet = experiment.model("einet").model
    x = images_to_variables(experiment.data.test[:1]).to(experiment.device)
    with torch.no_grad():
        span_weights = span.sum_weights(x)
        einet_weights = [w.exp() for w in einet.log_weights()]
        mixing = einet.mixing_log_weights()[-1]
    strip = None if mixing is None else mixing.exp()[0, 0]
    fig = weight_heatmaps(span_weights, einet_weights, mixing=strip)
    fig.savefig(experiment.figure_path("figure1_weights"), dpi=120)
    plt.close(fig)
