"""Benchmark of the GD engine: time per iteration against a matmul roofline, time to tol, batching.

``cdln bench`` prints (and with ``--out`` writes as JSON):

1. ``kernels``: for MF and MC (L = 3, d in 100, 400, 1000, 2000) and MS (d in 100, 200, m = 20 d),
   float64 and float32, the original DLN and the C-DLN (r = 10, r_hat = 20): the median wall-clock
   microseconds of one engine GD iteration, its GFLOP/s, and the ratio to the *roofline*, the
   median time of the matrix products alone that one iteration needs (the same shapes, operand
   layouts and library calls as the engine, timed in the same run, interleaved with it).
2. ``tol``: wall-clock seconds to tol, original DLN / C-DLN, on the spec's ``mc`` setting.
3. ``batch``: runs per second, one batched job vs the same runs one at a time (same process).

Timings are device-synchronised medians over repeats; the device, thread count, torch version
and date are part of the output. :func:`scaling` measures seconds per iteration (and optionally
seconds to tol) against d for the pipeline's scaling figure.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from cdln.config import RunConfig, build_network
from cdln.devices import device_name, resolve_device, resolve_dtype, synchronize
from cdln.engine import TrainSettings, Workspace, gd_steps, train
from cdln.networks import LinearNetwork, compressed_dln, original_dln
from cdln.problems import Problem, ProblemSpec, Sensing, make_problem

# The spec's `mc` setting (replication-spec.md, section 5).
MC_SETTING = dict(task="mc", d=100, r=10, p=0.3, depth=3, eps=1e-2, lr=10.0, n_inner=100, max_outer=500, tol=1e-12)
# The spec's ablation_alpha setting (38 alpha values) for the batching comparison.
ALPHA_SETTING = dict(task="mc", d=100, r=5, p=0.2, depth=3, eps=1e-2, lr=10.0, n_inner=100, max_outer=1000, tol=1e-10)
ALPHAS = [0.5 + 0.25 * i for i in range(38)]


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


def default_cases(sizes: Sequence[int] = (100, 400, 1000, 2000), ms_sizes: Sequence[int] = (100, 200)) -> list[Case]:
    """The issue's grid: MF/MC at ``sizes``, MS at ``ms_sizes`` (m = 20 d), both dtypes and models."""
    cases = []
    for dtype in ("float64", "float32"):
        for task, ds in (("mf", sizes), ("mc", sizes), ("ms", ms_sizes)):
            for d in ds:
                for model in ("original", "cdln"):
                    cases.append(Case(task, d, model, dtype, 20 * d if task == "ms" else None))
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


def _timed(fn: Callable[[int], None], n: int, device: torch.device) -> float:
    """Seconds per unit of ``fn(n)``, device-synchronised."""
    synchronize(device)
    start = time.perf_counter()
    fn(n)
    synchronize(device)
    return (time.perf_counter() - start) / n


def compare(
    variants: dict[str, Callable[[int], None]], device: torch.device, target_seconds: float, repeats: int
) -> dict[str, float]:
    """Median seconds per unit of each variant; repeats are interleaved so noise hits all alike.

    ``n`` units per repeat are chosen so a repeat takes about ``target_seconds`` (at least 1).
    """
    counts = {}
    for name, fn in variants.items():
        first = _timed(fn, 1, device)  # warm-up (allocation, first-call dispatch, CUDA context)
        if target_seconds > first:  # a second, warm reading to size the repeats
            first = _timed(fn, 1, device)
        counts[name] = max(1, int(target_seconds / max(first, 1e-9)))
    samples: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeats):
        for name, fn in variants.items():
            samples[name].append(_timed(fn, counts[name], device))
    return {name: statistics.median(values) for name, values in samples.items()}


def bench_case(case: Case, problems: dict, device: torch.device, target_seconds: float, repeats: int) -> dict:
    """Engine vs roofline for one case; weights are reset before every repeat's steps."""
    network, problem = build_case(case, problems, device)
    initial = [w.clone() for w in network.weights]
    weights = [w.clone() for w in initial]
    lr = {"mf": 100.0, "mc": 10.0, "ms": 20.0}[case.task]
    neg_steps = [(-lr * s).view(-1, 1, 1) for s in network.lr_scales]
    workspace = Workspace(weights)

    def engine(n: int) -> None:
        for w, w0 in zip(weights, initial, strict=True):
            w.copy_(w0)  # O(d^2): negligible next to an iteration, keeps every repeat on the same path
        gd_steps(weights, neg_steps, problem, n, workspace)

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
        extra = {
            "operator_gbps": 2 * operator_bytes / seconds["engine"] / 1e9,  # A w and A^T r: two passes
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


def _repeats_for(case: Case) -> tuple[float, int]:
    """(seconds per repeat, repeats): one step at d = 2000 float64 takes ~2 s on one CPU core."""
    if case.d >= 2000:
        return 0.0, 3
    if case.d >= 1000:
        return 0.3, 3
    return 0.1, 7


def run_config(config: RunConfig, device: torch.device) -> tuple[float, list[dict]]:
    """Build and train one config in process (no record); returns (wall seconds incl. setup, members)."""
    dtype = resolve_dtype(config.dtype)
    start = time.perf_counter()
    cpu_problem = make_problem(config.problem_spec())
    network = build_network(config, cpu_problem).to(device, dtype)
    problem = cpu_problem.to(device, dtype)
    result = train(network, problem, TrainSettings(config.lr, config.n_inner, config.max_outer, config.tol))
    synchronize(device)
    wall = time.perf_counter() - start
    members = [
        {"stop_iteration": it, "stop_seconds": sec, "converged": conv}
        for it, sec, conv in zip(result.stop_iteration, result.stop_seconds, result.converged, strict=True)
    ]
    return wall, members


def bench_tol(device: torch.device, dtype: str = "float64") -> dict:
    """Seconds to tol on the spec's ``mc`` setting for the original DLN and the C-DLN (r_hat = 20)."""
    out: dict[str, Any] = {"setting": dict(MC_SETTING), "dtype": dtype}
    for model in ("original", "cdln"):
        config = RunConfig(**MC_SETTING, model=model, r_hat=20, dtype=dtype, device=str(device))
        _, (member,) = run_config(config, device)
        out[model] = member
    out["ratio"] = out["original"]["stop_seconds"] / out["cdln"]["stop_seconds"]
    return out


def bench_batch(device: torch.device, n_alphas: int = 38, n_seeds: int = 5, seed_outer: int = 20) -> list[dict]:
    """Runs per second, batched vs one at a time (same process, setup included), for
    (a) the ablation_alpha sweep (C-DLN, ``n_alphas`` alpha values, to tol) and
    (b) ``n_seeds`` init seeds of the original DLN on the ``mc`` setting (``seed_outer`` checkpoints)."""
    results = []
    alphas = ALPHAS[:n_alphas]
    base = RunConfig(**ALPHA_SETTING, model="cdln", r_hat=10, device=str(device))
    batched_config = dataclasses.replace(base, alpha=list(alphas))
    singles = [dataclasses.replace(base, alpha=[a]) for a in alphas]
    label = f"ablation_alpha, C-DLN, {n_alphas} alphas (MC d=100 r=5 p=0.2, to tol 1e-10)"
    results.append(_batch_vs_single(label, batched_config, singles, device))
    base = RunConfig(**{**MC_SETTING, "max_outer": seed_outer}, model="original", device=str(device))
    seeds = list(range(n_seeds))
    singles = [dataclasses.replace(base, init_seed=[s]) for s in seeds]
    batched_config = dataclasses.replace(base, init_seed=seeds)
    label = f"{n_seeds} seeds, original DLN (mc setting, {seed_outer * MC_SETTING['n_inner']} iterations)"
    results.append(_batch_vs_single(label, batched_config, singles, device))
    results.append(bench_batch_cli(device, ALPHAS[::5]))
    return results


def bench_batch_cli(device: torch.device, alphas: Sequence[float]) -> dict:
    """Runs per second as the pipeline sees them: one ``cdln train`` process per alpha vs one
    process training all ``alphas`` as a batch (interpreter start, problem, record included)."""
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in ALPHA_SETTING.items()]
    common = [*flags, "--model=cdln", "--r-hat=10", f"--device={device}", "--quiet"]
    common.append(f"--threads={torch.get_num_threads()}")
    env = dict(os.environ, OMP_NUM_THREADS=str(torch.get_num_threads()))

    def cli(*args: str) -> float:
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            command = [sys.executable, "-m", "cdln", "train", *common, "--out", str(Path(tmp) / "run"), *args]
            subprocess.run(command, check=True, env=env, capture_output=True)
            return time.perf_counter() - start

    sequential = sum(cli("--alpha", str(a)) for a in alphas)
    batched = cli("--alpha", *map(str, alphas))
    n = len(alphas)
    return {
        "what": f"ablation_alpha, C-DLN, {n} alphas as `cdln train` processes (pipeline jobs)",
        "runs": n,
        "sequential_seconds": sequential,
        "batched_seconds": batched,
        "sequential_runs_per_second": n / sequential,
        "batched_runs_per_second": n / batched,
        "speedup": sequential / batched,
        "same_stop_iterations": None,
    }


def _batch_vs_single(label: str, batched: RunConfig, singles: list[RunConfig], device: torch.device) -> dict:
    one_at_a_time = 0.0
    single_members = []
    for config in singles:
        wall, members = run_config(config, device)
        one_at_a_time += wall
        single_members += members
    batched_wall, batched_members = run_config(batched, device)
    same = [a["stop_iteration"] == b["stop_iteration"] for a, b in zip(single_members, batched_members, strict=True)]
    n = len(singles)
    return {
        "what": label,
        "runs": n,
        "sequential_seconds": one_at_a_time,
        "batched_seconds": batched_wall,
        "sequential_runs_per_second": n / one_at_a_time,
        "batched_runs_per_second": n / batched_wall,
        "speedup": one_at_a_time / batched_wall,
        "same_stop_iterations": all(same),
    }


def environment(device: torch.device) -> dict:
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "device": device_name(device),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }


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


def run_benchmark(
    device_spec: str = "auto",
    sections: Sequence[str] = ("kernels", "tol", "batch"),
    cases: list[Case] | None = None,
    out: Path | None = None,
    echo: Callable[[str], None] = print,
) -> dict:
    """Run the selected sections, printing as it goes; returns (and writes to ``out``) the results."""
    device = resolve_device(device_spec)
    results: dict[str, Any] = {"environment": environment(device)}
    env = results["environment"]
    echo(f"cdln bench  {env['date']}  device: {env['device']}  threads: {env['threads']}  torch {env['torch']}")
    if "kernels" in sections:
        echo("\n[kernels] median time of one GD iteration vs the roofline (its matrix products alone), L=3")
        echo("C-DLN: r=10, r_hat=20; MS: m=20d; ratio = engine / roofline")
        rows: list[dict] = []
        problems: dict = {}
        for case in cases if cases is not None else default_cases():
            target_seconds, repeats = _repeats_for(case)
            rows.append(bench_case(case, problems, device, target_seconds, repeats))
            echo(format_kernels(rows[-1:]).splitlines()[-1] if rows[:-1] else format_kernels(rows))
        problems.clear()
        results["kernels"] = rows
        for line in speedups(rows):
            echo(line)
        for r in rows:
            if "operator_gbps" in r:
                echo(
                    f"ms d={r['d']} m={r['m']} {r['dtype']} {r['model']}: the operator's two passes move "
                    f"{r['operator_gbps']:.1f} GB/s; one streaming read of it runs at {r['stream_gbps']:.1f} GB/s"
                )
    if "tol" in sections:
        echo("\n[tol] seconds to tol on the spec's mc setting (d=100 r=10 p=0.3 L=3 eta=10 tol=1e-12), float64")
        tol = bench_tol(device)
        for model in ("original", "cdln"):
            m = tol[model]
            echo(
                f"{model:8} stop iteration {m['stop_iteration']:>6}  converged {m['converged']}  "
                f"{m['stop_seconds']:.2f} s"
            )
        echo(f"time-to-tol ratio original / C-DLN = {tol['ratio']:.2f}x")
        results["tol"] = tol
    if "batch" in sections:
        echo("\n[batch] runs per second, one batched job vs the same runs one at a time (in process, setup included)")
        rows = bench_batch(device)
        for r in rows:
            echo(
                f"{r['what']}: {r['runs']} runs  one-at-a-time {r['sequential_seconds']:.2f} s "
                f"({r['sequential_runs_per_second']:.2f} runs/s)  batched {r['batched_seconds']:.2f} s "
                f"({r['batched_runs_per_second']:.2f} runs/s)  speedup {r['speedup']:.2f}x  "
                f"same stop iterations: {r['same_stop_iterations']}"
            )
        results["batch"] = rows
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_text(json.dumps(results, indent=1, default=float))
        tmp.replace(out)
    return results


def scaling(
    sizes: Sequence[int],
    device_spec: str = "auto",
    dtype: str = "float64",
    task: str = "mc",
    r: int = 10,
    r_hat: int = 20,
    p: float = 0.3,
    tol_sizes: Sequence[int] = (),
    tol_settings: dict | None = None,
    echo: Callable[[str], None] = print,
) -> list[dict]:
    """Seconds per iteration (engine and roofline) against d for the original DLN and the C-DLN, and
    seconds to tol (``tol_settings``: RunConfig fields, lr given for d = 100 and scaled by (d/100)^2 so
    that the per-entry step is the same at every d) for d in ``tol_sizes``.

    Returns tidy rows: d, model, quantity (seconds_per_iteration | roofline_seconds |
    seconds_to_tol | iterations_to_tol), value, converged.
    """
    device = resolve_device(device_spec)
    rows: list[dict] = []
    problems: dict = {}
    for d in sizes:
        for model in ("original", "cdln"):
            case = Case(task, d, model, dtype, 20 * d if task == "ms" else None, r=r, r_hat=r_hat, p=p)
            target_seconds, repeats = _repeats_for(case)
            res = bench_case(case, problems, device, target_seconds, repeats)
            for quantity, key in (("seconds_per_iteration", "us_per_iteration"), ("roofline_seconds", "roofline_us")):
                rows.append(dict(d=d, model=model, quantity=quantity, value=res[key] / 1e6))
            echo(f"d={d:5d} {model:8} {res['us_per_iteration']:12.1f} us/iter (roofline {res['roofline_us']:.1f} us)")
    problems.clear()
    settings = dict(tol_settings or {})
    base_lr = settings.pop("lr", 10.0)
    for d in tol_sizes:
        for model in ("original", "cdln"):
            config = RunConfig(
                task=task,
                d=d,
                r=r,
                r_hat=r_hat,
                p=p if task == "mc" else None,
                model=model,
                dtype=dtype,
                device=str(device),
                m=20 * d if task == "ms" else None,
                lr=base_lr * (d / 100) ** 2,
                **settings,
            )
            config.validate()
            _, (member,) = run_config(config, device)
            for quantity, key in (("seconds_to_tol", "stop_seconds"), ("iterations_to_tol", "stop_iteration")):
                value = float(member[key])
                rows.append(dict(d=d, model=model, quantity=quantity, value=value, converged=member["converged"]))
            echo(
                f"d={d:5d} {model:8} to tol: {member['stop_seconds']:.2f} s, {member['stop_iteration']} iterations, "
                f"converged {member['converged']}"
            )
    for row in rows:
        row.setdefault("converged", True)
    return rows


def add_parser(commands: Any) -> None:
    """Register ``cdln bench`` on the CLI's subparsers."""
    bench = commands.add_parser("bench", help="benchmark the GD engine (see README, Performance)")
    bench.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    bench.add_argument("--threads", type=int, default=1, help="CPU threads for torch (default: 1)")
    sections = ["kernels", "tol", "batch"]
    bench.add_argument("--sections", nargs="+", default=sections, choices=sections, help="what to run (default: all)")
    bench.add_argument("--sizes", nargs="+", type=int, default=None, help="d for MF/MC (default 100 400 1000 2000)")
    bench.add_argument("--ms-sizes", nargs="+", type=int, default=None, help="d for MS, m = 20d (default 100 200)")
    bench.add_argument("--dtypes", nargs="+", default=["float64", "float32"], choices=["float64", "float32"])
    bench.add_argument("--out", type=Path, default=None, help="write the results here (JSON; CSV with --scaling)")
    bench.add_argument("--scaling", action="store_true", help="seconds per iteration / to tol against d (MC) as CSV")
    bench.add_argument("--tol-sizes", nargs="+", type=int, default=[], help="--scaling: d values timed to tol")
    bench.add_argument("--lr", type=float, default=10.0, help="--scaling: step size at d = 100, scaled by (d/100)^2")
    bench.add_argument("--n-inner", type=int, default=100, help="--scaling: GD steps between checkpoints")
    bench.add_argument("--max-outer", type=int, default=500, help="--scaling: maximum number of checkpoints")
    bench.add_argument("--tol", type=float, default=1e-12, help="--scaling: training-loss tolerance")
    bench.add_argument("--r", type=int, default=10, help="--scaling: target rank")
    bench.add_argument("--r-hat", type=int, default=20, help="--scaling: C-DLN width")
    bench.add_argument("--p", type=float, default=0.3, help="--scaling: MC observed fraction")


def main(args: Any) -> int:
    """``cdln bench``: print the benchmark (and write ``--out``); exit 2 on a bad option."""
    try:
        if args.threads < 1:
            raise ValueError(f"--threads must be an integer >= 1; got {args.threads}")
        resolve_device(args.device)
    except ValueError as error:
        print(f"cdln bench: error: {error}", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    if args.scaling:
        sizes = args.sizes or [100, 200, 400, 1000, 2000]
        tol_settings = dict(lr=args.lr, n_inner=args.n_inner, max_outer=args.max_outer, tol=args.tol)
        rows = scaling(
            sizes,
            args.device,
            args.dtypes[0],
            r=args.r,
            r_hat=args.r_hat,
            p=args.p,
            tol_sizes=args.tol_sizes,
            tol_settings=tol_settings,
        )
        if args.out is not None:
            import pandas as pd

            frame = pd.DataFrame(rows).assign(device=device_name(resolve_device(args.device)), dtype=args.dtypes[0])
            args.out.parent.mkdir(parents=True, exist_ok=True)
            tmp = args.out.with_name(args.out.name + ".tmp")
            frame.to_csv(tmp, index=False)
            tmp.replace(args.out)
        return 0
    cases = [
        c
        for c in default_cases(args.sizes or (100, 400, 1000, 2000), args.ms_sizes or (100, 200))
        if c.dtype in args.dtypes
    ]
    run_benchmark(args.device, args.sections, cases, args.out)
    return 0
