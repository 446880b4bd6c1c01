"""Measure the speed and peak memory of Einsum networks on the CPU.

Modes: forward without gradients, forward and backward, and one EM step with step size 0.05.
For each configuration and mode, a fresh Python process builds the network, runs warm-up calls
and times `--repeats` calls. It reports the median, the throughput and its own peak resident
set size, so one mode's memory does not hide another's. Configurations (batch 100 unless stated):

    a: 1024 variables x 3 dims, Normal leaves, K=5, depth 4, 100 replicas
    b: 3072 variables x 1 dim, Normal leaves, K=5, depth 4, 100 replicas
    c: 64 variables x 1 dim, Normal leaves, K=10, depth 3, 10 replicas, batch 256

Child processes run with OMP_WAIT_POLICY=PASSIVE unless `--omp-wait-policy` sets another value.
With the default (spinning) policy, a thread that waits at the end of a parallel op keeps its
core busy. On a shared, oversubscribed machine that stalled every op until the other thread was
scheduled again, and config a took several times longer with 2 threads than with 1.

`--leaf-variants` instead times ways of computing the leaf layer of configuration a in one
process (forward, and forward plus backward to the leaf weights), alternating the variants in
each repeat so that changes in machine load hit them alike.

Usage: python benchmarks/einet_speed.py [--configs a b c] [--repeats 5] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass

import torch

import spanlib
from spanlib import EinsumNetwork, Normal, random_binary_trees


@dataclass(frozen=True)
class Config:
    num_vars: int
    num_dims: int
    K: int
    depth: int
    replicas: int
    batch: int


CONFIGS = {
    "a": Config(num_vars=1024, num_dims=3, K=5, depth=4, replicas=100, batch=100),
    "b": Config(num_vars=3072, num_dims=1, K=5, depth=4, replicas=100, batch=100),
    "c": Config(num_vars=64, num_dims=1, K=10, depth=3, replicas=10, batch=256),
}
MODES = ("forward", "forward+backward", "em_step")


def build(config: Config) -> tuple[EinsumNetwork, torch.Tensor]:
    graph = random_binary_trees(config.num_vars, config.depth, config.replicas, seed=0)
    net = EinsumNetwork(graph, Normal(), config.K, config.num_dims)
    x = torch.rand(config.batch, config.num_vars, config.num_dims, generator=torch.Generator().manual_seed(0))
    return net, x


def run_mode(net: EinsumNetwork, x: torch.Tensor, mode: str) -> None:
    if mode == "forward":
        with torch.no_grad():
            net(x)
    elif mode == "forward+backward":
        net.zero_grad(set_to_none=True)
        net(x).mean().backward()
    else:
        net.em_step(x, 0.05)


def measure_in_process(name: str, mode: str, repeats: int, warmup: int, threads: int) -> dict:
    """Time one configuration and mode in this process and return the numbers as a dict."""
    torch.set_num_threads(threads)
    # ru_maxrss is in kilobytes on Linux. Importing torch alone accounts for a large share.
    import_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    config = CONFIGS[name]
    net, x = build(config)
    for _ in range(warmup):
        run_mode(net, x, mode)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run_mode(net, x, mode)
        times.append(time.perf_counter() - start)
    median = statistics.median(times)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "config": name,
        "mode": mode,
        "median_ms": 1000 * median,
        "min_ms": 1000 * min(times),
        "samples_per_s": config.batch / median,
        "peak_rss_mb": peak_mb,
        "import_rss_mb": import_mb,
    }


def run_child(extra: list[str], args: argparse.Namespace) -> str:
    """Run this script in a fresh process with `extra` arguments and return its standard output."""
    command = [sys.executable, os.path.abspath(__file__), *extra]
    command += ["--repeats", str(args.repeats), "--warmup", str(args.warmup), "--threads", str(args.threads)]
    env = dict(os.environ)
    if args.omp_wait_policy != "inherit":
        env["OMP_WAIT_POLICY"] = args.omp_wait_policy.upper()
    result = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
    if result.returncode != 0:
        raise RuntimeError(f"benchmark child {' '.join(extra)} failed:\n{result.stderr}")
    return result.stdout


def measure_in_subprocess(name: str, mode: str, args: argparse.Namespace) -> dict:
    output = run_child(["--child", name, mode], args)
    return json.loads(output.strip().splitlines()[-1])


def print_table(rows: list[dict]) -> None:
    print("| config | mode | median ms | min ms | samples/s | peak RSS MB | RSS after imports MB |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for row in rows:
        print(
            f"| {row['config']} | {row['mode']} | {row['median_ms']:.0f} | {row['min_ms']:.0f} | "
            f"{row['samples_per_s']:.0f} | {row['peak_rss_mb']:.0f} | {row['import_rss_mb']:.0f} |"
        )


# ---------------------------------------------------------------------- leaf-layer variants
def leaf_gather_all(leaf, x: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
    """Compute the leaf layer by one advanced-index gather of (batch, regions, width * F) and one bmm.

    This is how spanlib computed the leaf layer before the blocked contraction. `features` is
    (regions, width, K, F) and is first rearranged to the (regions, width * F, K) it needs.
    """
    batch = x.shape[0]
    regions, width, K, num_features = features.shape
    features = features.transpose(2, 3).reshape(regions, width * num_features, K)
    stats = leaf.family.statistics(x).reshape(batch, leaf.num_vars, -1)
    per_var = torch.cat([stats, torch.ones_like(stats[..., :1])], dim=-1)
    per_var = torch.cat([per_var, per_var.new_zeros(batch, 1, per_var.shape[-1])], dim=1)
    gathered = per_var[:, leaf.index.flatten()].reshape(batch, leaf.index.shape[0], -1)
    return torch.bmm(gathered.transpose(0, 1), features).transpose(0, 1)


def compare_leaf_variants(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    net, x = build(CONFIGS["a"])
    leaf = net.leaf
    base_features = leaf.features().detach()
    all_observed = torch.ones(x.shape[0], x.shape[1], dtype=torch.bool)

    def layer(block_bytes, observed=None):
        def run(features):
            leaf.block_bytes = block_bytes
            return leaf(x, observed, features)

        return run

    variants = {
        "gather all + bmm": lambda features: leaf_gather_all(leaf, x, features),
        "index_select, 1 block": layer(2**40),
        "blocks of 1 MB": layer(2**20),
        "blocks of 4 MB": layer(4 * 2**20),
        "blocks of 16 MB": layer(16 * 2**20),
        "blocks of 4 MB, count column": layer(4 * 2**20, all_observed),
    }
    reference = leaf_gather_all(leaf, x, base_features)
    forward_times = {name: [] for name in variants}
    backward_times = {name: [] for name in variants}
    for repeat in range(args.warmup + args.repeats):
        for name, run in variants.items():
            with torch.no_grad():
                start = time.perf_counter()
                out = run(base_features)
                elapsed = time.perf_counter() - start
            if repeat == 0 and not torch.allclose(out, reference, rtol=1e-4, atol=1e-2):
                raise RuntimeError(f"leaf variant {name!r} disagrees with the gather-all reference")
            features = base_features.clone().requires_grad_()
            start = time.perf_counter()
            run(features).sum().backward()
            elapsed_backward = time.perf_counter() - start
            if repeat >= args.warmup:
                forward_times[name].append(elapsed)
                backward_times[name].append(elapsed_backward)
    print("| leaf layer variant (config a) | forward median ms | forward+backward median ms |")
    print("| --- | ---: | ---: |")
    for name in variants:
        forward, backward = statistics.median(forward_times[name]), statistics.median(backward_times[name])
        print(f"| {name} | {1000 * forward:.0f} | {1000 * backward:.0f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", nargs="+", choices=sorted(CONFIGS), default=sorted(CONFIGS), help="configurations to run")
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES), help="modes to time")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per configuration and mode (median reported)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed calls before timing")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument(
        "--omp-wait-policy",
        choices=("passive", "active", "inherit"),
        default="passive",
        help="OMP_WAIT_POLICY of the child processes; inherit keeps this process's environment",
    )
    parser.add_argument("--leaf-variants", action="store_true", help="compare leaf-layer implementations on config a")
    parser.add_argument("--child", nargs=2, metavar=("CONFIG", "MODE"), help=argparse.SUPPRESS)
    parser.add_argument("--leaf-variants-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.repeats < 1 or args.warmup < 0 or args.threads < 1:
        parser.error("--repeats and --threads must be at least 1 and --warmup at least 0")

    if args.child:
        name, mode = args.child
        print(json.dumps(measure_in_process(name, mode, args.repeats, args.warmup, args.threads)))
        return
    if args.leaf_variants_child:
        compare_leaf_variants(args)
        return

    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    if args.omp_wait_policy == "inherit":
        policy = os.environ.get("OMP_WAIT_POLICY", "unset")
    else:
        policy = args.omp_wait_policy.upper()
    print(
        f"spanlib from {os.path.dirname(spanlib.__file__)}, torch {torch.__version__}, {args.threads} threads, "
        f"OMP_WAIT_POLICY {policy}, {os.cpu_count()} CPUs, load average {load}"
    )
    if args.leaf_variants:
        print(run_child(["--leaf-variants-child"], args), end="")
        return
    rows = [measure_in_subprocess(name, mode, args) for name in args.configs for mode in args.modes]
    print_table(rows)


if __name__ == "__main__":
    main()
