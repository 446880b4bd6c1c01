"""k-means clusters of images, as the paper uses for its samples and inpainting models.

The paper trains its sampling and inpainting models on one of 100 k-means clusters of SVHN.
`kmeans_clusters` runs scikit-learn's ``KMeans`` on the flattened pixels and renumbers the
clusters by size, largest first (ties by the smallest member index), so that "cluster 0" means
the same thing whatever order k-means found the centres in. `cluster_subset` picks one cluster.

"The paper" here is the SPAN paper (Yu, Dhami and Kersting, arXiv:2109.06587).
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["kmeans_clusters", "cluster_subset"]


def kmeans_clusters(
    images: torch.Tensor | np.ndarray, num_clusters: int, seed: int = 0, n_init: int = 3, max_iter: int = 100
) -> np.ndarray:
    """Cluster labels (int64, 0 = largest cluster) of images (N, ...) under k-means on flattened pixels.

    ``n_init`` (k-means++ restarts) and ``max_iter`` are explicit so the run time stays predictable on
    full SVHN (73,257 x 3072 pixels); the best of the ``n_init`` runs is kept.
    """
    from sklearn.cluster import KMeans

    x = images.detach().cpu().numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
    x = x.reshape(len(x), -1).astype(np.float32, copy=False)
    if not 1 <= num_clusters <= len(x):
        raise ValueError(f"num_clusters must be between 1 and the number of images ({len(x)}), got {num_clusters}")
    km = KMeans(n_clusters=num_clusters, n_init=n_init, max_iter=max_iter, random_state=seed)
    raw = km.fit_predict(x)
    sizes = np.bincount(raw, minlength=num_clusters)
    first = np.full(num_clusters, len(x))
    np.minimum.at(first, raw, np.arange(len(x)))
    order = np.lexsort((first, -sizes))  # largest first, then by first member
    rank = np.empty(num_clusters, dtype=np.int64)
    rank[order] = np.arange(num_clusters)
    return rank[raw]


def cluster_subset(images: torch.Tensor | np.ndarray, labels: np.ndarray | torch.Tensor, index: int):
    """The images whose cluster label equals ``index`` (same type as ``images``)."""
    labels = labels.cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    if len(labels) != len(images):
        raise ValueError(f"{len(images)} images but {len(labels)} cluster labels")
    if not (labels == index).any():
        raise ValueError(f"cluster {index} is empty (labels range {labels.min()}..{labels.max()})")
    mask = labels == index
    return images[torch.from_numpy(mask)] if isinstance(images, torch.Tensor) else images[mask]
