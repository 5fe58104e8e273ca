"""Error curves of one synthetic experiment: one row per panel, one column per (error, x axis).

Reads the tidy curves table of :mod:`cdln.pipeline.aggregate`. For each (panel, model): thin lines, one per
seed, over each seed's whole run; a bold line, the geometric mean over seeds, and a band, their
min-max, over the checkpoints that every seed reached (runs stop at tol at different iterations). On
a seconds axis the bold line's x value is the mean over seeds of the seconds at that checkpoint.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from cdln.plotting import style

Y_LABELS = {"recovery_error": "Recovery error", "train_loss": "Training loss"}
X_KEYS = {"iteration": "iteration", "iterations": "iteration", "seconds": "seconds"}


def mean_curve(curves: pd.DataFrame) -> pd.DataFrame:
    """Per checkpoint (iteration): mean seconds, the number of seeds ``n``, and the geometric mean/min/max over
    seeds of both errors (``<error>_mean``, ``_min``, ``_max``; errors clipped at 1e-300 before the log)."""
    errors = ("recovery_error", "train_loss")
    clipped = curves[["iteration", "seconds", *errors]].copy()
    for column in errors:
        clipped[column] = clipped[column].clip(lower=1e-300)
        clipped[f"{column}_log"] = np.log(clipped[column])
    grouped = clipped.groupby("iteration")
    out = pd.DataFrame({"seconds": grouped["seconds"].mean(), "n": grouped.size().astype(float)})
    for column in errors:
        out[f"{column}_mean"] = np.exp(grouped[f"{column}_log"].mean())
        out[f"{column}_min"] = grouped[column].min()
        out[f"{column}_max"] = grouped[column].max()
    return out.reset_index()


def panel_title(frame: pd.DataFrame, panel: str) -> str:
    """E.g. ``r10: r=10, L=3, r_hat=20, B-M k=20`` from the settings stored with the curves."""
    parts = [f"r={int(frame['r'].iloc[0])}", f"L={int(frame['depth'].max())}"]
    for column, label in (("r_hat", "$\\hat r$"), ("bm_rank", "B-M $k$")):
        values = frame[column].dropna().unique()
        if len(values):
            parts.append(f"{label}={int(values[0])}")
    return f"{panel}: " + ", ".join(parts)


def plot(curves: pd.DataFrame, panels: list[str], columns: list[tuple[str, str]], title: str) -> plt.Figure:
    style.apply_style()
    fig, axes = plt.subplots(len(panels), len(columns), figsize=style.figsize(len(columns), len(panels)), squeeze=False)
    for row, panel in enumerate(panels):
        frame = curves[curves["panel"] == panel]
        if frame.empty:
            raise ValueError(f"panel {panel!r} has no curves; panels present: {sorted(curves['panel'].unique())}")
        for col, (y, x) in enumerate(columns):
            ax = axes[row, col]
            for model, model_frame in frame.groupby("model", sort=False):
                color = style.model_color(model)
                for _, seed_frame in model_frame.groupby("seed"):
                    ax.plot(seed_frame[x], seed_frame[y], color=color, linewidth=0.8, alpha=0.45)
                stats = mean_curve(model_frame)
                stats = stats[stats["n"] == model_frame["seed"].nunique()]  # checkpoints every seed reached
                style.band(
                    ax,
                    stats[x],
                    stats[f"{y}_mean"],
                    stats[f"{y}_min"],
                    stats[f"{y}_max"],
                    color=color,
                    label=style.model_label(model),
                )
            style.log_error_axis(ax, Y_LABELS[y])
            if x == "iteration":
                style.iterations_axis(ax)
            else:
                style.seconds_axis(ax)
            ax.set_title(panel_title(frame, panel))
    n_seeds = curves["seed"].nunique()
    fig.suptitle(f"{title}\n{n_seeds} seeds: thin lines; bold: geometric mean, band: min-max (while all seeds run)")
    fig.tight_layout()
    style.figure_legend(fig, axes[0, 0])
    return fig


def parse_column(spec: str) -> tuple[str, str]:
    """``recovery_error:seconds`` -> ("recovery_error", "seconds")."""
    y, _, x = spec.partition(":")
    if y not in Y_LABELS or x not in X_KEYS:
        raise ValueError(f"column {spec!r}: use <{'|'.join(Y_LABELS)}>:<iteration|seconds>")
    return y, X_KEYS[x]
