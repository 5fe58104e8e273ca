"""The compiled-loop (JAX) baseline of ``cdln bench``: optional import, same iterates as the engine, timing
helpers, FLOPs.

Timings are only checked for being positive and finite, never against each other.
"""

from __future__ import annotations

import math
import sys

import pytest
import torch
from conftest import REPO

from cdln import reference
from cdln.bench import paths
from cdln.bench.kernels import step_flops
from cdln.bench.timing import busy_threads, gemm_rate, small_gemm_rates
from cdln.data.synthetic import make_problem
from cdln.networks import compressed_dln, original_dln
from cdln.reference import jax_loop as jb
from cdln.spec import ProblemSpec

needs_jax = pytest.mark.skipif(not reference.jax_available(), reason="JAX is not installed (optional baseline)")


def _problem(task: str, d_out: int = 9, d_in: int = 7):
    return make_problem(
        ProblemSpec(task, d_out, d_in, 2, 0, 0.5 if task == "mc" else None, 60 if task == "ms" else None)
    )


def test_missing_jax_raises_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "jax", None)  # makes `import jax` raise ImportError
    assert not reference.jax_available()
    with pytest.raises(reference.JaxUnavailableError, match=r"pip install -e .\.\[jax\]"):
        reference.require_jax()
    problem = _problem("mc")
    with pytest.raises(ImportError):
        jb.build_jax_loop(original_dln(9, 7, 3, 0.1, [0]), problem, 1.0, 5)


@needs_jax
@pytest.mark.parametrize("task,lr", [("mf", 2.0), ("mc", 1.0), ("ms", 2.0)])
@pytest.mark.parametrize("model", ["original", "cdln"])
@pytest.mark.parametrize("gradient", ["autodiff", "closed_form"])
def test_jax_iterates_match_the_engine(task, lr, model, gradient):
    problem = _problem(task)
    if model == "original":
        network = original_dln(9, 7, 3, 0.3, [0, 1])
    else:  # the discrepant rate alpha on the outer layers, two members with different alphas
        network = compressed_dln(problem.surrogate(), 4, 3, 0.3, [1.0, 2.5], batch=2)
    before = [w.clone() for w in network.weights]
    difference = jb.iterate_difference(network, problem, lr, 100, gradient)
    assert difference < 1e-10
    assert all(torch.equal(a, b) for a, b in zip(before, network.weights, strict=True)), "network must not change"
    moved = jb.jax_weights(jb.build_jax_loop(network, problem, lr, 100, gradient), 1)
    assert float((moved[0] - network.weights[0]).abs().max()) > 1e-3, "the comparison must not be vacuous"


@needs_jax
def test_jax_loop_timing_and_comparison_report_numbers():
    problem = _problem("mc", 12, 12)
    network = compressed_dln(problem.surrogate(), 4, 3, 0.1, 2.0)
    loop = jb.build_jax_loop(network, problem, 1.0, 10)
    assert loop.compile_seconds > 0 and loop.first_call_seconds > 0
    timing = paths.time_jax_loop(loop, repeats=2, target_seconds=0.0)
    assert all(math.isfinite(v) and v > 0 for v in timing.values())
    comparison = paths.compare_engine_and_jax(
        network, problem, 1.0, n_inner=10, repeats=2, target_seconds=0.0, engine_paths=(None, "torch")
    )
    names = {"engine", "engine[torch]", "jax_autodiff", "jax_closed_form"}
    assert set(comparison.seconds_per_iteration) == names == set(comparison.cpu_seconds_per_iteration)
    assert all(v > 0 for v in comparison.seconds_per_iteration.values())
    assert set(comparison.compile_seconds) == {"jax_autodiff", "jax_closed_form"}
    assert comparison.ratio("engine", "jax_autodiff") > 0


def test_step_flops_count_the_engine_products():
    problem = make_problem(ProblemSpec("mc", 100, 100, 10, 0, 0.3))
    original = original_dln(100, 100, 3, 1e-2, [0])
    compressed = compressed_dln(problem.surrogate(), 20, 3, 1e-2)
    assert step_flops(original.weights, problem) == 6 * 2 * 100**3
    # C-DLN: P = W2 W1 (20x20x100), E = W3 P (100x20x100) and their two backward products each
    assert step_flops(compressed.weights, problem) == 3 * 2 * (20 * 20 * 100 + 100 * 20 * 100)
    observed = problem.n_observed
    assert step_flops(compressed.weights, problem, sampled=True) == 3 * 2 * (20 * 20 * 100 + observed * 20)
    ms = make_problem(ProblemSpec("ms", 6, 5, 2, 0, m=30))
    net = original_dln(6, 5, 2, 0.1, [0, 1])
    assert step_flops(net.weights, ms) == 2 * (3 * 2 * 6 * 6 * 5 + 2 * 2 * 30 * 30)


def test_gemm_rate():
    rate = gemm_rate(n=64, repeats=2)
    assert math.isfinite(rate) and rate > 0 and gemm_rate(n=64, repeats=1, library="numpy") > 0
    with pytest.raises(ValueError, match="library"):
        gemm_rate(n=8, library="cublas")


def test_busy_threads_reports_shares():
    shares = busy_threads(lambda: sum(i * i for i in range(200_000)), min_share=0.0)
    assert shares and all(0 <= v <= 1 for v in shares.values())


def test_bench_sections_print_their_ratios(capsys):
    """The jax, sampled and operator sections of `cdln bench` on the reduced grid's settings (seconds only
    printed, never compared): each prints its ratio line."""
    import yaml
    from conftest import REPO

    from cdln.bench import paths
    from cdln.bench.runs import experiment_runs

    ci = yaml.safe_load((REPO / "config" / "ci.yaml").read_text())
    lines: list[str] = []
    if reference.jax_available():
        result = paths.bench_jax(experiment_runs(ci, "mc", "cpu"), repeats=1, echo=lines.append)
        assert set(result) >= {"original", "cdln"} and result["cdln"]["iterates_difference"] < 1e-10
    small = dict(d=60, p=0.1, r=2, r_hat=4)
    shape = dict(n_users=40, n_items=60, n_ratings=600, train_fraction=0.8, r_hat=4)
    sampled = paths.bench_sampled(1, lines.append, small, shape)
    assert sampled["d2000"]["ratio"] > 0 and sampled["movielens"]["after_ms"] > 0
    rows = paths.bench_crossover(1, lines.append, d=40, cases=[("cdln", 4), ("original", 40)], densities=[0.2, 0.7])
    assert [(r["model"], r["k"], r["threshold"]) for r in rows] == [("cdln", 4, 0.6), ("original", 40, 0.35)]
    assert all(len(r["ratios"]) == 2 and min(r["ratios"]) > 0 for r in rows)
    operator = paths.bench_operator(experiment_runs(ci, "ms", "cpu"), repeats=1, echo=lines.append)
    assert {"float32", "float64", "step_original", "step_cdln"} <= set(operator)
    assert operator["float64"]["operator_bytes"] == 2 * operator["float32"]["operator_bytes"]
    assert all(operator[storage]["pass_over_floor"] > 0 for storage in ("float32", "float64"))
    text = "\n".join(lines)
    assert "sampled/dense =" in text and "x the floor" in text and "the engine samples below p = 0.35" in text
    assert "engine/JAX =" in text or not reference.jax_available()


def test_crossover_is_where_sampled_over_dense_first_reaches_one():
    from cdln.bench.paths import crossover

    assert crossover([0.1, 0.2, 0.3], [0.5, 0.8, 1.2]) == pytest.approx(0.25)  # linear between 0.2 and 0.3
    assert crossover([0.1, 0.2], [1.1, 1.3]) == 0.1
    assert math.isnan(crossover([0.1, 0.2], [0.5, 0.9]))


def test_small_gemm_rates_cover_each_library_present():
    rates = small_gemm_rates(n=16, repeats=1, calls=2)
    assert {"numpy", "torch", "numba"} <= set(rates)
    assert ("xla" in rates) == reference.jax_available()
    assert all(math.isfinite(rate) and rate > 0 for rate in rates.values())


def test_whole_runs_print_the_plan_and_the_ratio_to_jax():
    import yaml

    from cdln.bench.paths import bench_whole_runs
    from cdln.bench.runs import experiment_runs

    config = yaml.safe_load((REPO / "config" / "ci.yaml").read_text())
    lines: list[str] = []
    out = bench_whole_runs(experiment_runs(config, "mc", "cpu"), repeats=1, outer=1, echo=lines.append)
    for model in ("original", "cdln"):
        row = out[model]
        assert row["engine_us"] > 0 and row["backend"] and row["blas"]
        assert ("ratio" in row) == reference.jax_available()
    assert len(lines) == 2 and "whole run" in lines[0]
