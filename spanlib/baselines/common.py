"""Input checks, batching, training loop and checkpoints shared by the baseline models."""

from __future__ import annotations

import dataclasses
import math
import pickle
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ..profiles import PROFILE_NAMES


def check_profile(name: str) -> str:
    """Raise ValueError unless `name` is one of the run profiles of `spanlib.profiles`."""
    if name not in PROFILE_NAMES:
        raise ValueError(f"unknown profile {name!r}; use one of {', '.join(PROFILE_NAMES)}")
    return name


def check_conv_widths(widths, image_size: int) -> tuple[int, ...]:
    """Check `widths` against the stride-2 convolutions it configures and return it as a tuple.

    Each width is the output channel count of one convolution that halves the image, so
    image_size must be divisible by 2**len(widths).
    """
    widths = tuple(widths)
    if not widths or min(widths) < 1:
        raise ValueError(f"widths must be a non-empty tuple of positive channel counts, got {widths}")
    if image_size % 2 ** len(widths) != 0:
        raise ValueError(
            f"image_size={image_size} must be divisible by 2**len(widths) = {2 ** len(widths)}; use fewer widths"
        )
    return widths


def check_images(x: Tensor, *, channels: int, image_size: int, name: str = "x") -> None:
    """Raise TypeError or ValueError unless `x` is a non-empty image batch that matches the model.

    Expected: a floating tensor of shape (batch, channels, image_size, image_size), finite, in [0, 1].
    """
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(
            f"{name} must be a floating tensor in [0, 1], got dtype {x.dtype}; convert uint8 images with x.float() / 255"
        )
    if x.ndim != 4:
        hint = "; add the channel axis with x.unsqueeze(1)" if x.ndim == 3 else ""
        raise ValueError(f"{name} must have shape (batch, channels, height, width), got {tuple(x.shape)}{hint}")
    if x.shape[0] == 0:
        raise ValueError(f"{name} is an empty batch of shape {tuple(x.shape)}; pass at least one image")
    if x.shape[1] != channels:
        raise ValueError(
            f"{name} has {x.shape[1]} channels but the model expects {channels}; "
            f"convert the images or build the model with channels={x.shape[1]}"
        )
    if x.shape[2] != image_size or x.shape[3] != image_size:
        raise ValueError(
            f"{name} has height x width {x.shape[2]}x{x.shape[3]} but the model expects {image_size}x{image_size}; "
            f"resize with torch.nn.functional.interpolate or build the model with image_size={x.shape[2]}"
        )
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or infinite values; clean or drop those images")
    low, high = x.min().item(), x.max().item()
    if low < 0.0 or high > 1.0:
        raise ValueError(
            f"{name} has values in [{low:.4g}, {high:.4g}] but must lie in [0, 1]; divide 8-bit images by 255"
        )


def check_mask(mask: Tensor, x: Tensor) -> Tensor:
    """Return `mask` expanded to the shape of `x`, or raise if it is not a boolean mask that broadcasts.

    Accepted shapes: (batch, channels, height, width), (batch, 1, height, width) and (height, width).
    True marks a missing entry.
    """
    if not isinstance(mask, Tensor):
        raise TypeError(f"mask must be a torch.Tensor, got {type(mask).__name__}")
    if mask.dtype != torch.bool:
        raise TypeError(
            f"mask must be a bool tensor (True = missing), got dtype {mask.dtype}; convert with mask.bool()"
        )
    batch, channels, height, width = x.shape
    allowed = {(batch, channels, height, width), (batch, 1, height, width), (height, width)}
    if tuple(mask.shape) not in allowed:
        raise ValueError(
            f"mask has shape {tuple(mask.shape)} but must be {(batch, channels, height, width)}, "
            f"{(batch, 1, height, width)} or {(height, width)} for images of shape {tuple(x.shape)}"
        )
    return mask.to(x.device).expand_as(x)


def iterate_batches(data: Tensor | DataLoader, batch_size: int, generator: torch.Generator) -> Iterator[Tensor]:
    """Yield image batches from a DataLoader, or shuffled batches from a tensor of images.

    A DataLoader may yield image tensors or (images, labels) pairs. Labels are dropped.
    """
    if isinstance(data, DataLoader):
        for batch in data:
            yield batch[0] if isinstance(batch, (list, tuple)) else batch
        return

    order = torch.randperm(len(data), generator=generator)
    for start in range(0, len(data), batch_size):
        yield data[order[start : start + batch_size]]


def count_batches(data: Tensor | DataLoader, batch_size: int) -> int | None:
    """Return how many batches `iterate_batches` yields for one pass over `data`, or None if unknown."""
    if not isinstance(data, DataLoader):
        return math.ceil(len(data) / batch_size)
    try:
        return len(data)
    except TypeError:
        return None  # an IterableDataset without __len__


@contextmanager
def evaluation_mode(module: nn.Module) -> Iterator[None]:
    """Put `module` in eval mode without gradients, then restore its previous mode."""
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        module.train(was_training)


class BaselineModel(nn.Module):
    """Base class with input checks, a training loop, batched scoring and checkpoints.

    Subclasses set `self.config` (a dataclass with `channels`, `image_size`, `epochs`, `batch_size`, `lr`,
    `max_grad_norm` and `score_batch_size`) and define `training_loss(x) -> (loss, metrics)`, where
    `metrics` maps names to floats that `fit` averages per epoch.
    """

    config_class: type

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def prepare(self, x: Tensor, name: str = "x") -> Tensor:
        """Check an image batch against the config and move it to the module's device and dtype."""
        check_images(x, channels=self.config.channels, image_size=self.config.image_size, name=name)
        parameter = next(self.parameters())
        return x.to(device=parameter.device, dtype=parameter.dtype)

    def map_batches(self, function: Callable[[Tensor], Tensor], x: Tensor, batch_size: int | None = None) -> Tensor:
        """Apply `function` to slices of `x` in eval mode without gradients and concatenate the results."""
        batch_size = batch_size or self.config.score_batch_size
        with evaluation_mode(self):
            return torch.cat([function(x[start : start + batch_size]) for start in range(0, len(x), batch_size)])

    def configure_optimizer(self, lr: float) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=lr)

    def fit(
        self,
        data: Tensor | DataLoader,
        epochs: int | None = None,
        *,
        batch_size: int | None = None,
        lr: float | None = None,
        seed: int = 0,
        progress: bool = True,
    ) -> dict[str, list[float]]:
        """Train with Adam and return the per-epoch means of the loss and of the model's other metrics.

        `data` is an image tensor (batch, channels, height, width) in [0, 1] or a DataLoader of such batches.
        Unset arguments come from the config. `seed` seeds torch's global generator, which also drives the
        model's own noise. The module is left in eval mode.
        """
        epochs = self.config.epochs if epochs is None else epochs
        batch_size = self.config.batch_size if batch_size is None else batch_size
        lr = self.config.lr if lr is None else lr
        if isinstance(data, DataLoader):
            if batch_size != self.config.batch_size:
                raise ValueError(
                    f"batch_size={batch_size} has no effect on a DataLoader; set the batch size on the DataLoader instead"
                )
        elif isinstance(data, Tensor):
            check_images(data, channels=self.config.channels, image_size=self.config.image_size, name="data")
        else:
            raise TypeError(f"data must be an image tensor or a DataLoader, got {type(data).__name__}")
        if epochs < 1 or batch_size < 1 or lr <= 0:
            raise ValueError(f"epochs, batch_size and lr must be positive, got {epochs}, {batch_size} and {lr}")

        torch.manual_seed(seed)
        generator = torch.Generator().manual_seed(seed)
        optimizer = self.configure_optimizer(lr)
        history: dict[str, list[float]] = {}
        self.train()

        epoch_bar = tqdm(range(epochs), desc=f"{type(self).__name__} epochs", disable=not progress)
        for _ in epoch_bar:
            totals: dict[str, float] = {}
            batch_count = 0
            batches = iterate_batches(data, batch_size, generator)
            expected_count = count_batches(data, batch_size)
            for x in tqdm(batches, total=expected_count, desc="batches", leave=False, disable=not progress):
                x = self.prepare(x, name="training batch")
                loss, metrics = self.training_loss(x)

                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if self.config.max_grad_norm is not None:
                    nn.utils.clip_grad_norm_(self.parameters(), self.config.max_grad_norm)
                optimizer.step()

                for key, value in {"loss": loss.item(), **metrics}.items():
                    totals[key] = totals.get(key, 0.0) + value
                batch_count += 1

            if batch_count == 0:
                raise ValueError("data yielded no batches; pass a DataLoader over at least one image")
            for key, value in totals.items():
                history.setdefault(key, []).append(value / batch_count)
            epoch_bar.set_postfix(loss=f"{history['loss'][-1]:.4g}")

        self.eval()
        return history

    def save(self, path: str | Path) -> None:
        """Write the model type, config and state_dict to `path` with torch.save."""
        checkpoint = {
            "model_type": type(self).__name__,
            "config": dataclasses.asdict(self.config),
            "state_dict": self.state_dict(),
        }
        torch.save(checkpoint, path)

    @classmethod
    def load(cls, path: str | Path, map_location: str | torch.device | None = None) -> BaselineModel:
        """Rebuild a model saved by `save`; raise ValueError if the file is corrupt or contains another model type."""
        try:
            checkpoint = torch.load(path, map_location=map_location, weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile) as error:
            raise ValueError(
                f"cannot read {path} as a {cls.__name__} checkpoint ({error}); save one with {cls.__name__}.save"
            ) from error

        if not isinstance(checkpoint, dict) or not {"model_type", "config", "state_dict"} <= checkpoint.keys():
            raise ValueError(f"{path} is not a spanlib baseline checkpoint; save one with {cls.__name__}.save")
        model_type = checkpoint["model_type"]
        if model_type != cls.__name__:
            raise ValueError(
                f"{path} contains a checkpoint of model type {model_type}; load it with {model_type}.load instead of "
                f"{cls.__name__}.load"
            )

        fields = {key: (tuple(value) if isinstance(value, list) else value) for key, value in checkpoint["config"].items()}
        try:
            config = cls.config_class(**fields)
            model = cls(config)
            model.load_state_dict(checkpoint["state_dict"])
        except (TypeError, RuntimeError, ValueError) as error:
            raise ValueError(
                f"{path} does not match {cls.__name__} ({error}); it was probably written by another spanlib version"
            ) from error

        # Follow torch.load's placement: map_location if given, else the device the tensors were saved from.
        tensors = [value for value in checkpoint["state_dict"].values() if isinstance(value, Tensor)]
        if tensors:
            model.to(tensors[0].device)
        model.eval()
        return model
