"""Synthetic low-rank recovery problems: a rank-r target from the SVD of a Gaussian matrix (the authors'
generator), and an MF, MC or MS instance around it, drawn from one seeded stream (:mod:`cdln.seeding`)."""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import Tensor

from cdln import seeding
from cdln.problems import Completion, Factorization, Problem, Sensing
from cdln.spec import ProblemSpec


def low_rank_target(
    d_out: int,
    d_in: int,
    rank: int,
    generator: torch.Generator,
    spectrum: str = "spread",
    condition: float | None = None,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Rank-``rank`` target from the SVD of a standard-normal ``d_out x d_in`` matrix.

    ``spectrum="spread"`` (the authors' generator) keeps the singular triplets at indices
    ``0, n/(2r), 2n/(2r), ...`` (n = min(d_out, d_in)); ``"top"`` keeps the top ``rank``. ``"flat"``
    and ``"geometric"`` keep the spread triplets' vectors and Frobenius norm but set the singular values
    all equal, or to ``condition^(-i/(r-1))`` (i = 0..r-1) times a common scale.
    Returns ``(M, U, S, V)`` with ``M = U diag(S) V^T`` of shape (d_out, d_in), U (d_out, r),
    S (r,) descending, V (d_in, r). Computed in float64 on the CPU.
    """
    gaussian = torch.randn(d_out, d_in, generator=generator, dtype=torch.float64)
    u, s, vh = torch.linalg.svd(gaussian, full_matrices=False)
    step = 1 if spectrum == "top" else max(1, min(d_out, d_in) // (2 * rank))
    idx = torch.arange(rank) * step
    u_r, s_r, v_r = u[:, idx], s[idx], vh[idx].T
    if spectrum in ("flat", "geometric"):
        ratio = 1.0 if spectrum == "flat" or rank == 1 else float(condition) ** (-1.0 / (rank - 1))
        shape = ratio ** torch.arange(rank, dtype=torch.float64)
        s_r = shape * (torch.linalg.vector_norm(s_r) / torch.linalg.vector_norm(shape))
    return (u_r * s_r) @ v_r.T, u_r, s_r, v_r


def make_problem(spec: ProblemSpec) -> Problem:
    """Draw a problem (target (d_out, d_in)) from ``spec`` on the CPU in float64, seeded by ``spec.data_seed``.

    MS: the Gaussian operator (m, d_out d_in) is drawn in float64 and scaled by 1/m, then stored in
    ``spec.operator_dtype`` (float32 unless float64: rounded once), and y = A vec(M*) is computed in float64
    from the stored operator, so the stored tensors define the instance exactly."""
    spec.validate()
    if spec.task == "ms":
        spec = dataclasses.replace(spec, operator_dtype=spec.operator_dtype or "float32")
    generator = seeding.generator(spec.data_seed, "data")
    target, *_ = low_rank_target(spec.d_out, spec.d_in, spec.rank, generator, spec.spectrum, spec.condition)
    n_entries = spec.d_out * spec.d_in
    if spec.task == "mf":
        return Factorization(spec, target)
    if spec.task == "mc":
        n_observed = max(1, math.floor(spec.p * n_entries))
        mask = torch.zeros(n_entries, dtype=torch.bool)
        mask[torch.randperm(n_entries, generator=generator)[:n_observed]] = True
        mask = mask.reshape(spec.d_out, spec.d_in)
        if not spec.noise:
            return Completion(spec, target, mask)
        # Drawn last from the same stream, so a noiseless problem of the same seed is unchanged.
        observed = target[mask]
        noise = _noise(observed, spec.noise, generator)
        observations = target.clone()
        observations[mask] += noise
        return Completion(spec, target, mask, observations=observations)
    operator = torch.randn(spec.m, n_entries, generator=generator, dtype=torch.float64)
    operator /= spec.m  # in place: the operator is the largest tensor of any problem
    stored = operator.to(spec.operator_storage)
    if stored.dtype != operator.dtype:
        operator.copy_(stored)  # the rounded entries, widened again (exactly) for y in float64
    measurements = operator @ target.reshape(-1)
    del operator
    if spec.noise:
        measurements += _noise(measurements, spec.noise, generator)
    return Sensing(spec, target, stored, measurements)


def _noise(clean: Tensor, level: float, generator: torch.Generator) -> Tensor:
    """Gaussian noise of standard deviation ``level`` x RMS(``clean``), shaped like ``clean`` (1-D)."""
    rms = clean.square().mean().sqrt()
    return torch.randn(clean.shape, generator=generator, dtype=clean.dtype) * (level * rms)
