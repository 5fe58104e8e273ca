"""Timing primitives of the benchmark: device-synchronised, interleaved medians."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch

from cdln.devices import synchronize


def timed(fn: Callable[[int], None], n: int, device: torch.device) -> float:
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
        first = timed(fn, 1, device)  # warm-up (allocation, first-call dispatch, CUDA context)
        if target_seconds > first:  # a second, warm reading to size the repeats
            first = timed(fn, 1, device)
        counts[name] = max(1, int(target_seconds / max(first, 1e-9)))
    samples: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeats):
        for name, fn in variants.items():
            samples[name].append(timed(fn, counts[name], device))
    return {name: statistics.median(values) for name, values in samples.items()}
