"""The robustness figure's table: the runs of a sweep section -> one row per (factor, value, model, seed).

A sweep section (config ``experiments.robustness``) moves one factor at a time away from the ``mc``
setting (:func:`cdln.pipeline.grid.sweep_points`); its runs are aggregated like any synthetic
experiment (``robustness_runs.csv``, ``robustness_curves.csv``). This module adds what the figure and
its claims read, per run:

- ``final_error`` and ``initial_error`` (recovery error at the last and first checkpoint), and
  ``relative_error``, their ratio;
- ``floor_error``: where the network's width r_hat is below the target's rank r, the relative squared error
  of the target's best rank-r_hat approximation (:func:`cdln.analysis.eckart_young_floor`, the target redrawn
  from the run's data seed and spectrum), else 0; ``relative_to_floor`` = ``relative_error`` / ``floor_error``
  (NaN where the floor is 0): how far above what its width allows a narrow network ends;
- ``level_iteration`` / ``level_seconds``: the first checkpoint whose recovery error is at most
  ``level`` x ``initial_error`` (NaN when the run never got there);
- ``hit_budget``: the run used its whole iteration budget without its training loss reaching tol;
- ``level_iteration_at_least`` / ``level_seconds_at_least``: the level's iteration and seconds, or,
  when the run never reached it, where it stopped (a lower bound on both once the run hit its budget).

The base point (every factor at its shared value) is one panel; its rows appear under every factor. A
model whose run a point leaves unchanged (the original DLN when only r_hat moves) is read from the panel
that trained it (:attr:`cdln.pipeline.grid.SweepPoint.runs`); ``panel`` is the point's own.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import pandas as pd

from cdln.pipeline.grid import SweepPoint

COLUMNS = [
    "factor", "value", "panel", "model", "seed", "d", "r", "r_hat", "final_error", "initial_error",
    "relative_error", "floor_error", "relative_to_floor", "converged", "hit_budget", "budget", "stop_iteration",
    "stop_seconds", "seconds_per_iteration", "level", "level_iteration", "level_seconds", "level_iteration_at_least",
    "level_seconds_at_least", "seconds_noise", "device_name", "engine_path",
]  # fmt: skip


def table(runs: pd.DataFrame, curves: pd.DataFrame, points: Iterable[SweepPoint], level: float) -> pd.DataFrame:
    """One row per (sweep point, model, seed); see the module docstring. Raises ``ValueError`` naming a
    point's panel when the runs table has no runs for it."""
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1) (a fraction of the initial recovery error); got {level}")
    rows = []
    for point in points:
        for model, panel in (point.runs or {model: point.panel for model in runs["model"].unique()}).items():
            model_runs = runs[(runs["panel"].astype(str) == panel) & (runs["model"] == model)]
            if model_runs.empty:
                panels = sorted(runs["panel"].astype(str).unique())
                raise ValueError(
                    f"no {model} runs in panel {panel!r} ({point.factor} = {point.value}); panels: {panels}"
                )
            for run in model_runs.itertuples(index=False):
                run_curves = curves[
                    (curves["panel"].astype(str) == panel) & (curves["model"] == model) & (curves["seed"] == run.seed)
                ].sort_values("iteration")
                rows.append(_row(point, run, run_curves, level))
    return pd.DataFrame(rows, columns=COLUMNS)


def _row(point: SweepPoint, run, curves: pd.DataFrame, level: float) -> dict:
    errors = curves["recovery_error"].to_numpy(float)
    if errors.size == 0:
        raise ValueError(f"panel {point.panel!r}, {run.model}, seed {run.seed}: no curve in the curves table")
    hit = np.flatnonzero(errors <= level * errors[0])
    level_iteration = float(curves["iteration"].iloc[hit[0]]) if hit.size else math.nan
    level_seconds = float(curves["seconds"].iloc[hit[0]]) if hit.size else math.nan
    hit_budget = not bool(run.converged) and int(run.stop_iteration) >= int(run.budget)
    floor = _floor(point, run)
    return {
        "factor": point.factor,
        "value": float(point.value),
        "panel": point.panel,
        "model": run.model,
        "seed": int(run.seed),
        "d": int(run.d),
        "r": int(run.r),
        "r_hat": run.r_hat,
        "final_error": float(errors[-1]),
        "initial_error": float(errors[0]),
        "relative_error": float(errors[-1] / errors[0]),
        "floor_error": floor,
        "relative_to_floor": float(errors[-1] / errors[0]) / floor if floor > 0 else math.nan,
        "converged": bool(run.converged),
        "hit_budget": hit_budget,
        "budget": int(run.budget),
        "stop_iteration": int(run.stop_iteration),
        "stop_seconds": float(run.stop_seconds),
        "seconds_per_iteration": float(run.seconds_per_iteration),
        "level": level,
        "level_iteration": level_iteration,
        "level_seconds": level_seconds,
        "level_iteration_at_least": level_iteration if hit.size else float(run.stop_iteration),
        "level_seconds_at_least": level_seconds if hit.size else float(run.stop_seconds),
        "seconds_noise": float(getattr(run, "seconds_noise", math.nan)),
        "device_name": run.device_name,
        "engine_path": run.engine_path,
    }


def _floor(point: SweepPoint, run) -> float:
    """The run's Eckart-Young floor (see the module docstring): 0 unless its width r_hat is below r."""
    if pd.isna(run.r_hat) or float(run.r_hat) >= float(run.r):  # NaN: a full-width network
        return 0.0
    if pd.isna(run.data_seed):
        raise ValueError(f"panel {point.panel!r}, {run.model}, seed {run.seed}: no data seed to redraw its target")
    from cdln import seeding
    from cdln.analysis import eckart_young_floor
    from cdln.data.synthetic import low_rank_target

    condition = None if pd.isna(run.condition) else float(run.condition)
    generator = seeding.generator(int(run.data_seed), "data")
    _, _, singular_values, _ = low_rank_target(int(run.d), int(run.d), int(run.r), generator, run.spectrum, condition)
    return eckart_young_floor(singular_values, int(run.r_hat))


def select(frame: pd.DataFrame, factor: str, value: float, model: str) -> pd.DataFrame:
    """The rows of one sweep point and model (one per seed), or ``ValueError`` naming what exists."""
    at = frame[(frame["factor"] == factor) & np.isclose(frame["value"].astype(float), float(value), rtol=1e-9)]
    rows = at[at["model"] == model].sort_values("seed")
    if rows.empty:
        values = sorted(frame.loc[frame["factor"] == factor, "value"].unique())
        raise ValueError(
            f"robustness.csv has no rows for {factor} = {value}, model {model!r}; "
            f"factors {sorted(frame['factor'].unique())}, values of {factor!r}: {values}, "
            f"models {sorted(frame['model'].unique())}"
        )
    return rows


def paired_ratio(frame: pd.DataFrame, factor: str, value: float, column: str, a: str, b: str) -> pd.Series:
    """``column`` of model ``a`` over model ``b`` at one sweep point, seed by seed (index: seed)."""
    rows_a = select(frame, factor, value, a).set_index("seed")[column].astype(float)
    rows_b = select(frame, factor, value, b).set_index("seed")[column].astype(float)
    if sorted(rows_a.index) != sorted(rows_b.index):
        raise ValueError(f"{factor} = {value}: {a} has seeds {sorted(rows_a.index)}, {b} {sorted(rows_b.index)}")
    return rows_a / rows_b.loc[rows_a.index].replace(0, math.nan)
