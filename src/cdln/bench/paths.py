"""The engine's step against its references, each on one setting (sections of ``cdln bench``):

- ``jax``: per GD iteration, the engine against the same step compiled by JAX (``lax.fori_loop``, optional
  dependency) on the pipeline's ``mc`` setting, for the original DLN and the C-DLN, and against the
  lower bound (the step's FLOPs at the rate of a large GEMM measured in the same run).
- ``sampled``: the C-DLN's sampled MC step against its dense step at d = 2000, p = 0.05 (r = 10,
  r_hat = 20), and a MovieLens-shaped C-DLN step (943 x 1682, 80% of 100k ratings observed) before (the
  torch path) and after (the engine's pick); and the sampled/dense ratio against the observed fraction at
  d = 400, where it reaches 1, beside the density below which the engine samples.
- ``operator``: the MS operator pass of the ms section's first panel (d = 200, m = 4000) against the floor of
  its bytes at the bandwidth of a streaming read measured in the same run, the operator in float32 and
  float64; and each network's whole GD step against the same floor.

Medians of interleaved repeats, wall clock and process CPU time (the steadier on a shared machine).
"""

from __future__ import annotations

import math
import tempfile
import time
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from cdln.bench.kernels import engine_runner, step_flops
from cdln.bench.timing import gemm_rate, interleaved, small_gemm_rates
from cdln.config import RunConfig
from cdln.data.synthetic import make_problem
from cdln.engine import TrainSettings, plan_engine, train
from cdln.engine.kernels import OperatorPass
from cdln.engine.plan import sampled_max_density
from cdln.networks import LinearNetwork, compressed_dln, original_dln
from cdln.problems import Completion, Problem, Sensing
from cdln.reference import INSTALL_HINT, jax_available, jax_loop
from cdln.runner import build_network, load_run_problem
from cdln.spec import ProblemSpec

SAMPLED_SETTING = dict(d=2000, p=0.05, r=10, r_hat=20)  # a large, sparse MC: where the sampled step pays most
MOVIELENS_SHAPE = dict(n_users=943, n_items=1682, n_ratings=100_000, train_fraction=0.8, r_hat=20)


def _networks(runs: Mapping[str, Mapping[str, Any]]) -> tuple[Problem, dict[str, LinearNetwork], float]:
    """The problem and the original DLN / C-DLN networks of a job's runs (drawn in process)."""
    configs = {name: RunConfig.from_dict(dict(runs[name])) for name in ("original", "cdln")}
    config, problem = load_run_problem(configs["original"])
    networks = {name: build_network(c.with_problem(problem.spec), problem) for name, c in configs.items()}
    return problem, networks, config.lr


def bench_jax(mc_runs: Mapping[str, Mapping[str, Any]], repeats: int = 11, echo: Callable[[str], None] = print) -> dict:
    """Engine vs JAX per iteration on the mc setting (both models); skipped with a message without JAX."""
    if not jax_available():
        echo(f"  skipped: {INSTALL_HINT}")
        return {"skipped": "JAX is not installed"}
    problem, networks, lr = _networks(mc_runs)
    rate = gemm_rate(2000, 3)
    out: dict[str, Any] = {"large_gemm_gflops": rate / 1e9}
    echo(
        f"  large GEMM 2000^3 float64, {torch.get_num_threads()} thread(s): {rate / 1e9:.1f} GFLOP/s "
        "(the reference rate)"
    )
    for name, network in networks.items():
        comparison = compare_engine_and_jax(network, problem, lr, 100, repeats, 0.05, ("autodiff",))
        wall, cpu = comparison.seconds_per_iteration, comparison.cpu_seconds_per_iteration
        path = plan_engine(network.weights, problem).path
        flops = step_flops(network.weights, problem, sampled=path == "native-sampled")  # its lower bound at the rate
        row = {
            "path": path,
            "engine_us": 1e6 * wall["engine"],
            "jax_us": 1e6 * wall["jax_autodiff"],
            "engine_cpu_us": 1e6 * cpu["engine"],
            "jax_cpu_us": 1e6 * cpu["jax_autodiff"],
            "ratio": wall["engine"] / wall["jax_autodiff"],
            "ratio_cpu": cpu["engine"] / cpu["jax_autodiff"],
            "bound_us": 1e6 * flops / rate,
            "jax_compile_seconds": comparison.compile_seconds["jax_autodiff"],
            "iterates_difference": jax_loop.iterate_difference(network, problem, lr, 100),
        }
        out[name] = row
        echo(
            f"  {name:8} engine ({row['path']}) {row['engine_us']:7.1f} us/iter, JAX {row['jax_us']:7.1f} "
            f"(CPU {row['engine_cpu_us']:.1f} / {row['jax_cpu_us']:.1f}): engine/JAX = {row['ratio']:.3f} "
            f"(CPU {row['ratio_cpu']:.3f}); lower bound {row['bound_us']:.1f} us; JAX compile "
            f"{row['jax_compile_seconds']:.2f} s; iterates agree to {row['iterates_difference']:.1e} after 100 steps"
        )
    return out


@dataclass
class Comparison:
    """Median seconds per GD iteration of each variant (steady state), from interleaved repeats.

    ``seconds_per_iteration``: wall clock; ``cpu_seconds_per_iteration``: process CPU time, which on a
    pinned single-thread run excludes the time other processes held the core (robust on a shared machine).
    """

    seconds_per_iteration: dict[str, float]
    samples: dict[str, list[float]]
    cpu_seconds_per_iteration: dict[str, float] = field(default_factory=dict)
    compile_seconds: dict[str, float] = field(default_factory=dict)
    first_call_seconds: dict[str, float] = field(default_factory=dict)

    def ratio(self, a: str, b: str, cpu: bool = False) -> float:
        seconds = self.cpu_seconds_per_iteration if cpu else self.seconds_per_iteration
        return seconds[a] / seconds[b]


def compare_engine_and_jax(
    network: LinearNetwork,
    problem: Problem,
    lr: float,
    n_inner: int = 100,
    repeats: int = 7,
    target_seconds: float = 0.1,
    gradients: tuple[str, ...] = ("autodiff", "closed_form"),
    engine_paths: tuple[str | None, ...] = (None,),
    engine_variants: dict[str, Callable[[int], None]] | None = None,
) -> Comparison:
    """Steady-state seconds per iteration of the engine (its stepper, ``n_inner`` steps
    per call, weights reset before each repeat's calls) and of the JAX loop for each of ``gradients``,
    interleaved in one run. Variants: ``engine`` (the path the engine picks) or ``engine[PATH]`` for each
    of ``engine_paths`` (engine overrides: ``torch``, ``native-dense``, ...), ``jax_autodiff``,
    ``jax_closed_form``, and any ``engine_variants`` (``f(n)`` = n calls of ``n_inner`` steps).
    ``compile_seconds`` (JAX) and ``first_call_seconds`` (every variant's first call) are reported apart."""
    variants: dict[str, Callable[[int], None]] = {}
    first = {}
    for path in engine_paths:
        name = "engine" if path is None else f"engine[{path}]"
        variants[name] = engine_runner(network, problem, lr, n_inner, path)
        start = time.perf_counter()
        variants[name](1)
        first[name] = time.perf_counter() - start
    variants.update(engine_variants or {})
    compile_seconds = {}
    for gradient in gradients:
        loop = jax_loop.build_jax_loop(network, problem, lr, n_inner, gradient)
        name = f"jax_{gradient}"
        compile_seconds[name], first[name] = loop.compile_seconds, loop.first_call_seconds
        variants[name] = loop_runner(loop)
    medians, samples, cpu = interleaved(variants, {name: n_inner for name in variants}, repeats, target_seconds)
    return Comparison(medians, samples, cpu, compile_seconds, first)


def time_jax_loop(loop: jax_loop.JaxLoop, repeats: int = 7, target_seconds: float = 0.1) -> dict[str, float]:
    """Steady-state seconds per GD iteration of a compiled loop alone (median over ``repeats``; the
    compilation and first call are in ``loop`` and reported here as they were measured)."""
    seconds, _, cpu = interleaved({"jax": loop_runner(loop)}, {"jax": loop.n_inner}, repeats, target_seconds)
    return {
        "seconds_per_iteration": seconds["jax"],
        "cpu_seconds_per_iteration": cpu["jax"],
        "compile_seconds": loop.compile_seconds,
        "first_call_seconds": loop.first_call_seconds,
    }


def loop_runner(loop: jax_loop.JaxLoop) -> Callable[[int], None]:
    """``f(n)``: n calls of the compiled loop from its initial weights (each ``loop.n_inner`` steps)."""

    def run(n: int) -> None:
        loop.steps(n)

    return run


WHOLE_RUN_OUTER = 20


def bench_whole_runs(
    mc_runs: Mapping[str, Mapping[str, Any]],
    repeats: int = 5,
    outer: int = WHOLE_RUN_OUTER,
    echo: Callable[[str], None] = print,
) -> dict:
    """Whole ``train()`` runs on the mc setting (``outer`` checkpoints of ``n_inner`` steps, tol 0, so every
    repeat runs the same iterations) against the same run in JAX (the compiled ``fori_loop`` per checkpoint,
    then the checkpoint's losses), interleaved; per iteration, checkpoints included."""
    problem, networks, lr = _networks(mc_runs)
    settings = RunConfig.from_dict(dict(mc_runs["original"]))
    n_inner = settings.n_inner
    have_jax = jax_available()
    out: dict[str, Any] = {"outer": outer, "n_inner": n_inner}
    for name, network in networks.items():
        plan = plan_engine(network.weights, problem).record()

        def engine_run(n: int, network: LinearNetwork = network) -> None:
            for _ in range(n):
                train(network.clone(), problem, TrainSettings(lr, n_inner, outer, 0.0))

        variants = {"engine": engine_run}
        if have_jax:
            loop = jax_loop.build_jax_loop(network, problem, lr, n_inner, "autodiff")

            def jax_run(n: int, loop: jax_loop.JaxLoop = loop) -> None:
                for _ in range(n):
                    loop.whole_run(problem, outer)

            variants["jax"] = jax_run
        wall, _, cpu = interleaved(variants, dict.fromkeys(variants, outer * n_inner), repeats, 0.3)
        row: dict[str, Any] = {"path": plan["path"], "backend": plan["backend"], "blas": plan["blas"]}
        row["engine_us"], row["engine_cpu_us"] = 1e6 * wall["engine"], 1e6 * cpu["engine"]
        text = f"  {name:8} whole run ({plan['path']}, {plan['backend']}) {row['engine_us']:7.1f} us/iter"
        if have_jax:
            row["jax_us"], row["jax_cpu_us"] = 1e6 * wall["jax"], 1e6 * cpu["jax"]
            row["ratio"] = wall["engine"] / wall["jax"]
            text += (
                f", JAX {row['jax_us']:7.1f}: engine/JAX = {row['ratio']:.3f} (CPU {cpu['engine'] / cpu['jax']:.3f})"
            )
        echo(text)
        out[name] = row
    return out


def bench_small_gemm(echo: Callable[[str], None] = print) -> dict[str, float]:
    """The 100 x 100 x 100 float64 GEMM rate of each library present (what bounds a d = 100 step)."""
    rates = small_gemm_rates()
    echo(
        "  100^3 float64 GEMM, one thread: "
        + ", ".join(f"{name} {rate / 1e9:.1f} GFLOP/s ({2e12 / rate:.1f} us)" for name, rate in rates.items())
    )
    return {f"{name}_gflops": rate / 1e9 for name, rate in rates.items()}


def _compare_paths(network: LinearNetwork, problem: Problem, lr: float, paths: dict[str, str | None], repeats: int):
    variants = {label: engine_runner(network, problem, lr, 10, path) for label, path in paths.items()}
    wall, _, cpu = interleaved(variants, dict.fromkeys(variants, 10), repeats, 0.3)
    return wall, cpu


def bench_sampled(
    repeats: int = 5,
    echo: Callable[[str], None] = print,
    setting: Mapping[str, Any] = SAMPLED_SETTING,
    movielens_shape: Mapping[str, Any] = MOVIELENS_SHAPE,
) -> dict:
    """The sampled MC step against the dense one (C-DLN), at d = 2000, p = 0.05 and MovieLens-shaped."""
    from cdln.data.movielens import completion_problem, parse_ratings, synthetic_ml100k

    out: dict[str, Any] = {}
    problem = make_problem(ProblemSpec("mc", setting["d"], setting["d"], setting["r"], 0, p=setting["p"]))
    network = compressed_dln(problem.surrogate(), setting["r_hat"], 3, 1e-2)
    paths = {"sampled": "native-sampled", "dense": "native-dense", "torch": "torch"}
    wall, cpu = _compare_paths(network, problem, 10.0, paths, repeats)
    out["d2000"] = {f"{k}_ms": 1e3 * v for k, v in wall.items()} | {"ratio": wall["sampled"] / wall["dense"]}
    echo(
        f"  MC d={setting['d']} p={setting['p']} r_hat={setting['r_hat']}: "
        f"sampled {1e3 * wall['sampled']:.2f} ms/iter, "
        f"dense {1e3 * wall['dense']:.2f}, torch {1e3 * wall['torch']:.2f}: sampled/dense = "
        f"{out['d2000']['ratio']:.3f} (CPU {cpu['sampled'] / cpu['dense']:.3f})"
    )
    with tempfile.TemporaryDirectory() as tmp:
        shape = dict(n_users=movielens_shape["n_users"], n_items=movielens_shape["n_items"])
        archive = synthetic_ml100k(Path(tmp) / "ml-100k.zip", 0, movielens_shape["n_ratings"], **shape)
        with zipfile.ZipFile(archive) as zf:
            ratings = parse_ratings(zf.read("ml-100k/u.data").decode(), str(archive), **shape)
    movielens = completion_problem(ratings, 10, 1 - movielens_shape["train_fraction"], 0)
    assert isinstance(movielens, Completion)
    network = compressed_dln(movielens.surrogate(), movielens_shape["r_hat"], 3, 0.1)
    wall, cpu = _compare_paths(network, movielens, 5.0, {"after": None, "before": "torch"}, repeats)
    out["movielens"] = {"after_ms": 1e3 * wall["after"], "before_ms": 1e3 * wall["before"]}
    echo(
        f"  MovieLens-shaped C-DLN step ({shape['n_users']} x {shape['n_items']}, {movielens.n_observed} observed; "
        "a synthetic stand-in): "
        f"{1e3 * wall['before']:.2f} ms/iter before (torch path), {1e3 * wall['after']:.2f} after "
        f"({plan_engine(network.weights, movielens).path}): {wall['before'] / wall['after']:.1f}x faster"
    )
    return out


# Where the sampled MC step stops paying (engine.SAMPLED_MAX_DENSITY): d = 400, L = 3, the last layer's
# input width k in registers (C-DLN, k = 20), its panel in L2 (C-DLN, k = 100), beyond L2 (original, k = d).
CROSSOVER_CASES = (("cdln", 20), ("cdln", 100), ("original", 400))
CROSSOVER_D = 400
CROSSOVER_DENSITIES = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def crossover(densities: Sequence[float], ratios: Sequence[float]) -> float:
    """The observed fraction at which sampled/dense first reaches 1 (linear between the neighbouring
    densities); ``nan`` if it never does, the first density if it is at or above 1 from the start."""
    for k, ratio in enumerate(ratios):
        if ratio >= 1.0:
            if k == 0:
                return densities[0]
            (p0, r0), (p1, r1) = (densities[k - 1], ratios[k - 1]), (densities[k], ratio)
            return p0 + (1.0 - r0) * (p1 - p0) / (r1 - r0)
    return math.nan


def bench_crossover(
    repeats: int = 3,
    echo: Callable[[str], None] = print,
    d: int = CROSSOVER_D,
    cases: Sequence[tuple[str, int]] = CROSSOVER_CASES,
    densities: Sequence[float] = CROSSOVER_DENSITIES,
) -> list[dict[str, Any]]:
    """Sampled/dense per-iteration ratio of the native MC step against the observed fraction, per case,
    the crossover where it reaches 1, and the density below which the engine picks the sampled step."""
    paths = {"sampled": "native-sampled", "dense": "native-dense"}
    rows = []
    for model, k in cases:
        ratios = []
        for p in densities:
            problem = make_problem(ProblemSpec("mc", d, d, 10, 0, p=p))
            if model == "cdln":
                network = compressed_dln(problem.surrogate(), k, 3, 1e-2)
            else:
                network = original_dln(d, d, 3, 1e-2, [0], width=k)
            wall, _ = _compare_paths(network, problem, 1.0, paths, repeats)
            ratios.append(wall["sampled"] / wall["dense"])
        threshold = sampled_max_density(network.weights)
        row = dict(model=model, d=d, k=k, densities=list(densities), ratios=ratios, threshold=threshold)
        row["crossover"] = crossover(densities, ratios)
        rows.append(row)
        echo(
            f"  {model} d={d} k={k}: sampled/dense at p = {', '.join(f'{p:g}' for p in densities)}: "
            f"{' '.join(f'{r:.2f}' for r in ratios)}; reaches 1 at p ~ {row['crossover']:.2f}, "
            f"the engine samples below p = {threshold:g}"
        )
    return rows


def bench_operator(
    ms_runs: Mapping[str, Mapping[str, Any]], repeats: int = 7, echo: Callable[[str], None] = print
) -> dict:
    """The MS operator pass (loss and gradient, one network) against the floor of the bytes it reads: the
    operator's size over the bandwidth of a plain streaming read of it, measured in the same interleaved
    repeats; for the operator stored in float32 (the default) and float64. Then one engine GD step of each of
    the job's networks (float32 operator) against the same floor."""
    configs = {name: RunConfig.from_dict({**ms_runs[name], "operator_dtype": "float64"}) for name in ms_runs}
    _, wide = load_run_problem(configs["original"])
    assert isinstance(wide, Sensing)
    narrow = Sensing(wide.spec, wide.target, wide.operator.to(torch.float32), wide.measurements)
    spec, out = wide.spec, {}
    flat = torch.randn(1, spec.d_out * spec.d_in, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    variants: dict[str, Callable[[int], None]] = {}
    for storage, problem in (("float32", narrow), ("float64", wide)):
        one_pass, grad = OperatorPass(problem.operator, problem.measurements), torch.empty_like(flat)

        def run_pass(n: int, one_pass=one_pass, grad=grad) -> None:
            for _ in range(n):
                one_pass(flat, grad)

        def stream(n: int, operator=problem.operator) -> None:
            for _ in range(n):
                operator.sum()

        variants[f"pass_{storage}"], variants[f"stream_{storage}"] = run_pass, stream
    networks = {name: build_network(config.with_problem(spec), narrow) for name, config in configs.items()}
    for name, network in networks.items():
        variants[f"step_{name}"] = engine_runner(network, narrow, configs[name].lr, 1)
    wall, _, _ = interleaved(variants, dict.fromkeys(variants, 1), repeats, 0.5)
    echo(f"  d={spec.d_out} m={spec.m}, one thread; floor = the operator's bytes at the streaming read's bandwidth")
    for storage, problem in (("float32", narrow), ("float64", wide)):
        size = problem.operator.numel() * problem.operator.element_size()
        bandwidth = size / wall[f"stream_{storage}"]
        floor, one_pass = wall[f"stream_{storage}"], wall[f"pass_{storage}"]
        row = {"operator_bytes": size, "stream_gbps": bandwidth / 1e9, "floor_ms": 1e3 * floor,
               "pass_ms": 1e3 * one_pass, "pass_over_floor": one_pass / floor}  # fmt: skip
        out[storage] = row
        echo(
            f"  operator {storage}: {size / 1e9:.2f} GB, streaming read {row['stream_gbps']:.1f} GB/s (floor "
            f"{row['floor_ms']:.1f} ms); one pass {row['pass_ms']:.1f} ms = {row['pass_over_floor']:.2f} x the floor"
        )
    floor = wall["stream_float32"]
    for name in networks:
        step = wall[f"step_{name}"]
        out[f"step_{name}"] = {"step_ms": 1e3 * step, "step_over_floor": step / floor}
        echo(f"  {name:8} GD step (float32 operator) {1e3 * step:.1f} ms = {step / floor:.2f} x the floor")
    return out
