"""Scaling figure: seconds per GD iteration and seconds to tol against d, original DLN vs C-DLN.

Reads the table of ``cdln bench --scaling`` (columns d, model, quantity, value, converged, device,
dtype). Left: seconds per iteration of whole training runs (solid) and its lower bound (dashed: the step's
matrix-product FLOPs at the peak GEMM rate), with d^3 and d^2 guide slopes. Right: seconds to tol (hollow
markers where the run hit its budget instead of tol).
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import matplotlib.ticker as ticker
import numpy as np
import pandas as pd

from cdln.plotting import style

MODELS = ("original", "cdln")


def plot(table: pd.DataFrame, title: str) -> plt.Figure:
    style.apply_style()
    fig, (left, right) = plt.subplots(1, 2, figsize=style.figsize(2))
    for model in MODELS:
        color, label = style.model_color(model), style.model_label(model)
        rows = table[table["model"] == model]
        per_iter = rows[rows["quantity"] == "seconds_per_iteration"].sort_values("d")
        bound = rows[rows["quantity"] == "bound_seconds"].sort_values("d")
        left.plot(per_iter["d"], per_iter["value"], "o-", color=color, label=label)
        left.plot(bound["d"], bound["value"], "--", color=color, alpha=0.7, label=f"{label}: lower bound (FLOPs)")
        to_tol = rows[rows["quantity"] == "seconds_to_tol"].sort_values("d")
        if not to_tol.empty:
            right.plot(to_tol["d"], to_tol["value"], "-", color=color, label=label)
            done = to_tol[to_tol["converged"].astype(bool)]
            missed = to_tol[~to_tol["converged"].astype(bool)]
            right.scatter(done["d"], done["value"], color=color, zorder=3)
            if not missed.empty:
                right.scatter(
                    missed["d"], missed["value"], facecolors="none", edgecolors=color, zorder=3, label="budget hit"
                )
    # Guide slopes d^3 and d^2 through the largest original / C-DLN points, within the data's y range
    # (read on the log scale: a linear autoscale can reach below 0 and collapse the log axis).
    left.set_yscale("log")
    ylim = left.get_ylim()
    for model, power in (("original", 3), ("cdln", 2)):
        pts = table[(table["model"] == model) & (table["quantity"] == "seconds_per_iteration")].sort_values("d")
        if len(pts) >= 2:
            d = np.array(pts["d"], dtype=float)
            anchor_d, anchor_t = d[-1], float(pts["value"].iloc[-1])
            left.plot(d, anchor_t * (d / anchor_d) ** power, ":", color="grey", linewidth=1)
            left.annotate(
                f"$\\propto d^{power}$",
                (d[-1], anchor_t),
                textcoords="offset points",
                xytext=(4, -10),
                color="grey",
                fontsize="small",
            )
    left.set_ylim(ylim)
    sizes = sorted(table["d"].unique())
    for ax, ylabel in ((left, "Seconds per iteration"), (right, "Seconds to tol")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xticks(sizes)
        ax.xaxis.set_major_formatter(ticker.ScalarFormatter())
        ax.xaxis.set_minor_formatter(ticker.NullFormatter())
        ax.set_xlabel("d (target is d x d)")
        ax.set_ylabel(ylabel)
    if table[table["quantity"] == "seconds_to_tol"].empty:
        right.text(0.5, 0.5, "no time-to-tol runs configured", transform=right.transAxes, ha="center")
    left.legend()
    right.legend()
    device = ", ".join(sorted(table["device"].astype(str).unique())) if "device" in table else "?"
    fig.suptitle(f"{title}\n{device}, {', '.join(sorted(table['dtype'].astype(str).unique()))}")
    fig.tight_layout()
    return fig


def check_table(table: pd.DataFrame, source: object) -> pd.DataFrame:
    """``table`` if it has the columns of ``cdln bench --scaling``; else ValueError naming the missing ones."""
    missing = {"d", "model", "quantity", "value", "converged", "dtype"} - set(table.columns)
    if missing:
        raise ValueError(f"{source} lacks column(s) {sorted(missing)}; make it with `cdln bench --scaling`")
    return table
