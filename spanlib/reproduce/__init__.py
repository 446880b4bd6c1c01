"""Reproduction runs of the paper's tables and figures; see `Experiment` and `python -m spanlib reproduce`."""

from .experiment import CheckpointMismatchError, Experiment, default_results_dir, weight_entropy, with_overrides
from .paper import MODEL_LABELS, PAPER_ROLE, PAPER_TABLE1, PAPER_TABLE2

__all__ = [
    "CheckpointMismatchError",
    "Experiment",
    "MODEL_LABELS",
    "PAPER_ROLE",
    "PAPER_TABLE1",
    "PAPER_TABLE2",
    "default_results_dir",
    "weight_entropy",
    "with_overrides",
]
