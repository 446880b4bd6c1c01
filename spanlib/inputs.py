"""Input checks shared by the circuits: shapes, dtypes, devices, masks, NaN and leaf support."""

from __future__ import annotations

import torch


def check_mask(mask: torch.Tensor | None, batch: int, num_vars: int, device: torch.device, name: str) -> torch.Tensor | None:
    """Return a bool mask (batch, num_vars) from (num_vars,) or (batch, num_vars); None stays None."""
    if mask is None:
        return None
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"{name} must be a bool tensor, got {type(mask).__name__}")
    if mask.dtype != torch.bool:
        raise TypeError(f"{name} must have dtype torch.bool (True = missing), got {mask.dtype}; use {name}.bool()")
    if mask.device != device:
        raise ValueError(f"{name} is on {mask.device} but the network is on {device}; move it with {name}.to({str(device)!r})")
    if mask.shape == (num_vars,):
        return mask.unsqueeze(0).expand(batch, num_vars)
    if mask.shape == (batch, num_vars):
        return mask
    raise ValueError(f"{name} must have shape ({num_vars},) or ({batch}, {num_vars}), got {tuple(mask.shape)}")


def check_input(model, x: torch.Tensor, missing: torch.Tensor | None, name: str = "x"):
    """Validate x for `model` (an EinsumNetwork) and return (x, observed).

    x comes back as (batch, num_vars, num_dims) in the model's dtype; observed is a bool
    (batch, num_vars) tensor, or None when nothing is missing. Raises TypeError or ValueError with
    the offending value and the fix.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.device != model.device:
        raise ValueError(f"{name} is on {x.device} but the network is on {model.device}; use {name}.to({str(model.device)!r})")
    if x.dim() == 2 and model.num_dims == 1:
        x = x.unsqueeze(-1)
    if x.dim() != 3:
        raise ValueError(
            f"{name} must have shape (batch, {model.num_vars}, {model.num_dims})"
            + (f" or (batch, {model.num_vars})" if model.num_dims == 1 else "")
            + f", got {tuple(x.shape)}"
        )
    batch, num_vars, num_dims = x.shape
    if batch == 0:
        raise ValueError(f"{name} is an empty batch (shape {tuple(x.shape)}); pass at least one sample")
    expected_shape = f"(batch, {model.num_vars}, {model.num_dims})"
    if num_vars != model.num_vars:
        raise ValueError(
            f"{name} has {num_vars} variables but the network has {model.num_vars} (shape {tuple(x.shape)}); "
            f"pass {name} with shape {expected_shape}"
        )
    if num_dims != model.num_dims:
        raise ValueError(
            f"{name} has {num_dims} dims per variable but the network has num_dims={model.num_dims}; "
            f"pass {name} with shape {expected_shape}"
        )

    family = model.leaf_family
    if x.dtype.is_complex:
        raise TypeError(f"{name} has complex dtype {x.dtype}; pass real values")
    if x.dtype.is_floating_point:
        if x.dtype != model.dtype and not family.discrete:
            raise TypeError(
                f"{name} has dtype {x.dtype} but the network's parameters are {model.dtype}; "
                f"use {name}.to({model.dtype}) or convert the network"
            )
    elif not family.discrete:
        raise TypeError(
            f"{family} leaves need floating-point input, got {x.dtype}; convert with {name}.float() "
            "(and divide pixel codes by 255 for [0, 1] images)"
        )
    x = x.to(model.dtype)

    mask_name = "mask" if name == "evidence" else "marginalize"
    missing = check_mask(missing, batch, num_vars, x.device, mask_name)
    observed = None if missing is None else ~missing
    nan = _observed_only(torch.isnan(x), observed)
    if nan.any():
        raise ValueError(
            f"{name} has {int(nan.sum())} NaN values in observed entries (first at {_entry_name(nan)}); "
            f"mark them as missing with {mask_name} instead"
        )
    outside = _observed_only(family.outside_support(x), observed)
    if outside.any():
        first = tuple(torch.nonzero(outside)[0].tolist())
        raise ValueError(
            f"{name} has {int(outside.sum())} observed values that {type(family).__name__} leaves do not accept "
            f"(they take {family.support()}); the first is {x[first].item()} at {_entry_name(outside)}. "
            f"{family.support_fix()}. Entries marked as missing with {mask_name} are not checked"
        )
    return x, observed


def _observed_only(flags: torch.Tensor, observed: torch.Tensor | None) -> torch.Tensor:
    """Clear the flags (batch, num_vars, num_dims) of unobserved variables. None observes every variable."""
    return flags if observed is None else flags & observed.unsqueeze(-1)


def _entry_name(flags: torch.Tensor) -> str:
    """Name the first True entry of a (batch, num_vars, num_dims) tensor, e.g. "sample 2, variable 3"."""
    sample, variable, dim = torch.nonzero(flags)[0].tolist()
    where = f"sample {sample}, variable {variable}"
    return where if flags.shape[-1] == 1 else f"{where}, dim {dim}"
