"""The paper's claims, checked against our result tables on every run.

Each claim is written once, as data (``config/claims.yaml``): the figure it belongs to, what the paper
states and the value its figure shows, a ``measure`` (an expression over our tables) and a ``holds``
predicate on that measure. :func:`evaluate` computes every claim of one figure from that figure's
tables; :func:`to_markdown` gathers them. Nothing measured is typed in: ``measured`` is always the
expression's value on the tables of this run.

Measures are arithmetic (``+ - * /``, numbers, ``min``, ``max``, ``abs``, ``log10``) over these functions, whose
bare-word arguments are names (``first(mf, r10, cdln, 1e-10)``). ``over`` says how seeds are combined:
``mean``, ``min``, ``max`` (the worst seed, for a bound that must hold on every seed) or ``gmean``.

- ``first(experiment, panel, model, level, x=iteration, column=recovery_error, over=mean)``: per seed,
  the first checkpoint's ``x`` (iteration or seconds) at which ``column`` <= ``level``; NaN when a seed
  never gets there. From ``<experiment>_curves.csv``.
- ``final(experiment, panel, model, column=recovery_error, over=max)``: each seed's last value.
- ``runs(experiment, panel, model, column, over=mean, alpha=None)``: a column of ``<experiment>_runs.csv``
  (stop_iteration, stop_seconds, converged, ...), optionally at one alpha (a number, min, max or all).
- ``paired(experiment, panel, model_a, model_b, quantity, level=None, x=iteration, column=recovery_error,
  over=min)``: per seed, ``model_a``'s quantity over ``model_b``'s on the same problem instance:
  ``first`` (needs ``level``), ``final``, or a runs-table column (``stop_iteration``, ``stop_seconds``).
- ``dominance(experiment, panel, model_a, model_b, floor=1e-10)``: the largest ratio of ``model_a``'s
  recovery error to ``model_b``'s over every checkpoint both runs reached and every seed, counting only
  checkpoints where both errors are above ``floor`` times their value at iteration 0 (below that the
  ratio compares rounding, not learning); the row's ``over`` names the seed and iteration of the worst
  ratio and how many checkpoints are above 1.
- ``crossover(experiment, panel, column=stop_iteration)``: the alpha from which the C-DLN needs less of
  ``column`` (mean over seeds) than the original DLN at every larger swept alpha, interpolated linearly
  between the last swept alpha where it needs more and the next; NaN when there is no crossing inside the
  sweep (the C-DLN faster at every alpha, or never faster).
- ``sweep_rise(experiment, panel, column=stop_iteration)``: the largest rise of the C-DLN's ``column``
  (mean over seeds) from one swept alpha to the next; at most 0 when it never rises as alpha grows.
- ``finding(analysis, task, path, over=max)``: a value of ``<analysis>_findings.json``, per seed
  (``by_seed``), combined ``over`` seeds; ``path`` (quoted) is ``/``-separated
  (``top_left_last/iteration_0.99``); true/false count as 1/0.
- ``table(name, model, column)``: a real-data table's value (``movielens.csv``, ``nonlinear.csv``: means
  over seeds, with ``<column>_min``/``_max``).
- ``by_seed(name, model_a, model_b, column, op=ratio, over=min, column_b=column)``: per seed (or split), a
  real-data run's ``column`` of ``model_a`` against ``model_b``'s ``column_b`` (``<name>_runs.csv``, the same
  seed): ``ratio`` (a / b), ``difference`` (a - b) or ``gap`` (|a - b|).
- ``scaling(model, quantity, d=max)``: a value of ``scaling.csv`` at one d (a number, min or max).
- ``robust(factor, value, model, column, over=max)``: a column of ``robustness.csv`` (the robustness
  figure's sweeps, :mod:`cdln.pipeline.robustness`) at one swept value, combined over seeds.
- ``robust_ratio(factor, value, column, over=min, a=original, b=cdln)``: per seed, model ``a``'s column
  over model ``b``'s at one swept value (e.g. ``level_seconds``: the speed-up to the figure's level).

Predicates: ``above``, ``below``, ``at_least``, ``at_most``, ``between: [low, high]``, ``equals`` (to
1e-12 relative; true counts as 1). A NaN measure never holds.

Every row says over what it was measured (``aggregation``: e.g. "min over 3 seeds (paired)"), whether
its threshold or settings were fitted to the same figure (``calibrated``: such rows are reported apart
and not counted in the headline), and its ``section``: ``abstract`` (the abstract's own claims),
``paper`` (a figure's) or ``ours`` (claims of figures that are not the paper's).

A grid other than the paper's maps the paper's panel names to its own (``claims.panels`` of its
config; ``null`` for a paper panel it does not have): a claim about an unmapped panel does not apply
there, a panel missing from the map is an error naming the claim (a typo must not pass silently), and
claims marked ``absolute`` (thresholds read off the paper's figures, meaningful at the paper's sizes
only) apply only where the config sets ``claims.absolute``. Claims that read seconds name the device
those seconds were measured on and, in brackets, the engine path each model's steps took (the runs
tables' ``engine_path``); a grid whose config sets ``claims.timing: false`` (the reduced CI grid, whose
runs take milliseconds on a shared machine) leaves them out. A row that reads seconds also states its
measure's spread over seeds (:func:`spread`); when its bound lies inside that spread (some seeds hold, some
fail) it reads "within noise", neither holds nor fails. A claim known not to reproduce carries its
measured reason (``deviation``): it is still evaluated and reported, and :func:`violations` does not
count it.
"""

from __future__ import annotations

import ast
import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

PREDICATES = ("above", "below", "at_least", "at_most", "between", "equals")
SECTIONS = ("abstract", "paper", "ours")
CLAIM_KEYS = ("id", "figure", "section", "claim", "paper", "measure", "holds", "absolute", "calibrated", "deviation")
COLUMNS = [
    "figure",
    "section",
    "id",
    "claim",
    "paper",
    "measured",
    "holds",
    "aggregation",
    "device",
    "calibrated",
    "measure",
    "deviation",
    "not_evaluated",  # why a row was not evaluated (its data is absent) and the step that would evaluate it
    "within_noise",  # a timing row whose bound lies inside its measure's spread over seeds: neither holds nor fails
]
OVER = ("mean", "min", "max", "gmean")
ID = re.compile(r"^[a-z0-9][a-z0-9_-]*$")


class ClaimError(ValueError):
    """A malformed claims file or measure; the message names the claim."""


class NotApplicable(Exception):  # noqa: N818 (a signal, not an error)
    """The claim is about a panel (or sizes) this grid does not have."""


@dataclass(frozen=True)
class Claim:
    id: str
    figure: str
    claim: str
    paper: str
    measure: str
    holds: Mapping[str, Any]
    section: str = "paper"
    absolute: bool = False
    calibrated: str | None = None  # what was fitted to the same figure, if anything
    deviation: str | None = None

    def bounds(self) -> list[float]:
        """The numbers the predicate compares with."""
        ((_, bound),) = self.holds.items()
        return [float(b) for b in bound] if isinstance(bound, (list, tuple)) else [float(bound)]

    def check(self, value: float) -> bool:
        """Whether ``value`` satisfies this claim's predicate (NaN never does)."""
        if value is None or math.isnan(value):
            return False
        ((kind, bound),) = self.holds.items()
        if kind == "between":
            return bound[0] <= value <= bound[1]
        if kind == "equals":
            return abs(value - bound) <= 1e-12 * max(1.0, abs(bound))
        return {"above": value > bound, "below": value < bound, "at_least": value >= bound, "at_most": value <= bound}[
            kind
        ]

    def calls(self) -> list[tuple[str, list[str]]]:
        """(function, leading name arguments) of every call in the measure (which tables it reads)."""
        return [(node.func.id, [_name(a) for a in node.args]) for node in ast.walk(_parse(self))
                if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)]  # fmt: skip


def load_claims(path: str | Path) -> list[Claim]:
    """The claims of a claims file, checked: known keys, unique ids, a single known predicate, a measure
    that parses and calls only known functions."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ClaimError(f"claims file {path} does not exist")
    entries = yaml.safe_load(path.read_text())
    if not isinstance(entries, list):
        raise ClaimError(f"{path}: a list of claims is expected")
    claims, ids = [], set()
    for index, entry in enumerate(entries):
        where = f"{path}: claim {entry.get('id', index) if isinstance(entry, dict) else index}"
        if not isinstance(entry, dict):
            raise ClaimError(f"{where}: a mapping is expected")
        unknown = sorted(set(entry) - set(CLAIM_KEYS))
        missing = [key for key in ("id", "figure", "claim", "paper", "measure", "holds") if key not in entry]
        if unknown or missing:
            raise ClaimError(f"{where}: unknown keys {unknown}, missing keys {missing}; valid: {list(CLAIM_KEYS)}")
        if not ID.match(str(entry["id"])) or entry["id"] in ids:
            raise ClaimError(f"{where}: ids must be unique and match {ID.pattern}")
        ids.add(entry["id"])
        holds = entry["holds"]
        if not isinstance(holds, dict) or len(holds) != 1 or next(iter(holds)) not in PREDICATES:
            raise ClaimError(f"{where}: holds must be one of {list(PREDICATES)} with its bound; got {holds!r}")
        if entry.get("section", "paper") not in SECTIONS:
            raise ClaimError(f"{where}: section must be one of {list(SECTIONS)}; got {entry['section']!r}")
        claim = Claim(**{key: entry[key] for key in CLAIM_KEYS if key in entry})
        for function, _ in claim.calls():
            if function not in FUNCTIONS and function not in BUILTINS:
                raise ClaimError(
                    f"{where}: unknown function {function!r} in the measure; known: {sorted([*FUNCTIONS, *BUILTINS])}"
                )
        claims.append(claim)
    return claims


def tables_read(claims: list[Claim], figure: str) -> list[str]:
    """File names (under tables/) the claims of ``figure`` read: a figure's claims rule depends on them."""
    files: dict[str, None] = {}
    for claim in claims:
        if claim.figure != figure:
            continue
        for function, names in claim.calls():
            if function in ("first", "final", "paired", "dominance"):
                files[f"{names[0]}_curves.csv"] = None
            if function in ("first", "runs", "crossover", "sweep_rise", "final", "paired", "dominance"):
                files[f"{names[0]}_runs.csv"] = None  # device names, and the runs themselves
            elif function == "finding":
                files[f"{names[0]}_findings.json"] = None
            elif function == "table":
                files[f"{names[0]}.csv"] = None
            elif function == "by_seed":
                files[f"{names[0]}_runs.csv"] = None
            elif function == "scaling":
                files["scaling.csv"] = None
            elif function in ("robust", "robust_ratio"):
                files["robustness.csv"] = None
    return list(files)


# ---- evaluation ----


@dataclass
class Tables:
    """A results root's tables, read on demand, with the panel map of the grid that made them.

    While a claim is evaluated, ``devices`` collects the devices of the seconds it read and
    ``aggregations`` how each function combined the seeds."""

    directory: Path
    panels: Mapping[str, Mapping[str, str | None]] = field(default_factory=dict)
    devices: set[str] = field(default_factory=set)
    aggregations: dict[str, None] = field(default_factory=dict)
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
    if x == "seconds":
        tables.note_devices(tables.select(experiment, "runs", panel, model))
    return pd.Series(per_seed, dtype=float)


def _final_per_seed(tables: Tables, experiment, panel, model, column="recovery_error") -> pd.Series:
    return tables.select(experiment, "curves", panel, model).groupby("seed")[column].last().astype(float)


def _runs_per_seed(tables: Tables, experiment, panel, model, column) -> pd.Series:
    rows = tables.select(experiment, "runs", panel, model)
    if "seconds" in column:
        tables.note_devices(rows)
    return rows.groupby("seed")[column].mean().astype(float)


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
    if "seconds" in column:
        tables.note_devices(rows)
    n_seeds = rows["seed"].nunique() if "seed" in rows else len(rows)
    tables.note_seeds(n_seeds, over)
    if len(rows) > n_seeds:
        tables.aggregations[f"{over} over {len(rows)} runs ({alpha} alpha)"] = None
    return _aggregate(rows[column].astype(float), over)


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


def _alpha_sweep(tables: Tables, experiment, panel, column) -> pd.Series:
    """The C-DLN's ``column`` per swept alpha (mean over seeds), in increasing alpha."""
    rows = tables.select(experiment, "runs", panel, "cdln")
    if "seconds" in column:
        tables.note_devices(rows)
    return rows.groupby("alpha")[column].mean().sort_index()


def _crossover(tables: Tables, experiment, panel, column="stop_iteration"):
    reference = _runs(tables, experiment, panel, "original", column)
    sweep = _alpha_sweep(tables, experiment, panel, column)
    alphas, gap = sweep.index.to_numpy(float), sweep.to_numpy(float) - reference  # gap < 0: the C-DLN is faster
    for position in range(len(alphas)):
        if (gap[position:] < 0).all():
            if position == 0:
                return math.nan  # faster at every alpha: no crossing inside the sweep
            (a0, a1), (g0, g1) = alphas[position - 1 : position + 1], gap[position - 1 : position + 1]
            return float(a0 + (a1 - a0) * g0 / (g0 - g1))  # where the gap crosses 0, linearly between the two
    return math.nan


def _sweep_rise(tables: Tables, experiment, panel, column="stop_iteration"):
    sweep = _alpha_sweep(tables, experiment, panel, column)
    tables.aggregations[f"mean over seeds, {len(sweep)} alphas"] = None
    return float(np.diff(sweep.to_numpy(float)).max()) if len(sweep) > 1 else math.nan


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
    if "seconds" in column:
        tables.note_devices(rows)
    if "n_seeds" in rows:
        n_seeds = int(rows["n_seeds"].iloc[0])
        spread = "spread over" if column.endswith(("_min", "_max")) else "mean of"
        tables.aggregations[f"{spread} {n_seeds} seeds" if n_seeds > 1 else "1 seed"] = None
    return float(rows[column].iloc[0])


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
        if "seconds" in model_column:
            tables.note_devices(rows)
        per_seed.append(rows.set_index("seed")[model_column].astype(float))
    return _seed_pairs(tables, f"{name}_runs.csv", tuple(zip((model_a, model_b), per_seed, strict=True)), op, over)


def _scaling(tables: Tables, model, quantity, d="max"):
    frame = tables.csv("scaling.csv")
    rows = frame[(frame["model"] == model) & (frame["quantity"] == quantity)]
    size = {"min": rows["d"].min(), "max": rows["d"].max()}.get(d, d)
    rows = rows[rows["d"] == size]
    if "second" in quantity:
        tables.note_devices(rows)
    tables.aggregations["median of repeats, 1 problem"] = None
    return float(rows["value"].iloc[0])


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
    if "seconds" in column:
        tables.note_devices(rows)
    tables.note_seeds(len(rows), over)
    return _aggregate(rows[column], over)


def _robust_ratio(tables: Tables, factor, value, column, over="min", a="original", b="cdln"):
    from cdln.pipeline import robustness

    frame = _robust_frame(tables, column)
    try:
        ratios = robustness.paired_ratio(frame, factor, value, column, a, b)
    except ValueError as error:
        raise ClaimError(str(error)) from None
    if "seconds" in column:
        for model in (a, b):
            tables.note_devices(robustness.select(frame, factor, value, model))
    tables.note_seeds(len(ratios), over, paired=True)
    return _aggregate(ratios, over)


def _log10(value: float) -> float:
    return math.log10(value) if value > 0 else math.nan


FUNCTIONS: dict[str, Callable[..., float]] = {
    "first": _first,
    "final": _final,
    "runs": _runs,
    "paired": _paired,
    "dominance": _dominance,
    "crossover": _crossover,
    "sweep_rise": _sweep_rise,
    "finding": _finding,
    "table": _table,
    "by_seed": _by_seed,
    "scaling": _scaling,
    "robust": _robust,
    "robust_ratio": _robust_ratio,
}
BUILTINS: dict[str, Callable[..., float]] = {"min": min, "max": max, "abs": abs, "log10": _log10}


def _parse(claim: Claim) -> ast.Expression:
    try:
        return ast.parse(claim.measure, mode="eval")
    except SyntaxError as error:
        raise ClaimError(f"claim {claim.id}: measure {claim.measure!r} does not parse: {error.msg}") from None


def _name(node: ast.AST) -> str:
    return node.id if isinstance(node, ast.Name) else str(getattr(node, "value", ""))


def _value(node: ast.AST, tables: Tables, claim: Claim) -> Any:
    """Evaluate an allowed expression node: numbers, names (as strings), + - * /, calls."""
    if isinstance(node, ast.Expression):
        return _value(node.body, tables, claim)
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float, str)):
        return node.value
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return -_value(node.operand, tables, claim)
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Sub, ast.Mult, ast.Div)):
        left, right = _value(node.left, tables, claim), _value(node.right, tables, claim)
        if isinstance(node.op, ast.Div):
            return left / right if right != 0 else math.nan
        return {ast.Add: left + right, ast.Sub: left - right, ast.Mult: left * right}[type(node.op)]
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        args = [_value(arg, tables, claim) for arg in node.args]
        kwargs = {kw.arg: _value(kw.value, tables, claim) for kw in node.keywords}
        if node.func.id in BUILTINS:
            return BUILTINS[node.func.id](*args)
        return FUNCTIONS[node.func.id](tables, *args, **kwargs)
    raise ClaimError(f"claim {claim.id}: {ast.unparse(node)!r} is not allowed in a measure")


Interval = tuple[float, float]
OVER_FUNCTIONS = ("first", "final", "runs", "paired", "finding", "by_seed", "robust", "robust_ratio")


def spread(claim: Claim, tables: Tables) -> Interval:
    """The range of ``claim``'s measure over seeds, by interval arithmetic: a function that combines seeds
    (``over``) gives [its min over seeds, its max over seeds], ``table`` its ``_min``/``_max`` columns where
    the table has them (the spread of a mean over seeds), anything else its value."""
    saved = tables.devices, tables.aggregations
    try:
        return _interval(_parse(claim).body, tables, claim)
    finally:
        tables.devices, tables.aggregations = saved


def _interval(node: ast.AST, tables: Tables, claim: Claim) -> Interval:
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in FUNCTIONS:
        name, args = node.func.id, [_value(arg, tables, claim) for arg in node.args]
        kwargs = {kw.arg: _value(kw.value, tables, claim) for kw in node.keywords}
        if name in OVER_FUNCTIONS:
            low, high = (float(FUNCTIONS[name](tables, *args, **(kwargs | {"over": o}))) for o in ("min", "max"))
            return low, high
        if name == "table" and f"{args[2]}_min" in tables.csv(f"{args[0]}.csv"):
            return _table(tables, args[0], args[1], f"{args[2]}_min"), _table(
                tables, args[0], args[1], f"{args[2]}_max"
            )
        value = float(_value(node, tables, claim))
        return value, value
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in BUILTINS:
        parts = [_interval(arg, tables, claim) for arg in node.args]
        if node.func.id == "abs":
            ((low, high),) = parts
            return (low, high) if low >= 0 else (-high, -low) if high <= 0 else (0.0, max(-low, high))
        if node.func.id == "log10":
            ((low, high),) = parts
            return _log10(low), _log10(high)
        pick = min if node.func.id == "min" else max
        return pick(p[0] for p in parts), pick(p[1] for p in parts)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        low, high = _interval(node.operand, tables, claim)
        return -high, -low
    if isinstance(node, ast.BinOp):
        (a, b), (c, d) = _interval(node.left, tables, claim), _interval(node.right, tables, claim)
        if isinstance(node.op, ast.Div):
            if c <= 0 <= d:
                return math.nan, math.nan
            c, d = 1 / d, 1 / c
        if isinstance(node.op, (ast.Mult, ast.Div)):
            products = [a * c, a * d, b * c, b * d]
            return min(products), max(products)
        return (a + c, b + d) if isinstance(node.op, ast.Add) else (a - d, b - c)
    value = float(_value(node, tables, claim))
    return value, value


def format_value(value: float, bounds: Sequence[float] = ()) -> str:
    """3 significant digits, more where fewer would print a value equal to a bound it is not equal to (so a
    failing 1.1016 against "at most 1.1" never reads 1.1)."""
    if value is None or math.isnan(value):
        return "never / n/a"
    if float(value).is_integer() and abs(value) < 1e7:
        return f"{int(value)}"
    for digits in range(3, 18):
        text = f"{value:.{digits}g}"
        if all(float(text) != bound or value == bound for bound in bounds):
            return text
    return repr(value)


def measure(claim: Claim, tables: Tables) -> float:
    """The claim's measure on ``tables``; ``tables.devices`` and ``tables.aggregations`` then say what it read."""
    tables.devices, tables.aggregations = set(), {}
    return float(_value(_parse(claim), tables, claim))


def evaluate(
    claims: list[Claim],
    figure: str,
    tables_dir: str | Path,
    panels: Mapping[str, Mapping[str, str | None]] | None = None,
    absolute: bool = True,
    timing: bool = True,
) -> pd.DataFrame:
    """The claims of ``figure`` that apply to this grid (see the module docstring), each with its
    measured value, verdict and how the seeds were combined. A claim whose measure names a panel,
    model, task or value that the tables do not have raises :class:`ClaimError` naming the claim."""
    tables = Tables(Path(tables_dir), panels or {})
    rows = []
    for claim in claims:
        if claim.figure != figure or (claim.absolute and not absolute):
            continue
        try:
            value = measure(claim, tables)
        except NotApplicable:
            continue
        except ClaimError as error:
            raise ClaimError(f"claim {claim.id} ({claim.figure}): {error}") from None
        if tables.devices and not timing:
            continue
        aggregation, noisy = "; ".join(tables.aggregations), False
        if tables.devices:  # seconds: a verdict inside the measure's spread over seeds is noise
            low, high = spread(claim, tables)
            noisy = claim.check(low) != claim.check(high) and not (math.isnan(low) or math.isnan(high))
            aggregation += f"; spread over seeds {format_value(low)}-{format_value(high)}"
        rows.append(
            _row(
                claim,
                format_value(value, claim.bounds()),
                claim.check(value) and not noisy,
                aggregation=aggregation,
                device=", ".join(sorted(tables.devices)),
                within_noise="within noise" if noisy else "",
            )
        )
    return pd.DataFrame(rows, columns=COLUMNS)


def not_evaluated(claims: list[Claim], figure: str, reason: str, absolute: bool = True) -> pd.DataFrame:
    """The rows of ``figure``'s claims that cannot be evaluated on this run (``reason``: why, and the step that
    would evaluate them): kept in the table, counted apart, never a verdict."""
    rows = [
        _row(claim, "not evaluated", False, not_evaluated=reason)
        for claim in claims
        if claim.figure == figure and (absolute or not claim.absolute)
    ]
    return pd.DataFrame(rows, columns=COLUMNS)


def _row(claim: Claim, measured: str, holds: bool, **columns: str) -> dict[str, Any]:
    """A row of the claims table (:data:`COLUMNS`); ``columns`` fills the evaluation's own, the rest stay empty."""
    empty = {"aggregation": "", "device": "", "not_evaluated": "", "within_noise": ""}
    return {
        "figure": claim.figure, "section": claim.section, "id": claim.id, "claim": claim.claim,
        "paper": claim.paper, "measured": measured, "holds": holds, "calibrated": claim.calibrated or "",
        "measure": claim.measure, "deviation": claim.deviation or "",
    } | empty | columns  # fmt: skip


def _flag(table: pd.DataFrame, column: str) -> pd.Series:
    if column not in table:
        return pd.Series(False, index=table.index)
    return table[column].fillna("").astype(str).str.len() > 0


def violations(table: pd.DataFrame) -> pd.DataFrame:
    """Evaluated claims that do not hold and are not known deviations."""
    undecided = _flag(table, "not_evaluated") | _flag(table, "within_noise")
    return table[~table["holds"].astype(bool) & ~_flag(table, "deviation") & ~undecided]


SECTION_TITLES = {
    "abstract": "The abstract's claims",
    "paper": "The paper's figures",
    "calibrated": "Calibrated claims (reported apart: a threshold or setting was fitted to the same figure)",
    "ours": "Our own claims (figures that are not the paper's)",
}


def headline(table: pd.DataFrame) -> str:
    """'N of M evaluated paper claims hold; J within noise; K not evaluated (why)', the calibrated ones apart,
    and the same for our own claims. Rows within noise or not evaluated are in neither N nor M."""
    holds, calibrated, skipped = table["holds"].astype(bool), _flag(table, "calibrated"), _flag(table, "not_evaluated")
    noisy = _flag(table, "within_noise")
    section = table["section"] if "section" in table else pd.Series("paper", index=table.index)
    paper = section.isin(["abstract", "paper"]) & ~skipped & ~noisy
    counted, ours = paper & ~calibrated, (section == "ours") & ~skipped & ~noisy
    text = (
        f"**{int((holds & counted).sum())} of {int(counted.sum())} evaluated paper claims hold** "
        f"({int((paper & calibrated).sum())} calibrated, reported apart: {int((holds & paper & calibrated).sum())} "
        f"of them hold)"
    )
    if noisy.any():
        text += (
            f"; **{int(noisy.sum())} within noise** (timing rows whose bound lies inside their measure's spread "
            "over seeds: neither hold nor fail)"
        )
    if skipped.any():
        reasons = table.loc[skipped].groupby("figure", sort=False)["not_evaluated"].first()
        why = "; ".join(f"{figure}: {reason}" for figure, reason in reasons.items())
        text += f"; **{int(skipped.sum())} not evaluated** ({why})"
    if ours.any():
        text += f"; {int((holds & ours).sum())} of {int(ours.sum())} of our own claims hold"
    return text + "."


def to_markdown(table: pd.DataFrame, config_name: str) -> str:
    """Every claim, by section then figure: the statement, the paper's value, ours, whether it holds
    (and why not), over what it was measured and on which device."""
    holds, known, skipped = table["holds"].astype(bool), _flag(table, "deviation"), _flag(table, "not_evaluated")
    noisy = _flag(table, "within_noise")
    skipped_or_noisy = skipped | noisy
    holds, known = holds & ~skipped_or_noisy, known & ~skipped_or_noisy
    section = table["section"] if "section" in table else pd.Series("paper", index=table.index)
    group_of = section.where(~(_flag(table, "calibrated") & section.isin(["abstract", "paper"])), "calibrated")
    lines = [
        f"# The paper's claims on this run (config `{config_name}`)",
        "",
        headline(table),
        "",
        f"In all, {int(holds.sum())} of {int((~skipped_or_noisy).sum())} evaluated rows hold; "
        f"{int((~holds & known).sum())} do not and are known deviations, each with its measured reason below; "
        f"{int((~holds & ~known & ~skipped_or_noisy).sum())} do not and are not; {int(noisy.sum())} are within the "
        f"noise of their seconds (the bound inside the measure's spread over seeds, given in `over`); "
        f"{int(skipped.sum())} were not evaluated. "
        "`measured` is computed from this run's tables by the claim's measure (config/claims.yaml); `over` says how "
        "the seeds were combined (a bound on the max, or min, over seeds holds on every seed; *paired* compares the "
        "two networks seed by seed, on the same problem instance); seconds were measured on the device named (with "
        "the engine path, in brackets, that each model's steps ran on).",
        "",
    ]
    for key, title in SECTION_TITLES.items():
        part = table[group_of == key]
        if part.empty:
            continue
        lines += [f"## {title}", ""]
        for figure, group in part.groupby("figure", sort=False):
            lines += [
                f"### {figure}",
                "",
                "| claim | paper | measured | holds | over | calibrated | device |",
                "|---|---|---|---|---|---|---|",
            ]
            for row in group.itertuples():
                verdict = "yes" if row.holds else ("no (known deviation)" if row.deviation else "**no**")
                if isinstance(getattr(row, "within_noise", ""), str) and row.within_noise:
                    verdict = "within noise"
                if isinstance(getattr(row, "not_evaluated", ""), str) and row.not_evaluated:
                    verdict = "not evaluated"
                calibrated = "yes (below)" if row.calibrated else "no"
                cells = [row.claim, row.paper, f"`{row.measured}`", verdict, row.aggregation or "-", calibrated,
                         row.device or "-"]  # fmt: skip
                lines.append("| " + " | ".join(str(cell).replace("|", "/") for cell in cells) + " |")
            for row in group[_flag(group, "calibrated")].itertuples():
                lines.append(f"\n- *{row.id}* (calibrated): {row.calibrated}")
            for row in group[_flag(group, "deviation")].itertuples():
                lines.append(f"\n- *{row.id}*: {row.deviation}")
            skipped_here = group[_flag(group, "not_evaluated")]
            if not skipped_here.empty:
                lines.append(f"\n- not evaluated: {skipped_here['not_evaluated'].iloc[0]}")
            lines.append("")
    return "\n".join(lines) + "\n"
