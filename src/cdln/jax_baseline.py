"""A compiled-loop baseline for the GD engine: the same GD step in JAX (jit + ``lax.fori_loop``).

Issue #13 compares the engine's cost per GD iteration with the authors' own JAX code, which runs
``n_inner`` steps inside one compiled ``lax.fori_loop``, so it pays no per-call overhead. This
module builds that loop from *our* problem and network objects (same target, mask or operator,
same initial weights, same step sizes including the C-DLN's outer-layer rate alpha), times it in
steady state (compilation excluded and reported on its own), and checks that its iterates match the
engine's. It also gives the hardware reference: the FLOPs of one step and the rate of a large
single-thread GEMM measured in process.

JAX is optional: :func:`require_jax` raises :class:`JaxUnavailableError` with an install hint when
it is absent; :func:`jax_available` tests for it. Float64 needs ``jax_enable_x64``, which
:func:`require_jax` switches on. For single-thread timings pin the process to one core *before*
JAX creates its CPU client (XLA sizes its thread pool from the affinity mask: :func:`pin_to_one_core`)
and also set ``XLA_FLAGS=--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1``
(:data:`SINGLE_THREAD_XLA_FLAGS`); :func:`busy_threads` verifies that one thread did the work.

Two gradients are offered: ``"autodiff"`` (``jax.grad`` of the training loss, as the authors' code
does) and ``"closed_form"`` (the engine's formula, ``(W_L...W_{l+1})^T G (W_{l-1}...W_1)^T``).
"""

from __future__ import annotations

import glob
import math
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from cdln.networks import LinearNetwork
from cdln.problems import Completion, Factorization, Problem, Sensing

Gradient = Literal["autodiff", "closed_form"]
SINGLE_THREAD_XLA_FLAGS = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
INSTALL_HINT = "pip install jax jaxlib  (CPU build; the baseline is optional and skipped without it)"


class JaxUnavailableError(ImportError):
    """JAX is not installed; the compiled-loop baseline is skipped."""


def jax_available() -> bool:
    """Whether ``import jax`` works (without importing it for good if it does not)."""
    try:
        import jax  # noqa: F401
    except ImportError:
        return False
    return True


def require_jax() -> ModuleType:
    """Import JAX with float64 enabled, or raise :class:`JaxUnavailableError` naming the install command."""
    try:
        import jax
    except ImportError as error:
        raise JaxUnavailableError(f"the JAX baseline needs JAX, which is not installed: {INSTALL_HINT}") from error
    jax.config.update("jax_enable_x64", True)
    return jax


def pin_to_one_core(cpu: int | None = None) -> int:
    """Restrict this process to one CPU (default: the lowest it may run on) and return it.

    Call it before JAX's first computation: XLA sizes its intra-op thread pool from the affinity
    mask, so this is what makes JAX single-threaded (``XLA_FLAGS`` alone leaves XLA's thunk runtime
    splitting dots over several threads in JAX 0.10). Torch is held to one thread separately
    (``torch.set_num_threads(1)``).
    """
    cpu = min(os.sched_getaffinity(0)) if cpu is None else cpu
    os.sched_setaffinity(0, {cpu})
    return cpu


def thread_cpu_ticks() -> dict[str, int]:
    """CPU time (clock ticks, user + system) of each thread of this process, keyed ``tid:name`` (Linux)."""
    ticks = {}
    for path in glob.glob("/proc/self/task/*/stat"):
        try:
            with open(path) as stat, open(path[: -len("stat")] + "comm") as comm:
                fields = stat.read().rsplit(")", 1)[1].split()
                ticks[f"{path.split('/')[4]}:{comm.read().strip()}"] = int(fields[11]) + int(fields[12])
        except OSError:  # a thread that ended while we read
            continue
    return ticks


def busy_threads(fn: Callable[[], Any], min_share: float = 0.05) -> dict[str, float]:
    """Run ``fn()`` and return each thread's share of the CPU time it used (threads above ``min_share``).

    One entry means the work ran on one thread. Needs a run of at least ~0.5 s (ticks are 10 ms).
    """
    before = thread_cpu_ticks()
    fn()
    after = thread_cpu_ticks()
    used = {name: after[name] - before.get(name, 0) for name in after}
    total = sum(used.values()) or 1
    return {name: ticks / total for name, ticks in used.items() if ticks / total >= min_share}


@dataclass
class JaxLoop:
    """A compiled ``lax.fori_loop`` of ``n_inner`` GD steps (``run(weights) -> weights``, jitted).

    ``initial``: the network's weights as JAX arrays (B, n_out, n_in); ``compile_seconds``: lowering
    and compiling ``run`` (ahead of time, so no call of ``run`` pays it); ``first_call_seconds``:
    the first call of the compiled loop (n_inner steps, including any first-run cost).
    """

    run: Callable[[tuple], tuple]
    initial: tuple
    n_inner: int
    gradient: Gradient
    compile_seconds: float
    first_call_seconds: float = math.nan

    def steps(self, n_calls: int, weights: tuple | None = None) -> tuple:
        """``n_calls`` calls of the loop from ``weights`` (default: the initial weights), blocking."""
        weights = self.initial if weights is None else weights
        for _ in range(n_calls):
            weights = self.run(weights)
        for w in weights:
            w.block_until_ready()
        return weights


def _as_jax(tensor: Tensor, jnp: ModuleType) -> Any:
    return jnp.asarray(tensor.detach().cpu().to(torch.float64).numpy())


def _problem_arrays(problem: Problem, jnp: ModuleType) -> dict[str, Any]:
    if isinstance(problem, Completion):
        return {"target": _as_jax(problem.target, jnp), "weight": _as_jax(problem._observed, jnp)}
    if isinstance(problem, Factorization):
        return {"target": _as_jax(problem.target, jnp), "scale": problem._scale}
    if isinstance(problem, Sensing):
        return {"operator": _as_jax(problem.operator, jnp), "y": _as_jax(problem.measurements, jnp)}
    raise NotImplementedError(f"no JAX baseline for {type(problem).__name__}")


def build_jax_loop(
    network: LinearNetwork, problem: Problem, lr: float, n_inner: int, gradient: Gradient = "autodiff"
) -> JaxLoop:
    """Compile ``n_inner`` GD steps of ``network`` on ``problem`` (CPU tensors) into one JAX loop.

    The step is the engine's: ``W_l <- W_l - lr * lr_scales[l] * dLoss/dW_l`` for every layer at
    once, the loss being the problem's training loss (MF, MC, MS) summed over batch members (which
    are independent). Weights are float64 copies of ``network``'s; ``network`` is not modified.
    """
    jax = require_jax()
    jnp = jax.numpy
    arrays = _problem_arrays(problem, jnp)
    scales = tuple(_as_jax(-lr * s.to(torch.float64), jnp).reshape(-1, 1, 1) for s in network.lr_scales)

    def end_to_end(weights: tuple) -> Any:
        result = weights[0]
        for weight in weights[1:]:
            result = weight @ result
        return result

    if isinstance(problem, Sensing):

        def residual(w: Any) -> Any:
            return w.reshape(w.shape[0], -1) @ arrays["operator"].T - arrays["y"]

        def loss(weights: tuple) -> Any:
            return 0.5 * jnp.sum(residual(end_to_end(weights)) ** 2)

        def loss_grad(w: Any) -> Any:
            return (residual(w) @ arrays["operator"]).reshape(w.shape)

    elif isinstance(problem, Completion):

        def loss(weights: tuple) -> Any:
            return 0.5 * jnp.sum((end_to_end(weights) - arrays["target"]) ** 2 * arrays["weight"])

        def loss_grad(w: Any) -> Any:
            return (w - arrays["target"]) * arrays["weight"]

    else:

        def loss(weights: tuple) -> Any:
            return 0.5 * jnp.sum((end_to_end(weights) - arrays["target"]) ** 2) * arrays["scale"]

        def loss_grad(w: Any) -> Any:
            return (w - arrays["target"]) * arrays["scale"]

    def closed_form(weights: tuple) -> tuple:
        prefixes = [weights[0]]
        for weight in weights[1:]:
            prefixes.append(weight @ prefixes[-1])
        upstream = loss_grad(prefixes[-1])
        grads = [None] * len(weights)
        for layer in range(len(weights) - 1, 0, -1):
            grads[layer] = upstream @ jnp.swapaxes(prefixes[layer - 1], -1, -2)
            upstream = jnp.swapaxes(weights[layer], -1, -2) @ upstream
        grads[0] = upstream
        return tuple(grads)

    if gradient not in ("autodiff", "closed_form"):
        raise ValueError(f"gradient must be 'autodiff' or 'closed_form'; got {gradient!r}")
    grad_fn = jax.grad(loss) if gradient == "autodiff" else closed_form

    def body(_: Any, weights: tuple) -> tuple:
        grads = grad_fn(weights)
        return tuple(w + s * g for w, s, g in zip(weights, scales, grads, strict=True))

    def run(weights: tuple) -> tuple:
        return jax.lax.fori_loop(0, n_inner, body, weights)

    initial = tuple(_as_jax(w, jnp) for w in network.weights)
    start = time.perf_counter()
    compiled = jax.jit(run).lower(initial).compile()
    compile_seconds = time.perf_counter() - start
    loop = JaxLoop(compiled, initial, n_inner, gradient, compile_seconds)
    start = time.perf_counter()
    loop.steps(1)
    loop.first_call_seconds = time.perf_counter() - start
    return loop


def jax_weights(loop: JaxLoop, n_calls: int) -> list[Tensor]:
    """Weights after ``n_calls * loop.n_inner`` steps from the initial weights, as torch tensors."""
    return [torch.from_numpy(np.array(w)) for w in loop.steps(n_calls)]


def iterate_difference(
    network: LinearNetwork, problem: Problem, lr: float, n_steps: int = 100, gradient: Gradient = "autodiff"
) -> float:
    """Largest relative Frobenius difference, over layers and members, between the engine's and the JAX
    loop's weights after ``n_steps`` GD steps from ``network``'s weights (``network`` is not modified)."""
    from cdln.engine import gd_steps

    loop = build_jax_loop(network, problem, lr, n_steps, gradient)
    theirs = jax_weights(loop, 1)
    ours = [w.clone() for w in network.weights]
    gd_steps(ours, [(-lr * s).view(-1, 1, 1) for s in network.lr_scales], problem, n_steps)
    worst = 0.0
    for a, b in zip([w.cpu().double() for w in ours], theirs, strict=True):
        diff = torch.linalg.matrix_norm(a - b) / torch.linalg.matrix_norm(b)
        worst = max(worst, float(diff.max()))
    return worst


def _per_unit(fn: Callable[[int], None], n: int) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) per unit of ``fn(n)``."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn(n)
    return (time.perf_counter() - wall) / n, (time.process_time() - cpu) / n


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


def interleaved(
    variants: dict[str, Callable[[int], None]], units: dict[str, int], repeats: int, target_seconds: float = 0.1
) -> tuple[dict[str, float], dict[str, list[float]], dict[str, float]]:
    """Median seconds per *iteration* of each variant; ``variants[name](n)`` runs n units of
    ``units[name]`` iterations each. Repeats are interleaved (A B C A B C ...) so load hits all alike;
    each repeat takes about ``target_seconds``. Returns (wall medians, wall samples, CPU-time medians)."""
    counts = {}
    for name, fn in variants.items():
        _per_unit(fn, 1)  # warm-up
        counts[name] = max(1, int(target_seconds / max(_per_unit(fn, 1)[0], 1e-9)))
    samples: dict[str, list[float]] = {name: [] for name in variants}
    cpu: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeats):
        for name, fn in variants.items():
            wall, used = _per_unit(fn, counts[name])
            samples[name].append(wall / units[name])
            cpu[name].append(used / units[name])
    medians = {name: statistics.median(v) for name, v in samples.items()}
    return medians, samples, {name: statistics.median(v) for name, v in cpu.items()}


def compare_engine_and_jax(
    network: LinearNetwork,
    problem: Problem,
    lr: float,
    n_inner: int = 100,
    repeats: int = 7,
    target_seconds: float = 0.1,
    gradients: tuple[Gradient, ...] = ("autodiff", "closed_form"),
    engine_paths: tuple[str | None, ...] = (None,),
    engine_variants: dict[str, Callable[[int], None]] | None = None,
) -> Comparison:
    """Steady-state seconds per iteration of the engine (:func:`cdln.engine.gd_steps`, ``n_inner`` steps
    per call, weights reset before each repeat's calls) and of the JAX loop for each of ``gradients``,
    interleaved in one run. Variants: ``engine`` (the path the engine picks) or ``engine[PATH]`` for each
    of ``engine_paths`` (see :data:`cdln.engine.PATHS`), ``jax_autodiff``, ``jax_closed_form``, and any
    ``engine_variants`` (``f(n)`` = n calls of ``n_inner`` steps). ``compile_seconds`` (JAX) and
    ``first_call_seconds`` (every variant's first call: compilation, kernel build) are reported apart."""
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
        loop = build_jax_loop(network, problem, lr, n_inner, gradient)
        name = f"jax_{gradient}"
        compile_seconds[name], first[name] = loop.compile_seconds, loop.first_call_seconds
        variants[name] = loop_runner(loop)
    medians, samples, cpu = interleaved(variants, {name: n_inner for name in variants}, repeats, target_seconds)
    return Comparison(medians, samples, cpu, compile_seconds, first)


def engine_runner(
    network: LinearNetwork, problem: Problem, lr: float, n_inner: int, path: str | None = None
) -> Callable[[int], None]:
    """``f(n)``: reset a copy of ``network``'s weights, then n calls of :func:`cdln.engine.gd_steps`
    (``n_inner`` steps each, one :class:`~cdln.engine.Workspace`) on ``path`` (default: the engine's pick)."""
    from cdln.engine import Workspace, gd_steps

    initial = [w.clone() for w in network.weights]
    weights = [w.clone() for w in initial]
    neg_steps = [(-lr * s).view(-1, 1, 1) for s in network.lr_scales]
    workspace = Workspace(weights)

    def run(n: int) -> None:
        for w, w0 in zip(weights, initial, strict=True):
            w.copy_(w0)  # O(d^2): negligible next to n_inner steps; every repeat takes the same path
        for _ in range(n):
            gd_steps(weights, neg_steps, problem, n_inner, workspace, path)

    return run


def time_jax_loop(loop: JaxLoop, repeats: int = 7, target_seconds: float = 0.1) -> dict[str, float]:
    """Steady-state seconds per GD iteration of a compiled loop alone (median over ``repeats``; the
    compilation and first call are in ``loop`` and reported here as they were measured)."""
    seconds, _, cpu = interleaved({"jax": loop_runner(loop)}, {"jax": loop.n_inner}, repeats, target_seconds)
    return {
        "seconds_per_iteration": seconds["jax"],
        "cpu_seconds_per_iteration": cpu["jax"],
        "compile_seconds": loop.compile_seconds,
        "first_call_seconds": loop.first_call_seconds,
    }


def loop_runner(loop: JaxLoop) -> Callable[[int], None]:
    """``f(n)``: n calls of the compiled loop from its initial weights (each ``loop.n_inner`` steps)."""

    def run(n: int) -> None:
        loop.steps(n)

    return run


def step_flops(weights: list[Tensor], problem: Problem, sampled: bool = False) -> float:
    """FLOPs (2 per multiply-add) of the matrix products of one engine GD step of the whole batch: L-1
    forward products, 2(L-1) backward products, for MS the operator's two passes (``A w``, ``A^T r``).
    ``sampled`` (MC, depth >= 2): the step of ``native-sampled``, whose three products with the
    end-to-end shape (the last forward one and the last layer's two backward ones) cost ``2 n_observed k``
    each instead of ``2 d_out d_in k`` (k = the last layer's input width). Elementwise work is not counted."""
    batch, d_in = weights[0].shape[0], weights[0].shape[-1]
    total = 0.0
    for layer in range(1, len(weights)):
        n_out, n_in = weights[layer].shape[-2:]
        per_product = 2.0 * n_out * n_in * d_in
        if sampled and layer == len(weights) - 1:
            if not isinstance(problem, Completion):
                raise ValueError("the sampled step needs an MC problem")
            per_product = 2.0 * problem.n_observed * n_in
        total += 3 * per_product  # forward W_l @ prefix; backward: gradient of W_l and next upstream
    if isinstance(problem, Sensing):
        total += 2 * 2.0 * problem.operator.shape[0] * problem.operator.shape[1]
    return batch * total


def gemm_rate(n: int = 2000, repeats: int = 3, dtype: torch.dtype = torch.float64, library: str = "torch") -> float:
    """FLOP/s of a large ``n x n x n`` CPU GEMM into a preallocated output: the median of ``repeats`` timed
    products after one warm-up, at the current thread count. ``library``: ``"torch"`` (``torch.mm``: MKL in
    the PyPI wheels) or ``"numpy"`` (``np.matmul``: numpy's OpenBLAS, which the native engine path calls).
    The hardware reference of issue #13 is :func:`step_flops` divided by this rate."""
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=generator, dtype=dtype)
    b = torch.randn(n, n, generator=generator, dtype=dtype)
    out = torch.empty(n, n, dtype=dtype)
    if library == "torch":

        def product() -> None:
            torch.mm(a, b, out=out)

    elif library == "numpy":
        a_np, b_np, out_np = a.numpy(), b.numpy(), out.numpy()

        def product() -> None:
            np.matmul(a_np, b_np, out=out_np)

    else:
        raise ValueError(f"library must be 'torch' or 'numpy'; got {library!r}")
    set_threads = None
    if library == "numpy":  # hold numpy's OpenBLAS to torch's thread count, as the native kernels do
        from cdln.native import blas

        found = blas(dtype, "openblas")
        set_threads = found.set_threads if found is not None else None
    previous = set_threads(torch.get_num_threads()) if set_threads is not None else None
    try:
        product()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            product()
            times.append(time.perf_counter() - start)
    finally:
        if set_threads is not None and previous is not None and previous > 0:
            set_threads(previous)
    return 2.0 * n**3 / statistics.median(times)


def hardware_reference_seconds(weights: list[Tensor], problem: Problem, rate: float | None = None) -> float:
    """Seconds one dense GD step would take at the large-GEMM rate: ``step_flops / rate``."""
    return step_flops(weights, problem) / (gemm_rate() if rate is None else rate)
