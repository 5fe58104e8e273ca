"""The training loop: full-batch GD of a group of networks on one problem, checkpoint by checkpoint.

:func:`train_many` is the one loop and :func:`train` is its group of one. The plan
(:func:`cdln.engine.plan.plan_engine`, the one decision) gives a stepper; the loop calls it for
``n_inner`` steps between checkpoints. At each checkpoint it records every live member's training loss
and recovery error, stops the members below ``tol`` (writes them back into their network and drops them
from the stacked weights, so the rest no longer pay for them) and reports progress. A member's arithmetic
does not depend on its batch or group: it trains bitwise the same alone (tests/test_engine_autograd.py).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from cdln.devices import synchronize
from cdln.engine.plan import plan_engine
from cdln.networks import LinearNetwork, product
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
class _Run:
    """One network's state in the loop: ``work[l][i]`` is live member ``live[i]``'s layer l."""

    index: int
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
    """Device-synchronised seconds per network. One network: the wall time between the loop's
    :meth:`start` and :meth:`stop`. Several (lockstep): each piece of work timed on its own, a network's
    own work to it, shared work (the loss-gradient call) split in proportion to the live members each put
    in, so the networks' seconds add up to the group's wall time."""

    def __init__(self, device: torch.device, runs: list[_Run]) -> None:
        self.device, self.runs, self.exact = device, runs, len(runs) > 1
        self.seconds = [0.0] * len(runs)
        self.active: list[_Run] = runs
        self._since: float | None = None

    def _now(self) -> float:
        synchronize(self.device)
        return time.perf_counter()

    def start(self) -> None:
        if not self.exact:
            self._since = self._now()

    def stop(self) -> None:
        if not self.exact and self._since is not None:
            self.seconds[0] += self._now() - self._since
            self._since = None

    def read(self, k: int) -> float:
        """Network k's seconds so far."""
        if self.exact or self._since is None:
            return self.seconds[k]
        return self.seconds[0] + self._now() - self._since

    @contextmanager
    def timed(self, k: int | None = None):
        """A piece of work (timed only in a group): network ``k``'s own, or (None) shared by the active ones."""
        if not self.exact:
            yield
            return
        start = self._now()
        yield
        elapsed, members = self._now() - start, sum(len(run.live) for run in self.active)
        for run in self.active if k is None else [self.runs[k]]:
            self.seconds[run.index] += elapsed * (len(run.live) / members if k is None else 1.0)


def train(
    network: LinearNetwork,
    problem: Problem,
    settings: TrainSettings,
    snapshot: SnapshotFn | None = None,
    progress: ProgressFn | None = None,
) -> TrainResult:
    """Train ``network`` (layers (B, n_out, n_in), modified in place) on ``problem`` by full-batch GD; the
    result's curves have a row per member and checkpoint.

    The group of one of :func:`train_many`. ``snapshot(iteration, network, end_to_end)`` is called at every
    checkpoint, outside the timed work."""
    return train_many([network], problem, settings, snapshot=snapshot, progress=progress)[0]


def train_many(
    networks: list[LinearNetwork],
    problem: Problem,
    settings: TrainSettings,
    snapshot: SnapshotFn | None = None,
    progress: ProgressFn | None = None,
) -> list[TrainResult]:
    """Train networks (layers (B_k, n_out, n_in), any shapes; modified in place) on one problem; a result each.

    Networks and problem share device and dtype. Seconds are device-synchronised and exclude one warm-up
    step (on copies: compilation, first-call costs) and snapshot work; in a group, see :class:`_Clock`. On
    the torch path a group steps in lockstep, one loss-gradient call per step for all (one pass over an MS
    operator instead of one per network); on the compiled path each network steps on its own. Raises
    :class:`DivergenceError` on a non-finite training loss.
    """
    if snapshot is not None and len(networks) != 1:
        raise ValueError("snapshots are taken of a single network's run")
    runs = [_Run(k, net, list(range(net.batch)), net.weights, settings.lr) for k, net in enumerate(networks)]
    clock = _Clock(networks[0].weights[0].device, runs)

    clock.start()  # warm-up: build the stepper and take one step on copies
    plan = plan_engine([net.weights for net in networks], problem)
    stepper = plan.stepper(problem, [net.weights for net in networks])
    copies = [[w.clone() for w in run.work] for run in runs]
    timed = clock if clock.exact else None  # one network: timed between checkpoints, not piece by piece
    stepper.run([run.index for run in runs], copies, [run.steps for run in runs], 1, timed)
    clock.stop()
    warmup_seconds, clock.seconds = clock.seconds, [0.0] * len(runs)
    del copies

    snapshots: list[dict[str, np.ndarray]] = []

    def checkpoint(iteration: int) -> None:
        active = clock.active
        ends = []
        for run in active:
            with clock.timed(run.index):
                ends.append(product(run.work))
        with clock.timed():
            losses = problem.train_loss(ends[0] if len(ends) == 1 else torch.cat(ends)).tolist()
        offset = 0
        for run, end in zip(active, ends, strict=True):
            with clock.timed(run.index):
                mine, offset = losses[offset : offset + len(run.live)], offset + len(run.live)
                errors = problem.recovery_error(end).tolist()
                run.checkpoint(iteration, mine, errors, clock.read(run.index), settings)
            if progress is not None:
                progress(_progress_line(run, iteration, mine, errors, clock.read(run.index), settings, len(runs)))
        clock.active = [run for run in active if run.live]
        if snapshot is not None:
            clock.stop()
            runs[0].write_back()
            network = runs[0].network
            snapshots.append({"iteration": np.array(iteration), **snapshot(iteration, network, network.end_to_end())})
            clock.start()

    clock.start()
    checkpoint(0)
    for outer in range(1, settings.max_outer + 1):
        if not clock.active:
            break
        active = clock.active
        stepper.run([run.index for run in active], [run.work for run in active], [run.steps for run in active],
                    settings.n_inner, timed)  # fmt: skip
        checkpoint(outer * settings.n_inner)
    clock.stop()

    results = []
    for run in runs:
        run.write_back()
        curves = pd.DataFrame(run.rows, columns=CURVE_COLUMNS).sort_values(["iteration", "member"], kind="stable")
        results.append(
            TrainResult(
                curves.reset_index(drop=True),
                run.stop_iteration,
                run.stop_seconds,
                run.converged,
                clock.seconds[run.index],
                warmup_seconds[run.index],
                snapshots if run.index == 0 else [],
                plan.label(run.index),
                plan.record(run.index),
            )  # fmt: skip
        )
    return results


def _progress_line(run: _Run, iteration: int, losses, errors, seconds: float, settings: TrainSettings, group: int):
    """``[name] iter i/N  s  loss  recovery  active  ~time left`` (to the budget: a member below tol stops sooner)."""
    name = f"[{run.network.name}] " if group > 1 else ""
    left = time_left(seconds, iteration, settings.max_iterations if run.live else iteration)
    return (
        f"{name}iter {iteration:>8d}/{settings.max_iterations}  {seconds:8.2f}s  loss {min(losses):.3e}  "
        f"recovery {min(errors):.3e}  active {len(run.live)}/{run.network.batch}  {left}"
    )
