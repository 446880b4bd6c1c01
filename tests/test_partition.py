"""Tests of SPAN's partition function against a brute-force sum of exp(-E(x)) over every state."""

import itertools
import math

import pytest
import torch

from tiny_models import tiny_span
from spanlib import (
    SPAN,
    Categorical,
    EinsumNetwork,
    LinearEmbedding,
    Normal,
    log_partition_function,
    random_binary_trees,
)


pytestmark = pytest.mark.usefixtures("single_thread")


def make_span(leaf=None, num_vars=6, embedding=None, **settings):
    return tiny_span(num_vars, leaf, embedding, **settings).double().eval()


def randomize_heads(span, scale=1.0, seed=1):
    """Give every head random output weights, so that attention differs from sample to sample."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in list(span.heads.parameters()) + list(span.mixing_heads.parameters()):
            p.copy_(torch.randn(p.shape, generator=generator, dtype=p.dtype) * scale)
    return span


def all_states(num_vars, num_values=2):
    """Return every joint state as (num_values**num_vars, num_vars), listed by itertools.product."""
    return torch.tensor(list(itertools.product(range(num_values), repeat=num_vars)), dtype=torch.float64)


def brute_force_log_z(span, num_values=2):
    states = all_states(span.einet.num_vars, num_values)
    with torch.no_grad():
        return float(torch.logsumexp(span(states), dim=0))


@pytest.mark.parametrize("reweight_mixing", [False, True])
def test_exact_matches_brute_force(reweight_mixing):
    span = randomize_heads(make_span(reweight_mixing=reweight_mixing))
    expected = brute_force_log_z(span)
    result = log_partition_function(span, method="exact", batch_size=7)
    assert abs(expected) > 1e-3  # attention really moved Z away from 1
    assert result.value == pytest.approx(expected, abs=1e-10)
    assert result.std_error == 0
    assert result.num_samples == 2**6
    assert result.method == "exact"


def test_exact_categorical():
    span = randomize_heads(make_span(Categorical(3), num_vars=4, embedding=LinearEmbedding(1)))
    expected = brute_force_log_z(span, num_values=3)
    assert abs(expected) > 1e-3
    assert log_partition_function(span).value == pytest.approx(expected, abs=1e-10)


def test_exact_several_dims():
    """Enumeration covers every dim of every variable: 3 variables with 2 binary dims give 2**6 states."""
    torch.manual_seed(0)
    net = EinsumNetwork(random_binary_trees(3, 1, 2, seed=0), Categorical(2), K=2, num_dims=2)
    span = randomize_heads(SPAN(net, LinearEmbedding(2), depth=1, heads=2, d_model=8, d_ff=16).double().eval())
    states = all_states(6).view(-1, 3, 2)
    with torch.no_grad():
        expected = float(torch.logsumexp(span(states), dim=0))
    result = log_partition_function(span, batch_size=5)
    assert abs(expected) > 1e-3
    assert result.num_samples == 2**6
    assert result.value == pytest.approx(expected, abs=1e-10)


def test_importance_within_four_errors():
    span = randomize_heads(make_span())
    exact = brute_force_log_z(span)
    result = log_partition_function(span, method="importance", num_samples=2000, batch_size=1000, seed=3)
    assert result.method == "importance"
    assert result.num_samples == 2000
    assert 0 < result.std_error < 0.1
    assert abs(result.value - exact) < 4 * result.std_error
    assert 1 < result.effective_sample_size <= 2000


def test_importance_seeded():
    span = randomize_heads(make_span())
    first = log_partition_function(span, method="importance", num_samples=500, seed=5)
    second = log_partition_function(span, method="importance", num_samples=500, seed=5)
    assert first == second


@pytest.mark.parametrize("reweight_mixing", [False, True])
def test_uniform_attention_exact(reweight_mixing):
    span = make_span(reweight_mixing=reweight_mixing)
    assert abs(log_partition_function(span).value) < 1e-6
    assert abs(brute_force_log_z(span)) < 1e-6


def test_uniform_attention_importance():
    span = make_span()
    result = log_partition_function(span, method="importance", num_samples=300, batch_size=100)
    assert abs(result.value) < 1e-6
    assert result.std_error < 1e-6
    assert result.effective_sample_size == pytest.approx(300)


def test_uniform_attention_normal_leaves():
    span = make_span(Normal(), embedding=LinearEmbedding(1))
    result = log_partition_function(span, method="importance", num_samples=200)
    assert abs(result.value) < 1e-6
    assert result.std_error < 1e-6


def test_log_prob_normalised():
    span = randomize_heads(make_span())
    states = all_states(span.einet.num_vars)
    log_z = log_partition_function(span)
    with torch.no_grad():
        total = float(torch.logsumexp(span.log_prob(states, log_z), dim=0))
    assert total == pytest.approx(0.0, abs=1e-10)


def test_log_prob_computes_z():
    span = randomize_heads(make_span())
    states = all_states(span.einet.num_vars)
    with torch.no_grad():
        total = float(torch.logsumexp(span.log_prob(states), dim=0))
        with_float = span.log_prob(states[:4], brute_force_log_z(span))
        expected = span(states[:4]) - brute_force_log_z(span)
    assert total == pytest.approx(0.0, abs=1e-10)
    torch.testing.assert_close(with_float, expected)


def test_log_prob_train_mode():
    """Dropout and token masking are off in log_prob, so train mode gives the eval-mode values."""
    span = randomize_heads(make_span(mask_probability=0.5, dropout=0.3))
    states = all_states(span.einet.num_vars)
    with torch.no_grad():
        expected = span.log_prob(states)
        span.train()
        torch.manual_seed(0)
        got = span.log_prob(states)
    assert span.training
    assert torch.equal(got, expected)
    assert float(torch.logsumexp(got, dim=0)) == pytest.approx(0.0, abs=1e-10)


def test_restores_training_mode():
    span = randomize_heads(make_span()).train()
    log_partition_function(span)
    assert span.training


def test_too_many_states():
    span = make_span()
    with pytest.raises(ValueError, match=r"2\*\*6 = 64.*max_states=10"):
        log_partition_function(span, max_states=10)


def test_exact_continuous_leaves():
    span = make_span(Normal(), embedding=LinearEmbedding(1))
    with pytest.raises(ValueError, match="importance"):
        log_partition_function(span, method="exact")


def test_unknown_method():
    with pytest.raises(ValueError, match="'mcmc'"):
        log_partition_function(make_span(), method="mcmc")


def test_too_few_samples():
    with pytest.raises(ValueError, match="got 1"):
        log_partition_function(make_span(), method="importance", num_samples=1)


def test_float_conversion():
    result = log_partition_function(randomize_heads(make_span()))
    assert math.isclose(float(result), result.value)


def test_batch_size_zero():
    with pytest.raises(ValueError, match="batch_size must be at least 1, got 0"):
        log_partition_function(make_span(), batch_size=0)
