"""Shared fixtures: one CPU thread, tiny problems, helpers to run the CLI in- and out-of-process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _one_thread():
    """Every test sees one torch thread, whatever an earlier test (e.g. the CLI's --threads) set."""
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(1)


def cli_env() -> dict[str, str]:
    """Environment for a ``python -m cdln`` subprocess: one thread, the package importable."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONHASHSEED="0")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO / "src"), env.get("PYTHONPATH")]))
    return env


def cdln_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "cdln", *args]


def run_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run ``cdln ARGS`` in a fresh interpreter (real exit code, real process)."""
    return subprocess.run(cdln_command(*args), capture_output=True, text=True, env=cli_env(), cwd=REPO, timeout=timeout)


# Tiny problems on which the C-DLN (depth 3, r_hat = 2r) recovers the target to < 1e-6 in ~0.3 s (MC: with
# p = 0.6 some masks at d = 12 leave too few entries in a row to recover a rank-2 target, e.g. data seed 0).
TINY = {
    "mf": dict(task="mf", d=10, r=2, lr=5.0),
    "mc": dict(task="mc", d=12, r=2, p=0.7, lr=5.0),
    "ms": dict(task="ms", d=8, r=2, m=200, lr=10.0),
}


def run_experiment(config: dict, experiment: str, edit=None) -> list[Path]:
    """Every job of ``experiment`` of a pipeline ``config``, run as the pipeline runs it (its data files
    made by their ``cdln`` commands, each job by ``cdln run-job``), under the working directory.

    ``edit(options) -> options`` may change each run's options first (e.g. to plant a wrong setting).
    Returns the job directories.
    """
    import shlex

    from cdln.cli import main
    from cdln.pipeline.grid import Grid, cli_flags

    grid = Grid(config)
    for job in grid.jobs(experiment):
        for path in job.inputs:
            data = grid.data_file(path)
            if not Path(path).exists():
                assert main([data.command, *shlex.split(data.flags()), "--out", path]) == 0, path
        arguments = []
        for run in job.runs:
            options = edit(dict(run.options)) if edit else run.options
            arguments += ["--run", run.name, f"{run.command} {cli_flags(options)}"]
        assert main(["run-job", "--out", job.directory, "--quiet", *arguments]) == 0, job.directory
    return [Path(job.directory) for job in grid.jobs(experiment)]


# What a clone holds that the pipeline needs (not results/ or .snakemake/).
PIPELINE_FILES = ("Snakefile", "workflow", "config", "profiles", "envs", "notebooks", "src")


def pipeline_copy(root: Path, config: dict | None = None) -> Path:
    """The workflow (not results/ or .snakemake/) copied into ``root``, with ``config`` (if given) as tiny.yaml."""
    import shutil

    import yaml

    root.mkdir(parents=True, exist_ok=True)
    for name in PIPELINE_FILES:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, root / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        elif source.exists():
            shutil.copy2(source, root / name)
    if config is not None:
        (root / "tiny.yaml").write_text(yaml.safe_dump(config))
    return root
