"""The scaling figure's measurement: seconds per iteration as whole training runs count them, and a lower
bound that lies below them."""

from __future__ import annotations

import statistics

import pytest
import torch

from cdln.bench.scaling import iteration_seconds, scaling
from cdln.data.synthetic import make_problem
from cdln.engine import TrainSettings, train
from cdln.networks import compressed_dln, original_dln
from cdln.spec import ProblemSpec


@pytest.mark.parametrize("model", ["original", "cdln"])
def test_per_iteration_time_agrees_with_whole_runs(model):
    """A whole run (a record's seconds / iterations, 20 checkpoints of 100 steps) and the scaling measurement
    agree within 15% (medians of interleaved repeats; noise on a shared machine is the margin)."""
    problem = make_problem(ProblemSpec("mc", 60, 60, 4, 0, p=0.3))
    network = (
        original_dln(60, 60, 3, 1e-2, [0]) if model == "original" else compressed_dln(problem.surrogate(), 8, 3, 1e-2)
    )
    whole, measured = [], []
    for _ in range(5):
        run = train(network.clone(), problem, TrainSettings(2.0, 100, 20))
        whole.append(run.seconds / 2000)
        measured.append(iteration_seconds(network, problem, 2.0, 100, target_seconds=0.05, repeats=1)[0])
    assert statistics.median(measured) == pytest.approx(statistics.median(whole), rel=0.15)


def test_scaling_rows_and_a_bound_below_the_measurement():
    lines: list[str] = []
    rows = scaling([16, 32], r=2, r_hat=4, p=0.4, tol_sizes=[16], tol_settings={"lr": 40, "n_inner": 50,
                   "max_outer": 40, "tol": 1e-10}, echo=lines.append)  # fmt: skip
    per_iteration = {(r["d"], r["model"]): r for r in rows if r["quantity"] == "seconds_per_iteration"}
    bounds = {(r["d"], r["model"]): r["value"] for r in rows if r["quantity"] == "bound_seconds"}
    assert set(per_iteration) == set(bounds) == {(d, m) for d in (16, 32) for m in ("original", "cdln")}
    for key, row in per_iteration.items():
        assert 0 < bounds[key] < row["value"], key
        assert row["path"].startswith("native") and row["steps"] >= 10
    assert {r["quantity"] for r in rows} >= {"seconds_to_tol", "iterations_to_tol"}
    assert "peak GEMM rate" in lines[0]
    assert torch.get_num_threads() >= 1
