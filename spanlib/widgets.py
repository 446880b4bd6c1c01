"""Interactive explorers for the book: SPAN's sum weights against the Einsum network's, and inpainting.

Each explorer separates what a view shows from how it is drawn and controlled:

* `weight_view` and `inpainting_view` compute one view as a small dataclass of tensors and numbers;
* `draw_weight_view` and `draw_inpainting_view` draw a view as an ordinary matplotlib figure;
* `weight_explorer` and `inpainting_explorer` return an ipywidgets box whose controls pick the view
  and redraw it below them.

A static HTML page has no Python kernel, so its controls cannot redraw. The book therefore draws
the default view with the plain drawing function and shows the controls under it. The explorers'
output area stays empty until a control changes, so the page embeds no image in the widget state.
"""

from __future__ import annotations

from dataclasses import dataclass

import ipywidgets as widgets
import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns
import torch
from IPython.display import clear_output, display

from .evaluation import inpainting_mask, inpainting_mse
from .imaging import images_to_variables
from .reproduce.experiment import weight_entropy

MASK_KINDS = ("top", "left")
# Colour of the missing pixels in the masked input (RGB in [0, 1]).
MISSING_COLOUR = (0.85, 0.25, 0.25)
# Wide enough for the longest control label ("einsum layer"), which the default width cuts off.
LABEL_STYLE = {"description_width": "100px"}


# ---------------------------------------------------------------------- sum weights
@dataclass(frozen=True)
class WeightView:
    """The normalised weights of one sum entry k of one sum node, for one image, in SPAN and the Einsum network.

    `layer` counts einsum layers from 0 (the bottom) and `partition` indexes the sum nodes of that layer.
    Weight matrices are (K, K): rows are entries of the left child, columns those of the right child.
    Entropies are in nats, and `uniform_entropy` = log(K * K) is the largest possible value.
    """

    sample: int
    layer: int
    partition: int
    entry: int
    image: torch.Tensor
    span_weights: torch.Tensor
    einet_weights: torch.Tensor
    span_entropy: float
    einet_entropy: float
    uniform_entropy: float


def layer_shapes(einet) -> list[tuple[int, int, int]]:
    """Return (partitions, out, K) of every einsum layer of `einet`, bottom first. `out` is 1 in the root layer."""
    return [tuple(w.shape[:3]) for w in einet.log_weights()]


def weight_view(span, einet, images: torch.Tensor, sample: int, layer: int, partition: int, entry: int,
                span_weights: list[torch.Tensor] | None = None) -> WeightView:
    """Compute the view of W^S(x)[k] (SPAN) and W[k] (Einsum network) at one sum node for image `sample`.

    Args:
        span: a trained `SPAN`; einet: an `EinsumNetwork` with the same layer shapes as `span.einet`.
        images: (N, channels, height, width) in [0, 1].
        sample, layer, partition, entry: image index, einsum layer (0 = bottom), sum node, output entry k.
        span_weights: `span.sum_weights(x)` of that single image, if already computed.
    """
    shapes = layer_shapes(einet)
    _check_index("sample", sample, len(images))
    _check_index("layer", layer, len(shapes))
    partitions, out, _ = shapes[layer]
    _check_index("partition", partition, partitions)
    _check_index("entry", entry, out)
    if span_weights is None:
        span_weights = _span_weights(span, images[sample : sample + 1])
    ws = span_weights[layer][0, partition, entry].detach().cpu()
    with torch.no_grad():
        we = einet.log_weights()[layer][partition, entry].exp().cpu()
    return WeightView(
        sample=sample, layer=layer, partition=partition, entry=entry, image=images[sample].detach().cpu(),
        span_weights=ws, einet_weights=we, span_entropy=float(weight_entropy(ws)),
        einet_entropy=float(weight_entropy(we)), uniform_entropy=float(np.log(ws.numel())),
    )


def draw_weight_view(view: WeightView):
    """Draw a `WeightView`: the image, then SPAN's and the Einsum network's weights as heat maps on one colour scale."""
    fig, axes = plt.subplots(1, 3, figsize=(10, 3.6), gridspec_kw={"width_ratios": [0.8, 1, 1.2]},
                             layout="constrained")
    _show_image(axes[0], view.image)
    axes[0].set_title(f"test image {view.sample}")
    largest = float(max(view.span_weights.max(), view.einet_weights.max()))
    K = view.span_weights.shape[-1]
    panels = ((view.span_weights, "SPAN $W^S(x)[k]$", view.span_entropy, False),
              (view.einet_weights, "EiNet $W[k]$", view.einet_entropy, True))
    for ax, (weights, label, entropy, colour_bar) in zip(axes[1:], panels):
        sns.heatmap(weights.numpy(), ax=ax, vmin=0, vmax=largest, cmap="viridis", square=True, cbar=colour_bar,
                    cbar_kws={"label": "weight (probability)"}, annot=K <= 6, fmt=".2f", annot_kws={"size": 7})
        ax.set_title(f"{label}\nentropy {entropy:.2f} nats")
        ax.set_xlabel("right child entry j")
        ax.set_ylabel("left child entry i")
    fig.suptitle(f"Einsum layer {view.layer + 1}, sum node {view.partition}, entry k={view.entry} "
                 f"(uniform weights: {view.uniform_entropy:.2f} nats)", fontsize=10)
    return fig


class WeightExplorer(widgets.VBox):
    """Controls for the einsum layer, sum node, entry k and test image, with the chosen `WeightView` below them.

    `view` is the current view and `figure` the last figure drawn (None before the first change).
    """

    def __init__(self, span, einet, images: torch.Tensor):
        shapes, span_shapes = layer_shapes(einet), layer_shapes(span.einet)
        if shapes != span_shapes:
            raise ValueError(f"the Einsum network's layers {shapes} differ from SPAN's {span_shapes}; "
                             "build both from the same profile")
        if len(images) == 0:
            raise ValueError("images is empty; pass at least one image")
        self.span, self.einet, self.images, self.shapes = span, einet, images.detach().cpu(), shapes
        self._cached: tuple[int, list[torch.Tensor]] | None = None
        self._syncing = False
        self.figure = None

        options = [(f"{i + 1} of {len(shapes)} ({p} sum nodes)", i) for i, (p, _, _) in enumerate(shapes)]
        self.layer = widgets.Dropdown(options=options, value=0, description="einsum layer", style=LABEL_STYLE)
        self.partition = widgets.IntSlider(
            value=0, min=0, max=shapes[0][0] - 1, description="sum node", style=LABEL_STYLE
        )
        self.entry = widgets.IntSlider(
            value=0, min=0, max=shapes[0][1] - 1, description="entry k", style=LABEL_STYLE
        )
        self.sample = widgets.IntSlider(
            value=0, min=0, max=len(images) - 1, description="test image", style=LABEL_STYLE
        )
        self.output = widgets.Output()
        for control in (self.layer, self.partition, self.entry, self.sample):
            control.observe(self._on_change, names="value")
        self.view = self._compute()
        super().__init__([widgets.HBox([self.layer, self.partition]), widgets.HBox([self.entry, self.sample]),
                          self.output])

    def _compute(self) -> WeightView:
        sample = self.sample.value
        if self._cached is None or self._cached[0] != sample:
            self._cached = (sample, _span_weights(self.span, self.images[sample : sample + 1]))
        return weight_view(self.span, self.einet, self.images, sample, self.layer.value, self.partition.value,
                           self.entry.value, span_weights=self._cached[1])

    def _on_change(self, change) -> None:
        if self._syncing:
            return
        # Shrinking a slider's range clamps its value and fires this handler again, so the nested call returns early.
        self._syncing = True
        try:
            partitions, out, _ = self.shapes[self.layer.value]
            self.partition.max = partitions - 1
            self.entry.max = out - 1
        finally:
            self._syncing = False
        self.view = self._compute()
        self.figure = _redraw(self.output, draw_weight_view, self.view)


def weight_explorer(span, einet, images: torch.Tensor) -> WeightExplorer:
    """Return a `WeightExplorer` for `span`, the Einsum network `einet` and test images (N, C, H, W)."""
    return WeightExplorer(span, einet, images)


# ---------------------------------------------------------------------- inpainting
@dataclass(frozen=True)
class InpaintingView:
    """One image with its top or left half missing and every model's reconstruction of it.

    Images are (channels, height, width) in [0, 1] and `mask` is (height, width) with True = missing.
    `mse` averages the squared error over every pixel of the image, and `missing_mse` over the
    missing pixels only.
    """

    index: int
    kind: str
    original: torch.Tensor
    mask: torch.Tensor
    reconstructions: dict[str, torch.Tensor]
    mse: dict[str, float]
    missing_mse: dict[str, float]


def inpainting_view(models: dict, images: torch.Tensor, index: int, kind: str,
                    reconstructions: dict | None = None, seed: int = 0) -> InpaintingView:
    """Fill the `kind` ("top" or "left") half of image `index` with every model and measure the errors.

    Args:
        models: display name -> model with `.inpaint(images, mask)`.
        images: (N, channels, height, width) in [0, 1].
        reconstructions: optional (name, kind) -> (N, channels, height, width) results of an earlier
            run on the same `images`; those models are not run again.
        seed: random seed of stochastic inpainting (the EBM's Langevin dynamics); the global
            random state is left as it was.
    """
    if kind not in MASK_KINDS:
        raise ValueError(f"kind must be one of {MASK_KINDS}, got {kind!r}")
    _check_index("index", index, len(images))
    original = images[index].detach().cpu()
    channels, height, width = original.shape
    mask = inpainting_mask(height, width, kind)
    filled, mse, missing_mse = {}, {}, {}
    for name, model in models.items():
        stored = (reconstructions or {}).get((name, kind))
        if stored is not None:
            result = stored[index].detach().cpu()
        else:
            result = _inpaint_one(model, original, mask, seed + index)
        filled[name] = result
        mse[name] = float(inpainting_mse(result[None], original[None]))
        missing_mse[name] = float(inpainting_mse(result[None], original[None], mask))
    return InpaintingView(index=index, kind=kind, original=original, mask=mask, reconstructions=filled,
                          mse=mse, missing_mse=missing_mse)


def draw_inpainting_view(view: InpaintingView):
    """Draw an `InpaintingView`: the original, the input with its missing half in colour, then each model's result."""
    panels = 2 + len(view.reconstructions)
    fig, axes = plt.subplots(1, panels, figsize=(2.1 * panels, 3.1), layout="constrained")
    _show_image(axes[0], view.original)
    axes[0].set_title("original", fontsize=9)
    masked = _to_rgb(view.original).clone()
    masked[view.mask] = torch.tensor(MISSING_COLOUR)
    _show_image(axes[1], masked.permute(2, 0, 1))
    axes[1].set_title(f"{view.kind} half missing", fontsize=9)
    for ax, (name, image) in zip(axes[2:], view.reconstructions.items()):
        _show_image(ax, image)
        ax.set_title(f"{name}\nMSE {view.mse[name]:.4f}\nmissing {view.missing_mse[name]:.4f}", fontsize=9)
    fig.suptitle(f"Inpainting of test image {view.index} (MSE per pixel, pixels in [0, 1])", fontsize=10)
    return fig


class InpaintingExplorer(widgets.VBox):
    """Controls for the test image and the missing half, with the chosen `InpaintingView` below them.

    Reconstructions are computed when first shown and kept, so going back to a view is instant.
    """

    def __init__(self, models: dict, images: torch.Tensor, reconstructions: dict | None = None, seed: int = 0):
        if not models:
            raise ValueError("models is empty; pass a dict of display name -> model with .inpaint")
        if len(images) == 0:
            raise ValueError("images is empty; pass at least one image")
        self.models, self.images, self.seed = models, images.detach().cpu(), seed
        self.reconstructions = reconstructions
        self.views: dict[tuple[int, str], InpaintingView] = {}
        self.figure = None

        self.index = widgets.IntSlider(
            value=0, min=0, max=len(images) - 1, description="test image", style=LABEL_STYLE
        )
        self.kind = widgets.ToggleButtons(options=[(f"{k} half", k) for k in MASK_KINDS], value="top",
                                          description="missing", style=LABEL_STYLE)
        self.output = widgets.Output()
        self.index.observe(self._on_change, names="value")
        self.kind.observe(self._on_change, names="value")
        self.view = self._compute()
        super().__init__([widgets.HBox([self.index, self.kind]), self.output])

    def _compute(self) -> InpaintingView:
        key = (self.index.value, self.kind.value)
        if key not in self.views:
            self.views[key] = inpainting_view(self.models, self.images, *key, self.reconstructions, self.seed)
        return self.views[key]

    def _on_change(self, change) -> None:
        self.view = self._compute()
        self.figure = _redraw(self.output, draw_inpainting_view, self.view)


def inpainting_explorer(models: dict, images: torch.Tensor, reconstructions: dict | None = None,
                        seed: int = 0) -> InpaintingExplorer:
    """Return an `InpaintingExplorer` over `models` (display name -> model with `.inpaint`) and images (N, C, H, W)."""
    return InpaintingExplorer(models, images, reconstructions, seed)


# ---------------------------------------------------------------------- helpers
def _check_index(name: str, value: int, size: int) -> None:
    if not 0 <= value < size:
        raise IndexError(f"{name}={value} is out of range; valid values are 0 to {size - 1}")


def _span_weights(span, image: torch.Tensor) -> list[torch.Tensor]:
    with torch.no_grad():
        return [w.cpu() for w in span.sum_weights(images_to_variables(image).to(span.device))]


def _model_device(model) -> torch.device:
    parameters = getattr(model, "parameters", None)
    first = next(iter(parameters()), None) if callable(parameters) else None
    return first.device if first is not None else torch.device("cpu")


def _inpaint_one(model, image: torch.Tensor, mask: torch.Tensor, seed: int) -> torch.Tensor:
    device = _model_device(model)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        # The EBM's Langevin dynamics turns gradients back on for the image it updates.
        with torch.no_grad():
            filled = model.inpaint(image[None].to(device), mask.to(device))
    return filled[0].detach().cpu().clamp(0, 1)


def _to_rgb(image: torch.Tensor) -> torch.Tensor:
    """Map (channels, height, width) with 1 or 3 channels to (height, width, 3)."""
    picture = image.permute(1, 2, 0)
    return picture.expand(-1, -1, 3) if picture.shape[-1] == 1 else picture


def _show_image(ax, image: torch.Tensor) -> None:
    picture = image.detach().cpu().clamp(0, 1).permute(1, 2, 0).numpy()
    if picture.shape[-1] == 1:
        ax.imshow(picture[..., 0], cmap="gray", vmin=0, vmax=1)
    else:
        ax.imshow(picture)
    ax.set_xticks([])
    ax.set_yticks([])


def _redraw(output: widgets.Output, draw, view):
    """Replace the content of `output` with the figure of `view`, and return that (closed) figure."""
    with output:
        clear_output(wait=True)
        figure = draw(view)
        display(figure)
    plt.close(figure)
    return figure
