"""Reading checkpoints safely: tensors and plain data only, with clear errors for foreign files."""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import torch


def read_checkpoint(path: str | Path, expected_format: str, map_location=None) -> dict:
    """Load a file written by a spanlib `save` and check its format tag.

    Uses `torch.load(weights_only=True)`, so no code in the file runs. Raises FileNotFoundError for
    a missing file, IsADirectoryError for a directory and ValueError for a corrupt file or one
    written by another model class.
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"checkpoint {path} is a directory; pass the path of a file written by save")
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    # A file that is not a torch archive falls back to the legacy pickle reader, which fails with
    # whatever error the first bytes provoke (a text file raises KeyError, for example).
    except (RuntimeError, pickle.UnpicklingError, zipfile.BadZipFile, EOFError, OSError, KeyError, IndexError,
            ValueError, TypeError, AttributeError) as error:
        # torch 2.14's message for a rejected pickle suggests weights_only=False, which would run code
        # from the file, so only the error type is shown here and the full error stays chained.
        raise ValueError(
            f"checkpoint {path} is corrupt or not a torch file: torch.load(weights_only=True) raised "
            f"{type(error).__name__}; save the model again"
        ) from error
    if not isinstance(payload, dict) or "format" not in payload:
        raise ValueError(f"{path} is not a spanlib checkpoint (no format tag); expected {expected_format!r}")
    if payload["format"] != expected_format:
        raise ValueError(f"{path} holds {payload['format']!r}, not {expected_format!r}; load it with the matching class")
    return payload
