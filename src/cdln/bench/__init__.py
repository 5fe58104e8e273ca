"""``cdln bench``: the performance of the GD engine, printed (and with ``--out`` written as JSON).

Sections (``--sections``), each in its own module:

1. ``kernels`` (:mod:`cdln.bench.kernels`): for MF and MC (L = 3, d in 100, 400, 1000, 2000) and MS
   (d in 100, 200, m = 20 d), float64 and float32, the original DLN and the C-DLN (r = 10,
   r_hat = 20): the median microseconds of one engine GD iteration, its GFLOP/s, and the ratio to its
   lower bound, the step's FLOPs at the peak GEMM rate measured in the same run.
2. ``tol`` (:mod:`cdln.bench.runs`): seconds to tol, original DLN / C-DLN, on the config's ``mc`` setting.
3. ``batch`` (:mod:`cdln.bench.runs`): runs per second, one batched job vs the same runs one at a time.
4. ``jax``, ``sampled``, ``operator`` (:mod:`cdln.bench.paths`): the engine against the same step compiled
   by JAX on the ``mc`` setting (and its FLOP bound), per step and for whole ``train()`` runs
   (checkpoints included), the 100^3 GEMM rate of each
   library present (numpy's OpenBLAS, numba/scipy's, torch's MKL, XLA), the sampled MC step against the dense one
   (d = 2000, p = 0.05; a MovieLens-shaped problem), and the MS operator pass and step against the floor of
   the operator's bytes at the streaming bandwidth measured in the same run.
5. ``agreement`` (:mod:`cdln.bench.scaling`): the scaling figure's seconds per iteration against whole runs'.

``--scaling`` instead measures seconds per iteration and to tol against d (:mod:`cdln.bench.scaling`)
and writes the CSV of the pipeline's scaling figure. Settings that are the paper grid's (step sizes,
the ``mc`` and ``ablation_alpha`` settings) are read from the pipeline config (``--config``).
Timings are device-synchronised medians over interleaved repeats; the device, thread count, torch
version and date are part of the output.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from cdln.bench.kernels import bench_case, default_cases, format_kernels, repeats_for, speedups
from cdln.bench.paths import (
    WHOLE_RUN_OUTER,
    bench_crossover,
    bench_jax,
    bench_operator,
    bench_sampled,
    bench_small_gemm,
    bench_whole_runs,
)
from cdln.bench.runs import bench_batch, bench_tol, experiment_runs
from cdln.bench.scaling import whole_run_agreement
from cdln.bench.timing import gemm_rate
from cdln.devices import blas_info, device_name, numba_label, resolve_device
from cdln.outputs import write_json

SECTIONS = ("kernels", "tol", "batch", "jax", "sampled", "operator", "agreement")
DEFAULT_CONFIG = Path("config/config.yaml")


def environment(device: torch.device) -> dict:
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "device": device_name(device),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "compiled_backend": numba_label(),
        "compiled_blas": blas_info(),
        "cpu": _cpu_name(),
    }


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def run_benchmark(
    config: dict[str, Any],
    device_spec: str = "auto",
    sections: Sequence[str] = SECTIONS,
    sizes: Sequence[int] = (100, 400, 1000, 2000),
    ms_sizes: Sequence[int] = (100, 200),
    dtypes: Sequence[str] = ("float64", "float32"),
    out: Path | None = None,
    echo: Callable[[str], None] = print,
) -> dict:
    """Run the selected sections on the settings of the pipeline ``config``, printing as it goes;
    returns (and writes to ``out``) the results."""
    device = resolve_device(device_spec)
    results: dict[str, Any] = {"environment": environment(device)}
    env = results["environment"]
    echo(f"cdln bench  {env['date']}  device: {env['device']}  threads: {env['threads']}  torch {env['torch']}")
    blas = env["compiled_blas"]
    echo(f"CPU: {env['cpu']}; compiled kernels: {env['compiled_backend']}, BLAS {blas['name']} {blas['version']}")
    mc_runs = experiment_runs(config, "mc", str(device))
    if "kernels" in sections:
        peak = gemm_rate(2000, 3, device=device)
        echo("\n[kernels] median time of one GD iteration vs its bound (FLOPs at the peak GEMM rate), L=3")
        echo(f"C-DLN: r=10, r_hat=20; MS: m=20d; peak {peak / 1e9:.1f} GFLOP/s (float64); ratio = engine / bound")
        lrs = {task: config["experiments"][task]["lr"] for task in ("mf", "mc", "ms")}
        rows: list[dict] = []
        problems: dict = {}
        for case in default_cases(lrs, sizes, ms_sizes, dtypes):
            target_seconds, repeats = repeats_for(case)
            rows.append(bench_case(case, problems, device, target_seconds, repeats, peak))
            echo(format_kernels(rows[-1:]).splitlines()[-1] if rows[:-1] else format_kernels(rows))
        problems.clear()
        results["kernels"] = rows
        for line in speedups(rows):
            echo(line)
        for r in rows:
            if "operator_gbps" in r:
                echo(
                    f"ms d={r['d']} m={r['m']} {r['dtype']} {r['model']}: a step's {r['operator_passes']} "
                    f"pass(es) over the operator move {r['operator_gbps']:.1f} GB/s; one streaming read runs at "
                    f"{r['stream_gbps']:.1f} GB/s"
                )
    if "tol" in sections:
        setting = mc_runs["cdln"]
        echo(
            f"\n[tol] seconds to tol on the config's mc setting (d={setting['d']} r={setting['r']} p={setting['p']} "
            f"L={setting['depth']} eta={setting['lr']} tol={setting['tol']}), {setting['dtype']}"
        )
        tol = bench_tol(device, mc_runs)
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
        rows = bench_batch(device, experiment_runs(config, "ablation_alpha", str(device)), mc_runs)
        for r in rows:
            echo(
                f"{r['what']}: {r['runs']} runs  one-at-a-time {r['sequential_seconds']:.2f} s "
                f"({r['sequential_runs_per_second']:.2f} runs/s)  batched {r['batched_seconds']:.2f} s "
                f"({r['batched_runs_per_second']:.2f} runs/s)  speedup {r['speedup']:.2f}x  "
                f"same stop iterations: {r['same_stop_iterations']}"
            )
        results["batch"] = rows
    if "jax" in sections:
        echo("\n[jax] per GD iteration, the engine against the same step as a jit-compiled lax.fori_loop, mc setting")
        results["jax"] = bench_jax(mc_runs, echo=echo)
        echo(f"whole train() runs on the mc setting ({WHOLE_RUN_OUTER} checkpoints), engine against JAX")
        results["jax"]["whole_runs"] = bench_whole_runs(mc_runs, echo=echo)
        echo("the small GEMM each library runs (a d = 100 step is bound by it)")
        results["jax"]["small_gemm"] = bench_small_gemm(echo=echo)
    if "sampled" in sections:
        echo("\n[sampled] the C-DLN's MC step on the observed entries only against its dense step")
        results["sampled"] = bench_sampled(echo=echo)
        echo("where the sampled step stops paying: native sampled/dense per iteration against the observed fraction")
        results["sampled"]["crossover"] = bench_crossover(echo=echo)
    if "agreement" in sections:
        echo("\n[agreement] the scaling figure's seconds per iteration against whole runs' (MC, d = 60)")
        results["agreement"] = whole_run_agreement(echo=echo)
    if "operator" in sections:
        echo("\n[operator] the MS operator pass (the ms section's first panel) against the floor of its bytes")
        results["operator"] = bench_operator(experiment_runs(config, "ms", str(device)), echo=echo)
    if out is not None:
        write_json(out, results)
    return results
