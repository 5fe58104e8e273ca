"""MovieLens-100K figure: held-out error (1/2 MSE) against iterations and against seconds.

Original DLN and C-DLN (GD iterations, bottom axis) and AltMin (ALS sweeps, top axis of the left
panel: one sweep solves both factors exactly, so its iterations are not comparable to GD steps).
Lines: mean over split seeds; bands: min-max. Dotted line: the paper's final error (~0.54).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
import style  # noqa: E402

MODELS = ("original", "cdln", "altmin")
PAPER_ERROR = 0.54


def by_checkpoint(frame: pd.DataFrame) -> pd.DataFrame:
    """Mean/min/max of the error and mean seconds at each checkpoint, over seeds."""
    grouped = frame.groupby("iteration")
    return pd.DataFrame(
        {
            "seconds": grouped["seconds"].mean(),
            "mean": grouped["recovery_error"].mean(),
            "low": grouped["recovery_error"].min(),
            "high": grouped["recovery_error"].max(),
        }
    ).reset_index()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--curves", type=Path, required=True)
    parser.add_argument("--png", type=Path, required=True)
    parser.add_argument("--pdf", type=Path, required=True)
    parser.add_argument("--title", default="MovieLens-100K")
    args = parser.parse_args(argv)
    curves = pd.read_csv(args.curves)
    style.apply_style()
    fig, (left, right) = plt.subplots(1, 2, figsize=style.figsize(2))
    top = left.twiny()
    n_seeds = curves["seed"].nunique()
    for model in MODELS:
        frame = curves[curves["model"] == model]
        if frame.empty:
            continue
        stats = by_checkpoint(frame)
        color, label = style.model_color(model), style.model_label(model)
        axis = top if model == "altmin" else left
        style.band(axis, stats["iteration"], stats["mean"], stats["low"], stats["high"], color, label=label)
        style.band(right, stats["seconds"], stats["mean"], stats["low"], stats["high"], color, label=label)
    for axis in (left, right):
        axis.axhline(
            PAPER_ERROR, color="black", linestyle=":", linewidth=1, label=f"paper's final error ~{PAPER_ERROR}"
        )
        style.log_error_axis(axis, "Held-out error (1/2 MSE)")
    top.set_yscale("log")
    style.iterations_axis(left)
    left.set_xlabel("GD iterations (DLNs)")
    top.set_xlabel("ALS sweeps (AltMin)", color=style.model_color("altmin"))
    top.tick_params(axis="x", colors=style.model_color("altmin"))
    style.seconds_axis(right)
    handles = left.get_legend_handles_labels()[0] + top.get_legend_handles_labels()[0]
    labels = left.get_legend_handles_labels()[1] + top.get_legend_handles_labels()[1]
    left.legend(handles, labels, loc="upper right")
    right.legend(loc="upper right")
    fig.suptitle(f"{args.title}\nmean over {n_seeds} split seed(s), band = min-max", fontsize="medium", y=1.12)
    style.save_figure(fig, args.png, args.pdf)
    return 0


if __name__ == "__main__":
    sys.exit(main())
