"""Convolutional energy-based model trained by contrastive divergence with short-run Langevin dynamics.

The recipe follows Du and Mordatch, "Implicit Generation and Modeling with Energy-Based Models" (NeurIPS 2019):
a residual energy network with spectral normalisation and Swish activations, negative samples from Langevin
chains that restart from a replay buffer, and an L2 penalty on the energies. The density is p(x) ~ exp(-E(x)).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import spectral_norm

from .common import BaselineModel, check_conv_widths, check_mask, check_profile, evaluation_mode


@dataclass
class EBMConfig:
    """Architecture, sampler and training settings of `EBM`."""

    channels: int = 1
    image_size: int = 16
    widths: tuple[int, ...] = (32, 64)  # output channels of each residual block, which halves the resolution
    spectral_norm: bool = True
    langevin_steps: int = 20
    step_size: float = 10.0  # multiplies the energy gradient in each Langevin update
    noise: float = 0.005  # standard deviation of the Gaussian noise added in each Langevin update
    langevin_grad_clip: float | None = 0.01  # bound on each entry of the energy gradient, or None for no clamp
    buffer_size: int = 10000
    replay_fraction: float = 0.95  # share of chains that restart from the replay buffer instead of uniform noise
    alpha: float = 1.0  # weight of the energy penalty alpha * (E(x+)^2 + E(x-)^2)
    epochs: int = 10
    batch_size: int = 64
    lr: float = 3e-4
    max_grad_norm: float | None = 1.0  # bound on the global norm of the parameter gradients, or None for no clipping
    score_batch_size: int = 512

    def __post_init__(self) -> None:
        self.widths = check_conv_widths(self.widths, self.image_size)
        if not 0.0 <= self.replay_fraction <= 1.0:
            raise ValueError(f"replay_fraction must lie in [0, 1], got {self.replay_fraction}")
        if self.langevin_steps < 0 or self.buffer_size < 1:
            raise ValueError(
                f"langevin_steps must be >= 0 and buffer_size >= 1, got {self.langevin_steps} and {self.buffer_size}"
            )
        if self.batch_size > self.buffer_size:
            raise ValueError(
                f"batch_size {self.batch_size} exceeds buffer_size {self.buffer_size}; each batch draws distinct "
                "replay-buffer entries, so raise buffer_size or lower batch_size"
            )

    @classmethod
    def for_profile(cls, name: str, **overrides) -> EBMConfig:
        """Return the config of a training profile: "quick", "colab" or "paper", with `overrides` applied.

        "quick" trained on the quick run profile's 2000 16x16 grayscale images in 35 to 44 s (three seeds, a
        two-core CPU shared with other jobs). With 4 epochs instead of 8, one of the three seeds gave an energy
        that ranked scikit-learn's digits above the MNIST test digits (AUROC 0.32), while 8 epochs gave at least
        0.99 on them for all three. "colab" targets about ten minutes on a free Colab GPU for a 32x32 RGB
        SVHN subset, an untimed estimate. "paper" takes the unconditional CIFAR-10 settings of Du and Mordatch's
        released code (github.com/openai/ebm_code_release, README command and train.py defaults): 60 Langevin
        steps of step size 10 with gradient entries clipped to 0.01, noise 0.005, a 50000-image buffer with 95%
        replay, alpha = 1, Adam with lr 3e-4 and beta1 = 0, and batch size 128. Its residual network is smaller
        than their ResNet32Large.
        """
        profiles = {
            "quick": cls(widths=(16, 32), langevin_steps=10, buffer_size=4000, epochs=8),
            "colab": cls(3, 32, widths=(64, 128, 128), langevin_steps=40, batch_size=128, epochs=10),
            # NOTE: the epoch count is a guess, because Du and Mordatch report the sampler settings but no epoch count.
            "paper": cls(3, 32, widths=(128, 128, 256, 256), langevin_steps=60, buffer_size=50000, batch_size=128, epochs=30),
        }
        return dataclasses.replace(profiles[check_profile(name)], **overrides)


def langevin_dynamics(
    energy: Callable[[Tensor], Tensor],
    x_init: Tensor,
    steps: int,
    step_size: float,
    noise: float,
    mask: Tensor | None = None,
    *,
    clamp: bool = True,
    grad_clip: float | None = None,
) -> Tensor:
    """Run `steps` updates x <- x - step_size * dE/dx + noise * N(0, I) and return the detached result.

    `energy` maps a batch to per-sample energies of shape (batch,). With noise = sqrt(2 * step_size) the chain
    is the unadjusted Langevin algorithm for exp(-E). Only entries where `mask` is True change. `clamp` keeps
    the state in [0, 1] and `grad_clip` clamps each gradient entry to [-grad_clip, grad_clip].
    """
    x = x_init.detach().clone()
    for _ in range(steps):
        with torch.enable_grad():
            x.requires_grad_(True)
            (grad,) = torch.autograd.grad(energy(x).sum(), x)

        with torch.no_grad():
            if grad_clip is not None:
                grad = grad.clamp(-grad_clip, grad_clip)
            proposal = x - step_size * grad + noise * torch.randn_like(x)
            if clamp:
                proposal = proposal.clamp(0.0, 1.0)
            x = proposal if mask is None else torch.where(mask, proposal, x)
    return x.detach()


class ResidualBlock(nn.Module):
    """Two 3x3 convolutions with Swish activations and a skip connection, then 2x2 average pooling."""

    def __init__(self, in_channels: int, out_channels: int, normalise: Callable[[nn.Module], nn.Module]) -> None:
        super().__init__()
        self.conv1 = normalise(nn.Conv2d(in_channels, out_channels, 3, padding=1))
        self.conv2 = normalise(nn.Conv2d(out_channels, out_channels, 3, padding=1))
        self.skip = normalise(nn.Conv2d(in_channels, out_channels, 1)) if in_channels != out_channels else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1(F.silu(x))
        h = self.conv2(F.silu(h))
        return F.avg_pool2d(self.skip(x) + h, 2)


class EBM(BaselineModel):
    """Energy-based model over images with a convolutional energy E(x); `score(x) = -E(x)`.

    Images are (batch, channels, image_size, image_size) in [0, 1].
    """

    config_class = EBMConfig

    def __init__(self, config: EBMConfig) -> None:
        super().__init__()
        self.config = config
        normalise = spectral_norm if config.spectral_norm else (lambda layer: layer)

        self.stem = normalise(nn.Conv2d(config.channels, config.widths[0], 3, padding=1))
        in_widths = (config.widths[0], *config.widths[:-1])
        self.blocks = nn.Sequential(*[ResidualBlock(i, o, normalise) for i, o in zip(in_widths, config.widths)])
        self.head = normalise(nn.Linear(config.widths[-1], 1))

        # The replay buffer is training state only. It is not saved, so a loaded model starts a fresh buffer.
        self.replay_buffer: Tensor | None = None

    def configure_optimizer(self, lr: float) -> torch.optim.Optimizer:
        # Adam without momentum (beta1 = 0), as in Du and Mordatch's released code.
        return torch.optim.Adam(self.parameters(), lr=lr, betas=(0.0, 0.999))

    def energy(self, x: Tensor) -> Tensor:
        """Return E(x) of shape (batch,) for images (batch, channels, height, width). Lower energy is more likely."""
        h = self.blocks(self.stem(x))
        h = F.silu(h).sum(dim=(2, 3))
        return self.head(h).squeeze(1)

    def langevin(
        self,
        x_init: Tensor,
        steps: int | None = None,
        step_size: float | None = None,
        noise: float | None = None,
        mask: Tensor | None = None,
    ) -> Tensor:
        """Run Langevin dynamics on E from `x_init`, changing only entries where `mask` is True (missing).

        Unset arguments come from the config. The state is clamped to [0, 1] after each step.
        """
        x = self.prepare(x_init, name="x_init")
        if mask is not None:
            mask = check_mask(mask, x)
        steps = self.config.langevin_steps if steps is None else steps
        step_size = self.config.step_size if step_size is None else step_size
        noise = self.config.noise if noise is None else noise

        # Caching computes each spectrally normalised weight once per chain instead of once per step.
        with parametrize.cached():
            return langevin_dynamics(self.energy, x, steps, step_size, noise, mask, grad_clip=self.config.langevin_grad_clip)

    def score(self, x: Tensor) -> Tensor:
        """Return the negative energy -E(x) of shape (batch,); higher means more in-distribution."""
        x = self.prepare(x)
        return self.map_batches(lambda batch: -self.energy(batch), x)

    def inpaint(self, x: Tensor, mask: Tensor, steps: int | None = None) -> Tensor:
        """Fill the entries where `mask` is True by Langevin dynamics started from 0.5 grey.

        Observed entries of the result equal those of `x` exactly.
        """
        x = self.prepare(x)
        mask = check_mask(mask, x)
        x_init = torch.where(mask, torch.full_like(x, 0.5), x)
        with evaluation_mode(self):
            return self.langevin(x_init, steps=steps, mask=mask)

    def sample(self, n: int, steps: int | None = None) -> Tensor:
        """Draw `n` images by Langevin dynamics started from a constant 0.5 grey image."""
        if n < 1:
            raise ValueError(f"n must be a positive number of samples, got {n}")
        size = self.config.image_size
        x_init = torch.full((n, self.config.channels, size, size), 0.5, device=self.device)
        with evaluation_mode(self):
            return self.langevin(x_init, steps=steps)

    def initial_chains(self, n: int) -> tuple[Tensor, Tensor]:
        """Return `n` chain starts and their replay-buffer indices.

        A `replay_fraction` share of the starts come from the buffer, the rest from uniform noise. The
        indices are distinct, so writing the chains back keeps every one of them, on any number of threads.
        """
        config = self.config
        if n > config.buffer_size:
            raise ValueError(
                f"{n} chains need distinct buffer entries but buffer_size is {config.buffer_size}; raise buffer_size"
            )
        shape = (config.channels, config.image_size, config.image_size)
        if self.replay_buffer is None or self.replay_buffer.device != self.device:
            self.replay_buffer = torch.rand(config.buffer_size, *shape, device=self.device)

        indices = torch.randperm(config.buffer_size, device=self.device)[:n]
        chains = self.replay_buffer[indices]
        fresh = torch.rand(n, device=self.device) >= config.replay_fraction
        chains[fresh] = torch.rand_like(chains[fresh])
        return chains, indices

    def training_loss(self, x: Tensor) -> tuple[Tensor, dict[str, float]]:
        """Return the contrastive divergence loss E(x+) - E(x-) + alpha * (E(x+)^2 + E(x-)^2), batch mean."""
        chains, indices = self.initial_chains(len(x))
        negatives = self.langevin(chains)
        self.replay_buffer[indices] = negatives

        # One forward pass gives both energies the same spectrally normalised weights, because in training mode
        # each uncached access to a normalised weight runs a power iteration that changes it slightly.
        energy_positive, energy_negative = self.energy(torch.cat([x, negatives])).split([len(x), len(negatives)])
        contrast = energy_positive.mean() - energy_negative.mean()
        penalty = (energy_positive.pow(2) + energy_negative.pow(2)).mean()
        loss = contrast + self.config.alpha * penalty

        metrics = {"energy_positive": energy_positive.mean().item(), "energy_negative": energy_negative.mean().item()}
        return loss, metrics

    def extra_repr(self) -> str:
        config = self.config
        return (
            f"langevin_steps={config.langevin_steps}, step_size={config.step_size}, "
            f"noise={config.noise}, alpha={config.alpha}"
        )
