"""GD engine: gradients, step rule, alpha, stopping, divergence, convergence of tiny runs, batching."""

from __future__ import annotations

import pytest
import torch
from conftest import TINY

from cdln.config import RunConfig
from cdln.data.synthetic import make_problem
from cdln.engine import DivergenceError, TrainSettings, gd_steps, layer_gradients, train
from cdln.networks import compressed_dln, original_dln
from cdln.runner import run
from cdln.spec import ProblemSpec


def _problem(task="mc", d_out=8, d_in=6, rank=2):
    return make_problem(ProblemSpec(task, d_out, d_in, rank, data_seed=1, p=0.5, m=40))


@pytest.mark.parametrize("task", ["mf", "mc", "ms"])
@pytest.mark.parametrize("depth", [2, 3, 4])
def test_layer_gradients_match_autograd(task, depth):
    problem = _problem(task)
    net = original_dln(8, 6, depth, 0.5, [0, 1], width=5)
    weights = [w.clone().requires_grad_(True) for w in net.weights]
    product = weights[0]
    for w in weights[1:]:
        product = w @ product
    problem.train_loss(product).sum().backward()
    for got, w in zip(layer_gradients(net.weights, problem), weights, strict=True):
        torch.testing.assert_close(got, w.grad, rtol=1e-10, atol=1e-15)


def test_one_gd_step_is_w_minus_lr_scale_grad():
    problem = _problem("mf")
    net = compressed_dln(problem.surrogate(), 3, 3, 0.3, alpha=[1.0, 4.0], batch=2)
    before = [w.clone() for w in net.weights]
    grads = layer_gradients(before, problem)
    lr = 0.7
    neg = [(-lr * s).view(-1, 1, 1) for s in net.lr_scales]
    gd_steps(net.weights, neg, problem, 1)
    for w, w0, g, s in zip(net.weights, before, grads, net.lr_scales, strict=True):
        torch.testing.assert_close(w, w0 - lr * s.view(-1, 1, 1) * g, rtol=1e-14, atol=1e-16)


@pytest.mark.parametrize("depth", [2, 3, 4])
def test_alpha_scales_only_outer_layer_steps_in_training(depth):
    """One engine step with alpha = 3 moves W_1 and W_L 3x as far as alpha = 1, inner layers equally."""
    problem = _problem("mc", 8, 8)
    settings = TrainSettings(lr=2.0, n_inner=1, max_outer=1)
    start = compressed_dln(problem.surrogate(), 3, depth, 0.5, alpha=[1.0, 3.0], batch=2)
    net = start.clone()
    train(net, problem, settings)
    deltas = [w - w0 for w, w0 in zip(net.weights, start.weights, strict=True)]
    for layer, delta in enumerate(deltas):
        assert float(delta[0].abs().max()) > 0, f"layer {layer} did not move"
        ratio = 3.0 if layer in (0, depth - 1) else 1.0
        torch.testing.assert_close(delta[1], ratio * delta[0], rtol=1e-12, atol=1e-18)


def test_checkpoints_and_per_member_early_stopping():
    problem = make_problem(ProblemSpec(**{"task": "mf", "d_out": 10, "d_in": 10, "rank": 2}))
    # member 0 at alpha 1, member 1 at alpha 0.05 (slow): same tol, different stop iterations.
    net = compressed_dln(problem.surrogate(), 4, 3, 1e-2, alpha=[1.0, 0.05], batch=2)
    result = train(net, problem, TrainSettings(lr=5.0, n_inner=20, max_outer=60, tol=1e-8))
    curves = result.curves
    assert list(curves.columns) == ["member", "iteration", "seconds", "train_loss", "recovery_error"]
    assert result.converged[0] and result.stop_iteration[0] < 1200
    member0 = curves[curves.member == 0]
    assert list(member0.iteration) == list(range(0, result.stop_iteration[0] + 1, 20))
    assert member0.train_loss.iloc[-1] < 1e-8 <= member0.train_loss.iloc[-2]
    member1 = curves[curves.member == 1]
    assert member1.iteration.max() > result.stop_iteration[0]
    assert result.stop_iteration[1] == member1.iteration.max()
    # A stopped member no longer moves: its weights equal a run that stops at the same iteration alone.
    alone = compressed_dln(problem.surrogate(), 4, 3, 1e-2, alpha=1.0)
    train(alone, problem, TrainSettings(lr=5.0, n_inner=20, max_outer=60, tol=1e-8))
    torch.testing.assert_close(net.weights[0][0], alone.weights[0][0], rtol=1e-12, atol=1e-18)
    assert bool((member0.seconds.diff().dropna() >= 0).all()) and result.seconds >= member0.seconds.max()
    assert result.warmup_seconds >= 0


def test_budget_exhausted_is_not_converged():
    problem = _problem("mf", 8, 8)
    net = compressed_dln(problem.surrogate(), 4, 3, 1e-2)
    result = train(net, problem, TrainSettings(lr=1.0, n_inner=5, max_outer=3, tol=1e-30))
    assert result.converged == [False] and result.stop_iteration == [15]
    assert list(result.curves.iteration) == [0, 5, 10, 15]


def test_divergence_raises_with_iteration_and_advice():
    problem = _problem("mf", 8, 8)
    net = compressed_dln(problem.surrogate(), 4, 3, 1.0)
    with pytest.raises(DivergenceError) as info:
        train(net, problem, TrainSettings(lr=1e6, n_inner=10, max_outer=50))
    message = str(info.value)
    assert f"iteration {info.value.iteration}" in message and info.value.iteration % 10 == 0
    assert info.value.iteration > 0 and "smaller --lr" in message


@pytest.mark.parametrize("task", ["mf", "mc", "ms"])
def test_tiny_cdln_run_recovers_target(task):
    config = RunConfig(model="cdln", depth=3, n_inner=50, max_outer=200, tol=1e-16, device="cpu", **TINY[task])
    record = run(config)
    member = record["members"][0]
    assert member["final_recovery_error"] < 1e-6, member
    # ... and it really trained: the initial error was large.
    assert member["stop_iteration"] > 0


@pytest.mark.parametrize("task", ["mf", "mc", "ms"])
def test_tiny_run_error_decreases_from_start(task):
    config = RunConfig(model="cdln", depth=3, n_inner=50, max_outer=4, device="cpu", **TINY[task])
    problem = make_problem(config.problem_spec())
    net = compressed_dln(problem.surrogate(), 4, 3, 1e-2)
    curves = train(net, problem, TrainSettings(config.lr, 50, 40)).curves
    assert curves.recovery_error.iloc[-1] < 1e-3 * curves.recovery_error.iloc[0]


def test_batched_members_equal_separate_runs():
    problem = make_problem(ProblemSpec("ms", 8, 8, 2, data_seed=0, m=100))
    settings = TrainSettings(lr=5.0, n_inner=25, max_outer=8)
    batched = original_dln(8, 8, 3, 0.1, [0, 1])
    together = train(batched, problem, settings).curves
    for member, seed in enumerate([0, 1]):
        alone = train(original_dln(8, 8, 3, 0.1, [seed]), problem, settings).curves
        mine = together[together.member == member]
        torch.testing.assert_close(
            torch.tensor(mine.recovery_error.to_numpy()),
            torch.tensor(alone.recovery_error.to_numpy()),
            rtol=1e-10,
            atol=0,
        )


def test_training_is_deterministic_bitwise():
    problem = make_problem(ProblemSpec("mc", 10, 10, 2, data_seed=0, p=0.5))
    settings = TrainSettings(lr=3.0, n_inner=20, max_outer=10)
    runs = [train(original_dln(10, 10, 3, 0.1, [4, 5]), problem, settings).curves for _ in range(2)]
    cols = ["member", "iteration", "train_loss", "recovery_error"]
    assert runs[0][cols].equals(runs[1][cols])


def test_snapshot_callback_is_called_at_every_checkpoint():
    problem = _problem("mf", 8, 8)
    seen = []

    def snap(iteration, network, end_to_end):
        seen.append(iteration)
        return {"norm": end_to_end.norm(dim=(-2, -1)).numpy()}

    result = train(compressed_dln(problem.surrogate(), 2, 3, 0.1), problem, TrainSettings(0.5, 4, 3), snapshot=snap)
    assert seen == [0, 4, 8, 12] and [int(s["iteration"]) for s in result.snapshots] == seen
