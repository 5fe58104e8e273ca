"""Real data sets: MovieLens-100K (matrix completion) and FashionMNIST (the nonlinear experiment).

Neither data set is shipped with the project. Each loader looks, in order, at a path the user
configures, at the pipeline's ``resources/`` folder (and, for FashionMNIST, Debian's
``dataset-fashion-mnist`` package), then downloads with a checksum check; without network it fails
at once with a :class:`DataUnavailableError` naming where to put the file.
"""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from pathlib import Path


class DataUnavailableError(RuntimeError):
    """The data set is neither where the user said, nor in resources/, nor downloadable."""


class DataFormatError(ValueError):
    """A data file is malformed; the message names the file and, where it applies, the line."""


OFFLINE_VARIABLE = "CDLN_OFFLINE"  # set (not "0") to forbid every download; the tests set it


def offline() -> bool:
    """Whether downloads are forbidden (``CDLN_OFFLINE`` set): every fetch then fails at once, saying so."""
    return os.environ.get(OFFLINE_VARIABLE, "") not in ("", "0")


def md5sum(path: Path, chunk: int = 1 << 20) -> str:
    """Hex MD5 of a file (the checksum GroupLens and Zalando publish)."""
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def download(url: str, dest: Path, md5: str, timeout: float = 30.0) -> Path:
    """Download ``url`` to ``dest`` atomically, verifying its MD5; raises ``OSError`` on failure.

    A file whose checksum differs is deleted and reported, never kept.
    """
    from cdln.outputs import atomic_write

    if offline():
        raise OSError(f"downloads are off ({OFFLINE_VARIABLE}={os.environ[OFFLINE_VARIABLE]})")

    def fetch(tmp: Path) -> None:
        with tmp.open("wb") as handle, urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310
            for block in iter(lambda: response.read(1 << 20), b""):
                handle.write(block)
        got = md5sum(tmp)
        if got != md5:
            raise OSError(f"checksum mismatch for {url}: MD5 {got}, expected {md5}; the download was discarded")

    return atomic_write(dest, fetch)
