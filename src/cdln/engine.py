"""Full-batch gradient descent on deep linear networks, with closed-form layer gradients.

For a loss f(W) of the end-to-end matrix ``W = W_L ... W_1`` with G = df/dW, the gradient of
layer l is ``(W_L ... W_{l+1})^T G (W_{l-1} ... W_1)^T``. One step therefore costs one forward
sweep of prefix products, one problem gradient and one backward sweep, about 3(L-1) matrix
products and no autograd bookkeeping; it is O(L d^3) for the original DLN and O(d^2 r_hat) for
the C-DLN. Runs in a batch (stacked weights) share every problem pass (the MS operator once).

Implementations of a step (:func:`plan_engine` picks one, with the backend, BLAS, MS operator pass and
lockstep, under the one override ``$CDLN_ENGINE``; :func:`gd_steps` runs it):

- ``torch`` (any device, every problem): every product and the MF/MC loss gradient are written into
  preallocated buffers (:class:`Workspace`), the update is one fused ``_foreach_addcmul_`` call,
  ``n_inner`` steps run per Python call, CPU batches step in cache-sized chunks (:func:`chunk_size`).
- ``native-dense`` / ``native-sampled`` (CPU, MF/MC, float32/64; :mod:`cdln.native`, compiled by numba,
  no system compiler): ``n_inner`` whole steps per call in compiled code, no per-step Python or
  allocation, the products by ``np.dot`` into preallocated buffers (scipy's BLAS). ``native-sampled``
  (MC) forms only the observed entries of the end-to-end product (the loss gradient is zero elsewhere)
  and does the gradient's products sparse-dense, O(n_observed k + d k^2) per step instead of O(d^2 k)
  (k = the last layer's input width); it is chosen when the observed fraction is below :func:`sampled_max_density`.
- ``cuda-graph`` (CUDA, opt-in with ``CDLN_ENGINE=cuda-graph`` until it has run on a GPU): the torch
  path's ``n_inner`` steps captured once into a CUDA graph (:class:`CapturedSteps`, kept in the
  :class:`Workspace`) and replayed with one launch per call.

:func:`train_many` steps networks of different shapes in lockstep on one problem, sharing each pass over
the MS operator.

Members that stop are dropped from the stacked weights. A member's arithmetic does not depend on the
batch: it trains bitwise the same in a batch as alone on every path (MS: to rounding, as the batch shares
one operator product). Paths differ from each other by rounding only (tests/test_engine_autograd.py,
tests/test_native.py).
"""

from __future__ import annotations

import functools
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from cdln import native
from cdln.devices import SyncTimer, synchronize
from cdln.native import check_shapes
from cdln.networks import LinearNetwork, product
from cdln.problems import Completion, Factorization, Problem, Sensing

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
    engine_path: str = "torch"  # what the seconds were measured on: :attr:`EnginePlan.label`
    engine_plan: dict[str, Any] = field(default_factory=dict)  # the whole plan: :meth:`EnginePlan.record`


class Workspace:
    """Preallocated buffers for one step of a network with fixed shapes (reused every step).

    Fresh (B, d, d) temporaries cost page faults on every step once they exceed the C
    allocator's mmap threshold (~128 KiB: a batch of 2 at d = 100), which tripled the step
    time of batched runs; writing every product into these buffers avoids that.
    ``prefixes[l]`` = W_{l+1} ... W_1 (B, n_{l+1}, d_in); ``upstreams[l]`` = (W_L ... W_{l+1})^T G
    (B, n_l, d_in) for l >= 1; ``grads[l]`` has the shape of ``weights[l]``; ``loss_grad`` (B, d_out, d_in).
    The torch path's buffers are allocated on first use (the native path needs none of them: it keeps
    its own scratch in ``native_plan``).
    """

    def __init__(self, weights: list[Tensor]) -> None:
        self.shapes = [tuple(w.shape) for w in weights]
        self.dtype, self.device = weights[0].dtype, weights[0].device
        self._buffers: dict[str, list[Tensor]] | None = None
        self.native_plan: tuple[Problem, str, native.NativeSteps] | None = None
        self.graphs: dict[int, CapturedSteps] = {}  # cuda-graph path: captured loops by step count

    def _torch_buffers(self) -> dict[str, list[Tensor]]:
        if self._buffers is None:
            batch, d_in = self.shapes[0][0], self.shapes[0][-1]
            new = functools.partial(torch.empty, dtype=self.dtype, device=self.device)
            self._buffers = {
                "prefixes": [new(batch, shape[-2], d_in) for shape in self.shapes[1:]],
                "upstreams": [new(batch, shape[-1], d_in) for shape in self.shapes[2:]],
                "grads": [new(*shape) for shape in self.shapes],
                "loss_grad": [new(batch, self.shapes[-1][-2], d_in)],
            }
        return self._buffers

    @property
    def prefixes(self) -> list[Tensor]:
        return self._torch_buffers()["prefixes"]

    @property
    def upstreams(self) -> list[Tensor]:
        return self._torch_buffers()["upstreams"]

    @property
    def grads(self) -> list[Tensor]:
        return self._torch_buffers()["grads"]

    @property
    def loss_grad(self) -> Tensor:
        return self._torch_buffers()["loss_grad"][0]

    def fits(self, weights: list[Tensor]) -> bool:
        if len(self.shapes) != len(weights) or (weights[0].dtype, weights[0].device) != (self.dtype, self.device):
            return False
        return all(tuple(w.shape) == shape for w, shape in zip(weights, self.shapes, strict=True))


def forward_products(weights: list[Tensor], workspace: Workspace) -> Tensor:
    """Fill ``workspace.prefixes`` (W_{l+1} ... W_1) and return the end-to-end matrix W_L ... W_1."""
    prefixes = [weights[0], *workspace.prefixes]  # prefixes[l] = W_{l+1} ... W_1 (0-based l)
    for layer in range(1, len(weights)):
        torch.bmm(weights[layer], prefixes[layer - 1], out=prefixes[layer])
    return prefixes[-1]


def backward_products(weights: list[Tensor], loss_grad: Tensor, workspace: Workspace) -> list[Tensor]:
    """Layer gradients from G = dLoss/dW (B, d_out, d_in), after :func:`forward_products` filled the
    prefixes; the results live in ``workspace.grads``."""
    grads = workspace.grads
    if len(weights) == 1:
        grads[0].copy_(loss_grad)
        return grads
    # upstream = (W_L ... W_{l+1})^T G, starting at l = L; the last one is the first layer's gradient.
    prefixes = [weights[0], *workspace.prefixes]
    upstream = loss_grad
    targets = [grads[0], *workspace.upstreams]
    for layer in range(len(weights) - 1, 0, -1):
        torch.bmm(upstream, prefixes[layer - 1].mT, out=grads[layer])
        upstream = torch.bmm(weights[layer].mT, upstream, out=targets[layer - 1])
    return grads


def layer_gradients(weights: list[Tensor], problem: Problem, workspace: Workspace | None = None) -> list[Tensor]:
    """Closed-form gradients of ``problem``'s training loss w.r.t. each layer, same shapes.

    With a ``workspace`` the results live in its buffers (overwritten by the next call).
    """
    if workspace is None or not workspace.fits(weights):
        workspace = Workspace(weights)
    end_to_end = forward_products(weights, workspace)
    return backward_products(weights, problem.loss_grad(end_to_end, out=workspace.loss_grad), workspace)


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


# Native MC steps: the sampled one costs ~c_s n_observed k, the dense one ~c_d d_out d_in k (k = the last
# layer's input width), so the sampled step pays below an observed fraction c_d / c_s. Its pass over the
# observed entries is load-bound and slower per FLOP than a dense GEMM, the more so when a row of width k
# no longer fits in registers (k > cdln.native.REGISTER_MAX: 104 with AVX-512's 32 vector registers, else
# 32; wider rows go in register blocks, cdln.native.WIDE_BLOCK) and when
# the P^T/U^T panels (2 d_in k numbers) outgrow the cache (CACHE_BYTES). `cdln bench --sections sampled`
# prints the crossovers (sampled/dense = 1). Measured with the former C kernels on one core (L = 3,
# 512 KiB L2, 2026-12-01): k = 20: p ~ 0.73-0.80 at d = 400, above 0.5 at d = 100; k = 100: p ~ 0.41 at
# d = 100, 0.31-0.34 at d = 200-400; k = d = 200: 0.34; k = d = 400: 0.30-0.31. The numba kernels that
# replaced them match their sampled and dense steps on the mc setting to within ~10% (docs/performance.md),
# so the thresholds stay. The pipeline's MC runs (p = 0.3, d = 100) sample: measured (numba, one pinned core,
# 2026-12-02) 0.60 (C-DLN) and 0.87 (original) of the dense step's time.
SAMPLED_MAX_DENSITY = {"registers": 0.6, "cache": 0.35, "memory": 0.2}


def sampled_max_density(weights: list[Tensor]) -> float:
    """Observed fraction below which the sampled MC step is the cheaper one (see SAMPLED_MAX_DENSITY)."""
    k, d_in, itemsize = weights[-1].shape[-1], weights[0].shape[-1], weights[0].element_size()
    # 32: the widths the thresholds were measured with (any CPU holds such a row in registers; with AVX-512
    # rows up to cdln.native.REGISTER_MAX are too, so the thresholds above err on the dense side there).
    if k <= 32:
        return SAMPLED_MAX_DENSITY["registers"]
    return SAMPLED_MAX_DENSITY["cache" if 2 * d_in * k * itemsize <= CACHE_BYTES else "memory"]


PATHS = ("torch", "native-dense", "native-sampled", "cuda-graph")


@functools.cache
def _torch_blas() -> str:
    """The BLAS torch was built with, as ``torch.__config__.show()`` names it (MKL in the PyPI wheels)."""
    match = re.search(r"BLAS_INFO=(\w+)", torch.__config__.show())
    return f"torch {torch.__version__} ({match.group(1) if match else 'unknown BLAS'})"


@dataclass(frozen=True)
class EnginePlan:
    """How the engine steps one network on one problem, chosen by :func:`plan_engine` (the run record
    stores :meth:`record`): the step ``path`` (one of :data:`PATHS`), its ``backend`` and ``blas``, for MS
    how the loss gradient reads the operator (``operator_pass``), whether the networks step in
    ``lockstep`` (:func:`train_many`), and the ``override`` (``$CDLN_ENGINE``) it was chosen under."""

    path: str
    backend: str
    blas: str
    operator_pass: str | None = None
    lockstep: bool = False
    override: str = "auto"

    @property
    def label(self) -> str:
        """The record's ``engine_path``: the path (``lockstep`` in :func:`train_many`), for MS ``+`` the
        operator pass, e.g. ``lockstep+native-one-pass``."""
        path = "lockstep" if self.lockstep else self.path
        return f"{path}+{self.operator_pass}" if self.operator_pass else path

    def record(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "label": self.label,
            "backend": self.backend,
            "blas": self.blas,
            "operator_pass": self.operator_pass,
            "lockstep": self.lockstep,
            "override": self.override,
        }


def plan_engine(weights: list[Tensor], problem: Problem, lockstep: bool = False) -> EnginePlan:
    """The one place the engine's plan is chosen: step path, backend, BLAS, operator pass, lockstep.

    ``$CDLN_ENGINE`` (:func:`cdln.native.engine_override`) overrides it: ``torch`` is torch everywhere,
    ``numba`` / ``native-dense`` / ``native-sampled`` need the compiled kernels (an error where they
    cannot run), ``cuda-graph`` is opt-in (CUDA only). Under ``auto``, CPU MF/MC steps run compiled
    (``native-sampled`` below :func:`sampled_max_density`, else ``native-dense``), everything else on
    torch; MS's operator pass is compiled on the CPU. The choice depends on shapes, density, dtype and
    device only, never on the batch size. ``lockstep``: the networks of :func:`train_many` (MS), whose
    step is torch's with one shared operator pass.
    """
    override = native.engine_override()
    path = "torch" if lockstep else _choose_path(weights, problem, override)
    operator_pass = problem.operator_pass(weights[0].dtype) if isinstance(problem, Sensing) else None
    compiled = path.startswith("native") or operator_pass == "native-one-pass"
    if path.startswith("native"):
        backend = native.backend()
    elif compiled:
        backend = f"torch {torch.__version__} + {native.backend()} (operator pass)"
    else:
        backend = f"torch {torch.__version__}"
    blas = _torch_blas()
    if compiled:
        info = native.blas_info()
        numba_blas = f"{info['name']} {info['version']} (via scipy {info.get('scipy', '?')})"
        blas = numba_blas if path.startswith("native") else f"{blas}; operator pass: {numba_blas}"
    return EnginePlan(path, backend, blas, operator_pass, lockstep, override)


def step_path(weights: list[Tensor], problem: Problem) -> str:
    """The step path :func:`plan_engine` picks for these weights on ``problem``."""
    return _choose_path(weights, problem, native.engine_override())


def _choose_path(weights: list[Tensor], problem: Problem, override: str) -> str:
    forced = None if override in ("auto", "numba") else override
    if override == "torch":
        return "torch"
    if weights[0].device.type == "cuda" or forced == "cuda-graph":
        if weights[0].device.type != "cuda":
            raise ValueError("CDLN_ENGINE=cuda-graph needs CUDA tensors")
        if override not in ("auto", "cuda-graph"):
            raise ValueError(f"CDLN_ENGINE={override} is not available on CUDA (CPU kernels)")
        return "cuda-graph" if override == "cuda-graph" else "torch"
    tensors = problem.tensors().values()
    same = all(t.device == weights[0].device and t.dtype in (weights[0].dtype, torch.bool) for t in tensors)
    if not isinstance(problem, Factorization | Completion) or not same or not native.supports(weights):
        if override == "numba" and isinstance(problem, Sensing) and native.available(weights[0].dtype):
            return "torch"  # MS: torch's step, the compiled operator pass
        if override != "auto":
            reason = native.why_unavailable(weights[0].dtype) or "needs CPU, MF/MC, contiguous float32/64 weights"
            raise ValueError(f"CDLN_ENGINE={override} is not available here: {reason}")
        return "torch"
    check_shapes(weights, *problem.shape)
    can_sample = isinstance(problem, Completion) and len(weights) >= 2
    if forced is not None:
        if forced == "native-sampled" and not can_sample:
            raise ValueError("CDLN_ENGINE=native-sampled needs an MC problem and depth >= 2")
        return forced
    if can_sample and problem.n_observed < sampled_max_density(weights) * problem.mask.numel():
        return "native-sampled"
    return "native-dense"


def _native_steps(
    weights: list[Tensor], problem: Problem, path: str, workspace: Workspace | None
) -> native.NativeSteps:
    """The compiled plan for ``path`` (kept in ``workspace`` when given, for the next call)."""
    if workspace is not None and workspace.native_plan is not None:
        owner, owner_path, plan = workspace.native_plan
        if owner is problem and owner_path == path and plan.fits(weights):
            return plan
    if isinstance(problem, Completion):
        csr = problem.observed_entries() if path == "native-sampled" else None
        plan = native.NativeSteps(weights, problem.observations, problem._observed, 0.0, csr)
    else:
        plan = native.NativeSteps(weights, problem.observations, None, problem._scale)
    if workspace is not None and workspace.fits(weights):
        workspace.native_plan = (problem, path, plan)
    return plan


def _capture(run: Callable[[], None], device: torch.device) -> Callable[[], None]:
    """Record ``run``'s GPU work into a CUDA graph (nothing executes); returns the graph's replay."""
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        run()
    return graph.replay


def _warm_up(run: Callable[[], None], device: torch.device) -> None:
    """Run once on a side stream before capturing (cuBLAS handles and workspaces, allocator pools)."""
    if device.type != "cuda":
        run()
        return
    stream = torch.cuda.Stream(device)
    stream.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(stream):
        run()
    torch.cuda.current_stream(device).wait_stream(stream)


class CapturedSteps:
    """``n_steps`` GD steps of the torch path recorded once into a CUDA graph and replayed with one launch.

    A small GPU step is bound by kernel launches (~10 per step); the graph replays all ``10 n_steps`` of them
    without the CPU. The graph reads and writes the very tensors it was captured with (``weights`` in place,
    ``neg_steps``, the workspace buffers, the problem's tensors), so a replay is valid only for those:
    :meth:`matches` checks their storage. Capture runs one warm-up step on a side stream first and then
    restores the weights, so building it does not move them. The replayed kernels are the eager ones:
    same arithmetic as the torch path.
    """

    def __init__(
        self, weights: list[Tensor], neg_steps: list[Tensor], problem: Problem, n_steps: int, workspace: Workspace
    ) -> None:
        self.n_steps, self.problem = n_steps, problem  # holding the problem keeps its id unique
        self.key = self._key(weights, neg_steps, problem)
        device = weights[0].device

        def steps(count: int) -> Callable[[], None]:
            def run() -> None:
                for _ in range(count):
                    torch._foreach_addcmul_(weights, layer_gradients(weights, problem, workspace), neg_steps)

            return run

        saved = [w.clone() for w in weights]
        _warm_up(steps(1), device)
        for weight, before in zip(weights, saved, strict=True):
            weight.copy_(before)
        synchronize(device)
        self.replay = _capture(steps(n_steps), device)

    @staticmethod
    def _key(weights: list[Tensor], neg_steps: list[Tensor], problem: Problem) -> tuple:
        tensors = [*weights, *neg_steps]
        return (id(problem), *((t.data_ptr(), tuple(t.shape), t.dtype) for t in tensors))

    def matches(self, weights: list[Tensor], neg_steps: list[Tensor], problem: Problem, n_steps: int) -> bool:
        return n_steps == self.n_steps and self._key(weights, neg_steps, problem) == self.key


def _captured_steps(
    weights: list[Tensor], neg_steps: list[Tensor], problem: Problem, n_steps: int, workspace: Workspace
) -> CapturedSteps:
    """The captured loop for these tensors and step count, from ``workspace`` or captured now (and kept there)."""
    captured = workspace.graphs.get(n_steps)
    if captured is None or not captured.matches(weights, neg_steps, problem, n_steps):
        captured = workspace.graphs[n_steps] = CapturedSteps(weights, neg_steps, problem, n_steps, workspace)
    return captured


def prepare_steps(
    weights: list[Tensor],
    neg_steps: list[Tensor],
    problem: Problem,
    n_steps: int,
    workspace: Workspace,
    path: str | None = None,
) -> str:
    """Build what :func:`gd_steps` will need for these arguments (the CUDA graph, the native plan and its
    kernels) without stepping, so that a timed run excludes it; returns the path."""
    path = path or step_path(weights, problem)
    if path == "cuda-graph":
        _captured_steps(weights, neg_steps, problem, n_steps, workspace)
    elif path != "torch":
        _native_steps(weights, problem, path, workspace)
    return path


def gd_steps(
    weights: list[Tensor],
    neg_steps: list[Tensor],
    problem: Problem,
    n_steps: int,
    workspace: Workspace | None = None,
    path: str | None = None,
) -> None:
    """Take ``n_steps`` GD steps in place; ``neg_steps[l]`` = -(lr * scale * active), shape (B, 1, 1).

    ``workspace`` (optional, for the full batch) saves allocating buffers on every call, and keeps the
    native plan or the CUDA graph for the next call (the ``cuda-graph`` path needs it: without one the
    steps run eagerly). ``path``: one of :data:`PATHS`, default :func:`step_path`'s choice.
    """
    path = path or step_path(weights, problem)
    if path == "cuda-graph":
        if workspace is not None and workspace.fits(weights):
            _captured_steps(weights, neg_steps, problem, n_steps, workspace).replay()
            return
        path = "torch"  # no workspace to keep a graph in: a one-off capture would not pay; same kernels eagerly
    if path != "torch":
        _native_steps(weights, problem, path, workspace).run(weights, neg_steps, n_steps)
        return
    batch, chunk = weights[0].shape[0], chunk_size(weights, problem)
    for start in range(0, batch, chunk):
        part = weights if chunk >= batch else [w[start : start + chunk] for w in weights]
        steps = neg_steps if chunk >= batch else [s[start : start + chunk] for s in neg_steps]
        buffers = workspace if workspace is not None and workspace.fits(part) else Workspace(part)
        for _ in range(n_steps):
            torch._foreach_addcmul_(part, layer_gradients(part, problem, buffers), steps)


def record_checkpoint(
    iteration: int,
    live: list[int],
    losses: list[float],
    errors: list[float],
    seconds: float,
    settings: TrainSettings,
    rows: list[tuple[int, int, float, float, float]],
    stops: tuple[list[int], list[float], list[bool]],
) -> list[int]:
    """A checkpoint of the ``live`` members (shared by :func:`train` and :func:`train_many`): appends their
    curve rows, raises :class:`DivergenceError` on a non-finite loss, marks members below ``settings.tol``
    or at the last iteration as stopped in ``stops`` (stop iteration, stop seconds, converged), and returns
    the positions in ``live`` of the members that keep training."""
    stop_iteration, stop_seconds, converged = stops
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
    return keep


def drop_members(work: list[Tensor], live: list[int], keep: list[int]) -> tuple[list[Tensor], list[int]]:
    """The stacked weights and member ids of the ``keep`` positions (after :func:`record_checkpoint`)."""
    index = torch.tensor(keep, dtype=torch.long, device=work[0].device)
    return [w.index_select(0, index) for w in work], [live[k] for k in keep]


def train(
    network: LinearNetwork,
    problem: Problem,
    settings: TrainSettings,
    snapshot: SnapshotFn | None = None,
    progress: ProgressFn | None = None,
) -> TrainResult:
    """Train ``network`` (modified in place) on ``problem`` by full-batch GD.

    ``network`` and ``problem`` must share device and dtype. Wall-clock seconds are
    device-synchronised, exclude one warm-up step (on a copy), the building of the step's CUDA graph or
    native plan (a member drop re-captures the graph inside the timed run) and snapshot work.
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

    plan = plan_engine(work, problem)
    warmup = SyncTimer(device)
    warmup.start()
    gd_steps([w.clone() for w in work], neg_steps(), problem, 1, path=plan.path)
    workspace = Workspace(work)
    steps = neg_steps()
    prepare_steps(work, steps, problem, settings.n_inner, workspace, plan.path)  # CUDA graph capture, native plan
    warmup_seconds = warmup.elapsed

    rows: list[tuple[int, int, float, float, float]] = []
    snapshots: list[dict[str, np.ndarray]] = []
    stop_iteration = [settings.max_iterations] * batch
    stop_seconds = [math.nan] * batch
    converged = [False] * batch
    timer = SyncTimer(device)

    def checkpoint(iteration: int) -> None:
        nonlocal work, live, workspace, steps
        end_to_end = product(work)
        losses = problem.train_loss(end_to_end).tolist()
        errors = problem.recovery_error(end_to_end).tolist()
        seconds = timer.elapsed
        stops = (stop_iteration, stop_seconds, converged)
        keep = record_checkpoint(iteration, live, losses, errors, seconds, settings, rows, stops)
        if len(keep) < len(live):
            write_back()
            work, live = drop_members(work, live, keep)
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
        gd_steps(work, steps, problem, settings.n_inner, workspace, plan.path)
        checkpoint(outer * settings.n_inner)
    timer.pause()
    write_back()
    curves = pd.DataFrame(rows, columns=["member", "iteration", "seconds", "train_loss", "recovery_error"])
    return TrainResult(
        curves, stop_iteration, stop_seconds, converged, timer.elapsed, warmup_seconds, snapshots, plan.label,
        plan.record(),
    )  # fmt: skip


@dataclass(eq=False)
class _Lockstep:
    """One network's state in :func:`train_many`."""

    index: int
    network: LinearNetwork
    live: list[int]
    work: list[Tensor]
    steps: list[Tensor]
    workspace: Workspace
    rows: list[tuple[int, int, float, float, float]] = field(default_factory=list)
    seconds: float = 0.0  # own work plus its share of the shared passes
    warmup_seconds: float = 0.0

    def neg_steps(self, lr: float) -> list[Tensor]:
        index = torch.tensor(self.live, dtype=torch.long, device=self.work[0].device)
        return [(-lr * scale.index_select(0, index)).view(-1, 1, 1) for scale in self.network.lr_scales]

    def write_back(self) -> None:
        if self.work is not self.network.weights:
            index = torch.tensor(self.live, dtype=torch.long, device=self.work[0].device)
            for full, part in zip(self.network.weights, self.work, strict=True):
                full.index_copy_(0, index, part)


def lockstep_step(
    problem: Problem,
    works: list[list[Tensor]],
    workspaces: list[Workspace],
    neg_steps: list[list[Tensor]],
    shared: Tensor,
    clock: Callable[[], float] | None = None,
    own: Callable[[int, float], None] | None = None,
    together: Callable[[float], None] | None = None,
) -> None:
    """One GD step of several networks on one problem sharing a single loss-gradient call (one pass over
    the MS operator): each network's end-to-end matrix goes into its rows of ``shared`` (sum of the batch
    sizes, d_out, d_in), then each network steps with its rows of the gradient. :func:`train_many`'s step;
    ``clock``/``own(k, start)``/``together(start)`` let it time each network's own work and the shared pass."""
    tick = clock or (lambda: 0.0)
    offset, slices = 0, []
    for k, (work, workspace) in enumerate(zip(works, workspaces, strict=True)):
        start = tick()
        batch = work[0].shape[0]
        shared[offset : offset + batch].copy_(forward_products(work, workspace))
        slices.append(slice(offset, offset + batch))
        offset += batch
        if own is not None:
            own(k, start)
    start = tick()
    grad = problem.loss_grad(shared[:offset])
    if together is not None:
        together(start)
    for k, (work, workspace, steps, part) in enumerate(zip(works, workspaces, neg_steps, slices, strict=True)):
        start = tick()
        torch._foreach_addcmul_(work, backward_products(work, grad[part], workspace), steps)
        if own is not None:
            own(k, start)


def train_many(
    networks: list[LinearNetwork],
    problem: Problem,
    settings: TrainSettings,
    progress: ProgressFn | None = None,
) -> list[TrainResult]:
    """Train several networks (any shapes and batch sizes; modified in place) on one problem by full-batch
    GD in lockstep, sharing every pass over the MS operator: each step stacks the networks' end-to-end
    matrices into one (sum of live members, d_out, d_in) loss-gradient call, and each checkpoint into one
    training-loss call. E.g. the original DLN and the C-DLN of one seed pay one operator pass per step
    between them instead of two.

    Each network's members stop on their own (below ``settings.tol``, checked at checkpoints) and are
    dropped; a network with no live member drops out of the lockstep. A member's iterates are those of
    training it alone, up to the rounding of the shared product (as in a batch; see :func:`train`).

    Seconds (``TrainResult.seconds``, ``stop_seconds``, the curves' ``seconds``): each network's own work
    (its products and update, its recovery error) is timed on its own, device-synchronised; the time of a
    shared pass is split among the networks in proportion to the live members each put into it. So the
    networks' seconds add up to the lockstep's wall time, and a network's seconds are what it cost in the
    shared run, not what it would cost alone. The warm-up step (on copies) is split the same way.

    Only MS has a pass worth sharing: for MF and MC each network is trained on its own by :func:`train`
    (on its fastest path), one after the other.
    """
    if not isinstance(problem, Sensing):
        return [train(network, problem, settings, progress=progress) for network in networks]
    device = networks[0].weights[0].device
    plan = plan_engine(networks[0].weights, problem, lockstep=True)
    states = [
        _Lockstep(k, net, list(range(net.batch)), net.weights, [], Workspace(net.weights))
        for k, net in enumerate(networks)
    ]
    for state in states:
        state.steps = state.neg_steps(settings.lr)

    def clock() -> float:
        synchronize(device)
        return time.perf_counter()

    def share(seconds: float, active: list[_Lockstep]) -> None:
        members = sum(len(s.live) for s in active)
        for s in active:
            s.seconds += seconds * len(s.live) / members

    def step(active: list[_Lockstep], works: list[list[Tensor]], buffers: list[Workspace], shared: Tensor) -> None:
        def own(k: int, start: float) -> None:
            active[k].seconds += clock() - start

        def together(start: float) -> None:
            share(clock() - start, active)

        lockstep_step(problem, works, buffers, [s.steps for s in active], shared, clock, own, together)

    def stacked(active: list[_Lockstep]) -> Tensor:
        d_out, d_in = problem.shape
        total = sum(len(s.live) for s in active)
        return torch.empty(total, d_out, d_in, dtype=active[0].work[0].dtype, device=device)

    # Warm-up: one lockstep step on copies (first-call costs), split like the rest.
    warm = [[w.clone() for w in s.work] for s in states]
    for state in states:
        state.seconds = 0.0
    step(states, warm, [Workspace(w) for w in warm], stacked(states))
    for state in states:
        state.warmup_seconds, state.seconds = state.seconds, 0.0
    del warm

    results: list[TrainResult | None] = [None] * len(states)
    stops = [
        ([settings.max_iterations] * s.network.batch, [math.nan] * s.network.batch, [False] * s.network.batch)
        for s in states
    ]

    def checkpoint(iteration: int, active: list[_Lockstep]) -> list[_Lockstep]:
        ends = []
        for state in active:
            start = clock()
            ends.append(product(state.work))
            state.seconds += clock() - start
        start = clock()
        losses = problem.train_loss(torch.cat(ends)).tolist()
        share(clock() - start, active)
        still = []
        offset = 0
        for state, end in zip(active, ends, strict=True):
            start = clock()
            mine, offset = losses[offset : offset + len(state.live)], offset + len(state.live)
            errors = problem.recovery_error(end).tolist()
            keep = record_checkpoint(
                iteration, state.live, mine, errors, state.seconds, settings, state.rows, stops[state.index]
            )
            if len(keep) < len(state.live):
                state.write_back()
                state.work, state.live = drop_members(state.work, state.live, keep)
                if state.live:
                    state.workspace, state.steps = Workspace(state.work), state.neg_steps(settings.lr)
            state.seconds += clock() - start
            if state.live:
                still.append(state)
            if progress is not None:
                progress(
                    f"[{state.network.name}] iter {iteration:>8d}/{settings.max_iterations}  {state.seconds:8.2f}s  "
                    f"loss {min(mine):.3e}  recovery {min(errors):.3e}  active {len(state.live)}"
                )
        return still

    active = checkpoint(0, states)
    shared = stacked(active) if active else None
    for outer in range(1, settings.max_outer + 1):
        if not active:
            break
        for _ in range(settings.n_inner):
            step(active, [s.work for s in active], [s.workspace for s in active], shared)
        before = [len(s.live) for s in active]
        now_active = checkpoint(outer * settings.n_inner, active)
        if [len(s.live) for s in now_active] != before or len(now_active) != len(active):
            active = now_active
            shared = stacked(active) if active else None
    for index, state in enumerate(states):
        state.write_back()
        columns = ["member", "iteration", "seconds", "train_loss", "recovery_error"]
        curves = pd.DataFrame(state.rows, columns=columns).sort_values(["iteration", "member"], kind="stable")
        stop_iteration, stop_seconds, converged = stops[index]
        results[index] = TrainResult(
            curves.reset_index(drop=True),
            stop_iteration,
            stop_seconds,
            converged,
            state.seconds,
            state.warmup_seconds,
            engine_path=plan.label,
            engine_plan=plan.record(),
        )
    return [r for r in results if r is not None]
