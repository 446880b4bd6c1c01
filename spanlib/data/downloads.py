"""Downloads that never leave a broken file behind, and the error raised when a data set is missing.

`fetch_file` streams a URL into a temporary file next to the destination, checks the byte count
against ``Content-Length`` and the MD5 checksum where one is known, and only then renames the
temporary file to its final name (an atomic ``os.replace``). On any failure the temporary file is
deleted and a `DatasetUnavailableError` says which data set is missing, which URL was tried, and
where to put the file by hand. The cache folder is `default_root()`: ``$SPANLIB_DATA`` if set,
otherwise ``~/.cache/spanlib``.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import tempfile
import urllib.request
from pathlib import Path
from typing import Sequence

from tqdm.auto import tqdm

__all__ = ["DatasetUnavailableError", "default_root", "fetch_file", "file_md5", "atomic_write"]

USER_AGENT = "spanlib-data-loader"
CHUNK = 1 << 20


class DatasetUnavailableError(RuntimeError):
    """A data set could not be found locally and could not be downloaded."""


def default_root() -> Path:
    """The data cache: ``$SPANLIB_DATA`` if set, otherwise ``~/.cache/spanlib``."""
    env = os.environ.get("SPANLIB_DATA")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "spanlib"


def file_md5(path: str | os.PathLike) -> str:
    """Hex MD5 digest of a file, read in 1 MiB chunks."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


class atomic_write:
    """Context manager giving a temporary path next to ``dest``; renamed to ``dest`` only on success.

    >>> with atomic_write(path) as tmp:
    ...     np.savez_compressed(tmp, images=x)
    """

    def __init__(self, dest: str | os.PathLike):
        self.dest = Path(dest)

    def __enter__(self) -> Path:
        self.dest.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=self.dest.parent, prefix=f".{self.dest.name}.", suffix=".part")
        os.close(fd)
        self.tmp = Path(name)
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            os.replace(self.tmp, self.dest)
        else:
            self.tmp.unlink(missing_ok=True)


def _manual_hint(urls: Sequence[str], dest: Path, note: str) -> str:
    return (
        f"To install it by hand, download {urls[0]} on a machine with network access and save it as "
        f"{dest.name!r} in the directory {str(dest.parent)!r} (full path: {dest}).{note} "
        "To use another cache directory, set SPANLIB_DATA, pass root=... to load_dataset, or pass --data-root to "
        "python -m spanlib reproduce. A local .npz copy (arrays 'images' and 'labels') loads with "
        "load_dataset(..., file=path)."
    )


def fetch_file(
    urls: str | Sequence[str],
    dest: str | os.PathLike,
    *,
    dataset: str,
    md5: str | None = None,
    timeout: float = 60.0,
    note: str = "",
) -> Path:
    """Make sure ``dest`` exists and is intact, downloading it from the first URL that works.

    An existing file is kept when its MD5 matches (or when no MD5 is known). A download goes to a
    temporary file in the same directory, is checked (length, MD5) and then renamed to ``dest``.
    Raises `DatasetUnavailableError` naming ``dataset``, every URL tried with its error, and the
    directory and file name to place by hand (``note`` is added to that hint).
    """
    urls = [urls] if isinstance(urls, str) else list(urls)
    dest = Path(dest)
    problem = f"{dest.name!r} is not in {str(dest.parent)!r}"
    if dest.is_file():
        if md5 is None or file_md5(dest) == md5:
            return dest
        problem = f"{dest.name!r} in {str(dest.parent)!r} has the wrong MD5 checksum (expected {md5}; left as it is)"
    errors = []
    for url in urls:
        try:
            _download(url, dest, md5=md5, timeout=timeout)
            return dest
        except (OSError, ValueError, http.client.HTTPException) as exc:  # URLError and timeouts are OSErrors
            errors.append(f"  {url}: {type(exc).__name__}: {exc}")
    tried = "\n".join(errors)
    raise DatasetUnavailableError(
        f"Data set {dataset!r} is not available: {problem} and the download failed.\n"
        f"Tried:\n{tried}\n{_manual_hint(urls, dest, note and ' ' + note)}"
    )


def _download(url: str, dest: Path, *, md5: str | None, timeout: float) -> None:
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    with atomic_write(dest) as tmp:
        with urllib.request.urlopen(request, timeout=timeout) as response, open(tmp, "wb") as out:
            expected = response.headers.get("Content-Length")
            total = int(expected) if expected is not None else None
            received = 0
            with tqdm(total=total, unit="B", unit_scale=True, desc=dest.name, disable=(total or 0) < 8 * CHUNK) as bar:
                while chunk := response.read(CHUNK):
                    out.write(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
        if expected is not None and received != int(expected):
            raise ValueError(f"truncated download: got {received} of {expected} bytes")
        if md5 is not None and (digest := file_md5(tmp)) != md5:
            raise ValueError(f"MD5 mismatch: got {digest}, expected {md5} (truncated or corrupted download)")
