"""The compiled engine paths (cdln.engine.kernels, numba): same iterates as the torch path, the sampled MC step
equal to the dense one, the engine plan and its one override (CDLN_ENGINE), shape checks.

Tolerances: the paths differ only in summation order (scipy's OpenBLAS vs torch's MKL products, the sampled
step's sparse-dense sums, reassociated and fused multiply-adds), so after 100 steps float64 iterates agree
to a relative 1e-12 and float32 to 1e-4.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import REPO, cli_env

from cdln import devices
from cdln.data.synthetic import make_problem
from cdln.engine import TrainSettings, gd_steps, kernels, plan, plan_engine, train
from cdln.networks import LinearNetwork, compressed_dln, original_dln
from cdln.problems import Completion
from cdln.spec import ProblemSpec


def step_path(weights, problem) -> str:
    return plan_engine(weights, problem).path


def _relative(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    pairs = zip(a, b, strict=True)
    return max(float((torch.linalg.matrix_norm(x - y) / torch.linalg.matrix_norm(y)).max()) for x, y in pairs)


def _networks(problem, depth: int, dtype: torch.dtype) -> dict[str, LinearNetwork]:
    d_out, d_in = problem.shape
    nets = {"original": original_dln(d_out, d_in, depth, 0.3, [0, 1])}
    if depth >= 2:
        for r_hat in (3, 13, 36, 70):  # rows in registers (<= 32), and in one or two register blocks
            if r_hat <= min(d_out, d_in):
                surrogate = problem.surrogate().double()
                nets[f"cdln{r_hat}"] = compressed_dln(surrogate, r_hat, depth, 0.3, [1.0, 3.0], 2)
    return {name: net.to("cpu", dtype) for name, net in nets.items()}


def _steps(weights, network, problem, path, n=100, lr=0.5):
    weights = [w.clone() for w in weights]
    gd_steps(weights, [(-lr * s).view(-1, 1, 1) for s in network.lr_scales], problem, n, path=path)
    return weights


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 1e-4)])
@pytest.mark.parametrize("task", ["mf", "mc"])
@pytest.mark.parametrize("shape", [(10, 10), (12, 7), (6, 11), (40, 30)])
@pytest.mark.parametrize("depth", [1, 2, 3, 4])
def test_native_paths_match_the_torch_path(dtype, tol, task, shape, depth):
    problem = make_problem(ProblemSpec(task, *shape, 2, 0, 0.5 if task == "mc" else None)).to("cpu", dtype)
    paths = ["native-dense"] + (["native-sampled"] if task == "mc" and depth >= 2 else [])
    for name, network in _networks(problem, depth, dtype).items():
        reference = _steps(network.weights, network, problem, "torch")
        assert _relative(reference, network.weights) > 1e-3, f"{name}: the steps must move the weights"
        for path in paths:
            got = _steps(network.weights, network, problem, path)
            assert _relative(got, reference) < tol, f"{name} {path}"


@pytest.mark.parametrize("model", ["original", "cdln"])
@pytest.mark.parametrize("p", [0.05, 0.3])
def test_sampled_step_equals_dense_step_over_100_steps(model, p):
    """The sampled C-DLN step gives the dense step's iterates within 1e-12 (relative, 100 steps)."""
    problem = make_problem(ProblemSpec("mc", 60, 50, 3, 0, p))
    if model == "original":
        network = original_dln(60, 50, 3, 0.1, [0])
    else:
        network = compressed_dln(problem.surrogate(), 6, 3, 0.1, 2.0)
    lr = problem.n_observed / 300  # as the spec's mc setting (eta 10, 3000 observed): same step per entry
    dense = _steps(network.weights, network, problem, "native-dense", lr=lr)
    sampled = _steps(network.weights, network, problem, "native-sampled", lr=lr)
    torch_path = _steps(network.weights, network, problem, "torch", lr=lr)
    assert _relative(dense, network.weights) > 1e-2
    assert _relative(sampled, dense) < 1e-12 and _relative(sampled, torch_path) < 1e-12


@pytest.mark.parametrize("wide", [False, True])
def test_wide_rows_sampled_step_equals_dense_step(wide):
    """Rows wider than 32 (the original DLN's): in registers up to what this CPU's registers hold (104 with
    AVX-512), in register blocks beyond; either way the sampled step gives the dense step's and the torch path's
    iterates, and the plan records the kernel it chose."""
    block, register_max = kernels._vector_registers()
    width = register_max + 5 if wide else max(33, register_max - 3)
    problem = make_problem(ProblemSpec("mc", 30, 25, 3, 0, 0.3))
    network = original_dln(30, 25, 3, 0.1, [0], width=width)
    assert network.weights[-1].shape[-1] == width
    steps = kernels.CompiledSteps(
        network.weights, problem.observations, problem.loss_weights, 0.0, problem.observed_entries()
    )
    assert steps.kernel_name == (f"blocks-{block}" if wide else f"registers-{width}")
    assert steps.kernel.__name__.startswith("_sampled_steps_wide") == wide
    assert plan_engine(network.weights, problem, "native-sampled").record()["sampled_kernel"] == steps.kernel_name
    lr = problem.n_observed / 300
    dense, sampled, torch_path = (
        _steps(network.weights, network, problem, path, lr=lr) for path in ("native-dense", "native-sampled", "torch")
    )
    assert _relative(dense, network.weights) > 1e-2
    assert _relative(sampled, dense) < 1e-12 and _relative(sampled, torch_path) < 1e-12


def test_training_on_each_path_gives_the_same_curves(monkeypatch):
    problem = make_problem(ProblemSpec("mc", 16, 16, 2, 0, 0.4))
    settings = TrainSettings(5.0, 25, 8, tol=0.0)
    curves = {}
    for path in ("torch", "native-dense", "native-sampled"):
        monkeypatch.setenv("CDLN_ENGINE", path)
        network = compressed_dln(problem.surrogate(), 4, 3, 1e-2, [1.0, 2.0], batch=2)
        curves[path] = train(network, problem, settings).curves
    for path in ("native-dense", "native-sampled"):
        torch.testing.assert_close(
            torch.tensor(curves[path]["train_loss"].to_numpy()),
            torch.tensor(curves["torch"]["train_loss"].to_numpy()),
            rtol=1e-10,
            atol=1e-300,
        )


def test_step_path_choice(monkeypatch):
    sparse = make_problem(ProblemSpec("mc", 20, 20, 2, 0, 0.2))
    dense = make_problem(ProblemSpec("mc", 20, 20, 2, 0, 0.8))
    mf = make_problem(ProblemSpec("mf", 20, 20, 2, 0))
    ms = make_problem(ProblemSpec("ms", 6, 6, 2, 0, m=40))
    weights = original_dln(20, 20, 3, 0.1, [0]).weights
    assert step_path(weights, sparse) == "native-sampled"
    assert step_path(weights, dense) == "native-dense"
    assert step_path(weights, mf) == "native-dense"
    assert step_path(original_dln(6, 6, 3, 0.1, [0]).weights, ms) == "torch"
    assert step_path(original_dln(20, 20, 1, 0.1, [0]).weights, sparse) == "native-dense"  # depth 1: no sampling
    assert step_path([w.mT for w in weights], sparse) == "torch"  # not contiguous
    assert step_path([w.to(torch.bfloat16) for w in weights], sparse.to("cpu", torch.bfloat16)) == "torch"
    # the choice never depends on the batch size (a member's arithmetic must not either)
    assert step_path(original_dln(20, 20, 3, 0.1, [0, 1, 2]).weights, sparse) == "native-sampled"
    assert plan.sampled_max_density(weights) == plan.SAMPLED_MAX_DENSITY["registers"]  # k = 20
    wide = original_dln(20, 20, 3, 0.1, [0], width=100).weights
    assert plan.sampled_max_density(wide) == plan.SAMPLED_MAX_DENSITY["cache"]
    assert plan.sampled_max_density(original_dln(400, 400, 2, 0.1, [0]).weights) == plan.SAMPLED_MAX_DENSITY["memory"]
    monkeypatch.setitem(plan.SAMPLED_MAX_DENSITY, "registers", 0.1)
    assert step_path(weights, sparse) == "native-dense"
    monkeypatch.setenv("CDLN_ENGINE", "native-sampled")
    assert step_path(weights, dense) == "native-sampled"
    with pytest.raises(ValueError, match="needs an MC problem"):
        step_path(weights, mf)
    with pytest.raises(ValueError, match="not available"):
        step_path(original_dln(6, 6, 3, 0.1, [0]).weights, ms)
    monkeypatch.setenv("CDLN_ENGINE", "numba")
    assert step_path(original_dln(6, 6, 3, 0.1, [0]).weights, ms) == "torch"  # MS: torch's step, numba's pass
    with pytest.raises(ValueError, match="not available"):
        step_path([w.mT for w in weights], sparse)
    monkeypatch.setenv("CDLN_ENGINE", "auto")
    # a problem of the user's own (a subclass with another loss) never runs on the MC kernels
    assert step_path(weights, _OwnLoss(sparse.spec, sparse.target, sparse.mask)) == "torch"
    monkeypatch.setenv("CDLN_ENGINE", "fastest")
    with pytest.raises(ValueError, match="must be one of"):
        step_path(weights, dense)


class _OwnLoss(Completion):
    def loss_grad(self, end_to_end, out=None):
        return 2 * super().loss_grad(end_to_end)


def test_torch_override_means_torch_everywhere(monkeypatch):
    """CDLN_ENGINE=torch: the MF/MC step and MS's operator pass are torch's, and the plan says so."""
    mc = make_problem(ProblemSpec("mc", 20, 20, 2, 0, 0.2))
    ms = make_problem(ProblemSpec("ms", 6, 6, 2, 0, m=40))
    weights = original_dln(20, 20, 3, 0.1, [0]).weights
    ms_weights = original_dln(6, 6, 3, 0.1, [0]).weights
    assert plan_engine(weights, mc).record()["backend"].startswith("numba")
    assert plan_engine(ms_weights, ms).operator_pass == "native-one-pass"
    monkeypatch.setenv("CDLN_ENGINE", "torch")
    record = plan_engine(weights, mc).record()
    assert (record["path"], record["override"]) == ("torch", "torch") and record["backend"].startswith("torch")
    assert record["blas"].startswith("torch") and "numba" not in record["blas"]
    ms_plan = plan_engine(ms_weights, ms)
    assert ms_plan.label() == "torch+torch-two-pass" and "numba" not in ms_plan.record()["backend"]


def test_plan_records_backend_and_blas():
    problem = make_problem(ProblemSpec("mc", 20, 20, 2, 0, 0.2))
    record = plan_engine(original_dln(20, 20, 3, 0.1, [0]).weights, problem).record()
    assert record["path"] == "native-sampled" and record["label"] == "native-sampled"
    assert record["sampled_kernel"] == "registers-20"  # k = 20: the row fits any CPU's registers
    assert record["backend"] == f"numba {kernels.numba.__version__}"
    info = devices.blas_info()
    assert info["name"] in record["blas"] and info["version"] in record["blas"]
    assert record["override"] == "auto"


KERNEL_RUNS = """
import sys
import numpy as np
import torch
from cdln.engine import kernels, plan_engine
from cdln.networks import compressed_dln, original_dln
from cdln.data.synthetic import make_problem
from cdln.spec import ProblemSpec

out = {}
for name, (d, r_hat) in {"register": (24, 5), "wide": (kernels._vector_registers()[1] + 3, None)}.items():
    problem = make_problem(ProblemSpec("mc", d, d, 2, 0, 0.3))
    if r_hat is None:
        net = original_dln(d, d, 3, 0.3, [0])
    else:
        net = compressed_dln(problem.surrogate(), r_hat, 3, 0.3, [1.0])
    steps = [(-2.0 * s).view(-1, 1, 1) for s in net.lr_scales]
    for path, csr in (("dense", None), ("sampled", problem.observed_entries())):
        weights = [w.clone() for w in net.weights]
        kernels.CompiledSteps(weights, problem.observations, problem.loss_weights, 0.0, csr).run(weights, steps, 200)
        out.update({f"{name}-{path}-{i}": w.numpy() for i, w in enumerate(weights)})
    print(plan_engine(net.weights, problem).path)
problem = make_problem(ProblemSpec("ms", 7, 9, 2, 0, m=203))
flat = torch.randn(3, 63, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
out["ms"] = kernels.OperatorPass(problem.operator, problem.measurements)(flat, torch.empty_like(flat)).numpy()
np.savez(sys.argv[1], **out)
"""


def test_kernels_compiled_and_loaded_from_the_cache_give_the_same_numbers(tmp_path):
    """No system compiler is needed: with an empty PATH (no cc, gcc, clang) and a fresh numba cache, one process
    plans the compiled path and compiles every kernel kind; the next loads them from that cache. Both give
    bitwise the same weights after 200 steps, and the same MS gradient."""
    (tmp_path / "bin").mkdir()
    env = dict(cli_env(), PATH=str(tmp_path / "bin"), NUMBA_CACHE_DIR=str(tmp_path / "cache"))
    runs = []
    for attempt in ("compiled", "cached"):
        result = subprocess.run(
            [sys.executable, "-c", KERNEL_RUNS, str(tmp_path / f"{attempt}.npz")],
            env=env, cwd=REPO, capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr[-3000:]
        assert result.stdout.split() == ["native-sampled", "native-sampled"], result.stdout
        runs.append(np.load(tmp_path / f"{attempt}.npz"))
    compiled, cached = runs
    assert any((tmp_path / "cache").rglob("*.nbc")), "the first process wrote no numba cache"
    assert sorted(compiled.files) == sorted(cached.files) and len(compiled.files) == 13
    different = [name for name in compiled.files if not np.array_equal(compiled[name], cached[name])]
    assert not different, f"compiled and cached kernels disagree on {different}"


@pytest.mark.parametrize("sampled", [False, True])
def test_shape_mismatch_raises_instead_of_crashing(sampled):
    """The C-DLN's U and V swapped on a rectangular (MovieLens-shaped) problem: the end-to-end product has
    the target's transposed shape. The compiled kernels index without bounds checks, so this must be caught
    when they are built."""
    problem = make_problem(ProblemSpec("mc", 30, 20, 2, 0, 0.1))
    network = compressed_dln(problem.surrogate(), 4, 3, 0.1)
    swapped = [network.weights[2].mT.contiguous(), network.weights[1], network.weights[0].mT.contiguous()]
    assert product_shape(swapped) == (20, 30)
    steps = [(-1.0 * s).view(-1, 1, 1) for s in network.lr_scales]
    path = "native-sampled" if sampled else "native-dense"
    with pytest.raises(ValueError, match="do not chain"):
        gd_steps(swapped, steps, problem, 1, path=path)
    with pytest.raises(ValueError, match="do not chain"):
        step_path(swapped, problem)
    csr = problem.observed_entries() if sampled else None
    with pytest.raises(ValueError, match="do not chain"):
        kernels.CompiledSteps(swapped, problem.target, problem.loss_weights, 0.0, csr)


def product_shape(weights):
    return (weights[-1].shape[-2], weights[0].shape[-1])


def test_observed_entries_are_the_mask_in_csr_form():
    problem = make_problem(ProblemSpec("mc", 7, 5, 2, 0, 0.4))
    assert isinstance(problem, Completion)
    row_ptr, cols, values, weights = problem.observed_entries()
    rebuilt = torch.zeros(7, 5, dtype=torch.bool)
    for i in range(7):
        rebuilt[i, cols[row_ptr[i] : row_ptr[i + 1]]] = True
    assert torch.equal(rebuilt, problem.mask) and int(row_ptr[-1]) == problem.n_observed
    assert torch.equal(values, problem.target[problem.mask]) and torch.all(weights == 1.0 / problem.n_observed)


@pytest.mark.parametrize("storage", ["float32", "float64"])
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-13), (torch.float32, 1e-5)])
@pytest.mark.parametrize("m", [200, 203])  # a multiple of the kernel's 8-row blocks, and not
def test_one_pass_sensing_equals_two_passes(storage, dtype, tol, m):
    """The native MS gradient A^T (A w - y) and loss in one pass over A (stored in float32 or float64, the
    arithmetic in the run's dtype) equal torch's two passes over the same instance, and a network's results are
    bitwise the same in a batch of 3 as alone."""
    spec = ProblemSpec("ms", 9, 7, 2, data_seed=0, m=m, operator_dtype=storage)
    problem = make_problem(spec).to("cpu", dtype)
    narrowest = min(storage, str(dtype).removeprefix("torch."), key=lambda name: int(name[-2:]))
    assert str(problem.operator.dtype) == f"torch.{narrowest}" and problem.measurements.dtype == dtype
    w = torch.randn(3, 9, 7, generator=torch.Generator().manual_seed(1), dtype=dtype)
    flat = w.reshape(3, -1)
    wide = problem.operator.to(dtype)
    reference = (flat @ wide.T - problem.measurements) @ wide
    torch_loss, torch_grad = problem.loss_and_grad(w)
    assert float((torch_grad.reshape(3, -1) - reference).norm() / reference.norm()) < tol
    one_pass = kernels.OperatorPass(problem.operator, problem.measurements)
    losses = torch.empty(3, dtype=dtype)
    got = one_pass(flat, torch.empty_like(flat), losses)
    assert float((got - reference).norm() / reference.norm()) < tol
    torch.testing.assert_close(losses, torch_loss, rtol=tol, atol=0)
    for b in range(3):
        alone = torch.empty(1, dtype=dtype)
        assert torch.equal(one_pass(flat[b : b + 1], torch.empty_like(flat[:1]), alone)[0], got[b])
        assert torch.equal(alone[0], losses[b])
    step_grad, checkpoint = plan._loss_functions(problem, plan_engine(list(w[None]), problem).operator_pass)
    assert torch.equal(step_grad(w).reshape(3, -1), got)  # what the engine calls
    assert torch.equal(checkpoint(w)[0], losses) and torch.equal(checkpoint(w)[1].reshape(3, -1), got)


def test_one_pass_sensing_refuses_mixed_tensors():
    problem = make_problem(ProblemSpec("ms", 4, 4, 1, data_seed=0, m=20))
    one_pass = kernels.OperatorPass(problem.operator, problem.measurements)
    flat = torch.zeros(1, 16, dtype=torch.float32)
    with pytest.raises(ValueError, match="of shape"):
        one_pass(flat, flat.clone())
    wrong = torch.zeros(1, 15, dtype=problem.measurements.dtype)  # a transposed or mis-sized network
    with pytest.raises(ValueError, match="of shape"):
        one_pass(wrong, wrong.clone())
    with pytest.raises(ValueError, match="at least A's precision"):
        kernels.OperatorPass(problem.operator.double(), problem.measurements.float())
