"""Timing primitives of the benchmark: device-synchronised, interleaved medians (wall clock and CPU
time), the rate of a large GEMM (the hardware reference), and single-core pinning with a check of
which threads did the work."""

from __future__ import annotations

import glob
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from cdln.devices import synchronize


def per_unit(fn: Callable[[int], None], n: int, device: torch.device | None = None) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) per unit of ``fn(n)``, device-synchronised."""
    if device is not None:
        synchronize(device)
    wall, cpu = time.perf_counter(), time.process_time()
    fn(n)
    if device is not None:
        synchronize(device)
    return (time.perf_counter() - wall) / n, (time.process_time() - cpu) / n


def interleaved(
    variants: dict[str, Callable[[int], None]],
    units: dict[str, int],
    repeats: int,
    target_seconds: float = 0.1,
    device: torch.device | None = None,
) -> tuple[dict[str, float], dict[str, list[float]], dict[str, float]]:
    """Median seconds per *iteration* of each variant; ``variants[name](n)`` runs n units of
    ``units[name]`` iterations each. Repeats are interleaved (A B C A B C ...) so that load on a shared
    machine hits every variant alike; each repeat takes about ``target_seconds`` (at least one unit),
    after one warm-up call (allocation, first-call dispatch, CUDA context, compilation).

    Returns (wall medians, wall samples, CPU-time medians). On a pinned single-thread run the CPU time
    excludes the time other processes held the core, so it is the steadier of the two.
    """
    counts = {}
    for name, fn in variants.items():
        first = per_unit(fn, 1, device)[0]  # warm-up
        if target_seconds > first:  # a second, warm reading to size the repeats
            first = per_unit(fn, 1, device)[0]
        counts[name] = max(1, int(target_seconds / max(first, 1e-9)))
    samples: dict[str, list[float]] = {name: [] for name in variants}
    cpu: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeats):
        for name, fn in variants.items():
            wall, used = per_unit(fn, counts[name], device)
            samples[name].append(wall / units[name])
            cpu[name].append(used / units[name])
    medians = {name: statistics.median(values) for name, values in samples.items()}
    return medians, samples, {name: statistics.median(values) for name, values in cpu.items()}


def compare(
    variants: dict[str, Callable[[int], None]], device: torch.device, target_seconds: float, repeats: int
) -> dict[str, float]:
    """Median wall seconds per call of each variant (:func:`interleaved` with one iteration per call)."""
    medians, _, _ = interleaved(variants, dict.fromkeys(variants, 1), repeats, target_seconds, device)
    return medians


def gemm_rate(n: int = 2000, repeats: int = 3, dtype: torch.dtype = torch.float64, library: str = "torch") -> float:
    """FLOP/s of a large ``n x n x n`` CPU GEMM into a preallocated output: the median of ``repeats`` timed
    products after one warm-up, at the current thread count. ``library``: ``"torch"`` (``torch.mm``: MKL in
    the PyPI wheels) or ``"numpy"`` (``np.matmul``: numpy's OpenBLAS, which the native engine path calls).
    The hardware reference of a step is its FLOPs (:func:`cdln.bench.kernels.step_flops`) over this rate."""
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=generator, dtype=dtype)
    b = torch.randn(n, n, generator=generator, dtype=dtype)
    out = torch.empty(n, n, dtype=dtype)
    if library == "torch":

        def product() -> None:
            torch.mm(a, b, out=out)

    elif library == "numpy":
        a_np, b_np, out_np = a.numpy(), b.numpy(), out.numpy()

        def product() -> None:
            np.matmul(a_np, b_np, out=out_np)

    else:
        raise ValueError(f"library must be 'torch' or 'numpy'; got {library!r}")
    set_threads = None
    if library == "numpy":  # hold numpy's OpenBLAS to torch's thread count, as the native kernels do
        from cdln.native import blas

        found = blas(dtype, "openblas")
        set_threads = found.set_threads if found is not None else None
    previous = set_threads(torch.get_num_threads()) if set_threads is not None else None
    try:
        product()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            product()
            times.append(time.perf_counter() - start)
    finally:
        if set_threads is not None and previous is not None and previous > 0:
            set_threads(previous)
    return 2.0 * n**3 / statistics.median(times)


def pin_to_one_core(cpu: int | None = None) -> int:
    """Restrict this process to one CPU (default: the lowest it may run on) and return it.

    Call it before JAX's first computation: XLA sizes its intra-op thread pool from the affinity
    mask, so this is what makes JAX single-threaded (``XLA_FLAGS`` alone leaves XLA's thunk runtime
    splitting dots over several threads in JAX 0.10). Torch is held to one thread separately
    (``torch.set_num_threads(1)``).
    """
    cpu = min(os.sched_getaffinity(0)) if cpu is None else cpu
    os.sched_setaffinity(0, {cpu})
    return cpu


def thread_cpu_ticks() -> dict[str, int]:
    """CPU time (clock ticks, user + system) of each thread of this process, keyed ``tid:name`` (Linux)."""
    ticks = {}
    for path in glob.glob("/proc/self/task/*/stat"):
        try:
            with open(path) as stat, open(path[: -len("stat")] + "comm") as comm:
                fields = stat.read().rsplit(")", 1)[1].split()
                ticks[f"{path.split('/')[4]}:{comm.read().strip()}"] = int(fields[11]) + int(fields[12])
        except OSError:  # a thread that ended while we read
            continue
    return ticks


def busy_threads(fn: Callable[[], Any], min_share: float = 0.05) -> dict[str, float]:
    """Run ``fn()`` and return each thread's share of the CPU time it used (threads above ``min_share``).

    One entry means the work ran on one thread. Needs a run of at least ~0.5 s (ticks are 10 ms).
    """
    before = thread_cpu_ticks()
    fn()
    after = thread_cpu_ticks()
    used = {name: after[name] - before.get(name, 0) for name in after}
    total = sum(used.values()) or 1
    return {name: ticks / total for name, ticks in used.items() if ticks / total >= min_share}
