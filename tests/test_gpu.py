"""CPU vs CUDA: the same run agrees within stated tolerances (skipped without a CUDA device).

Tolerances (float64): cuBLAS and CPU BLAS sum in different orders, so trajectories differ by
rounding that GD can amplify along the run; we require the recorded curves to agree to a relative
1e-6 while the error is above 1e-8 (and both to reach the same floor below it), and the initial
checkpoint (no training yet) to agree to 1e-12.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import TINY

from cdln.config import RunConfig
from cdln.records import read_run_record
from cdln.runner import run

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


@pytest.mark.parametrize("task", ["mf", "mc", "ms"])
@pytest.mark.parametrize("model", ["cdln", "original"])
def test_cpu_and_cuda_trajectories_agree(tmp_path, task, model):
    base = dict(model=model, depth=3, n_inner=50, max_outer=60, tol=0.0, init_seed=[0, 1], **TINY[task])
    curves = {}
    for device in ("cpu", "cuda"):
        record = run(RunConfig(**base, device=device), tmp_path / device)
        assert record["device"]["type"] == device
        curves[device] = read_run_record(tmp_path / device)[1]
    cpu, gpu = curves["cpu"], curves["cuda"]
    assert list(cpu.iteration) == list(gpu.iteration) and list(cpu.member) == list(gpu.member)
    first = cpu.iteration == 0
    np.testing.assert_allclose(gpu.recovery_error[first], cpu.recovery_error[first], rtol=1e-12)
    above = cpu.recovery_error > 1e-8
    np.testing.assert_allclose(gpu.recovery_error[above], cpu.recovery_error[above], rtol=1e-6)
    np.testing.assert_allclose(gpu.train_loss[above], cpu.train_loss[above], rtol=1e-6, atol=1e-20)
    final_cpu, final_gpu = cpu.groupby("member").last(), gpu.groupby("member").last()
    assert ((final_cpu.recovery_error < 1e-8) == (final_gpu.recovery_error < 1e-8)).all()


def test_cuda_runs_are_deterministic(tmp_path):
    base = dict(model="original", depth=3, n_inner=50, max_outer=20, device="cuda", **TINY["mc"])
    for name in ("a", "b"):
        run(RunConfig(**base), tmp_path / name)
    a, b = (read_run_record(tmp_path / n)[1] for n in ("a", "b"))
    # Dense float64 GEMMs are deterministic on one GPU with the same shapes; we hold to bitwise.
    assert a.recovery_error.equals(b.recovery_error)


def test_float32_on_cuda_tracks_float64(tmp_path):
    base = dict(model="cdln", depth=3, n_inner=50, max_outer=20, device="cuda", **TINY["mf"])
    run(RunConfig(**base, dtype="float64"), tmp_path / "f64")
    run(RunConfig(**base, dtype="float32"), tmp_path / "f32")
    f64, f32 = (read_run_record(tmp_path / n)[1] for n in ("f64", "f32"))
    above = f64.recovery_error > 1e-4
    np.testing.assert_allclose(f32.recovery_error[above], f64.recovery_error[above], rtol=1e-2)


def test_cuda_memory_refusal(monkeypatch):
    import cdln.config

    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (2**30, 2**34))
    config = RunConfig(task="ms", d=100, r=5, m=20_000, model="cdln", device="cuda")
    with pytest.raises(cdln.config.ConfigError, match=r"GiB on cuda.* but only 1\.0 GiB is free there"):
        config.validate()
