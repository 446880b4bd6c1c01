"""Tests of region graphs: random binary trees, the Poon-Domingos structure, validation and layering."""

import math

import pytest

from spanlib.graph import RegionGraph, poon_domingos, random_binary_trees


def replica_leaves(graph: RegionGraph) -> list[list[int]]:
    """Return, for each partition of the root, the leaf regions reachable through it."""
    replicas = []
    for root_partition in graph.partitions_of(graph.root):
        leaves, stack = [], list(graph.partitions[root_partition][1:])
        while stack:
            region = stack.pop()
            partitions = graph.partitions_of(region)
            if not partitions:
                leaves.append(region)
            for partition in partitions:
                stack.extend(graph.partitions[partition][1:])
        replicas.append(leaves)
    return replicas


@pytest.mark.parametrize("num_vars, depth, replicas", [(8, 3, 2), (13, 3, 3), (4, 2, 1), (21, 2, 4), (2, 1, 2)])
def test_random_trees_partitions_valid(num_vars, depth, replicas):
    graph = random_binary_trees(num_vars, depth, replicas, seed=3)
    for parent, left, right in graph.partitions:
        left_scope, right_scope = set(graph.regions[left]), set(graph.regions[right])
        assert not left_scope & right_scope, "children overlap"
        assert left_scope | right_scope == set(graph.regions[parent]), "children do not cover the parent"
    assert set(graph.regions[graph.root]) == set(range(num_vars))


@pytest.mark.parametrize("num_vars, depth, replicas", [(8, 3, 2), (13, 3, 3), (17, 4, 2), (21, 2, 4)])
def test_random_trees_leaves_partition_vars(num_vars, depth, replicas):
    graph = random_binary_trees(num_vars, depth, replicas, seed=5)
    per_replica = replica_leaves(graph)
    assert len(per_replica) == replicas
    smallest, largest = num_vars // 2**depth, math.ceil(num_vars / 2**depth)
    for leaves in per_replica:
        assert len(leaves) == 2**depth
        covered = [v for region in leaves for v in graph.regions[region]]
        assert sorted(covered) == list(range(num_vars)), "leaves of one replica must cover each variable once"
        sizes = {len(graph.regions[region]) for region in leaves}
        assert min(sizes) >= smallest
        assert max(sizes) <= largest


def test_random_trees_seed_reproducible():
    first = random_binary_trees(19, 3, 3, seed=11)
    second = random_binary_trees(19, 3, 3, seed=11)
    assert first.regions == second.regions
    assert first.partitions == second.partitions


def test_random_trees_seeds_differ():
    first = random_binary_trees(19, 3, 3, seed=11)
    second = random_binary_trees(19, 3, 3, seed=12)
    assert first.regions != second.regions


def test_random_trees_replicas_differ():
    graph = random_binary_trees(32, 2, 2, seed=0)
    scopes = [sorted(graph.regions[r] for r in leaves) for leaves in replica_leaves(graph)]
    assert scopes[0] != scopes[1]


@pytest.mark.parametrize("num_vars, depth", [(7, 3), (1, 1), (15, 4)])
def test_random_trees_too_few_vars(num_vars, depth):
    with pytest.raises(ValueError, match=f"num_vars={num_vars} is too small for depth={depth}"):
        random_binary_trees(num_vars, depth, 1)


def test_random_trees_bad_depth_replicas():
    with pytest.raises(ValueError, match="depth must be at least 1, got 0"):
        random_binary_trees(8, 0, 1)
    with pytest.raises(ValueError, match="replicas must be at least 1, got 0"):
        random_binary_trees(8, 2, 0)


def rectangle_of(graph: RegionGraph, region: int, width: int) -> tuple[int, int, int, int]:
    """Return (top, bottom, left, right) of a region's bounding box, bottom and right exclusive."""
    rows = [v // width for v in graph.regions[region]]
    cols = [v % width for v in graph.regions[region]]
    return min(rows), max(rows) + 1, min(cols), max(cols) + 1


def segments(size: int, step: int) -> int:
    return math.ceil(size / step)


@pytest.mark.parametrize("height, width, step", [(4, 4, 2), (3, 5, 2), (6, 4, 3), (2, 3, 1)])
def test_poon_domingos_structure(height, width, step):
    graph = poon_domingos(height, width, step)
    graph.validate()
    for region in range(len(graph.regions)):
        top, bottom, left, right = rectangle_of(graph, region, width)
        box = {r * width + c for r in range(top, bottom) for c in range(left, right)}
        assert set(graph.regions[region]) == box, f"region {region} is not a full rectangle"
    # Every rectangle whose sides lie on the cut lines is a region, and each has one partition per inner line.
    rows, cols = segments(height, step), segments(width, step)
    assert len(graph.regions) == math.comb(rows + 1, 2) * math.comb(cols + 1, 2)
    expected_partitions = sum(
        (a - 1 + b - 1) * (rows - a + 1) * (cols - b + 1) for a in range(1, rows + 1) for b in range(1, cols + 1)
    )
    assert len(graph.partitions) == expected_partitions


@pytest.mark.parametrize("height, width, step", [(4, 4, 2), (3, 5, 2), (6, 4, 3)])
def test_poon_domingos_leaves_cover_pixels(height, width, step):
    graph = poon_domingos(height, width, step)
    covered = set()
    for region in graph.leaves:
        top, bottom, left, right = rectangle_of(graph, region, width)
        assert bottom - top <= step
        assert right - left <= step
        assert top % step == 0
        assert left % step == 0
        covered |= set(graph.regions[region])
    assert covered == set(range(height * width))
    expected_leaves = segments(height, step) * segments(width, step)
    assert len(graph.leaves) == expected_leaves


def test_poon_domingos_several_steps():
    graph = poon_domingos(4, 4, [1, 2])
    assert sorted(len(graph.regions[r]) for r in graph.leaves) == [1] * 16
    # A cut at column 1 (step 1) and at column 2 (step 2 and 1) both split the full image.
    assert len(graph.partitions_of(graph.root)) == 6


def test_poon_domingos_no_cut():
    with pytest.raises(ValueError, match="allow no cut of a 2 x 2 image"):
        poon_domingos(2, 2, 4)
    with pytest.raises(ValueError, match="steps must be positive"):
        poon_domingos(4, 4, 0)


def test_validate_rejects_overlap():
    with pytest.raises(ValueError, match="partition 0 is not decomposable"):
        RegionGraph(num_vars=3, regions=[(0, 1, 2), (0, 1), (1, 2)], partitions=[(0, 1, 2)], root=0)


def test_validate_rejects_not_covering():
    with pytest.raises(ValueError, match="partition 0 is not smooth"):
        RegionGraph(num_vars=3, regions=[(0, 1, 2), (0,), (1,)], partitions=[(0, 1, 2)], root=0)


def test_validate_rejects_unreachable():
    with pytest.raises(ValueError, match="1 regions are not reachable"):
        RegionGraph(num_vars=2, regions=[(0, 1), (0,), (1,), (1,)], partitions=[(0, 1, 2)], root=0)


def test_validate_rejects_root_not_covering():
    with pytest.raises(ValueError, match="root region must contain every variable"):
        RegionGraph(num_vars=3, regions=[(0, 1), (0,), (1,)], partitions=[(0, 1, 2)], root=0)


def test_validate_rejects_bad_scopes():
    with pytest.raises(ValueError, match="region 1 has an empty scope"):
        RegionGraph(num_vars=2, regions=[(0, 1), (), (0, 1)], partitions=[(0, 1, 2)], root=0)
    with pytest.raises(ValueError, match="region 2 has variables outside 0..1"):
        RegionGraph(num_vars=2, regions=[(0, 1), (0,), (5,)], partitions=[(0, 1, 2)], root=0)


def test_layers_read_earlier_slots():
    graph = poon_domingos(3, 4, [1, 2])
    slots_before = len(graph.leaves)
    for plan in graph.layers():
        assert plan.left_slots.max() < slots_before
        assert plan.right_slots.max() < slots_before
        if plan.mixing is None:
            assert len(plan.partitions) == len(plan.regions)
        slots_before += len(plan.regions)
    assert graph.layers()[-1].regions.tolist() == [graph.root]


def test_graph_dict_round_trip():
    graph = poon_domingos(3, 3, 1)
    copy = RegionGraph.from_dict(graph.to_dict())
    assert copy == graph


def test_validate_rejects_repeated_variable():
    # Without this check the leaf (1, 1) would count variable 1 twice and p would not sum to 1.
    with pytest.raises(ValueError, match=r"region 2 lists a variable more than once: \(1, 1\)"):
        RegionGraph(num_vars=2, regions=[(0, 1), (0,), (1, 1)], partitions=[(0, 1, 2)], root=0)


@pytest.mark.parametrize("partition", [(0, 1, 3), (0, 1, -1)])
def test_validate_rejects_bad_region_index(partition):
    with pytest.raises(ValueError, match=r"partition 0 refers to regions .* outside 0..2"):
        RegionGraph(num_vars=2, regions=[(0, 1), (0,), (1,)], partitions=[partition], root=0)


def test_validate_rejects_bad_root():
    with pytest.raises(ValueError, match=r"root 3 is not a region index in 0..2"):
        RegionGraph(num_vars=2, regions=[(0, 1), (0,), (1,)], partitions=[(0, 1, 2)], root=3)


@pytest.mark.parametrize("num_vars, depth, replicas", [(8, 3, 2), (13, 3, 4), (9, 2, 1)])
def test_random_trees_layers(num_vars, depth, replicas):
    graph = random_binary_trees(num_vars, depth, replicas, seed=2)
    plans = graph.layers()
    assert len(plans) == depth
    for level, plan in enumerate(plans[:-1], start=1):
        expected = replicas * 2 ** (depth - level)
        assert len(plan.partitions) == expected, f"layer {level}"
        assert len(plan.regions) == expected, f"layer {level}"
        assert plan.mixing is None, f"layer {level}"
    top = plans[-1]
    assert top.regions.tolist() == [graph.root]
    assert len(top.partitions) == replicas
    if replicas == 1:
        assert top.mixing is None
    else:
        assert top.mixing.tolist() == [list(range(replicas))]


def test_summary_lists_layers():
    lines = random_binary_trees(10, 2, 3, seed=0).summary().splitlines()
    # Each of the 3 replicas adds 2 + 4 regions below the shared root and 1 + 2 partitions.
    assert lines[0] == "RegionGraph: 10 variables, 19 regions, 9 partitions, 12 leaf regions"
    assert lines[1] == "  layer 1: 6 partitions -> 6 regions"
    assert lines[2] == "  layer 2: 3 partitions -> 1 regions, mixing over up to 3 partitions"
