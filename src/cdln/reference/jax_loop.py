"""The engine's GD step compiled by JAX (jit + ``lax.fori_loop``): the baseline the authors' own code sets.

Their code runs ``n_inner`` steps inside one compiled ``lax.fori_loop``, so it pays no per-call overhead.
:func:`build_jax_loop` builds that loop from *our* problem and network objects (same data, same initial
weights, same step sizes including the C-DLN's outer-layer rate alpha); :func:`iterate_difference` checks
that its iterates match the engine's; ``cdln bench --sections jax`` times both (:mod:`cdln.bench.paths`).
Two gradients: ``"autodiff"`` (``jax.grad`` of the training loss, as the authors' code does) and
``"closed_form"`` (the engine's formula, ``(W_L...W_{l+1})^T G (W_{l-1}...W_1)^T``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from cdln.engine import gd_steps
from cdln.networks import LinearNetwork, product
from cdln.problems import Completion, Problem, Sensing
from cdln.reference import problem_arrays, require_jax

Gradient = Literal["autodiff", "closed_form"]


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

    def whole_run(self, problem: Problem, outer: int) -> None:
        """A whole run as ``cdln.engine.train`` makes one: ``outer`` checkpoints of ``n_inner`` steps, each
        followed by its training loss and recovery error (computed by the problem, in torch)."""
        import numpy as np
        import torch

        from cdln.networks import product

        weights = self.initial
        for _ in range(outer):
            weights = self.run(weights)
            end = torch.from_numpy(np.array(product(weights)))
            problem.train_loss(end).tolist(), problem.recovery_error(end).tolist()


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
    arrays = {name: jnp.asarray(value) for name, value in problem_arrays(problem).items()}
    scales = tuple(jnp.asarray((-lr * s.double()).numpy()).reshape(-1, 1, 1) for s in network.lr_scales)
    end_to_end = product

    if isinstance(problem, Sensing):

        def residual(w: Any) -> Any:
            return w.reshape(w.shape[0], -1) @ arrays["operator"].T - arrays["labels"]

        def loss(weights: tuple) -> Any:
            return 0.5 * jnp.sum(residual(end_to_end(weights)) ** 2)

        def loss_grad(w: Any) -> Any:
            return (residual(w) @ arrays["operator"]).reshape(w.shape)

    elif isinstance(problem, Completion):

        def loss(weights: tuple) -> Any:
            return 0.5 * jnp.sum((end_to_end(weights) - arrays["observations"]) ** 2 * arrays["weight"])

        def loss_grad(w: Any) -> Any:
            return (w - arrays["observations"]) * arrays["weight"]

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

    initial = tuple(jnp.asarray(w.double().numpy()) for w in network.weights)
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
    loop = build_jax_loop(network, problem, lr, n_steps, gradient)
    theirs = jax_weights(loop, 1)
    ours = [w.clone() for w in network.weights]
    gd_steps(ours, [(-lr * s).view(-1, 1, 1) for s in network.lr_scales], problem, n_steps)
    worst = 0.0
    for a, b in zip([w.cpu().double() for w in ours], theirs, strict=True):
        diff = torch.linalg.matrix_norm(a - b) / torch.linalg.matrix_norm(b)
        worst = max(worst, float(diff.max()))
    return worst
