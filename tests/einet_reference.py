"""Slow, independent references for testing Einsum networks.

Everything here works per sample in float64 with plain Python and math. Leaf densities are
written out from their formulas. The circuit is evaluated by walking `net.graph` region by
region with products and sums of probabilities, with no log space and no batching. Only the
parameter values and their placement (`graph.layers()`) are shared with the code under test.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import torch


def all_states(num_vars: int, num_values: int) -> torch.Tensor:
    """Return every joint state of `num_vars` variables on {0, ..., num_values - 1}, (num_values**num_vars, num_vars)."""
    return torch.tensor(list(itertools.product(range(num_values), repeat=num_vars)), dtype=torch.float32)


def randomize(net, seed: int, scale: float = 1.0) -> None:
    """Overwrite every parameter of `net` with standard normal draws times `scale`."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in net.parameters():
            draws = torch.randn(parameter.shape, generator=generator, dtype=torch.float64)
            parameter.copy_(scale * draws)


def _sigmoid(value: float) -> float:
    return 1.0 / (1.0 + math.exp(-value))


def density(family, params: np.ndarray, value: float) -> float:
    """Return the probability (mass or density) of one scalar under one leaf's raw parameters."""
    name = family.name
    if name == "bernoulli":
        p_one = _sigmoid(params[0])
        return p_one if value == 1 else 1.0 - p_one
    if name == "categorical":
        weights = np.exp(params - params.max())
        return float(weights[int(value)] / weights.sum())
    if name == "binomial":
        n, k = family.num_trials, int(value)
        p = _sigmoid(params[0])
        return math.comb(n, k) * p**k * (1.0 - p) ** (n - k)
    if name == "normal":
        mean = params[0]
        var = family.min_var + (family.max_var - family.min_var) * _sigmoid(params[1])
        return math.exp(-((value - mean) ** 2) / (2.0 * var)) / math.sqrt(2.0 * math.pi * var)
    raise ValueError(f"no reference density for leaf family {name!r}")


def mode(family, params: np.ndarray) -> float:
    """Return the mode that the greedy MPE rule assigns to one leaf, written from each family's definition."""
    name = family.name
    if name == "bernoulli":
        return 1.0 if params[0] > 0 else 0.0
    if name == "categorical":
        return float(int(np.argmax(params)))
    if name == "binomial":
        masses = [density(family, params, k) for k in range(family.num_trials + 1)]
        return float(int(np.argmax(masses)))
    if name == "normal":
        return float(params[0])
    raise ValueError(f"no reference mode for leaf family {name!r}")


class CircuitReference:
    """Linear-domain evaluation and greedy MPE of one network, one sample at a time.

    Reads the network's parameters once (as float64 numpy arrays) and the placement of every
    partition and region in the einsum and mixing layers from `net.graph.layers()`.
    """

    def __init__(self, net):
        self.net = net
        self.graph = net.graph
        self.family = net.leaf_family
        self.leaf_params = net.leaf.params.detach().double().numpy()
        self.leaf_row = {region: row for row, region in enumerate(self.graph.leaves)}
        self.partition_place = {}
        self.region_place = {}
        self.plans = self.graph.layers()
        for depth, plan in enumerate(self.plans):
            for position, partition in enumerate(plan.partitions):
                self.partition_place[int(partition)] = (depth, position)
            for row, region in enumerate(plan.regions):
                self.region_place[int(region)] = (depth, row)
        with torch.no_grad():
            self.weights = [w.double().exp().numpy() for w in net.log_weights()]
            self.mixing = [None if w is None else w.double().exp().numpy() for w in net.mixing_log_weights()]

    # ------------------------------------------------------------------ upward pass
    def region_values(self, x: np.ndarray, missing: np.ndarray) -> dict[int, np.ndarray]:
        """Return the vector of every region for one sample x (num_vars, num_dims); missing variables count 1."""
        values: dict[int, np.ndarray] = {}
        partition_values: dict[int, np.ndarray] = {}
        order = sorted(range(len(self.graph.regions)), key=lambda r: len(self.graph.regions[r]))
        for region in order:
            partitions = self.graph.partitions_of(region)
            if not partitions:
                values[region] = self._leaf_vector(region, x, missing)
                continue
            for partition in partitions:
                partition_values[partition] = self._partition_vector(partition, values)
            depth, row = self.region_place[region]
            if self.mixing[depth] is None:
                values[region] = partition_values[partitions[0]]
            else:
                values[region] = self._mix(depth, row, partition_values)
        self.partition_values = partition_values
        return values

    def _leaf_vector(self, region: int, x: np.ndarray, missing: np.ndarray) -> np.ndarray:
        row = self.leaf_row[region]
        vector = np.ones(self.net.K)
        for position, variable in enumerate(self.graph.regions[region]):
            if missing[variable]:
                continue
            for k in range(self.net.K):
                for dim in range(self.net.num_dims):
                    vector[k] *= density(self.family, self.leaf_params[row, position, k, dim], x[variable, dim])
        return vector

    def _partition_vector(self, partition: int, values: dict[int, np.ndarray]) -> np.ndarray:
        depth, position = self.partition_place[partition]
        _, left, right = self.graph.partitions[partition]
        weights = self.weights[depth][position]
        out = np.zeros(weights.shape[0])
        for k in range(weights.shape[0]):
            total = 0.0
            for i in range(weights.shape[1]):
                for j in range(weights.shape[2]):
                    total += weights[k, i, j] * values[left][i] * values[right][j]
            out[k] = total
        return out

    def _mixing_children(self, depth: int, row: int) -> list[int]:
        """Return the partition indices that the mixing weights of one region refer to, in column order."""
        plan = self.plans[depth]
        return [int(plan.partitions[c]) for c in plan.mixing[row] if c >= 0]

    def _mix(self, depth: int, row: int, partition_values: dict[int, np.ndarray]) -> np.ndarray:
        weights = self.mixing[depth][row]
        children = self._mixing_children(depth, row)
        out = np.zeros(weights.shape[0])
        for column, partition in enumerate(children):
            out += weights[:, column] * partition_values[partition]
        return out

    def probability(self, x: np.ndarray, missing: np.ndarray) -> float:
        """Return p(observed part of x) for one sample."""
        return float(self.region_values(x, missing)[self.graph.root][0])

    # ------------------------------------------------------------------ greedy MPE
    def mpe(self, x: np.ndarray, missing: np.ndarray) -> np.ndarray:
        """Complete one sample: each reached sum takes its most probable child, each reached leaf its mode.

        Ties go to the first index in row-major order, as `argmax` does.
        """
        values = self.region_values(x, missing)
        out = x.copy()
        self._descend(self.graph.root, 0, values, missing, out)
        return out

    def _descend(self, region: int, entry: int, values, missing: np.ndarray, out: np.ndarray) -> None:
        partitions = self.graph.partitions_of(region)
        if not partitions:
            row = self.leaf_row[region]
            for position, variable in enumerate(self.graph.regions[region]):
                if missing[variable]:
                    for dim in range(self.net.num_dims):
                        out[variable, dim] = mode(self.family, self.leaf_params[row, position, entry, dim])
            return
        depth, row = self.region_place[region]
        if self.mixing[depth] is None:
            partition = partitions[0]
        else:
            children = self._mixing_children(depth, row)
            scores = [
                math.log(self.mixing[depth][row, entry, column]) + _log(self.partition_values[p][entry])
                for column, p in enumerate(children)
            ]
            partition = children[int(np.argmax(scores))]
        _, left, right = self.graph.partitions[partition]
        weights = self.weights[self.partition_place[partition][0]][self.partition_place[partition][1]]
        K = weights.shape[1]
        best, best_score = (0, 0), -math.inf
        for i in range(K):
            for j in range(K):
                score = math.log(weights[entry, i, j]) + _log(values[left][i]) + _log(values[right][j])
                if score > best_score:
                    best, best_score = (i, j), score
        self._descend(left, best[0], values, missing, out)
        self._descend(right, best[1], values, missing, out)


def _log(value: float) -> float:
    return math.log(value) if value > 0 else -math.inf

