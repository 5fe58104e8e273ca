"""Atomic file output: every file the package writes appears complete or not at all.

Each helper writes to a temporary sibling (same directory, so the final ``os.replace`` is an atomic
rename on one file system) and renames it into place; on any failure, interrupts included, the
temporary file is removed and an existing file at ``path`` is left as it was. What appears has the
permissions the umask gives (0644 files and 0755 folders under umask 022), not the private ones of the
temporary file. An existing folder is replaced only if it holds what the package wrote
(:func:`check_output_dir`), so a user's files are never deleted.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from torch import Tensor

    from cdln.problems import Problem
    from cdln.spec import ProblemSpec


class OutputError(ValueError):
    """An output path that cannot be written without losing something; the message says what to do."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def public_mode(path: Path, directory: bool = False) -> None:
    """Give ``path`` the mode a plain ``open``/``mkdir`` would (0666 / 0777 less the umask)."""
    os.chmod(path, (0o777 if directory else 0o666) & ~_umask())


def atomic_write(path: str | os.PathLike[str], write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a temporary sibling of ``path``, then rename it to ``path``."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{path} is a folder; name a file to write")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        public_mode(tmp)
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


# What marks a folder as the package's own output: a run record or a job's manifest.
OWN_MARKERS = ("record.json", "job.json")


def check_output_dir(path: str | os.PathLike[str], force: bool = False, what: str = "--out") -> Path:
    """Raise :class:`OutputError` unless ``path`` can become an output folder without losing anything: it
    does not exist, or is an empty folder, or holds a cdln run record or job (``record.json``/``job.json``), or
    ``force``. A file there is refused too. Call it before the work whose result goes there."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputError(f"{what} {path} is a file, not a folder; name a new folder for the output")
    if path.is_dir() and not force and any(path.iterdir()) and not any((path / m).is_file() for m in OWN_MARKERS):
        raise OutputError(
            f"{what} {path} exists and holds files that are not a cdln run record; name a new folder, "
            "or pass --force to replace it"
        )
    return path


def _walk_public(root: Path) -> None:
    public_mode(root, directory=True)
    for folder, dirs, files in os.walk(root):
        for name in dirs:
            public_mode(Path(folder) / name, directory=True)
        for name in files:
            public_mode(Path(folder) / name)


@contextmanager
def atomic_directory(path: str | os.PathLike[str], force: bool = False) -> Iterator[Path]:
    """Yield an empty staging directory; on success it replaces ``path``; on failure it is removed and
    ``path`` is left as it was. An existing ``path`` is replaced only when :func:`check_output_dir` allows it
    (checked before anything is staged), e.g. an earlier run record or the empty folder Snakemake creates for
    a ``directory()`` output."""
    path = check_output_dir(path, force)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial"))
    try:
        yield staging
        _walk_public(staging)
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


# ---- problem files: the problem's spec and tensors, torch.save'd (cdln.problems holds the classes)


def save_problem(problem: Problem, path: str | os.PathLike[str]) -> None:
    """Write the problem (its spec and its tensors, e.g. target (d_out, d_in)) to ``path`` atomically."""
    from dataclasses import asdict

    payload: dict[str, Any] = {"spec": asdict(problem.spec)}
    payload["tensors"] = {k: v.cpu() for k, v in problem.tensors().items()}
    torch_save(payload, path)


def _read_problem_file(path: str | os.PathLike[str], mmap: bool) -> tuple[ProblemSpec, dict[str, Tensor]]:
    import torch

    from cdln.spec import ProblemSpec

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"problem file {path} does not exist (make it with `cdln make-problem`)")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
        spec = ProblemSpec(**payload["spec"])
        spec.validate()
        tensors = dict(payload["tensors"])
    except Exception as error:  # unpickling, truncation, a foreign file: all say the same to the user
        reason = " ".join(str(error).split())[:160] or type(error).__name__
        raise ValueError(
            f"problem file {path} is not a readable cdln problem ({reason}); remake it with `cdln make-problem`"
        ) from None
    return spec, tensors


def load_problem_spec(path: str | os.PathLike[str]) -> ProblemSpec:
    """The spec of a problem file, without reading its tensors (they are memory-mapped, not loaded)."""
    return _read_problem_file(path, mmap=True)[0]


def load_problem(path: str | os.PathLike[str]) -> Problem:
    """Read a problem written by :func:`save_problem` (tensors on the CPU, in their stored dtype); a file
    that is not one raises ``ValueError`` naming it."""
    spec, tensors = _read_problem_file(path, mmap=False)
    try:
        from cdln.problems import PROBLEM_CLASSES

        return PROBLEM_CLASSES[spec.task](spec, **tensors)
    except (TypeError, ValueError) as error:
        raise ValueError(f"problem file {path} is not a readable cdln problem ({error})") from None
