"""The paper's claims, checked against our result tables on every run.

Each claim is written once, as data (``config/claims.yaml``): the figure it belongs to, what the paper
states and the value its figure shows, a ``measure`` (an expression over our tables) and a ``holds``
predicate on that measure. :func:`evaluate` computes every claim of one figure from that figure's
tables; :func:`to_markdown` gathers them. Nothing measured is typed in: ``measured`` is always the
expression's value on the tables of this run.

Measures are arithmetic (``+ - * /``, numbers, ``min``, ``max``, ``abs``) over these functions, whose
bare-word arguments are names (``first(mf, r10, cdln, 1e-10)``):

- ``first(experiment, panel, model, level, x=iteration, column=recovery_error, over=mean)``: per seed,
  the first checkpoint's ``x`` (iteration or seconds) at which ``column`` <= ``level``; NaN when a seed
  never gets there; then the mean (or min, max) over seeds. From ``<experiment>_curves.csv``.
- ``final(experiment, panel, model, column=recovery_error, over=gmean)``: each seed's last value.
- ``runs(experiment, panel, model, column, over=mean, alpha=None)``: a column of ``<experiment>_runs.csv``
  (stop_iteration, stop_seconds, converged, ...), optionally at one alpha (a number, min, max or all).
- ``crossover(experiment, panel, column=stop_iteration)``: the smallest alpha from which every larger
  alpha's C-DLN needs less of ``column`` (mean over seeds) than the original DLN.
- ``finding(analysis, task, path)``: a value of ``<analysis>_findings.json``; ``path`` (quoted) is
  ``/``-separated (``top_left_last/iteration_0.99``); true/false count as 1/0.
- ``table(name, model, column)``: a real-data table's value (``movielens.csv``, ``nonlinear.csv``).
- ``scaling(model, quantity, d=max)``: a value of ``scaling.csv`` at one d (a number, min or max).

Predicates: ``above``, ``below``, ``at_least``, ``at_most``, ``between: [low, high]``, ``equals`` (to
1e-12 relative; true counts as 1). A NaN measure never holds.

A grid other than the paper's maps the paper's panel names to its own (``claims.panels`` of its
config); a claim about a panel it does not map does not apply there, and neither do claims marked
``absolute`` (thresholds read off the paper's figures, meaningful at the paper's sizes only) unless
the config sets ``claims.absolute``. Claims that read seconds name the device those seconds were
measured on and, in brackets, the engine path each model's steps took (the runs tables'
``engine_path``); a grid whose config sets ``claims.timing: false`` (the reduced CI grid, whose runs
take milliseconds on a shared machine) leaves them out. A claim known not to reproduce carries its reason
(``deviation``): it is still evaluated and reported, and :func:`violations` does not count it.
"""

from __future__ import annotations

import ast
import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

PREDICATES = ("above", "below", "at_least", "at_most", "between", "equals")
CLAIM_KEYS = ("id", "figure", "claim", "paper", "measure", "holds", "absolute", "deviation")
COLUMNS = ["figure", "id", "claim", "paper", "measured", "holds", "device", "measure", "deviation"]
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
    absolute: bool = False
    deviation: str | None = None

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
            if function in ("first", "final"):
                files[f"{names[0]}_curves.csv"] = None
            if function in ("first", "runs", "crossover", "final"):
                files[f"{names[0]}_runs.csv"] = None  # device names, and the runs themselves
            elif function == "finding":
                files[f"{names[0]}_findings.json"] = None
            elif function == "table":
                files[f"{names[0]}.csv"] = None
            elif function == "scaling":
                files["scaling.csv"] = None
    return list(files)


# ---- evaluation ----


@dataclass
class Tables:
    """A results root's tables, read on demand, with the panel map of the grid that made them."""

    directory: Path
    panels: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    devices: set[str] = field(default_factory=set)  # devices of the seconds the current claim read
    _cache: dict[str, Any] = field(default_factory=dict)

    def csv(self, name: str) -> pd.DataFrame:
        if name not in self._cache:
            path = self.directory / name
            if not path.is_file():
                raise FileNotFoundError(f"{path} does not exist: make the figure's tables first")
            self._cache[name] = pd.read_csv(path)
        return self._cache[name]

    def json(self, name: str) -> dict:
        if name not in self._cache:
            self._cache[name] = json.loads((self.directory / name).read_text())
        return self._cache[name]

    def panel(self, experiment: str, panel: str) -> str:
        """This grid's name of the paper's ``panel`` (NotApplicable when it has none)."""
        if experiment not in self.panels:
            return panel
        if panel not in self.panels[experiment]:
            raise NotApplicable(f"{experiment} has no counterpart of the paper's panel {panel}")
        return self.panels[experiment][panel]

    def select(self, experiment: str, kind: str, panel: str, model: str) -> pd.DataFrame:
        frame = self.csv(f"{experiment}_{kind}.csv")
        panel = self.panel(experiment, panel)
        rows = frame[(frame["panel"].astype(str) == panel) & (frame["model"] == model)]
        if rows.empty:
            raise ClaimError(f"{experiment}_{kind}.csv has no rows for panel {panel!r}, model {model!r}")
        return rows

    def note_devices(self, rows: pd.DataFrame) -> None:
        """Remember the devices (and engine paths, where the runs table has them) of the seconds read."""
        column = "device_name" if "device_name" in rows else "device"
        names = rows[column].astype(str)
        if "engine_path" in rows:
            paths = rows["engine_path"].fillna("").astype(str)
            names = names.where(paths == "", names + " [" + paths + "]")
        self.devices.update(names.unique())


def _aggregate(values: pd.Series | np.ndarray, over: str) -> float:
    values = np.asarray(values, dtype=float)
    if over == "gmean":
        return float(np.exp(np.log(np.clip(values, 1e-300, None)).mean()))
    return float({"mean": np.mean, "min": np.min, "max": np.max, "sum": np.sum}[over](values))


def _first(tables: Tables, experiment, panel, model, level, x="iteration", column="recovery_error", over="mean"):
    curves = tables.select(experiment, "curves", panel, model)
    per_seed = []
    for _, seed in curves.groupby("seed"):
        hit = seed[seed[column] <= level]
        per_seed.append(float(hit[x].iloc[0]) if not hit.empty else math.nan)
    if x == "seconds":
        tables.note_devices(tables.select(experiment, "runs", panel, model))
    return _aggregate(per_seed, over)


def _final(tables: Tables, experiment, panel, model, column="recovery_error", over="gmean"):
    curves = tables.select(experiment, "curves", panel, model)
    return _aggregate(curves.groupby("seed")[column].last(), over)


def _runs(tables: Tables, experiment, panel, model, column, over="mean", alpha=None):
    rows = tables.select(experiment, "runs", panel, model)
    if alpha is not None and alpha != "all":
        target = {"min": rows["alpha"].min(), "max": rows["alpha"].max()}.get(alpha, alpha)
        rows = rows[np.isclose(rows["alpha"], float(target))]
    if "seconds" in column:
        tables.note_devices(rows)
    return _aggregate(rows[column].astype(float), over)


def _crossover(tables: Tables, experiment, panel, column="stop_iteration"):
    reference = _runs(tables, experiment, panel, "original", column)
    sweep = tables.select(experiment, "runs", panel, "cdln").groupby("alpha")[column].mean().sort_index()
    below = sweep < reference
    if "seconds" in column:
        tables.note_devices(tables.select(experiment, "runs", panel, "cdln"))
    for alpha in sweep.index:
        if below.loc[alpha:].all():
            return float(alpha)
    return math.nan


def _finding(tables: Tables, analysis, task, path):
    value: Any = tables.json(f"{analysis}_findings.json")[task]
    for key in str(path).split("/"):
        value = value[int(key)] if isinstance(value, list) else value[key]
    return float(value)


def _table(tables: Tables, name, model, column):
    frame = tables.csv(f"{name}.csv")
    rows = frame[frame["model"] == model]
    if rows.empty:
        raise ClaimError(f"{name}.csv has no row for model {model!r}; models: {sorted(frame['model'])}")
    if "seconds" in column:
        tables.note_devices(rows)
    return float(rows[column].iloc[0])


def _scaling(tables: Tables, model, quantity, d="max"):
    frame = tables.csv("scaling.csv")
    rows = frame[(frame["model"] == model) & (frame["quantity"] == quantity)]
    size = {"min": rows["d"].min(), "max": rows["d"].max()}.get(d, d)
    rows = rows[rows["d"] == size]
    if "second" in quantity:
        tables.note_devices(rows)
    return float(rows["value"].iloc[0])


FUNCTIONS: dict[str, Callable[..., float]] = {
    "first": _first,
    "final": _final,
    "runs": _runs,
    "crossover": _crossover,
    "finding": _finding,
    "table": _table,
    "scaling": _scaling,
}
BUILTINS: dict[str, Callable[..., float]] = {"min": min, "max": max, "abs": abs}


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


def format_value(value: float) -> str:
    if value is None or math.isnan(value):
        return "never / n/a"
    if float(value).is_integer() and abs(value) < 1e7:
        return f"{int(value)}"
    return f"{value:.3g}"


def evaluate(
    claims: list[Claim],
    figure: str,
    tables_dir: str | Path,
    panels: Mapping[str, Mapping[str, str]] | None = None,
    absolute: bool = True,
    timing: bool = True,
) -> pd.DataFrame:
    """The claims of ``figure`` that apply to this grid (see the module docstring), each with its
    measured value and verdict."""
    tables = Tables(Path(tables_dir), panels or {})
    rows = []
    for claim in claims:
        if claim.figure != figure or (claim.absolute and not absolute):
            continue
        tables.devices = set()
        try:
            value = float(_value(_parse(claim), tables, claim))
        except NotApplicable:
            continue
        if tables.devices and not timing:
            continue
        rows.append(
            {
                "figure": figure,
                "id": claim.id,
                "claim": claim.claim,
                "paper": claim.paper,
                "measured": format_value(value),
                "holds": claim.check(value),
                "device": ", ".join(sorted(tables.devices)) if tables.devices else "",
                "measure": claim.measure,
                "deviation": claim.deviation or "",
            }
        )
    return pd.DataFrame(rows, columns=COLUMNS)


def violations(table: pd.DataFrame) -> pd.DataFrame:
    """Claims that do not hold and are not known deviations."""
    known = table["deviation"].fillna("").astype(str).str.len() > 0
    return table[~table["holds"].astype(bool) & ~known]


def to_markdown(table: pd.DataFrame, config_name: str) -> str:
    """All claims, per figure: the statement, the paper's value, ours, whether it holds (and why not)."""
    holds = table["holds"].astype(bool)
    known = table["deviation"].fillna("").astype(str).str.len() > 0
    lines = [
        f"# The paper's claims on this run (config `{config_name}`)",
        "",
        f"{int(holds.sum())} of {len(table)} claims hold; {int((~holds & known).sum())} do not and are known "
        f"deviations (reasons below); {int((~holds & ~known).sum())} do not and are not. `measured` is computed "
        "from this run's tables by the claim's measure (config/claims.yaml); seconds were measured on the "
        "device named (with the engine path, in brackets, that each model's steps ran on).",
        "",
    ]
    for figure, group in table.groupby("figure", sort=False):
        lines += [f"## {figure}", "", "| claim | paper | measured | holds | device |", "|---|---|---|---|---|"]
        for row in group.itertuples():
            verdict = "yes" if row.holds else ("no (known deviation)" if row.deviation else "**no**")
            cells = [row.claim, row.paper, f"`{row.measured}`", verdict, row.device or "-"]
            lines.append("| " + " | ".join(str(cell).replace("|", "/") for cell in cells) + " |")
        deviations = group[group["deviation"].fillna("").astype(str).str.len() > 0]
        for row in deviations.itertuples():
            lines.append(f"\n- *{row.id}*: {row.deviation}")
        lines.append("")
    return "\n".join(lines) + "\n"
