"""The measures a claim's expression may call: functions over a run's tables (module docstring of
:mod:`cdln.pipeline.claims`), and the tables they read."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

OVER = ("mean", "min", "max", "gmean")


class ClaimError(ValueError):
    """A malformed claims file or measure; the message names the claim."""


class NotApplicable(Exception):  # noqa: N818 (a signal, not an error)
    """The claim is about a panel (or sizes) this grid does not have."""


@dataclass
class Tables:
    """A results root's tables, read on demand, with the panel map of the grid that made them.

    While a claim is evaluated, ``devices`` collects the devices of the seconds it read, ``timed`` the models
    whose seconds those were, and ``aggregations`` how each function combined the seeds. Every read of seconds
    goes through :meth:`seconds`: with ``perturb`` (model -> -1 or +1) each run's seconds move to that end of its
    own timing noise (the tables' ``seconds_noise``), which is how a timing verdict's noise is probed."""

    directory: Path
    panels: Mapping[str, Mapping[str, str | None]] = field(default_factory=dict)
    devices: set[str] = field(default_factory=set)
    aggregations: dict[str, None] = field(default_factory=dict)
    timed: set[str] = field(default_factory=set)
    perturb: Mapping[str, int] = field(default_factory=dict)
    _cache: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def in_memory(cls, files: Mapping[str, Any], panels: Mapping[str, Mapping[str, str | None]] | None = None):
        """Tables held in memory: ``files`` maps a table's file name to its DataFrame (or a findings dict)."""
        return cls(Path("<memory>"), panels or {}, _cache=dict(files))

    def csv(self, name: str) -> pd.DataFrame:
        if name not in self._cache:
            path = self.directory / name
            if not path.is_file():
                raise FileNotFoundError(f"{path} does not exist: make the figure's tables first")
            self._cache[name] = pd.read_csv(path)
        return self._cache[name]

    def json(self, name: str) -> dict:
        if name not in self._cache:
            path = self.directory / name
            if not path.is_file():
                raise FileNotFoundError(f"{path} does not exist: make the figure's tables first")
            self._cache[name] = json.loads(path.read_text())
        return self._cache[name]

    def panel(self, experiment: str, panel: str) -> str:
        """This grid's name of the paper's ``panel``: NotApplicable when the grid maps it to nothing, an
        error when the map does not know it (a mistyped panel must not be skipped silently)."""
        if experiment not in self.panels:
            return panel
        mapping = self.panels[experiment]
        if panel not in mapping:
            raise ClaimError(
                f"{experiment} has no panel {panel!r} in this grid's panel map (claims.panels.{experiment}); "
                f"the paper's panels it maps: {sorted(mapping)}"
            )
        if mapping[panel] is None:
            raise NotApplicable(f"{experiment} has no counterpart of the paper's panel {panel}")
        return str(mapping[panel])

    def select(self, experiment: str, kind: str, panel: str, model: str) -> pd.DataFrame:
        frame = self.csv(f"{experiment}_{kind}.csv")
        panel = self.panel(experiment, panel)
        rows = frame[(frame["panel"].astype(str) == panel) & (frame["model"] == model)]
        if rows.empty:
            raise ClaimError(
                f"{experiment}_{kind}.csv has no rows for panel {panel!r}, model {model!r}; it has panels "
                f"{sorted(frame['panel'].astype(str).unique())} and models {sorted(frame['model'].unique())}"
            )
        return rows

    def noise_factor(self, rows: pd.DataFrame) -> pd.Series:
        """Per row: 1, or while probing noise 1 + sign x the row's run's timing noise (``perturb`` by model)."""
        self.timed.update(rows["model"].astype(str).unique())
        if not self.perturb or "seconds_noise" not in rows:
            return pd.Series(1.0, index=rows.index)
        sign = rows["model"].astype(str).map(lambda model: self.perturb.get(model, 0)).astype(float)
        return 1 + sign * rows["seconds_noise"].astype(float).fillna(0.0)

    def seconds(self, rows: pd.DataFrame, column: str) -> pd.Series:
        """``rows[column]``, seconds of the rows' runs, as a claim reads them (:meth:`noise_factor`); notes the
        rows' devices."""
        self.note_devices(rows)
        return rows[column].astype(float) * self.noise_factor(rows)

    def note_devices(self, rows: pd.DataFrame) -> None:
        """Remember the devices (and engine paths, where the runs table has them) of the seconds read."""
        column = "device_name" if "device_name" in rows else "device"
        names = rows[column].astype(str)
        if "engine_path" in rows:
            paths = rows["engine_path"].fillna("").astype(str)
            names = names.where(paths == "", names + " [" + paths + "]")
        self.devices.update(names.unique())

    def note_seeds(self, n_seeds: int, over: str, paired: bool = False) -> None:
        """Remember how a function combined ``n_seeds`` seeds (the row's ``aggregation``)."""
        if n_seeds == 1:
            text = "1 seed"
        else:
            text = {"mean": "mean", "gmean": "geometric mean", "min": "min", "max": "max"}[over]
            text += f" {'of' if over in ('mean', 'gmean') else 'over'} {n_seeds} seeds"
        self.aggregations[text + (" (paired by seed)" if paired else "")] = None


def _aggregate(values: pd.Series | np.ndarray, over: str) -> float:
    if over not in OVER:
        raise ClaimError(f"over must be one of {list(OVER)}; got {over!r}")
    values = np.asarray(values, dtype=float)
    if np.isnan(values).any():  # a seed that never got there: the combination is undefined
        return math.nan
    if over == "gmean":
        return float(np.exp(np.log(np.clip(values, 1e-300, None)).mean()))
    return float({"mean": np.mean, "min": np.min, "max": np.max}[over](values))


def _first_per_seed(
    tables: Tables, experiment, panel, model, level, x="iteration", column="recovery_error"
) -> pd.Series:
    curves = tables.select(experiment, "curves", panel, model)
    per_seed = {}
    for seed, rows in curves.groupby("seed"):
        hit = rows[rows[column] <= level]
        per_seed[seed] = float(hit[x].iloc[0]) if not hit.empty else math.nan
    values = pd.Series(per_seed, dtype=float)
    if x == "seconds":  # the run's seconds at that checkpoint, as read (its timing noise from the runs table)
        runs = tables.select(experiment, "runs", panel, model)
        tables.note_devices(runs)
        values = values * tables.noise_factor(runs).groupby(runs["seed"].to_numpy()).mean().reindex(values.index)
    return values


def _final_per_seed(tables: Tables, experiment, panel, model, column="recovery_error") -> pd.Series:
    return tables.select(experiment, "curves", panel, model).groupby("seed")[column].last().astype(float)


def _runs_per_seed(tables: Tables, experiment, panel, model, column) -> pd.Series:
    rows = tables.select(experiment, "runs", panel, model)
    values = tables.seconds(rows, column) if "seconds" in column else rows[column].astype(float)
    return values.groupby(rows["seed"].to_numpy()).mean()


def _first(tables: Tables, experiment, panel, model, level, x="iteration", column="recovery_error", over="mean"):
    per_seed = _first_per_seed(tables, experiment, panel, model, level, x, column)
    tables.note_seeds(len(per_seed), over)
    return _aggregate(per_seed, over)


def _final(tables: Tables, experiment, panel, model, column="recovery_error", over="max"):
    per_seed = _final_per_seed(tables, experiment, panel, model, column)
    tables.note_seeds(len(per_seed), over)
    return _aggregate(per_seed, over)


def _runs(tables: Tables, experiment, panel, model, column, over="mean", alpha=None):
    rows = tables.select(experiment, "runs", panel, model)
    if alpha is not None and alpha != "all":
        target = {"min": rows["alpha"].min(), "max": rows["alpha"].max()}.get(alpha, alpha)
        rows = rows[np.isclose(rows["alpha"], float(target))]
    values = tables.seconds(rows, column) if "seconds" in column else rows[column].astype(float)
    n_seeds = rows["seed"].nunique() if "seed" in rows else len(rows)
    tables.note_seeds(n_seeds, over)
    if len(rows) > n_seeds:
        tables.aggregations[f"{over} over {len(rows)} runs ({alpha} alpha)"] = None
    return _aggregate(values, over)


def _paired(
    tables: Tables,
    experiment,
    panel,
    model_a,
    model_b,
    quantity,
    level=None,
    x="iteration",
    column="recovery_error",
    over="min",
):
    def per_seed(model: str) -> pd.Series:
        if quantity == "first":
            if level is None:
                raise ClaimError("paired(..., first) needs level=")
            return _first_per_seed(tables, experiment, panel, model, level, x, column)
        if quantity == "final":
            return _final_per_seed(tables, experiment, panel, model, column)
        return _runs_per_seed(tables, experiment, panel, model, quantity)

    pair = ((model_a, per_seed(model_a)), (model_b, per_seed(model_b)))
    return _seed_pairs(tables, f"{experiment} {panel}", pair, "ratio", over)


SEED_OPS: dict[str, Callable[[pd.Series, pd.Series], pd.Series]] = {
    "ratio": lambda a, b: a / b.replace(0, math.nan),
    "difference": lambda a, b: a - b,
    "gap": lambda a, b: (a - b).abs(),
}


def _seed_pairs(tables: Tables, where: str, pair: tuple[tuple[str, pd.Series], ...], op: str, over: str) -> float:
    """Two (model, values by seed) combined seed by seed with ``op`` (a op b), then ``over`` seeds; ``where``
    names the table in the error when their seeds differ."""
    (model_a, a), (model_b, b) = pair
    if sorted(a.index) != sorted(b.index):
        raise ClaimError(f"{where}: {model_a} has seeds {sorted(a.index)}, {model_b} {sorted(b.index)}")
    values = SEED_OPS[op](a, b.loc[a.index])
    tables.note_seeds(len(values), over, paired=True)
    return _aggregate(values, over)


def _dominance(tables: Tables, experiment, panel, model_a, model_b, floor=1e-10):
    a = tables.select(experiment, "curves", panel, model_a)
    b = tables.select(experiment, "curves", panel, model_b)
    worst, where, counted, above_one = -math.inf, "", 0, 0
    for seed, rows_a in a.groupby("seed"):
        rows_b = b[b["seed"] == seed]
        both = rows_a.merge(rows_b, on="iteration", suffixes=("_a", "_b"))
        error_a, error_b = both["recovery_error_a"].to_numpy(float), both["recovery_error_b"].to_numpy(float)
        if both.empty or both["iteration"].iloc[0] != 0:
            raise ClaimError(f"{experiment} {panel} seed {seed}: no common checkpoint at iteration 0 to set the floor")
        above = (error_a > floor * error_a[0]) & (error_b > floor * error_b[0])
        ratios, iterations = error_a[above] / error_b[above], both["iteration"].to_numpy()[above]
        if ratios.size and ratios.max() > worst:
            worst, where = float(ratios.max()), f"seed {seed}, iteration {int(iterations[ratios.argmax()])}"
        counted, above_one = counted + ratios.size, above_one + int((ratios > 1).sum())
    tables.note_seeds(a["seed"].nunique(), "max", paired=True)
    tables.aggregations[f"max over {counted} checkpoints (worst at {where}; {above_one} of {counted} above 1)"] = None
    return worst if counted else math.nan


def _alpha_sweep(tables: Tables, experiment, panel, column) -> pd.DataFrame:
    """The C-DLN's ``column`` per swept alpha (rows, increasing) and seed (columns)."""
    rows = tables.select(experiment, "runs", panel, "cdln")
    values = tables.seconds(rows, column) if "seconds" in column else rows[column].astype(float)
    frame = pd.DataFrame({"alpha": rows["alpha"].to_numpy(float), "seed": rows["seed"].to_numpy(), "value": values})
    return frame.pivot_table(index="alpha", columns="seed", values="value", aggfunc="mean").sort_index()


def _crossing(alphas: np.ndarray, gap: np.ndarray) -> float:
    """Where ``gap`` (C-DLN minus original; < 0: the C-DLN needs less) turns negative for good, linearly
    interpolated between the last swept alpha where it is not and the next; NaN without a crossing in the sweep."""
    for position in range(len(alphas)):
        if (gap[position:] < 0).all():
            if position == 0:
                return math.nan  # faster at every alpha: no crossing inside the sweep
            (a0, a1), (g0, g1) = alphas[position - 1 : position + 1], gap[position - 1 : position + 1]
            return float(a0 + (a1 - a0) * g0 / (g0 - g1))
    return math.nan


def _crossover(tables: Tables, experiment, panel, column="stop_iteration", over="max"):
    """Per seed, the alpha from which the C-DLN needs less of ``column`` than that seed's original DLN."""
    reference = _runs_per_seed(tables, experiment, panel, "original", column)
    sweep = _alpha_sweep(tables, experiment, panel, column)
    alphas = sweep.index.to_numpy(float)
    per_seed = [_crossing(alphas, sweep[seed].to_numpy(float) - reference[seed]) for seed in sweep.columns]
    tables.note_seeds(len(per_seed), over, paired=True)
    return _aggregate(per_seed, over)


def _sweep_rise(tables: Tables, experiment, panel, column="stop_iteration", over="max"):
    """Per seed, the largest rise of the C-DLN's ``column`` from one swept alpha to the next (at most 0 when it
    never rises), combined ``over`` seeds."""
    sweep = _alpha_sweep(tables, experiment, panel, column)
    rises = [float(np.diff(sweep[seed].to_numpy(float)).max()) if len(sweep) > 1 else math.nan for seed in sweep]
    tables.note_seeds(len(rises), over)
    tables.aggregations[f"{len(sweep)} alphas"] = None
    return _aggregate(rises, over)


def _sweep_ratio(tables: Tables, experiment, panel, column="stop_iteration", over="min"):
    """Per seed, the C-DLN's ``column`` at the smallest swept alpha over its value at the largest."""
    sweep = _alpha_sweep(tables, experiment, panel, column)
    ratios = (sweep.iloc[0] / sweep.iloc[-1].replace(0, math.nan)).to_numpy(float)
    tables.note_seeds(len(ratios), over)
    return _aggregate(ratios, over)


def _finding(tables: Tables, analysis, task, path, over="max"):
    findings = tables.json(f"{analysis}_findings.json")
    if task not in findings:
        raise ClaimError(f"{analysis}_findings.json has no task {task!r}; it has {sorted(findings)}")
    values = []
    for entry in findings[task]["by_seed"]:
        value: Any = entry
        for key in str(path).split("/"):
            try:
                value = value[int(key)] if isinstance(value, list) else value[key]
            except (KeyError, IndexError, ValueError):
                raise ClaimError(f"{analysis}_findings.json, {task}: no value at {path!r}") from None
        values.append(float(value))
    tables.note_seeds(len(values), over)
    return _aggregate(values, over)


def _table(tables: Tables, name, model, column):
    frame = tables.csv(f"{name}.csv")
    rows = frame[frame["model"] == model]
    if rows.empty:
        raise ClaimError(f"{name}.csv has no row for model {model!r}; models: {sorted(frame['model'])}")
    if column not in rows:
        raise ClaimError(f"{name}.csv has no column {column!r}; columns: {list(frame.columns)}")
    value = float((tables.seconds(rows, column) if "seconds" in column else rows[column].astype(float)).iloc[0])
    if "n_seeds" in rows:
        n_seeds = int(rows["n_seeds"].iloc[0])
        spread = "spread over" if column.endswith(("_min", "_max")) else "mean of"
        tables.aggregations[f"{spread} {n_seeds} seeds" if n_seeds > 1 else "1 seed"] = None
    return value


def _by_seed(tables: Tables, name, model_a, model_b, column, op="ratio", over="min", column_b=None):
    if op not in SEED_OPS:
        raise ClaimError(f"by_seed: op must be one of {list(SEED_OPS)}; got {op!r}")
    frame = tables.csv(f"{name}_runs.csv")
    per_seed: list[pd.Series] = []
    for model, model_column in ((model_a, column), (model_b, column_b or column)):
        if model_column not in frame:
            raise ClaimError(f"{name}_runs.csv has no column {model_column!r}; columns: {list(frame.columns)}")
        rows = frame[frame["model"] == model]
        if rows.empty:
            raise ClaimError(f"{name}_runs.csv has no rows for model {model!r}; models: {sorted(set(frame['model']))}")
        values = tables.seconds(rows, model_column) if "seconds" in model_column else rows[model_column].astype(float)
        per_seed.append(pd.Series(values.to_numpy(), index=rows["seed"].to_numpy()))
    return _seed_pairs(tables, f"{name}_runs.csv", tuple(zip((model_a, model_b), per_seed, strict=True)), op, over)


def _per_seed(tables: Tables, name, model, column, over="max"):
    """A real-data run's ``column`` of ``model`` (``<name>_runs.csv``), one value per seed (split), combined."""
    frame = tables.csv(f"{name}_runs.csv")
    rows = frame[frame["model"] == model]
    if rows.empty or column not in frame:
        raise ClaimError(f"{name}_runs.csv has no {column!r} of model {model!r}; models: {sorted(set(frame['model']))}")
    values = tables.seconds(rows, column) if "seconds" in column else rows[column].astype(float)
    tables.note_seeds(len(values), over)
    return _aggregate(values, over)


def _scaling(tables: Tables, model, quantity, d="max"):
    frame = tables.csv("scaling.csv")
    rows = frame[(frame["model"] == model) & (frame["quantity"] == quantity)]
    size = {"min": rows["d"].min(), "max": rows["d"].max()}.get(d, d)
    rows = rows[rows["d"] == size]
    tables.aggregations["median of repeats, 1 problem"] = None
    return float((tables.seconds(rows, "value") if "second" in quantity else rows["value"].astype(float)).iloc[0])


def _robust_frame(tables: Tables, column: str) -> pd.DataFrame:
    frame = tables.csv("robustness.csv")
    if column not in frame:
        raise ClaimError(f"robustness.csv has no column {column!r}; columns: {list(frame.columns)}")
    return frame


def _robust(tables: Tables, factor, value, model, column, over="max"):
    from cdln.pipeline import robustness

    try:
        rows = robustness.select(_robust_frame(tables, column), factor, value, model)
    except ValueError as error:
        raise ClaimError(str(error)) from None
    values = tables.seconds(rows, column) if "seconds" in column else rows[column].astype(float)
    tables.note_seeds(len(rows), over)
    return _aggregate(values, over)


def _robust_ratio(tables: Tables, factor, value, column, over="min", a="original", b="cdln"):
    from cdln.pipeline import robustness

    frame = _robust_frame(tables, column)
    if "seconds" in column:  # as read: each run's seconds (moved within its timing noise while probing it)
        frame = frame.assign(**{column: tables.seconds(frame, column)})
    try:
        ratios = robustness.paired_ratio(frame, factor, value, column, a, b)
    except ValueError as error:
        raise ClaimError(str(error)) from None
    tables.note_seeds(len(ratios), over, paired=True)
    return _aggregate(ratios, over)


def _log10(value: float) -> float:
    return math.log10(value) if value > 0 else math.nan


def _robust_across(tables: Tables, factor, value_a, value_b, model, column, over="min"):
    """Per seed, ``model``'s ``column`` at one swept value over its value at another."""
    from cdln.pipeline import robustness

    frame = _robust_frame(tables, column)
    try:
        rows_a, rows_b = (robustness.select(frame, factor, value, model) for value in (value_a, value_b))
    except ValueError as error:
        raise ClaimError(str(error)) from None
    a, b = (rows.set_index("seed")[column].astype(float) for rows in (rows_a, rows_b))
    if sorted(a.index) != sorted(b.index):
        raise ClaimError(
            f"robustness.csv: {factor} = {value_a} has seeds {sorted(a.index)}, = {value_b} {sorted(b.index)}"
        )
    tables.note_seeds(len(a), over, paired=True)
    return _aggregate(a / b.loc[a.index].replace(0, math.nan), over)


FUNCTIONS: dict[str, Callable[..., float]] = {
    "first": _first,
    "final": _final,
    "runs": _runs,
    "paired": _paired,
    "dominance": _dominance,
    "crossover": _crossover,
    "sweep_rise": _sweep_rise,
    "sweep_ratio": _sweep_ratio,
    "per_seed": _per_seed,
    "robust_across": _robust_across,
    "finding": _finding,
    "table": _table,
    "by_seed": _by_seed,
    "scaling": _scaling,
    "robust": _robust,
    "robust_ratio": _robust_ratio,
}
BUILTINS: dict[str, Callable[..., float]] = {"min": min, "max": max, "abs": abs, "log10": _log10}
