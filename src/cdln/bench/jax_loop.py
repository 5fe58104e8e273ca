"""A compiled-loop baseline for the GD engine: the same GD step in JAX (jit + ``lax.fori_loop``).

Issue #13 compares the engine's cost per GD iteration with the authors' own JAX code, which runs
``n_inner`` steps inside one compiled ``lax.fori_loop``, so it pays no per-call overhead. This
module builds that loop from *our* problem and network objects (same target, mask or operator,
same initial weights, same step sizes including the C-DLN's outer-layer rate alpha), times it in
steady state (compilation excluded and reported on its own), and checks that its iterates match the
engine's. ``cdln bench --sections jax`` prints the comparison (:mod:`cdln.bench`).

JAX is optional: :func:`require_jax` raises :class:`JaxUnavailableError` with an install hint when
it is absent; :func:`jax_available` tests for it. Float64 needs ``jax_enable_x64``, which
:func:`require_jax` switches on. For single-thread timings pin the process to one core *before*
JAX creates its CPU client (XLA sizes its thread pool from the affinity mask:
:func:`cdln.bench.timing.pin_to_one_core`) and also set
``XLA_FLAGS=--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1``
(:data:`SINGLE_THREAD_XLA_FLAGS`); :func:`cdln.bench.timing.busy_threads` verifies that one thread did the work.

Two gradients are offered: ``"autodiff"`` (``jax.grad`` of the training loss, as the authors' code
does) and ``"closed_form"`` (the engine's formula, ``(W_L...W_{l+1})^T G (W_{l-1}...W_1)^T``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from cdln.bench.kernels import engine_runner
from cdln.bench.timing import interleaved
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


def end_to_end(weights: tuple) -> Any:
    """The end-to-end product W_L ... W_1 of a loop's (JAX) weights."""
    result = weights[0]
    for weight in weights[1:]:
        result = weight @ result
    return result


def _as_jax(tensor: Tensor, jnp: ModuleType) -> Any:
    return jnp.asarray(tensor.detach().cpu().to(torch.float64).numpy())


def _problem_arrays(problem: Problem, jnp: ModuleType) -> dict[str, Any]:
    if isinstance(problem, Completion):
        return {"target": _as_jax(problem.observations, jnp), "weight": _as_jax(problem.loss_weights, jnp)}
    if isinstance(problem, Factorization):
        return {"target": _as_jax(problem.observations, jnp), "scale": problem.loss_scale}
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
