"""Whole-run benchmarks on the paper grid's settings (read from the pipeline config, never restated):
seconds to tol on the ``mc`` setting, and batched against one-at-a-time sweeps (``ablation_alpha``).
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from cdln.config import RunConfig
from cdln.devices import synchronize
from cdln.engine import TrainSettings, train
from cdln.pipeline.grid import Grid
from cdln.runner import build_network, load_run_problem

# What a run's problem file is drawn from: a benchmark draws the same problem in process instead.
PROBLEM_OPTIONS = ("d", "r", "p", "m", "data_seed")


def experiment_runs(config: Mapping[str, Any], experiment: str, device: str) -> dict[str, dict[str, Any]]:
    """``cdln train`` options of the first job (first panel, first seed) of ``experiment``, each drawing
    its problem in process (no problem file): run name -> options."""
    grid = Grid(config)
    job = grid.jobs(experiment)[0]
    runs = {}
    for run in job.runs:
        data = grid.run_data(run)
        drawn = {key: value for key, value in (data.options if data else {}).items() if key in PROBLEM_OPTIONS}
        options = {key: value for key, value in {**run.options, **drawn}.items() if value is not None}
        runs[run.name] = {**{key: value for key, value in options.items() if key != "problem"}, "device": device}
    return runs


def run_config(config: RunConfig, device: torch.device) -> tuple[float, list[dict]]:
    """Build and train one config in process (no record); returns (wall seconds incl. setup, members)."""
    start = time.perf_counter()
    config, cpu_problem = load_run_problem(config)
    network = build_network(config, cpu_problem).to(device, config.torch_dtype)
    problem = cpu_problem.to(device, config.torch_dtype)
    result = train(network, problem, TrainSettings(config.lr, config.n_inner, config.max_outer, config.tol))
    synchronize(device)
    wall = time.perf_counter() - start
    members = [
        {"stop_iteration": it, "stop_seconds": sec, "converged": conv}
        for it, sec, conv in zip(result.stop_iteration, result.stop_seconds, result.converged, strict=True)
    ]
    return wall, members


def bench_tol(device: torch.device, mc_runs: Mapping[str, Mapping[str, Any]]) -> dict:
    """Seconds to tol of the original DLN and the C-DLN on the ``mc`` setting."""
    out: dict[str, Any] = {"setting": dict(mc_runs["cdln"])}
    for model in ("original", "cdln"):
        _, (member,) = run_config(RunConfig.from_dict(dict(mc_runs[model])), device)
        out[model] = member
    out["ratio"] = out["original"]["stop_seconds"] / out["cdln"]["stop_seconds"]
    return out


def sweep_alphas(alpha_runs: Mapping[str, Mapping[str, Any]]) -> tuple[dict[str, Any], list[float]]:
    """The C-DLN options of an alpha sweep (alpha left out) and its alphas, batched or not."""
    cdln = [options for options in alpha_runs.values() if options["model"] == "cdln"]
    alphas: list[float] = []
    for options in cdln:
        value = options["alpha"]
        alphas += list(value) if isinstance(value, (list, tuple)) else [value]
    base = {key: value for key, value in cdln[0].items() if key != "alpha"}
    return base, alphas


def bench_batch(
    device: torch.device,
    alpha_runs: Mapping[str, Mapping[str, Any]],
    mc_runs: Mapping[str, Mapping[str, Any]],
    n_seeds: int = 5,
    seed_outer: int = 20,
) -> list[dict]:
    """Runs per second, batched vs one at a time (same process, setup included), for
    (a) the ``ablation_alpha`` sweep (C-DLN, every alpha, to tol) and
    (b) ``n_seeds`` init seeds of the original DLN on the ``mc`` setting (``seed_outer`` checkpoints)."""
    results = []
    base_options, alphas = sweep_alphas(alpha_runs)
    base = RunConfig.from_dict(base_options)
    singles = [dataclasses.replace(base, alpha=[a]) for a in alphas]
    label = f"ablation_alpha, C-DLN, {len(alphas)} alphas (MC d={base.d} r={base.r} p={base.p}, to tol {base.tol:g})"
    results.append(_batch_vs_single(label, dataclasses.replace(base, alpha=alphas), singles, device))
    base = dataclasses.replace(RunConfig.from_dict(dict(mc_runs["original"])), max_outer=seed_outer)
    seeds = list(range(n_seeds))
    singles = [dataclasses.replace(base, init_seed=[s]) for s in seeds]
    label = f"{n_seeds} seeds, original DLN (mc setting, {seed_outer * base.n_inner} iterations)"
    results.append(_batch_vs_single(label, dataclasses.replace(base, init_seed=seeds), singles, device))
    results.append(bench_batch_cli(device, base_options, alphas[::5]))
    return results


def bench_batch_cli(device: torch.device, options: Mapping[str, Any], alphas: Sequence[float]) -> dict:
    """Runs per second as separate processes: one ``cdln run-job`` process (the pipeline's job) per alpha vs one
    process training all ``alphas`` as a batch (interpreter start, problem, record included). Each process reads
    its run as a manifest, as pipeline jobs do."""
    env = dict(os.environ, OMP_NUM_THREADS=str(torch.get_num_threads()))
    run = {key: value for key, value in {**options, "device": str(device)}.items() if value is not None}

    def cli(alpha: float | list[float]) -> float:
        manifest = {"runs": [{"name": "cdln", "command": "train", "options": {**run, "alpha": alpha}}]}
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / "job.json").write_text(json.dumps(manifest))
            start = time.perf_counter()
            command = [sys.executable, "-m", "cdln", "run-job", "--manifest", str(Path(tmp) / "job.json"), "--quiet",
                       f"--threads={torch.get_num_threads()}", "--out", str(Path(tmp) / "job")]  # fmt: skip
            subprocess.run(command, check=True, env=env, capture_output=True)
            return time.perf_counter() - start

    sequential = sum(cli(float(a)) for a in alphas)
    batched = cli([float(a) for a in alphas])
    n = len(alphas)
    return {
        "what": f"ablation_alpha, C-DLN, {n} alphas as `cdln run-job` processes (pipeline jobs)",
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
