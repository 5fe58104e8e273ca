"""The run records of one synthetic experiment -> two tidy tables (:func:`collect`).

Curves: one row per (run, checkpoint): experiment, panel, model, seed, alpha, depth, r, r_hat,
iteration, seconds, train_loss, recovery_error.
Runs: one row per run: its settings, parameter counts, where it stopped (tol or budget), final
errors, its own timing noise (:func:`timing_noise`) and, for a ``reach_error`` E, the first checkpoint whose
recovery error is <= E.

Runs are read from their job directories (named as :mod:`cdln.pipeline.grid` names them); a run another job
trained (its manifest's ``same_as``) from there, stopped at its own settings. A batched
alpha sweep (run ``cdln_alphabatch``, several members) becomes one row per member (panel id
``<panel>_alpha<a>``) with ``batched`` = True: its seconds are the batch's shared wall time.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from cdln.pipeline.grid import JOB_MANIFEST, synthetic_run_keys
from cdln.records import read_run_record, stopped_at


def job_runs(job_dirs: list[Path]) -> list[tuple[Path, dict[str, Any]]]:
    """(the run's directory as its job names it, its manifest entry) of every run of ``job_dirs``, in the order
    each job lists them (its manifest)."""
    runs = []
    for job_dir in map(Path, job_dirs):
        manifest = job_dir / JOB_MANIFEST
        if not manifest.is_file():
            raise FileNotFoundError(f"{job_dir} is not a complete job directory (missing {JOB_MANIFEST})")
        runs += [(job_dir / run["name"], run) for run in json.loads(manifest.read_text())["runs"]]
    return runs


def read_job_run(run_dir: Path, entry: dict[str, Any]) -> tuple[dict[str, Any], pd.DataFrame]:
    """A job's run: its own record, or for a run another job trained (``same_as``) that run's, stopped where this
    run's settings stop it (:func:`cdln.records.stopped_at`)."""
    if entry.get("same_as") is None:
        return read_run_record(run_dir)
    record, curves = read_run_record(entry["same_as"])
    options = entry["options"]
    return stopped_at(record, curves, options["tol"], options["max_outer"])


def first_reach(curves: pd.DataFrame, threshold: float | None) -> tuple[float, float]:
    """(iteration, seconds) of the first checkpoint with recovery error <= threshold, else NaN."""
    if threshold is None:
        return math.nan, math.nan
    hit = curves[curves["recovery_error"] <= threshold]
    if hit.empty:
        return math.nan, math.nan
    first = hit.iloc[0]
    return float(first["iteration"]), float(first["seconds"])


def timing_noise(curves: pd.DataFrame) -> float:
    """A run's own timing noise, from its repeated timings: half the spread between the 10th and 90th percentile
    of its checkpoint intervals' seconds per iteration, over their median (NaN with fewer than 3 intervals). A
    claim's bound on this run's seconds within that relative margin of its value is within noise."""
    ordered = curves.sort_values("iteration")
    per_iteration = (ordered["seconds"].diff() / ordered["iteration"].diff()).iloc[1:]
    per_iteration = per_iteration[per_iteration > 0]
    if len(per_iteration) < 3:
        return math.nan
    low, middle, high = per_iteration.quantile([0.1, 0.5, 0.9])
    return float((high - low) / (2 * middle))


def collect(job_dirs: list[Path], reach_error: float | None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(curves, runs) tables of every run in ``job_dirs``."""
    curve_frames, rows = [], []
    for run_dir, entry in job_runs(job_dirs):
        keys = synthetic_run_keys(run_dir)
        record, all_curves = read_job_run(run_dir, entry)
        batched = len(record["members"]) > 1
        if batched and not keys["panel_id"].endswith("_alphabatch"):
            count = len(record["members"])
            raise ValueError(f"{run_dir}: {count} members, but only cdln_alphabatch runs are batched")
        for member in record["members"]:
            member_keys = dict(keys, batched=batched)
            if batched:
                member_keys["panel_id"] = f"{keys['panel']}_alpha{member['alpha']:g}"
            curves = all_curves[all_curves["member"] == member["member"]]
            curve_frames.append(_curves_frame(curves, member_keys, record, member))
            rows.append(_run_row(curves, member_keys, record, member, reach_error))
    columns = ["experiment", "panel", "panel_id", "model", "seed"]
    curves_table = pd.concat(curve_frames, ignore_index=True)
    curves_table = curves_table[columns + [c for c in curves_table.columns if c not in columns]]
    runs_table = pd.DataFrame(rows).sort_values(["panel", "panel_id", "model", "seed"], ignore_index=True)
    return curves_table, runs_table


def _settings(keys: dict, config: dict, member: dict) -> dict:
    model = keys["model"]
    return {
        "alpha": member["alpha"] if model == "cdln" else math.nan,
        "depth": config["depth"],
        "d": config["d_out"],
        "r": config["r"],
        "r_hat": config["r_hat"] if model in ("cdln", "narrow", "yaras") else math.nan,
        "bm_rank": (config["bm_rank"] or config["r"]) if model == "bm" else math.nan,
    }


def _curves_frame(curves: pd.DataFrame, keys: dict, record: dict, member: dict) -> pd.DataFrame:
    settings = _settings(keys, record["config"], member)
    return curves[["iteration", "seconds", "train_loss", "recovery_error"]].assign(**keys, **settings)


def _run_row(curves: pd.DataFrame, keys: dict, record: dict, member: dict, reach_error: float | None) -> dict:
    config = record["config"]
    reach_iteration, reach_seconds = first_reach(curves, reach_error)
    return {
        **keys,
        **_settings(keys, config, member),
        "task": config["task"],
        # the drawn problem (None for a problem not drawn from a spec): what redraws its target
        **{key: (record.get("problem") or {}).get(key) for key in ("data_seed", "spectrum", "condition")},
        "lr": config["lr"],
        "tol": config["tol"],
        "budget": config["n_inner"] * config["max_outer"],
        "params_model": record["parameters"]["model"],
        "params_original": record["parameters"]["original_dln"],
        "converged": bool(member["converged"]),
        "stop_iteration": int(member["stop_iteration"]),
        "stop_seconds": float(member["stop_seconds"]),
        "seconds_per_iteration": float(record["timing"]["seconds_per_iteration"]),
        "seconds_noise": timing_noise(curves),
        "final_train_loss": float(member["final_train_loss"]),
        "final_recovery_error": float(member["final_recovery_error"]),
        "reach_error": reach_error if reach_error is not None else math.nan,
        "reach_iteration": reach_iteration,
        "reach_seconds": reach_seconds,
        "device": record["device"]["type"],
        "device_name": record["device"]["name"],
        "engine_path": record["timing"].get("engine_path", ""),
    }
