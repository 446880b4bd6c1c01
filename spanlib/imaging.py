"""Circuits on images: layout conversion, builders from a run profile, and a common model interface.

Circuits take x (batch, num_vars, num_dims) with variable `row * width + col` = pixel (row, col)
and the channels as dims; images elsewhere in spanlib are (batch, channels, height, width) in
[0, 1]. `ImageCircuit` wraps an `EinsumNetwork` or `SPAN` with the interface the evaluation code
shares with the baselines: `score(images)`, `inpaint(images, mask)` and `sample(n)`.
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import nn

from .einet import EinsumNetwork
from .graph import random_binary_trees
from .leaves import Normal
from .span import SPAN, PatchEmbedding


def images_to_variables(images: torch.Tensor) -> torch.Tensor:
    """Map (batch, channels, height, width) to (batch, height * width, channels)."""
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"images must be a torch.Tensor, got {type(images).__name__}; convert with torch.as_tensor")
    if images.dim() != 4:
        raise ValueError(
            f"images must have shape (batch, channels, height, width), got {tuple(images.shape)}; "
            "add a batch dim with images.unsqueeze(0) for a single image"
        )
    return rearrange(images, "b c h w -> b (h w) c")


def variables_to_images(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Map (batch, height * width, channels) or (batch, height * width) back to (batch, channels, height, width)."""
    if x.dim() == 2:
        x = x.unsqueeze(-1)
    return rearrange(x, "b (h w) c -> b c h w", h=height, w=width)


def pixel_mask(mask: torch.Tensor, batch: int, height: int, width: int) -> torch.Tensor:
    """Return a (batch, height * width) variable mask from an image mask, True = missing.

    Accepts (height, width), (batch, height, width) or (batch, channels, height, width); a pixel
    is missing when any of its channels is.
    """
    if mask.dtype != torch.bool:
        raise TypeError(f"mask must be a bool tensor (True = missing), got {mask.dtype}")
    if mask.dim() == 4:
        mask = mask.any(1)
    if mask.dim() == 2:
        mask = mask.unsqueeze(0).expand(batch, -1, -1)
    if mask.shape != (batch, height, width):
        raise ValueError(f"mask must cover {height} x {width} pixels for {batch} images, got shape {tuple(mask.shape)}")
    return mask.reshape(batch, height * width)


class ImageCircuit(nn.Module):
    """An Einsum network or SPAN model seen as a model of images.

    Args:
        model: an `EinsumNetwork` or `SPAN` whose variables are the pixels.
        channels, height, width: the image shape.
    """

    def __init__(self, model: nn.Module, channels: int, height: int, width: int):
        super().__init__()
        einet = model.einet if isinstance(model, SPAN) else model
        if einet.num_vars != height * width or einet.num_dims != channels:
            raise ValueError(
                f"the circuit has {einet.num_vars} variables with {einet.num_dims} dims; "
                f"{channels} x {height} x {width} images need {height * width} with {channels}"
            )
        self.model, self.channels, self.height, self.width = model, channels, height, width

    def score(self, images: torch.Tensor) -> torch.Tensor:
        """Return log p(x) for an Einsum network or -E(x) for SPAN, shape (batch,)."""
        return self.model(images_to_variables(images))

    def inpaint(self, images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Fill the missing pixels (True in `mask`) by approximate MPE; observed pixels are unchanged."""
        variables = pixel_mask(mask.to(images.device), len(images), self.height, self.width)
        filled = self.model.mpe(images_to_variables(images), variables)
        return variables_to_images(filled, self.height, self.width)

    def sample(self, n: int, seed: int | None = None) -> torch.Tensor:
        """Draw n images (batch, channels, height, width) from the Einsum network."""
        return variables_to_images(self.model.sample(n, seed=seed), self.height, self.width)


def build_einet(profile, seed: int | None = None) -> EinsumNetwork:
    """Build the profile's Einsum network: random binary trees over the pixels with Normal leaves."""
    d, e = profile.data, profile.einet
    if e.leaf != "normal":
        raise ValueError(f"profiles build Normal leaves, got leaf={e.leaf!r}")
    graph = random_binary_trees(d.num_vars, e.depth, e.replicas, seed=profile.seed if seed is None else seed)
    return EinsumNetwork(graph, Normal(e.min_var, e.max_var), K=e.K, num_dims=d.channels)


def build_span(profile, einet: EinsumNetwork, seed: int | None = None) -> SPAN:
    """Wrap `einet` into the profile's SPAN model with a ViT patch embedding.

    The encoders and heads are initialised from `seed` (default: the profile's seed), so two builds
    are equal, like two `build_einet` calls. Torch's global random state is left as it was.
    """
    d, c = profile.data, profile.encoder
    embedding = PatchEmbedding(d.channels, d.image_size, d.image_size, c.patch_size)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(profile.seed if seed is None else seed)
        return SPAN(einet, embedding, depth=c.depth, heads=c.heads, d_model=c.d_model, d_ff=c.d_ff,
                    dropout=c.dropout, head=c.head, rank=c.rank)
