"""The one figure style: every figure (``cdln plot ...`` and the analysis notebooks) uses this module.

Usage::

    from cdln.plotting import style
    style.apply_style()
    fig, axes = plt.subplots(1, 2, figsize=style.figsize(2))
    ...
    style.log_error_axis(ax, "Recovery error")
    style.save_figure(fig, png_path, pdf_path)

Colours follow the authors' figures (original blue, compressed orange, B-M turquoise).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: figures are files, never windows

import matplotlib.pyplot as plt  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from cdln.outputs import atomic_write  # noqa: E402

# One colour (and label) per model, shared by every figure so a model looks the same everywhere.
MODEL_COLORS: dict[str, str] = {
    "original": "#1f3fd9",  # authors: blue
    "cdln": "#f39c12",  # authors: orange ("Compressed")
    "bm": "#35c9c0",  # authors: turquoise
    "narrow": "#7f7f7f",
    "yaras": "#9b59b6",
    "altmin": "#2ca02c",
    "mlp": "#555555",
}
MODEL_LABELS: dict[str, str] = {
    "original": "Original DLN",
    "cdln": "C-DLN (compressed)",
    "bm": "B-M",
    "narrow": "Narrow DLN",
    "yaras": "Yaras et al.",
    "altmin": "AltMin",
    "mlp": "MLP",
}
EXTRA_COLORS = sns.color_palette("colorblind", 10)

PANEL_WIDTH = 4.2  # inches per panel
PANEL_HEIGHT = 3.2
DPI = 200


def apply_style() -> None:
    """Set the shared matplotlib/seaborn style (call once, before creating figures)."""
    sns.set_theme(context="paper", style="ticks", font_scale=1.15)
    plt.rcParams.update(
        {
            "figure.dpi": 100,
            "savefig.dpi": DPI,
            "savefig.bbox": "tight",
            "axes.grid": True,
            "grid.alpha": 0.3,
            "grid.linewidth": 0.6,
            "axes.spines.top": False,
            "axes.spines.right": False,
            "lines.linewidth": 1.8,
            "legend.frameon": False,
            "legend.fontsize": "small",
            "axes.titlesize": "medium",
            "pdf.fonttype": 42,  # embed TrueType, editable text in the PDF
            "svg.fonttype": "none",
        }
    )


def figsize(n_cols: int, n_rows: int = 1) -> tuple[float, float]:
    """Figure size for a grid of ``n_rows x n_cols`` panels."""
    return (PANEL_WIDTH * n_cols, PANEL_HEIGHT * n_rows)


def model_color(model: str) -> str | tuple[float, float, float]:
    # sum of code points, not hash(): string hashes change between processes
    return MODEL_COLORS.get(model, EXTRA_COLORS[sum(map(ord, model)) % len(EXTRA_COLORS)])


def model_label(model: str) -> str:
    return MODEL_LABELS.get(model, model)


def log_error_axis(ax: plt.Axes, ylabel: str = "Recovery error") -> None:
    """Log-scale y axis for errors (the authors plot every error on a log scale)."""
    ax.set_yscale("log")
    ax.set_ylabel(ylabel)


def iterations_axis(ax: plt.Axes) -> None:
    ax.set_xlabel("Iterations")


def seconds_axis(ax: plt.Axes) -> None:
    ax.set_xlabel("Wall-clock time (s)")


def band(
    ax: plt.Axes,
    x: Iterable[float],
    center: Iterable[float],
    low: Iterable[float],
    high: Iterable[float],
    color: str | tuple[float, float, float],
    label: str | None = None,
    **line_kwargs: object,
) -> None:
    """A mean line with a shaded spread band (e.g. min-max or +-1 sd over seeds)."""
    ax.plot(list(x), list(center), color=color, label=label, **line_kwargs)
    ax.fill_between(list(x), list(low), list(high), color=color, alpha=0.2, linewidth=0)


def figure_legend(fig: Figure, ax: plt.Axes) -> None:
    """One legend for the whole figure, below the panels (labels taken from ``ax``)."""
    handles, labels = ax.get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=min(len(labels), 4))


def save_figure(fig: Figure, png_path: str | os.PathLike[str], pdf_path: str | os.PathLike[str] | None = None) -> None:
    """Write the figure as PNG (and PDF), each atomically, then close it."""
    for path in [Path(png_path)] + ([Path(pdf_path)] if pdf_path is not None else []):
        file_format = path.suffix.lstrip(".").lower()
        atomic_write(path, lambda tmp, file_format=file_format: fig.savefig(tmp, format=file_format))
    plt.close(fig)
