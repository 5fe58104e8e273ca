"""Atomic file output: every file the package writes appears complete or not at all.

Each helper writes to a temporary sibling (same directory, so the final ``os.replace`` is an atomic
rename on one file system) and renames it into place; on any failure, interrupts included, the
temporary file is removed and an existing file at ``path`` is left as it was.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd


def atomic_write(path: str | os.PathLike[str], write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a temporary sibling of ``path``, then rename it to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_text(path: str | os.PathLike[str], text: str) -> Path:
    """``text`` to ``path``, atomically."""
    return atomic_write(path, lambda tmp: tmp.write_text(text))


def write_json(path: str | os.PathLike[str], value: Any) -> Path:
    """``value`` as indented, key-sorted JSON (numpy scalars, paths and torch types allowed), atomically."""
    return write_text(path, json.dumps(value, indent=2, sort_keys=True, default=json_default) + "\n")


def write_csv(path: str | os.PathLike[str], frame: pd.DataFrame, float_format: str = "%.10g") -> Path:
    """``frame`` as CSV without its index, atomically."""
    return write_text(path, frame.to_csv(index=False, float_format=float_format))


def torch_save(payload: Any, path: str | os.PathLike[str]) -> Path:
    """``torch.save(payload)`` to ``path``, atomically."""
    import torch

    return atomic_write(path, lambda tmp: torch.save(payload, tmp))


@contextmanager
def atomic_directory(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield an empty staging directory; on success it replaces ``path`` (an existing directory there
    is removed first, e.g. the empty one Snakemake creates for a ``directory()`` output); on failure
    it is removed and ``path`` is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial"))
    try:
        yield staging
        if path.exists():
            shutil.rmtree(path)
        os.replace(staging, path)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


MATRIX_SUFFIXES = (".npy", ".csv", ".txt")


def read_matrix(path: str | os.PathLike[str], what: str = "matrix") -> np.ndarray:
    """A (rows, columns) float64 array from a ``.npy`` file or a comma-separated ``.csv``/``.txt`` file.

    Empty fields and ``nan`` read as NaN. Raises ``ValueError`` naming the file (and ``what`` it was for)."""
    path = Path(path)
    if path.suffix.lower() not in MATRIX_SUFFIXES:
        raise ValueError(f"{what} file {path}: want one of {list(MATRIX_SUFFIXES)}; got {path.suffix or 'no suffix'!r}")
    if not path.is_file():
        raise ValueError(f"{what} file {path} does not exist")
    try:
        if path.suffix.lower() == ".npy":
            array = np.load(path, allow_pickle=False)
        else:
            array = np.genfromtxt(path, delimiter=",", dtype=np.float64, ndmin=2)
        array = np.asarray(array, dtype=np.float64)
    except (ValueError, OSError) as error:
        raise ValueError(f"{what} file {path} is not a readable matrix: {error}") from None
    if array.ndim != 2 or 0 in array.shape:
        raise ValueError(f"{what} file {path} must hold a non-empty 2-D matrix; got shape {array.shape}")
    return array


def json_default(value: Any) -> Any:
    """JSON encoding of the non-JSON values run records hold (numpy scalars, paths, torch types)."""
    import torch

    if isinstance(value, (np.integer, np.floating, np.bool_)):
        return value.item()
    if isinstance(value, (Path, torch.device, torch.dtype)):
        return str(value)
    raise TypeError(f"cannot store {type(value).__name__} in a JSON file")
