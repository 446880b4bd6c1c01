"""Tests of the evaluation metrics against values worked out by hand, and of the inpainting helpers."""

import math

import numpy as np
import pytest
import torch

from spanlib.evaluation import (
    NonFiniteScoreError,
    inpainting_mask,
    inpainting_mse,
    mse_summary,
    ood_metrics,
    ood_table,
    score_dataset,
)

# In: 0.9 0.8 0.4, OOD: 0.7 0.3. Pairs (in > out): 0.9>0.7, 0.9>0.3, 0.8>0.7, 0.8>0.3, 0.4>0.3; 0.4<0.7 -> 5/6.
# Ranked: 0.9 P, 0.8 P, 0.7 N, 0.4 P, 0.3 N; precision at each positive 1, 1, 3/4 -> AP = (1 + 1 + 3/4) / 3.
# 95% TPR needs all three positives, threshold 0.4: one of two OOD scores (0.7) passes -> FPR95 = 1/2.
IN, OUT = [0.9, 0.8, 0.4], [0.7, 0.3]


def test_metrics_by_hand():
    m = ood_metrics(IN, OUT)
    assert m["auroc"] == pytest.approx(5 / 6)
    assert m["aupr"] == pytest.approx(2.75 / 3)
    assert m["fpr95"] == pytest.approx(0.5)


def test_sign_convention_ood_scored_higher():
    m = ood_metrics(OUT, IN)  # a model that prefers the OOD data
    assert m["auroc"] == pytest.approx(1 / 6) and m["auroc"] < 0.5


def test_ties():
    # pairs (1,1) (1,1) are ties worth 1/2 each, (1,0) (1,0) are wins: AUROC = (0.5 + 0.5 + 1 + 1) / 4.
    # One threshold (1) holds both positives and one negative: AP = 2/3, FPR95 = 1/2.
    m = ood_metrics([1.0, 1.0], [1.0, 0.0])
    assert m == pytest.approx({"auroc": 0.75, "aupr": 2 / 3, "fpr95": 0.5})


def test_fpr95_uses_the_highest_threshold_with_95_percent_tpr():
    scores_in = np.arange(1, 21, dtype=float)  # 1..20: threshold 2 keeps 19/20 = 95%
    scores_out = [100.0, 5.5, 1.5, 0.0]  # at threshold 2, 100 and 5.5 pass -> 2/4
    assert ood_metrics(scores_in, scores_out)["fpr95"] == pytest.approx(0.5)


def test_perfect_separation_and_torch_input():
    m = ood_metrics(torch.tensor([5.0, 6.0]), torch.tensor([[1.0], [2.0]]))
    assert m == {"auroc": 1.0, "aupr": 1.0, "fpr95": 0.0}


def test_non_finite_scores_are_an_error():
    expected = r"model 'EiNet' \(OOD scores\): 2 of 3 scores are not finite \(1 NaN, 1 inf\)"
    with pytest.raises(NonFiniteScoreError, match=expected):
        ood_metrics([1.0, 2.0], [float("nan"), -float("inf"), 0.0], model="EiNet")


class CountingModel(torch.nn.Module):
    """Scores each image by its pixel sum; records batch sizes and whether gradients were on."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(()))
        self.batches, self.grad_enabled, self.modes = [], [], []

    def score(self, x):
        self.batches.append(len(x))
        self.grad_enabled.append(torch.is_grad_enabled())
        self.modes.append(self.training)
        return self.weight * x.flatten(1).sum(dim=1)


def test_score_dataset_batches_without_grad_and_restores_mode():
    model = CountingModel()
    images = torch.rand(10, 1, 2, 2)
    scores = score_dataset(model, images, batch_size=4, progress=False)
    assert model.batches == [4, 4, 2] and not any(model.grad_enabled) and not any(model.modes)
    assert model.training  # put back in training mode
    np.testing.assert_allclose(scores, images.flatten(1).sum(dim=1).numpy(), rtol=1e-6)
    fn_scores = score_dataset(lambda x: -x.flatten(1).mean(dim=1, keepdim=True), images, batch_size=3)
    assert fn_scores.shape == (10,)


def test_score_dataset_names_model_and_count_of_bad_scores():
    def score(x):
        s = x.flatten(1).sum(dim=1)
        s[0] = float("nan")
        return s

    model = type("SPAN", (), {"score": staticmethod(score)})()
    with pytest.raises(NonFiniteScoreError, match=r"model 'SPAN': 2 of 6 scores are not finite \(2 NaN, 0 inf\)"):
        score_dataset(model, torch.rand(6, 1, 2, 2), batch_size=3)


def test_ood_table_long_and_wide():
    scores_in = {"SPAN": IN, "EiNet": OUT}
    scores_out = {"SPAN": {"mnist": OUT, "cifar10": IN}, "EiNet": {"mnist": IN, "cifar10": OUT}}
    long = ood_table(scores_in, scores_out)
    assert list(long.columns) == ["model", "ood", "auroc", "aupr", "fpr95"] and len(long) == 4
    wide = ood_table(scores_in, scores_out, metric="auroc")
    assert list(wide.index) == ["mnist", "cifar10"] and list(wide.columns) == ["SPAN", "EiNet"]
    assert wide.loc["mnist", "SPAN"] == pytest.approx(5 / 6)
    assert wide.loc["mnist", "EiNet"] == pytest.approx(1 / 6)
    assert wide.loc["cifar10", "SPAN"] == pytest.approx(0.5)  # identical score sets


@pytest.mark.parametrize("height, width", [(4, 4), (5, 5), (5, 6), (1, 3)])
def test_masks_cover_exactly_the_intended_pixels(height, width):
    top = inpainting_mask(height, width, "top")
    left = inpainting_mask(height, width, "left")
    rows = torch.arange(height)[:, None].expand(height, width)
    cols = torch.arange(width)[None, :].expand(height, width)
    assert top.dtype == torch.bool and top.shape == (height, width)
    assert torch.equal(top, rows < height // 2)  # odd height: the middle row is observed
    assert torch.equal(left, cols < width // 2)
    assert int(top.sum()) == (height // 2) * width and int(left.sum()) == height * (width // 2)


def test_mask_5x5_by_hand():
    expected_top = torch.tensor([[1] * 5, [1] * 5, [0] * 5, [0] * 5, [0] * 5], dtype=torch.bool)
    assert torch.equal(inpainting_mask(5, 5, "top"), expected_top)
    assert torch.equal(inpainting_mask(5, 5, "left"), expected_top.T)
    with pytest.raises(ValueError, match="'top' or 'left'"):
        inpainting_mask(5, 5, "bottom")


def test_mse_known_reconstruction():
    original = torch.zeros(2, 3, 2, 2)
    recon = original.clone()
    recon[0, 1, 0, 0] = 1.0  # one wrong value out of 12 in image 0
    recon[1] = 0.5  # every value off by 0.5 in image 1
    per_image = inpainting_mse(recon, original)
    assert per_image.tolist() == pytest.approx([1 / 12, 0.25])
    masked = inpainting_mse(recon, original, inpainting_mask(2, 2, "top"))  # 6 missing values per image
    assert masked.tolist() == pytest.approx([1 / 6, 0.25])
    summary = mse_summary(per_image)
    assert summary["mean"] == pytest.approx((1 / 12 + 0.25) / 2)
    assert summary["std"] == pytest.approx(abs(0.25 - 1 / 12) / 2)  # population std of two values
    with pytest.raises(ValueError, match="shapes differ"):
        inpainting_mse(recon[:1], original)


def test_mse_summary_three_values():
    assert mse_summary([1.0, 2.0, 3.0]) == pytest.approx({"mean": 2.0, "std": math.sqrt(2 / 3)})
