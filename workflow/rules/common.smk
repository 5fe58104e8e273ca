"""Helpers shared by every rule file (the run grid, paths, tool commands, the figure targets).

What runs where comes from one place, :class:`cdln.pipeline.grid.Grid`: rules only wire its jobs,
data files and tables together.
"""

import json
import os
import shlex
import sys
from pathlib import Path

import yaml
from cdln.pipeline.claims import load_claims, tables_read
from cdln.pipeline.grid import ANALYSIS, SYNTHETIC, Grid, cli_flags

GRID = Grid(config)
# Every output of one config lives under its own root, so switching configs never mixes results.
ROOT = GRID.root

# Shell commands call `python3` by name. The directory of the interpreter running Snakemake goes first
# on PATH, so an unactivated venv still works (and --use-conda jobs, whose env is activated inside the
# job, get the conda env's python3); src/ goes on PYTHONPATH, so `python3 -m cdln` runs this checkout's
# package under any interpreter that has its dependencies (e.g. the conda env in envs/).
os.environ.update(
    PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
    PYTHONPATH=os.pathsep.join(p for p in [str(Path(workflow.basedir) / "src"), os.environ.get("PYTHONPATH", "")] if p),
)
# conda users: `snakemake --use-conda` (path relative to workflow/rules/, where every rule file lives)
CONDA_ENV = "../../envs/cdln.yaml"
# A plot rule depends on its figure's module and the shared style, so restyling reruns only plots.
PLOTTING = "src/cdln/plotting"
STYLE = f"{PLOTTING}/style.py"

_FINAL_TARGETS: dict[str, list[str]] = {}


def experiment(name: str) -> dict:
    """The config section of experiment ``name`` (validated by the schema)."""
    return config["experiments"][name]


def experiment_enabled(name: str) -> bool:
    return GRID.enabled(name)


def register_target(name: str, files: list[str]) -> None:
    """Add a figure/table's final files to ``rule all`` under the named target ``name``."""
    _FINAL_TARGETS.setdefault(name, []).extend(files)


def final_targets(name: str) -> list[str]:
    return _FINAL_TARGETS.get(name, [])


def all_final_targets() -> list[str]:
    return [f for files in _FINAL_TARGETS.values() for f in files]


def uses_gpu() -> int:
    """1 when training jobs will claim a GPU (device cuda, or auto with CUDA visible), else 0.

    ``auto`` is resolved from CUDA_VISIBLE_DEVICES / nvidia-smi, not by importing torch, so that
    parsing the workflow stays fast; set ``device: cuda`` to be explicit (e.g. on SLURM)."""
    device = config["device"]
    if device.startswith("cuda"):
        return 1
    if device == "auto":
        import shutil

        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        if visible is not None:
            return int(visible.strip() not in ("", "-1"))
        return int(shutil.which("nvidia-smi") is not None)
    return 0


def reach_error(name: str) -> float | None:
    """The recovery error for the 'reach' columns of experiment ``name`` (config: summary.reach_error)."""
    if "summary" not in config["experiments"]:
        return None
    return config["experiments"]["summary"].get("reach_error", {}).get(name)


def figure_files(name: str) -> list[str]:
    """PNG and PDF of figure ``name`` under ROOT/figures/."""
    return [f"{ROOT}/figures/{name}.png", f"{ROOT}/figures/{name}.pdf"]


def figure_title(name: str) -> str:
    """Figure title: the experiment's description and the config (output root) that made it."""
    return f"{experiment(name)['description']}  [config: {config['output_root']}]"


def notebook_parameters(name: str, outputs) -> str:
    """The notebook's parameters as one shell-quoted YAML document for ``papermill -y``."""
    values = {
        "run_dirs": GRID.analysis_run_dirs(name),
        "figure_png": outputs.png,
        "figure_pdf": outputs.pdf,
        "findings_json": outputs.findings,
        "title": experiment(name).get("description", name),
    }
    return shlex.quote(yaml.safe_dump(values, default_flow_style=True, sort_keys=False, width=10**6).strip())


# ---- real data in the summary table and the report ----


def real_data_present(name: str) -> bool:
    """Whether experiment ``name``'s data set is on disk now (or made synthetically by the pipeline).

    The summary table only waits for real-data tables whose data is present, so a missing
    MovieLens archive never blocks it (the real-data rule itself still fails loudly).
    """
    section = experiment(name)
    if section.get("synthetic", False):
        return True
    if name == "movielens":
        return any(path and Path(path).exists() for path in (section.get("zip_path"), "resources/ml-100k.zip"))
    from cdln.data import DataUnavailableError
    from cdln.data.fashion_mnist import locate_fashion_mnist

    try:
        locate_fashion_mnist(section.get("data_dir"), "resources", allow_download=False)
    except DataUnavailableError:
        return False
    return True


def real_data_figure(name: str, path: str, **report_args):
    """``path`` marked for the report while experiment ``name``'s data is present (or the figure exists).

    Without the data the figure is left out of ``snakemake --report`` instead of failing the report.
    """
    if real_data_present(name) or Path(path).exists():
        return report(path, **report_args)
    return path


def summary_real_data_tables() -> list[str]:
    names = experiment("summary").get("real_data", [])
    return [f"{ROOT}/tables/{name}.md" for name in names if experiment_enabled(name) and real_data_present(name)]


# ---- the paper's claims (claims.smk) ----

CLAIMS_FILE = config["claims"]["file"] if "claims" in config else None
CLAIMS = load_claims(CLAIMS_FILE) if CLAIMS_FILE else []


def claim_figures() -> list[str]:
    """Figures with claims whose experiment is enabled (and, for real data, whose data is present)."""
    figures = dict.fromkeys(claim.figure for claim in CLAIMS)
    present = []
    for figure in figures:
        name = figure.removeprefix("fig_")
        if experiment_enabled(name) and (name not in ("movielens", "nonlinear") or real_data_present(name)):
            present.append(figure)
    return present


def claims_flags() -> str:
    section = config["claims"]
    return cli_flags(
        {
            "absolute": section.get("absolute", True),
            "timing": section.get("timing", True),
            "panels": json.dumps(section.get("panels", {}), sort_keys=True) if section.get("panels") else None,
        }
    )
