"""Tests of sampling, conditional sampling and greedy MPE against exact and brute-force references."""

import numpy as np
import pytest
import torch

from einet_reference import CircuitReference, all_states, randomize
from spanlib import Bernoulli, Binomial, Categorical, EinsumNetwork, Normal, poon_domingos, random_binary_trees

pytestmark = pytest.mark.usefixtures("single_thread")

NUM_SAMPLES = 20_000


def build(num_vars, depth, replicas, K, leaf, seed=0, num_dims=1):
    net = EinsumNetwork(random_binary_trees(num_vars, depth, replicas, seed=seed), leaf, K, num_dims)
    randomize(net, seed)
    return net


def joint_table(net, num_values):
    """Return all states and their exact probabilities under net."""
    states = all_states(net.num_vars, num_values)
    with torch.no_grad():
        return states, net(states).double().exp()


def assert_frequency(samples_hit, probability, label):
    """Check that a frequency over NUM_SAMPLES draws is within 4 standard errors of `probability`."""
    frequency = samples_hit.double().mean().item()
    standard_error = max((probability * (1 - probability) / len(samples_hit)) ** 0.5, 1e-4)
    assert abs(frequency - probability) < 4 * standard_error, f"{label}: frequency {frequency}, exact {probability}"


def test_sample_marginals_match():
    net = build(6, 2, 3, 3, Bernoulli(), seed=1)
    states, probs = joint_table(net, 2)
    samples = net.sample(NUM_SAMPLES, seed=0)
    assert samples.shape == (NUM_SAMPLES, 6)
    for v in range(6):
        exact = probs[states[:, v] == 1].sum().item()
        assert_frequency(samples[:, v] == 1, exact, f"p(x{v} = 1)")
    exact_pair = probs[(states[:, 1] == 1) & (states[:, 4] == 0)].sum().item()
    assert_frequency((samples[:, 1] == 1) & (samples[:, 4] == 0), exact_pair, "p(x1 = 1, x4 = 0)")


def test_sample_categorical_pair():
    net = build(5, 2, 2, 3, Categorical(3), seed=2)
    states, probs = joint_table(net, 3)
    samples = net.sample(NUM_SAMPLES, seed=1)
    for value in range(3):
        exact = probs[states[:, 2] == value].sum().item()
        assert_frequency(samples[:, 2] == value, exact, f"p(x2 = {value})")
    exact_pair = probs[(states[:, 0] == 2) & (states[:, 3] == 1)].sum().item()
    assert_frequency((samples[:, 0] == 2) & (samples[:, 3] == 1), exact_pair, "p(x0 = 2, x3 = 1)")


def test_sample_binomial_marginals():
    net = build(5, 2, 2, 3, Binomial(2), seed=16)
    states, probs = joint_table(net, 3)
    samples = net.sample(NUM_SAMPLES, seed=4)
    for v in (0, 3):
        for count in range(3):
            exact = probs[states[:, v] == count].sum().item()
            assert_frequency(samples[:, v] == count, exact, f"p(x{v} = {count})")


def test_sample_poon_domingos():
    net = EinsumNetwork(poon_domingos(2, 3, 1), Bernoulli(), K=3)
    randomize(net, seed=3)
    states, probs = joint_table(net, 2)
    samples = net.sample(NUM_SAMPLES, seed=2)
    for v in range(6):
        exact = probs[states[:, v] == 1].sum().item()
        assert_frequency(samples[:, v] == 1, exact, f"p(x{v} = 1)")


def test_sample_seed_reproducible():
    net = build(6, 2, 2, 2, Bernoulli(), seed=4)
    first = net.sample(50, seed=7)
    second = net.sample(50, seed=7)
    assert torch.equal(first, second)
    assert not torch.equal(first, net.sample(50, seed=8))


def test_conditional_samples_match():
    net = build(6, 2, 3, 3, Bernoulli(), seed=5)
    states, probs = joint_table(net, 2)
    evidence_row = torch.tensor([1.0, 0, 0, 1, 1, 0])
    mask = torch.tensor([False, True, False, True, True, False])
    evidence = evidence_row.repeat(NUM_SAMPLES, 1)
    samples = net.sample(evidence=evidence, mask=mask, seed=3)

    assert torch.equal(samples[:, ~mask], evidence[:, ~mask])
    consistent = (states[:, ~mask] == evidence_row[~mask]).all(1)
    p_evidence = probs[consistent].sum()
    for v in torch.nonzero(mask).flatten().tolist():
        exact = (probs[consistent & (states[:, v] == 1)].sum() / p_evidence).item()
        assert_frequency(samples[:, v] == 1, exact, f"p(x{v} = 1 | evidence)")
    exact_pair = (probs[consistent & (states[:, 1] == 1) & (states[:, 3] == 1)].sum() / p_evidence).item()
    assert_frequency((samples[:, 1] == 1) & (samples[:, 3] == 1), exact_pair, "p(x1 = 1, x3 = 1 | evidence)")


def test_conditional_per_sample_masks():
    net = build(5, 2, 2, 3, Categorical(3), seed=6)
    generator = torch.Generator().manual_seed(4)
    evidence = torch.randint(0, 3, (200, 5), generator=generator).float()
    mask = torch.rand(200, 5, generator=generator) < 0.5
    evidence[mask] = float("nan")
    samples = net.sample(evidence=evidence, mask=mask, seed=5)
    assert torch.equal(samples[~mask], evidence[~mask])
    assert not torch.isnan(samples).any()
    assert ((samples >= 0) & (samples <= 2) & (samples == samples.round())).all()


def test_normal_conditional_keeps_evidence():
    net = build(6, 1, 2, 2, Normal(0.01, 1.0), seed=7, num_dims=2)
    generator = torch.Generator().manual_seed(6)
    evidence = torch.randn(30, 6, 2, generator=generator)
    mask = torch.rand(30, 6, generator=generator) < 0.5
    samples = net.sample(evidence=evidence, mask=mask, seed=0)
    assert samples.shape == (30, 6, 2)
    assert torch.equal(samples[~mask], evidence[~mask])
    assert torch.isfinite(samples).all()


@pytest.mark.parametrize(
    "make_net, num_values",
    [
        (lambda: build(7, 2, 3, 3, Bernoulli(), seed=8), 2),
        (lambda: build(6, 1, 2, 4, Categorical(3), seed=9), 3),
        (lambda: build(6, 2, 2, 3, Binomial(5), seed=17), 6),
        (lambda: build(8, 3, 2, 2, Normal(0.05, 1.0), seed=10, num_dims=2), None),
        (lambda: randomized(EinsumNetwork(poon_domingos(2, 3, 1), Bernoulli(), K=3), seed=11), 2),
    ],
)
def test_mpe_matches_recursive_reference(make_net, num_values):
    net = make_net().double()
    reference = CircuitReference(net)
    generator = torch.Generator().manual_seed(12)
    shape = (20, net.num_vars, net.num_dims)
    if num_values is None:
        evidence = torch.randn(shape, generator=generator, dtype=torch.float64)
    else:
        evidence = torch.randint(0, num_values, shape, generator=generator).double()
    mask = torch.rand(20, net.num_vars, generator=generator) < 0.5
    mask[0] = True
    completed = net.mpe(evidence=evidence, mask=mask).reshape(shape)
    for b in range(20):
        expected = torch.from_numpy(reference.mpe(evidence[b].numpy(), mask[b].numpy()))
        assert torch.equal(completed[b], expected), f"sample {b}"
    assert torch.equal(completed[~mask], evidence[~mask])


def randomized(net, seed):
    randomize(net, seed)
    return net


def test_mpe_without_missing_returns_evidence():
    net = build(6, 2, 2, 2, Bernoulli(), seed=13)
    evidence = torch.randint(0, 2, (4, 6)).float()
    assert torch.equal(net.mpe(evidence=evidence), evidence)


def test_query_argument_errors():
    net = build(6, 2, 2, 2, Bernoulli(), seed=14)
    with pytest.raises(ValueError, match="a mask needs evidence"):
        net.sample(5, mask=torch.zeros(6, dtype=torch.bool))
    with pytest.raises(ValueError, match="n must be a positive number of samples, got 0"):
        net.sample(0)
    with pytest.raises(ValueError, match="n must be a positive number of samples, got None"):
        net.sample()
    with pytest.raises(TypeError, match=r"n must be an integer number of samples, got 2.5; pass int\(n\)"):
        net.sample(2.5)
    with pytest.raises(TypeError, match="n must be an integer number of samples, got True"):
        net.sample(True)
    evidence = torch.zeros(5, 6)
    mask = torch.zeros(6, dtype=torch.bool)
    mask[2] = True
    with pytest.raises(ValueError, match="n=3 does not match the 5 rows of evidence; .* leave n out"):
        net.sample(3, evidence=evidence, mask=mask)
    assert net.sample(5, evidence=evidence, mask=mask, seed=0).shape == (5, 6)


def test_sample_count_accepts_integer_types():
    net = build(6, 2, 2, 2, Bernoulli(), seed=15)
    expected = net.sample(4, seed=1)
    assert torch.equal(net.sample(np.int64(4), seed=1), expected)
    assert torch.equal(net.sample(torch.tensor(4), seed=1), expected)
