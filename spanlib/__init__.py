"""spanlib: Einsum networks and Sum-Product-Attention Networks in PyTorch."""

from .einet import EinsumNetwork
from .graph import RegionGraph, poon_domingos, random_binary_trees
from .leaves import Bernoulli, Binomial, Categorical, Normal
from .span import (
    SPAN,
    BernoulliEmbedding,
    DenseHead,
    History,
    LinearEmbedding,
    LogPartition,
    LowRankHead,
    PatchEmbedding,
    log_partition_function,
    train_span,
)

__all__ = [
    "SPAN",
    "Bernoulli",
    "BernoulliEmbedding",
    "DenseHead",
    "History",
    "LinearEmbedding",
    "LogPartition",
    "LowRankHead",
    "PatchEmbedding",
    "log_partition_function",
    "train_span",
    "Binomial",
    "Categorical",
    "EinsumNetwork",
    "Normal",
    "RegionGraph",
    "poon_domingos",
    "random_binary_trees",
]
