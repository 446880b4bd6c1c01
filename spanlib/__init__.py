"""spanlib: Einsum networks and Sum-Product-Attention Networks in PyTorch."""

__version__ = "0.1.0"

from .data import (
    DATASETS,
    DatasetUnavailableError,
    cluster_subset,
    kmeans_clusters,
    load_dataset,
    load_npz_images,
    load_profile_data,
)
from .einet import EinsumNetwork
from .evaluation import (
    NonFiniteScoreError,
    inpainting_mask,
    inpainting_mse,
    mse_summary,
    ood_metrics,
    ood_table,
    score_dataset,
)
from .fit import fit_einet
from .graph import RegionGraph, poon_domingos, random_binary_trees
from .imaging import ImageCircuit, build_einet, build_span, images_to_variables, variables_to_images
from .leaves import Bernoulli, Binomial, Categorical, Normal
from .profiles import PROFILE_NAMES, Profile, profile
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
    "DATASETS",
    "DatasetUnavailableError",
    "ImageCircuit",
    "NonFiniteScoreError",
    "PROFILE_NAMES",
    "Profile",
    "build_einet",
    "build_span",
    "cluster_subset",
    "fit_einet",
    "images_to_variables",
    "inpainting_mask",
    "inpainting_mse",
    "kmeans_clusters",
    "load_dataset",
    "load_npz_images",
    "load_profile_data",
    "mse_summary",
    "ood_metrics",
    "ood_table",
    "profile",
    "score_dataset",
    "variables_to_images",
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
