"""Spectral diagnostics of DLN training: incremental learning and invariant subspaces.

These functions turn weights at a checkpoint into the small arrays the analysis notebooks plot,
so no notebook ever retrains or stores full weight matrices.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from cdln.networks import LinearNetwork
from cdln.problems import Problem, target_factors


def principal_angles(basis_a: Tensor, basis_b: Tensor) -> Tensor:
    """Principal angles (radians, ascending) between the spans of orthonormal columns (n, k1), (n, k2)."""
    cosines = torch.linalg.svdvals(basis_a.mT @ basis_b).clamp(max=1.0)
    return torch.arccos(cosines).flip(-1)


def largest_principal_angle(basis_a: Tensor, basis_b: Tensor) -> float:
    """The largest principal angle between two subspaces of equal dimension, in radians."""
    return float(principal_angles(basis_a, basis_b).max())


def alignments(vectors: Tensor, target_vectors: Tensor) -> Tensor:
    """Alignment of each column of ``vectors`` (n, k) with the target's columns (n, r), shape (k,).

    For i < r it is ``|<x_i, x*_i>|``; for i >= r (no matching target vector) it is the norm of
    the projection of ``x_i`` onto the target's span, which stays ~0 if ``x_i`` is unlearned.
    """
    r = target_vectors.shape[1]
    k = vectors.shape[1]
    values = torch.empty(k, dtype=vectors.dtype, device=vectors.device)
    paired = min(k, r)
    values[:paired] = (vectors[:, :paired] * target_vectors[:, :paired]).sum(0).abs()
    if k > r:
        values[r:] = torch.linalg.vector_norm(target_vectors.mT @ vectors[:, r:], dim=0)
    return values


def subspace_blocks(matrix: Tensor, r: int) -> dict[str, Tensor]:
    """Left/right singular bases of ``matrix`` split into top-r, middle and bottom-r blocks."""
    u, _, vh = torch.linalg.svd(matrix, full_matrices=False)
    v = vh.mT
    n = u.shape[1]
    blocks = {"top": slice(0, r), "middle": slice(r, n - r), "bottom": slice(n - r, n)}
    return {f"{side}_{name}": basis[:, idx] for side, basis in (("left", u), ("right", v)) for name, idx in blocks.items()}


class SpectralSnapshots:
    """Snapshot function for :func:`cdln.engine.train` recording, for batch member 0:

    - ``e2e_svals`` (k,), ``align_left``/``align_right`` (k,): end-to-end spectrum and alignments, k = 2r;
    - ``layer_svals`` (L, n): every layer's singular values (n = smallest layer dimension);
    - ``layer_angles`` (L, 6): largest principal angle of left/right top-r, middle, bottom-r singular
      subspaces against the first checkpoint after initialisation (at initialisation all singular
      values equal eps, so its subspaces are not defined); NaN until that reference exists;
    - ``top_left_last``/``top_right_first``: ``|<u_1(W_L), u_1*>|`` and ``|<v_1(W_1), v_1*>|``.
    """

    ANGLE_NAMES = ("left_top", "left_middle", "left_bottom", "right_top", "right_middle", "right_bottom")

    def __init__(self, problem: Problem, n_values: int | None = None) -> None:
        rank = problem.spec.rank
        self.rank = rank
        self.n_values = n_values or 2 * rank
        self.target_u, _, self.target_v = target_factors(problem)
        self.reference: list[dict[str, Tensor]] | None = None

    def __call__(self, iteration: int, network: LinearNetwork, end_to_end: Tensor) -> dict[str, np.ndarray]:
        weights = [w[0] for w in network.weights]
        u, s, vh = torch.linalg.svd(end_to_end[0], full_matrices=False)
        k = min(self.n_values, s.shape[0])
        target_u = self.target_u.to(u)
        target_v = self.target_v.to(u)
        blocks = [subspace_blocks(w, self.rank) for w in weights]
        if iteration > 0 and self.reference is None:
            self.reference = blocks
        angles = np.full((len(weights), len(self.ANGLE_NAMES)), np.nan)
        if self.reference is not None:
            for layer, (now, ref) in enumerate(zip(blocks, self.reference)):
                for j, name in enumerate(self.ANGLE_NAMES):
                    if now[name].shape[1] > 0:
                        angles[layer, j] = largest_principal_angle(now[name], ref[name])
        n_min = min(min(w.shape) for w in weights)
        layer_svals = np.stack([torch.linalg.svdvals(w)[:n_min].cpu().numpy() for w in weights])
        first_right = blocks[0]["right_top"][:, :1]
        last_left = blocks[-1]["left_top"][:, :1]
        return {
            "e2e_svals": s[:k].cpu().numpy(),
            "align_left": alignments(u[:, :k], target_u).cpu().numpy(),
            "align_right": alignments(vh[:k].mT, target_v).cpu().numpy(),
            "layer_svals": layer_svals,
            "layer_angles": angles,
            "top_left_last": np.array(float((last_left[:, 0] * target_u[:, 0]).sum().abs())),
            "top_right_first": np.array(float((first_right[:, 0] * target_v[:, 0]).sum().abs())),
        }


def stack_snapshots(snapshots: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """List of per-checkpoint dicts -> dict of arrays with a leading checkpoint axis."""
    if not snapshots:
        return {}
    return {key: np.stack([snap[key] for snap in snapshots]) for key in snapshots[0]}
