"""SPAN: embeddings, attention heads, the model, three-phase training and the partition function."""

from .embeddings import BernoulliEmbedding, LinearEmbedding, PatchEmbedding
from .heads import DenseHead, LowRankHead
from .model import SPAN
from .partition import LogPartition, log_partition_function
from .training import History, train_span

__all__ = [
    "BernoulliEmbedding",
    "DenseHead",
    "History",
    "LinearEmbedding",
    "LogPartition",
    "LowRankHead",
    "PatchEmbedding",
    "SPAN",
    "log_partition_function",
    "train_span",
]
