"""The scaling figure's measurement: seconds per iteration as whole training runs count them, and its lower
bound (no clock is compared with another here: `cdln bench --sections agreement` reports how close they come)."""

from __future__ import annotations

import sys
import types

import pandas as pd
import pytest
import torch

from cdln.bench.scaling import iteration_seconds, scaling
from cdln.data.synthetic import make_problem
from cdln.networks import compressed_dln
from cdln.spec import ProblemSpec


def test_the_per_iteration_measurement_times_whole_runs_of_a_copy(monkeypatch):
    """What the scaling figure times is a whole train() run's checkpoint interval (its steps and the checkpoint that
    ends them) of a copy of the network, over its steps, median over repeats: asserted on the calls, not on a
    clock. How close it comes to whole runs' seconds on a machine: `cdln bench --sections agreement`."""
    problem = make_problem(ProblemSpec("mc", 12, 12, 2, 0, p=0.5))
    network = compressed_dln(problem.surrogate(), 4, 3, 1e-2)
    calls = []

    def fake_train(copy, problem_, settings):
        calls.append((copy, settings.n_inner, settings.max_outer))
        steps = settings.n_inner
        seconds = [0.25, 0.25 + 0.002 * steps + (0.004 if len(calls) == 3 else 0.0)]  # 2 ms a step; one run slower
        return types.SimpleNamespace(curves=pd.DataFrame({"iteration": [0, steps], "seconds": seconds}))

    monkeypatch.setattr(sys.modules["cdln.bench.scaling"], "train", fake_train)  # the package shadows the name
    seconds, steps, noise = iteration_seconds(network, problem, 2.0, n_inner=100, target_seconds=0.05, repeats=3)
    assert [(n, outer) for _, n, outer in calls] == [(1, 1), (25, 1), (25, 1), (25, 1)]  # a probe, then 3 runs
    assert steps == 25 and all(copy is not network for copy, _, _ in calls)  # 0.05 s / 2 ms steps, on copies
    assert seconds == pytest.approx(0.002)  # the median: the slow runs are the minority
    assert noise == pytest.approx(0.00016 / (2 * 0.002))  # the repeats' half-range over their median


def test_scaling_rows_and_a_bound_below_the_measurement():
    lines: list[str] = []
    rows = scaling([16, 32], r=2, r_hat=4, p=0.4, tol_sizes=[16], tol_settings={"lr": 40, "n_inner": 50,
                   "max_outer": 40, "tol": 1e-10}, echo=lines.append)  # fmt: skip
    per_iteration = {(r["d"], r["model"]): r for r in rows if r["quantity"] == "seconds_per_iteration"}
    bounds = {(r["d"], r["model"]): r["value"] for r in rows if r["quantity"] == "bound_seconds"}
    assert set(per_iteration) == set(bounds) == {(d, m) for d in (16, 32) for m in ("original", "cdln")}
    for key, row in per_iteration.items():  # both are measured (the bound at the peak GEMM rate): never compared here
        assert bounds[key] > 0 and row["value"] > 0, key
        assert row["path"].startswith("native") and row["steps"] >= 10
    assert {r["quantity"] for r in rows} >= {"seconds_to_tol", "iterations_to_tol"}
    assert "peak GEMM rate" in lines[0]
    assert torch.get_num_threads() >= 1
