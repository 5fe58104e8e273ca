"""train_many: networks of different shapes stepping in lockstep on one MS problem share each operator pass;
each trains as it would alone (to the rounding of the shared product, as members of a batch do)."""

from __future__ import annotations

import math

import pytest
import torch

from cdln.data.synthetic import make_problem
from cdln.engine import TrainSettings, train, train_many
from cdln.networks import compressed_dln, original_dln
from cdln.spec import ProblemSpec


def _pair(problem):
    d_out, d_in = problem.shape
    return [
        original_dln(d_out, d_in, 3, 0.1, [0, 1]),
        compressed_dln(problem.surrogate(), 4, 3, 0.1, [1.0, 2.0], batch=2),
        original_dln(d_out, d_in, 2, 0.1, [3], width=5),
    ]


# The numba one-pass kernel (the default), and torch's two passes (CDLN_ENGINE=torch).
@pytest.mark.parametrize("engine,operator_pass", [("auto", "native-one-pass"), ("torch", "torch-two-pass")])
def test_each_network_trains_as_if_alone(engine, operator_pass, monkeypatch):
    problem = make_problem(ProblemSpec("ms", 8, 8, 2, data_seed=0, m=200))
    monkeypatch.setenv("CDLN_ENGINE", engine)
    settings = TrainSettings(lr=5.0, n_inner=20, max_outer=15, tol=1e-7)  # members stop at 120-300
    together = _pair(problem)
    results = train_many(together, problem, settings)
    alone = _pair(problem)
    expected = [train(net, problem, settings) for net in alone]
    assert len({i for r in results for i in r.stop_iteration}) > 1, "members should stop at different times"
    assert {r.engine_path for r in results} == {f"lockstep+{operator_pass}"}
    assert {r.engine_path for r in expected} == {f"torch+{operator_pass}"}
    for got, want, net_got, net_want in zip(results, expected, together, alone, strict=True):
        assert got.stop_iteration == want.stop_iteration and got.converged == want.converged
        for column in ("member", "iteration"):
            assert got.curves[column].tolist() == want.curves[column].tolist()
        for column in ("train_loss", "recovery_error"):
            torch.testing.assert_close(
                torch.tensor(got.curves[column].to_numpy()),
                torch.tensor(want.curves[column].to_numpy()),
                rtol=1e-10,
                atol=1e-300,
            )
        for a, b in zip(net_got.weights, net_want.weights, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-14)


def test_seconds_attribution_adds_up():
    problem = make_problem(ProblemSpec("ms", 8, 8, 2, data_seed=0, m=100))
    results = train_many(_pair(problem), problem, TrainSettings(lr=5.0, n_inner=10, max_outer=5))
    for result in results:
        assert result.seconds > 0 and result.warmup_seconds > 0
        assert all(0 < s <= result.seconds for s in result.stop_seconds)
        for _, curve in result.curves.groupby("member"):
            assert curve["seconds"].is_monotonic_increasing


def test_mf_and_mc_networks_of_a_group_train_as_if_alone():
    for task in ("mf", "mc"):
        problem = make_problem(ProblemSpec(task, 10, 10, 2, 0, 0.5 if task == "mc" else None))
        settings = TrainSettings(lr=3.0, n_inner=10, max_outer=4)
        got = train_many(_pair(problem), problem, settings)
        want = [train(net, problem, settings) for net in _pair(problem)]
        for a, b in zip(got, want, strict=True):
            cols = ["member", "iteration", "train_loss", "recovery_error"]
            assert a.curves[cols].equals(b.curves[cols])
            assert not math.isnan(a.seconds)
