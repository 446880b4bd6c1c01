"""Reproduction runs of the paper's tables and figures; see `Experiment` and `python -m spanlib reproduce`.

"The paper" here is the SPAN paper (Yu, Dhami and Kersting, arXiv:2109.06587).
"""

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
