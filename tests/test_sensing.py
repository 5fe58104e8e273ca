"""MS with the operator stored in 4 bytes an entry: the stored tensors define the instance, every path solves
it in the run's dtype, a step reads the operator once (the checkpoint's loss comes from the next step's pass),
and a member trains bitwise the same alone as in a batch."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from cdln.data.synthetic import make_problem
from cdln.engine import TrainSettings, kernels, train
from cdln.io import load_problem, save_problem
from cdln.networks import compressed_dln, original_dln
from cdln.spec import ProblemSpec

SPEC = ProblemSpec("ms", 8, 8, 2, data_seed=0, m=200)


def test_the_stored_operator_defines_the_instance():
    """Drawn in float64 and rounded to float32 once; y computed in float64 from the rounded entries, so y is
    exactly A vec(M*) of what is stored. float64 storage keeps the authors' draw: the same Gaussians."""
    narrow, wide = make_problem(SPEC), make_problem(dataclasses.replace(SPEC, operator_dtype="float64"))
    assert narrow.spec.operator_dtype == "float32" and narrow.operator.dtype == torch.float32
    assert narrow.measurements.dtype == torch.float64 and wide.operator.dtype == torch.float64
    assert torch.equal(narrow.operator, wide.operator.float())  # the same draw, rounded
    assert torch.equal(narrow.measurements, narrow.operator.double() @ narrow.target.reshape(-1))
    assert not torch.equal(narrow.measurements, wide.measurements)  # a different (exactly defined) instance
    moved = narrow.to("cpu", torch.float64)
    assert moved.operator.dtype == torch.float32 and moved.target.dtype == torch.float64
    assert narrow.to("cpu", torch.float32).measurements.dtype == torch.float32
    assert wide.to("cpu", torch.float32).operator.dtype == torch.float32


def test_problem_files_halve_and_older_files_read_as_float64(tmp_path):
    big = dataclasses.replace(SPEC, d_out=30, d_in=30, m=400)
    for storage in ("float32", "float64"):
        save_problem(make_problem(dataclasses.replace(big, operator_dtype=storage)), tmp_path / f"{storage}.pt")
    sizes = {storage: (tmp_path / f"{storage}.pt").stat().st_size for storage in ("float32", "float64")}
    assert 1.9 < sizes["float64"] / sizes["float32"] < 2.05, sizes
    loaded = load_problem(tmp_path / "float32.pt")
    assert loaded.spec.operator_dtype == "float32" and loaded.operator.dtype == torch.float32
    payload = torch.load(tmp_path / "float64.pt", weights_only=True)
    del payload["spec"]["operator_dtype"]  # as written before the storage was recorded
    torch.save(payload, tmp_path / "older.pt")
    assert load_problem(tmp_path / "older.pt").spec.operator_dtype == "float64"


def test_operator_dtype_is_checked():
    with pytest.raises(ValueError, match="operator_dtype must be one of"):
        make_problem(dataclasses.replace(SPEC, operator_dtype="float16"))
    with pytest.raises(ValueError, match="applies to task 'ms'"):
        make_problem(ProblemSpec("mc", 8, 8, 2, p=0.5, operator_dtype="float32"))


@pytest.mark.parametrize("model", ["original", "cdln"])
def test_the_native_pass_and_torch_train_the_same_run(model, monkeypatch):
    """The compiled one-pass path (losses from its residuals) and torch's two passes over the same float32
    operator give the same curves and stop at the same checkpoint."""
    problem = make_problem(SPEC)
    settings = TrainSettings(lr=5.0, n_inner=20, max_outer=15, tol=1e-7)
    results = {}
    for engine in ("auto", "torch"):
        monkeypatch.setenv("CDLN_ENGINE", engine)
        if model == "original":
            network = original_dln(8, 8, 3, 0.1, [0, 1])
        else:
            network = compressed_dln(problem.surrogate(), 4, 3, 0.1, [1.0, 2.0], batch=2)
        results[engine] = train(network, problem.to("cpu", torch.float64), settings)
    native, reference = results["auto"], results["torch"]
    assert native.engine_path == "torch+native-one-pass" and reference.engine_path == "torch+torch-two-pass"
    assert native.stop_iteration == reference.stop_iteration and any(native.converged)
    for column in ("train_loss", "recovery_error"):
        torch.testing.assert_close(
            torch.tensor(native.curves[column].to_numpy()),
            torch.tensor(reference.curves[column].to_numpy()),
            rtol=1e-9,
            atol=1e-300,
        )


def test_a_step_reads_the_operator_once(monkeypatch):
    """Per interval of n steps: one pass at its checkpoint (the loss) that the next step reuses, so a run of
    k intervals makes 1 (warm-up) + (k + 1) (checkpoints) + k (n - 1) passes, not one more per checkpoint."""
    calls = []
    original_call = kernels.OperatorPass.__call__

    def counting(self, flat, out, losses=None):
        calls.append(flat.shape[0])
        return original_call(self, flat, out, losses)

    monkeypatch.setattr(kernels.OperatorPass, "__call__", counting)
    problem = make_problem(SPEC)
    n, k = 5, 3
    train(original_dln(8, 8, 3, 0.1, [0]), problem, TrainSettings(lr=5.0, n_inner=n, max_outer=k))
    assert len(calls) == 1 + (k + 1) + k * (n - 1)


def test_a_member_trains_bitwise_the_same_alone_as_in_a_batch():
    problem = make_problem(SPEC)
    settings = TrainSettings(lr=5.0, n_inner=10, max_outer=6, tol=1e-6)
    batch = train(original_dln(8, 8, 3, 0.1, [0, 1]), problem, settings).curves
    alone = train(original_dln(8, 8, 3, 0.1, [1]), problem, settings).curves
    mine = batch[batch["member"] == 1].drop(columns=["member", "seconds"]).reset_index(drop=True)
    assert mine.equals(alone.drop(columns=["member", "seconds"]).reset_index(drop=True))
