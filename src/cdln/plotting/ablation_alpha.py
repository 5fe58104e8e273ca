"""Alpha ablation: C-DLN iterations and seconds to tol against alpha, the original DLN as reference.

Reads the per-run table of :mod:`cdln.pipeline.aggregate`. C-DLN: mean over seeds with a min-max band,
per-seed points (hollow where the run hit the budget instead of tol). Original DLN: horizontal
line at its mean with its min-max band. When the C-DLN alphas trained as one batch (config
``batch_alphas``), its seconds are the batch's shared wall time, and the axis says so.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd

from cdln.plotting import style

COLUMNS = (("stop_iteration", "Iterations to tol"), ("stop_seconds", "Seconds to tol"))


def plot(runs: pd.DataFrame, panel: str, title: str) -> plt.Figure:
    style.apply_style()
    frame = runs[runs["panel"] == panel]
    if frame.empty:
        raise ValueError(f"panel {panel!r} has no runs; panels present: {sorted(runs['panel'].unique())}")
    cdln = frame[frame["model"] == "cdln"].sort_values("alpha")
    original = frame[frame["model"] == "original"]
    fig, axes = plt.subplots(1, len(COLUMNS), figsize=style.figsize(len(COLUMNS)), squeeze=False)
    for ax, (column, label) in zip(axes[0], COLUMNS, strict=True):
        stats = cdln.groupby("alpha")[column].agg(["mean", "min", "max"]).reset_index()
        color = style.model_color("cdln")
        style.band(ax, stats["alpha"], stats["mean"], stats["min"], stats["max"], color, style.model_label("cdln"))
        hit = cdln[cdln["converged"]]
        missed = cdln[~cdln["converged"]]
        ax.scatter(hit["alpha"], hit[column], s=10, color=color, zorder=3)
        if not missed.empty:
            ax.scatter(missed["alpha"], missed[column], s=16, facecolors="none", edgecolors=color, label="budget hit")
        if not original.empty:
            ref = original[column]
            ref_color = style.model_color("original")
            ax.axhline(ref.mean(), color=ref_color, label=f"{style.model_label('original')} (reference)")
            ax.axhspan(ref.min(), ref.max(), color=ref_color, alpha=0.15, linewidth=0)
        ax.set_xlabel(r"$\alpha$ (outer-layer step multiplier)")
        batched = column == "stop_seconds" and bool(cdln.get("batched", pd.Series(dtype=bool)).any())
        ax.set_ylabel(label)
        if batched:
            ax.set_title("C-DLN: batch wall time (all alphas in one job)", fontsize="small")
        ax.set_yscale("log")
    r, r_hat = int(frame["r"].iloc[0]), int(cdln["r_hat"].iloc[0]) if not cdln.empty else 0
    axes[0, 0].set_title(f"{panel}: r={r}, $\\hat r$={r_hat}, {frame['seed'].nunique()} seeds")
    fig.suptitle(title)
    fig.tight_layout()
    style.figure_legend(fig, axes[0, 0])
    return fig
