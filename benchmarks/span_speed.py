"""Time one training step of SPAN against one of its Einsum network, on CPU.

The "paper" size is the SVHN configuration of Yu, Dhami and Kersting, "Sum-Product-Attention
Networks": an Einsum network with K=5, D=4 and R=100 random binary trees over 32 x 32 RGB pixels
(1024 variables with 3 dims, Normal leaves), and per einsum layer a ViT encoder with patch 8,
depth 2, 16 heads, d_model 1024 and d_ff 512. The "quick" size runs in seconds. Both sizes are
read from the profiles of the same names in `spanlib.profiles`, with dropout off.

Every (size, model) pair runs in a fresh subprocess, so that its peak RSS is its own. Steps:

* einet em: one stochastic EM step, `einet.em_step(x, 0.05)`, because the paper trains the plain
  network with EM.
* einet grad: forward, backward and one Adam step of the plain network.
* span full: forward of -E(x), backward over every parameter, one Adam step over every parameter.
* span coordinate: the step of `train_span`'s coordinate phase, one gradient step on the Einsum
  network and then one on the encoders, sharing one pass of the encoders.
* span coordinate two passes: the same two gradient steps, each with a full forward pass of SPAN.
* span finetune: the step of `train_span`'s fine-tune phase. The encoders are frozen, and their
  summaries of the batch come from a cache filled once, so only the heads and the circuit run.
* span finetune uncached: the same step with the frozen encoders run on the batch (without
  autograd), as `train_span` does when it cannot cache (a DataLoader, or token masking).
* span encoders: forward and backward (gradients of the encoder parameters) of the encoders and
  heads alone, the part of a full step that the Einsum network does not cause.

The schedule ratio weighs the step times by the paper's epochs: 5 warm-up (EM), 10 coordinate and
15 fine-tune epochs for SPAN against 30 EM epochs for the Einsum network. That is the comparison
closest to the paper's mean running times, 11341.9 s for SPAN and 5547.5 s for the Einsum network
(a ratio of 2.04; the paper does not state its hardware).

Usage: python benchmarks/span_speed.py [--sizes paper quick] [--models einet lowrank dense]

"The paper" here is the SPAN paper (Yu, Dhami and Kersting, arXiv:2109.06587).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

# Measure the spanlib of the checkout that contains this script, not whichever one is installed.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

SIZE_NAMES = ("paper", "quick")
MODELS = ("einet", "lowrank", "dense")
SCHEDULE = dict(warmup=5, coordinate=10, finetune=15, einet=30)


# ---------------------------------------------------------------------------- models and FLOP counts


def model_size(profile_name: str) -> dict:
    """Return the image, Einsum network and encoder sizes of the profile called `profile_name`."""
    from spanlib.profiles import profile

    config = profile(profile_name)
    data, einet, encoder = config.data, config.einet, config.encoder
    return dict(channels=data.channels, height=data.image_size, width=data.image_size, K=einet.K,
                tree_depth=einet.depth, replicas=einet.replicas, patch_size=encoder.patch_size,
                depth=encoder.depth, heads=encoder.heads, d_model=encoder.d_model, d_ff=encoder.d_ff,
                rank=encoder.rank)


def build(size: dict, model: str, batch_size: int, seed: int):
    """Build the Einsum network (and SPAN unless model is "einet") and a batch of random pixels."""
    import torch

    from spanlib import SPAN, EinsumNetwork, Normal, PatchEmbedding, random_binary_trees

    torch.manual_seed(seed)
    num_vars = size["height"] * size["width"]
    graph = random_binary_trees(num_vars, size["tree_depth"], size["replicas"], seed=seed)
    einet = EinsumNetwork(graph, Normal(), K=size["K"], num_dims=size["channels"])
    x = torch.rand(batch_size, num_vars, size["channels"])
    einet.initialize_leaves(x, seed=seed)
    if model == "einet":
        return einet, None, x
    embedding = PatchEmbedding(size["channels"], size["height"], size["width"], size["patch_size"])
    span = SPAN(einet, embedding, depth=size["depth"], heads=size["heads"], d_model=size["d_model"],
                d_ff=size["d_ff"], head=model, rank=size["rank"])
    # Random head outputs, so that the step works on non-uniform attention as it does after training.
    with torch.no_grad():
        for head in span.heads:
            output = head.linear if model == "dense" else head.up
            output.weight.normal_(0, 0.01)
    return einet, span, x


def forward_macs(einet, span) -> dict:
    """Count multiply-adds of one forward pass per sample, by part (an analytic estimate)."""
    leaf = einet.leaf
    regions, width = leaf.index.shape
    features = einet.num_dims * leaf.family.num_stats + 1
    circuit = regions * width * features * einet.K
    for layer in einet.einsum_layers:
        circuit += layer.num_partitions * layer.K * layer.K * (1 + layer.out_size)
    counts = {"circuit": circuit}
    if span is None:
        return counts

    settings = span.settings
    d_model, d_ff = settings["d_model"], settings["d_ff"]
    tokens = span.embedding.num_tokens + 1
    per_token = 4 * d_model * d_model + 2 * d_model * d_ff
    full_layer = tokens * per_token + 2 * tokens * tokens * d_model
    # The top layer computes keys and values of every token, but the rest for the summary token only.
    top_layer = tokens * 2 * d_model * d_model + per_token - 2 * d_model * d_model + 2 * tokens * d_model
    projection = span.embedding.num_tokens * span.embedding.token_features * d_model
    encoder = projection + (settings["depth"] - 1) * full_layer + top_layer
    counts["encoders"] = encoder * len(span.encoders)
    counts["heads"] = sum(sum(p.numel() for name, p in head.named_parameters() if name.endswith("weight"))
                          for head in span.heads)
    # Per-sample weights: W * A, its normalisation and the per-sample einsum, about 3 operations per weight.
    counts["reweighting"] = sum(2 * layer.logits.numel() for layer in einet.einsum_layers)
    return counts


# ---------------------------------------------------------------------------- timed steps


def measure(steps: dict, repeats: int) -> dict:
    """Return the median wall-clock and CPU seconds of every step, timed round-robin.

    Each step runs once untimed (allocator, oneDNN kernels, Adam state), then all steps take turns
    `repeats` times, so that changes in the load of a shared machine fall on every step alike.
    CPU seconds count every thread of this process.
    """
    for step in steps.values():
        step()
    wall = {name: [] for name in steps}
    cpu = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            wall_start, cpu_start = time.perf_counter(), time.process_time()
            step()
            wall[name].append(time.perf_counter() - wall_start)
            cpu[name].append(time.process_time() - cpu_start)
    return {name: {"wall": statistics.median(wall[name]), "cpu": statistics.median(cpu[name])} for name in steps}


def einet_steps(einet, x) -> dict:
    """Return the EM step and the Adam step of the plain Einsum network as callables."""
    import torch

    optimizer = torch.optim.Adam(einet.parameters(), lr=1e-2)

    def gradient_step():
        optimizer.zero_grad(set_to_none=True)
        (-einet(x).mean()).backward()
        optimizer.step()

    return {"einet em": lambda: einet.em_step(x, 0.05), "einet grad": gradient_step}


def span_steps(span, x) -> dict:
    """Return SPAN's steps as callables, with the steps of its own Einsum network as the baseline."""
    import torch

    from spanlib.span.training import _gradient_step, coordinate_step, finetune_step

    einet = span.einet
    everything = torch.optim.Adam([{"params": span.einet_parameters(), "lr": 1e-2},
                                   {"params": span.encoder_parameters(), "lr": 1e-3}])
    einet_opt = torch.optim.Adam(span.einet_parameters(), lr=1e-2)
    encoder_opt = torch.optim.Adam(span.encoder_parameters(), lr=1e-3)
    observed = torch.ones(x.shape[:2], dtype=torch.bool)

    def full_step():
        everything.zero_grad(set_to_none=True)
        (-span(x).mean()).backward()
        everything.step()

    def two_pass_coordinate_step():
        _gradient_step(span, x, einet_opt, span.einet_parameters())
        _gradient_step(span, x, encoder_opt, span.encoder_parameters())

    with torch.no_grad():
        cached_summaries = span._summaries(x, observed)

    def encoder_pass():
        logits, _ = span._attention_logits(x, observed)
        parameters = span.encoder_parameters()
        torch.autograd.grad(logits, parameters, [torch.ones_like(z) for z in logits], allow_unused=True)

    span.train()
    return {
        **einet_steps(einet, x),
        "span full": full_step,
        "span coordinate": lambda: coordinate_step(span, x, einet_opt, encoder_opt),
        "span coordinate two passes": two_pass_coordinate_step,
        "span finetune uncached": lambda: finetune_step(span, x, einet_opt),
        "span finetune": lambda: finetune_step(span, x, einet_opt, cached_summaries),
        "span encoders": encoder_pass,
    }


def run_worker(size_name: str, model: str, batch_size: int, repeats: int, threads: int, seed: int) -> dict:
    import torch

    import spanlib  # noqa: F401  (imported before the RSS baseline is read)

    torch.set_num_threads(threads)
    import_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    einet, span, x = build(model_size(size_name), model, batch_size, seed)
    build_seconds = time.perf_counter() - start
    times = measure(einet_steps(einet, x) if span is None else span_steps(span, x), repeats)
    parameters = sum(p.numel() for p in (einet if span is None else span).parameters())
    return {
        "size": size_name,
        "model": model,
        "times": times,
        "macs": forward_macs(einet, span),
        "parameters": parameters,
        "build_seconds": build_seconds,
        "import_rss_mb": import_rss_mb,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "threads": torch.get_num_threads(),
    }


# ---------------------------------------------------------------------------- driver and table


def run_subprocess(size_name: str, model: str, args) -> dict:
    command = [sys.executable, __file__, "--worker", size_name, model, "--batch-size", str(args.batch_size),
               "--repeats", str(args.repeats), "--threads", str(args.threads), "--seed", str(args.seed)]
    # Spinning OpenMP threads lose their time slices when other processes share the cores. On a busy
    # 2-core machine that made small steps up to 30 times slower in wall time. Passive threads sleep.
    env = {**os.environ, "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise RuntimeError(f"benchmark worker for {size_name}/{model} failed with exit code "
                           f"{result.returncode}:\n{result.stderr[-4000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def schedule_ratio(times: dict, clock: str, cached: bool) -> float:
    """Return SPAN's training time over the Einsum network's for the paper's epochs, from step times.

    With `cached`, fine-tuning reuses the encoder summaries as `train_span` does. The one pass of
    the encoders over the training set that fills the cache is not counted.
    """
    finetune = times["span finetune" if cached else "span finetune uncached"][clock]
    em = times["einet em"][clock]
    span_total = SCHEDULE["warmup"] * em + SCHEDULE["coordinate"] * times["span coordinate"][clock] + SCHEDULE["finetune"] * finetune
    return span_total / (SCHEDULE["einet"] * em)


def print_table(results: list[dict], args) -> None:
    print(f"\nbatch {args.batch_size}, {args.threads} threads, median of {args.repeats} rounds after one warm-up "
          "round; ratios divide by the einet em step timed in the same process, on the same clock\n")
    imports = max(r["import_rss_mb"] for r in results)
    print(f"peak RSS includes about {imports:.0f} MB that importing torch and spanlib takes before any model exists\n")
    print("| size | model | step | wall s | CPU s | wall / em | CPU / em | peak RSS MB |")
    print("|---|---|---|---:|---:|---:|---:|---:|")
    for result in results:
        em = result["times"]["einet em"]
        for step, seconds in result["times"].items():
            print(f"| {result['size']} | {result['model']} | {step} | {seconds['wall']:.3f} | {seconds['cpu']:.3f} | "
                  f"{seconds['wall'] / em['wall']:.2f} | {seconds['cpu'] / em['cpu']:.2f} | {result['peak_rss_mb']:.0f} |")

    print("\nschedule ratio: SPAN (5 EM + 10 coordinate + 15 fine-tune epochs) / Einsum network (30 EM epochs)\n")
    print("| size | head | full step / em (wall, CPU) | schedule (wall, CPU) | schedule, uncached fine-tune (wall, CPU) |")
    print("|---|---|---:|---:|---:|")
    for result in results:
        if result["model"] == "einet":
            continue
        times = result["times"]
        full = [times["span full"][c] / times["einet em"][c] for c in ("wall", "cpu")]
        cached = [schedule_ratio(times, c, cached=True) for c in ("wall", "cpu")]
        uncached = [schedule_ratio(times, c, cached=False) for c in ("wall", "cpu")]
        print(f"| {result['size']} | {result['model']} | {full[0]:.2f}, {full[1]:.2f} | {cached[0]:.2f}, {cached[1]:.2f} | "
              f"{uncached[0]:.2f}, {uncached[1]:.2f} |")

    print("\nforward GFLOP per batch (2 per multiply-add, analytic); a training step costs about 3 times this\n")
    print("| size | model | parameters (M) | circuit | encoders | heads | reweighting | encoders + heads share |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for result in results:
        flops = {part: 2 * macs * args.batch_size / 1e9 for part, macs in result["macs"].items()}
        total = sum(flops.values())
        attention = flops.get("encoders", 0) + flops.get("heads", 0)
        print(f"| {result['size']} | {result['model']} | {result['parameters'] / 1e6:.1f} | {flops['circuit']:.2f} | "
              f"{flops.get('encoders', 0):.2f} | {flops.get('heads', 0):.2f} | {flops.get('reweighting', 0):.3f} | "
              f"{attention / total:.1%} |")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", choices=SIZE_NAMES, default=["quick", "paper"],
                        help="model sizes to measure (default: quick paper)")
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS),
                        help="einet and the SPAN heads to measure; einet is always added as the baseline")
    parser.add_argument("--batch-size", type=int, default=100, help="samples per training step (default: 100)")
    parser.add_argument("--repeats", type=int, default=5, help="timed steps per measurement (default: 5)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads in each worker (default: 2)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the region graph and the data (default: 0)")
    parser.add_argument("--json", metavar="PATH", help="also write the raw results to PATH as JSON")
    parser.add_argument("--worker", nargs=2, metavar=("SIZE", "MODEL"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.batch_size < 1 or args.repeats < 1 or args.threads < 1:
        parser.error("--batch-size, --repeats and --threads must be at least 1")

    if args.worker:
        size_name, model = args.worker
        print(json.dumps(run_worker(size_name, model, args.batch_size, args.repeats, args.threads, args.seed)))
        return

    models = ["einet"] + [m for m in args.models if m != "einet"]
    results = []
    for size_name in args.sizes:
        for model in models:
            print(f"measuring {size_name} / {model} ...", file=sys.stderr, flush=True)
            results.append(run_subprocess(size_name, model, args))
            cpu = ", ".join(f"{step} {t['cpu']:.3f}" for step, t in results[-1]["times"].items())
            print(f"  CPU seconds: {cpu}", file=sys.stderr, flush=True)
            # Written after every worker, so that a long run keeps what it measured if a later worker fails.
            if args.json:
                Path(args.json).write_text(json.dumps({"arguments": vars(args), "results": results}, indent=2))
    print_table(results, args)
    if any(not math.isfinite(t) for r in results for s in r["times"].values() for t in s.values()):
        raise SystemExit("a timing is not finite")


if __name__ == "__main__":
    main()
