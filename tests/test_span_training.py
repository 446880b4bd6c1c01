"""Tests of SPAN's three-phase training: which parameters each phase moves, history, early stopping, seeds."""

import math

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from tiny_models import tiny_span
from spanlib import SPAN, train_span
from spanlib.span.training import _cached_summaries, _gradient_step, coordinate_step, finetune_step, mean_score

NUM_VARS = 6


pytestmark = pytest.mark.usefixtures("single_thread")


def make_span(**settings):
    return tiny_span(NUM_VARS, **settings)


def make_data(n=40, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return (torch.rand(n, NUM_VARS, generator=generator) < 0.7).float()


def snapshot(span):
    return {name: p.detach().clone() for name, p in span.named_parameters()}


def changed_names(before, span):
    return {name for name, p in span.named_parameters() if not torch.equal(before[name], p)}


def einet_names(span):
    return {name for name, _ in span.named_parameters() if name.startswith("einet.")}


def encoder_names(span):
    return {name for name, _ in span.named_parameters() if not name.startswith("einet.")}


QUIET = dict(batch_size=10, progress=False)


# ---------------------------------------------------------------------------- phases


@pytest.mark.parametrize("warmup", ["em", "gradient"])
def test_warmup_moves_only_einet(warmup):
    span = make_span()
    before = snapshot(span)
    train_span(span, make_data(), 1, 0, 0, warmup=warmup, **QUIET)
    assert changed_names(before, span) == einet_names(span)


def test_coordinate_moves_everything():
    span = make_span()
    before = snapshot(span)
    train_span(span, make_data(), 0, 1, 0, **QUIET)
    changed = changed_names(before, span)
    assert einet_names(span) <= changed
    assert encoder_names(span) <= changed


def test_finetune_moves_only_einet():
    span = make_span()
    with torch.no_grad():
        for p in span.heads.parameters():
            p.normal_(0, 0.5)
    before = snapshot(span)
    train_span(span, make_data(), 0, 0, 1, **QUIET)
    assert changed_names(before, span) == einet_names(span)


@pytest.mark.parametrize("coordinate, finetune, expected", [(1, 0, {True, False}), (0, 1, {False})])
def test_encoder_dropout_mode_per_phase(coordinate, finetune, expected):
    """Encoders train with dropout in coordinate descent and run in eval mode while frozen in fine-tuning."""
    span = make_span(dropout=0.5)
    modes = []
    span.encoders[0].register_forward_pre_hook(lambda module, args: modes.append(module.training))
    train_span(span, make_data(), 0, coordinate, finetune, **QUIET)
    # Scoring after each epoch runs in eval mode, so False appears in both phases.
    assert set(modes) == expected


def test_no_epochs_changes_nothing():
    span = make_span()
    before = snapshot(span)
    history = train_span(span, make_data(), 0, 0, 0, **QUIET)
    assert changed_names(before, span) == set()
    assert history.records == []


def test_coordinate_raises_score():
    span = make_span()
    data = make_data(80)
    loader = DataLoader(TensorDataset(data), batch_size=20)
    start = mean_score(span, loader, span.device)
    train_span(span, data, 0, 3, 0, **QUIET)
    assert mean_score(span, loader, span.device) > start


def randomized_pair():
    """Two equal models with random head outputs, so that every encoder parameter gets a gradient."""
    models = []
    for _ in range(2):
        span = make_span(reweight_mixing=True)
        with torch.no_grad():
            for p in list(span.heads.parameters()) + list(span.mixing_heads.parameters()):
                p.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())) * 0.3)
        models.append(span)
    return models


def test_coordinate_step_matches_two_passes():
    reference, shared = randomized_pair()
    data = make_data(20)
    reference_opts = [torch.optim.Adam(reference.einet_parameters(), lr=0.01),
                      torch.optim.Adam(reference.encoder_parameters(), lr=0.01)]
    shared_opts = [torch.optim.Adam(shared.einet_parameters(), lr=0.01),
                   torch.optim.Adam(shared.encoder_parameters(), lr=0.01)]
    before = snapshot(shared)
    for _ in range(3):
        _gradient_step(reference, data, reference_opts[0], reference.einet_parameters())
        _gradient_step(reference, data, reference_opts[1], reference.encoder_parameters())
        coordinate_step(shared, data, *shared_opts)
    assert changed_names(before, shared) == set(before)
    for (name, a), b in zip(reference.named_parameters(), shared.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6, msg=name)


def test_finetune_step_matches_full_pass():
    reference, frozen = randomized_pair()
    data = make_data(20)
    reference_opt = torch.optim.Adam(reference.einet_parameters(), lr=0.01)
    frozen_opt = torch.optim.Adam(frozen.einet_parameters(), lr=0.01)
    before = snapshot(frozen)
    for _ in range(3):
        _gradient_step(reference, data, reference_opt, reference.einet_parameters())
        finetune_step(frozen, data, frozen_opt)
    assert changed_names(before, frozen) == einet_names(frozen)
    for (name, a), b in zip(reference.named_parameters(), frozen.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6, msg=name)


# ---------------------------------------------------------------------------- history


def test_cached_finetune_matches_uncached():
    """Fine-tuning on cached encoder summaries gives the parameters of running the frozen encoders per batch."""
    data = make_data(30).double()
    results = []
    for cache in (True, False):
        span = make_span(dropout=0.3).double()
        with torch.no_grad():
            for p in span.heads.parameters():
                p.normal_(0, 0.5, generator=torch.Generator().manual_seed(3))
        train_span(span, data, 1, 1, 2, cache_encoders=cache, **QUIET)
        results.append(dict(span.named_parameters()))
    cached, uncached = results
    for name, value in uncached.items():
        torch.testing.assert_close(cached[name], value, rtol=0, atol=1e-10, msg=name)


def test_cached_summaries_match_encoders():
    span = make_span(dropout=0.3).train()
    data = make_data(25)
    summaries = _cached_summaries(span, data, batch_size=10)
    assert span.encoders.training, "the cache must restore the encoders' train mode"
    span.eval()
    with torch.no_grad():
        expected = span._summaries(data.unsqueeze(-1), torch.ones(data.shape, dtype=torch.bool))
    assert len(summaries) == len(span.encoders)
    for layer, (got, want) in enumerate(zip(summaries, expected)):
        assert got.shape == (len(data), span.settings["d_model"])
        torch.testing.assert_close(got, want, rtol=0, atol=1e-6, msg=f"layer {layer}")


def test_cached_summaries_skipped_when_invalid():
    data = make_data(20)
    loader = DataLoader(TensorDataset(data), batch_size=10)
    assert _cached_summaries(make_span(), loader, batch_size=10) is None
    assert _cached_summaries(make_span(mask_probability=0.3), data, batch_size=10) is None


def test_history_phases_and_epochs():
    span = make_span()
    history = train_span(span, make_data(), 1, 2, 1, validation=make_data(20, seed=1), **QUIET)
    assert [r["phase"] for r in history.records] == ["warmup", "coordinate", "coordinate", "finetune"]
    assert [r["epoch"] for r in history.records] == [1, 1, 2, 1]
    assert len(history.phase("coordinate")) == 2
    for record in history.records:
        assert math.isfinite(record["train"])
        assert math.isfinite(record["validation"])
        assert record["seconds"] > 0


def test_history_without_validation():
    history = train_span(make_span(), make_data(), 1, 0, 0, **QUIET)
    assert history.records[0]["validation"] is None


def test_history_train_score_matches_model():
    span = make_span()
    data = make_data()
    history = train_span(span, data, 0, 1, 0, **QUIET)
    with torch.no_grad():
        expected = float(span(data).mean())
    assert history.records[-1]["train"] == pytest.approx(expected, rel=1e-5)


# ---------------------------------------------------------------------------- early stopping


@pytest.mark.parametrize("phase", ["warmup", "coordinate", "finetune"])
def test_early_stopping_restores_best(phase):
    # Training on all-ones data makes the all-zeros validation set less likely every epoch.
    span = make_span()
    ones = torch.ones(40, NUM_VARS)
    zeros = torch.zeros(20, NUM_VARS)
    epochs = {"warmup": 0, "coordinate": 0, "finetune": 0, phase: 6}
    history = train_span(span, ones, epochs["warmup"], epochs["coordinate"], epochs["finetune"],
                         validation=zeros, patience=1, lr=0.05, encoder_lr=0.01, **QUIET)
    records = history.phase(phase)
    best = max(r["validation"] for r in records)
    assert len(records) < 6
    assert records[0]["validation"] == best
    loader = DataLoader(TensorDataset(zeros), batch_size=10)
    assert mean_score(span, loader, span.device) == pytest.approx(best, rel=1e-6)


def test_patience_without_validation():
    with pytest.raises(ValueError, match="validation"):
        train_span(make_span(), make_data(), 1, 0, 0, patience=2, **QUIET)


# ---------------------------------------------------------------------------- seeds and inputs


def train_copy(seed, data=None, **settings):
    span = make_span(mask_probability=0.3, dropout=0.1)
    history = train_span(span, make_data() if data is None else data, 1, 1, 1, seed=seed, **QUIET, **settings)
    return span, history


def test_seed_reproducible():
    first, first_history = train_copy(4)
    second, second_history = train_copy(4)
    for (name, a), b in zip(first.state_dict().items(), second.state_dict().values()):
        assert torch.equal(a, b), name
    assert [r["train"] for r in first_history.records] == [r["train"] for r in second_history.records]


def test_seed_matters():
    first, _ = train_copy(4)
    second, _ = train_copy(5)
    differs = [not torch.equal(a, b) for a, b in zip(first.state_dict().values(), second.state_dict().values())]
    assert any(differs)


def test_dataloader_labels_ignored():
    data = make_data()
    plain = DataLoader(TensorDataset(data), batch_size=10)
    labelled = DataLoader(TensorDataset(data, torch.arange(len(data))), batch_size=10)
    first, first_history = train_copy(2, data=plain)
    second, second_history = train_copy(2, data=labelled)
    for (name, a), b in zip(first.state_dict().items(), second.state_dict().values()):
        assert torch.equal(a, b), name
    assert [r["train"] for r in first_history.records] == [r["train"] for r in second_history.records]


def test_validation_leaves_training_unchanged():
    validation = DataLoader(TensorDataset(make_data(20, seed=1), torch.zeros(20)), batch_size=10)
    first, _ = train_copy(2)
    second, history = train_copy(2, validation=validation)
    for (name, a), b in zip(first.state_dict().items(), second.state_dict().values()):
        assert torch.equal(a, b), name
    for record in history.records:
        assert math.isfinite(record["validation"])


def test_masked_training_finite():
    span = make_span(mask_probability=0.5)
    history = train_span(span, make_data(), 1, 2, 1, **QUIET)
    assert all(math.isfinite(r["train"]) for r in history.records)
    for name, p in span.named_parameters():
        assert torch.isfinite(p).all(), name


@pytest.mark.parametrize("patience", [0, -2])
def test_patience_below_one(patience):
    with pytest.raises(ValueError, match=f"patience must be at least 1 epoch, got {patience}"):
        train_span(make_span(), make_data(), 1, 0, 0, validation=make_data(10), patience=patience, **QUIET)


def test_unknown_warmup():
    with pytest.raises(ValueError, match="'sgd'"):
        train_span(make_span(), make_data(), 1, 0, 0, warmup="sgd", **QUIET)


def test_negative_epochs():
    with pytest.raises(ValueError, match="non-negative"):
        train_span(make_span(), make_data(), 1, -1, 0, **QUIET)


def test_data_of_wrong_type():
    with pytest.raises(TypeError, match="list"):
        train_span(make_span(), [[0.0] * NUM_VARS], 1, 0, 0, **QUIET)


def test_empty_data():
    with pytest.raises(ValueError, match="empty"):
        train_span(make_span(), torch.zeros(0, NUM_VARS), 1, 0, 0, **QUIET)


def test_empty_validation():
    with pytest.raises(ValueError, match="validation is empty"):
        train_span(make_span(), make_data(), 1, 0, 0, validation=torch.zeros(0, NUM_VARS), **QUIET)


def test_validation_of_wrong_type():
    with pytest.raises(TypeError, match="validation must be a tensor or a DataLoader, got list"):
        train_span(make_span(), make_data(), 1, 0, 0, validation=[[0.0] * NUM_VARS], **QUIET)


def test_batch_size_below_one():
    with pytest.raises(ValueError, match="batch_size must be at least 1, got 0"):
        train_span(make_span(), make_data(), 1, 0, 0, batch_size=0, progress=False)
