"""The Snakemake pipeline: lint, dry runs (the grid's jobs, and nothing else, per rule), single-figure
targets, and the regression gate. The end-to-end run of the reduced grid is in test_pipeline_ci.py (slow)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from cdln.data.fashion_mnist import DataUnavailableError, locate_fashion_mnist
from cdln.pipeline import regression
from cdln.pipeline.grid import Grid

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake"]
EXPECTED = REPO / "tests" / "expected" / "ci_summary.yaml"
PAPER = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
CI = yaml.safe_load((REPO / "config" / "ci.yaml").read_text())


def snakemake(*args: str, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run(
        [*SNAKEMAKE, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def job_counts(output: str) -> dict[str, int]:
    """The 'Job stats' table of a dry run: rule -> number of jobs."""
    _, _, table = output.partition("Job stats:")
    assert table, f"no job stats in the dry run output:\n{output[-3000:]}"
    counts = {}
    for line in table.splitlines()[3:]:
        match = re.match(r"^(\w+)\s+(\d+)$", line.strip())
        if not match:
            break
        counts[match[1]] = int(match[2])
    return counts


def test_lint_is_clean() -> None:
    result = snakemake("--lint")
    assert result.returncode == 0, f"snakemake --lint found problems:\n{result.stdout[-6000:]}{result.stderr[-2000:]}"


def fashion_mnist_present() -> bool:
    try:
        locate_fashion_mnist(None, REPO / "resources", allow_download=False)
    except DataUnavailableError:
        return False
    return True


def test_paper_grid_dry_run_plans_exactly_the_grid() -> None:
    """config/config.yaml, every job forced: one run_job per job of the grid, one data job per file."""
    result = snakemake("-n", "-F", "--quiet", "rules")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    counts = job_counts(result.stdout + result.stderr)
    grid = Grid(PAPER)
    files = grid.data_files()
    expected = {
        "run_job": len(grid.jobs()),
        "make_problem": sum(f.command in ("make-problem", "movielens-problem") and not f.temporary for f in files),
        "make_sensing_problem": sum(f.temporary for f in files),
        "aggregate_synthetic": 6,
        "plot_error_curves": 5,
        "plot_ablation_alpha": 1,
        "summary_table": 1,
        "claims_table": 1,
    }
    assert {rule: counts.get(rule, 0) for rule in expected} == expected
    # By hand, 3 seeds: mf 3 panels, mc 1, ms 3, ablation_alpha 1, ablation_depth 2, baselines 1 (one job
    # per panel and seed); analysis 3 + 2 + 2 tasks x 3 seeds; movielens 2 split seeds; nonlinear 3 seeds.
    assert expected["run_job"] == 3 * (3 + 1 + 3 + 1 + 2 + 1) + 3 * 7 + 2 + 3
    # One claims job per figure with claims; the real-data figures only when their data is on disk (as the
    # workflow decides at parse time), so the count follows this machine, not an assumption about it.
    assert counts["claims_figure"] == 10 + fashion_mnist_present() + (REPO / "resources" / "ml-100k.zip").is_file()
    assert counts.get("all") == 1


def test_ci_grid_uses_its_own_root_and_replaces_the_paper_grid() -> None:
    """--configfile config/ci.yaml replaces (not merges into) the paper grid; outputs go to results/ci."""
    # targets before --configfile, which takes several values
    result = snakemake("fig_mf", "-n", "-F", "-p", "--configfile", "config/ci.yaml")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    text = result.stdout + result.stderr
    assert "results/ci/runs/mf/r4_seed0" in text
    assert "results/paper" not in text
    assert "runs/mf/r10_" not in text, "panels of config.yaml leaked into the ci grid"
    assert job_counts(text) == {
        "make_problem": 4,  # d32: r4, r2 (shared by r2_exact, r2_over) x 2 seeds
        "run_job": 6,  # 3 panels x 2 seeds, each job training the 3 models
        "aggregate_synthetic": 1,
        "plot_error_curves": 1,
        "claims_figure": 1,  # the figure's target rechecks its claims
        "fig_mf": 1,
        "total": 14,
    }


def test_single_figure_target_builds_only_that_figure() -> None:
    result = snakemake("fig_mc", "-n", "-F", "--configfile", "config/ci.yaml")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    counts = job_counts(result.stdout + result.stderr)
    assert counts == {
        "make_problem": 2,
        "run_job": 2,
        "aggregate_synthetic": 1,
        "plot_error_curves": 1,
        "claims_figure": 1,
        "fig_mc": 1,
        "total": 8,
    }


def test_training_shell_is_explicit_and_single_threaded() -> None:
    """Job commands: explicit flags per run, one thread per job (no oversubscription), python3 via PATH."""
    result = snakemake("results/ci/runs/mc/r3_seed1", "-n", "-F", "-p", "--configfile", "config/ci.yaml")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    text = result.stdout + result.stderr
    command = next(line for line in text.splitlines() if "-m cdln run-job" in line)
    assert command.count("--run ") == 2 and "--run original 'train " in command and "--run cdln 'train " in command
    for flag in ("--task mc", "--model cdln", "--lr 15", "--r-hat 6", "--init-seed 1", "--threads 1"):
        assert flag in command, f"{flag!r} missing from {command}"
    assert "OMP_NUM_THREADS=1" in command
    assert command.count("--problem results/ci/data/mc/d32_r3_p0.5_seed1.pt") == 2
    assert "config[" not in command


def test_a_job_the_config_does_not_define_is_refused_by_name() -> None:
    """Asking for an analysis seed the config does not have names the jobs it does have (the job is
    never trained under a wrong name, with another seed's settings)."""
    result = snakemake("results/ci/runs/incremental/mf_seed7", "-n", "--configfile", "config/ci.yaml")
    assert result.returncode != 0
    assert "experiments.incremental defines no job 'mf_seed7'" in result.stdout + result.stderr
    assert "mf_seed0" in result.stdout + result.stderr


# ---------------------------------------------------------------------------------------------------
# Regression check: it passes on matching values and fails, readably, on wrong ones.
# ---------------------------------------------------------------------------------------------------


def summary_from_expected(expected: dict) -> pd.DataFrame:
    """A summary table that matches ``expected`` exactly; seconds: 2 for the reference model, 1 otherwise."""
    rows = []
    references = {claim["reference"] for claim in expected["faster"]}
    for want in expected["rows"]:
        row = {k: want[k] for k in ("experiment", "panel", "model")}
        for column in (*regression.ITERATION_COLUMNS, *regression.ERROR_COLUMNS):
            value = want.get(column)
            row[column] = float("nan") if value is None else value
        row.update(
            converged=want["converged"],
            n_seeds=want["n_seeds"],
            stop_seconds_mean=2.0 if want["model"] in references else 1.0,
        )
        rows.append(row)
    return pd.DataFrame(rows)


@pytest.fixture
def expected() -> dict:
    return yaml.safe_load(EXPECTED.read_text())


def test_expected_values_cover_every_synthetic_experiment(expected: dict) -> None:
    experiments = {row["experiment"] for row in expected["rows"]}
    assert experiments >= {"mf", "mc", "ms", "ablation_depth"}
    assert expected["faster"], "no speed-up claim is checked"
    tolerances = expected["tolerances"]
    assert 0 < tolerances["iterations_rel"] <= 0.25 and 1 < tolerances["error_factor"] <= 100


def test_check_passes_on_matching_summary(expected: dict) -> None:
    assert regression.check(summary_from_expected(expected), expected) == []


def test_check_fails_on_more_iterations(expected: dict) -> None:
    summary = summary_from_expected(expected)
    row = summary.index[summary["stop_iteration_mean"].notna()][0]
    summary.loc[row, "stop_iteration_mean"] *= 1.5
    violations = regression.check(summary, expected)
    assert len(violations) == 1, violations
    text = str(violations[0])
    assert "stop_iteration_mean" in text and "+50.0%" in text
    assert "/".join(summary.loc[row, ["experiment", "panel", "model"]]) in text


def test_check_fails_when_cdln_is_slower(expected: dict) -> None:
    summary = summary_from_expected(expected)
    summary.loc[summary["model"] == "cdln", "stop_seconds_mean"] = 3.0
    violations = regression.check(summary, expected)
    assert len(violations) == 1, violations
    text = str(violations[0])
    assert "stop_seconds_mean" in text and "faster than the reference" in text and "0.67" in text


def test_check_fails_when_cdln_needs_more_iterations(expected: dict) -> None:
    summary = summary_from_expected(expected)
    claim = next(c for c in expected["faster"] if c["column"] == "stop_iteration_mean")
    for experiment, panel in claim["rows"]:
        mask = (summary["experiment"] == experiment) & (summary["panel"] == panel) & (summary["model"] == "cdln")
        summary.loc[mask, "stop_iteration_mean"] *= 2.0
    quantities = [v.quantity for v in regression.check(summary, expected)]
    assert quantities.count("stop_iteration_mean") == len(claim["rows"])  # each row outside its tolerance
    assert any(q.startswith("sum stop_iteration_mean") for q in quantities)  # and the pooled claim fails


def test_check_fails_on_wrong_error_and_missing_row(expected: dict) -> None:
    summary = summary_from_expected(expected)
    row = summary.index[summary["final_recovery_error_gmean"] > 1e-6][0]
    summary.loc[row, "final_recovery_error_gmean"] *= 100
    summary = summary.drop(index=summary.index[-1])
    quantities = sorted(v.quantity for v in regression.check(summary, expected))
    assert "final_recovery_error_gmean" in quantities and "row" in quantities


def test_check_script_exit_code_and_message(tmp_path: Path, expected: dict) -> None:
    summary = summary_from_expected(expected)
    good, bad = tmp_path / "good.csv", tmp_path / "bad.csv"
    summary.to_csv(good, index=False)
    summary.assign(stop_iteration_mean=summary["stop_iteration_mean"] * 1.5).to_csv(bad, index=False)
    script = [sys.executable, "-m", "cdln", "check-regression", "--expected", str(EXPECTED)]
    ok = subprocess.run([*script, "--summary", str(good)], capture_output=True, text=True, check=False)
    assert ok.returncode == 0, ok.stderr
    failed = subprocess.run([*script, "--summary", str(bad)], capture_output=True, text=True, check=False)
    assert failed.returncode == 1
    assert "REGRESSION" in failed.stderr and "+50.0%" in failed.stderr


def test_slurm_profile_dry_run_sends_training_to_the_gpu() -> None:
    """profiles/slurm: training jobs get device=cuda, gpu=1 and their larger runtime/memory."""
    pytest.importorskip("snakemake_executor_plugin_slurm")
    result = snakemake("--profile", "profiles/slurm", "-n", "-p", "-F", "fig_mc")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    job_commands = [line for line in output.splitlines() if "-m cdln run-job" in line]
    assert len(job_commands) == 3  # mc: 3 seeds, each job training both models
    assert all(line.count("--device cuda") == 2 for line in job_commands)
    resources = [line for line in output.splitlines() if line.strip().startswith("resources:")]
    training = [line for line in resources if all(f in line for f in ("mem_mb=8000", "runtime=120", "gpu=1"))]
    assert len(training) == 3, resources
