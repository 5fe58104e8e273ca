"""Low-rank matrix recovery problems: factorization (MF), completion (MC) and sensing (MS).

Every problem exposes the gradient of its training loss with respect to the end-to-end matrix
``W`` (shape ``(B, d_out, d_in)``, B = batch of runs), which is all the GD engine needs: the
layer gradients follow in closed form (see :mod:`cdln.engine`). Normalisations follow the
replication spec, section 2:

- MF: loss = 1/2 mean over all entries of (W - M*)^2; recovery error = the same.
- MC: loss = 1/2 sum over observed (W - M*)^2 / n_observed; recovery = same on unobserved entries.
- MS: loss = 1/2 sum_i (<A_i, W> - y_i)^2 with A_i iid N(0, 1/m^2); recovery = ||W - M*||_F/||M*||_F.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor

from cdln.spec import ProblemSpec


class Problem(ABC):
    """A recovery problem: training loss (B,), its gradient (B, d_out, d_in) and recovery error (B,) of a batch of
    end-to-end matrices (B, d_out, d_in), in torch.

    That is all the engine needs of a problem. A new problem is a subclass defining :meth:`train_loss` and
    :meth:`recovery_error` (and :meth:`surrogate`, to build a C-DLN from it); its gradient is autograd's unless it
    gives a closed form, and it trains on the engine's torch step with no change to the engine
    (docs/own-problem.md). Its constructor takes ``(spec, **data, **settings)``: the names in :attr:`data` are its
    tensors (moved by :meth:`to`, saved in a problem file), those in :attr:`settings` plain values (saved too).
    ``target`` (d_out, d_in) is what the recovery error compares against."""

    spec: ProblemSpec
    target: Tensor
    data: tuple[str, ...] = ("target",)
    settings: tuple[str, ...] = ()

    def loss_grad(self, end_to_end: Tensor, out: Tensor | None = None) -> Tensor:
        """Gradient of the summed per-member training loss w.r.t. ``W``, (B, d_out, d_in): autograd's of
        :meth:`train_loss`; the built-in problems give closed forms (tested against this)."""
        with torch.enable_grad():
            leaf = end_to_end.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(self.train_loss(leaf).sum(), leaf)
        return grad if out is None else out.copy_(grad)

    def loss_and_grad(self, end_to_end: Tensor) -> tuple[Tensor, Tensor]:
        """(training loss (B,), its gradient (B, d_out, d_in)) at ``end_to_end``; a problem whose two share
        work (MS: the residual) computes them together."""
        return self.train_loss(end_to_end), self.loss_grad(end_to_end)

    @abstractmethod
    def train_loss(self, end_to_end: Tensor) -> Tensor:
        """Training loss per batch member, (B,)."""

    @abstractmethod
    def recovery_error(self, end_to_end: Tensor) -> Tensor:
        """Reported recovery error per batch member, (B,)."""

    def surrogate(self) -> Tensor:
        """Cheap estimate of the target whose top singular vectors seed the C-DLN, (d_out, d_in)."""
        raise NotImplementedError(f"{type(self).__name__} defines no surrogate(), which a C-DLN is built from")

    def tensors(self) -> dict[str, Tensor]:
        """The problem's data tensors (:attr:`data`; None ones left out), for saving and for :meth:`to`."""
        tensors = {name: getattr(self, name, None) for name in self.data}
        return {name: value for name, value in tensors.items() if value is not None}

    def parameters(self) -> dict[str, Any]:
        """The problem's plain settings (:attr:`settings`), for saving and for :meth:`to`."""
        return {name: getattr(self, name) for name in self.settings}

    def to(self, device: torch.device | str, dtype: torch.dtype) -> Problem:
        """Copy of the problem with every tensor on ``device`` in ``dtype`` (masks stay bool)."""
        moved = {
            k: v.to(device=device, dtype=dtype if v.is_floating_point() else v.dtype) for k, v in self.tensors().items()
        }
        return type(self)(self.spec, **moved, **self.parameters())

    @property
    def shape(self) -> tuple[int, int]:
        """(d_out, d_in) of the end-to-end matrix."""
        return tuple(self.target.shape[-2:])


class Factorization(Problem):
    """MF: observe every entry of the target (d_out, d_in)."""

    data = ("target",)

    def __init__(self, spec: ProblemSpec, target: Tensor) -> None:
        self.spec, self.target = spec, target
        self.observations = target  # what the loss fits (every entry, noiseless)
        self.loss_scale = 1.0 / target.numel()  # the loss gradient is (W - M*) * loss_scale

    def loss_grad(self, end_to_end: Tensor, out: Tensor | None = None) -> Tensor:
        return torch.sub(end_to_end, self.target, out=out).mul_(self.loss_scale)

    def train_loss(self, end_to_end: Tensor) -> Tensor:
        return 0.5 * (end_to_end - self.target).square().mean(dim=(-2, -1))

    recovery_error = train_loss

    def surrogate(self) -> Tensor:
        return self.target


class Completion(Problem):
    """MC: observe the entries of the target (d_out, d_in) where ``mask`` (d_out, d_in, bool) is true.

    :func:`cdln.data.synthetic.make_problem` draws ``floor(p * d_out * d_in)`` of them uniformly without replacement;
    :meth:`from_matrix` takes a user's own matrix and mask.

    ``heldout`` (optional bool mask, disjoint from ``mask``): report the recovery error on these
    entries only (real data, e.g. held-out MovieLens ratings) instead of on every unobserved entry.
    ``observations`` (optional, the target's shape): the values the loss fits on the observed entries
    (noisy data); by default the target itself.
    """

    data = ("target", "mask", "heldout", "observations")

    def __init__(
        self,
        spec: ProblemSpec,
        target: Tensor,
        mask: Tensor,
        heldout: Tensor | None = None,
        observations: Tensor | None = None,
    ) -> None:
        self.spec, self.target, self.mask = spec, target, mask.bool()
        if observations is not None and observations.shape != target.shape:
            raise ValueError(f"observations shape {tuple(observations.shape)} != target shape {tuple(target.shape)}")
        self.observations = target if observations is None else observations
        self.heldout = None if heldout is None else heldout.bool()
        observed = self.n_observed = int(self.mask.sum())
        unobserved = self.mask.numel() - observed
        if observed == 0:
            raise ValueError("matrix completion needs at least one observed entry")
        self.loss_weights = self.mask.to(target.dtype) / observed  # mask / n_observed: the gradient is (W - Y) * this
        if self.heldout is not None:
            if self.heldout.shape != self.mask.shape:
                shapes = f"{tuple(self.heldout.shape)} != mask shape {tuple(self.mask.shape)}"
                raise ValueError(f"heldout mask shape {shapes}")
            if not self.heldout.any() or (self.heldout & self.mask).any():
                raise ValueError("heldout mask must be non-empty and disjoint from the observed mask")
            held_out = self.heldout
        else:
            # With p = 1 nothing is held out; report the error on all entries instead of 0/0.
            held_out = ~self.mask if unobserved else torch.ones_like(self.mask)
        self.heldout_weights = held_out.to(target.dtype) / int(held_out.sum())

    @classmethod
    def from_matrix(cls, matrix: Tensor, mask: Tensor, rank: int, heldout: Tensor | None = None) -> Completion:
        """Completion of a user's own partly observed ``matrix`` (d_out, d_in): the loss fits its entries where
        ``mask`` (bool, same shape) is true; entries elsewhere are ignored (NaN allowed there). With ``heldout``
        (a bool mask disjoint from ``mask``, values in ``matrix``) the recovery error is the half mean squared
        error on those entries; without, there is no ground truth and it is the training error
        (:class:`CompletionWithoutTruth`). ``rank``: the rank you expect (sets the C-DLN's default width
        2 x rank). The completed matrix is the trained network's :meth:`~cdln.networks.LinearNetwork.end_to_end`."""
        matrix = torch.as_tensor(matrix, dtype=torch.float64)
        mask, known = torch.as_tensor(mask).bool(), torch.as_tensor(mask).bool().clone()
        if heldout is not None:
            heldout = torch.as_tensor(heldout).bool()
            if heldout.shape == mask.shape:
                known |= heldout
        if matrix.dim() != 2 or mask.shape != matrix.shape:
            raise ValueError(f"mask shape {tuple(mask.shape)} != matrix shape {tuple(matrix.shape)}")
        if not torch.isfinite(matrix[known]).all():
            raise ValueError("the matrix has non-finite values at observed or held-out entries")
        values = torch.where(known, matrix, torch.zeros_like(matrix))
        d_out, d_in = matrix.shape
        spec = ProblemSpec("mc", d_out, d_in, rank, p=float(mask.float().mean()) or 1.0)
        spec.validate()
        if heldout is None:
            return CompletionWithoutTruth(spec, values, mask)
        return cls(spec, values, mask, heldout=heldout)

    def loss_grad(self, end_to_end: Tensor, out: Tensor | None = None) -> Tensor:
        return torch.sub(end_to_end, self.observations, out=out).mul_(self.loss_weights)

    def observed_entries(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """The observed set in CSR form, row by row: ``row_ptr`` (d_out + 1,) and ``cols`` (n_observed,)
        int64, the observed values there and the loss weights there (``1 / n_observed``), in the
        target's dtype and device. The loss gradient is zero off this set (the sampled engine step)."""
        if getattr(self, "_csr", None) is None:
            rows, cols = self.mask.nonzero(as_tuple=True)  # row-major order
            counts = torch.bincount(rows, minlength=self.mask.shape[0])
            row_ptr = torch.zeros(self.mask.shape[0] + 1, dtype=torch.long, device=self.mask.device)
            torch.cumsum(counts, 0, out=row_ptr[1:])
            self._csr = (row_ptr, cols.contiguous(), self.observations[rows, cols], self.loss_weights[rows, cols])
        return self._csr

    def train_loss(self, end_to_end: Tensor) -> Tensor:
        return 0.5 * ((end_to_end - self.observations).square() * self.loss_weights).sum(dim=(-2, -1))

    def recovery_error(self, end_to_end: Tensor) -> Tensor:
        return 0.5 * ((end_to_end - self.target).square() * self.heldout_weights).sum(dim=(-2, -1))

    def surrogate(self) -> Tensor:
        p = float(self.mask.float().mean())
        return self.observations * self.mask / p

    def tensors(self) -> dict[str, Tensor]:
        tensors = {"target": self.target, "mask": self.mask}
        if self.heldout is not None:
            tensors["heldout"] = self.heldout
        if self.observations is not self.target:
            tensors["observations"] = self.observations
        return tensors


class CompletionWithoutTruth(Completion):
    """Completion of a matrix known only where observed (:meth:`Completion.from_matrix` without held-out
    entries): the recovery error (B,) is the training error, as nothing else can be measured."""

    def recovery_error(self, end_to_end: Tensor) -> Tensor:
        return self.train_loss(end_to_end)


class Sensing(Problem):
    """MS: ``y_i = <A_i, M*>`` for m Gaussian ``A_i``; the operator is stored as (m, d_out*d_in).

    The operator may be stored in float32 while the arithmetic runs in float64 (the default instance,
    :func:`cdln.data.synthetic.make_problem`: drawn in float64, rounded to float32 once, y computed in float64
    from the rounded operator, so the stored tensors define the problem exactly). :meth:`to` keeps such an
    operator in float32; every product widens its entries as it reads them, so every path solves the same
    instance."""

    data = ("target", "operator", "measurements")
    CHUNK_ENTRIES = 1 << 22  # a widened chunk of the operator holds at most this many entries

    def __init__(self, spec: ProblemSpec, target: Tensor, operator: Tensor, measurements: Tensor) -> None:
        self.spec, self.target, self.operator, self.measurements = spec, target, operator, measurements
        self._target_norm = torch.linalg.matrix_norm(target)

    def to(self, device: torch.device | str, dtype: torch.dtype) -> Sensing:
        """Copy on ``device``: target and y in ``dtype``, the operator in ``dtype`` or its own narrower one."""
        narrower = self.operator.element_size() < torch.empty((), dtype=dtype).element_size()
        operator = self.operator.to(device=device, dtype=self.operator.dtype if narrower else dtype)
        return type(self)(self.spec, self.target.to(device, dtype), operator, self.measurements.to(device, dtype))

    def _row_chunks(self, dtype: torch.dtype) -> Iterator[tuple[slice, Tensor]]:
        """(rows, A[rows] in ``dtype``): the whole operator at once when stored in ``dtype``, else widened a
        chunk at a time (no widened copy of the whole operator)."""
        m, n = self.operator.shape
        if self.operator.dtype == dtype:
            yield slice(0, m), self.operator
            return
        rows = max(1, self.CHUNK_ENTRIES // n)
        for start in range(0, m, rows):
            yield slice(start, start + rows), self.operator[start : start + rows].to(dtype)

    def _residual(self, end_to_end: Tensor) -> Tensor:
        """``A w - y``, (B, m): one pass over the operator (differentiable)."""
        flat = end_to_end.reshape(end_to_end.shape[0], -1)  # (B, d_out*d_in)
        return torch.cat([flat @ chunk.T for _, chunk in self._row_chunks(flat.dtype)], dim=1) - self.measurements

    def _adjoint(self, residual: Tensor) -> Tensor:
        """``A^T r`` for r (B, m): (B, d_out*d_in), one pass over the operator."""
        return sum(residual[:, rows] @ chunk for rows, chunk in self._row_chunks(residual.dtype))

    def loss_and_grad(self, end_to_end: Tensor) -> tuple[Tensor, Tensor]:
        """Both from one residual: two passes over the operator (the engine's plan reads it once on the CPU)."""
        residual = self._residual(end_to_end)
        return 0.5 * residual.square().sum(dim=-1), self._adjoint(residual).reshape(end_to_end.shape)

    def loss_grad(self, end_to_end: Tensor, out: Tensor | None = None) -> Tensor:
        """``A^T (A w - y)``: two passes over the operator (the engine's plan reads it once on the CPU)."""
        grad = self._adjoint(self._residual(end_to_end)).reshape(end_to_end.shape)
        return grad if out is None else out.copy_(grad)

    def train_loss(self, end_to_end: Tensor) -> Tensor:
        return 0.5 * self._residual(end_to_end).square().sum(dim=-1)

    def recovery_error(self, end_to_end: Tensor) -> Tensor:
        return torch.linalg.matrix_norm(end_to_end - self.target) / self._target_norm

    def surrogate(self) -> Tensor:
        m = self.operator.shape[0]
        return self._adjoint(self.measurements[None])[0].reshape(self.target.shape) / m


PROBLEM_CLASSES: dict[str, type[Problem]] = {"mf": Factorization, "mc": Completion, "ms": Sensing}


def problem_class(task: str) -> type[Problem]:
    """The problem class of ``task``: a built-in one (``mf``, ``mc``, ``ms``), or a user's ``module:Class`` (a
    subclass of :class:`Problem`, importable). Raises ``ValueError`` saying what is wrong with the name."""
    if task in PROBLEM_CLASSES:
        return PROBLEM_CLASSES[task]
    module_name, _, class_name = task.partition(":")
    if not module_name or not class_name:
        known = list(PROBLEM_CLASSES)
        raise ValueError(f"task must be one of {known} or a problem class as module:Class; got {task!r}")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as error:
        raise ValueError(f"task {task!r}: cannot import {class_name} from {module_name} ({error})") from None
    if not (isinstance(cls, type) and issubclass(cls, Problem)):
        raise ValueError(f"task {task!r} is not a subclass of cdln.problems.Problem")
    return cls
