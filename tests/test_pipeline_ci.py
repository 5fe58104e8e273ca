"""The reduced grid end to end (`snakemake --cores 2 --configfile config/ci.yaml`) in a copy of the
workflow under a temporary directory, then the regression gate on its summary against
tests/expected/ci_summary.yaml, and the report. Minutes: marked slow."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import REPO, assert_swapping_labels_flips_every_ordering, pipeline_copy

from cdln.pipeline.claims import evaluate, load_claims

EXPECTED = REPO / "tests" / "expected" / "ci_summary.yaml"


def snakemake_ci(clone: Path, *args: str, timeout: int) -> subprocess.CompletedProcess[str]:
    """Snakemake on config/ci.yaml in ``clone``, one torch thread per job."""
    command = [sys.executable, "-m", "snakemake", *args, "--cores", "2", "--configfile", "config/ci.yaml"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run(command, cwd=clone, env=env, capture_output=True, text=True, timeout=timeout, check=False)


def check_regression(summary: Path) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "cdln", "check-regression", "--summary", str(summary), "--expected", str(EXPECTED)]
    return subprocess.run(command, capture_output=True, text=True, check=False)


def assert_robustness_claims_can_fail(tables: Path, scratch: Path, panels: dict) -> None:
    """The robustness claims that apply to the reduced grid hold, and fail on a copy of its table with the
    C-DLN's final errors 4x larger; the size-bound ones (absolute) are left out."""
    rules = [rule for rule in load_claims(REPO / "config" / "claims.yaml") if rule.figure == "fig_robustness"]
    options = {"panels": panels, "absolute": False, "timing": False}
    real = evaluate(rules, "fig_robustness", tables, **options)
    assert list(real["id"]) == [rule.id for rule in rules if not rule.absolute], real["id"]
    assert len(real) >= 1 and real["holds"].all(), real[["id", "measured"]]
    frame = pd.read_csv(tables / "robustness.csv")
    worse = frame.copy()
    worse.loc[worse["model"] == "cdln", "final_error"] *= 4
    (scratch / "worse").mkdir(parents=True)
    worse.to_csv(scratch / "worse" / "robustness.csv", index=False)
    verdicts = evaluate(rules, "fig_robustness", scratch / "worse", **options).set_index("id")["holds"]
    assert not verdicts["robustness-noise-cdln-not-much-worse"]


@pytest.mark.slow
def test_reduced_grid_end_to_end_and_regression(tmp_path: Path) -> None:
    clone = pipeline_copy(tmp_path / "clone")
    root = clone / "results" / "ci"
    # One figure first, and the report of what it built (the README's partial report), then the rest.
    partial = snakemake_ci(clone, "fig_mc", timeout=900)
    assert partial.returncode == 0, partial.stderr[-5000:]
    partial_report = snakemake_ci(clone, "fig_mc", "--report", str(root / "fig_mc.html"), timeout=600)
    assert partial_report.returncode == 0, partial_report.stderr[-5000:]
    assert "fig_mc.png" in (root / "fig_mc.html").read_text()
    run = snakemake_ci(clone, timeout=1800)
    assert run.returncode == 0, run.stderr[-5000:]
    for name in ("fig_mf", "fig_mc", "fig_ms", "fig_ablation_alpha", "fig_ablation_depth"):
        for suffix in (".png", ".pdf"):
            path = root / "figures" / f"{name}{suffix}"
            assert path.is_file() and path.stat().st_size > 1000, path
    assert (root / "tables" / "summary.md").is_file()
    assert not list((root / "data" / "ms").glob("*.pt")), "temporary MS problem files were not removed"

    summary = root / "tables" / "summary.csv"
    check = check_regression(summary)
    assert check.returncode == 0, check.stderr
    # Every claim that applies to the reduced grid holds (or is a known deviation).
    claims = subprocess.run(
        [sys.executable, "-m", "cdln", "claims", "check", "--table", str(root / "tables" / "claims.csv")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert claims.returncode == 0, claims.stderr
    assert len(pd.read_csv(root / "tables" / "claims.csv")) >= 20
    # Every claim ordering the original DLN and the C-DLN could fail: with their labels swapped in every
    # table, each one that holds on this run no longer does.
    panels = yaml.safe_load((REPO / "config" / "ci.yaml").read_text())["claims"]["panels"]
    flipped = assert_swapping_labels_flips_every_ordering(
        root / "tables", tmp_path, panels=panels, absolute=False, timing=False
    )
    assert flipped >= 10

    # Our robustness figure (the reduced sweep): its table, and the claims that apply at these sizes hold and
    # could fail (the C-DLN's and the original's rows swapped; the C-DLN's noisy floor made 4x worse).
    for suffix in (".png", ".pdf"):
        assert (root / "figures" / f"fig_robustness{suffix}").stat().st_size > 1000
    robust = pd.read_csv(root / "tables" / "robustness.csv")
    assert robust.groupby(["factor", "value", "model"])["seed"].nunique().eq(2).all()
    assert_robustness_claims_can_fail(root / "tables", tmp_path / "robust", panels)

    # The self-contained report holds every figure the grid made and the summary table.
    report_file = root / "report.html"
    report = snakemake_ci(clone, "--report", str(report_file), timeout=600)
    assert report.returncode == 0, report.stderr[-5000:]
    html = report_file.read_text()
    figures = sorted(path.name for path in (root / "figures").glob("*.png"))
    assert len(figures) >= 5 and "summary.csv" in html and "claims.csv" in html
    assert [name for name in figures if name not in html] == []

    # The same check fails on this run's summary once a result is made wrong.
    table = pd.read_csv(summary)
    table[["stop_iteration_mean", "stop_seconds_mean"]] = table[["stop_iteration_mean", "stop_seconds_mean"]].astype(
        float
    )
    cdln = table["model"] == "cdln"
    table.loc[cdln, "stop_iteration_mean"] *= 1.5
    table.loc[cdln, "stop_seconds_mean"] *= 10
    wrong = tmp_path / "wrong_summary.csv"
    table.to_csv(wrong, index=False)
    failed = check_regression(wrong)
    assert failed.returncode == 1
    assert "REGRESSION" in failed.stderr and "faster than the reference" in failed.stderr
