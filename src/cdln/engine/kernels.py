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
  the rest: rows of width k held in scalars that LLVM's SLP vectoriser packs into vector registers, rows too
  wide for this CPU's registers in register blocks (:func:`sampled_kernel_name`; the plan chooses, the run
  record says which).
- MS (:class:`OperatorPass`): ``A^T (A w - y)`` and the loss in one pass over the operator (float32 or float64),
  in blocks of rows each network reads in turn.

Rounding: products and sums run in other orders than torch's (and the kernels may fuse multiply-adds and
reassociate sums, :data:`FAST`), so they agree with the torch step to rounding, not bitwise
(tests/test_kernels.py). A member's arithmetic never depends on its batch, nor on whether the process
compiled the kernel or loaded it from numba's cache.

Shapes are checked once, when a :class:`CompiledSteps` or :class:`OperatorPass` is built; the kernels index
without bounds checks, so they are only ever called through those two classes.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator, Sequence

import numba
import numpy as np
import torch
from numba import njit
from torch import Tensor

from cdln.networks import check_chain, product

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
    """The pass over the observed entries for rows of width ``width`` held in registers, as (setup, step) lines
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
    """The pass for rows wider than the registers hold (the original DLN's, k = d, without AVX-512), as
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


@functools.cache
def _vector_registers() -> tuple[int, int]:
    """(register block width, widest row held whole in registers) for this CPU: with 32 vector registers of
    512 bits (AVX-512) a block of 64 float64 lanes of the row and 64 of its accumulator fit, and a whole row
    of up to 104 with its accumulator (26 registers) beats the blocked pass up to about there; with 16
    registers (AVX2, NEON) 32 and 32. `cdln bench --sections sampled` times the sampled step against the
    dense one."""
    import llvmlite.binding as llvm

    avx512 = "+avx512f" in llvm.get_host_cpu_features().flatten().split(",")
    return (64, 104) if avx512 else (32, 32)


def sampled_kernel_name(k: int) -> str:
    """The sampled kernel for rows of width ``k`` on this CPU: ``registers-<k>`` (the row in registers) or
    ``blocks-<columns>`` (register blocks of that many columns, the last padded)."""
    block, register_max = _vector_registers()
    return f"registers-{k}" if k <= register_max else f"blocks-{block}"


def _sampled_kernel(name: str):
    """The sampled steps of kernel ``name`` (:func:`sampled_kernel_name`). Defined on first use, in this
    module's namespace and attributed to this file (so numba caches it), and compiled on first call (or loaded
    from the cache)."""
    kind, _, width = name.partition("-")
    if kind not in ("registers", "blocks") or not width.isdigit() or int(width) < 1:
        raise ValueError(f"sampled kernel must be registers-<k> or blocks-<columns>; got {name!r}")
    function = f"_sampled_steps_{width}" if kind == "registers" else f"_sampled_steps_wide_{width}"
    if function not in globals():
        observed_pass = _register_pass(int(width)) if kind == "registers" else _blocked_pass(int(width))
        source = _sampled_source(function, observed_pass)
        exec(compile(source, __file__, "exec"), globals())  # noqa: S102 - our own generated kernels
        globals()[function] = njit(cache=True, fastmath=FAST)(globals()[function])
    return globals()[function]


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
def _sensing_pass(a, y, w, g, losses):
    """g[b] = A^T (A w[b] - y) and losses[b] = |A w[b] - y|^2 / 2, in one pass over A (m, n).

    A may be float32 while w, y, g are float64: each entry is widened as it is read, so the arithmetic is
    in w's dtype and the bytes read are A's. Rows go in blocks of 8: a block's dot
    products with w[b] read it from memory, the update of g[b] from cache, then the next network reads it
    from cache. Every network runs through the same loops, one at a time, so its gradient and loss are
    bitwise the same whatever the batch and its place in it. The dot products are reassociated sums that
    LLVM spreads over vector lanes."""
    m, n = a.shape
    batch = w.shape[0]
    g[:] = 0.0
    losses[:] = 0.0
    zero = g[0, 0] * 0
    i = 0
    while i < m:
        if m - i >= 8:
            x0, x1, x2, x3 = a[i], a[i + 1], a[i + 2], a[i + 3]
            x4, x5, x6, x7 = a[i + 4], a[i + 5], a[i + 6], a[i + 7]
            for b in range(batch):
                v, gb = w[b], g[b]
                s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = zero
                for j in range(n):
                    vj = v[j]
                    s0 += x0[j] * vj
                    s1 += x1[j] * vj
                    s2 += x2[j] * vj
                    s3 += x3[j] * vj
                    s4 += x4[j] * vj
                    s5 += x5[j] * vj
                    s6 += x6[j] * vj
                    s7 += x7[j] * vj
                r0, r1, r2, r3 = s0 - y[i], s1 - y[i + 1], s2 - y[i + 2], s3 - y[i + 3]
                r4, r5, r6, r7 = s4 - y[i + 4], s5 - y[i + 5], s6 - y[i + 6], s7 - y[i + 7]
                losses[b] += r0 * r0 + r1 * r1 + r2 * r2 + r3 * r3 + r4 * r4 + r5 * r5 + r6 * r6 + r7 * r7
                for j in range(n):
                    gb[j] += (r0 * x0[j] + r1 * x1[j] + r2 * x2[j] + r3 * x3[j]
                              + r4 * x4[j] + r5 * x5[j] + r6 * x6[j] + r7 * x7[j])  # fmt: skip
            i += 8
        else:  # the last rows, one at a time
            x = a[i]
            for b in range(batch):
                v, gb = w[b], g[b]
                s = zero
                for j in range(n):
                    s += x[j] * v[j]
                r = s - y[i]
                losses[b] += r * r
                for j in range(n):
                    gb[j] += r * x[j]
            i += 1
    for b in range(batch):
        losses[b] *= 0.5


# ------------------------------------------------------------------------------------------------ API


def _array(t: Tensor) -> np.ndarray:
    return t.detach().numpy()


class OperatorPass:
    """The MS loss gradient ``out[b] = A^T (A w[b] - y)`` and loss ``|A w[b] - y|^2 / 2`` in one pass over the
    operator ``A`` (m, n), y (m,).

    ``A`` is stored in float32 or float64; y, w and the results in the arithmetic's dtype, at least A's (a
    float32 operator in a float64 run: half the bytes read, the same float64 sums). Checked once here: CPU,
    contiguous. A network's results do not depend on the batch (each one's sums run in one order)."""

    @staticmethod
    def suits(operator: Tensor, measurements: Tensor) -> bool:
        """Whether the pass runs on these: contiguous CPU float32/64, y at least A's precision."""
        return suits([operator]) and suits([measurements]) and measurements.element_size() >= operator.element_size()

    def __init__(self, operator: Tensor, measurements: Tensor) -> None:
        if not self.suits(operator, measurements):
            raise ValueError("the operator pass needs contiguous CPU float32/64 tensors, y at least A's precision; "
                             f"got A in {operator.dtype}, y in {measurements.dtype}")  # fmt: skip
        if operator.dim() != 2 or tuple(measurements.shape) != (operator.shape[0],):
            shapes = f"A {tuple(operator.shape)}, y {tuple(measurements.shape)}"
            raise ValueError(f"the operator pass needs A (m, n) and y (m,); got {shapes}")
        self.operator, self.measurements = _array(operator), _array(measurements)
        self.dtype, self.n = measurements.dtype, operator.shape[1]

    def __call__(self, flat: Tensor, out: Tensor, losses: Tensor | None = None) -> Tensor:
        """``flat`` and ``out``: (B, n) contiguous CPU tensors of the arithmetic's dtype; ``losses`` (B,), if
        given, receives each member's loss at ``flat``."""
        if not suits([flat, out]) or flat.dtype != self.dtype or flat.shape != out.shape or flat.shape[-1] != self.n:
            raise ValueError(f"the operator pass needs w and out of shape (B, {self.n}) in {self.dtype}")
        if losses is None:
            losses = torch.empty(flat.shape[0], dtype=self.dtype)
        elif not suits([losses]) or losses.dtype != self.dtype or tuple(losses.shape) != (flat.shape[0],):
            raise ValueError(f"the operator pass needs losses of shape ({flat.shape[0]},) in {self.dtype}")
        with _vectorising():
            _sensing_pass(self.operator, self.measurements, _array(flat), _array(out), _array(losses))
        return out


class CompiledSteps:
    """``n_steps`` GD steps of one network's batch on one MF/MC problem, in compiled code.

    ``observations`` (d_out, d_in) are the values the loss fits; the loss gradient is ``(E - Y) * weights``
    (``weights`` (d_out, d_in): MC's mask / n_observed) or ``(E - Y) * scale`` (``weights`` None: MF).
    ``csr`` (MC, depth >= 2: :meth:`~cdln.problems.Completion.observed_entries`) selects the sampled step, with
    kernel ``sampled_kernel`` (default: :func:`sampled_kernel_name` for the rows' width).
    Built for the per-member shapes of ``weights`` (checked here, once); :meth:`run` takes any batch size.
    """

    def __init__(
        self,
        weights: list[Tensor],
        observations: Tensor,
        loss_weights: Tensor | None,
        scale: float = 0.0,
        csr: tuple[Tensor, Tensor, Tensor, Tensor] | None = None,
        sampled_kernel: str | None = None,
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
            self.kernel_name = sampled_kernel or sampled_kernel_name(k)
            self.kernel = _sampled_kernel(self.kernel_name)
            self.panels = (np.zeros((d_in, k), np_dtype), np.zeros((d_in, k), np_dtype))

    def checkpoint(self, weights: list[Tensor]) -> tuple[Tensor, None]:
        """The end-to-end matrices (B, d_out, d_in); the training loss is the problem's to compute."""
        return product(weights), None

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
