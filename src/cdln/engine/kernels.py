"""The compiled CPU steps of the GD engine (numba): MF/MC steps, dense and sampled, and the MS operator pass.

A small step (d = 100) is bound by per-call overhead in torch; these kernels run ``n_steps`` whole steps per
call as loops numba compiles once per machine into its cache (no system compiler), their products ``np.dot``
through scipy's BLAS. Layer l of batch member b is ``weights[l][b]`` (row-major); members are stepped one
after another with the same arithmetic whatever the batch (bitwise the same in a batch as alone).

A step: prefixes P_l = W_l ... W_0, the loss gradient G of the end-to-end matrix E = P_{L-1}, then for
l = L-1 .. 1: U_{l-1} = W_l^T U_l (U_{L-1} = G) and W_l += s_l U_l P_{l-1}^T, finally W_0 += s_0 U_0, where
s_l = -lr * scale_l of the member. Updating W_l in place is safe: later products use only W_{l-1} .. W_0.

- dense (:class:`CompiledSteps` without ``csr``): G = (E - Y) * weights (MC) or (E - Y) * scale (MF).
- sampled (MC, depth >= 2): G is zero off the observed set, so only the observed entries of E are formed
  and G's products are sparse-dense, all in one pass over the observed entries (CSR): O(nnz k) with
  k = the last layer's input width, instead of O(d_out d_in k). The pass is generated Python compiled like
  the rest: rows of width k <= :data:`REGISTER_MAX` held in scalars that LLVM's SLP vectoriser packs into
  vector registers, wider rows in register blocks of :data:`WIDE_BLOCK` columns.
- MS (:class:`OperatorPass`): ``A^T (A w - y)`` in one pass over the operator, networks in pairs.

Rounding: products and sums run in other orders than torch's (and the kernels may fuse multiply-adds and
reassociate sums, :data:`FAST`), so they agree with the torch step to rounding, not bitwise
(tests/test_kernels.py). A member's arithmetic never depends on its batch, nor on whether the process
compiled the kernel or loaded it from numba's cache.

Shapes are checked once, when a :class:`CompiledSteps` or :class:`OperatorPass` is built; the kernels index
without bounds checks, so they are only ever called through those two classes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from contextlib import nullcontext

import numba
import numpy as np
import torch
from numba import njit
from torch import Tensor

from cdln.networks import check_chain

DTYPES = {torch.float64: np.float64, torch.float32: np.float32}
# Fused multiply-adds and reassociated sums (vectorised reductions): only the rounding changes. Only the kernels
# called from Python get these flags, and they call no compiled function that has them: numba links a callee
# into its caller as a copy optimised again with the caller, and which copy runs depends on whether the process
# compiled the kernel or loaded it from the cache, so such a callee would make a run's last bits depend on that.
# The shared helpers below are strict IEEE code, which every copy computes the same
# (tests/test_kernels.py::test_kernels_compiled_and_loaded_from_the_cache_give_the_same_numbers).
FAST = {"contract", "reassoc", "nsz", "arcp"}


def suits(tensors: Sequence[Tensor]) -> bool:
    """Whether tensors suit the kernels: CPU, one float32/64 dtype, contiguous, no autograd."""
    dtype = tensors[0].dtype
    return dtype in DTYPES and all(
        t.device.type == "cpu" and t.dtype == dtype and t.is_contiguous() and not t.requires_grad for t in tensors
    )


# ---------------------------------------------------------------------------------------------- kernels


@njit(cache=True)
def _axpy_rows(w, s, u):  # w += s u (same shape, C-contiguous 2-D)
    rows, cols = w.shape
    for i in range(rows):
        for j in range(cols):
            w[i, j] += s * u[i, j]


@njit(cache=True)
def _backward(weights, prefixes, b, top, u, steps, batch, up0, up1, tmp):
    """The backward sweep from upstream ``u`` = U_top ((dims[top+1], d_in), C-contiguous): updates
    W_top .. W_0 of member b."""
    d_in = weights[0].shape[2]
    for layer in range(top, 0, -1):
        w = weights[layer][b]
        n_out, n_in = w.shape
        flat = up0 if layer % 2 == 0 else up1
        nxt = flat[: n_in * d_in].reshape((n_in, d_in))
        np.dot(w.T, u, nxt)  # W_l^T U_l with the old W_l
        prev = weights[0][b] if layer == 1 else prefixes[layer - 1]
        grad = tmp[: n_out * n_in].reshape((n_out, n_in))
        np.dot(u, prev.T, grad)  # U_l P_{l-1}^T
        _axpy_rows(w, steps[layer * batch + b], grad)
        u = nxt
    _axpy_rows(weights[0][b], steps[b], u)


@njit(cache=True)
def _forward(weights, prefixes, b, upto):
    for layer in range(1, upto + 1):
        prev = weights[0][b] if layer == 1 else prefixes[layer - 1]
        np.dot(weights[layer][b], prev, prefixes[layer])


@njit(cache=True, fastmath=FAST)
def _dense_steps(weights, prefixes, steps, target, obs, scale, has_obs, n_steps, up0, up1, tmp):
    depth = len(weights)
    batch = weights[0].shape[0]
    d_out, d_in = target.shape
    for b in range(batch):
        for _ in range(n_steps):
            _forward(weights, prefixes, b, depth - 1)
            if depth > 1:
                g = prefixes[depth - 1]  # G overwrites E
                e = g
            else:
                e = weights[0][b]
                g = tmp[d_out * d_in : 2 * d_out * d_in].reshape((d_out, d_in))
            if has_obs:
                for i in range(d_out):
                    for j in range(d_in):
                        g[i, j] = (e[i, j] - target[i, j]) * obs[i, j]
            else:
                for i in range(d_out):
                    for j in range(d_in):
                        g[i, j] = (e[i, j] - target[i, j]) * scale
            _backward(weights, prefixes, b, depth - 1, g, steps, batch, up0, up1, tmp)


def _register_pass(width: int) -> tuple[list[str], list[str]]:
    """The pass over the observed entries for rows of width ``width`` (<= REGISTER_MAX), as (setup, step) lines
    of the sampled kernel (:func:`_sampled_source`): row i of W_{L-1} (``top``, (d_out, k)) at a time,
    e = W[i] . P^T[j], g = (e - target) * obs, acc += g P^T[j], U^T[j] += g W[i] (old row), then
    W[i] += s acc; ``pt`` and ``ut`` (d_in, k) are P^T and U^T. Written out: the row and its accumulator
    are scalars (registers), and LLVM's SLP vectoriser packs the lanes into vector operations
    (:func:`_vectorising`; the dot product is one reassociated sum, which vectorises best)."""
    lanes = range(width)
    step = [
        "for i in range(top.shape[0]):",
        "    row = top[i]",
        *(f"    r{a} = row[{a}]\n    c{a} = zero" for a in lanes),
        "    for q in range(row_ptr[i], row_ptr[i + 1]):",
        "        p = pt[cols[q]]",
        "        u = ut[cols[q]]",
        "        e = " + " + ".join(f"r{a} * p[{a}]" for a in lanes),
        "        g = (e - target[q]) * obs[q]",
        *(f"        c{a} += g * p[{a}]" for a in lanes),
        *(f"        u[{a}] += g * r{a}" for a in lanes),
        *(f"    row[{a}] = r{a} + s_top * c{a}" for a in lanes),
    ]
    return [], step


def _blocked_pass(block: int) -> tuple[list[str], list[str]]:
    """The pass for rows wider than :data:`REGISTER_MAX` (the original DLN's, k = d, without AVX-512), as
    (setup, step) lines: ``pt`` copied into panels of ``block`` columns ((n_blocks, d_in, block), padding
    zero), blocks outermost, each sweeping all rows with that block of the row in registers, so one slice
    of the panels is hot at a time; first the dot products (into ``errs``), then, with g known, the
    accumulations, U^T updates and the row's step; the U^T panels copied back into ``ut``."""
    lanes = range(block)
    load = [f"        r{a} = row[off + {a}] if off + {a} < k else zero" for a in lanes]
    setup = [
        f"n_blocks = (k + {block} - 1) // {block}",
        f"ptb = np.empty((n_blocks, d_in, {block}), dtype=pt.dtype)",
        f"utb = np.empty((n_blocks, d_in, {block}), dtype=pt.dtype)",
        "errs = np.empty(cols.shape[0], dtype=pt.dtype)",
    ]
    step = [
        "for blk in range(n_blocks):",
        f"    off = blk * {block}",
        f"    valid = min({block}, k - off)",
        "    for j in range(d_in):",
        "        for a in range(valid):",
        "            ptb[blk, j, a] = pt[j, off + a]",
        f"        for a in range(valid, {block}):",
        "            ptb[blk, j, a] = zero",
        f"        for a in range({block}):",
        "            utb[blk, j, a] = zero",
        "for q in range(cols.shape[0]):",
        "    errs[q] = zero",
        "for blk in range(n_blocks):",
        f"    off = blk * {block}",
        "    pb = ptb[blk]",
        "    for i in range(top.shape[0]):",
        "        row = top[i]",
        *load,
        "        for q in range(row_ptr[i], row_ptr[i + 1]):",
        "            p = pb[cols[q]]",
        "            errs[q] += " + " + ".join(f"r{a} * p[{a}]" for a in lanes),
        "for q in range(cols.shape[0]):",
        "    errs[q] = (errs[q] - target[q]) * obs[q]",
        "for blk in range(n_blocks):",
        f"    off = blk * {block}",
        "    pb = ptb[blk]",
        "    ub = utb[blk]",
        "    for i in range(top.shape[0]):",
        "        row = top[i]",
        *load,
        *(f"        c{a} = zero" for a in lanes),
        "        for q in range(row_ptr[i], row_ptr[i + 1]):",
        "            p = pb[cols[q]]",
        "            u = ub[cols[q]]",
        "            g = errs[q]",
        *(f"            c{a} += g * p[{a}]" for a in lanes),
        *(f"            u[{a}] += g * r{a}" for a in lanes),
        *(f"        if off + {a} < k:\n            row[off + {a}] = r{a} + s_top * c{a}" for a in lanes),
        "for blk in range(n_blocks):",
        f"    off = blk * {block}",
        f"    valid = min({block}, k - off)",
        "    for j in range(d_in):",
        "        for a in range(valid):",
        "            ut[j, off + a] = utb[blk, j, a]",
    ]
    return setup, step


def _indent(lines: list[str], spaces: int) -> str:
    return "\n".join(" " * spaces + line.replace("\n", "\n" + " " * spaces) for line in lines)


def _sampled_source(name: str, observed_pass: tuple[list[str], list[str]]) -> str:
    """The sampled GD steps with ``observed_pass`` (its (setup, step) lines) written into them: one function
    per kernel, calling no other compiled function that reassociates or fuses (see :data:`FAST`).
    P^T is formed by one product (P_{L-2}^T = P_{L-3}^T W_{L-2}^T) and U = (U^T)^T is read in place."""
    setup, step = observed_pass
    return f"""
def {name}(weights, prefixes, steps, row_ptr, cols, target, obs, n_steps, up0, up1, tmp, pt, ut):
    depth = len(weights)
    batch = weights[0].shape[0]
    d_in, k = pt.shape
    zero = pt[0, 0] * 0
{_indent(setup, 4)}
    for b in range(batch):
        s_top = steps[(depth - 1) * batch + b]
        top = weights[depth - 1][b]
        for _ in range(n_steps):
            if depth == 2:
                w0 = weights[0][b]
                for j in range(d_in):
                    for a in range(k):
                        pt[j, a] = w0[a, j]
            else:
                _forward(weights, prefixes, b, depth - 3)
                below = weights[0][b] if depth == 3 else prefixes[depth - 3]
                np.dot(below.T, weights[depth - 2][b].T, pt)  # P_{{L-2}}^T
            for j in range(d_in):
                for a in range(k):
                    ut[j, a] = zero
{_indent(step, 12)}
            if depth == 2:
                w0 = weights[0][b]
                s0 = steps[b]
                for a in range(k):
                    for j in range(d_in):
                        w0[a, j] += s0 * ut[j, a]
            else:  # the backward sweep's first layer with U = ut^T, then the rest
                layer = depth - 2
                w = weights[layer][b]
                n_out, n_in = w.shape
                flat = up0 if layer % 2 == 0 else up1
                nxt = flat[: n_in * d_in].reshape((n_in, d_in))
                np.dot(w.T, ut.T, nxt)
                prev = weights[0][b] if layer == 1 else prefixes[layer - 1]
                grad = tmp[: n_out * n_in].reshape((n_out, n_in))
                np.dot(ut.T, prev.T, grad)
                _axpy_rows(w, steps[layer * batch + b], grad)
                _backward(weights, prefixes, b, layer - 1, nxt, steps, batch, up0, up1, tmp)
"""


def _wide_block() -> int:
    """Columns per register block of the wide-row pass: 64 where the CPU has 32 vector registers of 512 bits
    (AVX-512: 64 float64 lanes of the row and 64 of its accumulator fit), else 32 (AVX2, NEON)."""
    import llvmlite.binding as llvm

    return 64 if "+avx512f" in llvm.get_host_cpu_features().flatten().split(",") else 32


WIDE_BLOCK = _wide_block()
# Widest row held whole in registers: with 32 vector registers of 512 bits (AVX-512) a row of up to 104 float64
# and its accumulator take 26 of them, and the one-sweep register pass beats the blocked one up to about there;
# with 16 registers, 32. `cdln bench --sections sampled` times the sampled step against the dense one.
REGISTER_MAX = 104 if WIDE_BLOCK == 64 else 32


def _sampled_kernel(k: int):
    """The sampled steps for rows of width k: in registers up to :data:`REGISTER_MAX`, else in register blocks
    of :data:`WIDE_BLOCK` columns (the last padded). Defined on first use, in this module's namespace and
    attributed to this file (so numba caches it), and compiled on first call (or loaded from the cache)."""
    wide = k > REGISTER_MAX
    name = f"_sampled_steps_wide_{WIDE_BLOCK}" if wide else f"_sampled_steps_{k}"
    if name not in globals():
        source = _sampled_source(name, _blocked_pass(WIDE_BLOCK) if wide else _register_pass(k))
        exec(compile(source, __file__, "exec"), globals())  # noqa: S102 - our own generated kernels
        globals()[name] = njit(cache=True, fastmath=FAST)(globals()[name])
    return globals()[name]


@contextlib.contextmanager
def _vectorising() -> Iterator[None]:
    """Compile with LLVM's SLP vectoriser on (numba leaves it off by default since numba#8705; the
    register passes need it, and tests/test_kernels.py checks every kernel against the torch path). Only
    the kernels compiled inside this block are affected; cached builds are just loaded."""
    config = numba.core.config
    saved = config.SLP_VECTORIZE
    config.SLP_VECTORIZE = 1
    try:
        yield
    finally:
        config.SLP_VECTORIZE = saved


@njit(cache=True, fastmath=FAST)
def _sensing_grad(a, y, w, g):
    """g[b] = A^T (A w[b] - y), four rows of A at a time (read from memory once for the dot products, then
    from cache for the updates), networks two at a time; an odd last network goes with itself (its twin's
    gradient into scratch), so every network runs through the same loops and its gradient is bitwise the
    same whatever the batch and its place in it. The dot products are reassociated sums that LLVM's loop
    vectoriser spreads over vector lanes, so the pass runs at the speed of streaming A."""
    m, n = a.shape
    batch = w.shape[0]
    g[:] = 0.0
    scratch = np.zeros(n, dtype=g.dtype)
    n_main = n - n % 32
    i = 0
    while i < m:
        rows = min(4, m - i)
        for b in range(0, batch, 2):
            w0, w1 = w[b], w[b + 1] if b + 1 < batch else w[b]
            g0, g1 = g[b], g[b + 1] if b + 1 < batch else scratch
            if rows == 4:
                x0, x1, x2, x3 = a[i], a[i + 1], a[i + 2], a[i + 3]
                s00 = s01 = s10 = s11 = s20 = s21 = s30 = s31 = g[0, 0] * 0
                for j in range(n_main):
                    v0, v1 = w0[j], w1[j]
                    s00 += x0[j] * v0
                    s01 += x0[j] * v1
                    s10 += x1[j] * v0
                    s11 += x1[j] * v1
                    s20 += x2[j] * v0
                    s21 += x2[j] * v1
                    s30 += x3[j] * v0
                    s31 += x3[j] * v1
                for j in range(n_main, n):  # the same sums, written again: a loop of its own for the remainder
                    v0, v1 = w0[j], w1[j]  # keeps both slots of a pair bitwise alike (one fused loop did not)
                    s00 += x0[j] * v0
                    s01 += x0[j] * v1
                    s10 += x1[j] * v0
                    s11 += x1[j] * v1
                    s20 += x2[j] * v0
                    s21 += x2[j] * v1
                    s30 += x3[j] * v0
                    s31 += x3[j] * v1
                r00, r10, r20, r30 = s00 - y[i], s10 - y[i + 1], s20 - y[i + 2], s30 - y[i + 3]
                r01, r11, r21, r31 = s01 - y[i], s11 - y[i + 1], s21 - y[i + 2], s31 - y[i + 3]
                for j in range(n):
                    g0[j] += r00 * x0[j] + r10 * x1[j] + r20 * x2[j] + r30 * x3[j]
                    g1[j] += r01 * x0[j] + r11 * x1[j] + r21 * x2[j] + r31 * x3[j]
            else:  # the last rows, one at a time
                for q in range(i, i + rows):
                    x = a[q]
                    s0 = s1 = g[0, 0] * 0
                    for j in range(n):
                        s0 += x[j] * w0[j]
                        s1 += x[j] * w1[j]
                    r0, r1 = s0 - y[q], s1 - y[q]
                    for j in range(n):
                        g0[j] += r0 * x[j]
                        g1[j] += r1 * x[j]
        i += rows


# ------------------------------------------------------------------------------------------------ API


def _array(t: Tensor) -> np.ndarray:
    return t.detach().numpy()


class OperatorPass:
    """The MS loss gradient ``out[b] = A^T (A w[b] - y)`` in one pass over the operator ``A`` (m, n), y (m,).

    Checked once here: CPU, contiguous, one float dtype. A network's result does not depend on the batch
    (each one's sums run in one order)."""

    def __init__(self, operator: Tensor, measurements: Tensor) -> None:
        if not suits([operator, measurements]):
            raise ValueError("the operator pass needs contiguous CPU float32/64 tensors of one dtype")
        if operator.dim() != 2 or tuple(measurements.shape) != (operator.shape[0],):
            shapes = f"A {tuple(operator.shape)}, y {tuple(measurements.shape)}"
            raise ValueError(f"the operator pass needs A (m, n) and y (m,); got {shapes}")
        self.operator, self.measurements = _array(operator), _array(measurements)
        self.dtype, self.n = operator.dtype, operator.shape[1]

    def __call__(self, flat: Tensor, out: Tensor) -> Tensor:
        """``flat`` and ``out``: (B, n) contiguous CPU tensors of the operator's dtype."""
        if not suits([flat, out]) or flat.dtype != self.dtype or flat.shape != out.shape or flat.shape[-1] != self.n:
            raise ValueError(f"the operator pass needs w and out of shape (B, {self.n}) in {self.dtype}")
        with _vectorising():
            _sensing_grad(self.operator, self.measurements, _array(flat), _array(out))
        return out


class CompiledSteps:
    """``n_steps`` GD steps of one network's batch on one MF/MC problem, in compiled code.

    ``observations`` (d_out, d_in) are the values the loss fits; the loss gradient is ``(E - Y) * weights``
    (``weights`` (d_out, d_in): MC's mask / n_observed) or ``(E - Y) * scale`` (``weights`` None: MF).
    ``csr`` (MC, depth >= 2: :meth:`~cdln.problems.Completion.observed_entries`) selects the sampled step.
    Built for the per-member shapes of ``weights`` (checked here, once); :meth:`run` takes any batch size.
    """

    def __init__(
        self,
        weights: list[Tensor],
        observations: Tensor,
        loss_weights: Tensor | None,
        scale: float = 0.0,
        csr: tuple[Tensor, Tensor, Tensor, Tensor] | None = None,
    ) -> None:
        self.dtype = dtype = weights[0].dtype
        if not suits(weights) or not suits([observations]) or observations.dtype != dtype:
            raise ValueError("the compiled steps need contiguous CPU float32/64 weights and data of one dtype")
        d_out, d_in = observations.shape
        check_chain(weights, d_out, d_in)
        if loss_weights is not None and tuple(loss_weights.shape) != (d_out, d_in):
            raise ValueError(
                f"loss weights of shape {tuple(loss_weights.shape)} do not fit the target's {(d_out, d_in)}"
            )
        self.depth = depth = len(weights)
        self.shapes = [tuple(w.shape[1:]) for w in weights]
        if csr is not None and depth < 2:
            raise ValueError("the sampled step needs depth >= 2")
        np_dtype = DTYPES[dtype]
        dims = [d_in] + [w.shape[-2] for w in weights]
        widest = max(dims[1:depth], default=1)
        self.up = (np.empty(widest * d_in, np_dtype), np.empty(widest * d_in, np_dtype))
        self.tmp = np.empty(max(max(dims[n + 1] * dims[n] for n in range(depth)), 2 * d_out * d_in), np_dtype)
        # prefixes[l] (l >= 1): W_l ... W_0, (dims[l+1], d_in); prefixes[0] is never read (W_0 itself)
        self.prefixes = tuple(np.empty((dims[n + 1] if n else 1, d_in), np_dtype) for n in range(depth))
        self.target = _array(observations.contiguous())
        self.obs = (
            _array(loss_weights.contiguous().to(dtype)) if loss_weights is not None else np.zeros((1, 1), np_dtype)
        )
        self.scale = float(scale)
        self.csr = None
        if csr is not None:
            row_ptr, cols, target_obs, obs_values = (_array(t.contiguous()) for t in csr)
            if row_ptr.shape != (d_out + 1,) or cols.shape != target_obs.shape or cols.shape != obs_values.shape:
                raise ValueError("observed entries (CSR) do not fit the target's shape")
            if len(cols) and (int(cols.min()) < 0 or int(cols.max()) >= d_in or int(row_ptr[-1]) != len(cols)):
                raise ValueError("observed entries (CSR) index outside the target")
            self.csr = (row_ptr.astype(np.int64), cols.astype(np.int64), target_obs, obs_values)
            k = dims[depth - 1]
            self.kernel = _sampled_kernel(k)
            self.panels = (np.zeros((d_in, k), np_dtype), np.zeros((d_in, k), np_dtype))

    def run(self, weights: list[Tensor], neg_steps: list[Tensor], n_steps: int) -> None:
        """``n_steps`` steps in place; ``weights`` of the built shapes, ``neg_steps[l]`` (B, 1, 1)."""
        steps = torch.cat([s.reshape(-1) for s in neg_steps]).to(self.dtype).contiguous()
        arrays = tuple(_array(w) for w in weights)
        with _vectorising():
            if self.csr is not None:
                self.kernel(
                    arrays, self.prefixes, _array(steps), *self.csr, int(n_steps), *self.up, self.tmp, *self.panels
                )
            else:
                has_obs = self.obs.shape == self.target.shape
                _dense_steps(
                    arrays, self.prefixes, _array(steps), self.target, self.obs, self.scale, has_obs, int(n_steps),
                    *self.up, self.tmp,
                )  # fmt: skip


class CompiledGroup:
    """Each network of a group stepped by its own :class:`CompiledSteps`."""

    def __init__(self, steps: list[CompiledSteps]) -> None:
        self.steps = steps

    def run(self, ids: list[int], works: list[list[Tensor]], neg_steps: list[list[Tensor]], n_steps: int, clock=None):
        for k, work, steps in zip(ids, works, neg_steps, strict=True):
            with clock.timed(k) if clock else nullcontext():
                self.steps[k].run(work, steps, n_steps)
