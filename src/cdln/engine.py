"""Full-batch gradient descent on deep linear networks, with closed-form layer gradients.

For a loss f(W) of the end-to-end matrix ``W = W_L ... W_1`` with G = df/dW, the gradient of
layer l is ``(W_L ... W_{l+1})^T G (W_{l-1} ... W_1)^T``. One step therefore costs one forward
sweep of prefix products, one problem gradient and one backward sweep, about 3(L-1) matrix
products and no autograd bookkeeping; it is O(L d^3) for the original DLN and O(d^2 r_hat) for
the C-DLN. Runs in a batch (stacked weights) share every problem pass (the MS operator once).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from cdln.devices import SyncTimer
from cdln.networks import LinearNetwork
from cdln.problems import Problem

SnapshotFn = Callable[[int, LinearNetwork, Tensor], dict[str, np.ndarray]]
ProgressFn = Callable[[str], None]


class DivergenceError(RuntimeError):
    """Training produced a non-finite loss."""

    def __init__(self, iteration: int, member: int, lr: float) -> None:
        self.iteration, self.member = iteration, member
        super().__init__(
            f"training diverged: non-finite loss at iteration {iteration} (batch member {member}) "
            f"with step size {lr:g}; try a smaller --lr (e.g. {lr / 4:g}) or a smaller --alpha"
        )


@dataclass(frozen=True)
class TrainSettings:
    """Step size ``lr`` (eta), checkpoint every ``n_inner`` steps, at most ``max_outer`` checkpoints,
    stop a member once its training loss is below ``tol`` (checked at checkpoints)."""

    lr: float
    n_inner: int
    max_outer: int
    tol: float = 0.0

    @property
    def max_iterations(self) -> int:
        return self.n_inner * self.max_outer


@dataclass
class TrainResult:
    """Curves (tidy: member, iteration, seconds, train_loss, recovery_error) and per-member outcome."""

    curves: pd.DataFrame
    stop_iteration: list[int]
    stop_seconds: list[float]
    converged: list[bool]
    seconds: float
    warmup_seconds: float
    snapshots: list[dict[str, np.ndarray]] = field(default_factory=list)


def layer_gradients(weights: list[Tensor], problem: Problem) -> list[Tensor]:
    """Closed-form gradients of ``problem``'s training loss w.r.t. each layer, same shapes."""
    prefixes = [weights[0]]  # prefixes[l] = W_{l+1} ... W_1 (0-based l)
    for weight in weights[1:]:
        prefixes.append(weight @ prefixes[-1])
    upstream = problem.loss_grad(prefixes[-1])  # (W_L ... W_{l+1})^T G, starting at l = L
    grads: list[Tensor] = [upstream] * len(weights)
    for layer in range(len(weights) - 1, 0, -1):
        grads[layer] = upstream @ prefixes[layer - 1].mT
        upstream = weights[layer].mT @ upstream
    grads[0] = upstream
    return grads


def gd_steps(weights: list[Tensor], neg_steps: list[Tensor], problem: Problem, n_steps: int) -> None:
    """Take ``n_steps`` GD steps in place; ``neg_steps[l]`` = -(lr * scale * active), shape (B, 1, 1)."""
    for _ in range(n_steps):
        for weight, grad, neg_step in zip(weights, layer_gradients(weights, problem), neg_steps):
            weight.addcmul_(grad, neg_step)


def train(
    network: LinearNetwork,
    problem: Problem,
    settings: TrainSettings,
    snapshot: SnapshotFn | None = None,
    progress: ProgressFn | None = None,
) -> TrainResult:
    """Train ``network`` (modified in place) on ``problem`` by full-batch GD.

    ``network`` and ``problem`` must share device and dtype. Wall-clock seconds are
    device-synchronised, exclude one warm-up step (on a copy) and exclude snapshot work.
    Raises :class:`DivergenceError` on a non-finite training loss.
    """
    weights = network.weights
    device = weights[0].device
    batch = network.batch
    active = torch.ones(batch, dtype=weights[0].dtype, device=device)

    def neg_steps() -> list[Tensor]:
        return [(-settings.lr * scale * active).view(-1, 1, 1) for scale in network.lr_scales]

    warmup = SyncTimer(device)
    warmup.start()
    gd_steps([w.clone() for w in weights], neg_steps(), problem, 1)
    warmup_seconds = warmup.elapsed

    rows: list[tuple[int, int, float, float, float]] = []
    snapshots: list[dict[str, np.ndarray]] = []
    stop_iteration = [settings.max_iterations] * batch
    stop_seconds = [math.nan] * batch
    converged = [False] * batch
    timer = SyncTimer(device)

    def checkpoint(iteration: int) -> None:
        end_to_end = network.end_to_end()
        losses = problem.train_loss(end_to_end).tolist()
        errors = problem.recovery_error(end_to_end).tolist()
        seconds = timer.elapsed
        for member in range(batch):
            if not active[member]:
                continue
            if not math.isfinite(losses[member]):
                raise DivergenceError(iteration, member, settings.lr)
            rows.append((member, iteration, seconds, losses[member], errors[member]))
            if losses[member] < settings.tol or iteration == settings.max_iterations:
                converged[member] = losses[member] < settings.tol
                stop_iteration[member], stop_seconds[member] = iteration, seconds
                active[member] = 0.0
        if snapshot is not None:
            timer.pause()
            snapshots.append({"iteration": np.array(iteration), **snapshot(iteration, network, end_to_end)})
            timer.start()
        if progress is not None:
            progress(
                f"iter {iteration:>8d}/{settings.max_iterations}  {seconds:8.2f}s  "
                f"loss {min(losses):.3e}  recovery {min(errors):.3e}  active {int(active.sum())}/{batch}"
            )

    timer.start()
    checkpoint(0)
    for outer in range(1, settings.max_outer + 1):
        if not bool(active.any()):
            break
        gd_steps(weights, neg_steps(), problem, settings.n_inner)
        checkpoint(outer * settings.n_inner)
    timer.pause()
    curves = pd.DataFrame(rows, columns=["member", "iteration", "seconds", "train_loss", "recovery_error"])
    return TrainResult(curves, stop_iteration, stop_seconds, converged, timer.elapsed, warmup_seconds, snapshots)
