"""Reading and writing cdln's input files: problem files (a problem's spec and tensors) and a user's matrices.

Everything written goes through :mod:`cdln.outputs` (atomic, and never over a file cdln did not write).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cdln.outputs import torch_save

if TYPE_CHECKING:
    from torch import Tensor

    from cdln.problems import Problem
    from cdln.spec import ProblemSpec


MATRIX_SUFFIXES = (".npy", ".csv", ".txt")


def read_matrix(path: str | os.PathLike[str], what: str = "matrix") -> np.ndarray:
    """A (rows, columns) float64 array from a ``.npy`` file or a comma-separated ``.csv``/``.txt`` file of numbers
    (no header row). Empty fields and ``nan`` read as NaN. Raises ``ValueError`` naming the file (and ``what`` it
    was for), and for a CSV the line and column of the first field that is not a number."""
    path = Path(path)
    if path.suffix.lower() not in MATRIX_SUFFIXES:
        raise ValueError(f"{what} file {path}: want one of {list(MATRIX_SUFFIXES)}; got {path.suffix or 'no suffix'!r}")
    if not path.is_file():
        raise ValueError(f"{what} file {path} does not exist")
    if path.suffix.lower() == ".npy":
        try:
            array = np.asarray(np.load(path, allow_pickle=False), dtype=np.float64)
        except (ValueError, OSError, TypeError) as error:
            reason = " ".join(str(error).split())[:120]
            raise ValueError(f"{what} file {path} is not a readable matrix: {reason}") from None
    else:
        array = _read_csv_numbers(path, what)
    if array.ndim != 2 or 0 in array.shape:
        raise ValueError(f"{what} file {path} must hold a non-empty 2-D matrix; got shape {array.shape}")
    return array


def _read_csv_numbers(path: Path, what: str) -> np.ndarray:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{what} file {path} is not a text file; give comma-separated numbers or a .npy") from None
    rows: list[list[float]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        row = []
        for column, field in enumerate(line.split(","), start=1):
            value = field.strip()
            if value == "" or value.lower() == "nan":
                row.append(np.nan)
                continue
            try:
                row.append(float(value))
            except ValueError:
                if len(value.split()) > 1:
                    hint = "; the file must be comma-separated (this line is separated by spaces or tabs)"
                elif not rows:
                    hint = "; the file must hold numbers only (a header row?)"
                else:
                    hint = ""
                raise ValueError(
                    f"{what} file {path}, line {number}, column {column}: {value[:40]!r} is not a number{hint}"
                ) from None
        if rows and len(row) != len(rows[0]):
            raise ValueError(f"{what} file {path}, line {number}: {len(row)} fields, the first row has {len(rows[0])}")
        rows.append(row)
    if not rows:
        raise ValueError(f"{what} file {path} is empty")
    return np.array(rows, dtype=np.float64)


# ---- problem files: the problem's spec and tensors, torch.save'd (cdln.problems holds the classes)


def save_problem(problem: Problem, path: str | os.PathLike[str], provenance: dict[str, Any] | None = None) -> None:
    """Write the problem (its spec, its tensors, e.g. target (d_out, d_in), and its settings) to ``path``
    atomically, with where its data came from (``provenance``, e.g. the MovieLens source and checksum) when there
    is one. A problem class of a user's is saved under its name, ``module:Class`` (its spec's task)."""
    from dataclasses import asdict, replace

    from cdln.problems import PROBLEM_CLASSES

    spec, cls = problem.spec, type(problem)
    if not (spec.task in PROBLEM_CLASSES and isinstance(problem, PROBLEM_CLASSES[spec.task])):
        if cls.__module__ == "__main__":
            raise ValueError(f"{cls.__name__} is defined in __main__: put it in a module to save it (and to train it)")
        spec = replace(spec, task=f"{cls.__module__}:{cls.__qualname__}")  # its kind, read back by name
    payload: dict[str, Any] = {"spec": asdict(spec)}
    payload["tensors"] = {k: v.cpu() for k, v in problem.tensors().items()}
    if problem.parameters():
        payload["settings"] = problem.parameters()
    if provenance is not None:
        payload["provenance"] = provenance
    torch_save(payload, path)


def _read_problem_file(
    path: str | os.PathLike[str], mmap: bool
) -> tuple[ProblemSpec, dict[str, Tensor], Any, dict[str, Any]]:
    import torch

    from cdln.spec import ProblemSpec

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"problem file {path} does not exist (make it with `cdln make-problem`)")
    remake = "remake it with `cdln make-problem`"
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception:  # unpickling, truncation, a foreign file: all say the same to the user
        raise ValueError(f"problem file {path} is not a readable cdln problem (not a torch file, or truncated); "
                         f"{remake}") from None  # fmt: skip
    try:
        spec = ProblemSpec(**payload["spec"])
        tensors = dict(payload["tensors"])
        if spec.task == "ms" and spec.operator_dtype is None:  # written before the storage was recorded
            spec = dataclasses.replace(spec, operator_dtype=str(tensors["operator"].dtype).removeprefix("torch."))
        spec.validate()
    except Exception as error:
        reason = " ".join(str(error).split())[:160] or type(error).__name__
        raise ValueError(f"problem file {path} is not a readable cdln problem ({reason}); {remake}") from None
    return spec, tensors, payload.get("provenance"), dict(payload.get("settings") or {})


def load_problem_provenance(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """Where a problem file's data came from (:func:`save_problem`), without reading its tensors."""
    return _read_problem_file(path, mmap=True)[2]


def load_problem_spec(path: str | os.PathLike[str]) -> ProblemSpec:
    """The spec of a problem file, without reading its tensors (they are memory-mapped, not loaded)."""
    return _read_problem_file(path, mmap=True)[0]


def load_problem(path: str | os.PathLike[str]) -> Problem:
    """Read a problem written by :func:`save_problem` (tensors on the CPU, in their stored dtype); a file
    that is not one raises ``ValueError`` naming it."""
    spec, tensors, _, settings = _read_problem_file(path, mmap=False)
    try:
        from cdln.problems import problem_class

        return problem_class(spec.task)(spec, **tensors, **settings)
    except (TypeError, ValueError) as error:
        raise ValueError(f"problem file {path} is not a readable cdln problem ({error})") from None
