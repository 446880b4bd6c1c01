"""spanlib: Einsum networks and Sum-Product-Attention Networks in PyTorch."""

from .einet import EinsumNetwork
from .graph import RegionGraph, poon_domingos, random_binary_trees
from .leaves import Bernoulli, Binomial, Categorical, Normal

__all__ = [
    "Bernoulli",
    "Binomial",
    "Categorical",
    "EinsumNetwork",
    "Normal",
    "RegionGraph",
    "poon_domingos",
    "random_binary_trees",
]
