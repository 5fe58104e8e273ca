"""The fast GD engine against a plain autograd reference, and batched against one-at-a-time training.

The engine computes layer gradients in closed form into preallocated buffers, updates with one
fused call and drops members once they stop; none of that may change the arithmetic: gradients and
trajectories match ``torch.autograd`` on the problem's own training loss to 1e-10 (float64), and a member
trains bitwise the same in a batch as alone (MF, MC; MS to rounding). Trajectory and batching
tests run on every engine path (torch, and the compiled native dense/sampled steps where they apply).
"""

from __future__ import annotations

import pytest
import torch

from cdln.bench import kernels as bench
from cdln.data.synthetic import make_problem
from cdln.engine import TrainSettings, Workspace, layer_gradients, train
from cdln.networks import LinearNetwork, compressed_dln, original_dln
from cdln.problems import Problem
from cdln.spec import ProblemSpec

TASK_OPTIONS = {"mf": {}, "mc": {"p": 0.5}, "ms": {"m": 150}}
ENGINE_PATHS = ["torch", "native-dense", "native-sampled"]


@pytest.fixture(params=ENGINE_PATHS)
def engine_path(request, monkeypatch):
    """Run the test with the engine forced onto one path (native paths only where the task allows them)."""
    monkeypatch.setenv("CDLN_ENGINE", request.param)
    return request.param


def _skip_unless_path_applies(path: str, task: str) -> None:
    if path.startswith("native") and task == "ms":
        pytest.skip("the native engine step is MF and MC's (MS: torch step, native operator pass)")
    if path == "native-sampled" and task != "mc":
        pytest.skip("the sampled step is for MC")


SHAPES = [(10, 10), (12, 7), (6, 11)]  # square and both rectangular orientations


def _problem(task: str, d_out: int, d_in: int, rank: int = 2, seed: int = 0) -> Problem:
    return make_problem(ProblemSpec(task, d_out, d_in, rank, seed, **TASK_OPTIONS[task]))


def _network(model: str, problem: Problem, depth: int, batch: int = 1, eps: float = 1e-2) -> LinearNetwork:
    d_out, d_in = problem.shape
    if model == "original":
        return original_dln(d_out, d_in, depth, eps, list(range(batch)))
    return compressed_dln(problem.surrogate(), 4, depth, eps, [1.0 - 0.25 * i for i in range(batch)], batch)


def _perturbed(network: LinearNetwork, scale: float = 0.4, seed: int = 1) -> list[torch.Tensor]:
    """Weights away from the (nearly symmetric) initialisation, so every gradient term is O(1)."""
    generator = torch.Generator().manual_seed(seed)
    return [w + scale * torch.randn(w.shape, generator=generator, dtype=w.dtype) for w in network.weights]


def autograd_gradients(weights: list[torch.Tensor], problem: Problem) -> list[torch.Tensor]:
    """Reference: autograd of the summed per-member training loss (members are independent)."""
    leaves = [w.detach().clone().requires_grad_(True) for w in weights]
    product = leaves[0]
    for weight in leaves[1:]:
        product = weight @ product
    problem.train_loss(product).sum().backward()
    return [leaf.grad for leaf in leaves]


def autograd_trajectory(network: LinearNetwork, problem: Problem, lr: float, n_inner: int, n_outer: int):
    """Reference GD: weights after each ``n_inner`` autograd steps and the training losses there."""
    weights = [w.clone() for w in network.weights]
    losses = [problem.train_loss(LinearNetwork("ref", weights, network.lr_scales).end_to_end())]
    for _ in range(n_outer):
        for _ in range(n_inner):
            grads = autograd_gradients(weights, problem)
            weights = [w - lr * s.view(-1, 1, 1) * g for w, s, g in zip(weights, network.lr_scales, grads, strict=True)]
        losses.append(problem.train_loss(LinearNetwork("ref", weights, network.lr_scales).end_to_end()))
    return weights, torch.stack(losses, dim=1)  # (B, n_outer + 1)


@pytest.mark.parametrize("task", ["mf", "mc", "ms"])
@pytest.mark.parametrize("model", ["original", "cdln"])
@pytest.mark.parametrize("depth", [2, 3, 4])
@pytest.mark.parametrize("d_out,d_in", SHAPES)
def test_closed_form_gradients_match_autograd(task, model, depth, d_out, d_in):
    problem = _problem(task, d_out, d_in)
    weights = _perturbed(_network(model, problem, depth, batch=2))
    expected = autograd_gradients(weights, problem)
    got = layer_gradients(weights, problem)
    assert [g.shape for g in got] == [w.shape for w in weights]
    for layer, (g, e) in enumerate(zip(got, expected, strict=True)):
        assert e.abs().max() > 1e-6, f"layer {layer}: reference gradient is ~0, the check would be vacuous"
        torch.testing.assert_close(g, e, rtol=1e-10, atol=1e-10 * float(e.abs().max()), msg=f"layer {layer}")


@pytest.mark.parametrize("task,lr", [("mf", 2.0), ("mc", 1.0), ("ms", 3.0)])  # stable for every depth at eps 0.3
@pytest.mark.parametrize("model", ["original", "cdln"])
@pytest.mark.parametrize("depth", [2, 3, 4])
def test_trajectories_match_autograd_gd(task, lr, model, depth, engine_path):
    _skip_unless_path_applies(engine_path, task)
    problem = _problem(task, 9, 7)
    network = _network(model, problem, depth, batch=2, eps=0.3)
    n_inner, n_outer = 10, 6
    ref_weights, ref_losses = autograd_trajectory(network, problem, lr, n_inner, n_outer)
    assert float(ref_losses[:, -1].max()) < 0.9 * float(ref_losses[:, 0].min()), "reference GD must make progress"
    result = train(network, problem, TrainSettings(lr, n_inner, n_outer, tol=0.0))
    for member in range(network.batch):
        curve = result.curves[result.curves["member"] == member]
        assert curve["iteration"].tolist() == [n_inner * k for k in range(n_outer + 1)]
        torch.testing.assert_close(
            torch.tensor(curve["train_loss"].to_numpy()), ref_losses[member], rtol=1e-10, atol=1e-300
        )
    for got, expected in zip(network.weights, ref_weights, strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("task", ["mf", "mc", "ms"])
def test_workspace_and_fast_loss_gradient_change_no_bits(task):
    problem = _problem(task, 11, 8)
    weights = _perturbed(_network("original", problem, 3, batch=3))
    end_to_end = LinearNetwork("x", weights, [torch.ones(3)] * 3).end_to_end()
    out = torch.empty_like(end_to_end)
    assert torch.equal(problem.loss_grad(end_to_end, out=out), problem.loss_grad(end_to_end))
    workspace = Workspace(weights)
    first = [g.clone() for g in layer_gradients(weights, problem, workspace)]
    again = layer_gradients(weights, problem, workspace)  # reused buffers, same numbers
    fresh = layer_gradients(weights, problem)
    for a, b, c in zip(first, again, fresh, strict=True):
        assert torch.equal(a, b) and torch.equal(a, c)


def _train_alone_and_batched(problem: Problem, model: str, batch: int, settings: TrainSettings):
    batched = _network(model, problem, 3, batch=batch)
    result = train(batched, problem, settings)
    alone = []
    for member in range(batch):
        single = LinearNetwork(
            batched.name,
            [w[member : member + 1].clone() for w in _network(model, problem, 3, batch=batch).weights],
            [s[member : member + 1].clone() for s in batched.lr_scales],
        )
        alone.append((single, train(single, problem, settings)))
    return batched, result, alone


@pytest.mark.parametrize("task,lr", [("mf", 5.0), ("mc", 4.0), ("ms", 5.0)])
@pytest.mark.parametrize("model", ["original", "cdln"])
def test_batched_members_train_as_if_alone(task, lr, model, engine_path):
    _skip_unless_path_applies(engine_path, task)
    problem = _problem(task, 10, 10)
    # tol chosen so that members stop at different checkpoints: exercises dropping stopped members.
    settings = TrainSettings(lr, 25, 200, tol=1e-7)
    batched, result, alone = _train_alone_and_batched(problem, model, 3, settings)
    assert len(set(result.stop_iteration)) > 1 or model == "original", "members should stop at different times"
    exact = task != "ms"  # MS: the batch shares one operator product, whose rounding depends on B
    for member, (single, single_result) in enumerate(alone):
        assert result.stop_iteration[member] == single_result.stop_iteration[0]
        assert result.converged[member] == single_result.converged[0]
        mine = result.curves[result.curves["member"] == member]
        theirs = single_result.curves
        assert mine["iteration"].tolist() == theirs["iteration"].tolist()
        for column in ("train_loss", "recovery_error"):
            a, b = torch.tensor(mine[column].to_numpy()), torch.tensor(theirs[column].to_numpy())
            if exact:
                assert torch.equal(a, b), column
            else:
                torch.testing.assert_close(a, b, rtol=1e-10, atol=0)
        for w_batch, w_single in zip(batched.weights, single.weights, strict=True):
            if exact:
                assert torch.equal(w_batch[member : member + 1], w_single)
            else:
                torch.testing.assert_close(w_batch[member : member + 1], w_single, rtol=1e-10, atol=1e-14)


def test_stopped_members_keep_their_weights_at_the_stop():
    problem = _problem("mc", 10, 10)
    network = _network("cdln", problem, 3, batch=2)
    network.lr_scales = [torch.tensor([1.0, 0.3], dtype=torch.float64) for _ in network.weights]
    result = train(network, problem, TrainSettings(4.0, 25, 60, tol=1e-7))
    fast, slow = result.stop_iteration
    assert result.converged[0] and fast < slow
    # The fast member's final weights reproduce its last recorded loss (it did not move after stopping).
    last = result.curves[result.curves["member"] == 0].iloc[-1]
    assert last["iteration"] == fast
    loss = problem.train_loss(LinearNetwork("x", [w[:1] for w in network.weights], network.lr_scales).end_to_end())
    assert float(loss[0]) == last["train_loss"]


def test_bench_case_reports_engine_and_its_bound():
    row = bench.bench_case(
        bench.Case("mc", 24, "cdln", "float64", r=2, r_hat=4), {}, torch.device("cpu"), 0.0, 1, peak=1e12
    )
    assert row["us_per_iteration"] > 0 and row["bound_us"] > 0 and row["path"] == "native-sampled"
    assert row["ratio"] == pytest.approx(row["us_per_iteration"] / row["bound_us"])
    assert row["gflops"] == pytest.approx(row["gflop_per_iteration"] * 1e6 / row["us_per_iteration"])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("task", ["mf", "mc", "ms"])
def test_cuda_engine_matches_cpu(task):
    problem = _problem(task, 12, 9)
    settings = TrainSettings(5.0, 20, 5, tol=0.0)
    cpu_network = _network("cdln", problem, 3, batch=2)
    gpu_network = cpu_network.to("cuda", torch.float64)
    cpu = train(cpu_network, problem, settings)
    gpu = train(gpu_network, problem.to("cuda", torch.float64), settings)
    expected = torch.tensor(cpu.curves["train_loss"].to_numpy())
    torch.testing.assert_close(torch.tensor(gpu.curves["train_loss"].to_numpy()), expected, rtol=1e-9, atol=0)
