"""The training loop: full-batch GD of one network (a batch of members) on one problem, checkpoint by checkpoint.

The plan (:func:`cdln.engine.plan.plan_engine`, the one decision) gives a stepper; :func:`train` calls it
for ``n_inner`` steps between checkpoints. At each checkpoint it records every live member's training loss
and recovery error, stops the members below ``tol`` (writes them back into the network and drops them
from the stacked weights, so the rest no longer pay for them) and reports progress. A member's arithmetic
does not depend on its batch: it trains bitwise the same alone (tests/test_engine_autograd.py).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from cdln.devices import synchronize
from cdln.engine.plan import plan_engine
from cdln.networks import LinearNetwork
from cdln.problems import Problem
from cdln.progress import time_left

SnapshotFn = Callable[[int, LinearNetwork, Tensor], dict[str, np.ndarray]]
ProgressFn = Callable[[str], None]
CURVE_COLUMNS = ["member", "iteration", "seconds", "train_loss", "recovery_error"]


class DivergenceError(RuntimeError):
    """Training produced a non-finite loss (GD here; AltMin and the classifiers raise it too, with their advice)."""

    def __init__(self, iteration: int, member: int = 0, lr: float | None = None, advice: str | None = None) -> None:
        self.iteration, self.member = iteration, member
        where = f"iteration {iteration}" + (f" (batch member {member}) with step size {lr:g}" if lr is not None else "")
        advice = advice or f"try a smaller --lr (e.g. {(lr or 0) / 4:g}) or a smaller --alpha"
        super().__init__(f"training diverged: non-finite loss at {where}; {advice}")


@dataclass(frozen=True)
class TrainSettings:
    """Step size ``lr`` (eta), checkpoint every ``n_inner`` steps, at most ``max_outer`` checkpoints, stop a
    member once its training loss is below ``tol`` (checked at checkpoints)."""

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
    engine_path: str = "torch"  # what the seconds were measured on: :meth:`EnginePlan.label`
    engine_plan: dict[str, Any] = field(default_factory=dict)  # :meth:`EnginePlan.record`


@dataclass(eq=False)
class _Members:
    """The network's live members in the loop: ``work[l][i]`` is live member ``live[i]``'s layer l."""

    network: LinearNetwork
    live: list[int]
    work: list[Tensor]
    lr: float
    rows: list[tuple[int, int, float, float, float]] = field(default_factory=list)

    def __post_init__(self) -> None:
        batch = self.network.batch
        self.stop_iteration, self.stop_seconds, self.converged = [0] * batch, [math.nan] * batch, [False] * batch
        self.steps = self.neg_steps()

    def neg_steps(self) -> list[Tensor]:
        """Per layer, -lr x each live member's step multiplier, (live, 1, 1)."""
        index = torch.tensor(self.live, dtype=torch.long, device=self.work[0].device)
        return [(-self.lr * scale.index_select(0, index)).view(-1, 1, 1) for scale in self.network.lr_scales]

    def write_back(self) -> None:
        if self.work is not self.network.weights:
            index = torch.tensor(self.live, dtype=torch.long, device=self.work[0].device)
            for full, part in zip(self.network.weights, self.work, strict=True):
                full.index_copy_(0, index, part)

    def checkpoint(self, iteration: int, losses: list[float], errors: list[float], seconds: float, settings) -> None:
        """Record the live members' curve rows; stop those below ``tol`` or at the budget and drop them."""
        keep = []
        for i, member in enumerate(self.live):
            if not math.isfinite(losses[i]):
                raise DivergenceError(iteration, member, settings.lr)
            self.rows.append((member, iteration, seconds, losses[i], errors[i]))
            if losses[i] < settings.tol or iteration == settings.max_iterations:
                self.converged[member] = losses[i] < settings.tol
                self.stop_iteration[member], self.stop_seconds[member] = iteration, seconds
            else:
                keep.append(i)
        if len(keep) < len(self.live):
            self.write_back()
            index = torch.tensor(keep, dtype=torch.long, device=self.work[0].device)
            self.work = [w.index_select(0, index) for w in self.work]
            self.live = [self.live[i] for i in keep]
            self.steps = self.neg_steps()


class _Clock:
    """Device-synchronised wall seconds between :meth:`start` and :meth:`stop`, summed."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.seconds, self._since = device, 0.0, None

    def _now(self) -> float:
        synchronize(self.device)
        return time.perf_counter()

    def start(self) -> None:
        self._since = self._now()

    def stop(self) -> None:
        if self._since is not None:
            self.seconds += self._now() - self._since
            self._since = None

    def read(self) -> float:
        """Seconds so far."""
        return self.seconds if self._since is None else self.seconds + self._now() - self._since


def train(
    network: LinearNetwork,
    problem: Problem,
    settings: TrainSettings,
    snapshot: SnapshotFn | None = None,
    progress: ProgressFn | None = None,
) -> TrainResult:
    """Train ``network`` (layers (B, n_out, n_in), modified in place) on ``problem`` by full-batch GD; the
    result's curves have a row per member and checkpoint.

    Network and problem share device and dtype. Seconds are device-synchronised and exclude one warm-up step
    (on copies: compilation, first-call costs) and ``snapshot(iteration, network, end_to_end)``, called at
    every checkpoint. Raises :class:`DivergenceError` on a non-finite training loss.
    """
    run = _Members(network, list(range(network.batch)), network.weights, settings.lr)
    clock = _Clock(network.weights[0].device)

    clock.start()  # warm-up: build the stepper and take one step on copies
    plan = plan_engine(network.weights, problem)
    stepper = plan.stepper(problem, network.weights)
    stepper.run([w.clone() for w in run.work], run.steps, 1)
    clock.stop()
    warmup_seconds, clock.seconds = clock.seconds, 0.0

    snapshots: list[dict[str, np.ndarray]] = []

    def checkpoint(iteration: int) -> None:
        end, losses = stepper.checkpoint(run.work)
        losses = (problem.train_loss(end) if losses is None else losses).tolist()
        errors = problem.recovery_error(end).tolist()
        run.checkpoint(iteration, losses, errors, clock.read(), settings)
        if progress is not None:
            progress(_progress_line(run, iteration, losses, errors, clock.read(), settings))
        if snapshot is not None:
            clock.stop()
            run.write_back()
            snapshots.append({"iteration": np.array(iteration), **snapshot(iteration, network, network.end_to_end())})
            clock.start()

    clock.start()
    checkpoint(0)
    for outer in range(1, settings.max_outer + 1):
        if not run.live:
            break
        stepper.run(run.work, run.steps, settings.n_inner)
        checkpoint(outer * settings.n_inner)
    clock.stop()

    run.write_back()
    curves = pd.DataFrame(run.rows, columns=CURVE_COLUMNS).sort_values(["iteration", "member"], kind="stable")
    return TrainResult(
        curves.reset_index(drop=True), run.stop_iteration, run.stop_seconds, run.converged, clock.seconds,
        warmup_seconds, snapshots, plan.label(), plan.record(),
    )  # fmt: skip


def _progress_line(run: _Members, iteration: int, losses, errors, seconds: float, settings: TrainSettings) -> str:
    """``iter i/N  s  loss  recovery  active  ~time left`` (to the budget: a member below tol stops sooner)."""
    left = time_left(seconds, iteration, settings.max_iterations if run.live else iteration)
    return (
        f"iter {iteration:>8d}/{settings.max_iterations}  {seconds:8.2f}s  loss {min(losses):.3e}  "
        f"recovery {min(errors):.3e}  active {len(run.live)}/{run.network.batch}  {left}"
    )
