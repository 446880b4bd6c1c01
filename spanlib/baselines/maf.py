"""Masked autoregressive flow over flattened image pixels.

Following Papamakarios, Pavlakou and Murray, "Masked Autoregressive Flow for Density Estimation" (NeurIPS 2017),
8-bit pixels are dequantised to v = (255 x + u) / 256 with u in [0, 1), squeezed to lambda + (1 - 2 lambda) v and
mapped to the real line with the logit. A `zuko.flows.MAF` models the result.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
import zuko
from torch import Tensor

from .common import BaselineModel, check_profile, evaluation_mode


@dataclass
class MAFConfig:
    """Architecture and training settings of `MAF`."""

    channels: int = 1
    image_size: int = 16
    transforms: int = 5  # number of MADE layers
    hidden_features: tuple[int, ...] = (256, 256)  # hidden layer widths of each MADE
    logit_lambda: float = 1e-6  # pixels are squeezed into [lambda, 1 - lambda] before the logit
    epochs: int = 20
    batch_size: int = 100
    lr: float = 1e-4
    weight_decay: float = 1e-6
    max_grad_norm: float | None = None
    score_batch_size: int = 1000

    def __post_init__(self) -> None:
        self.hidden_features = tuple(self.hidden_features)
        if not 0.0 < self.logit_lambda < 0.5:
            raise ValueError(f"logit_lambda must lie in (0, 0.5), got {self.logit_lambda}; use 1e-6 or 0.05")
        if self.transforms < 1 or not self.hidden_features or min(self.hidden_features) < 1:
            raise ValueError(
                f"transforms and hidden_features must be positive, got {self.transforms} and {self.hidden_features}"
            )

    @classmethod
    def for_profile(cls, name: str, **overrides) -> MAFConfig:
        """Return the config of a training profile: "quick", "colab" or "paper", with `overrides` applied.

        "paper" uses CIFAR-10 settings of the MAF authors' released code (github.com/gpapamak/maf, files
        run_experiments.py, experiments.py and datasets/cifar10.py): 5 MADEs with two hidden layers of 1024 ReLU
        units, one of the sizes they ran (1 or 2 hidden layers of 1024 or 2048 units, 5 or 10 MADEs), lambda =
        0.05, Adam with lr 1e-4, weight decay 1e-6 and batch size 100. It leaves out their horizontal-flip
        augmentation. "quick" uses their MNIST lambda of 1e-6 on 16x16 grayscale images and trained on the quick
        run profile's 2000 images in 26 s, measured once on a two-core CPU shared with other jobs.
        """
        profiles = {
            "quick": cls(channels=1, image_size=16, hidden_features=(256, 256), epochs=20),
            "colab": cls(channels=3, image_size=32, hidden_features=(1024,), logit_lambda=0.05, epochs=20),
            # NOTE: the original runs stop early on a validation set with patience 30; this fixed epoch count is a guess.
            "paper": cls(channels=3, image_size=32, hidden_features=(1024, 1024), logit_lambda=0.05, epochs=100),
        }
        return dataclasses.replace(profiles[check_profile(name)], **overrides)


def flow_log_density(flow: zuko.flows.Flow, y: Tensor) -> Tensor:
    """Return log q(y) of shape (batch,) under an unconditional zuko flow, for points y of shape (batch, features)."""
    if y.ndim != 2:
        raise ValueError(f"y must have shape (batch, features), got {tuple(y.shape)}; flatten it with y.flatten(1)")
    return flow().log_prob(y)


class MAF(BaselineModel):
    """Masked autoregressive flow on images of shape (batch, channels, image_size, image_size) in [0, 1].

    `score(x)` is the log-likelihood of the 8-bit image evaluated at the centre of each pixel's
    dequantisation bin, so it is deterministic.
    """

    config_class = MAFConfig

    def __init__(self, config: MAFConfig) -> None:
        super().__init__()
        self.config = config
        # NOTE: zuko's MAF has no batch-normalisation layers between the MADEs, unlike the original MAF.
        self.flow = zuko.flows.MAF(self.features, transforms=config.transforms, hidden_features=config.hidden_features)

    @property
    def features(self) -> int:
        return self.config.channels * self.config.image_size**2

    def configure_optimizer(self, lr: float) -> torch.optim.Optimizer:
        # config.weight_decay is the coefficient c of the penalty (c / 2) * |w|^2 that the MAF authors add to the
        # negative log-likelihood in nats per image. The training loss here is in bits per dimension, i.e. that
        # likelihood divided by D log 2, so the penalty is divided by the same factor to keep its relative weight.
        weight_decay = self.config.weight_decay / (self.features * math.log(2))
        return torch.optim.Adam(self.parameters(), lr=lr, weight_decay=weight_decay)

    def to_logit(self, v: Tensor) -> tuple[Tensor, Tensor]:
        """Map dequantised pixels v in [0, 1] to y = logit(lambda + (1 - 2 lambda) v).

        Returns y with the shape of v and log |dy/dv| summed per image, of shape (batch,).
        """
        lam = self.config.logit_lambda
        p = lam + (1 - 2 * lam) * v
        y = torch.log(p) - torch.log1p(-p)
        log_det = (math.log(1 - 2 * lam) - torch.log(p) - torch.log1p(-p)).flatten(1).sum(1)
        return y, log_det

    def from_logit(self, y: Tensor) -> Tensor:
        """Invert `to_logit`, clamping the pixels to [0, 1]."""
        lam = self.config.logit_lambda
        return ((torch.sigmoid(y) - lam) / (1 - 2 * lam)).clamp(0.0, 1.0)

    def log_prob_dequantised(self, x: Tensor, offset: Tensor | float = 0.5) -> Tensor:
        """Return the log-density of the dequantised images (255 x + offset) on the [0, 256) intensity scale.

        This is log q(y) + log |dy/dv| - D log 256 with v = (255 x + offset) / 256, which is the log-probability
        of the 8-bit image up to the variation of the density within each pixel's bin. `x` must already be
        checked and on the module's device. Returns a tensor of shape (batch,).
        """
        v = (255 * x + offset) / 256
        y, log_det = self.to_logit(v)
        return flow_log_density(self.flow, y.flatten(1)) + log_det - self.features * math.log(256)

    def log_prob_pixels(self, x: Tensor, offset: Tensor | float = 0.5) -> Tensor:
        """Return the log-likelihood in nats of 8-bit images x in [0, 1], of shape (batch,).

        `offset` is the dequantisation noise u in [0, 1). The default 0.5 evaluates each pixel at its bin centre.
        """
        x = self.prepare(x)
        return self.log_prob_dequantised(x, offset)

    def bits_per_dim(self, x: Tensor) -> Tensor:
        """Return -score(x) / (D log 2) of shape (batch,), for D = channels * height * width.

        Lower bits per dimension mean more likely images.
        """
        return -self.score(x) / (self.features * math.log(2))

    def score(self, x: Tensor) -> Tensor:
        """Return the bin-centre log-likelihood in nats of shape (batch,). Higher means more in-distribution.

        It is -D log 2 times `bits_per_dim(x)`, so both rank images, and give AUROCs, identically.
        """
        x = self.prepare(x)
        return self.map_batches(self.log_prob_dequantised, x)

    def sample(self, n: int) -> Tensor:
        """Draw `n` images of shape (n, channels, image_size, image_size) in [0, 1]."""
        if n < 1:
            raise ValueError(f"n must be a positive number of samples, got {n}")
        with evaluation_mode(self):
            y = self.flow().sample((n,))
        size = self.config.image_size
        return self.from_logit(y).view(n, self.config.channels, size, size)

    def training_loss(self, x: Tensor) -> tuple[Tensor, dict[str, float]]:
        """Return the mean bits per dimension under uniform dequantisation noise."""
        log_prob = self.log_prob_dequantised(x, torch.rand_like(x))
        loss = -log_prob.mean() / (self.features * math.log(2))
        return loss, {}

    def extra_repr(self) -> str:
        return f"features={self.features}, logit_lambda={self.config.logit_lambda}"
