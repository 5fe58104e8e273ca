"""Timing primitives of the benchmark: device-synchronised, interleaved medians (wall clock and CPU
time), the rate of a large GEMM (for a step's lower bound), and single-core pinning with a check of
which threads did the work."""

from __future__ import annotations

import glob
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import numba
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


def gemm_rate(
    n: int = 2000,
    repeats: int = 3,
    dtype: torch.dtype = torch.float64,
    library: str = "torch",
    device: torch.device | str = "cpu",
) -> float:
    """FLOP/s of a large ``n x n x n`` GEMM into a preallocated output: the median of ``repeats`` timed,
    device-synchronised products after one warm-up, at the current thread count. ``library``: ``"torch"``
    (``torch.mm``: MKL in the PyPI wheels; any device) or ``"numpy"`` (``np.matmul``: numpy's OpenBLAS).
    A step's lower bound is its FLOPs (:func:`cdln.bench.kernels.step_flops`) over this rate."""
    device = torch.device(device)
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=generator, dtype=dtype).to(device)
    b = torch.randn(n, n, generator=generator, dtype=dtype).to(device)
    out = torch.empty(n, n, dtype=dtype, device=device)
    if library == "torch":

        def product() -> None:
            torch.mm(a, b, out=out)

    elif library == "numpy":
        a_np, b_np, out_np = a.numpy(), b.numpy(), out.numpy()

        def product() -> None:
            np.matmul(a_np, b_np, out=out_np)

    else:
        raise ValueError(f"library must be 'torch' or 'numpy'; got {library!r}")
    product()  # numpy's OpenBLAS follows OMP_NUM_THREADS / OPENBLAS_NUM_THREADS (cdln bench: 1)
    times = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        product()
        synchronize(device)
        times.append(time.perf_counter() - start)
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


@numba.njit(cache=True)
def _numba_gemm_loop(a, b, out, calls):
    """``calls`` products ``out = a @ b`` by ``np.dot`` in compiled code (scipy's BLAS, as the kernels')."""
    for _ in range(calls):
        np.dot(a, b, out)


def small_gemm_rates(n: int = 100, repeats: int = 9, calls: int = 200) -> dict[str, float]:
    """FLOP/s of an ``n x n x n`` float64 GEMM into a preallocated output through each library present, at
    the current thread count: ``numpy`` (``np.matmul``: numpy's OpenBLAS), ``numba`` (``np.dot`` in a
    compiled loop: scipy's BLAS, what the engine's compiled path calls), ``torch`` (``torch.mm``: MKL in the
    PyPI wheels) and ``xla`` (``jnp.dot`` inside a jitted ``lax.fori_loop``, when JAX is installed). Repeats
    interleaved, median; which is fastest at d = 100 depends on the CPU."""
    generator = np.random.default_rng(0)
    a, b = generator.standard_normal((n, n)), generator.standard_normal((n, n))
    out = np.empty((n, n))
    ta, tb, tout = torch.from_numpy(a), torch.from_numpy(b), torch.from_numpy(out)
    runners: dict[str, Callable[[], None]] = {}

    def numpy_run() -> None:
        for _ in range(calls):
            np.matmul(a, b, out=out)

    def torch_run() -> None:
        for _ in range(calls):
            torch.mm(ta, tb, out=tout)

    runners["numpy"], runners["torch"] = numpy_run, torch_run

    def numba_run() -> None:
        _numba_gemm_loop(a, b, out, calls)

    runners["numba"] = numba_run
    try:
        from cdln.reference import require_jax

        jax = require_jax()
        ja, jb = jax.numpy.asarray(a), jax.numpy.asarray(b)

        def body(_: Any, c: Any) -> Any:
            return jax.numpy.dot(ja, c * 1e-2)  # a dependent chain: no product can be skipped

        xla = jax.jit(lambda c: jax.lax.fori_loop(0, calls, body, c)).lower(jb).compile()

        def xla_run() -> None:
            xla(jb).block_until_ready()

        runners["xla"] = xla_run
    except ImportError:
        pass
    samples: dict[str, list[float]] = {name: [] for name in runners}
    for run in runners.values():
        run()  # warm-up (compilation)
    for _ in range(repeats):
        for name, run in runners.items():
            start = time.perf_counter()
            run()
            samples[name].append((time.perf_counter() - start) / calls)
    return {name: 2.0 * n**3 / statistics.median(values) for name, values in samples.items()}
