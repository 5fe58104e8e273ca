"""Real-data run records -> tidy curves and a table of final numbers (CSV + Markdown).

``movielens``: per model, mean (min-max over split seeds) final held-out error (1/2 MSE), its RMSE
(= sqrt(2 x error)), the best held-out error along the curve, iterations, seconds, parameters, and
the speed-up in seconds of each model against the original DLN (paired by seed).
``nonlinear``: per model, final and best test accuracy, steps, seconds, parameters (total/block),
and the time ratio against the model with the DLN block.

Usage: realdata_tables.py {movielens|nonlinear} --curves C --table T --markdown M RUN_DIR...
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
from pathlib import Path

import pandas as pd

# Columns whose spread over seeds the Markdown table shows (the CSV has every spread).
KEY_SPREADS = ("final_error", "final_accuracy", "seconds_vs")


def read_run(run_dir: Path) -> tuple[dict, pd.DataFrame]:
    record_path = run_dir / "record.json"
    if not record_path.is_file():
        raise SystemExit(f"{run_dir} is not a complete run record (missing record.json)")
    return json.loads(record_path.read_text()), pd.read_csv(run_dir / "curves.csv")


def seed_of(run_dir: Path) -> int:
    return int(run_dir.name.rsplit("_seed", 1)[1])


def movielens_rows(runs: list[Path]) -> tuple[pd.DataFrame, pd.DataFrame]:
    curves, rows = [], []
    for run_dir in runs:
        record, frame = read_run(run_dir)
        model, seed = run_dir.name.rsplit("_seed", 1)[0], seed_of(run_dir)
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
                "iterations": int(final["iteration"]),
                "seconds": record["timing"]["seconds"],
                "params": record["parameters"]["model"],
            }
        )
    return pd.concat(curves, ignore_index=True), pd.DataFrame(rows)


def nonlinear_rows(runs: list[Path]) -> tuple[pd.DataFrame, pd.DataFrame]:
    curves, rows = [], []
    for run_dir in runs:
        record, frame = read_run(run_dir)
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
                "final_test_loss": final["test_loss"],
                "iterations": int(final["iteration"]),
                "seconds": record["timing"]["seconds"],
                "params": record["parameters"]["total"],
                "params_block": record["parameters"]["block"],
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
        for column in group.columns.drop(["model", "seed"]):
            values = group[column].astype(float)
            entry[column] = values.mean()
            if column not in ("params", "params_block", "iterations") and len(group) > 1:
                entry[f"{column}_min"], entry[f"{column}_max"] = values.min(), values.max()
        out.append(entry)
    return pd.DataFrame(out)


def atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.replace(tmp, path)


def markdown(table: pd.DataFrame) -> str:
    def fmt(value: object) -> str:
        if isinstance(value, float):
            return "nan" if math.isnan(value) else f"{value:.4g}"
        return str(value)

    header = "| " + " | ".join(table.columns) + " |"
    rule = "|" + "---|" * len(table.columns)
    body = ["| " + " | ".join(fmt(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join([header, rule, *body]) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("experiment", choices=["movielens", "nonlinear"])
    parser.add_argument("--curves", type=Path, required=True)
    parser.add_argument("--table", type=Path, required=True)
    parser.add_argument("--markdown", type=Path, required=True)
    parser.add_argument("--title", default=None, help="data set label (default: MovieLens-100K / FashionMNIST)")
    parser.add_argument("runs", type=Path, nargs="+")
    args = parser.parse_args(argv)
    if args.experiment == "movielens":
        curves, rows = movielens_rows(args.runs)
        table = summarise(rows, "original", "seconds_vs_original")
        title = f"{args.title or 'MovieLens-100K'}: held-out error = 1/2 MSE on held-out ratings (mean over seeds)"
    else:
        curves, rows = nonlinear_rows(args.runs)
        table = summarise(rows, "dln", "seconds_vs_dln")
        title = f"{args.title or 'FashionMNIST'}: test accuracy (mean over seeds)"
    atomic_write(args.curves, curves.to_csv(index=False, float_format="%.10g"))
    atomic_write(args.table, table.to_csv(index=False, float_format="%.10g"))
    shown = [c for c in table.columns if not c.endswith(("_min", "_max")) or c.startswith(KEY_SPREADS)]
    atomic_write(args.markdown, f"{title}; [min, max] over seeds in the CSV\n\n{markdown(table[shown])}")
    print(table.to_string(), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
