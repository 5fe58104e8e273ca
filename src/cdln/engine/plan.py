"""The one decision: how the engine steps a network on a problem.

:func:`plan_engine` reads ``$CDLN_ENGINE`` once and picks the step path:

- ``torch`` (:mod:`cdln.engine.torch_step`): any device, any problem; the reference and the GPU path.
- ``native-dense`` / ``native-sampled`` (:mod:`cdln.engine.kernels`): the built-in MF and MC problems (and
  subclasses that keep their loss) on the CPU in float32/64; ``n_inner`` steps per call in compiled code.
  MC samples (forms only the observed entries of the end-to-end product) below the observed fraction
  :func:`sampled_max_density`, with the kernel for its rows' width and this CPU's vector registers
  (:func:`cdln.engine.kernels.sampled_kernel_name`, recorded).

and, for MS, how the loss gradient reads the operator: ``native-one-pass`` (CPU, compiled; the loss
from the same pass) or ``torch-two-pass``. ``$CDLN_ENGINE``: ``auto`` (default: the rules above),
``torch`` (torch everywhere, MS's pass included), ``numba`` (compiled wherever it applies; an error where nothing does),
``native-dense`` / ``native-sampled`` (that MF/MC step; an error where it cannot run). The choice depends
on the problem's type, shapes, density, dtype and device only, never on the batch size.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from cdln.devices import blas_label, numba_label, torch_blas
from cdln.engine import kernels
from cdln.engine.torch_step import LossAndGrad, LossGrad, TorchSteps
from cdln.networks import check_chain
from cdln.problems import Completion, Factorization, Problem, Sensing

ENGINES = ("auto", "torch", "numba", "native-dense", "native-sampled")
COMPILED = (Factorization, Completion)  # problems whose loss the compiled steps implement
PATHS = ("torch", "native-dense", "native-sampled")

# The sampled MC step costs ~c_s n_observed k and the dense one ~c_d d_out d_in k (k = the last layer's input
# width), so sampling pays below an observed fraction c_d / c_s. The pass over the observed entries is
# load-bound, the more so once a row of width k leaves the registers (k > 32) and once the P^T/U^T panels
# (2 d_in k numbers) leave a core's cache (CACHE_BYTES). `cdln bench --sections sampled` prints where
# sampled/dense crosses 1 on this machine; these thresholds sit below those crossings.
CACHE_BYTES = 1 << 20
SAMPLED_MAX_DENSITY = {"registers": 0.6, "cache": 0.35, "memory": 0.2}


def sampled_max_density(weights: list[Tensor]) -> float:
    """Observed fraction below which the sampled MC step is the cheaper one (see SAMPLED_MAX_DENSITY)."""
    k, d_in, itemsize = weights[-1].shape[-1], weights[0].shape[-1], weights[0].element_size()
    if k <= 32:
        return SAMPLED_MAX_DENSITY["registers"]
    return SAMPLED_MAX_DENSITY["cache" if 2 * d_in * k * itemsize <= CACHE_BYTES else "memory"]


def engine_override() -> str:
    """``$CDLN_ENGINE`` (default ``auto``), checked against :data:`ENGINES`."""
    choice = os.environ.get("CDLN_ENGINE", "").strip() or "auto"
    if choice not in ENGINES:
        raise ValueError(f"CDLN_ENGINE must be one of {list(ENGINES)}; got {choice!r}")
    return choice


@dataclass(frozen=True)
class EnginePlan:
    """How the engine steps one network: its step ``path`` (one of :data:`PATHS`), the ``sampled_kernel``
    of a sampled MC step (rows of width k in registers, ``registers-<k>``, or in register blocks,
    ``blocks-<columns>``), MS's ``operator_pass``, and the ``override`` it was chosen under. :meth:`stepper`
    builds what runs it."""

    path: str
    operator_pass: str | None = None
    sampled_kernel: str | None = None
    override: str = "auto"

    def label(self) -> str:
        """A record's ``engine_path``: the path, for MS ``+`` the operator pass."""
        return f"{self.path}+{self.operator_pass}" if self.operator_pass else self.path

    def record(self) -> dict[str, Any]:
        """What a run record stores of the plan: path, label, backend, BLAS, sampled kernel, operator pass,
        override."""
        if self.path != "torch":
            backend, blas = numba_label(), blas_label()
        elif self.operator_pass == "native-one-pass":
            backend = f"torch {torch.__version__} + {numba_label()} (operator pass)"
            blas = f"{torch_blas()}; operator pass: {blas_label()}"
        else:
            backend, blas = f"torch {torch.__version__}", torch_blas()
        return {
            "path": self.path, "label": self.label(), "backend": backend, "blas": blas,
            "sampled_kernel": self.sampled_kernel, "operator_pass": self.operator_pass, "override": self.override,
        }  # fmt: skip

    def stepper(self, problem: Problem, weights: list[Tensor]) -> Steps:
        """What runs the plan for a network of ``weights``' per-member shapes: ``run(work, neg_steps,
        n_steps)`` steps the live weights ``work`` (any batch size) in place; ``checkpoint(work)`` gives the
        end-to-end matrices (B, d_out, d_in) and, where a pass computes it anyway, the training loss (B,)."""
        if self.path == "torch":
            return TorchSteps(*_loss_functions(problem, self.operator_pass))
        if isinstance(problem, Completion):
            csr = problem.observed_entries() if self.path == "native-sampled" else None
            return kernels.CompiledSteps(
                weights, problem.observations, problem.loss_weights, 0.0, csr, self.sampled_kernel
            )
        assert isinstance(problem, Factorization)
        return kernels.CompiledSteps(weights, problem.observations, None, problem.loss_scale)


def plan_engine(weights: list[Tensor], problem: Problem, override: str | None = None) -> EnginePlan:
    """How to step the network whose layers are ``weights`` ((B, n_out, n_in) each) on ``problem``.

    See the module; ``override`` (one of :data:`ENGINES`) in place of ``$CDLN_ENGINE``, for benchmarks and tests."""
    override = engine_override() if override is None else override
    if override not in ENGINES:
        raise ValueError(f"engine override must be one of {list(ENGINES)}; got {override!r}")
    path = _path(weights, problem, override)
    sampled = kernels.sampled_kernel_name(weights[-1].shape[-1]) if path == "native-sampled" else None
    operator_pass = None
    if _keeps_loss(problem, (Sensing,)):
        one_pass = override != "torch" and kernels.OperatorPass.suits(problem.operator, problem.measurements)
        native = one_pass and problem.measurements.dtype == weights[0].dtype
        operator_pass = "native-one-pass" if native else "torch-two-pass"
        if override == "numba" and operator_pass != "native-one-pass":
            raise ValueError("CDLN_ENGINE=numba is not available here: the MS operator pass needs CPU float32/64 data")
    return EnginePlan(path, operator_pass, sampled, override)


def _path(weights: list[Tensor], problem: Problem, override: str) -> str:
    if override == "torch":
        return "torch"
    data = [problem.observations] if _keeps_loss(problem, COMPILED) else []
    compiled = bool(data) and kernels.suits([*weights, *data])
    if not compiled:
        if override in ("native-dense", "native-sampled") or (
            override == "numba" and not _keeps_loss(problem, (Sensing,))
        ):
            why = "needs an MF or MC problem with contiguous CPU float32/64 weights and data of one dtype"
            raise ValueError(f"CDLN_ENGINE={override} is not available here: it {why}")
        return "torch"
    check_chain(weights, *problem.shape)
    can_sample = isinstance(problem, Completion) and len(weights) >= 2
    if override in ("native-dense", "native-sampled"):
        if override == "native-sampled" and not can_sample:
            raise ValueError("CDLN_ENGINE=native-sampled needs an MC problem and depth >= 2")
        return override
    if can_sample and problem.n_observed < sampled_max_density(weights) * problem.mask.numel():
        return "native-sampled"
    return "native-dense"


def _keeps_loss(problem: Problem, kinds: tuple[type[Problem], ...]) -> bool:
    """Whether ``problem`` is one of ``kinds`` with that kind's own loss (a subclass may change anything else)."""
    return any(isinstance(problem, kind) and type(problem).loss_grad is kind.loss_grad for kind in kinds)


def _loss_functions(problem: Problem, operator_pass: str | None) -> tuple[LossGrad, LossAndGrad]:
    """The loss gradient a step takes and the (loss, gradient) a checkpoint takes: the problem's own, or for
    MS on the CPU both from the compiled one pass."""
    if operator_pass != "native-one-pass":
        return problem.loss_grad, problem.loss_and_grad
    assert isinstance(problem, Sensing)
    one_pass = kernels.OperatorPass(problem.operator, problem.measurements)

    def loss_and_grad(end_to_end: Tensor) -> tuple[Tensor, Tensor]:
        flat = end_to_end.reshape(end_to_end.shape[0], -1).contiguous()
        losses = torch.empty(flat.shape[0], dtype=flat.dtype)
        grad = one_pass(flat, torch.empty_like(flat), losses)
        return losses, grad.reshape(end_to_end.shape)

    return (lambda end_to_end: loss_and_grad(end_to_end)[1]), loss_and_grad


Steps = TorchSteps | kernels.CompiledSteps
