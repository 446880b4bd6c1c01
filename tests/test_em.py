"""Tests of EM for Einsum networks: monotone full-batch EM, recovery of a known mixture, masks."""

import math

import numpy as np
import pytest
import torch

from einet_reference import CircuitReference, all_states, randomize
from spanlib import Bernoulli, Categorical, EinsumNetwork, Normal, random_binary_trees

pytestmark = pytest.mark.usefixtures("single_thread")


def build(num_vars, depth, replicas, K, leaf, seed=0):
    net = EinsumNetwork(random_binary_trees(num_vars, depth, replicas, seed=seed), leaf, K)
    randomize(net, seed)
    return net


def data_for(leaf, num_samples, num_vars, seed):
    generator = torch.Generator().manual_seed(seed)
    if leaf.name == "normal":
        centres = torch.randn(3, num_vars, generator=generator)
        which = torch.randint(0, 3, (num_samples,), generator=generator)
        return centres[which] + 0.3 * torch.randn(num_samples, num_vars, generator=generator)
    num_values = 2 if leaf.name == "bernoulli" else leaf.num_values
    return torch.randint(0, num_values, (num_samples, num_vars), generator=generator).float()


@pytest.mark.parametrize("leaf", [Bernoulli(), Categorical(4), Normal(0.01, 2.0)])
def test_full_batch_em_monotone(leaf):
    net = build(8, 2, 3, 3, leaf, seed=1)
    x = data_for(leaf, 300, 8, seed=2)
    history = []
    for _ in range(20):
        before = net.em_step(x, step_size=1.0).item()
        history.append(before)
    with torch.no_grad():
        history.append(net(x).mean().item())
    for step, (old, new) in enumerate(zip(history, history[1:])):
        assert new >= old - 1e-5 * abs(old), f"log-likelihood fell at step {step}: {old} -> {new}"
    assert history[-1] > history[0] + 0.05


def test_em_returns_mean_before_step():
    net = build(6, 2, 2, 2, Bernoulli(), seed=3)
    x = data_for(Bernoulli(), 50, 6, seed=4)
    with torch.no_grad():
        expected = net(x).mean()
    returned = net.em_step(x, step_size=0.5)
    assert torch.allclose(returned, expected)


def test_em_keeps_normalisation():
    net = build(6, 2, 2, 3, Categorical(3), seed=5)
    x = data_for(Categorical(3), 100, 6, seed=6)
    for _ in range(5):
        net.em_step(x, step_size=0.3)
    with torch.no_grad():
        total = torch.logsumexp(net(all_states(6, 3)).double(), 0).exp().item()
    assert abs(total - 1) < 1e-5


CLUSTER_A = torch.tensor([0.9, 0.9, 0.9, 0.9, 0.9, 0.1, 0.1, 0.1, 0.1, 0.1])
CLUSTER_B = torch.tensor([0.2, 0.1, 0.2, 0.1, 0.2, 0.8, 0.9, 0.8, 0.9, 0.8])


def two_cluster_log_p(x):
    """Return log p(x) (batch,) under 0.5 * Bern(CLUSTER_A) + 0.5 * Bern(CLUSTER_B)."""

    def log_likelihood(p):
        return (x * torch.log(p) + (1 - x) * torch.log(1 - p)).sum(1)

    return torch.logaddexp(log_likelihood(CLUSTER_A), log_likelihood(CLUSTER_B)) + math.log(0.5)


def two_cluster_data(num_samples, seed):
    """Draw from the two-cluster mixture over 10 variables; return data and its true log-likelihoods."""
    generator = torch.Generator().manual_seed(seed)
    cluster = torch.rand(num_samples, 1, generator=generator) < 0.5
    probs = torch.where(cluster, CLUSTER_A, CLUSTER_B)
    x = (torch.rand(num_samples, 10, generator=generator) < probs).float()
    return x, two_cluster_log_p(x)


def test_em_recovers_two_clusters():
    train, train_true = two_cluster_data(3000, seed=7)
    test, test_true = two_cluster_data(3000, seed=8)
    net = EinsumNetwork(random_binary_trees(10, 2, 2, seed=0), Bernoulli(), K=2)
    net.initialize_leaves(train, seed=1)
    for _ in range(40):
        net.em_step(train, step_size=1.0)
    with torch.no_grad():
        learned_train = net(train).mean().item()
        learned_test = net(test).mean().item()
    # The model class contains the true mixture, so EM should reach its likelihood up to sampling noise.
    assert learned_train > train_true.mean().item() - 0.02
    assert abs(learned_test - test_true.mean().item()) < 0.05

    # KL(true || learned) over all 1024 states. With 3000 samples and 21 free parameters in the true
    # mixture, the expected KL from fitting noise alone is about 21 / (2 * 3000) = 0.0035 nats (an
    # asymptotic estimate).
    states = all_states(10, 2)
    true_log_p = two_cluster_log_p(states).double()
    with torch.no_grad():
        learned_log_p = net(states).double()
    kl = (true_log_p.exp() * (true_log_p - learned_log_p)).sum().item()
    assert kl < 0.01


def test_em_with_mask_monotone():
    net = build(8, 2, 2, 3, Bernoulli(), seed=9)
    x = data_for(Bernoulli(), 200, 8, seed=10)
    generator = torch.Generator().manual_seed(11)
    missing = torch.rand(200, 8, generator=generator) < 0.3
    history = [net.em_step(x, 1.0, marginalize=missing).item() for _ in range(15)]
    for step, (old, new) in enumerate(zip(history, history[1:])):
        assert new >= old - 1e-5 * abs(old), f"marginal log-likelihood fell at step {step}: {old} -> {new}"
    assert history[-1] > history[0]


def test_em_mask_ignores_nan():
    first = build(8, 2, 2, 3, Bernoulli(), seed=12)
    second = build(8, 2, 2, 3, Bernoulli(), seed=12)
    x = data_for(Bernoulli(), 100, 8, seed=13)
    generator = torch.Generator().manual_seed(14)
    missing = torch.rand(100, 8, generator=generator) < 0.3
    first.em_step(x.masked_fill(missing, float("nan")), 0.5, marginalize=missing)
    second.em_step(x.masked_fill(missing, 0.0), 0.5, marginalize=missing)
    for (name, a), b in zip(first.named_parameters(), second.parameters()):
        assert torch.isfinite(a).all(), name
        assert torch.equal(a, b), name


def test_em_skips_unseen_leaves():
    net = build(8, 2, 2, 2, Normal(0.01, 1.0), seed=15)
    x = torch.randn(50, 8)
    missing = torch.zeros(8, dtype=torch.bool)
    missing[[0, 5]] = True
    variables = net.leaf.index
    untouched = (variables == 0) | (variables == 5)
    before = net.leaf.params.detach().clone()
    net.em_step(x, 1.0, marginalize=missing)
    assert torch.equal(net.leaf.params[untouched], before[untouched])
    assert not torch.equal(net.leaf.params[~untouched], before[~untouched])


def test_em_rejects_bad_step():
    net = build(4, 1, 1, 2, Bernoulli())
    with pytest.raises(ValueError, match="step_size must be in"):
        net.em_step(torch.zeros(2, 4), step_size=0.0)


def mixture_net(leaf, seed):
    """Return a float64 net whose root mixes (i, j) pairs of K = 2 densities on two leaf regions."""
    net = EinsumNetwork(random_binary_trees(4, 1, 1, seed=seed), leaf, K=2).double()
    randomize(net, seed)
    return net


def expected_update(net, x, step):
    """Compute one EM step of `mixture_net` by hand: posteriors over (i, j), then blended expected statistics.

    Returns the new root weights (2, 2) and, per leaf region, the new expected statistics
    (region size, K, num_stats) in the order of the region's variables.
    """
    reference = CircuitReference(net)
    graph = net.graph
    _, left, right = graph.partitions[0]
    weights = reference.weights[0][0, 0]
    leaf_values, posteriors = {left: [], right: []}, []
    for row in x.numpy():
        values = reference.region_values(row[:, None], np.zeros(4, dtype=bool))
        joint = weights * np.outer(values[left], values[right])
        posteriors.append(joint / joint.sum())
    posteriors = np.array(posteriors)
    new_weights = (1 - step) * weights + step * posteriors.mean(0)

    statistics = {}
    family = net.leaf_family
    for region, responsibility in ((left, posteriors.sum(2)), (right, posteriors.sum(1))):
        row = reference.leaf_row[region]
        per_var = []
        for position, variable in enumerate(graph.regions[region]):
            values = x[:, variable].numpy()
            per_k = []
            for k in range(2):
                r = responsibility[:, k]
                params = reference.leaf_params[row, position, k, 0]
                if family.name == "bernoulli":
                    old = np.array([1 / (1 + np.exp(-params[0]))])
                    new = np.array([(r * values).sum() / r.sum()])
                else:
                    var = family.min_var + (family.max_var - family.min_var) / (1 + np.exp(-params[1]))
                    old = np.array([params[0], var + params[0] ** 2])
                    new = np.array([(r * values).sum(), (r * values**2).sum()]) / r.sum()
                per_k.append((1 - step) * old + step * new)
            per_var.append(per_k)
        statistics[region] = np.array(per_var)
    return new_weights, statistics


@pytest.mark.parametrize("leaf", [Bernoulli(), Normal(1e-3, 4.0)])
@pytest.mark.parametrize("step", [1.0, 0.5])
def test_em_step_matches_hand_update(leaf, step):
    net = mixture_net(leaf, seed=16)
    generator = torch.Generator().manual_seed(17)
    if leaf.name == "normal":
        x = torch.randn(40, 4, generator=generator, dtype=torch.float64)
    else:
        x = torch.randint(0, 2, (40, 4), generator=generator).double()
    new_weights, statistics = expected_update(net, x, step)
    net.em_step(x, step)

    assert np.allclose(net.log_weights()[0][0, 0].exp().detach().numpy(), new_weights, atol=1e-9)
    params = net.leaf.params.detach()
    for region, expected in statistics.items():
        row = net.graph.leaves.index(region)
        for position in range(len(net.graph.regions[region])):
            got = params[row, position, :, 0]
            if leaf.name == "bernoulli":
                assert np.allclose(torch.sigmoid(got[:, 0]).numpy(), expected[position, :, 0], atol=1e-9)
            else:
                mean, var = got[:, 0].numpy(), leaf.variance(got).numpy()
                assert np.allclose(mean, expected[position, :, 0], atol=1e-9)
                assert np.allclose(var, expected[position, :, 1] - expected[position, :, 0] ** 2, atol=1e-6)
