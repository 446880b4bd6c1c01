"""Tests of the book's explorers: the views they compute, and their controls redrawing the view.

References are computed another way. Entropies come from scipy on the flattened weights, and
the Einsum network's weights from a softmax of its raw logits. SPAN's weights come from a forward
pass over a whole batch, and inpainting errors from numpy on the images.
"""

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
import torch
from scipy.stats import entropy

from spanlib import SPAN, EinsumNetwork, ImageCircuit, Normal, PatchEmbedding, random_binary_trees
from spanlib.imaging import images_to_variables
from spanlib.widgets import (
    InpaintingExplorer,
    WeightExplorer,
    draw_inpainting_view,
    draw_weight_view,
    inpainting_explorer,
    inpainting_view,
    layer_shapes,
    weight_explorer,
    weight_view,
)

SIZE = 4  # images are 1 x 4 x 4


pytestmark = pytest.mark.usefixtures("single_thread")


def make_einet(seed=0, depth=2, replicas=2):
    torch.manual_seed(seed)
    return EinsumNetwork(random_binary_trees(SIZE * SIZE, depth, replicas, seed=0), Normal(), K=3)


def make_span(seed=0):
    torch.manual_seed(seed)
    return SPAN(make_einet(seed + 1), PatchEmbedding(1, SIZE, SIZE, 2), depth=1, heads=2, d_model=8, d_ff=16).eval()


@pytest.fixture(scope="module")
def images():
    generator = torch.Generator().manual_seed(0)
    return torch.rand(5, 1, SIZE, SIZE, generator=generator)


@pytest.fixture(scope="module")
def models():
    return make_span(), make_einet(seed=7)


class FillConstant:
    """Inpainting model that writes one value into every missing pixel, and counts its calls."""

    def __init__(self, value):
        self.value, self.calls = value, 0

    def inpaint(self, images, mask):
        self.calls += 1
        return torch.where(mask.expand_as(images), torch.full_like(images, self.value), images)


class FillNoise:
    """Inpainting model that draws the missing pixels from the global random generator, like Langevin dynamics."""

    def inpaint(self, images, mask):
        return torch.where(mask.expand_as(images), torch.rand_like(images), images)


class Unusable:
    def inpaint(self, images, mask):
        raise AssertionError("the stored reconstruction should have been used")


# ---------------------------------------------------------------------- weight views
def test_layer_shapes_match_log_weights(models):
    _, einet = models
    shapes = layer_shapes(einet)
    assert len(shapes) == len(einet.einsum_layers)
    assert shapes[-1][1] == 1, "the root layer has one output entry"
    for (partitions, out, K), weights in zip(shapes, einet.log_weights()):
        assert weights.shape == (partitions, out, K, K)


@pytest.mark.parametrize("layer", [0, 1])
def test_weight_view_matches_models(models, images, layer):
    span, einet = models
    partitions, out, _ = layer_shapes(einet)[layer]
    partition, entry, sample = partitions - 1, out - 1, 3
    view = weight_view(span, einet, images, sample, layer, partition, entry)

    with torch.no_grad():
        batch_weights = span.sum_weights(images_to_variables(images))[layer][sample, partition, entry]
    torch.testing.assert_close(view.span_weights, batch_weights, rtol=1e-5, atol=1e-6)

    logits = einet.einsum_layers[layer].logits.detach()[partition, entry]
    torch.testing.assert_close(view.einet_weights, torch.softmax(logits.flatten(), 0).view_as(logits))
    torch.testing.assert_close(view.image, images[sample])


def test_weight_view_entropies(models, images):
    span, einet = models
    view = weight_view(span, einet, images, 1, 0, 2, 1)
    assert view.span_entropy == pytest.approx(entropy(view.span_weights.flatten().numpy()), rel=1e-5)
    assert view.einet_entropy == pytest.approx(entropy(view.einet_weights.flatten().numpy()), rel=1e-5)
    assert view.uniform_entropy == pytest.approx(np.log(9))
    assert view.span_entropy <= view.uniform_entropy + 1e-6


@pytest.mark.parametrize("argument, value", [("sample", 5), ("layer", 2), ("partition", 99), ("entry", 3)])
def test_weight_view_rejects_bad_index(models, images, argument, value):
    span, einet = models
    chosen = {"sample": 0, "layer": 0, "partition": 0, "entry": 0, argument: value}
    with pytest.raises(IndexError, match=argument):
        weight_view(span, einet, images, **chosen)


def test_draw_weight_view_titles(models, images):
    span, einet = models
    view = weight_view(span, einet, images, 2, 1, 0, 0)
    figure = draw_weight_view(view)
    titles = [ax.get_title() for ax in figure.axes]
    assert "test image 2" in titles
    assert any(f"entropy {view.span_entropy:.2f} nats" in title for title in titles)
    assert any(f"entropy {view.einet_entropy:.2f} nats" in title for title in titles)
    assert "Einsum layer 2, sum node 0" in figure._suptitle.get_text()


# ---------------------------------------------------------------------- weight explorer
def test_weight_explorer_starts_at_default(models, images):
    span, einet = models
    explorer = weight_explorer(span, einet, images)
    assert isinstance(explorer, WeightExplorer)
    assert explorer.figure is None, "nothing is drawn before a control changes"
    expected = weight_view(span, einet, images, 0, 0, 0, 0)
    torch.testing.assert_close(explorer.view.span_weights, expected.span_weights)
    assert explorer.sample.max == len(images) - 1
    assert explorer.partition.max == layer_shapes(einet)[0][0] - 1


def test_weight_explorer_layer_change(models, images):
    span, einet = models
    explorer = weight_explorer(span, einet, images)
    explorer.entry.value = 2
    explorer.layer.value = 1
    partitions, out, _ = layer_shapes(einet)[1]
    assert explorer.partition.max == partitions - 1
    assert explorer.entry.max == out - 1
    assert explorer.entry.value == 0, "the root layer has only entry 0, so the slider clamps"
    assert (explorer.view.layer, explorer.view.entry) == (1, 0)
    assert "Einsum layer 2" in explorer.figure._suptitle.get_text()


def test_weight_explorer_sample_change_redraws(models, images):
    span, einet = models
    explorer = weight_explorer(span, einet, images)
    explorer.sample.value = 4
    expected = weight_view(span, einet, images, 4, 0, 0, 0)
    torch.testing.assert_close(explorer.view.image, images[4])
    torch.testing.assert_close(explorer.view.span_weights, expected.span_weights)
    assert "test image 4" in [ax.get_title() for ax in explorer.figure.axes]


def test_weight_explorer_rejects_other_structure(images):
    span = make_span()
    with pytest.raises(ValueError, match="same profile"):
        weight_explorer(span, make_einet(depth=1, replicas=3), images)


# ---------------------------------------------------------------------- inpainting views
@pytest.mark.parametrize("kind, missing", [("top", np.s_[:, : SIZE // 2, :]), ("left", np.s_[:, :, : SIZE // 2])])
def test_inpainting_view_errors(images, kind, missing):
    view = inpainting_view({"grey": FillConstant(0.5)}, images, 2, kind)
    original = images[2].numpy()
    expected = original.copy()
    expected[missing] = 0.5
    np.testing.assert_allclose(view.reconstructions["grey"].numpy(), expected)
    squared = (expected - original) ** 2
    assert view.mse["grey"] == pytest.approx(squared.mean())
    assert view.missing_mse["grey"] == pytest.approx(squared[missing].mean())
    assert view.missing_mse["grey"] == pytest.approx(2 * view.mse["grey"]), "half the pixels are missing"


def test_inpainting_view_circuit_keeps_observed(models, images):
    _, einet = models
    circuit = ImageCircuit(einet, 1, SIZE, SIZE)
    view = inpainting_view({"EiNet": circuit}, images, 0, "left")
    observed = ~view.mask
    torch.testing.assert_close(view.reconstructions["EiNet"][:, observed], images[0][:, observed])
    with torch.no_grad():
        batch = circuit.inpaint(images, view.mask)
    torch.testing.assert_close(view.reconstructions["EiNet"], batch[0].clamp(0, 1))


def test_inpainting_view_uses_stored_reconstructions(images):
    stored = {("model", "top"): torch.zeros_like(images)}
    view = inpainting_view({"model": Unusable()}, images, 1, "top", reconstructions=stored)
    assert torch.equal(view.reconstructions["model"], torch.zeros_like(images[1]))
    assert view.mse["model"] == pytest.approx(float((images[1] ** 2).mean()))


def test_inpainting_view_seeded_locally(images):
    before = torch.get_rng_state()
    first = inpainting_view({"noise": FillNoise()}, images, 3, "top", seed=5)
    second = inpainting_view({"noise": FillNoise()}, images, 3, "top", seed=5)
    assert torch.equal(first.reconstructions["noise"], second.reconstructions["noise"])
    assert torch.equal(torch.get_rng_state(), before)
    other = inpainting_view({"noise": FillNoise()}, images, 3, "top", seed=6)
    assert not torch.equal(first.reconstructions["noise"], other.reconstructions["noise"])


def test_inpainting_view_rejects_unknown_mask(images):
    with pytest.raises(ValueError, match="kind"):
        inpainting_view({"grey": FillConstant(0.5)}, images, 0, "bottom")


def test_draw_inpainting_view_panels(images):
    view = inpainting_view({"a": FillConstant(0.0), "b": FillConstant(1.0)}, images, 0, "left")
    figure = draw_inpainting_view(view)
    titles = [ax.get_title() for ax in figure.axes]
    assert titles[:2] == ["original", "left half missing"]
    assert titles[2].startswith("a\nMSE ")
    assert f"{view.mse['a']:.4f}" in titles[2]
    assert titles[3].startswith("b\nMSE ")
    assert f"{view.missing_mse['b']:.4f}" in titles[3]


# ---------------------------------------------------------------------- inpainting explorer
def test_inpainting_explorer_controls_update_view(images):
    model = FillConstant(0.25)
    explorer = inpainting_explorer({"quarter": model}, images)
    assert isinstance(explorer, InpaintingExplorer)
    assert (explorer.view.index, explorer.view.kind) == (0, "top")
    assert explorer.figure is None

    explorer.kind.value = "left"
    assert explorer.view.kind == "left"
    assert torch.equal(explorer.view.mask, torch.zeros(SIZE, SIZE, dtype=torch.bool).index_fill(1, torch.arange(2), True))
    assert explorer.figure.axes[1].get_title() == "left half missing"

    explorer.index.value = 4
    expected = inpainting_view({"quarter": FillConstant(0.25)}, images, 4, "left")
    assert explorer.view.mse["quarter"] == pytest.approx(expected.mse["quarter"])
    assert "test image 4" in explorer.figure._suptitle.get_text()


def test_inpainting_explorer_caches_views(images):
    model = FillConstant(0.25)
    explorer = inpainting_explorer({"quarter": model}, images)
    explorer.kind.value = "left"
    explorer.kind.value = "top"
    explorer.kind.value = "left"
    assert model.calls == 2, "each (image, mask) pair is computed once"


def test_inpainting_explorer_rejects_empty_models(images):
    with pytest.raises(ValueError, match="models is empty"):
        inpainting_explorer({}, images)
