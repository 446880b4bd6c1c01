"""Semeion Handwritten Digit data set (UCI id 178): parser for ``semeion.data`` and an npz cache.

The official file has one record per line: 256 pixel values (a 16x16 image, row-major, each
``0.0000`` or ``1.0000``) followed by a 10-way one-hot label, 266 numbers separated by spaces.
Copies that use commas as separators are accepted too. There are 1593 records (about 80 writers),
sorted by class. `parse_semeion` returns the pixels as ``uint8`` 0/255 shaped (N, 16, 16) and the
labels as the one-hot's argmax, the layout that `spanlib.data.load_npz_images` reads.

`load_semeion_raw` looks for ``<root>/semeion/semeion.npz`` (the parsed cache), else parses
``<root>/semeion/semeion.data`` (downloading it from UCI with an MD5 check if absent) and writes the cache.
An unreadable cache is rebuilt from ``semeion.data``. A ``semeion.data`` that does not parse (a
truncated or foreign file) raises `DatasetUnavailableError` and is left in place for inspection.
"""

from __future__ import annotations

import os
import re
import warnings
import zipfile
from pathlib import Path

import numpy as np

from .downloads import DatasetUnavailableError, atomic_write, fetch_file

__all__ = ["SEMEION_URL", "SEMEION_MD5", "SEMEION_RECORDS", "parse_semeion", "load_semeion_raw"]

SEMEION_URL = "https://archive.ics.uci.edu/ml/machine-learning-databases/semeion/semeion.data"
SEMEION_MD5 = "cb545d371d2ce14ec121470795a77432"  # of the official file, as torchvision's SEMEION class checks it
SEMEION_RECORDS = 1593
_SEPARATORS = re.compile(r"[,\s]+")


def parse_semeion(source: str | os.PathLike, expected_records: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Parse a ``semeion.data`` file (path) into images (N, 16, 16) uint8 0/255 and labels (N,) int64.

    Raises ValueError with the line number for a record that does not have 256 binary pixels and
    exactly one hot label entry, or when ``expected_records`` is given and the count differs
    (a truncated file).
    """
    images, labels = [], []
    with open(source, encoding="ascii") as fh:
        for lineno, line in enumerate(fh, start=1):
            fields = [f for f in _SEPARATORS.split(line.strip()) if f]
            if not fields:
                continue
            if len(fields) != 266:
                raise ValueError(
                    f"{source}: line {lineno} has {len(fields)} values, expected 266 (256 pixels + 10 label bits)"
                )
            values = np.asarray(fields, dtype=np.float64)
            pixels, onehot = values[:256], values[256:]
            if not np.isin(pixels, (0.0, 1.0)).all():
                raise ValueError(f"{source}: line {lineno} has pixel values other than 0 and 1")
            if not (np.isin(onehot, (0.0, 1.0)).all() and onehot.sum() == 1):
                raise ValueError(f"{source}: line {lineno} does not end in a one-hot label of length 10")
            images.append(pixels.reshape(16, 16))
            labels.append(int(np.argmax(onehot)))
    if expected_records is not None and len(images) != expected_records:
        raise ValueError(f"{source}: found {len(images)} records, expected {expected_records} (truncated file?)")
    if not images:
        raise ValueError(f"{source}: no records")
    return (np.stack(images) * 255).astype(np.uint8), np.asarray(labels, dtype=np.int64)


def _read_cache(cache: Path) -> tuple[np.ndarray, np.ndarray] | None:
    """Return the arrays of the parsed cache, or None (with a warning) when it cannot be read."""
    try:
        with np.load(cache) as z:
            images, labels = z["images"], z["labels"]
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as exc:
        warnings.warn(f"Semeion cache {cache} is unreadable ({exc}); rebuilding it from semeion.data", stacklevel=3)
        return None
    if images.shape != (SEMEION_RECORDS, 16, 16) or labels.shape != (SEMEION_RECORDS,):
        warnings.warn(
            f"Semeion cache {cache} holds images {images.shape} and labels {labels.shape}, expected "
            f"({SEMEION_RECORDS}, 16, 16) and ({SEMEION_RECORDS},); rebuilding it from semeion.data",
            stacklevel=3,
        )
        return None
    return images, labels


def load_semeion_raw(root: Path) -> tuple[np.ndarray, np.ndarray]:
    """All Semeion records as (images uint8 (N, 16, 16) 0/255, labels int64), cached under ``root/semeion``.

    Raises:
        DatasetUnavailableError: ``semeion.data`` is missing and cannot be downloaded, or it does not
            parse. The message names the file, the URL and what to do next.
    """
    folder = Path(root) / "semeion"
    cache = folder / "semeion.npz"
    if cache.is_file() and (cached := _read_cache(cache)) is not None:
        return cached
    data_file = folder / "semeion.data"
    downloaded = not data_file.is_file()
    # A hand-placed copy may use commas (a different MD5); it is checked by the parser instead.
    fetch_file(SEMEION_URL, data_file, dataset="semeion", md5=SEMEION_MD5 if downloaded else None)
    try:
        images, labels = parse_semeion(data_file, expected_records=SEMEION_RECORDS)
    except ValueError as exc:  # UnicodeDecodeError (a binary file) is a ValueError too
        raise DatasetUnavailableError(
            f"Data set 'semeion': {data_file} is not a valid copy of the UCI file ({exc}). Delete it to download "
            f"it again from {SEMEION_URL}, or replace it with an intact copy: {SEMEION_RECORDS} lines of 256 "
            "pixels (0 or 1) and 10 one-hot label digits, separated by spaces or commas."
        ) from exc
    with atomic_write(cache) as tmp:
        with open(tmp, "wb") as fh:  # a file object keeps numpy from appending ".npz" to the temp name
            np.savez_compressed(fh, images=images, labels=labels)
    return images, labels
