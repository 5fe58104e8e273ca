"""Regression gate: compare a summary table (:mod:`cdln.pipeline.summary`) with committed expected values.

Checks, per expected row (experiment, panel, model):
- iterations: ``stop_iteration_mean`` and ``reach_iteration_mean`` within ``iterations_rel`` (relative);
- errors: ``final_train_loss_gmean`` and ``final_recovery_error_gmean`` within a factor ``error_factor``,
  except when both are below ``error_floor`` (rounding-level floors differ between platforms);
- convergence: the number of seeds that reached tol is unchanged;
and for every claim in ``faster``: summed over the claim's configurations (pooled, so that the timing
noise of tiny runs averages out), the reference model's ``column`` over the model's is above
``min_speedup``: the C-DLN is faster than the original in seconds (and in iterations) to tol.

``cdln check-regression`` exits 0 when everything holds, 1 with a readable list of every violation
otherwise; ``--write-expected`` writes an expected file from a summary (:func:`expected_from_summary`:
tolerances are fixed constants, never fitted to the run).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import pandas as pd
import yaml

KEY = ("experiment", "panel", "model")
ITERATION_COLUMNS = ("stop_iteration_mean", "reach_iteration_mean")
ERROR_COLUMNS = ("final_train_loss_gmean", "final_recovery_error_gmean")
DEFAULT_TOLERANCES = {"iterations_rel": 0.15, "error_factor": 10.0, "error_floor": 1e-12, "min_speedup": 1.0}


@dataclass
class Violation:
    row: str
    quantity: str
    expected: str
    actual: str

    def __str__(self) -> str:
        return f"  {self.row:<32} {self.quantity:<28} expected {self.expected:<32} got {self.actual}"


def _label(row: dict[str, Any]) -> str:
    return "/".join(str(row[k]) for k in KEY)


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def check(summary: pd.DataFrame, expected: dict[str, Any]) -> list[Violation]:
    """Every violation of ``expected`` (rows, tolerances, faster) by ``summary``."""
    tol = {**DEFAULT_TOLERANCES, **expected.get("tolerances", {})}
    indexed = {tuple(str(v) for v in key): row for key, row in summary.set_index(list(KEY)).iterrows()}
    violations: list[Violation] = []
    for want in expected["rows"]:
        label = _label(want)
        got = indexed.get(tuple(str(want[k]) for k in KEY))
        if got is None:
            violations.append(Violation(label, "row", "present in the summary", "missing"))
            continue
        for column in ITERATION_COLUMNS:
            if column not in want:
                continue
            exp, act = want[column], got[column]
            if _is_missing(exp) or _is_missing(act):
                if _is_missing(exp) != _is_missing(act):
                    violations.append(Violation(label, column, _fmt(exp), _fmt(act)))
                continue
            low, high = exp * (1 - tol["iterations_rel"]), exp * (1 + tol["iterations_rel"])
            if not low <= act <= high:
                change = (act - exp) / exp * 100 if exp else math.inf
                violations.append(
                    Violation(
                        label,
                        column,
                        f"{exp:.0f} ±{tol['iterations_rel']:.0%} [{low:.0f}, {high:.0f}]",
                        f"{act:.0f} ({change:+.1f}%)",
                    )
                )
        for column in ERROR_COLUMNS:
            if column not in want:
                continue
            exp, act = float(want[column]), float(got[column])
            if exp < tol["error_floor"] and act < tol["error_floor"]:
                continue
            factor = tol["error_factor"]
            if not (act > 0 and exp / factor <= act <= exp * factor):
                violations.append(
                    Violation(label, column, f"{exp:.2e} (x/÷ {factor:g})", f"{act:.2e} ({act / exp:.3g}x)")
                )
        if "converged" in want and int(got["converged"]) != int(want["converged"]):
            violations.append(
                Violation(
                    label, "converged seeds", f"{want['converged']}/{want.get('n_seeds', '?')}", str(got["converged"])
                )
            )
    for claim in expected.get("faster", []):
        totals, missing = {"reference": 0.0, "model": 0.0}, []
        for role in totals:
            for experiment, panel in claim["rows"]:
                got = indexed.get((experiment, panel, claim[role]))
                if got is None:
                    missing.append(
                        Violation(f"{experiment}/{panel}/{claim[role]}", claim["column"], "present", "missing")
                    )
                else:
                    totals[role] += float(got[claim["column"]])
        if missing:
            violations.extend(missing)
            continue
        ratio = totals["reference"] / totals["model"] if totals["model"] > 0 else math.inf
        if not ratio > tol["min_speedup"]:
            violations.append(
                Violation(
                    claim["name"],
                    f"sum {claim['column']}: {claim['reference']}/{claim['model']}",
                    f"> {tol['min_speedup']:g} ({claim['model']} faster than the reference)",
                    f"{ratio:.2f} ({totals['reference']:.3g} / {totals['model']:.3g})",
                )
            )
    return violations


def _fmt(value: Any) -> str:
    return "n/a" if _is_missing(value) else f"{value:g}"


def expected_from_summary(summary: pd.DataFrame, reference: str = "original", model: str = "cdln") -> dict[str, Any]:
    """Expected values from one run: every row's iterations, errors and convergence, and the claims
    that ``model`` is faster than ``reference`` in seconds and in iterations to tol, pooled over the
    configurations where every seed of both reached tol (tol = 0 runs always use their whole budget)."""
    rows = []
    for _, row in summary.iterrows():
        entry: dict[str, Any] = {k: str(row[k]) for k in KEY}
        for column in (*ITERATION_COLUMNS, *ERROR_COLUMNS):
            value = row[column]
            entry[column] = None if _is_missing(value) else float(f"{float(value):.6g}")
        entry["converged"] = int(row["converged"])
        entry["n_seeds"] = int(row["n_seeds"])
        rows.append(entry)
    converged = summary[summary["converged"] == summary["n_seeds"]]
    pairs = sorted(
        set(map(tuple, converged[converged["model"] == reference][["experiment", "panel"]].values))
        & set(map(tuple, converged[converged["model"] == model][["experiment", "panel"]].values))
    )
    claims = [
        {
            "name": f"{model} vs {reference}: {what} to tol, pooled",
            "reference": reference,
            "model": model,
            "column": column,
            "rows": [list(pair) for pair in pairs],
        }
        for what, column in (("seconds", "stop_seconds_mean"), ("iterations", "stop_iteration_mean"))
    ]
    return {"tolerances": dict(DEFAULT_TOLERANCES), "rows": rows, "faster": claims}


def expected_file_text(summary: pd.DataFrame, source: str) -> str:
    """The committed expectations file (YAML with a header saying how it was made) for ``summary``."""
    header = (
        f"# Expected summary of a run of the reduced grid, written by `cdln check-regression --write-expected`\n"
        f"# from {source}. Tolerances are fixed a priori, not fitted: iterations within 15% (they are\n"
        "# deterministic on one platform; 15% leaves room for other BLAS builds), errors within a factor 10\n"
        "# unless both are below 1e-12 (rounding-level floors differ between platforms), and the C-DLN faster\n"
        "# than the original (pooled over the configurations stopped by tol) in seconds and in iterations.\n"
    )
    return header + yaml.safe_dump(expected_from_summary(summary), sort_keys=False, width=120)
