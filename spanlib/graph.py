"""Region graphs: the structure of an Einsum network as plain, checkable data.

A region is a set of variables. A partition splits a region into two disjoint child regions whose
union is the parent; in the circuit it becomes a layer of product nodes followed by sums. Regions
without partitions are leaves and hold the input distributions. Two families are built here:

* random binary trees: R replicas, each splitting all variables recursively into two random halves
  for D levels, joined at one root region (a mixture over the R trees);
* the Poon-Domingos structure for images: rectangles cut along rows or columns at given steps.

`RegionGraph.layers()` orders the partitions into einsum layers for the network.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class LayerPlan:
    """One einsum layer, and its mixing layer when a region of the layer has several partitions.

    Slots number the region outputs over the whole network: the leaf regions first, then each
    layer's regions in order. Indices below refer to those slots or to this layer's partitions.

    Attributes:
        partitions: partition indices computed by this einsum layer.
        left_slots, right_slots: slot of each partition's left and right child region.
        regions: region indices this layer outputs, in slot order.
        mixing: None when every region has one partition (partition p is region p); otherwise an
            array (regions, max_partitions) of positions in `partitions`, padded with -1.
    """

    partitions: np.ndarray
    left_slots: np.ndarray
    right_slots: np.ndarray
    regions: np.ndarray
    mixing: np.ndarray | None


@dataclass
class RegionGraph:
    """A region graph over `num_vars` variables.

    Attributes:
        num_vars: number of variables, indexed 0 .. num_vars - 1.
        regions: sorted variable indices of each region (duplicated scopes are allowed, e.g. the
            same leaf scope in two replicas).
        partitions: (parent, left, right) region indices of each partition.
        root: index of the root region, whose scope is every variable.
    """

    num_vars: int
    regions: list[tuple[int, ...]]
    partitions: list[tuple[int, int, int]]
    root: int
    _children: dict[int, list[int]] = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.validate()

    # ------------------------------------------------------------------ structure queries
    def partitions_of(self, region: int) -> list[int]:
        """Return the indices of the partitions that split `region` (empty for a leaf)."""
        if self._children is None:
            children: dict[int, list[int]] = {}
            for index, (parent, _, _) in enumerate(self.partitions):
                children.setdefault(parent, []).append(index)
            self._children = children
        return self._children.get(region, [])

    @property
    def leaves(self) -> list[int]:
        """Region indices without partitions, in index order."""
        return [r for r in range(len(self.regions)) if not self.partitions_of(r)]

    def heights(self) -> np.ndarray:
        """Return each region's height: 0 for leaves, else 1 + the tallest child over its partitions."""
        height = np.full(len(self.regions), -1, dtype=np.int64)
        order = sorted(range(len(self.regions)), key=lambda r: len(self.regions[r]))
        for region in order:
            parts = self.partitions_of(region)
            if not parts:
                height[region] = 0
                continue
            tallest = 0
            for p in parts:
                _, left, right = self.partitions[p]
                tallest = max(tallest, height[left], height[right])
            height[region] = tallest + 1
        return height

    def validate(self) -> None:
        """Check that the circuit the graph defines is valid.

        Raises ValueError when a partition is not decomposable (children overlap), not smooth
        (children do not cover the parent), a scope is empty or repeats a variable, a variable or
        region index is out of range, the root does not cover every variable, or some region is
        not reachable from the root.
        """
        if self.num_vars < 1:
            raise ValueError(f"num_vars must be at least 1, got {self.num_vars}")
        for index, scope in enumerate(self.regions):
            if not scope:
                raise ValueError(f"region {index} has an empty scope")
            if min(scope) < 0 or max(scope) >= self.num_vars:
                raise ValueError(f"region {index} has variables outside 0..{self.num_vars - 1}: {scope}")
            if len(set(scope)) != len(scope):
                raise ValueError(f"region {index} lists a variable more than once: {scope}; list each variable once")
        count = len(self.regions)
        if not 0 <= self.root < count:
            raise ValueError(f"root {self.root} is not a region index in 0..{count - 1}")
        for index, partition in enumerate(self.partitions):
            if not all(0 <= region < count for region in partition):
                raise ValueError(f"partition {index} refers to regions {tuple(partition)} outside 0..{count - 1}")
        if set(self.regions[self.root]) != set(range(self.num_vars)):
            raise ValueError("the root region must contain every variable exactly once")
        for index, (parent, left, right) in enumerate(self.partitions):
            a, b = set(self.regions[left]), set(self.regions[right])
            if a & b:
                raise ValueError(
                    f"partition {index} is not decomposable: its children share variables {sorted(a & b)[:5]}"
                )
            if a | b != set(self.regions[parent]):
                raise ValueError(f"partition {index} is not smooth: its children do not cover region {parent}")
        parents = {p for p, _, _ in self.partitions}
        seen, stack = {self.root}, [self.root]
        while stack:
            for p in self.partitions_of(stack.pop()):
                for child in self.partitions[p][1:]:
                    if child not in seen:
                        seen.add(child)
                        stack.append(child)
        if len(seen) != len(self.regions):
            raise ValueError(f"{len(self.regions) - len(seen)} regions are not reachable from the root")
        if self.root not in parents and len(self.regions) > 1:
            raise ValueError("the root region has no partition")

    # ------------------------------------------------------------------ layering
    def layers(self) -> list[LayerPlan]:
        """Order the partitions into einsum layers, bottom to top.

        All partitions of a region sit in the layer given by the region's height, so that a
        mixing layer can combine them right after the einsum layer. The root is alone in the
        last layer.
        """
        height = self.heights()
        slot = {region: i for i, region in enumerate(self.leaves)}
        plans = []
        for level in range(1, int(height.max()) + 1):
            regions = np.flatnonzero(height == level)
            partitions, rows = [], []
            for region in regions:
                parts = self.partitions_of(int(region))
                rows.append(list(range(len(partitions), len(partitions) + len(parts))))
                partitions.extend(parts)
            left = np.array([slot[self.partitions[p][1]] for p in partitions], dtype=np.int64)
            right = np.array([slot[self.partitions[p][2]] for p in partitions], dtype=np.int64)
            mixing = None
            if len(partitions) > len(regions):
                width = max(len(row) for row in rows)
                mixing = np.full((len(regions), width), -1, dtype=np.int64)
                for i, row in enumerate(rows):
                    mixing[i, : len(row)] = row
            for region in regions:
                slot[int(region)] = len(slot)
            plans.append(LayerPlan(np.array(partitions), left, right, regions, mixing))
        return plans

    def leaf_index(self) -> np.ndarray:
        """Return a (leaf regions, max leaf size) array of variable indices, padded with num_vars."""
        leaves = self.leaves
        width = max(len(self.regions[r]) for r in leaves)
        index = np.full((len(leaves), width), self.num_vars, dtype=np.int64)
        for row, region in enumerate(leaves):
            scope = self.regions[region]
            index[row, : len(scope)] = scope
        return index

    def summary(self) -> str:
        """Describe the layers in a few lines: partitions, regions and mixing per layer."""
        lines = [
            f"RegionGraph: {self.num_vars} variables, {len(self.regions)} regions, "
            f"{len(self.partitions)} partitions, {len(self.leaves)} leaf regions"
        ]
        for depth, plan in enumerate(self.layers(), start=1):
            mixing = "" if plan.mixing is None else f", mixing over up to {plan.mixing.shape[1]} partitions"
            lines.append(f"  layer {depth}: {len(plan.partitions)} partitions -> {len(plan.regions)} regions{mixing}")
        return "\n".join(lines)

    # ------------------------------------------------------------------ serialisation
    def to_dict(self) -> dict:
        """Return the graph as plain lists and ints (for checkpoints)."""
        return {
            "num_vars": self.num_vars,
            "regions": [list(scope) for scope in self.regions],
            "partitions": [list(p) for p in self.partitions],
            "root": self.root,
        }

    @classmethod
    def from_dict(cls, data: dict) -> RegionGraph:
        """Rebuild a graph written by `to_dict`."""
        return cls(
            num_vars=int(data["num_vars"]),
            regions=[tuple(int(v) for v in scope) for scope in data["regions"]],
            partitions=[tuple(int(i) for i in p) for p in data["partitions"]],
            root=int(data["root"]),
        )


def random_binary_trees(num_vars: int, depth: int, replicas: int, seed: int = 0) -> RegionGraph:
    """Build R random binary trees of depth D over `num_vars` variables, mixed at one root.

    Each replica shuffles a region's variables and cuts them into two halves (sizes differ by at
    most one), recursively for `depth` levels, so every replica ends in 2**depth leaf regions.

    Args:
        num_vars: number of variables; at least 2**depth so that no leaf region is empty.
        depth: number of splits along every path (D), at least 1.
        replicas: number of trees (R), at least 1.
        seed: seed of numpy's random generator; equal seeds give equal graphs.
    """
    if depth < 1:
        raise ValueError(f"depth must be at least 1, got {depth}")
    if replicas < 1:
        raise ValueError(f"replicas must be at least 1, got {replicas}")
    if num_vars < 2**depth:
        raise ValueError(
            f"num_vars={num_vars} is too small for depth={depth}: a tree of that depth needs at least "
            f"2**{depth} = {2**depth} variables; lower the depth"
        )
    rng = np.random.default_rng(seed)
    regions: list[tuple[int, ...]] = [tuple(range(num_vars))]
    partitions: list[tuple[int, int, int]] = []
    for _ in range(replicas):
        frontier = [(0, np.arange(num_vars))]
        for _ in range(depth):
            next_frontier = []
            for parent, variables in frontier:
                shuffled = rng.permutation(variables)
                half = len(shuffled) // 2
                children = []
                for part in (shuffled[:half], shuffled[half:]):
                    regions.append(tuple(sorted(int(v) for v in part)))
                    children.append(len(regions) - 1)
                    next_frontier.append((len(regions) - 1, part))
                partitions.append((parent, children[0], children[1]))
            frontier = next_frontier
    return RegionGraph(num_vars=num_vars, regions=regions, partitions=partitions, root=0)


def poon_domingos(height: int, width: int, steps: int | list[int] | tuple[int, ...]) -> RegionGraph:
    """Build the Poon-Domingos region graph for a height x width image.

    Regions are axis-aligned rectangles. A rectangle is cut into two along a row or a column at
    every image coordinate that is a multiple of one of `steps` and lies strictly inside it;
    every cut is one partition. Rectangles without such a cut are leaf regions. Variable
    `row * width + col` is the pixel (row, col).

    Args:
        height, width: image size in pixels.
        steps: cut spacing in pixels (one int or several); the smallest sets the leaf size.
    """
    steps = [steps] if isinstance(steps, int) else list(steps)
    if not steps or min(steps) < 1:
        raise ValueError(f"steps must be positive integers, got {steps}")
    if height < 1 or width < 1:
        raise ValueError(f"image size must be positive, got {height} x {width}")

    def cuts(start: int, stop: int) -> list[int]:
        return sorted({c for s in steps for c in range((start // s + 1) * s, stop, s) if start < c < stop})

    def scope(box: tuple[int, int, int, int]) -> tuple[int, ...]:
        top, bottom, left, right = box
        return tuple(r * width + c for r in range(top, bottom) for c in range(left, right))

    full = (0, height, 0, width)
    index = {full: 0}
    regions = [scope(full)]
    partitions = []
    stack = [full]
    while stack:
        box = stack.pop()
        top, bottom, left, right = box
        halves = [((top, c, left, right), (c, bottom, left, right)) for c in cuts(top, bottom)]
        halves += [((top, bottom, left, c), (top, bottom, c, right)) for c in cuts(left, right)]
        for pair in halves:
            for child in pair:
                if child not in index:
                    index[child] = len(regions)
                    regions.append(scope(child))
                    stack.append(child)
            partitions.append((index[box], index[pair[0]], index[pair[1]]))
    if not partitions:
        raise ValueError(f"steps {steps} allow no cut of a {height} x {width} image; use smaller steps")
    return RegionGraph(num_vars=height * width, regions=regions, partitions=partitions, root=0)
