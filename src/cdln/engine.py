"""Full-batch gradient descent on deep linear networks, with closed-form layer gradients.

For a loss f(W) of the end-to-end matrix ``W = W_L ... W_1`` with G = df/dW, the gradient of
layer l is ``(W_L ... W_{l+1})^T G (W_{l-1} ... W_1)^T``. One step therefore costs one forward
sweep of prefix products, one problem gradient and one backward sweep, about 3(L-1) matrix
products and no autograd bookkeeping; it is O(L d^3) for the original DLN and O(d^2 r_hat) for
the C-DLN. Runs in a batch (stacked weights) share every problem pass (the MS operator once).

Speed (``cdln bench`` measures it against the time of the matrix products alone): every product
and the MF/MC loss gradient are written into preallocated buffers (:class:`Workspace`), the
update is one fused ``_foreach_addcmul_`` call, ``n_inner`` steps run per Python call, CPU
batches step in cache-sized chunks (:func:`chunk_size`) and members that stop are dropped from
the stacked weights. None of this changes a member's arithmetic (tests/test_engine_autograd.py).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from cdln.devices import SyncTimer
from cdln.networks import LinearNetwork, product
from cdln.problems import Problem, Sensing

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


class Workspace:
    """Preallocated buffers for one step of a network with fixed shapes (reused every step).

    Fresh (B, d, d) temporaries cost page faults on every step once they exceed the C
    allocator's mmap threshold (~128 KiB: a batch of 2 at d = 100), which tripled the step
    time of batched runs; writing every product into these buffers avoids that.
    ``prefixes[l]`` = W_{l+1} ... W_1 (B, n_{l+1}, d_in); ``upstreams[l]`` = (W_L ... W_{l+1})^T G
    (B, n_l, d_in) for l >= 1; ``grads[l]`` has the shape of ``weights[l]``; ``loss_grad`` (B, d_out, d_in).
    """

    def __init__(self, weights: list[Tensor]) -> None:
        batch, d_in = weights[0].shape[0], weights[0].shape[-1]
        new = functools.partial(torch.empty, dtype=weights[0].dtype, device=weights[0].device)
        self.prefixes = [new(batch, w.shape[-2], d_in) for w in weights[1:]]
        self.upstreams = [new(batch, w.shape[-1], d_in) for w in weights[2:]]
        self.grads = [torch.empty_like(w) for w in weights]
        self.loss_grad = new(batch, weights[-1].shape[-2], d_in)

    def fits(self, weights: list[Tensor]) -> bool:
        if len(self.grads) != len(weights):
            return False
        pairs = zip(self.grads, weights, strict=True)
        return all((g.shape, g.dtype, g.device) == (w.shape, w.dtype, w.device) for g, w in pairs)


def layer_gradients(weights: list[Tensor], problem: Problem, workspace: Workspace | None = None) -> list[Tensor]:
    """Closed-form gradients of ``problem``'s training loss w.r.t. each layer, same shapes.

    With a ``workspace`` the results live in its buffers (overwritten by the next call).
    """
    if workspace is None or not workspace.fits(weights):
        workspace = Workspace(weights)
    prefixes = [weights[0], *workspace.prefixes]  # prefixes[l] = W_{l+1} ... W_1 (0-based l)
    for layer in range(1, len(weights)):
        torch.bmm(weights[layer], prefixes[layer - 1], out=prefixes[layer])
    grads = workspace.grads
    if len(weights) == 1:
        grads[0].copy_(problem.loss_grad(prefixes[-1], out=workspace.loss_grad))
        return grads
    # upstream = (W_L ... W_{l+1})^T G, starting at l = L; the last one is the first layer's gradient.
    upstream = problem.loss_grad(prefixes[-1], out=workspace.loss_grad)
    targets = [grads[0], *workspace.upstreams]
    for layer in range(len(weights) - 1, 0, -1):
        torch.bmm(upstream, prefixes[layer - 1].mT, out=grads[layer])
        upstream = torch.bmm(weights[layer].mT, upstream, out=targets[layer - 1])
    return grads


# Batch members are independent, so a CPU batch steps in chunks whose working set (the d_out x d_in
# end-to-end product and gradient dominate) stays in a core's L2 cache; stepping all of a large batch
# at once streams every (B, d, d) buffer through memory on each product and was slower per member
# than training alone. MS is not chunked: one pass over its operator serves the whole batch.
CACHE_BYTES = 1 << 20


def chunk_size(weights: list[Tensor], problem: Problem) -> int:
    """Members stepped together by :func:`gd_steps` (the whole batch on GPUs and for MS)."""
    batch = weights[0].shape[0]
    if weights[0].device.type != "cpu" or isinstance(problem, Sensing):
        return batch
    d_out, d_in = weights[-1].shape[-2], weights[0].shape[-1]
    per_member = weights[0].element_size() * (2 * d_out * d_in + 2 * sum(w[0].numel() for w in weights))
    return max(1, min(batch, CACHE_BYTES // per_member))


def gd_steps(
    weights: list[Tensor],
    neg_steps: list[Tensor],
    problem: Problem,
    n_steps: int,
    workspace: Workspace | None = None,
) -> None:
    """Take ``n_steps`` GD steps in place; ``neg_steps[l]`` = -(lr * scale * active), shape (B, 1, 1).

    ``workspace`` (optional, for the full batch) saves allocating buffers on every call.
    """
    batch, chunk = weights[0].shape[0], chunk_size(weights, problem)
    for start in range(0, batch, chunk):
        part = weights if chunk >= batch else [w[start : start + chunk] for w in weights]
        steps = neg_steps if chunk >= batch else [s[start : start + chunk] for s in neg_steps]
        buffers = workspace if workspace is not None and workspace.fits(part) else Workspace(part)
        for _ in range(n_steps):
            torch._foreach_addcmul_(part, layer_gradients(part, problem, buffers), steps)


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
    A member that stops (below ``tol``) is written back to ``network`` and dropped from the
    stacked weights, so the rest of the batch no longer pays for it; every member's arithmetic
    is the same as if it had trained alone. Raises :class:`DivergenceError` on a non-finite
    training loss.
    """
    device = network.weights[0].device
    batch = network.batch
    live = list(range(batch))  # members still training; work[l][k] is member live[k]'s layer l
    work = network.weights

    def neg_steps() -> list[Tensor]:
        index = torch.tensor(live, dtype=torch.long, device=device)
        return [(-settings.lr * scale.index_select(0, index)).view(-1, 1, 1) for scale in network.lr_scales]

    def write_back() -> None:
        if work is not network.weights:
            index = torch.tensor(live, dtype=torch.long, device=device)
            for full, part in zip(network.weights, work, strict=True):
                full.index_copy_(0, index, part)

    warmup = SyncTimer(device)
    warmup.start()
    gd_steps([w.clone() for w in work], neg_steps(), problem, 1)
    warmup_seconds = warmup.elapsed

    rows: list[tuple[int, int, float, float, float]] = []
    snapshots: list[dict[str, np.ndarray]] = []
    stop_iteration = [settings.max_iterations] * batch
    stop_seconds = [math.nan] * batch
    converged = [False] * batch
    timer = SyncTimer(device)
    workspace = Workspace(work)
    steps = neg_steps()

    def checkpoint(iteration: int) -> None:
        nonlocal work, live, workspace, steps
        end_to_end = product(work)
        losses = problem.train_loss(end_to_end).tolist()
        errors = problem.recovery_error(end_to_end).tolist()
        seconds = timer.elapsed
        keep = []
        for k, member in enumerate(live):
            if not math.isfinite(losses[k]):
                raise DivergenceError(iteration, member, settings.lr)
            rows.append((member, iteration, seconds, losses[k], errors[k]))
            if losses[k] < settings.tol or iteration == settings.max_iterations:
                converged[member] = losses[k] < settings.tol
                stop_iteration[member], stop_seconds[member] = iteration, seconds
            else:
                keep.append(k)
        n_live = len(live)
        if len(keep) < n_live:
            write_back()
            index = torch.tensor(keep, dtype=torch.long, device=device)
            work = [w.index_select(0, index) for w in work]
            live = [live[k] for k in keep]
            if live:
                workspace, steps = Workspace(work), neg_steps()
        if snapshot is not None:
            timer.pause()
            write_back()
            snapshots.append({"iteration": np.array(iteration), **snapshot(iteration, network, network.end_to_end())})
            timer.start()
        if progress is not None:
            progress(
                f"iter {iteration:>8d}/{settings.max_iterations}  {seconds:8.2f}s  "
                f"loss {min(losses):.3e}  recovery {min(errors):.3e}  active {len(live)}/{batch}"
            )

    timer.start()
    checkpoint(0)
    for outer in range(1, settings.max_outer + 1):
        if not live:
            break
        gd_steps(work, steps, problem, settings.n_inner, workspace)
        checkpoint(outer * settings.n_inner)
    timer.pause()
    write_back()
    curves = pd.DataFrame(rows, columns=["member", "iteration", "seconds", "train_loss", "recovery_error"])
    return TrainResult(curves, stop_iteration, stop_seconds, converged, timer.elapsed, warmup_seconds, snapshots)
