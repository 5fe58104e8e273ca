"""Compiled CPU inner loop of the GD engine for MF and MC (``gd_kernels.c``), built at first use.

On one CPU core a small step (d = 100) is bound by per-call overhead and by the GEMM library, not by
arithmetic: each torch call costs 2-6 us from Python, and torch's MKL runs a 100 x 100 x 100 float64
product at ~31 GFLOP/s on this project's AMD machine where the OpenBLAS that numpy ships runs it at
~37. The C kernels run ``n_steps`` whole GD steps per call (one ctypes call per checkpoint), fuse the
loss gradient into one pass and the layer updates into the BLAS products (beta = 1), and call the
OpenBLAS bundled with numpy when there is one (the faster of the two here at these sizes), else the MKL
inside torch. For MC they also offer the
sampled step (only the observed entries of the end-to-end product; see the C source).

The source is compiled once per machine with the system C compiler (``$CC``, else ``cc``/``gcc``/
``clang``; -O3 -march=native) into ``$CDLN_CACHE_DIR`` (default ``~/.cache/cdln``), keyed by a hash of
source, flags, compiler and CPU, written atomically (parallel jobs may race safely). Without a
compiler or a BLAS the engine keeps its torch path: :func:`available` says which, :func:`why_unavailable`
says why. ``CDLN_NATIVE=0`` switches the native path off; ``CDLN_NATIVE_BLAS=openblas|mkl`` picks the BLAS;
``CDLN_NATIVE_FLAGS`` replaces ``-march=native`` (e.g. ``CDLN_NATIVE_FLAGS=""`` builds the portable kernels).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from cdln.io import atomic_write

SOURCE = Path(__file__).with_name("gd_kernels.c")
SUFFIX = {torch.float64: "d", torch.float32: "s"}
C_TYPE = {torch.float64: "double", torch.float32: "float"}
CTYPE = {torch.float64: ctypes.c_double, torch.float32: ctypes.c_float}
FLAGS = ["-O3", "-fopenmp-simd", "-fPIC", "-shared"]
NATIVE_FLAGS = ["-march=native"]
i64 = ctypes.c_int64
_errors: dict[str, str] = {}


def enabled() -> bool:
    """Whether the native path may be used (``CDLN_NATIVE`` is not ``0``)."""
    return os.environ.get("CDLN_NATIVE", "1") != "0"


def cache_dir() -> Path:
    """Where compiled kernels are kept: ``$CDLN_CACHE_DIR``, else ``$XDG_CACHE_HOME/cdln``, else ``~/.cache/cdln``."""
    if "CDLN_CACHE_DIR" in os.environ:
        return Path(os.environ["CDLN_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "cdln"


def _compiler() -> str | None:
    for name in filter(None, [os.environ.get("CC"), "cc", "gcc", "clang"]):
        if shutil.which(name):
            return name
    return None


def _cpu_signature() -> str:
    """What ``-march=native`` depends on (Linux: the CPU model and flags)."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            lines = [line for line in cpuinfo if line.startswith(("model name", "flags"))][:2]
        return "".join(lines)
    except OSError:
        return platform.processor() + platform.machine()


def _build(dtype: torch.dtype) -> Path:
    """Compile the kernels for ``dtype`` (or reuse the cached build); raises ``RuntimeError`` on failure."""
    compiler = _compiler()
    if compiler is None:
        raise RuntimeError("no C compiler found (set $CC, or install gcc or clang)")
    defines = [f"-DREAL={C_TYPE[dtype]}", f"-DSFX={SUFFIX[dtype]}", f"-DREAL_IS_FLOAT={int(dtype == torch.float32)}"]
    version = subprocess.run([compiler, "--version"], capture_output=True, text=True).stdout
    source = SOURCE.read_bytes()
    errors = []
    first = os.environ["CDLN_NATIVE_FLAGS"].split() if "CDLN_NATIVE_FLAGS" in os.environ else NATIVE_FLAGS
    for extra in dict.fromkeys([tuple(first), ()]):
        flags = [*FLAGS, *extra, *defines]
        key = hashlib.sha256(
            b"\0".join([source, " ".join(flags).encode(), version.encode(), _cpu_signature().encode()])
        )
        name = f"gd_kernels_{SUFFIX[dtype]}_{key.hexdigest()[:16]}.so"
        for folder in (cache_dir(), Path(tempfile.gettempdir()) / f"cdln-{getattr(os, 'getuid', lambda: 0)()}"):
            target = folder / name
            if target.is_file():
                return target

            def compile_to(tmp: Path, flags: list[str] = flags) -> None:
                result = subprocess.run([compiler, *flags, "-o", str(tmp), str(SOURCE)], capture_output=True, text=True)
                if result.returncode != 0:
                    raise _CompileError(f"{compiler} {' '.join(flags)}: {result.stderr.strip()[-500:]}")

            try:
                return atomic_write(target, compile_to)  # parallel jobs may race: one rename wins, both valid
            except _CompileError as error:
                errors.append(str(error))
                break  # same flags fail in any folder; try without -march=native
            except OSError as error:
                errors.append(f"{folder}: {error}")
    raise RuntimeError("could not compile the native GD kernels: " + "; ".join(errors))


class _CompileError(RuntimeError):
    """The compiler rejected the kernels with these flags."""


@dataclass(frozen=True)
class Blas:
    """A ``?gemm`` entry point: function address, calling convention (0: CBLAS ILP64, 1: CBLAS LP64,
    2: Fortran LP64) and an optional thread-count setter (OpenBLAS's; MKL follows torch's threads)."""

    name: str
    address: int
    kind: int
    set_threads: Callable[[int], int] | None = None


def _openblas(dtype: torch.dtype) -> Blas | None:
    """The OpenBLAS bundled with numpy's wheel (numpy.libs / .dylibs), if any."""
    try:
        import numpy
    except ImportError:
        return None
    base = Path(numpy.__file__).parent
    letter = SUFFIX[dtype]
    libs = sorted([*base.parent.glob("numpy.libs/*openblas*"), *(base / ".dylibs").glob("*openblas*")])
    for path in libs:
        try:
            lib = ctypes.CDLL(str(path))
        except OSError:
            continue
        for symbol, kind in (
            (f"scipy_cblas_{letter}gemm64_", 0),
            (f"cblas_{letter}gemm64_", 0),
            (f"cblas_{letter}gemm", 1),
        ):
            if hasattr(lib, symbol):
                address = ctypes.cast(getattr(lib, symbol), ctypes.c_void_p).value
                return Blas(f"openblas ({path.name}:{symbol})", address, kind, _thread_setter(lib))
    return None


def _thread_setter(lib: ctypes.CDLL) -> Callable[[int], int] | None:
    """``set(n) -> previous`` for OpenBLAS's thread count: the calling thread's own setting where the build
    has ``openblas_set_num_threads_local``, else the global one (restored after each kernel call)."""
    local = getattr(lib, "openblas_set_num_threads_local", None)
    if local is not None:
        local.argtypes, local.restype = [ctypes.c_int], ctypes.c_int
        return local
    for prefix, suffix in (("scipy_", "64_"), ("", "64_"), ("", "")):
        setter = getattr(lib, f"{prefix}openblas_set_num_threads{suffix}", None)
        getter = getattr(lib, f"{prefix}openblas_get_num_threads{suffix}", None)
        if setter is not None and getter is not None:
            setter.argtypes, getter.restype = [ctypes.c_int], ctypes.c_int

            def set_threads(n: int, setter=setter, getter=getter) -> int:
                previous = getter()
                setter(n)
                return previous

            return set_threads
    return None


def _mkl(dtype: torch.dtype) -> Blas | None:
    """The Fortran ``?gemm_`` that torch's CPU library exports (MKL in the PyPI wheels), if any."""
    path = Path(torch.__file__).parent / "lib"
    for name in ("libtorch_cpu.so", "libtorch_cpu.dylib"):
        try:
            lib = ctypes.CDLL(str(path / name))
        except OSError:
            continue
        symbol = f"{SUFFIX[dtype]}gemm_"
        if hasattr(lib, symbol):
            return Blas(f"torch ({name}:{symbol})", ctypes.cast(getattr(lib, symbol), ctypes.c_void_p).value, 2)
    return None


@functools.cache
def blas(dtype: torch.dtype, choice: str | None = None) -> Blas | None:
    """The BLAS the kernels call for ``dtype``: ``choice`` (or ``$CDLN_NATIVE_BLAS``) ``openblas`` or
    ``mkl``; default the first found of OpenBLAS (numpy's), MKL (torch's)."""
    choice = choice or os.environ.get("CDLN_NATIVE_BLAS", "auto")
    finders = {"openblas": [_openblas], "mkl": [_mkl], "auto": [_openblas, _mkl]}[choice]
    for finder in finders:
        found = finder(dtype)
        if found is not None:
            return found
    return None


@functools.cache
def _library(dtype: torch.dtype) -> ctypes.CDLL:
    lib = ctypes.CDLL(str(_build(dtype)))
    s = SUFFIX[dtype]
    real_p, ptr = ctypes.POINTER(CTYPE[dtype]), ctypes.c_void_p
    dims_p = ctypes.POINTER(i64)
    getattr(lib, f"cdln_{s}_work_size").argtypes = [ctypes.c_int, dims_p, ctypes.c_int, i64]
    getattr(lib, f"cdln_{s}_work_size").restype = i64
    dense = getattr(lib, f"cdln_{s}_dense_steps")
    dense.argtypes = [ctypes.c_int, dims_p, i64, ctypes.POINTER(ptr), real_p, ptr, ptr, CTYPE[dtype], ptr, i64, ptr]
    dense.argtypes += [ctypes.c_int]
    sampled = getattr(lib, f"cdln_{s}_sampled_steps")
    sampled.argtypes = [ctypes.c_int, dims_p, i64, ctypes.POINTER(ptr), real_p, ptr, ptr, ptr, ptr, ptr, i64, ptr]
    sampled.argtypes += [ctypes.c_int]
    sensing = getattr(lib, f"cdln_{s}_sensing_grad")
    sensing.argtypes = [ptr, ptr, ptr, ptr, ptr, i64, i64, i64]
    for fn in (dense, sampled, sensing):
        fn.restype = ctypes.c_int
    return lib


def sensing_grad(operator: Tensor, measurements: Tensor, flat: Tensor, out: Tensor) -> Tensor:
    """MS loss gradient ``out[b] = A^T (A flat[b] - y)`` in one pass over the operator ``A`` (m, n)
    (``gd_kernels.c``: ``sensing_grad``); ``flat`` and ``out`` are (B, n), all CPU, contiguous, one float
    dtype. A network's result does not depend on the batch (each one's sums run in one order)."""
    dtype = operator.dtype
    tensors = (operator, measurements, flat, out)
    if any(t.dtype != dtype or t.device.type != "cpu" or not t.is_contiguous() for t in tensors):
        raise ValueError("sensing_grad needs CPU tensors of one dtype, contiguous")
    (m, n), batch = operator.shape, flat.shape[0]
    scratch = torch.empty(4 * batch, dtype=dtype)
    fn = getattr(_library(dtype), f"cdln_{SUFFIX[dtype]}_sensing_grad")
    pointers = [t.data_ptr() for t in (operator, measurements, flat, out, scratch)]
    if fn(*pointers, m, n, batch) != 0:
        raise RuntimeError("native sensing_grad failed")
    return out


def why_unavailable(dtype: torch.dtype = torch.float64) -> str | None:
    """``None`` when the native kernels can run for ``dtype``, else the reason they cannot."""
    if dtype not in SUFFIX:
        return f"no native kernels for {dtype}"
    if not enabled():
        return "switched off by CDLN_NATIVE=0"
    if blas(dtype) is None:
        return "no BLAS found (neither numpy's OpenBLAS nor torch's MKL exports ?gemm)"
    key = str(dtype)
    if key not in _errors:
        try:
            _library(dtype)
            _errors[key] = ""
        except (RuntimeError, OSError) as error:
            _errors[key] = str(error)
    return _errors[key] or None


def available(dtype: torch.dtype = torch.float64) -> bool:
    """Whether :class:`NativeSteps` can run for ``dtype`` (compiles the kernels on first call)."""
    return why_unavailable(dtype) is None


def supports(weights: list[Tensor]) -> bool:
    """Whether the weights suit the kernels: CPU, float32/64, one dtype, contiguous, no autograd."""
    dtype = weights[0].dtype
    return all(
        w.device.type == "cpu" and w.dtype == dtype and w.is_contiguous() and not w.requires_grad for w in weights
    ) and available(dtype)


class NativeSteps:
    """GD steps of networks with fixed shapes on one MF/MC problem, by the compiled kernels.

    Dense step: G = (E - target) * obs (MC: ``obs`` = mask / n_observed) or (E - target) * scale (``obs``
    None, MF). ``csr`` (MC, depth >= 2: :meth:`~cdln.problems.Completion.observed_entries`) selects the
    sampled step instead. The problem's tensors must be on the CPU in the weights' dtype.
    ``run(weights, neg_steps, n)`` takes n steps in place.
    """

    def __init__(
        self,
        weights: list[Tensor],
        target: Tensor,
        obs: Tensor | None,
        scale: float,
        csr: tuple[Tensor, Tensor, Tensor, Tensor] | None = None,
    ) -> None:
        self.dtype = dtype = weights[0].dtype
        self.lib = _library(dtype)
        self.blas = blas(dtype)
        self.depth = len(weights)
        dims = [weights[0].shape[-1]] + [w.shape[-2] for w in weights]
        self.shapes = [tuple(w.shape) for w in weights]
        self.dims = (i64 * len(dims))(*dims)
        self.sampled = csr is not None
        s = SUFFIX[dtype]
        nnz = int(csr[0][-1]) if self.sampled else 0
        size = getattr(self.lib, f"cdln_{s}_work_size")(self.depth, self.dims, int(self.sampled), nnz)
        self.work = torch.empty(int(size), dtype=dtype)
        self.scale = scale
        self._keep = [t.contiguous() for t in ([target] if obs is None else [target, obs])]
        if self.sampled:
            row_ptr, cols, target_obs, obs_values = csr
            self._keep = [row_ptr.contiguous(), cols.contiguous(), target_obs.contiguous(), obs_values.contiguous()]
            self._fn = getattr(self.lib, f"cdln_{s}_sampled_steps")
        else:
            self._fn = getattr(self.lib, f"cdln_{s}_dense_steps")
        self.batch = weights[0].shape[0]

    def fits(self, weights: list[Tensor]) -> bool:
        return [tuple(w.shape) for w in weights] == self.shapes and weights[0].dtype == self.dtype

    def run(self, weights: list[Tensor], neg_steps: list[Tensor], n_steps: int) -> None:
        if not self.fits(weights) or not supports(weights):
            raise ValueError("NativeSteps.run: weights do not match the shapes/dtype this plan was built for")
        steps = torch.cat([s.reshape(-1) for s in neg_steps]).to(self.dtype).contiguous()
        pointers = (ctypes.c_void_p * self.depth)(*[w.data_ptr() for w in weights])
        steps_p = ctypes.cast(steps.data_ptr(), ctypes.POINTER(CTYPE[self.dtype]))
        data = [t.data_ptr() for t in self._keep]
        if self.sampled:
            args = [*data, self.work.data_ptr()]
        else:
            args = [data[0], data[1] if len(data) > 1 else None, self.scale, self.work.data_ptr()]
        previous = None
        if self.blas.set_threads is not None:
            previous = self.blas.set_threads(torch.get_num_threads())
        try:
            code = self._fn(
                self.depth, self.dims, self.batch, pointers, steps_p, *args, n_steps, self.blas.address, self.blas.kind
            )
        finally:
            if previous is not None and previous > 0:
                self.blas.set_threads(previous)
        if code != 0:
            raise RuntimeError(f"native GD kernel failed (code {code})")
