"""Kernel benchmark: one engine GD iteration against its matmul roofline, per task, size, dtype and model.

The roofline is the median time of the matrix products alone that one iteration needs (the same
shapes, operand layouts and library calls as the engine), timed in the same run, interleaved.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from cdln.bench.timing import compare, gemm_rate
from cdln.devices import resolve_dtype
from cdln.engine import plan_engine
from cdln.networks import LinearNetwork, compressed_dln, original_dln
from cdln.problems import Completion, Problem, ProblemSpec, Sensing, make_problem


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


def matmul_plan(weights: list[Tensor], problem: Problem) -> list[tuple[Tensor, Tensor]]:
    """The operand pairs of every matrix product one engine iteration computes, in its order and
    layouts (see :func:`cdln.engine.layer_gradients`): L-1 prefix products, the problem's own
    products (MS: ``A w`` and ``A^T r``), and 2(L-1) backward products."""
    prefixes = [weights[0]]
    for weight in weights[1:]:
        prefixes.append(weight @ prefixes[-1])
    pairs = [(weights[layer], prefixes[layer - 1]) for layer in range(1, len(weights))]
    upstream = problem.loss_grad(prefixes[-1])
    if isinstance(problem, Sensing):
        flat = prefixes[-1].reshape(prefixes[-1].shape[0], -1)
        residual = flat @ problem.operator.T - problem.measurements
        pairs += [(flat, problem.operator.T), (residual, problem.operator)]
    for layer in range(len(weights) - 1, 0, -1):
        pairs.append((upstream, prefixes[layer - 1].mT))
        pairs.append((weights[layer].mT, upstream))
        upstream = weights[layer].mT @ upstream
    return pairs


def plan_flops(pairs: list[tuple[Tensor, Tensor]]) -> float:
    """Floating-point operations (2 per multiply-add) of the products in ``pairs``."""
    total = 0.0
    for a, b in pairs:
        batch = a.shape[0] if a.dim() == 3 else 1
        total += 2.0 * batch * a.shape[-2] * a.shape[-1] * b.shape[-1]
    return total


def roofline_fn(pairs: list[tuple[Tensor, Tensor]]) -> Callable[[int], None]:
    """``f(n)`` computes the products of ``pairs`` n times into preallocated outputs, as the engine does."""
    outs = [torch.empty(*a.shape[:-1], b.shape[-1], dtype=a.dtype, device=a.device) for a, b in pairs]

    def run(n: int) -> None:
        for _ in range(n):
            for (a, b), out in zip(pairs, outs, strict=True):
                torch.matmul(a, b, out=out)

    return run


def bench_case(case: Case, problems: dict, device: torch.device, target_seconds: float, repeats: int) -> dict:
    """Engine vs roofline for one case; weights are reset before every repeat's steps."""
    network, problem = build_case(case, problems, device)
    engine = engine_runner(network, problem, case.lr, 1)

    pairs = matmul_plan(network.weights, problem)
    variants = {"engine": engine, "roofline": roofline_fn(pairs)}
    if isinstance(problem, Sensing):  # is the operator-bound MS step at the memory bandwidth?

        def stream(n: int) -> None:
            for _ in range(n):
                problem.operator.sum()

        variants["stream"] = stream
    seconds = compare(variants, device, target_seconds, repeats)
    flops = plan_flops(pairs)
    extra = {}
    if "stream" in seconds:
        operator_bytes = problem.operator.numel() * problem.operator.element_size()
        native_pass = plan_engine([network.weights], problem).operator_pass == "native-one-pass"
        passes = 1 if native_pass else 2  # the native kernel reads A once, torch twice
        extra = {
            "operator_passes": passes,
            "operator_gbps": passes * operator_bytes / seconds["engine"] / 1e9,
            "stream_gbps": operator_bytes / seconds["stream"] / 1e9,
        }
    return {
        **dataclasses.asdict(case),
        "us_per_iteration": 1e6 * seconds["engine"],
        "gflops": flops / seconds["engine"] / 1e9,
        "roofline_us": 1e6 * seconds["roofline"],
        "roofline_gflops": flops / seconds["roofline"] / 1e9,
        "ratio": seconds["engine"] / seconds["roofline"],
        "products": len(pairs),
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
    head = f"{'task':4} {'d':>5} {'m':>5} {'dtype':7} {'model':8} {'us/iter':>11} {'GFLOP/s':>8} {'roof us':>11} "
    head += f"{'roof GF/s':>9} {'ratio':>6}"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r['task']:4} {r['d']:5d} {r['m'] or '':>5} {r['dtype']:7} {r['model']:8} {r['us_per_iteration']:11.1f} "
            f"{r['gflops']:8.2f} {r['roofline_us']:11.1f} {r['roofline_gflops']:9.2f} {r['ratio']:6.2f}"
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


def hardware_reference_seconds(weights: list[Tensor], problem: Problem, rate: float | None = None) -> float:
    """Seconds one dense GD step would take at the large-GEMM rate: ``step_flops / rate``."""
    return step_flops(weights, problem) / (gemm_rate() if rate is None else rate)


def engine_runner(
    network: LinearNetwork, problem: Problem, lr: float, n_inner: int, path: str | None = None
) -> Callable[[int], None]:
    """``f(n)``: reset a copy of ``network``'s weights, then n calls of the engine's stepper (``n_inner`` steps
    each) on ``path`` (an engine override; default: the engine's pick)."""
    initial = [w.clone() for w in network.weights]
    weights = [w.clone() for w in initial]
    neg_steps = [(-lr * s).view(-1, 1, 1) for s in network.lr_scales]
    stepper = plan_engine([weights], problem, path).stepper(problem, [weights])

    def run(n: int) -> None:
        for w, w0 in zip(weights, initial, strict=True):
            w.copy_(w0)  # O(d^2): negligible next to n_inner steps; every repeat takes the same path
        for _ in range(n):
            stepper.run([0], [weights], [neg_steps], n_inner)

    return run
