"""The real-data figures, from the tidy curves of :mod:`cdln.pipeline.realdata` (lines: mean over
seeds; bands: min-max).

- MovieLens-100K: held-out error (1/2 MSE) against iterations and against seconds. Original DLN and
  C-DLN on GD iterations (bottom axis), AltMin on ALS sweeps (top axis of the left panel: one sweep
  solves both factors exactly, so its iterations are not comparable to GD steps). Dotted: the
  paper's final error (~0.54).
- FashionMNIST: test accuracy against iterations and against seconds, one line per classifier. The
  y axis starts a little below the lowest final accuracy (the first checkpoints, near 0.1, are cut
  off), as in the paper's figure.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd

from cdln.plotting import over_seeds, style

MOVIELENS_MODELS = ("original", "cdln", "altmin")
PAPER_MOVIELENS_ERROR = 0.54
NONLINEAR_MODELS = ("mlp", "dln", "cdln", "relu_dln", "relu_cdln")
NONLINEAR_LABELS = {
    "mlp": "MLP",
    "dln": "MLP + DLN block",
    "cdln": "MLP + C-DLN block",
    "relu_dln": "MLP + ReLU bottleneck (authors', DLN)",
    "relu_cdln": "MLP + ReLU bottleneck (authors', compressed)",
}
NONLINEAR_COLORS = {"mlp": "mlp", "dln": "original", "cdln": "cdln", "relu_dln": "original", "relu_cdln": "cdln"}
NONLINEAR_DASHED = ("relu_dln", "relu_cdln")  # the authors' construction: same colours, dashed


def plot_movielens(curves: pd.DataFrame, title: str = "MovieLens-100K") -> plt.Figure:
    style.apply_style()
    fig, (left, right) = plt.subplots(1, 2, figsize=style.figsize(2))
    top = left.twiny()
    for model in MOVIELENS_MODELS:
        frame = curves[curves["model"] == model]
        if frame.empty:
            continue
        stats = over_seeds(frame, "recovery_error")
        color, label = style.model_color(model), style.model_label(model)
        axis = top if model == "altmin" else left
        style.band(axis, stats["iteration"], stats["mean"], stats["low"], stats["high"], color, label=label)
        style.band(right, stats["seconds"], stats["mean"], stats["low"], stats["high"], color, label=label)
    for axis in (left, right):
        label = f"paper's final error ~{PAPER_MOVIELENS_ERROR}"
        axis.axhline(PAPER_MOVIELENS_ERROR, color="black", linestyle=":", linewidth=1, label=label)
        style.log_error_axis(axis, "Held-out error (1/2 MSE)")
    top.set_yscale("log")
    left.set_xlabel("GD iterations (DLNs)")
    top.set_xlabel("ALS sweeps (AltMin)", color=style.model_color("altmin"))
    top.tick_params(axis="x", colors=style.model_color("altmin"))
    style.seconds_axis(right)
    handles = left.get_legend_handles_labels()[0] + top.get_legend_handles_labels()[0]
    labels = left.get_legend_handles_labels()[1] + top.get_legend_handles_labels()[1]
    left.legend(handles, labels, loc="upper right")
    right.legend(loc="upper right")
    n_seeds = curves["seed"].nunique()
    fig.suptitle(f"{title}\nmean over {n_seeds} split seed(s), band = min-max", fontsize="medium", y=1.12)
    return fig


def plot_nonlinear(curves: pd.DataFrame, title: str = "FashionMNIST") -> plt.Figure:
    style.apply_style()
    fig, (left, right) = plt.subplots(1, 2, figsize=style.figsize(2), sharey=True)
    finals = []
    for model in NONLINEAR_MODELS:
        frame = curves[curves["model"] == model]
        if frame.empty:
            continue
        stats = over_seeds(frame, "test_accuracy")
        finals.append(stats["mean"].iloc[-1])
        color = style.model_color(NONLINEAR_COLORS[model])
        line = {"linestyle": "--"} if model in NONLINEAR_DASHED else {}
        for axis, x in ((left, stats["iteration"]), (right, stats["seconds"])):
            style.band(axis, x, stats["mean"], stats["low"], stats["high"], color, NONLINEAR_LABELS[model], **line)
    if finals:
        left.set_ylim(max(0.0, min(finals) - 0.06), min(1.0, curves["test_accuracy"].max() + 0.01))
    left.set_ylabel("Test accuracy")
    style.iterations_axis(left)
    style.seconds_axis(right)
    n_seeds = curves["seed"].nunique()
    fig.suptitle(f"{title}\nmean over {n_seeds} seed(s), band = min-max", fontsize="medium")
    fig.tight_layout()
    style.figure_legend(fig, left)  # below the panels: five models do not fit inside one
    return fig
