"""Batched alpha sweeps in the pipeline (``ablation_alpha.batch_alphas``): a batched record expands
into the same per-alpha rows as one run per alpha, flagged as sharing wall time."""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
import pytest

from cdln.config import RunConfig, run

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workflow" / "scripts"))
import aggregate_runs  # noqa: E402

ALPHAS = [0.75, 2.0]
TINY_MC = dict(task="mc", d=12, r=2, p=0.6, r_hat=4, lr=10.0, n_inner=20, max_outer=100, tol=1e-10, device="cpu")


@pytest.fixture(scope="module")
def run_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Path]]:
    root = tmp_path_factory.mktemp("runs") / "runs" / "ablation_alpha"
    single = []
    for alpha in ALPHAS:
        out = root / f"r2_alpha{alpha:g}" / "cdln_seed0"
        run(RunConfig(model="cdln", alpha=[alpha], **TINY_MC), out)
        single.append(out)
    batched = root / "r2_alphabatch" / "cdln_seed0"
    run(RunConfig(model="cdln", alpha=ALPHAS, **TINY_MC), batched)
    return {"single": single, "batched": [batched]}


def test_batched_sweep_expands_to_the_same_rows_as_single_runs(run_dirs: dict[str, list[Path]]) -> None:
    _, single = aggregate_runs.collect(run_dirs["single"], reach_error=1e-6)
    _, batched = aggregate_runs.collect(run_dirs["batched"], reach_error=1e-6)
    assert list(batched["panel_id"]) == list(single["panel_id"]) == ["r2_alpha0.75", "r2_alpha2"]
    assert set(batched["panel"]) == {"r2"}
    same = ["alpha", "stop_iteration", "converged", "final_train_loss", "final_recovery_error", "reach_iteration"]
    pd.testing.assert_frame_equal(batched[same], single[same])  # bitwise: members train as if alone
    assert batched["batched"].all() and not single["batched"].any()
    assert batched["stop_iteration"].iloc[0] != batched["stop_iteration"].iloc[1]  # members stop on their own


def test_only_alphabatch_runs_may_hold_several_members(run_dirs: dict[str, list[Path]], tmp_path: Path) -> None:
    wrong = tmp_path / "runs" / "ablation_alpha" / "r2" / "cdln_seed0"
    wrong.parent.mkdir(parents=True)
    run_dirs["batched"][0].rename(wrong)
    try:
        with pytest.raises(ValueError, match="only <panel>_alphabatch runs are batched"):
            aggregate_runs.collect([wrong], reach_error=None)
    finally:
        wrong.rename(run_dirs["batched"][0])
