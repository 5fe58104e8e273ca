"""Device and dtype selection, device-synchronised wall-clock timing, and the BLAS libraries that compute."""

from __future__ import annotations

import functools
import re
import time

import torch

DTYPES: dict[str, torch.dtype] = {"float64": torch.float64, "float32": torch.float32}


def resolve_device(spec: str = "auto") -> torch.device:
    """Turn ``auto|cpu|cuda|cuda:N`` into a ``torch.device``; ``auto`` picks CUDA when present."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if spec == "cuda" or spec.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise ValueError(f"--device {spec!r} asked for CUDA, but no CUDA device is available; use 'cpu' or 'auto'")
        device = torch.device(spec)
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(
                f"--device {spec!r}: only {torch.cuda.device_count()} CUDA device(s) present "
                f"(valid: cuda:0..cuda:{torch.cuda.device_count() - 1})"
            )
        return device
    raise ValueError(f"--device must be one of auto, cpu, cuda, cuda:N; got {spec!r}")


def resolve_dtype(name: str) -> torch.dtype:
    """Map ``float64|float32`` to a torch dtype."""
    try:
        return DTYPES[name]
    except KeyError:
        raise ValueError(f"--dtype must be one of {sorted(DTYPES)}; got {name!r}") from None


def device_name(device: torch.device) -> str:
    """Human-readable device description for run records."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({torch.get_num_threads()} threads)"


def synchronize(device: torch.device) -> None:
    """Wait for queued kernels so that a clock reading covers finished work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class SyncTimer:
    """Stopwatch that synchronises the device before each reading and can be paused.

    Paused intervals (e.g. analysis snapshots) are excluded from ``elapsed``.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._accumulated = 0.0
        self._started_at: float | None = None

    def start(self) -> None:
        synchronize(self.device)
        self._started_at = time.perf_counter()

    def pause(self) -> None:
        synchronize(self.device)
        if self._started_at is not None:
            self._accumulated += time.perf_counter() - self._started_at
            self._started_at = None

    @property
    def elapsed(self) -> float:
        synchronize(self.device)
        running = 0.0 if self._started_at is None else time.perf_counter() - self._started_at
        return self._accumulated + running


@functools.cache
def torch_blas() -> str:
    """``torch X (BLAS)``: torch's version and the BLAS it was built with, for run records."""
    match = re.search(r"BLAS_INFO=(\w+)", torch.__config__.show())
    return f"torch {torch.__version__} ({match.group(1) if match else 'unknown BLAS'})"


def numba_label() -> str:
    """``numba X``: the compiled kernels' backend."""
    import numba

    return f"numba {numba.__version__}"


@functools.cache
def blas_info() -> dict[str, str]:
    """The BLAS numba's ``np.dot`` calls (scipy's): name, version, configuration as ``scipy.show_config`` says."""
    import scipy

    blas = scipy.show_config(mode="dicts").get("Build Dependencies", {}).get("blas", {})
    keys = {"name": "name", "version": "version", "configuration": "openblas configuration"}
    return {"library": "scipy", "scipy": scipy.__version__} | {
        k: str(blas.get(v, "?")).strip() for k, v in keys.items()
    }


def blas_label() -> str:
    """``name version (via scipy X)``: the BLAS of the compiled kernels, for run records."""
    info = blas_info()
    return f"{info['name']} {info['version']} (via scipy {info.get('scipy', '?')})"
