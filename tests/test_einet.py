"""Tests of the Einsum network's forward pass: normalisation, marginals, masks, densities and numerics."""

import copy

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from einet_reference import CircuitReference, all_states, randomize
from spanlib import Bernoulli, Binomial, Categorical, EinsumNetwork, Normal, poon_domingos, random_binary_trees
from spanlib.layers import EinsumLayer, MixingLayer

pytestmark = pytest.mark.usefixtures("single_thread")


def build(num_vars, depth, replicas, K, leaf, seed=0, num_dims=1, scale=1.0):
    net = EinsumNetwork(random_binary_trees(num_vars, depth, replicas, seed=seed), leaf, K, num_dims)
    randomize(net, seed, scale)
    return net


def total_probability(net, num_values):
    with torch.no_grad():
        return torch.logsumexp(net(all_states(net.num_vars, num_values)).double(), 0).exp().item()


# ---------------------------------------------------------------------- exact normalisation
structures = st.integers(1, 3).flatmap(
    lambda depth: st.tuples(st.just(depth), st.integers(2**depth, max(2**depth, 10)), st.integers(1, 3), st.integers(1, 4))
)


@settings(max_examples=25, deadline=None)
@given(structure=structures, seed=st.integers(0, 10_000))
def test_bernoulli_sums_to_one(structure, seed):
    depth, num_vars, replicas, K = structure
    net = build(num_vars, depth, replicas, K, Bernoulli(), seed)
    assert abs(total_probability(net, 2) - 1) < 1e-5


@settings(max_examples=15, deadline=None)
@given(structure=structures, num_values=st.integers(2, 4), seed=st.integers(0, 10_000))
def test_categorical_sums_to_one(structure, num_values, seed):
    depth, num_vars, replicas, K = structure
    num_vars = min(num_vars, {2: 10, 3: 6, 4: 5}[num_values])
    depth = min(depth, int(np.log2(num_vars)))
    net = build(num_vars, depth, replicas, K, Categorical(num_values), seed)
    assert abs(total_probability(net, num_values) - 1) < 1e-5


@pytest.mark.parametrize("num_trials, num_vars", [(1, 6), (3, 5)])
def test_binomial_sums_to_one(num_trials, num_vars):
    net = build(num_vars, 2, 2, 3, Binomial(num_trials), seed=num_trials)
    assert abs(total_probability(net, num_trials + 1) - 1) < 1e-5


@pytest.mark.parametrize("height, width, steps", [(3, 3, [1, 2]), (2, 4, 1), (3, 4, 2)])
def test_poon_domingos_sums_to_one(height, width, steps):
    net = EinsumNetwork(poon_domingos(height, width, steps), Bernoulli(), K=3)
    randomize(net, seed=height * width)
    assert abs(total_probability(net, 2) - 1) < 1e-5


# ---------------------------------------------------------------------- marginals and conditionals
def brute_force_marginal(net, x, missing, num_values):
    """Sum p over every completion of the missing variables of each row of x."""
    out = []
    with torch.no_grad():
        for row, hidden in zip(x, missing):
            states = all_states(int(hidden.sum()), num_values)
            full = row.repeat(len(states), 1)
            full[:, hidden] = states
            out.append(torch.logsumexp(net(full).double(), 0))
    return torch.stack(out)


@pytest.mark.parametrize("leaf, num_values", [(Bernoulli(), 2), (Categorical(3), 3)])
def test_marginal_equals_brute_force(leaf, num_values):
    net = build(7, 2, 3, 3, leaf, seed=4)
    generator = torch.Generator().manual_seed(0)
    x = torch.randint(0, num_values, (12, 7), generator=generator).float()
    missing = torch.rand(12, 7, generator=generator) < 0.4
    with torch.no_grad():
        per_sample = net(x, marginalize=missing).double()
    expected = brute_force_marginal(net, x, missing, num_values)
    assert torch.allclose(per_sample, expected, atol=1e-5)


def test_shared_mask_equals_per_sample():
    net = build(8, 3, 2, 2, Bernoulli(), seed=1)
    x = all_states(8, 2)[::7]
    mask = torch.tensor([True, False, False, True, False, True, False, False])
    with torch.no_grad():
        shared = net(x, marginalize=mask)
        per_sample = net(x, marginalize=mask.expand(len(x), -1))
    assert torch.equal(shared, per_sample)


def test_conditional_equals_ratio():
    net = build(6, 2, 2, 3, Bernoulli(), seed=9)
    states = all_states(6, 2)
    with torch.no_grad():
        joint = net(states).double().exp()
        evidence_mask = torch.tensor([False, False, True, True, True, True])
        p_evidence = net(states, marginalize=evidence_mask).double().exp()
    # p(x2..x5 | x0, x1) from the joint table, summed by hand over x2..x5.
    table = joint.view(4, 16)
    conditional_table = table / table.sum(1, keepdim=True)
    assert torch.allclose(joint / p_evidence, conditional_table.flatten(), atol=1e-5)


def test_fully_marginalised_is_one():
    net = build(6, 2, 2, 3, Categorical(3), seed=2)
    with torch.no_grad():
        value = net(torch.zeros(3, 6), marginalize=torch.ones(6, dtype=torch.bool))
    assert torch.allclose(value, torch.zeros(3), atol=1e-6)


def test_masked_nan_ignored():
    net = build(8, 2, 2, 3, Normal(0.05, 1.0), seed=3)
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(10, 8, generator=generator)
    missing = torch.rand(10, 8, generator=generator) < 0.5
    with_nan = x.masked_fill(missing, float("nan")).requires_grad_()
    with_zero = x.masked_fill(missing, 0.0).requires_grad_()

    values = {}
    for name, inputs in (("nan", with_nan), ("zero", with_zero)):
        net.zero_grad()
        log_p = net(inputs, marginalize=missing)
        log_p.sum().backward()
        values[name] = (log_p.detach(), [p.grad.clone() for p in net.parameters()], inputs.grad.clone())

    assert torch.isfinite(values["nan"][0]).all()
    assert torch.equal(values["nan"][0], values["zero"][0])
    for nan_grad, zero_grad in zip(values["nan"][1], values["zero"][1]):
        assert torch.isfinite(nan_grad).all()
        assert torch.equal(nan_grad, zero_grad)
    assert torch.isfinite(values["nan"][2]).all()
    assert torch.equal(values["nan"][2], values["zero"][2])
    assert (values["nan"][2][missing] == 0).all()


@pytest.mark.parametrize("leaf, num_values", [(Bernoulli(), 2), (Categorical(3), 3), (Binomial(4), 5)])
def test_masked_nan_ignored_discrete(leaf, num_values):
    net = build(8, 2, 2, 3, leaf, seed=13)
    generator = torch.Generator().manual_seed(2)
    x = torch.randint(0, num_values, (10, 8), generator=generator).float()
    missing = torch.rand(10, 8, generator=generator) < 0.5
    results = []
    for fill in (float("nan"), 0.0):
        net.zero_grad()
        log_p = net(x.masked_fill(missing, fill), marginalize=missing)
        log_p.sum().backward()
        results.append((log_p.detach(), [p.grad.clone() for p in net.parameters()]))
    (nan_log_p, nan_grads), (zero_log_p, zero_grads) = results
    assert torch.isfinite(nan_log_p).all()
    assert torch.equal(nan_log_p, zero_log_p)
    for nan_grad, zero_grad in zip(nan_grads, zero_grads):
        assert torch.isfinite(nan_grad).all()
        assert torch.equal(nan_grad, zero_grad)


# ---------------------------------------------------------------------- Normal densities integrate to one
def trapezoid_weights(grid):
    spacing = grid[1] - grid[0]
    weights = torch.full_like(grid, spacing)
    weights[0] = weights[-1] = spacing / 2
    return weights


def normal_net(num_vars, num_dims, seed):
    net = EinsumNetwork(random_binary_trees(num_vars, 1, 2, seed=seed), Normal(0.01, 0.1), K=3, num_dims=num_dims).double()
    randomize(net, seed)
    with torch.no_grad():
        # Means in [-1, 1] and std at most 0.32, so [-3, 3] contains all but a negligible tail.
        net.leaf.params[..., 0].uniform_(-1, 1)
    return net


def test_normal_integrates_one_var():
    net = normal_net(3, 1, seed=0)
    grid = torch.linspace(-3, 3, 3001, dtype=torch.float64)
    x = torch.zeros(len(grid), 3, dtype=torch.float64)
    x[:, 1] = grid
    mask = torch.tensor([True, False, True])
    with torch.no_grad():
        density = net(x, marginalize=mask).exp()
    assert abs((density * trapezoid_weights(grid)).sum().item() - 1) < 1e-3


def test_normal_integrates_two_vars():
    net = normal_net(4, 1, seed=1)
    grid = torch.linspace(-3, 3, 401, dtype=torch.float64)
    a, b = torch.meshgrid(grid, grid, indexing="ij")
    x = torch.zeros(a.numel(), 4, dtype=torch.float64)
    x[:, 0], x[:, 3] = a.flatten(), b.flatten()
    mask = torch.tensor([False, True, True, False])
    with torch.no_grad():
        density = net(x, marginalize=mask).exp().view(len(grid), len(grid))
    weights = trapezoid_weights(grid)
    integral = (weights[:, None] * weights[None, :] * density).sum().item()
    assert abs(integral - 1) < 1e-3


def test_normal_integrates_two_dims():
    net = normal_net(2, 2, seed=2)
    grid = torch.linspace(-3, 3, 401, dtype=torch.float64)
    a, b = torch.meshgrid(grid, grid, indexing="ij")
    x = torch.zeros(a.numel(), 2, 2, dtype=torch.float64)
    x[:, 1, 0], x[:, 1, 1] = a.flatten(), b.flatten()
    mask = torch.tensor([True, False])
    with torch.no_grad():
        density = net(x, marginalize=mask).exp().view(len(grid), len(grid))
    weights = trapezoid_weights(grid)
    integral = (weights[:, None] * weights[None, :] * density).sum().item()
    assert abs(integral - 1) < 1e-3


# ---------------------------------------------------------------------- leaf initialisation from data
def test_normal_leaves_init_from_data():
    net = EinsumNetwork(random_binary_trees(8, 2, 2, seed=0), Normal(1e-3, 1.0), K=3, num_dims=2)
    generator = torch.Generator().manual_seed(0)
    x = 5.0 + 0.2 * torch.randn(500, 8, 2, generator=generator)
    net.initialize_leaves(x, seed=1)
    means = net.leaf.params[..., 0]
    # Means start at data values (plus 1 % of the data's std of jitter), far from the random init in [0, 1].
    assert means.min() > x.min() - 0.1
    assert means.max() < x.max() + 0.1
    assert torch.allclose(net.leaf_family.variance(net.leaf.params), x.var(), rtol=1e-4)
    assert torch.isfinite(net(x)).all()


def test_categorical_leaves_init_from_data():
    net = EinsumNetwork(random_binary_trees(8, 2, 2, seed=0), Categorical(4), K=3)
    x = torch.full((50, 8), 2.0)
    net.initialize_leaves(x, seed=1)
    probs = torch.softmax(net.leaf.params, dim=-1)
    # Half of each initial distribution is the data's histogram, which puts all mass on value 2.
    assert (probs[..., 2] >= 0.5).all()


def test_init_from_data_seeded():
    x = torch.randint(0, 2, (30, 8), generator=torch.Generator().manual_seed(0)).float()
    first = EinsumNetwork(random_binary_trees(8, 2, 2, seed=0), Bernoulli(), K=3)
    second = EinsumNetwork(random_binary_trees(8, 2, 2, seed=0), Bernoulli(), K=3)
    first.initialize_leaves(x, seed=3)
    second.initialize_leaves(x, seed=3)
    assert torch.equal(first.leaf.params, second.leaf.params)
    second.initialize_leaves(x, seed=4)
    assert not torch.equal(first.leaf.params, second.leaf.params)


# ---------------------------------------------------------------------- gradient training
def test_adam_increases_likelihood():
    net = build(8, 2, 2, 3, Bernoulli(), seed=5)
    generator = torch.Generator().manual_seed(2)
    prototype = torch.tensor([1.0, 1, 1, 1, 0, 0, 0, 0])
    flips = torch.rand(200, 8, generator=generator) < 0.1
    x = torch.where(flips, 1 - prototype, prototype)
    optimizer = torch.optim.Adam(net.parameters(), lr=0.05)
    with torch.no_grad():
        before = net(x).mean().item()
    for _ in range(40):
        optimizer.zero_grad()
        (-net(x).mean()).backward()
        optimizer.step()
    with torch.no_grad():
        after = net(x).mean().item()
    assert after > before + 0.5
    assert abs(total_probability(net, 2) - 1) < 1e-5


# ---------------------------------------------------------------------- numerics
def test_deep_wide_finite():
    net = EinsumNetwork(random_binary_trees(256, 8, 1, seed=0), Normal(), K=40)
    x = torch.randn(2, 256)
    log_p = net(x)
    log_p.sum().backward()
    assert torch.isfinite(log_p).all()
    for name, parameter in net.named_parameters():
        assert torch.isfinite(parameter.grad).all(), name


@pytest.mark.parametrize("leaf", [Bernoulli(), Normal(1e-6, 1.0)])
def test_extreme_leaf_params_finite(leaf):
    net = build(16, 3, 2, 4, leaf, seed=6, scale=40.0)
    x = torch.randint(0, 2, (5, 16)).float() * (1.0 if leaf.discrete else 50.0)
    log_p = net(x)
    log_p.sum().backward()
    assert torch.isfinite(log_p).all()
    for name, parameter in net.named_parameters():
        assert torch.isfinite(parameter.grad).all(), name


@pytest.mark.parametrize("leaf", [Bernoulli(), Normal(0.01, 2.0), Categorical(5)])
def test_float32_matches_float64(leaf):
    net = build(24, 3, 3, 5, leaf, seed=7)
    wide = copy.deepcopy(net).double()
    generator = torch.Generator().manual_seed(3)
    if leaf.name == "normal":
        x = torch.randn(16, 24, generator=generator)
    else:
        x = torch.randint(0, 5 if leaf.name == "categorical" else 2, (16, 24), generator=generator).float()
    missing = torch.rand(16, 24, generator=generator) < 0.3
    for mask in (None, missing):
        with torch.no_grad():
            single = net(x, marginalize=mask).double()
            double = wide(x.double(), marginalize=mask)
        assert torch.allclose(single, double, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "make_net, leaf_values",
    [
        (lambda: build(7, 2, 2, 3, Bernoulli(), seed=8), 2),
        (lambda: build(6, 1, 3, 2, Categorical(3), seed=9), 3),
        (lambda: build(5, 2, 2, 2, Binomial(3), seed=10), 4),
        (lambda: build(9, 3, 2, 3, Normal(0.05, 1.0), seed=11, num_dims=2), None),
        (lambda: randomize_pd(EinsumNetwork(poon_domingos(3, 3, [1, 2]), Bernoulli(), K=2)), 2),
    ],
)
def test_linear_reference_agrees(make_net, leaf_values):
    net = make_net().double()
    reference = CircuitReference(net)
    generator = torch.Generator().manual_seed(4)
    shape = (6, net.num_vars, net.num_dims)
    if leaf_values is None:
        x = torch.randn(shape, generator=generator, dtype=torch.float64)
    else:
        x = torch.randint(0, leaf_values, shape, generator=generator).double()
    missing = torch.rand(6, net.num_vars, generator=generator) < 0.3
    with torch.no_grad():
        log_p = net(x, marginalize=missing)
    expected = [reference.probability(row.numpy(), hidden.numpy()) for row, hidden in zip(x, missing)]
    assert np.allclose(log_p.numpy(), np.log(expected), rtol=1e-9, atol=1e-9)


def randomize_pd(net):
    randomize(net, seed=12)
    return net


@pytest.mark.parametrize("dtype, atol", [(torch.float64, 1e-8), (torch.float32, 4e-3)])
def test_einsum_layer_shift_exact(dtype, atol):
    generator = torch.Generator().manual_seed(0)
    layer = EinsumLayer(4, 3, 3, torch.arange(4), torch.arange(4)).to(dtype)
    left = torch.randn(5, 4, 3, generator=generator, dtype=dtype)
    right = torch.randn(5, 4, 3, generator=generator, dtype=dtype)
    weights = layer.log_weights()
    with torch.no_grad():
        base = layer(left, right, weights)
        shifted = layer(left - 1e4, right - 1e4, weights)
    assert torch.allclose(shifted, base - 2e4, rtol=0, atol=atol)


@pytest.mark.parametrize("dtype, atol", [(torch.float64, 1e-8), (torch.float32, 2e-3)])
def test_mixing_layer_shift_exact(dtype, atol):
    generator = torch.Generator().manual_seed(1)
    layer = MixingLayer(torch.tensor([[0, 1, 2], [3, -1, -1]]), 4).to(dtype)
    values = torch.randn(5, 4, 4, generator=generator, dtype=dtype)
    weights = layer.log_weights()
    with torch.no_grad():
        base = layer(values, weights)
        shifted = layer(values - 1e4, weights)
    assert torch.allclose(shifted, base - 1e4, rtol=0, atol=atol)


def test_einsum_layer_matches_direct_sum():
    generator = torch.Generator().manual_seed(2)
    layer = EinsumLayer(3, 2, 2, torch.arange(3), torch.arange(3)).double()
    left = torch.randn(4, 3, 2, generator=generator, dtype=torch.float64)
    right = torch.randn(4, 3, 2, generator=generator, dtype=torch.float64)
    weights = layer.log_weights()
    with torch.no_grad():
        out = layer(left, right, weights)
    W = weights.exp()
    for b in range(4):
        for p in range(3):
            for k in range(2):
                direct = sum(W[p, k, i, j] * left[b, p, i].exp() * right[b, p, j].exp() for i in range(2) for j in range(2))
                assert torch.isclose(out[b, p, k], direct.log(), rtol=1e-12)


def test_einsum_layer_minus_inf_child():
    layer = EinsumLayer(3, 3, 3, torch.arange(3), torch.arange(3))
    left = torch.randn(2, 3, 3)
    left[:, 1] = float("-inf")
    left.requires_grad_()
    right = torch.randn(2, 3, 3, requires_grad=True)
    weights = layer.log_weights()
    out = layer(left, right, weights)
    assert torch.isneginf(out[:, 1]).all()
    assert torch.isfinite(out[:, [0, 2]]).all()
    torch.logsumexp(out.flatten(), 0).backward()
    assert torch.isfinite(left.grad).all()
    assert torch.isfinite(right.grad).all()
    assert torch.isfinite(layer.logits.grad).all()


def test_mixing_layer_minus_inf_child():
    layer = MixingLayer(torch.tensor([[0, 1], [2, 3]]), 3)
    values = torch.randn(2, 4, 3)
    values[:, 0] = float("-inf")
    values[:, 2:] = float("-inf")
    values.requires_grad_()
    out = layer(values, layer.log_weights())
    assert torch.isfinite(out[:, 0]).all()
    assert torch.isneginf(out[:, 1]).all()
    torch.logsumexp(out.flatten(), 0).backward()
    assert torch.isfinite(values.grad).all()
    assert torch.isfinite(layer.logits.grad).all()


def test_einsum_layer_per_sample_weights():
    generator = torch.Generator().manual_seed(3)
    layer = EinsumLayer(4, 3, 2, torch.arange(4), torch.arange(4)).double()
    left = torch.randn(5, 4, 3, generator=generator, dtype=torch.float64)
    right = torch.randn(5, 4, 3, generator=generator, dtype=torch.float64)
    logits = torch.randn(5, 4, 2, 3, 3, generator=generator, dtype=torch.float64)
    weights = torch.log_softmax(logits.flatten(-2), -1).view(logits.shape)
    with torch.no_grad():
        batched = layer(left, right, weights)
        for b in range(5):
            single = layer(left[b : b + 1], right[b : b + 1], weights[b])
            assert torch.allclose(batched[b], single[0], rtol=1e-12, atol=1e-12), f"sample {b}"


def test_mixing_layer_per_sample_weights():
    generator = torch.Generator().manual_seed(4)
    layer = MixingLayer(torch.tensor([[0, 2, 1], [3, -1, -1]]), 2).double()
    values = torch.randn(5, 4, 2, generator=generator, dtype=torch.float64)
    logits = torch.randn(5, 2, 2, 3, generator=generator, dtype=torch.float64)
    weights = torch.log_softmax(logits.masked_fill(~layer.valid, float("-inf")), -1)
    with torch.no_grad():
        batched = layer(values, weights)
        for b in range(5):
            single = layer(values[b : b + 1], weights[b])
            assert torch.allclose(batched[b], single[0], rtol=1e-12, atol=1e-12), f"sample {b}"
    # Region 1 has one child, so its weight is 1 and the output is that child's vector.
    assert torch.allclose(batched[:, 1], values[:, 3], rtol=1e-12, atol=1e-12)


def test_mixing_layer_matches_direct_sum():
    generator = torch.Generator().manual_seed(5)
    layer = MixingLayer(torch.tensor([[0, 2], [1, 3]]), 3).double()
    values = torch.randn(4, 4, 3, generator=generator, dtype=torch.float64)
    weights = layer.log_weights()
    with torch.no_grad():
        out = layer(values, weights)
    W = weights.exp()
    children = [[0, 2], [1, 3]]
    for region, (first, second) in enumerate(children):
        direct = W[region, :, 0] * values[:, first].exp() + W[region, :, 1] * values[:, second].exp()
        assert torch.allclose(out[:, region], direct.log(), rtol=1e-12)


def test_evaluate_expanded_weights_equal():
    net = build(12, 2, 3, 3, Categorical(3), seed=14)
    generator = torch.Generator().manual_seed(6)
    x = torch.randint(0, 3, (7, 12, 1), generator=generator).float()
    expanded = [w.unsqueeze(0).expand(7, *w.shape).contiguous() for w in net.log_weights()]
    with torch.no_grad():
        shared = net.evaluate(x, None)
        per_sample = net.evaluate(x, None, log_weights=expanded)
    assert torch.allclose(shared, per_sample, rtol=1e-6, atol=1e-6)
