"""Helpers shared by every rule file (the run grid, paths, tool commands, the figure targets).

What runs where comes from one place, :class:`cdln.pipeline.grid.Grid`: rules only wire its jobs,
data files and tables together.
"""

import functools
import json
import os
import shlex
import sys
from pathlib import Path

import yaml
from snakemake.settings.types import DeploymentMethod
from cdln.pipeline.claims import load_claims, tables_read
from cdln.pipeline.grid import ANALYSIS, SYNTHETIC, Grid, cli_flags

GRID = Grid(config)
# Every output of one config lives under its own root, so switching configs never mixes results.
ROOT = GRID.root



def _shell_prefix() -> str:
    """What every shell command starts with (Snakemake's default for bash, then two exports).

    Commands call ``python3`` and ``papermill`` by name: the directory of the interpreter running Snakemake
    goes first on PATH, so an unactivated venv works (not with --use-conda, whose env is activated around
    the command and must keep its own python3); src/ goes on PYTHONPATH, so ``python3 -m cdln`` runs this
    checkout's package under any interpreter that has its dependencies (e.g. the conda env in envs/).
    Set in the job's shell only: parsing the workflow leaves Snakemake's own environment untouched.
    """
    exports = []
    if DeploymentMethod.CONDA not in workflow.deployment_settings.deployment_method:
        exports.append(f'export PATH={shlex.quote(str(Path(sys.executable).parent))}:"$PATH"')
    src = shlex.quote(str(Path(workflow.basedir) / "src"))
    exports.append(f"export PYTHONPATH={src}${{{{PYTHONPATH:+:$PYTHONPATH}}}}")  # braces doubled for shell.prefix
    return "set -euo pipefail; " + "; ".join(exports) + "; "


shell.prefix(_shell_prefix())
# conda users: `snakemake --use-conda` (path relative to workflow/rules/, where every rule file lives)
CONDA_ENV = "../../envs/cdln.yaml"
# A plot rule depends on its figure's module and the shared style, so restyling reruns only plots.
PLOTTING = "src/cdln/plotting"
STYLE = f"{PLOTTING}/style.py"

_FINAL_TARGETS: dict[str, set[str]] = {}


def experiment(name: str) -> dict:
    """The config section of experiment ``name`` (validated by the schema)."""
    return config["experiments"][name]


def experiment_enabled(name: str) -> bool:
    return GRID.enabled(name)


def register_target(name: str, files: list[str]) -> None:
    """Add a figure/table's final files to ``rule all`` and to the target rule ``name``.

    Any rule file may register files under any name, in any include order; the target rules read the
    registry only when the DAG is built (:func:`final_targets` returns an input function), after every
    rule file has been included."""
    _FINAL_TARGETS.setdefault(name, set()).update(files)


def final_targets(name: str):
    """Input function of the target ``name`` (the rule of that name); every file registered under it, sorted."""
    return lambda wildcards: sorted(_FINAL_TARGETS.get(name, ()))


def all_final_targets():
    """Input function of the default target (all): every registered file, sorted."""
    return lambda wildcards: sorted(set().union(*_FINAL_TARGETS.values()))


def uses_gpu(wildcards=None) -> int:
    """1 when training jobs will claim a GPU, else 0 (a resource function: evaluated once the executor is known).

    ``cuda``/``cuda:N``: always. ``auto`` on this machine: when CUDA is visible here (CUDA_VISIBLE_DEVICES or
    nvidia-smi, not a torch import, so that parsing stays fast). ``auto`` on a cluster (SLURM): never, since
    the submitting node cannot know the compute node's devices; each job resolves ``auto`` on the node that
    runs it, so a CPU-only cluster works as is; set ``device: cuda`` to ask the cluster for a GPU per job."""
    device = config["device"]
    if device.startswith("cuda"):
        return 1
    if device == "auto" and not workflow.non_local_exec:
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


@functools.cache
def missing_real_data(name: str) -> str | None:
    """Why experiment ``name``'s data set is not on disk now, or None when it is (or the pipeline makes a
    synthetic stand-in). A few file checks: no download, no torch."""
    section = experiment(name)
    if section.get("synthetic", False):
        return None
    if name == "movielens":
        if any(path and Path(path).exists() for path in (section.get("zip_path"), "resources/ml-100k.zip")):
            return None
        return "MovieLens archive ml-100k.zip not found (resources/ml-100k.zip or movielens.zip_path)"
    from cdln.data import DataUnavailableError
    from cdln.data.fashion_mnist import locate_fashion_mnist

    try:
        locate_fashion_mnist(section.get("data_dir"), "resources", allow_download=False)
    except DataUnavailableError as error:
        return str(error)
    return None


@functools.cache
def real_data_present(name: str) -> bool:
    """Whether experiment ``name``'s results belong in the summary table and the claims: its data set is on
    disk now, or its table was built before (from data since removed).

    Decided once per invocation, when the workflow is parsed. Data that appears joins on the next run (the
    summary and claims tables rerun, their input lists having changed). Data that disappears after its
    table was built changes nothing: the built results stay, are not rebuilt while up to date, and nothing
    is deleted; should they need rebuilding, the job fails naming the missing file (``--keep-going``
    builds the rest). Data that was never there leaves the summary and claims without it, so a missing
    archive never blocks them (the figure's own target still fails loudly, naming what to provide).
    """
    reason = missing_real_data(name)
    built = Path(f"{ROOT}/tables/{name}.md").exists()
    if reason is not None and workflow.is_main_process:
        consequence = (
            f"Keeping its results built earlier ({ROOT}/tables/{name}.md) in the summary and claims"
            if built
            else f"The summary and claims are made without it; fig_{name} fails until the data is there"
        )
        print(f"Real data for {name}: {reason}. {consequence}.", file=sys.stderr)
    return reason is None or built


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


# ---- cluster execution (profiles/slurm): short jobs share one batch job ----

# A job group bundles jobs into one cluster job (`group-components: short=N` in the profile: N connected
# sets of them per sbatch), so that seconds-long jobs do not each pay a batch job's submission, start-up
# and status-poll latency. Local runs ignore groups. Only jobs estimated short join: the long ones of the
# paper grid keep a batch job (and a node) each.
SHORT_GROUP = "short"
# What a cluster runs (training, data files, timing); the Snakefile makes everything else local.
CLUSTER_RULES = {
    "run_job",
    "make_problem",
    "make_sensing_problem",
    "movielens_synthetic_archive",
    "fashion_mnist_synthetic",
    "scaling_measure",
}
# Upper bound of a job's estimated work (floating-point operations, see estimated_work) for it to count as
# short: seconds on one core. Every job of config/ci.yaml is below it, every training job of config/config.yaml above.
SHORT_JOB_WORK = 2e10
IMAGE_PIXELS = 28 * 28  # FashionMNIST


def estimated_work(job) -> float | None:
    """A generous estimate of a grid job's floating-point work, from the config alone: every iteration of
    every run costing a dense step of the original DLN (L d_out d_in width; MS: L d^2 m), every step of a
    classifier L x batch x pixels x width, every AltMin iteration (d_out + d_in) d_in k^2; None when a run's
    sizes are not in the config."""
    sizes = {}
    for path in job.inputs:
        try:
            sizes.update({k: v for k, v in GRID.data_file(path).options.items() if v is not None})
        except Exception:  # an input the grid does not make (e.g. a configured archive)
            pass
    total = 0.0
    for run in job.runs:
        options = {**sizes, **{k: v for k, v in run.options.items() if v is not None}}
        depth = options.get("depth", 3)
        if run.command == "nonlinear" and "steps" in options:
            width = max([*options.get("hidden", []), options.get("width", 0)])
            total += options["steps"] * depth * options.get("batch_size", 1) * IMAGE_PIXELS * width
            continue
        d_out, d_in = options.get("n_users", options.get("d")), options.get("n_items", options.get("d"))
        if d_out is None or run.command not in ("train", "altmin"):
            return None
        if run.command == "altmin":  # a least-squares solve of rank k per row and column per iteration
            total += options.get("iterations", 1) * (d_out + d_in) * d_in * options.get("k", d_in) ** 2
            continue
        iterations = options.get("n_inner", 1) * options.get("max_outer", 1)
        total += iterations * depth * d_out * d_in * options.get("m", options.get("width", d_in))
    return total


def training_group(wildcards) -> str | None:
    """Job group of a training job: SHORT_GROUP when its estimated work is below SHORT_JOB_WORK."""
    work = estimated_work(GRID.job(wildcards.experiment, wildcards.job))
    return SHORT_GROUP if work is not None and work < SHORT_JOB_WORK else None


def sensing_group(wildcards) -> str | None:
    """MS problems small enough to draw in seconds (d^2 m < 1e8 floats) join SHORT_GROUP."""
    options = GRID.data_file(f"{ROOT}/data/ms/{wildcards.name}.pt").options
    return SHORT_GROUP if options["d"] ** 2 * options["m"] < 1e8 else None
