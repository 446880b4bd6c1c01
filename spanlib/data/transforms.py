"""Shared image transforms: uint8 arrays to float tensors, channel matching, resizing, integer codes.

Every loader in `spanlib.data` produces raw ``uint8`` images shaped (N, C, H, W) and passes them
through `prepare_images`, so that all data sets are treated the same way:

1. scale to float32 in [0, 1] (divide by 255);
2. match channels: grayscale to RGB replicates the single channel 3 times; RGB to grayscale uses
   the ITU-R BT.601 luma weights (0.299, 0.587, 0.114);
3. resize with `torch.nn.functional.interpolate` (bilinear, ``antialias=True`` when shrinking,
   so that downsampling averages instead of aliasing), then clamp to [0, 1];
4. optionally round to integer codes 0..255 (``uint8``) for Categorical leaves.

Work is done in chunks so that full SVHN does not need several float copies in memory at once.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["to_nchw", "match_channels", "resize_images", "prepare_images", "to_integer_codes", "subsample_indices"]

LUMA = (0.299, 0.587, 0.114)
_CHUNK = 4096


def to_nchw(images: np.ndarray | torch.Tensor, channels_last: bool | None = None) -> torch.Tensor:
    """Turn (N, H, W), (N, H, W, C) or (N, C, H, W) arrays into an (N, C, H, W) tensor, dtype kept.

    With ``channels_last=None`` a 4-d array whose last axis has length 1 or 3 (and whose second axis
    does not) is read as channel-last, as the npz files and CIFAR-10 store them.
    """
    x = torch.from_numpy(np.require(images, requirements=["C", "W"])) if isinstance(images, np.ndarray) else images
    if x.ndim == 3:
        return x.unsqueeze(1)
    if x.ndim != 4:
        raise ValueError(f"expected images shaped (N, H, W) or (N, H, W, C) or (N, C, H, W), got {tuple(x.shape)}")
    if channels_last is None:
        channels_last = x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3)
    return x.permute(0, 3, 1, 2).contiguous() if channels_last else x


def match_channels(x: torch.Tensor, channels: int) -> torch.Tensor:
    """Bring float images (N, C, H, W) to ``channels`` (1 or 3): replicate gray, or take RGB luma."""
    c = x.shape[1]
    if c == channels:
        return x
    if c == 1 and channels == 3:
        return x.expand(-1, 3, -1, -1).contiguous()
    if c == 3 and channels == 1:
        weights = torch.tensor(LUMA, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        return (x * weights).sum(dim=1, keepdim=True)
    raise ValueError(f"cannot convert {c} channels to {channels}; only 1 <-> 3 is supported")


def _size_tuple(size: int | tuple[int, int]) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def resize_images(x: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of float images (N, C, H, W); antialiased when shrinking; clamped to [0, 1]."""
    size = _size_tuple(size)
    if tuple(x.shape[-2:]) == size:
        return x
    shrink = size[0] < x.shape[-2] or size[1] < x.shape[-1]
    out = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=shrink)
    return out.clamp_(0.0, 1.0)


def to_integer_codes(x: torch.Tensor) -> torch.Tensor:
    """Float images in [0, 1] to ``uint8`` codes 0..255 (rounded); call ``.long()`` per batch for indexing."""
    return torch.round(x.clamp(0.0, 1.0) * 255.0).to(torch.uint8)


def prepare_images(
    images: np.ndarray | torch.Tensor,
    image_size: int | tuple[int, int] | None = None,
    channels: int | None = None,
    integer_codes: bool = False,
) -> torch.Tensor:
    """Raw images (uint8 0..255, or float in [0, 1]) to (N, C, H, W) float32 in [0, 1] or uint8 codes.

    ``image_size=None`` and ``channels=None`` keep the native size and channel count.
    """
    x = to_nchw(images)
    n, c, h, w = x.shape
    out_c = c if channels is None else channels
    out_hw = (h, w) if image_size is None else _size_tuple(image_size)
    out = torch.empty((n, out_c, *out_hw), dtype=torch.uint8 if integer_codes else torch.float32)
    scale = 255.0 if x.dtype == torch.uint8 else 1.0
    for start in range(0, n, _CHUNK):
        chunk = x[start : start + _CHUNK].to(torch.float32) / scale
        if out_c < c:  # reduce channels before resizing, replicate after: both are linear, this is cheaper
            chunk = match_channels(chunk, out_c)
        chunk = match_channels(resize_images(chunk, out_hw), out_c)
        out[start : start + _CHUNK] = to_integer_codes(chunk) if integer_codes else chunk.clamp_(0.0, 1.0)
    return out


def subsample_indices(n_total: int, n: int | None, seed: int) -> np.ndarray:
    """Indices of a seeded random subset of size ``n`` (in random order); all indices in order if ``n`` is None.

    Asking for more items than exist returns all of them (shuffled), so a profile's count is an upper bound.
    """
    if n is None:
        return np.arange(n_total)
    if n < 0:
        raise ValueError(f"subset size must be non-negative, got {n}")
    rng = np.random.default_rng(seed)
    return rng.permutation(n_total)[: min(n, n_total)]
