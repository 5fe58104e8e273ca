"""Real-data run records -> tidy curves and a table of final numbers (CSV + Markdown).

``movielens``: per model, mean (min-max over split seeds) final held-out error (1/2 MSE), its RMSE
(= sqrt(2 x error)), the best held-out error along the curve, iterations, seconds, parameters, and
the speed-up in seconds of each model against the original DLN (paired by seed).
``nonlinear``: per model, final and best test accuracy, the checkpoint noise (standard deviation of
the last 10 test accuracies of a run), steps, seconds, parameters (total/block), and the time ratio
against the model with the DLN block. ``reach_iteration`` (MovieLens) is the first checkpoint within
1% of a run's best held-out error.

:func:`tables` makes both, and the per-run rows the table summarises (one per model and seed: what a claim
that must hold on every seed reads), from the job directories of one experiment (``cdln aggregate``).
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from cdln.pipeline.aggregate import job_runs, timing_noise
from cdln.pipeline.grid import real_data_seed
from cdln.records import read_run_record

# Columns whose spread over seeds the Markdown table shows (the CSV has every spread).
KEY_SPREADS = ("final_error", "final_accuracy", "seconds_vs")
CHECKPOINT_NOISE_WINDOW = 10  # evaluations at the end of a classifier's curve whose spread is its checkpoint noise


def movielens_rows(runs: list[Path]) -> tuple[pd.DataFrame, pd.DataFrame]:
    curves, rows = [], []
    for run_dir in runs:
        record, frame = read_run_record(run_dir)
        model, seed = run_dir.name, real_data_seed(run_dir)
        frame = frame[frame["member"] == 0].assign(model=model, seed=seed)
        frame["rmse"] = (2 * frame["recovery_error"]).pow(0.5)
        curves.append(frame[["model", "seed", "iteration", "seconds", "train_loss", "recovery_error", "rmse"]])
        final, best = frame.iloc[-1], frame.loc[frame["recovery_error"].idxmin()]
        rows.append(
            {
                "model": model,
                "seed": seed,
                "final_error": final["recovery_error"],
                "final_rmse": final["rmse"],
                "final_train_loss": final["train_loss"],
                "best_error": best["recovery_error"],
                "best_iteration": int(best["iteration"]),
                # the first checkpoint within 1% of the run's best held-out error: when it got there
                "reach_iteration": int(
                    frame.loc[frame["recovery_error"] <= 1.01 * best["recovery_error"], "iteration"].iloc[0]
                ),
                "iterations": int(final["iteration"]),
                "seconds": record["timing"]["seconds"],
                "seconds_noise": timing_noise(frame),
                "params": record["parameters"]["model"],
                "device": record["device"]["name"],
            }
        )
    return pd.concat(curves, ignore_index=True), pd.DataFrame(rows)


def nonlinear_rows(runs: list[Path]) -> tuple[pd.DataFrame, pd.DataFrame]:
    curves, rows = [], []
    for run_dir in runs:
        record, frame = read_run_record(run_dir)
        model, seed = record["config"]["model"], record["config"]["init_seed"]
        frame = frame.assign(model=model, seed=seed)
        curves.append(frame[["model", "seed", "iteration", "seconds", "train_loss", "test_loss", "test_accuracy"]])
        final = frame.iloc[-1]
        rows.append(
            {
                "model": model,
                "seed": seed,
                "final_accuracy": final["test_accuracy"],
                "best_accuracy": frame["test_accuracy"].max(),
                # spread of the last CHECKPOINT_NOISE_WINDOW evaluations: how much a final value can move
                "checkpoint_noise": frame["test_accuracy"].tail(CHECKPOINT_NOISE_WINDOW).std(ddof=0),
                "final_test_loss": final["test_loss"],
                "iterations": int(final["iteration"]),
                "seconds": record["timing"]["seconds"],
                "seconds_noise": timing_noise(frame),
                "params": record["parameters"]["total"],
                "params_block": record["parameters"]["block"],
                "device": record["device"]["name"],
            }
        )
    return pd.concat(curves, ignore_index=True), pd.DataFrame(rows)


def summarise(rows: pd.DataFrame, reference: str, ratio_name: str) -> pd.DataFrame:
    """Mean, min and max over seeds of every numeric column, plus the paired seconds ratio."""
    reference_seconds = rows[rows["model"] == reference].set_index("seed")["seconds"]
    rows = rows.assign(**{ratio_name: rows["seconds"] / rows["seed"].map(reference_seconds)})
    out = []
    for model, group in rows.groupby("model", sort=False):
        entry: dict[str, object] = {"model": model, "n_seeds": len(group)}
        entry["device"] = ", ".join(sorted(set(group["device"])))
        for column in group.columns.drop(["model", "seed", "device"]):
            values = group[column].astype(float)
            entry[column] = values.mean()
            if column not in ("params", "params_block", "iterations") and len(group) > 1:
                entry[f"{column}_min"], entry[f"{column}_max"] = values.min(), values.max()
        out.append(entry)
    return pd.DataFrame(out)


def markdown(table: pd.DataFrame) -> str:
    def fmt(value: object) -> str:
        if isinstance(value, float):
            return "nan" if math.isnan(value) else f"{value:.4g}"
        return str(value)

    header = "| " + " | ".join(table.columns) + " |"
    rule = "|" + "---|" * len(table.columns)
    body = ["| " + " | ".join(fmt(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join([header, rule, *body]) + "\n"


def tables(
    experiment: str, job_dirs: list[Path], title: str | None = None
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, str]:
    """(tidy curves, per-run rows, table of final numbers, the table as Markdown) of ``movielens`` or
    ``nonlinear``."""
    runs = [run_dir for run_dir, _ in job_runs(job_dirs)]  # real-data runs are never another job's
    if experiment == "movielens":
        curves, rows = movielens_rows(runs)
        table = summarise(rows, "original", "seconds_vs_original")
        title = f"{title or 'MovieLens-100K'}: held-out error = 1/2 MSE on held-out ratings (mean over seeds)"
    elif experiment == "nonlinear":
        curves, rows = nonlinear_rows(runs)
        table = summarise(rows, "dln", "seconds_vs_dln")
        title = f"{title or 'FashionMNIST'}: test accuracy (mean over seeds)"
    else:
        raise ValueError(f"real-data experiment must be movielens or nonlinear; got {experiment!r}")
    shown = [c for c in table.columns if not c.endswith(("_min", "_max")) or c.startswith(KEY_SPREADS)]
    return curves, rows, table, f"{title}; [min, max] over seeds in the CSV\n\n{markdown(table[shown])}"
