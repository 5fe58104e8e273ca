"""Robustness (not in the paper): the C-DLN against the original DLN, one factor at a time away from mc.

Reads ``robustness.csv`` (:mod:`cdln.pipeline.robustness`). One column per swept factor, its values as
categories (the base point is marked). Top row: each network's final recovery error relative to its
initial one, per seed (filled: stopped at tol; hollow: hit its iteration budget) with the seeds' mean;
the dotted line is the figure's level. Bottom row, per seed: the original/C-DLN ratio of seconds
(circles) and of iterations (diamonds) to the level, and of the cost per iteration (grey squares); an
upward triangle is a lower bound on the seconds ratio (the original hit its budget before the level, the
C-DLN did not), and "n/a" marks values where the C-DLN never reached the level.
"""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.lines import Line2D

from cdln.plotting import style

MODELS = ("original", "cdln")
FACTOR_LABELS = {
    "r_hat_ratio": r"$\hat r / r$",
    "p": r"observed fraction $p$",
    "noise": "noise (relative std)",
    "condition": r"condition number $\kappa$",
    "d": r"size $d$ ($r$ fixed)",
}


def plot(frame: pd.DataFrame, title: str) -> plt.Figure:
    """The figure of a robustness table (columns: see :data:`cdln.pipeline.robustness.COLUMNS`)."""
    style.apply_style()
    if frame.empty:
        raise ValueError("the robustness table is empty: no sweep points to plot")
    factors = list(dict.fromkeys(frame["factor"]))
    fig, axes = plt.subplots(2, len(factors), figsize=style.figsize(len(factors), 2), squeeze=False)
    level = float(frame["level"].iloc[0])
    for column, factor in enumerate(factors):
        rows = frame[frame["factor"] == factor]
        values = sorted(rows["value"].unique())
        _errors(axes[0, column], rows, values, level)
        _ratios(axes[1, column], rows, values)
        for ax in axes[:, column]:
            ax.set_xticks(range(len(values)), [_label(v, rows) for v in values])
            ax.set_xlim(-0.5, len(values) - 0.5)
        axes[1, column].set_xlabel(FACTOR_LABELS.get(factor, factor))
    axes[0, 0].set_ylabel("Final / initial recovery error")
    axes[1, 0].set_ylabel(f"Original / C-DLN to {level:g} x initial")
    seeds = frame["seed"].nunique()
    fig.suptitle(f"{title}\n{seeds} seeds per point; hollow: hit its iteration budget")
    fig.tight_layout()
    _legend(fig)
    return fig


def _label(value: float, rows: pd.DataFrame) -> str:
    base = (rows.loc[rows["value"] == value, "panel"] == "base").any()
    return f"{value:g}" + ("*" if base else "")


def _errors(ax: plt.Axes, rows: pd.DataFrame, values: list[float], level: float) -> None:
    for offset, model in zip((-0.12, 0.12), MODELS, strict=True):
        color = style.model_color(model)
        means = []
        for position, value in enumerate(values):
            at = rows[(rows["value"] == value) & (rows["model"] == model)]
            error = at["relative_error"].to_numpy(float)
            means.append(math.exp(np.log(np.clip(error, 1e-300, None)).mean()) if error.size else math.nan)
            budget = at["hit_budget"].to_numpy(bool)
            x = np.full(error.size, position + offset)
            ax.scatter(x[~budget], error[~budget], s=14, color=color, zorder=3)
            ax.scatter(x[budget], error[budget], s=18, facecolors="none", edgecolors=color, zorder=3)
        ax.plot(np.arange(len(values)) + offset, means, color=color, linewidth=1)
    ax.axhline(level, color="grey", linestyle=":", linewidth=1)
    ax.set_yscale("log")


def _ratios(ax: plt.Axes, rows: pd.DataFrame, values: list[float]) -> None:
    color = style.model_color("cdln")
    for position, value in enumerate(values):
        at = rows[rows["value"] == value]
        original = at[at["model"] == "original"].set_index("seed").sort_index()
        cdln = at[at["model"] == "cdln"].set_index("seed").loc[original.index]
        cost = original["seconds_per_iteration"] / cdln["seconds_per_iteration"]
        ax.scatter(np.full(len(cost), position + 0.2), cost, marker="s", s=12, facecolors="none", edgecolors="grey")
        reached = cdln["level_seconds"].notna()
        if not reached.any():
            ax.annotate("n/a", (position, 0.02), xycoords=("data", "axes fraction"), ha="center", fontsize=7)
            continue
        seeds = cdln.index[reached]
        exact = original.loc[seeds, "level_seconds"].notna().to_numpy()
        for column, marker, offset in (("level_seconds", "o", -0.2), ("level_iteration", "D", 0.0)):
            ratio = original.loc[seeds, f"{column}_at_least"] / cdln.loc[seeds, column]
            x = np.full(len(seeds), position + offset)
            ax.scatter(x[exact], ratio[exact], marker=marker, s=16, color=color, zorder=3)
            if column == "level_seconds":  # a lower bound in iterations says nothing once the budgets differ
                ax.scatter(x[~exact], ratio[~exact], marker="^", s=16, color=color, zorder=3)
    ax.axhline(1, color="grey", linewidth=0.8)
    ax.set_yscale("log")


def _legend(fig: plt.Figure) -> None:
    """The networks, the level and the three kinds of ratio, once, below the panels."""
    cdln, original = style.model_color("cdln"), style.model_color("original")
    handles = [
        Line2D([], [], color=original, label=style.model_label("original")),
        Line2D([], [], color=cdln, label=style.model_label("cdln")),
        Line2D([], [], color="grey", linestyle=":", label="level"),
        Line2D([], [], color=cdln, marker="o", linestyle="", label="ratio of seconds to the level"),
        Line2D([], [], color=cdln, marker="^", linestyle="", label="... a lower bound (original hit its budget)"),
        Line2D([], [], color=cdln, marker="D", linestyle="", label="ratio of iterations to the level"),
        Line2D(
            [], [], color="grey", marker="s", markerfacecolor="none", linestyle="", label="ratio of cost per iteration"
        ),
    ]
    fig.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=4)
