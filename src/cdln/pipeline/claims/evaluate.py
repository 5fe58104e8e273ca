"""A figure's claims evaluated on a run's tables: one row each (measured value, verdict, how seeds were
combined, devices), and the rows that are violations."""

from __future__ import annotations

import ast
import itertools
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from cdln.pipeline.claims.measures import ClaimError, NotApplicable, Tables
from cdln.pipeline.claims.noise import spread
from cdln.pipeline.claims.spec import COLUMNS, NOTE_PLACEHOLDER, PAPER_GRID, Claim, _parse, _value


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
    """The claim's measure on ``tables``; ``tables.devices``, ``tables.timed`` and ``tables.aggregations`` then
    say what it read."""
    tables.devices, tables.aggregations, tables.timed = set(), {}, set()
    return float(_value(_parse(claim), tables, claim))


def timing_noise_range(claim: Claim, tables: Tables) -> tuple[float, float]:
    """The claim's measure with each timed model's seconds at either end of its runs' own timing noise (every
    combination; a ratio of two models' seconds is monotone in each): the range its value could take if each run
    were timed again. What the nominal evaluation noted on ``tables`` is kept."""
    models = sorted(tables.timed)
    saved = tables.devices, tables.aggregations, tables.timed
    values = []
    try:
        for signs in itertools.product((-1, 1), repeat=len(models)):
            tables.perturb = dict(zip(models, signs, strict=True))
            values.append(measure(claim, tables))
    finally:
        tables.perturb = {}
        tables.devices, tables.aggregations, tables.timed = saved
    finite = [v for v in values if not math.isnan(v)]
    return (min(finite), max(finite)) if finite else (math.nan, math.nan)


def fill_note(note: str, claim: Claim, tables: Tables, measured: str) -> str:
    """``note`` with each placeholder filled from this run's tables: ``{measured}`` is the row's value, any other
    ``{expression}`` an expression of the measure language (printed like a measured value)."""

    def fill(match: re.Match) -> str:
        expression = match[1].strip()
        if expression == "measured":
            return measured
        saved = tables.devices, tables.aggregations, tables.timed
        try:
            return format_value(float(_value(ast.parse(expression, mode="eval"), tables, claim)))
        except (ClaimError, NotApplicable, KeyError, ValueError) as error:
            raise ClaimError(f"claim {claim.id}: the note's placeholder {{{expression}}}: {error}") from None
        finally:
            tables.devices, tables.aggregations, tables.timed = saved

    return NOTE_PLACEHOLDER.sub(fill, note)


@dataclass
class Verdict:
    """A row's value and verdict on some tables: it holds, or fails, or fails but within its runs' timing noise
    (``within_noise``: timed again, the seed that fails it could pass); ``aggregation`` says how it was read."""

    value: float
    holds: bool
    within_noise: bool
    aggregation: str

    @property
    def decided(self) -> str:
        """``holds``, ``fails`` or ``within noise`` (neither)."""
        return "holds" if self.holds else "within noise" if self.within_noise else "fails"


def judge(claim: Claim, tables: Tables) -> Verdict:
    """The row's verdict on ``tables`` (:func:`evaluate`'s rule): a row that reads seconds and fails is within noise
    when its bound lies inside the range its runs' own timing noise allows (:func:`timing_noise_range`). Raises
    :class:`NotApplicable` when the row does not apply to the tables."""
    value = measure(claim, tables)
    aggregation, holds, noisy = "; ".join(tables.aggregations), claim.check(value), False
    if tables.devices:
        low, high = spread(claim, tables)
        aggregation += f"; spread over seeds {format_value(low)}-{format_value(high)}"
        if not holds:
            low, high = timing_noise_range(claim, tables)
            noisy = any(claim.check(v) for v in (low, high, *claim.bounds()) if low <= v <= high)
            aggregation += f"; within the runs' timing noise {format_value(low)}-{format_value(high)}"
    return Verdict(value, holds, noisy, aggregation)


def evaluate(
    claims: list[Claim],
    figure: str,
    tables_dir: str | Path,
    panels: Mapping[str, Mapping[str, str | None]] | None = None,
    absolute: bool = True,
    timing: bool = True,
    grid: str = PAPER_GRID,
) -> pd.DataFrame:
    """The claims of ``figure`` that apply to this grid (see the module docstring), each with its
    measured value, verdict and how the seeds were combined. A claim whose measure names a panel,
    model, task or value that the tables do not have raises :class:`ClaimError` naming the claim.

    A row that reads seconds and fails is "within noise" when its bound lies inside the range the runs' own
    timing noise allows (:func:`timing_noise_range`): timed again, the seed that fails it could pass. A seed that
    fails outside its noise fails the row. A row that fails shows its known-deviation note for ``grid`` (the
    config's ``output_root``), filled in (:func:`fill_note`); one that holds shows none."""
    tables = Tables(Path(tables_dir), panels or {})
    rows = []
    for claim in claims:
        if claim.figure != figure or (claim.absolute and not absolute):
            continue
        try:
            verdict = judge(claim, tables)
        except NotApplicable:
            continue
        except ClaimError as error:
            raise ClaimError(f"claim {claim.id} ({claim.figure}): {error}") from None
        if tables.devices and not timing:
            continue
        measured = format_value(verdict.value, claim.bounds())
        note = claim.note_for(grid) if verdict.decided == "fails" else None
        rows.append(
            _row(
                claim,
                measured,
                verdict.holds,
                aggregation=verdict.aggregation,
                device=", ".join(sorted(tables.devices)),
                within_noise="within noise" if verdict.within_noise else "",
                deviation=fill_note(note, claim, tables, measured) if note else "",
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
        "other_size": claim.other_size or "", "hardware": claim.hardware or "",
        "construction": claim.construction or "", "category": claim.category,
        "measure": claim.measure, "deviation": "",
    } | empty | columns  # fmt: skip


def _flag(table: pd.DataFrame, column: str) -> pd.Series:
    if column not in table:
        return pd.Series(False, index=table.index)
    return table[column].fillna("").astype(str).str.len() > 0


def violations(table: pd.DataFrame) -> pd.DataFrame:
    """Evaluated claims that do not hold and are not known deviations."""
    undecided = _flag(table, "not_evaluated") | _flag(table, "within_noise")
    return table[~table["holds"].astype(bool) & ~_flag(table, "deviation") & ~undecided]
