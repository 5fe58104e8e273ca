"""The CUDA-graph engine path: n_inner torch-path steps captured once, replayed with one launch.

The capture logic (warm-up and restore, replay bound to the captured tensors, graphs kept per step
count in the workspace) is checked on the CPU with the capture replaced by running the recorded steps
eagerly; the real capture runs only with a CUDA device (tests marked gpu, skipped without one).
Tolerance on CUDA: a replay runs the eager path's kernels, so iterates agree to 1e-12 (float64).
"""

from __future__ import annotations

import pytest
import torch

from cdln import engine
from cdln.engine import CapturedSteps, TrainSettings, Workspace, gd_steps, step_path, train
from cdln.networks import compressed_dln, original_dln
from cdln.problems import ProblemSpec, make_problem

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _setup(task: str = "mc", device: str = "cpu"):
    problem = make_problem(ProblemSpec(task, 12, 9, 2, 0, 0.5 if task == "mc" else None, 80 if task == "ms" else None))
    network = compressed_dln(problem.surrogate(), 4, 3, 0.3, [1.0, 2.0], batch=2)
    problem, network = problem.to(device, torch.float64), network.to(device, torch.float64)
    steps = [(-1.0 * s).view(-1, 1, 1) for s in network.lr_scales]
    return problem, network, steps


def _eager(weights, steps, problem, n):
    weights = [w.clone() for w in weights]
    gd_steps(weights, steps, problem, n, path="torch")
    return weights


def test_capture_logic_with_an_eager_stand_in(monkeypatch):
    monkeypatch.setattr(engine, "_capture", lambda run, device: run)  # "replay" = run the recorded steps
    problem, network, steps = _setup()
    weights = [w.clone() for w in network.weights]
    workspace = Workspace(weights)
    captured = CapturedSteps(weights, steps, problem, 5, workspace)
    assert all(torch.equal(a, b) for a, b in zip(weights, network.weights, strict=True)), "capture must not step"
    captured.replay()
    captured.replay()
    expected = _eager(network.weights, steps, problem, 10)
    assert all(torch.equal(a, b) for a, b in zip(weights, expected, strict=True))
    assert captured.matches(weights, steps, problem, 5) and not captured.matches(weights, steps, problem, 6)
    assert not captured.matches([w.clone() for w in weights], steps, problem, 5), "bound to the captured tensors"
    # gd_steps keeps one graph per step count in the workspace and replays it
    engine._captured_steps(weights, steps, problem, 5, workspace)
    first = workspace.graphs[5]
    assert engine._captured_steps(weights, steps, problem, 5, workspace) is first
    engine._captured_steps(weights, steps, problem, 1, workspace)
    assert set(workspace.graphs) == {1, 5}
    fresh = [w.clone() for w in weights]  # other tensors (e.g. after members stopped): captured anew
    assert engine._captured_steps(fresh, steps, problem, 5, Workspace(fresh)) is not first


def test_cuda_graph_path_needs_cuda_tensors(monkeypatch):
    problem, network, _ = _setup()
    monkeypatch.setenv("CDLN_ENGINE", "cuda-graph")
    with pytest.raises(ValueError, match="needs CUDA tensors"):
        step_path(network.weights, problem)


@pytest.mark.gpu
@cuda
@pytest.mark.parametrize("task", ["mf", "mc", "ms"])
def test_cuda_graph_replay_matches_eager_steps(task, monkeypatch):
    problem, network, steps = _setup(task, "cuda")
    assert step_path(network.weights, problem) == "torch"  # opt-in until graphs have run on a GPU
    monkeypatch.setenv("CDLN_ENGINE", "cuda-graph")
    assert step_path(network.weights, problem) == "cuda-graph"
    weights = [w.clone() for w in network.weights]
    workspace = Workspace(weights)
    for _ in range(3):
        gd_steps(weights, steps, problem, 20, workspace)
    assert set(workspace.graphs) == {20}
    expected = _eager(network.weights, steps, problem, 60)
    for a, b in zip(weights, expected, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


@pytest.mark.gpu
@cuda
def test_training_with_and_without_graphs_agree(monkeypatch):
    problem, network, _ = _setup("mc", "cuda")
    settings = TrainSettings(5.0, 25, 8, tol=1e-7)  # members stop at different checkpoints: re-capture
    curves = {}
    for choice in ("cuda-graph", "auto"):
        monkeypatch.setenv("CDLN_ENGINE", choice)
        curves[choice] = train(network.clone(), problem, settings).curves
    assert curves["cuda-graph"]["iteration"].tolist() == curves["auto"]["iteration"].tolist()
    torch.testing.assert_close(
        torch.tensor(curves["cuda-graph"]["train_loss"].to_numpy()),
        torch.tensor(curves["auto"]["train_loss"].to_numpy()),
        rtol=1e-12,
        atol=1e-300,
    )


@pytest.mark.gpu
@cuda
def test_original_dln_on_cuda_uses_the_graph(monkeypatch):
    monkeypatch.setenv("CDLN_ENGINE", "cuda-graph")
    problem = make_problem(ProblemSpec("mc", 16, 16, 2, 0, 0.5)).to("cuda", torch.float64)
    network = original_dln(16, 16, 3, 0.1, [0]).to("cuda", torch.float64)
    assert step_path(network.weights, problem) == "cuda-graph"
    result = train(network, problem, TrainSettings(2.0, 10, 3))
    assert result.warmup_seconds > 0 and len(result.curves) == 4
