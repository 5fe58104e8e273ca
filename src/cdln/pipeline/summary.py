"""The summary table of the synthetic experiments (CSV and Markdown), from the per-run tables.

One row per (experiment, panel, model): parameter counts (model and original DLN), iterations and
seconds to reach tol (or the budget), final training and recovery errors, and the speed-up
(reference-model seconds / model seconds, paired by seed), each as mean and spread over seeds.
Errors span orders of magnitude, so they are summarised by their geometric mean and their
min/max over seeds. ``reach_*`` columns: first checkpoint with recovery error <= the configured
``reach_error`` (NaN if never reached).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

GROUP = ["experiment", "panel", "model"]
SPREAD_COLUMNS = ("stop_iteration", "stop_seconds", "reach_iteration", "reach_seconds", "speedup", "speedup_reach")


def geometric_mean(values: pd.Series) -> float:
    values = values.astype(float)
    if (values <= 0).any():
        return float(values.mean())
    return float(np.exp(np.log(values).mean()))


def paired_speedup(runs: pd.DataFrame, column: str, reference_model: str) -> pd.Series:
    """reference seconds / model seconds for the same (experiment, panel, seed)."""
    reference = runs[runs["model"] == reference_model].set_index(["experiment", "panel", "seed"])[column]
    keys = pd.MultiIndex.from_frame(runs[["experiment", "panel", "seed"]])
    ref_values = reference.reindex(keys).to_numpy()
    return pd.Series(ref_values / runs[column].to_numpy(), index=runs.index)


def summarise(runs: pd.DataFrame, reference_model: str) -> pd.DataFrame:
    runs = runs.copy()
    runs["speedup"] = paired_speedup(runs, "stop_seconds", reference_model)
    runs["speedup_reach"] = paired_speedup(runs, "reach_seconds", reference_model)
    rows = []
    for (experiment, panel, model), group in runs.groupby(GROUP, sort=False):
        first = group.iloc[0]
        row = {
            "experiment": experiment,
            "panel": panel,
            "model": model,
            "task": first["task"],
            "d": int(first["d"]),
            "r": int(first["r"]),
            "depth": int(first["depth"]),
            "width": _width(first),
            "n_seeds": len(group),
            "params_model": int(first["params_model"]),
            "params_original": int(first["params_original"]),
            "compression": first["params_original"] / first["params_model"],
            "tol": first["tol"],
            "budget": int(first["budget"]),
            "converged": int(group["converged"].sum()),
        }
        for column in SPREAD_COLUMNS:
            values = group[column].astype(float)
            row[f"{column}_mean"] = values.mean()
            row[f"{column}_std"] = values.std(ddof=1) if values.notna().sum() > 1 else math.nan
        for column in ("final_train_loss", "final_recovery_error"):
            row[f"{column}_gmean"] = geometric_mean(group[column])
            row[f"{column}_min"] = group[column].min()
            row[f"{column}_max"] = group[column].max()
        row["reach_error"] = first["reach_error"]
        rows.append(row)
    return pd.DataFrame(rows)


def _width(first: pd.Series) -> str:
    if first["model"] == "bm":
        return f"k={int(first['bm_rank'])}"
    if not pd.isna(first["r_hat"]):
        return f"r_hat={int(first['r_hat'])}"
    return f"d={int(first['d'])}"


def _pm(mean: float, std: float, digits: int) -> str:
    if math.isnan(mean):
        return "n/a"
    return f"{mean:.{digits}f}" if math.isnan(std) else f"{mean:.{digits}f} ± {std:.{digits}f}"


def _err(gmean: float, low: float, high: float) -> str:
    return f"{gmean:.1e} [{low:.0e}, {high:.0e}]"


def _markdown_row(row: pd.Series) -> dict[str, str]:
    return {
        "experiment": row["experiment"],
        "panel": row["panel"],
        "model": row["model"],
        "width": row["width"],
        "params (model / original)": f"{row.params_model:,} / {row.params_original:,} ({row.compression:.1f}x)",
        "converged": f"{row.converged}/{row.n_seeds}",
        "iterations to tol": _pm(row.stop_iteration_mean, row.stop_iteration_std, 0),
        "seconds to tol": _pm(row.stop_seconds_mean, row.stop_seconds_std, 2),
        "final train loss": _err(row.final_train_loss_gmean, row.final_train_loss_min, row.final_train_loss_max),
        "final recovery error": _err(
            row.final_recovery_error_gmean, row.final_recovery_error_min, row.final_recovery_error_max
        ),
        "speed-up": _pm(row.speedup_mean, row.speedup_std, 2),
        "seconds to reach": _pm(row.reach_seconds_mean, row.reach_seconds_std, 2),
        "speed-up to reach": _pm(row.speedup_reach_mean, row.speedup_reach_std, 2),
    }


def to_markdown(summary: pd.DataFrame, config_name: str, reference_model: str) -> str:
    table = pd.DataFrame([_markdown_row(row) for _, row in summary.iterrows()])
    header = (
        f"# Summary of the synthetic experiments (config `{config_name}`)\n\n"
        f"Mean ± standard deviation over seeds; errors: geometric mean [min, max]. Speed-up = {reference_model} "
        "seconds / model seconds on the same problem (seed). 'to tol': until the training loss is below tol, or the "
        "whole budget when tol is never reached (tol = 0 for MF). 'to reach': until the recovery error first falls "
        "below the configured reach_error (n/a: never).\n\n"
    )
    return header + table.to_markdown(index=False) + "\n"


def real_data_sections(tables: list[Path]) -> str:
    """The real-data experiments' own Markdown tables, each as a section of summary.md."""
    sections = []
    for path in tables:
        body = path.read_text().strip()
        if body.startswith("# "):
            body = "#" + body  # demote its title below the summary's
        sections.append(f"\n## Real data: {path.stem}\n\n{body}\n" if not body.startswith("## ") else f"\n{body}\n")
    return "".join(sections)
