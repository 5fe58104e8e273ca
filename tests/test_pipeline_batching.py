"""Batched alpha sweeps in the pipeline (``ablation_alpha.batch_alphas``): a batched record expands
into the same per-alpha rows as one run per alpha, flagged as sharing wall time."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from conftest import write_manifest

from cdln.cli import main
from cdln.pipeline.aggregate import collect

ALPHAS = [0.75, 2.0]
TINY_MC = dict(task="mc", d=12, r=2, p=0.7, r_hat=4, lr=5.0, n_inner=20, max_outer=100, tol=1e-10, device="cpu")


def run_job(job_dir: Path, runs: dict[str, dict]) -> Path:
    """``cdln run-job`` in process: one ``train`` run per entry (name -> options)."""
    entries = [{"name": name, "command": "train", "options": options} for name, options in runs.items()]
    job_dir.parent.mkdir(parents=True, exist_ok=True)
    manifest = write_manifest(job_dir.parent / f"{job_dir.name}.manifest.json", entries)
    assert main(["run-job", "--manifest", str(manifest), "--out", str(job_dir), "--quiet"]) == 0
    return job_dir


@pytest.fixture(scope="module")
def job_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("runs") / "runs" / "ablation_alpha"
    single = {f"cdln_alpha{a:g}": dict(TINY_MC, model="cdln", alpha=a) for a in ALPHAS}
    return {
        "single": run_job(root / "r2_seed0", single),
        "batched": run_job(root / "r2_seed1", {"cdln_alphabatch": dict(TINY_MC, model="cdln", alpha=ALPHAS)}),
    }


def test_batched_sweep_expands_to_the_same_rows_as_single_runs(job_dirs: dict[str, Path]) -> None:
    _, single = collect([job_dirs["single"]], reach_error=1e-6)
    _, batched = collect([job_dirs["batched"]], reach_error=1e-6)
    assert list(batched["panel_id"]) == list(single["panel_id"]) == ["r2_alpha0.75", "r2_alpha2"]
    assert set(batched["panel"]) == {"r2"} and list(single["seed"]) == [0, 0] and list(batched["seed"]) == [1, 1]
    same = ["alpha", "stop_iteration", "converged", "final_train_loss", "final_recovery_error", "reach_iteration"]
    pd.testing.assert_frame_equal(batched[same], single[same])  # bitwise: members train as if alone
    assert batched["batched"].all() and not single["batched"].any()
    assert batched["stop_iteration"].iloc[0] != batched["stop_iteration"].iloc[1]  # members stop on their own


def test_only_alphabatch_runs_may_hold_several_members(job_dirs: dict[str, Path], tmp_path: Path) -> None:
    wrong = run_job(
        tmp_path / "runs" / "ablation_alpha" / "r2_seed0", {"cdln": dict(TINY_MC, model="cdln", alpha=ALPHAS)}
    )
    with pytest.raises(ValueError, match="only cdln_alphabatch runs are batched"):
        collect([wrong], reach_error=None)


def test_a_run_read_from_a_longer_one_is_the_run_it_stands_for(tmp_path: Path) -> None:
    """A job's run read from another job's longer run (``same_as``: the same settings to a lower tol and a larger
    budget) aggregates as the run trained on its own would: the same checkpoints, stop, outcome and errors."""
    long = dict(TINY_MC, model="cdln", tol=1e-12, max_outer=100)
    short = dict(long, tol=1e-8, max_outer=80)
    trained = run_job(tmp_path / "runs" / "mc" / "r2_seed0", {"cdln": long})
    own = run_job(tmp_path / "runs" / "robustness" / "r2_seed0", {"cdln": short})
    entry = {"name": "cdln", "command": "train", "options": short, "same_as": str(trained / "cdln")}
    manifest = write_manifest(tmp_path / "read.json", [entry])
    read = tmp_path / "runs" / "robustness" / "r2_seed1"
    assert main(["run-job", "--manifest", str(manifest), "--out", str(read), "--quiet"]) == 0
    own_curves, own_row = collect([own], reach_error=1e-3)
    read_curves, read_row = collect([read], reach_error=1e-3)
    _, long_row = collect([trained], reach_error=1e-3)
    assert long_row.loc[0, "stop_iteration"] > read_row.loc[0, "stop_iteration"]  # it was cut at its tol
    assert read_row.loc[0, "converged"] and read_row.loc[0, "tol"] == 1e-8 and read_row.loc[0, "budget"] == 1600
    timed = ["stop_seconds", "seconds_per_iteration", "seconds_noise", "reach_seconds", "seed"]
    pd.testing.assert_frame_equal(own_row.drop(columns=timed), read_row.drop(columns=timed))
    pd.testing.assert_frame_equal(
        own_curves.drop(columns=["seconds", "seed"]), read_curves.drop(columns=["seconds", "seed"])
    )
