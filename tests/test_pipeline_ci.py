"""The reduced grid end to end (`snakemake --cores 2 --configfile config/ci.yaml`), then the regression
check of its summary against tests/expected/ci_summary.yaml. Minutes: marked slow.

The run goes to a fresh output root (results/pytest_ci, removed afterwards unless KEEP_PIPELINE_TEST=1),
so it really runs every job instead of finding results/ci up to date."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]
ROOT = REPO / "results" / "pytest_ci"
SUMMARY = ROOT / "tables" / "summary.csv"
CHECK = [
    sys.executable,
    str(REPO / "workflow" / "scripts" / "check_regression.py"),
    "--expected",
    str(REPO / "tests" / "expected" / "ci_summary.yaml"),
]


@pytest.mark.slow
def test_reduced_grid_end_to_end_and_regression(tmp_path: Path) -> None:
    shutil.rmtree(ROOT, ignore_errors=True)
    try:
        _run_and_check(tmp_path)
    finally:
        if os.environ.get("KEEP_PIPELINE_TEST") != "1":
            shutil.rmtree(ROOT, ignore_errors=True)


def _snakemake_ci(*args: str, timeout: int) -> subprocess.CompletedProcess[str]:
    """Snakemake on config/ci.yaml, writing under ROOT, one torch thread per job."""
    command = [sys.executable, "-m", "snakemake", "--cores", "2", "--configfile", "config/ci.yaml"]
    return subprocess.run(
        [*command, "--config", f"output_root={ROOT.name}", *args],
        cwd=REPO,
        env=dict(os.environ, OMP_NUM_THREADS="1"),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _run_and_check(tmp_path: Path) -> None:
    run = _snakemake_ci(timeout=1800)
    assert run.returncode == 0, run.stderr[-5000:]
    for name in ("fig_mf", "fig_mc", "fig_ms", "fig_ablation_alpha", "fig_ablation_depth"):
        for suffix in (".png", ".pdf"):
            path = ROOT / "figures" / f"{name}{suffix}"
            assert path.is_file() and path.stat().st_size > 1000, path
    assert (ROOT / "tables" / "summary.md").is_file()
    assert not list((ROOT / "data" / "ms").glob("*.pt")), "temporary MS problem files were not removed"

    check = subprocess.run([*CHECK, "--summary", str(SUMMARY)], capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stderr

    # The self-contained report holds every figure the grid made and the summary table.
    report_file = ROOT / "report.html"
    report = _snakemake_ci("--report", str(report_file), timeout=600)
    assert report.returncode == 0, report.stderr[-5000:]
    html = report_file.read_text()
    figures = sorted(path.name for path in (ROOT / "figures").glob("*.png"))
    assert len(figures) >= 5 and "summary.csv" in html
    assert [name for name in figures if name not in html] == []

    # The same check fails on this run's summary once a result is made wrong.
    summary = pd.read_csv(SUMMARY)
    summary[["stop_iteration_mean", "stop_seconds_mean"]] = summary[
        ["stop_iteration_mean", "stop_seconds_mean"]
    ].astype(float)
    cdln = summary["model"] == "cdln"
    summary.loc[cdln, "stop_iteration_mean"] *= 1.5
    summary.loc[cdln, "stop_seconds_mean"] *= 10
    wrong = tmp_path / "wrong_summary.csv"
    summary.to_csv(wrong, index=False)
    failed = subprocess.run([*CHECK, "--summary", str(wrong)], capture_output=True, text=True, check=False)
    assert failed.returncode == 1
    assert "REGRESSION" in failed.stderr and "faster than the reference" in failed.stderr
