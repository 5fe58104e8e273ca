"""Kernel benchmark: one engine GD iteration against its lower bound, per task, size, dtype and model.

The bound is the step's matrix-product FLOPs (:func:`step_flops`, written once here) at the peak GEMM rate
measured in the same run; the ratio engine / bound says how far from the arithmetic limit a step runs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from cdln.bench.timing import compare
from cdln.data.synthetic import make_problem
from cdln.devices import resolve_dtype
from cdln.engine import plan_engine
from cdln.networks import LinearNetwork, compressed_dln, original_dln
from cdln.problems import Completion, Problem, Sensing
from cdln.spec import ProblemSpec


@dataclass(frozen=True)
class Case:
    """One kernel benchmark: a problem (task, d, m) and a network (model) in a dtype."""

    task: str
    d: int
    model: str
    dtype: str
    m: int | None = None
    depth: int = 3
    r: int = 10
    r_hat: int = 20
    p: float = 0.3  # MC only
    lr: float = 10.0  # GD step of the timed iterations (weights are reset before every repeat)


def default_cases(
    lrs: Mapping[str, float],
    sizes: Sequence[int] = (100, 400, 1000, 2000),
    ms_sizes: Sequence[int] = (100, 200),
    dtypes: Sequence[str] = ("float64", "float32"),
) -> list[Case]:
    """MF/MC at ``sizes``, MS at ``ms_sizes`` (m = 20 d), every dtype, both models; ``lrs``: task -> step."""
    cases = []
    for dtype in dtypes:
        for task, ds in (("mf", sizes), ("mc", sizes), ("ms", ms_sizes)):
            for d in ds:
                for model in ("original", "cdln"):
                    cases.append(Case(task, d, model, dtype, 20 * d if task == "ms" else None, lr=lrs[task]))
    return cases


def build_case(case: Case, problems: dict[tuple, Problem], device: torch.device) -> tuple[LinearNetwork, Problem]:
    """The case's network and problem on ``device`` in its dtype (problems cached across cases)."""
    dtype = resolve_dtype(case.dtype)
    key = (case.task, case.d, case.m, case.r, case.p)
    if key not in problems:
        problems.clear()  # keep one problem in memory: the MS operator is large
        spec = ProblemSpec(case.task, case.d, case.d, case.r, 0, case.p if case.task == "mc" else None, case.m)
        problems[key] = make_problem(spec)
    cpu_problem = problems[key]
    if case.model == "original":
        network = original_dln(case.d, case.d, case.depth, 1e-2, [0])
    else:
        network = compressed_dln(cpu_problem.surrogate(), case.r_hat, case.depth, 1e-2, 1.0)
    return network.to(device, dtype), cpu_problem.to(device, dtype)


def bench_case(
    case: Case, problems: dict, device: torch.device, target_seconds: float, repeats: int, peak: float
) -> dict:
    """One engine GD iteration (its stepper, weights reset before every repeat) against its lower bound, the
    step's FLOPs at the ``peak`` GEMM rate (FLOP/s); for MS also a streaming read of the operator."""
    network, problem = build_case(case, problems, device)
    plan = plan_engine(network.weights, problem)
    variants = {"engine": engine_runner(network, problem, case.lr, 1)}
    if isinstance(problem, Sensing):  # is the operator-bound MS step at the memory bandwidth?

        def stream(n: int) -> None:
            for _ in range(n):
                problem.operator.sum()

        variants["stream"] = stream
    seconds = compare(variants, device, target_seconds, repeats)
    flops = step_flops(network.weights, problem, sampled=plan.path == "native-sampled")
    extra = {}
    if "stream" in seconds:
        operator_bytes = problem.operator.numel() * problem.operator.element_size()
        passes = 1 if plan.operator_pass == "native-one-pass" else 2  # the compiled pass reads A once, torch twice
        extra = {
            "operator_passes": passes,
            "operator_gbps": passes * operator_bytes / seconds["engine"] / 1e9,
            "stream_gbps": operator_bytes / seconds["stream"] / 1e9,
        }
    return {
        **dataclasses.asdict(case),
        "path": plan.path,
        "us_per_iteration": 1e6 * seconds["engine"],
        "gflops": flops / seconds["engine"] / 1e9,
        "bound_us": 1e6 * flops / peak,
        "ratio": seconds["engine"] * peak / flops,
        "gflop_per_iteration": flops / 1e9,
        **extra,
    }


def repeats_for(case: Case) -> tuple[float, int]:
    """(seconds per repeat, repeats): one step at d = 2000 float64 takes ~2 s on one CPU core."""
    if case.d >= 2000:
        return 0.0, 3
    if case.d >= 1000:
        return 0.3, 3
    return 0.1, 7


def format_kernels(rows: list[dict]) -> str:
    head = f"{'task':4} {'d':>5} {'m':>5} {'dtype':7} {'model':8} {'path':14} {'us/iter':>11} {'GFLOP/s':>8} "
    head += f"{'bound us':>11} {'ratio':>6}"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r['task']:4} {r['d']:5d} {r['m'] or '':>5} {r['dtype']:7} {r['model']:8} {r['path']:14} "
            f"{r['us_per_iteration']:11.1f} {r['gflops']:8.2f} {r['bound_us']:11.1f} {r['ratio']:6.2f}"
        )
    return "\n".join(lines)


def speedups(rows: list[dict]) -> list[str]:
    """Original / C-DLN time per iteration for each (task, d, dtype)."""
    by_key = {(r["task"], r["d"], r["dtype"], r["model"]): r["us_per_iteration"] for r in rows}
    lines = []
    for (task, d, dtype, model), us in by_key.items():
        if model == "original" and (task, d, dtype, "cdln") in by_key:
            ratio = us / by_key[(task, d, dtype, "cdln")]
            lines.append(f"{task} d={d} {dtype}: original/C-DLN per iteration = {ratio:.1f}x")
    return lines


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


def engine_runner(
    network: LinearNetwork, problem: Problem, lr: float, n_inner: int, path: str | None = None
) -> Callable[[int], None]:
    """``f(n)``: reset a copy of ``network``'s weights, then n calls of the engine's stepper (``n_inner`` steps
    each) on ``path`` (an engine override; default: the engine's pick)."""
    initial = [w.clone() for w in network.weights]
    weights = [w.clone() for w in initial]
    neg_steps = [(-lr * s).view(-1, 1, 1) for s in network.lr_scales]
    stepper = plan_engine(weights, problem, path).stepper(problem, weights)

    def run(n: int) -> None:
        for w, w0 in zip(weights, initial, strict=True):
            w.copy_(w0)  # O(d^2): negligible next to n_inner steps; every repeat takes the same path
        for _ in range(n):
            stepper.run(weights, neg_steps, n_inner)

    return run
