"""Shared fixtures: one CPU thread, tiny problems, helpers to run the CLI in- and out-of-process, and the
label swap that every ordering claim must fail."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from cdln.pipeline.claims import Claim, evaluate, load_claims

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ["CDLN_OFFLINE"] = "1"  # tests plant small files and never download (a test of a fetch unsets it)
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
    from cdln.pipeline.grid import Grid

    grid = Grid(config)
    jobs = {job.directory: job for job in grid.jobs()}

    def run(job) -> None:
        for path in job.inputs:
            if Path(path).exists():
                continue
            if path in jobs:  # the job that trains a run this one reads
                run(jobs[path])
                continue
            data = grid.data_file(path)
            assert main([data.command, *shlex.split(data.flags()), "--out", path]) == 0, path
        runs = [dict(r.manifest(), options=edit(dict(r.manifest()["options"])) if edit else r.manifest()["options"])
                for r in job.runs]  # fmt: skip
        Path(job.directory).parent.mkdir(parents=True, exist_ok=True)
        manifest = write_manifest(Path(job.directory + ".manifest.json"), runs)
        assert main(["run-job", "--manifest", str(manifest), "--out", job.directory, "--quiet"]) == 0, job.directory

    for job in grid.jobs(experiment):
        run(job)
    return [Path(job.directory) for job in grid.jobs(experiment)]


def write_manifest(path: Path, runs: list[dict]) -> Path:
    """A ``cdln run-job`` manifest of ``runs`` (``{"name", "command", "options"}`` each) written to ``path``."""
    import json

    path.write_text(json.dumps({"runs": runs}))
    return path


def train_options(flags: list[str], command: str = "train") -> dict:
    """The options of a run given as command-line flags (a test's shorthand), as a manifest lists them."""
    from cdln.cli.train import _command_parsers

    parsed = vars(_command_parsers()[command].parse_args([f for f in flags if f != "--quiet"]))
    defaults = vars(_command_parsers()[command].parse_args([]))
    return {key: value for key, value in parsed.items() if value is not None and value != defaults[key]}


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


# ---- claims: a perturbation every ordering claim must fail ----


def swap_models(directory: Path, a: str = "original", b: str = "cdln") -> None:
    """Swap two models' labels in every curves and runs table of ``directory`` (in place)."""
    for path in [*directory.glob("*_curves.csv"), *directory.glob("*_runs.csv")]:
        frame = pd.read_csv(path)
        frame["model"] = frame["model"].replace({a: b, b: a})
        frame.to_csv(path, index=False)


def ordering_pairs(rules: list[Claim]) -> dict[tuple[str, str], list[Claim]]:
    """Claims that order two models seed by seed (``paired``, ``dominance``), by the pair they order."""
    pairs: dict[tuple[str, str], list[Claim]] = {}
    for rule in rules:
        for function, names in rule.calls():
            if function in ("paired", "dominance"):
                pairs.setdefault(tuple(sorted(names[2:4])), []).append(rule)
                break
    return pairs


def scale_errors(directory: Path, model: str, factor: float) -> None:
    """Multiply ``model``'s recovery errors in every curves table of ``directory`` by ``factor`` (in place)."""
    for path in directory.glob("*_curves.csv"):
        frame = pd.read_csv(path)
        if "recovery_error" in frame:
            frame.loc[frame["model"] == model, "recovery_error"] *= factor
            frame.to_csv(path, index=False)


def is_strict_ordering(rule: Claim) -> bool:
    """A bound of exactly 1 on a ratio of two models (a swap of the two reverses it); other bounds are
    tolerances ("not worse up to 3.16x") that a swap of two close models need not break."""
    ((kind, bound),) = rule.holds.items()
    return (kind in ("above", "at_least") and bound >= 1) or (kind in ("below", "at_most") and bound <= 1)


def assert_swapping_labels_flips_every_ordering(tables_dir: Path, tmp_path: Path, **options) -> int:
    """Every ordering claim that holds on ``tables_dir`` (the others must be known deviations) fails once the
    two models it orders trade labels in every table (original and C-DLN, C-DLN and B-M, ...); every tolerance
    claim ("the C-DLN's error is not worse than the original's, up to x") fails once the first model's errors
    are made x^2 times larger. Returns how many claims were made to fail."""
    checked = 0
    for (a, b), rules in ordering_pairs(load_claims(REPO / "config" / "claims.yaml")).items():
        for strict in (True, False):
            group = [rule for rule in rules if is_strict_ordering(rule) is strict]
            for figure in sorted({rule.figure for rule in group}):
                real = evaluate(group, figure, tables_dir, **options).set_index("id")
                for claim_id, row in real.iterrows():
                    if not row["holds"]:  # a known deviation (the strict abstract rows): nothing to flip
                        assert row["deviation"], f"{claim_id} does not hold on the real tables: {row['measured']}"
                        continue
                    rule = next(rule for rule in group if rule.id == claim_id)
                    perturbed = tmp_path / f"{claim_id}"
                    shutil.copytree(tables_dir, perturbed)
                    if strict:
                        swap_models(perturbed, a, b)
                    else:
                        first = next(names[2] for fn, names in rule.calls() if fn in ("paired", "dominance"))
                        scale_errors(perturbed, first, next(iter(rule.holds.values())) ** 2)
                    after = evaluate([rule], figure, perturbed, **options).set_index("id")
                    how = f"with {a} and {b} swapped" if strict else "with its first model's errors scaled"
                    assert not after.loc[claim_id, "holds"], f"{claim_id} still holds {how}"
                    checked += 1
    return checked
