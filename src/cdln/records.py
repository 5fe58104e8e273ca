"""Run records: one directory per run, one layout for every kind of run, written atomically.

Layout of ``<run_dir>/``: ``record.json`` (see :func:`make_record`), ``curves.csv`` (tidy: one row
per member and checkpoint: member, iteration, seconds, then the run kind's metrics) and, when
analysis snapshots were taken, ``snapshots.npz``. Everything is staged in a sibling temporary
directory and renamed into place, so an interrupted run never leaves a directory that looks complete.
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

import cdln
from cdln.outputs import atomic_directory, data_checksum, json_default

RECORD_FILE = "record.json"
CURVES_FILE = "curves.csv"
SNAPSHOTS_FILE = "snapshots.npz"
COMPLETED_FILE = "completed.npy"  # runs on a user's matrix: the completed matrices
RUN_FILES = (RECORD_FILE, CURVES_FILE, SNAPSHOTS_FILE, COMPLETED_FILE)  # every name a run record may hold

KINDS = ("train", "altmin", "nonlinear")
# Sections every record has, and the keys each of them must hold.
REQUIRED: dict[str, tuple[str, ...]] = {
    "kind": (),
    "config": (),
    "members": (),
    "parameters": ("model",),
    "timing": ("seconds", "iterations", "seconds_per_iteration"),
    "device": ("type", "name", "dtype"),
    "environment": ("cdln", "torch"),
    "command": (),
}
CURVE_COLUMNS = ("member", "iteration", "seconds")


@functools.cache
def git_state() -> dict[str, Any]:
    """The commit of the checkout the package runs from and whether it has uncommitted changes to tracked
    files (``commit`` None when it is not a git checkout, e.g. an installed wheel)."""
    root = Path(cdln.__file__).resolve().parents[2]
    state: dict[str, Any] = {"commit": None, "dirty": None}
    if not (root / ".git").exists():
        return state
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10
        )
        status = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=10,
        )  # fmt: skip
        if commit.returncode == 0 and status.returncode == 0:
            state = {"commit": commit.stdout.strip(), "dirty": bool(status.stdout.strip())}
    return state


def environment() -> dict[str, Any]:
    """Versions of everything that can change a number, and the git commit of the code."""
    return {
        "cdln": cdln.__version__,
        "git": git_state(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "pandas": pd.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def make_record(
    kind: str,
    *,
    config: dict[str, Any],
    members: list[dict[str, Any]],
    parameters: dict[str, int],
    timing: dict[str, Any],
    device: dict[str, str],
    **sections: Any,
) -> dict[str, Any]:
    """The run record every writer uses.

    ``kind``: train | altmin | nonlinear. ``config``: the resolved settings of the run. ``members``:
    one dict per batch member (``member`` index first, then its seed, alpha and outcome).
    ``parameters``: trainable parameter counts (``model`` at least). ``timing``: device-synchronised
    ``seconds`` of training (warm-up and analysis excluded), ``iterations``, ``seconds_per_iteration``.
    ``device``: ``type``, ``name``, ``dtype``. Extra ``sections`` (``problem``, ``data``, ...) are kept
    as given. The date (UTC), versions and the command line are added here.
    """
    record = {
        "kind": kind,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "config": config,
        "members": members,
        "parameters": parameters,
        "timing": timing,
        "device": device,
        **sections,
        "environment": environment(),
        "command": sys.argv,
    }
    check_record(record)
    return record


def data_files(**paths: str | os.PathLike[str] | None) -> dict[str, dict[str, str]]:
    """The data files a run read, by role (``problem=...``, ``matrix=...``; None left out): each one's path and
    SHA-256, so that a record says exactly which data made it."""
    return {role: {"path": str(path), "sha256": data_checksum(path)} for role, path in paths.items() if path}


def data_section(**paths: str | os.PathLike[str] | None) -> dict[str, Any]:
    """A record's ``data`` section: the files the run read (:func:`data_files`) and, when one of them is a problem
    file that keeps it (``problem=``), where its data came from (e.g. the MovieLens source and checksum)."""
    from cdln.io import load_problem_provenance

    problem = paths.get("problem")
    provenance = load_problem_provenance(problem) if problem else None
    return {"files": data_files(**paths), **({"provenance": provenance} if provenance else {})}


def check_record(record: dict[str, Any]) -> None:
    """Raise ``ValueError`` naming what a run record lacks (every writer goes through this)."""
    missing = [section for section in REQUIRED if section not in record]
    missing += [
        f"{section}.{key}" for section, keys in REQUIRED.items() for key in keys if key not in record.get(section, {})
    ]
    if missing:
        raise ValueError(f"run record lacks {missing}; see cdln.records.make_record")
    if record["kind"] not in KINDS:
        raise ValueError(f"run record kind must be one of {list(KINDS)}; got {record['kind']!r}")
    if not record["members"] or any("member" not in member for member in record["members"]):
        raise ValueError("run record needs at least one member, each with its 'member' index")


def write_run_record(
    run_dir: str | Path,
    record: dict[str, Any],
    curves: pd.DataFrame,
    snapshots: dict[str, np.ndarray] | None = None,
    arrays: dict[str, np.ndarray] | None = None,
    force: bool = False,
) -> Path:
    """Write a complete run record to ``run_dir`` (replacing an existing one) atomically; ``arrays`` as
    ``<name>.npy`` files beside it. A folder there that is not a run record is refused unless ``force``."""
    check_record(record)
    missing = [column for column in CURVE_COLUMNS if column not in curves.columns]
    if missing:
        raise ValueError(f"curves lack the columns {missing}")
    run_dir = Path(run_dir)
    with atomic_directory(run_dir, force) as staging:
        stage_run_record(staging, record, curves, snapshots, arrays)
    return run_dir


def stage_run_record(
    directory: Path,
    record: dict[str, Any],
    curves: pd.DataFrame,
    snapshots: dict[str, np.ndarray] | None,
    arrays: dict[str, np.ndarray] | None = None,
) -> None:
    """The files of a run record, written into ``directory`` (a staging directory, renamed later)."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, array in (arrays or {}).items():
        np.save(directory / f"{name}.npy", array)
    curves.to_csv(directory / CURVES_FILE, index=False, float_format="%.17g")
    if snapshots:
        np.savez_compressed(directory / SNAPSHOTS_FILE, **snapshots)
    text = json.dumps(record, indent=2, sort_keys=True, default=json_default) + "\n"
    (directory / RECORD_FILE).write_text(text)


def read_run_record(run_dir: str | Path) -> tuple[dict[str, Any], pd.DataFrame]:
    """Read ``(record, curves)`` from a run directory; fails clearly on an incomplete one."""
    run_dir = Path(run_dir)
    record_path = run_dir / RECORD_FILE
    if not record_path.is_file():
        raise FileNotFoundError(f"{run_dir} is not a complete run record (missing {RECORD_FILE})")
    try:
        record = json.loads(record_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"run record {record_path} is not valid JSON ({error}); rerun the run to remake it") from None
    return record, pd.read_csv(run_dir / CURVES_FILE)


def stopped_at(record: dict[str, Any], curves: pd.DataFrame, tol: float, max_outer: int) -> tuple[dict, pd.DataFrame]:
    """A GD run's record and curves as if it had stopped at ``tol`` and ``max_outer`` checkpoints (at most its
    own): each member's curve cut at its first checkpoint with training loss below ``tol`` or at the budget, its
    outcome and the run's timing read there. The checkpoints before are the same (the same run), so this is the
    record a run with those settings writes, but for the clock's noise."""
    config = record["config"]
    if tol < config["tol"] or max_outer > config["max_outer"]:
        raise ValueError(f"a run to tol {config['tol']:g} in {config['max_outer']} checkpoints cannot be read as one "
                         f"to tol {tol:g} in {max_outer}")  # fmt: skip
    budget = config["n_inner"] * max_outer
    kept, members = [], []
    for member in record["members"]:
        rows = curves[curves["member"] == member["member"]].sort_values("iteration")
        rows = rows[rows["iteration"] <= budget]
        below = rows.index[rows["train_loss"] < tol]
        stop = rows.loc[below[0]] if len(below) else rows.iloc[-1]
        rows = rows[rows["iteration"] <= stop["iteration"]]
        kept.append(rows)
        members.append({**member, "converged": bool(stop["train_loss"] < tol), "stop_iteration": int(stop["iteration"]),
                        "stop_seconds": float(stop["seconds"]), "final_train_loss": float(stop["train_loss"]),
                        "final_recovery_error": float(stop["recovery_error"])})  # fmt: skip
    iterations = max(member["stop_iteration"] for member in members)
    seconds = max(member["stop_seconds"] for member in members)
    timing = {**record["timing"], "iterations": iterations, "seconds": seconds,
              "seconds_per_iteration": seconds / max(1, iterations)}  # fmt: skip
    stopped = {**record, "config": {**config, "tol": tol, "max_outer": max_outer}, "members": members, "timing": timing}
    return stopped, pd.concat(kept).sort_values(["iteration", "member"], kind="stable").reset_index(drop=True)


def read_snapshots(run_dir: str | Path) -> dict[str, np.ndarray]:
    """Read the analysis snapshots of a run (arrays with a leading checkpoint axis)."""
    path = Path(run_dir) / SNAPSHOTS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: train the run with --snapshots")
    with np.load(path) as data:
        return {key: data[key] for key in data.files}
