"""Figures: one module per figure (``cdln plot <figure>``), all in the style of :mod:`cdln.plotting.style`.

Plotting only reads tables and run records; nothing here trains.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd


def over_seeds(frame: pd.DataFrame, column: str) -> pd.DataFrame:
    """Per checkpoint (``iteration``): mean seconds, and the mean, min and max of ``column`` over seeds."""
    grouped = frame.groupby("iteration")
    return pd.DataFrame(
        {
            "seconds": grouped["seconds"].mean(),
            "mean": grouped[column].mean(),
            "low": grouped[column].min(),
            "high": grouped[column].max(),
        }
    ).reset_index()


def load_snapshot_runs(
    run_dirs: Mapping[str, str | os.PathLike[str] | Sequence[str | os.PathLike[str]]],
) -> dict[str, list[dict[str, Any]]]:
    """Task -> one ``{"record", "curves", "snaps", "seed"}`` per seed, in the order given, of analysis
    runs (``cdln train --snapshots``; ``seed`` is the run's data seed, which is also its init seed); a
    task may name one run directory or a list of them.

    Relative paths are taken from the working directory, else from the repository root above it
    (a notebook opened in Jupyter runs in ``notebooks/``; papermill in the pipeline runs at the root).
    """
    from cdln.records import read_run_record, read_snapshots

    runs: dict[str, list[dict[str, Any]]] = {}
    for task, dirs in run_dirs.items():
        runs[task] = []
        for run_dir in [dirs] if isinstance(dirs, (str, os.PathLike)) else dirs:
            path = repository_path(run_dir)
            record, curves = read_run_record(path)
            seed = int(record["config"]["data_seed"])
            runs[task].append({"record": record, "curves": curves, "snaps": read_snapshots(path), "seed": seed})
    return runs


def repository_path(path: str | os.PathLike[str]) -> Path:
    """``path`` as given if absolute or present; else relative to the first parent holding a Snakefile."""
    path = Path(path)
    if path.is_absolute() or path.exists():
        return path
    root = next((p for p in [Path.cwd(), *Path.cwd().parents] if (p / "Snakefile").is_file()), Path.cwd())
    return root / path
