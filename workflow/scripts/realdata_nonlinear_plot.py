"""FashionMNIST figure: test accuracy against iterations and against seconds for the MLP, the MLP
with a DLN block and the MLP with a C-DLN block. Lines: mean over seeds; bands: min-max.
The y axis starts a little below the lowest final accuracy (the first checkpoints, near 0.1,
are cut off), as in the paper's figure.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
import style  # noqa: E402

MODELS = ("mlp", "dln", "cdln")
LABELS = {"mlp": "MLP", "dln": "MLP + DLN block", "cdln": "MLP + C-DLN block"}
COLORS = {"mlp": style.model_color("mlp"), "dln": style.model_color("original"), "cdln": style.model_color("cdln")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--curves", type=Path, required=True)
    parser.add_argument("--png", type=Path, required=True)
    parser.add_argument("--pdf", type=Path, required=True)
    parser.add_argument("--title", default="FashionMNIST")
    args = parser.parse_args(argv)
    curves = pd.read_csv(args.curves)
    style.apply_style()
    fig, (left, right) = plt.subplots(1, 2, figsize=style.figsize(2), sharey=True)
    finals = []
    for model in MODELS:
        frame = curves[curves["model"] == model]
        if frame.empty:
            continue
        grouped = frame.groupby("iteration")
        stats = pd.DataFrame(
            {
                "seconds": grouped["seconds"].mean(),
                "mean": grouped["test_accuracy"].mean(),
                "low": grouped["test_accuracy"].min(),
                "high": grouped["test_accuracy"].max(),
            }
        ).reset_index()
        finals.append(stats["mean"].iloc[-1])
        for axis, x in ((left, stats["iteration"]), (right, stats["seconds"])):
            style.band(axis, x, stats["mean"], stats["low"], stats["high"], COLORS[model], label=LABELS[model])
    if finals:
        left.set_ylim(max(0.0, min(finals) - 0.06), min(1.0, curves["test_accuracy"].max() + 0.01))
    left.set_ylabel("Test accuracy")
    style.iterations_axis(left)
    style.seconds_axis(right)
    left.legend(loc="lower right")
    n_seeds = curves["seed"].nunique()
    fig.suptitle(f"{args.title}\nmean over {n_seeds} seed(s), band = min-max", fontsize="medium")
    style.save_figure(fig, args.png, args.pdf)
    return 0


if __name__ == "__main__":
    sys.exit(main())
