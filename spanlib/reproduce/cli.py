"""`python -m spanlib reproduce`: train or load every model and write the paper's tables and figures.

Exit status: 0 on success, 2 for invalid arguments, a data set that is missing and cannot be
downloaded, or a checkpoint that is corrupt or belongs to another configuration. Those messages
name the data set or file and what to do next.

"The paper" here is the SPAN paper (Yu, Dhami and Kersting, arXiv:2109.06587).
"""

from __future__ import annotations

import argparse
import sys
import time

from ..data import DatasetUnavailableError, default_root
from ..profiles import PROFILE_NAMES
from .experiment import CheckpointMismatchError, Experiment, default_results_dir, with_overrides

TASKS = ("ood", "inpainting", "weights")


def positive_int(text: str) -> int:
    """Parse a command-line count that must be at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid integer {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m spanlib", description="Reproduce the SPAN paper's results.")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("reproduce", help="train or load the models and write tables (CSV, JSON) and figures (PNG)")
    run.add_argument("task", nargs="?", choices=(*TASKS, "all"), default="all",
                     help="ood: Table 1 and Figure 2; inpainting: Table 2 and Figure 4; weights: Figure 1 (default: all)")
    run.add_argument("--profile", default=None, choices=PROFILE_NAMES,
                     help="run profile (default: $SPANLIB_PROFILE or quick)")
    run.add_argument("--out", default=None, help=f"results folder (default: $SPANLIB_RESULTS or {default_results_dir()})")
    run.add_argument("--data-root", default=None,
                     help=f"download cache of the data sets (default: $SPANLIB_DATA or {default_root()})")
    run.add_argument("--n-train", type=positive_int, default=None,
                     help="use this many training images instead of the profile's")
    run.add_argument("--n-test", type=positive_int, default=None, help="use at most this many images of each test set")
    run.add_argument("--max-epochs", type=positive_int, default=None,
                     help="cap every epoch count at this number: SPAN's phases, the Einsum network's EM epochs "
                     "and the training epochs of the EBM, MAF and VAE baselines")
    run.add_argument("--quiet", action="store_true", help="hide progress bars")
    return parser


def main(argv: list[str] | None = None) -> int:
    import matplotlib

    matplotlib.use("Agg")
    from ..plots import save_inpainting_figures, save_ood_figures, save_weight_figure
    from ..profiles import profile as named_profile

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        selected = named_profile(args.profile)
    except ValueError as error:  # only an invalid $SPANLIB_PROFILE reaches this, because --profile has fixed choices
        parser.error(f"$SPANLIB_PROFILE: {error}")
    profile = with_overrides(selected, args.n_train, args.n_test, args.max_epochs)
    try:
        experiment = Experiment(profile, out=args.out, progress=not args.quiet, baseline_max_epochs=args.max_epochs,
                                data_root=args.data_root)
        tasks = TASKS if args.task == "all" else (args.task,)
        for task in tasks:
            start = time.perf_counter()
            if task == "ood":
                table = experiment.ood_table()
                save_ood_figures(experiment, experiment.ood_scores())
            elif task == "inpainting":
                table, reconstructions = experiment.inpainting()
                save_inpainting_figures(experiment, reconstructions, experiment.samples())
            else:
                table = experiment.weight_entropy()
                save_weight_figure(experiment)
            print(f"\n{task} ({time.perf_counter() - start:.0f} s), written to {experiment.folder}:")
            print(table.to_string(index=False))
    except (CheckpointMismatchError, DatasetUnavailableError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0
