"""Run records: one directory per run, written atomically.

Layout of ``<run_dir>/``: ``record.json`` (resolved config, seeds, versions, device, dtype,
parameter counts, timings, outcome), ``curves.csv`` (tidy: member, iteration, seconds,
train_loss, recovery_error) and, when analysis snapshots were taken, ``snapshots.npz``.
Everything is first written to a sibling temporary directory and renamed into place, so an
interrupted run never leaves a directory that looks complete.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

import cdln

RECORD_FILE = "record.json"
CURVES_FILE = "curves.csv"
SNAPSHOTS_FILE = "snapshots.npz"


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file in the same directory and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_torch_save(payload: Any, path: Path) -> None:
    """``torch.save`` to ``path`` atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
    os.close(fd)
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def environment() -> dict[str, str]:
    """Versions of everything that can change a number."""
    return {
        "cdln": cdln.__version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "pandas": pd.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def write_run_record(
    run_dir: str | Path,
    record: dict[str, Any],
    curves: pd.DataFrame,
    snapshots: dict[str, np.ndarray] | None = None,
) -> Path:
    """Write a complete run record to ``run_dir`` (replacing an existing one) atomically."""
    run_dir = Path(run_dir)
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=run_dir.parent, prefix=f".{run_dir.name}.", suffix=".partial"))
    try:
        curves.to_csv(staging / CURVES_FILE, index=False, float_format="%.17g")
        if snapshots:
            np.savez_compressed(staging / SNAPSHOTS_FILE, **snapshots)
        (staging / RECORD_FILE).write_text(json.dumps(record, indent=2, sort_keys=True, default=_json_default) + "\n")
        if run_dir.exists():
            shutil.rmtree(run_dir)  # e.g. an empty directory that Snakemake created, or a stale run
        os.replace(staging, run_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return run_dir


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    if isinstance(value, (Path, torch.device, torch.dtype)):
        return str(value)
    raise TypeError(f"cannot store {type(value).__name__} in a run record")


def read_run_record(run_dir: str | Path) -> tuple[dict[str, Any], pd.DataFrame]:
    """Read ``(record, curves)`` from a run directory; fails clearly on an incomplete one."""
    run_dir = Path(run_dir)
    record_path = run_dir / RECORD_FILE
    if not record_path.is_file():
        raise FileNotFoundError(f"{run_dir} is not a complete run record (missing {RECORD_FILE})")
    return json.loads(record_path.read_text()), pd.read_csv(run_dir / CURVES_FILE)


def read_snapshots(run_dir: str | Path) -> dict[str, np.ndarray]:
    """Read the analysis snapshots of a run (arrays with a leading checkpoint axis)."""
    path = Path(run_dir) / SNAPSHOTS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: train the run with --snapshots")
    with np.load(path) as data:
        return {key: data[key] for key in data.files}
