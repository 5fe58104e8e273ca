"""Wiring shared by all rule files (the run grid, the targets, paths and the shell prefix).

What runs where comes from the package (tested there): :class:`cdln.pipeline.grid.Grid` (jobs, data files),
:class:`cdln.pipeline.targets.Targets` (each target's files, what missing data leaves out) and
:mod:`cdln.pipeline.cluster` (cluster rules, job groups). Rules only wire their files together.
"""

import json
import os
import shlex
import sys
from pathlib import Path

import yaml
from snakemake.settings.types import DeploymentMethod
from cdln.pipeline import cluster
from cdln.pipeline.claims import load_claims, tables_read
from cdln.pipeline.grid import ANALYSIS, SYNTHETIC, Grid, cli_flags
from cdln.pipeline.targets import Targets

GRID = Grid(config)
ROOT = GRID.root  # every output of one config lives under its own root
CURVE_EXPERIMENTS = [*SYNTHETIC, *GRID.own_experiments]  # each aggregated into <experiment>_curves.csv
CLAIMS_FILE = config["claims"]["file"] if "claims" in config else None
CLAIMS = load_claims(CLAIMS_FILE) if CLAIMS_FILE else []
# Each row's flip of the paper's claims file, kept by tests/test_claims_can_fail.py and counted in the claims table's
# header (a copy of the workflow without the tests, or a claims file of one's own, has none: the header says so).
FLIPS_RECORD = [p for p in ["tests/expected/claims_flips.csv"] if CLAIMS_FILE == "config/claims.yaml" and Path(p).exists()]
# The process that plans the run fetches MovieLens-100K when it is on no disk (cdln.pipeline.targets); the jobs
# then find it in resources/.
TARGETS = Targets(GRID, [claim.figure for claim in CLAIMS], fetch=workflow.is_main_process)
CLUSTER_RULES = cluster.CLUSTER_RULES
CONDA_ENV = "../../envs/cdln.yaml"  # `snakemake --use-conda`; relative to workflow/rules/
PLOTTING = "src/cdln/plotting"  # plots depend on their module and the style: restyling reruns only plots
STYLE = f"{PLOTTING}/style.py"


def _shell_prefix() -> str:
    """Snakemake's bash prefix and two exports, in the job's shell only: the interpreter running Snakemake
    first on PATH (an unactivated venv works; not under --use-conda, whose env brings its own python3), and
    this checkout's src/ on PYTHONPATH (``python3 -m cdln`` runs this checkout's package)."""
    exports = []
    if DeploymentMethod.CONDA not in workflow.deployment_settings.deployment_method:
        exports.append(f'export PATH={shlex.quote(str(Path(sys.executable).parent))}:"$PATH"')
    src = shlex.quote(str(Path(workflow.basedir) / "src"))
    exports.append(f"export PYTHONPATH={src}${{{{PYTHONPATH:+:$PYTHONPATH}}}}")  # braces doubled for shell.prefix
    return "set -euo pipefail; " + "; ".join(exports) + "; "


shell.prefix(_shell_prefix())


def experiment(name: str) -> dict:
    return config["experiments"][name]


def experiment_enabled(name: str) -> bool:
    return GRID.enabled(name)


def target_files(name: str) -> list[str]:
    """Every file target ``name`` builds (:meth:`cdln.pipeline.targets.Targets.files`)."""
    return TARGETS.files(name) if name in TARGETS.names() else []


def figure_files(name: str) -> list[str]:
    return TARGETS.figure_files(name)


def figure_title(name: str) -> str:
    """The experiment's description and the config (output root) that made it."""
    return f"{experiment(name).get('description', name)}  [config: {config['output_root']}]"


def uses_gpu(wildcards=None) -> int:
    """1 when training jobs claim a GPU (a resource function). ``auto`` here: when CUDA is visible
    (CUDA_VISIBLE_DEVICES or nvidia-smi, no torch import); on a cluster never (each job resolves ``auto`` on
    its node; set ``device: cuda`` to ask the cluster for a GPU per job)."""
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


def notebook_parameters(name: str, outputs) -> str:
    """The notebook's parameters as one shell-quoted YAML document for ``papermill -y``."""
    values = GRID.notebook_parameters(name, outputs.png, outputs.pdf, outputs.findings)
    return shlex.quote(yaml.safe_dump(values, default_flow_style=True, sort_keys=False, width=10**6).strip())


def real_data_figure(name: str, path: str, **report_args):
    """``path`` marked for the report while experiment ``name``'s results can be built (else left out of the
    report instead of failing it)."""
    return report(path, **report_args) if TARGETS.real_data_present(name) or Path(path).exists() else path


def streams_operator(wildcards) -> int:
    """1 for a local job that trains an MS network (a resource function; 0 on a cluster, one node per job)."""
    if workflow.non_local_exec:
        return 0
    return int(any(run.options.get("task") == "ms" for run in GRID.job(wildcards.experiment, wildcards.job).trained()))


def job_manifest(experiment_name: str, job_id: str) -> str:
    """Job ``job_id``'s manifest (cdln run-job --manifest) as one shell-quoted JSON document."""
    return shlex.quote(json.dumps(GRID.job(experiment_name, job_id).manifest(), sort_keys=True))


def job_priority(wildcards) -> int:
    return cluster.job_priority(GRID, wildcards.experiment, wildcards.job)


def data_priority(family: str):
    """The priority of a problem file of ``family`` (its path from the wildcards): its readers' highest."""
    def priority(wildcards) -> int:
        return cluster.data_priority(GRID, f"{ROOT}/data/{family or wildcards.family}/{wildcards.name}.pt")

    return priority


def short_training(wildcards) -> bool:
    return cluster.short_job(GRID, wildcards.experiment, wildcards.job)


def training_group(wildcards) -> str | None:
    return cluster.training_group(GRID, wildcards.experiment, wildcards.job)


def sensing_group(wildcards) -> str | None:
    return cluster.sensing_group(GRID, f"{ROOT}/data/ms/{wildcards.name}.pt")


def claims_flags() -> str:
    section = config["claims"]
    panels = json.dumps(section["panels"], sort_keys=True) if section.get("panels") else None
    options = {"absolute": section.get("absolute", True), "timing": section.get("timing", True), "panels": panels}
    return cli_flags({**options, "grid": config["output_root"]})


def say_what_is_left_out(when: str) -> None:
    """One line per target whose data is missing: left out (with the step that adds it), or kept as built; and
    at the start, where fetched data came from."""
    for note in TARGETS.data_notes() if when == "start" else []:
        print(f"[{when}] {note}", file=sys.stderr)
    for target, why in TARGETS.left_out().items():
        print(f"[{when}] left out of the default target: {target}: {why}", file=sys.stderr)
    for target, why in TARGETS.kept().items():
        print(f"[{when}] data missing for {target}: {why}", file=sys.stderr)
