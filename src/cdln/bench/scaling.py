"""The scaling experiment (figure ``fig_scaling``): seconds per iteration and to tol against d, for the
original DLN and the C-DLN, beside a lower bound on the step's time.

Seconds per iteration are those of whole training runs: :func:`cdln.engine.train`, the call every run of the
pipeline makes, with checkpoints, timed as it times itself (:func:`iteration_seconds`). The bound is the
step's matrix-product FLOPs (:func:`cdln.bench.kernels.step_flops`, for the path the engine takes) at the
machine's peak GEMM rate measured in the same call: no step can run faster (elementwise work, memory
traffic and overheads come on top).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence

import torch

from cdln.bench.kernels import step_flops
from cdln.bench.runs import run_config
from cdln.bench.timing import gemm_rate
from cdln.config import RunConfig
from cdln.data.synthetic import make_problem
from cdln.devices import resolve_device
from cdln.engine import TrainSettings, plan_engine, train
from cdln.networks import LinearNetwork, compressed_dln, original_dln
from cdln.problems import Problem
from cdln.spec import ProblemSpec


def iteration_seconds(
    network: LinearNetwork,
    problem: Problem,
    lr: float,
    n_inner: int,
    target_seconds: float = 1.0,
    repeats: int = 3,
) -> tuple[float, int, float]:
    """Median seconds per iteration of ``train`` runs of a copy of ``network``: the first checkpoint interval
    (``n`` steps and the checkpoint that ends them, as every interval of a whole run) over ``n``, from the run's
    own curve. ``n`` = ``n_inner``, fewer where a step is slow (at least 10, about ``target_seconds`` a run).
    Returns (seconds, n, noise): noise is the repeats' half-range over their median (NaN for one run)."""

    def interval(steps: int) -> float:
        curve = train(network.clone(), problem, TrainSettings(lr, steps, 1)).curves
        seconds = curve.groupby("iteration")["seconds"].max()  # one row per member and checkpoint
        return float(seconds.loc[steps] - seconds.loc[0]) / steps

    probe = interval(1)  # compiles; one step and a checkpoint
    steps = int(min(n_inner, max(10, round(target_seconds / max(probe, 1e-9)))))
    runs = repeats if steps * probe < 10 * target_seconds else 1
    times = [interval(steps) for _ in range(runs)]
    median = statistics.median(times)
    noise = (max(times) - min(times)) / (2 * median) if len(times) > 1 and median > 0 else math.nan
    return median, steps, noise


def whole_run_agreement(repeats: int = 5, echo: Callable[[str], None] = print) -> list[dict]:
    """How close :func:`iteration_seconds` comes to whole runs' seconds per iteration (a record's seconds over its
    iterations, 20 checkpoints of 100 steps), interleaved, on an MC problem (d = 60, r = 4, p = 0.3) for the
    original DLN and the C-DLN: the medians and their ratio."""
    problem = make_problem(ProblemSpec("mc", 60, 60, 4, 0, p=0.3))
    rows = []
    for model in ("original", "cdln"):
        network = (
            original_dln(60, 60, 3, 1e-2, [0])
            if model == "original"
            else compressed_dln(problem.surrogate(), 8, 3, 1e-2)
        )
        whole, measured = [], []
        for _ in range(repeats):
            whole.append(train(network.clone(), problem, TrainSettings(2.0, 100, 20)).seconds / 2000)
            measured.append(iteration_seconds(network, problem, 2.0, 100, target_seconds=0.05, repeats=1)[0])
        row = {"model": model, "whole_run_us": 1e6 * statistics.median(whole),
               "measured_us": 1e6 * statistics.median(measured)}  # fmt: skip
        row["ratio"] = row["measured_us"] / row["whole_run_us"]
        echo(f"{model:>8}: whole runs {row['whole_run_us']:.1f} us/iteration, the scaling measurement "
             f"{row['measured_us']:.1f} us ({row['ratio']:.3f}x), medians of {repeats} interleaved")  # fmt: skip
        rows.append(row)
    return rows


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
    """Seconds per iteration and its lower bound against d for the original DLN and the C-DLN, and seconds
    to tol (``tol_settings``: RunConfig fields, lr given for d = 100 and scaled by (d/100)^2 so that the
    per-entry step is the same at every d) for d in ``tol_sizes``.

    Returns tidy rows: d, model, quantity (seconds_per_iteration | bound_seconds | seconds_to_tol |
    iterations_to_tol), value, converged, and for the first two the engine path and steps timed.
    """
    device = resolve_device(device_spec)
    torch_dtype = torch.float64 if dtype == "float64" else torch.float32
    settings = dict(tol_settings or {})
    base_lr, n_inner = settings.pop("lr", 10.0), settings.get("n_inner", 100)
    peak = gemm_rate(2000 if device.type == "cpu" else 8192, 3, torch_dtype, device=device)
    echo(f"peak GEMM rate ({device}, {dtype}): {peak / 1e9:.1f} GFLOP/s")
    rows: list[dict] = []
    for d in sizes:
        lr = base_lr * (d / 100) ** 2
        spec = ProblemSpec(task, d, d, r, 0, p if task == "mc" else None, 20 * d if task == "ms" else None)
        problem = make_problem(spec).to(device, torch_dtype)
        for model in ("original", "cdln"):
            if model == "original":
                network = original_dln(d, d, 3, 1e-2, [0])
            else:
                network = compressed_dln(problem.surrogate().cpu().double(), r_hat, 3, 1e-2)
            network = network.to(device, torch_dtype)
            path = plan_engine(network.weights, problem).path
            seconds, steps, noise = iteration_seconds(network, problem, lr, n_inner)
            bound = step_flops(network.weights, problem, sampled=path == "native-sampled") / peak
            common = dict(d=d, model=model, path=path, steps=steps)
            rows.append(dict(common, quantity="seconds_per_iteration", value=seconds, seconds_noise=noise))
            rows.append(dict(common, quantity="bound_seconds", value=bound))
            echo(
                f"d={d:5d} {model:8} {1e6 * seconds:12.1f} us/iter ({path}, {steps} steps; bound {1e6 * bound:.1f} us)"
            )
        del problem
    for d in tol_sizes:
        for model in ("original", "cdln"):
            config = RunConfig(
                task=task, d=d, r=r, r_hat=r_hat, p=p if task == "mc" else None, model=model, dtype=dtype,
                device=str(device), m=20 * d if task == "ms" else None, lr=base_lr * (d / 100) ** 2, **settings,
            )  # fmt: skip
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
