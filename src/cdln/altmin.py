"""AltMin baseline for matrix completion: alternating least squares of rank k on the observed entries.

``W = X Y^T`` with X (d_out, k), Y (d_in, k). One iteration solves, exactly, the least-squares
problem for every row of Y with X fixed and then for every row of X with Y fixed:

    min_Y  sum_{(i,j) observed} (X_i . Y_j - M_ij)^2 + ridge * ||Y||_F^2

(a tiny ``ridge`` keeps rows with fewer than k observations solvable; it is not a tuned
regulariser). X starts from the top-k left singular vectors of the rescaled observed matrix
(the surrogate), scaled by its singular values (Jain, Netrapalli and Sanghavi, 2013).
Curves use the same columns as :func:`cdln.engine.train` so the figure scripts treat it alike.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import pandas as pd
import torch
from torch import Tensor

from cdln.devices import SyncTimer, device_name
from cdln.engine import DivergenceError
from cdln.problems import Completion
from cdln.progress import time_left
from cdln.records import make_record


@dataclass(frozen=True)
class AltMinSettings:
    """Rank ``k``, at most ``iterations`` sweeps, a checkpoint every ``n_inner`` sweeps."""

    k: int
    iterations: int = 100
    n_inner: int = 1
    ridge: float = 1e-6

    def validate(self, d_out: int, d_in: int) -> None:
        if not 1 <= self.k <= min(d_out, d_in):
            raise ValueError(f"--r (rank k) must be in [1, {min(d_out, d_in)}]; got {self.k}")
        if self.iterations < 1 or self.n_inner < 1:
            raise ValueError(f"--iterations and --n-inner must be >= 1; got {self.iterations}, {self.n_inner}")
        if not math.isfinite(self.ridge) or self.ridge < 0:
            raise ValueError(f"--ridge must be a finite number >= 0; got {self.ridge}")


def solve_factor(fixed: Tensor, target: Tensor, weights: Tensor, ridge: float) -> Tensor:
    """Rows of the free factor: for each column j of ``target`` (n, m), minimise
    ``sum_i weights_ij (fixed_i . z_j - target_ij)^2 + ridge |z_j|^2``; fixed (n, k) -> (m, k)."""
    k = fixed.shape[1]
    outer = (fixed[:, :, None] * fixed[:, None, :]).reshape(fixed.shape[0], k * k)  # (n, k*k)
    grams = (weights.T @ outer).reshape(-1, k, k)  # (m, k, k): sum_i w_ij x_i x_i^T
    grams = grams + ridge * torch.eye(k, dtype=fixed.dtype, device=fixed.device)
    rhs = (weights * target).T @ fixed  # (m, k)
    return torch.linalg.solve(grams, rhs.unsqueeze(-1)).squeeze(-1)


def altmin(
    problem: Completion, settings: AltMinSettings, progress: Callable[[str], None] | None = None
) -> tuple[pd.DataFrame, Tensor, float]:
    """Run AltMin; returns (curves, final W (d_out, d_in), seconds). Curves: member, iteration,
    seconds, train_loss, recovery_error (the problem's own normalisations)."""
    d_out, d_in = problem.shape
    settings.validate(d_out, d_in)
    weights = problem.mask.to(problem.target.dtype)
    target = problem.observations * weights
    timer = SyncTimer(problem.target.device)
    rows: list[tuple[int, int, float, float, float]] = []

    def checkpoint(iteration: int, estimate: Tensor) -> None:
        seconds = timer.elapsed
        loss = float(problem.train_loss(estimate[None])[0])
        error = float(problem.recovery_error(estimate[None])[0])
        if not math.isfinite(loss):
            raise DivergenceError(iteration, advice="raise --ridge")
        rows.append((0, iteration, seconds, loss, error))
        if progress is not None:
            progress(
                f"iter {iteration:>6d}/{settings.iterations}  {seconds:8.2f}s  loss {loss:.3e}  recovery {error:.3e}  "
                + time_left(seconds, iteration, settings.iterations)
            )

    timer.start()
    u, s, vh = torch.linalg.svd(problem.surrogate(), full_matrices=False)
    x = u[:, : settings.k] * s[: settings.k].sqrt()
    y = vh[: settings.k].T * s[: settings.k].sqrt()
    checkpoint(0, x @ y.T)
    for iteration in range(1, settings.iterations + 1):
        y = solve_factor(x, target, weights, settings.ridge)
        x = solve_factor(y, target.T, weights.T, settings.ridge)
        if iteration % settings.n_inner == 0 or iteration == settings.iterations:
            timer.pause()
            estimate = x @ y.T
            timer.start()
            checkpoint(iteration, estimate)
    timer.pause()
    return (
        pd.DataFrame(rows, columns=["member", "iteration", "seconds", "train_loss", "recovery_error"]),
        x @ y.T,
        timer.elapsed,
    )


def altmin_record(
    problem: Completion,
    settings: AltMinSettings,
    curves: pd.DataFrame,
    seconds: float,
    device: torch.device,
    dtype: str,
) -> dict[str, Any]:
    """The run record (:func:`cdln.records.make_record`, kind ``altmin``); its members carry the same
    outcome keys as a GD run's, so aggregation reads both alike."""
    d_out, d_in = problem.shape
    final = curves.iloc[-1]
    best = curves.loc[curves["recovery_error"].idxmin()]
    iterations = int(final["iteration"])
    return make_record(
        "altmin",
        config={"model": "altmin", **asdict(settings), "task": "mc", "dtype": dtype},
        problem=asdict(problem.spec),
        members=[
            {
                "member": 0,
                "init_seed": 0,
                "alpha": 1.0,
                "converged": False,
                "stop_iteration": iterations,
                "stop_seconds": float(final["seconds"]),
                "final_train_loss": float(final["train_loss"]),
                "final_recovery_error": float(final["recovery_error"]),
                "best_recovery_error": float(best["recovery_error"]),
                "best_iteration": int(best["iteration"]),
            }
        ],
        parameters={"model": settings.k * (d_out + d_in)},
        timing={
            "seconds": seconds,
            "iterations": iterations,
            "seconds_per_iteration": seconds / max(1, iterations),
            "batch": 1,
        },
        device={"type": device.type, "name": device_name(device), "dtype": dtype},
    )
