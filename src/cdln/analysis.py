"""Spectral diagnostics of DLN training: incremental learning and invariant subspaces.

These functions turn weights at a checkpoint into the small arrays the analysis notebooks plot,
so no notebook ever retrains or stores full weight matrices.

Singular subspaces at initialisation. Every layer of the original DLN starts as ``eps * Q`` with
Q orthogonal, so all its singular values are equal and its singular subspaces are not defined
(an SVD routine returns an arbitrary basis). We use the only canonical choice: the limit of the
singular subspaces of ``W(t)`` as ``t -> 0+`` along the training direction ``dW/dt = -grad``.
For ``W = c Q``, ``d(W^T W)/dt = c (Q^T dW + dW^T Q)``, so the singular values separate at rates
given by the eigenvalues of ``sym(Q^T dW)`` and the limit right basis is its eigenvectors, in
descending order of growth rate; the left basis is ``Q`` times the right one. In matrix
factorisation (``grad_1 ~ -Q_{L:2}^T M*``) ``sym(Q^T dW)`` has r positive eigenvalues (the values
that will be learned: "top"), r negative ones (values that shrink: "bottom") and a (d - 2r)-
dimensional null space (values that stay at eps: "middle"); that null space is exactly the
invariant subspace of Yaras et al. (2023, "The law of parsimony in gradient descent for learning
deep linear networks", Thm. 1), the orthogonal complement of span(V*, Q_{L:1}^T U*) for W_1.
So the top-r / middle / bottom-r split at t = 0 is the one their theory predicts, and the same
rule applies unchanged to completion and sensing, where the theory is only approximate.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from cdln.engine import layer_gradients
from cdln.networks import LinearNetwork
from cdln.problems import Problem

DEGENERATE_RTOL = 1e-8  # singular values this close (relative) count as one repeated value


def target_factors(problem: Problem, rank: int | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Top singular triplets ``(U, S, V)`` of the target: U (d_out, k), S (k,), V (d_in, k)."""
    u, s, vh = torch.linalg.svd(problem.target, full_matrices=False)
    k = problem.spec.rank if rank is None else rank
    return u[:, :k], s[:k], vh[:k].T


def eckart_young_floor(singular_values: Tensor, rank: int) -> float:
    """The squared Frobenius error of the best rank-``rank`` approximation of a matrix with these singular
    values (r,), relative to the matrix's own: sum_{i >= rank} s_i^2 / sum_i s_i^2 (Eckart-Young); 0 when
    ``rank`` >= r. No rank-``rank`` matrix, trained or not, gets below it."""
    energy = singular_values.double().square()
    return float(energy[rank:].sum() / energy.sum())


def principal_angles(basis_a: Tensor, basis_b: Tensor) -> Tensor:
    """Principal angles (radians, ascending) between the spans of orthonormal columns (n, k1), (n, k2).

    Returns min(k1, k2) angles. Small angles come from the sines (``||(I - A A^T) B||``) and large
    ones from the cosines, so both ends are accurate to rounding (arccos alone loses everything
    below ~1e-8 radians).
    """
    if basis_a.shape[0] != basis_b.shape[0]:
        raise ValueError(f"bases live in different spaces: {tuple(basis_a.shape)} vs {tuple(basis_b.shape)}")
    if basis_a.shape[1] < basis_b.shape[1]:
        basis_a, basis_b = basis_b, basis_a  # b is the smaller one: its residual gives the sines
    k = basis_b.shape[1]
    if k == 0:
        return basis_a.new_empty(0)
    cosines = torch.linalg.svdvals(basis_a.mT @ basis_b)[:k].clamp(0.0, 1.0)  # descending
    residual = basis_b - basis_a @ (basis_a.mT @ basis_b)
    sines = torch.linalg.svdvals(residual).flip(-1).clamp(0.0, 1.0)  # ascending
    from_cos = torch.arccos(cosines)  # ascending
    from_sin = torch.arcsin(sines)
    return torch.where(sines < math.sqrt(0.5), from_sin, from_cos)


def largest_principal_angle(basis_a: Tensor, basis_b: Tensor) -> float:
    """The largest principal angle between two subspaces (radians); NaN if either is empty."""
    angles = principal_angles(basis_a, basis_b)
    return float(angles.max()) if angles.numel() else math.nan


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


def is_scaled_orthogonal(matrix: Tensor, rtol: float = DEGENERATE_RTOL) -> bool:
    """True if ``matrix`` is square with all singular values equal (``c * Q``, Q orthogonal, c > 0)."""
    if matrix.shape[-1] != matrix.shape[-2]:
        return False
    s = torch.linalg.svdvals(matrix)
    return bool(s[0] > 0 and s[0] - s[-1] <= rtol * s[0])


def limit_singular_bases(matrix: Tensor, velocity: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Singular bases of ``matrix + t * velocity`` in the limit ``t -> 0+``, for ``matrix = c Q``.

    ``matrix`` and ``velocity`` are (n, n). Returns ``(U, rates, V)``: U, V (n, n) orthonormal,
    ``rates`` (n,) the initial growth rates ``d sigma_i / dt`` in descending order (the order the
    singular values take for small t > 0); ``U = Q V``. Raises ValueError unless ``matrix`` is a
    scaled orthogonal matrix (otherwise its own SVD is the answer).
    """
    if not is_scaled_orthogonal(matrix):
        raise ValueError("limit_singular_bases needs a square matrix with all singular values equal")
    scale = torch.linalg.svdvals(matrix).mean()
    q = matrix / scale
    drift = q.mT @ velocity
    rates, vectors = torch.linalg.eigh(0.5 * (drift + drift.mT))  # ascending
    rates, v = rates.flip(-1), vectors.flip(-1)
    return q @ v, rates, v


def singular_bases(matrix: Tensor, velocity: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """``(U, S, V)`` of ``matrix`` (thin SVD, S descending); when ``matrix`` is a scaled orthogonal
    matrix and ``velocity`` is given, U and V are the ``t -> 0+`` limits (see the module docstring)."""
    if velocity is not None and is_scaled_orthogonal(matrix):
        u, _, v = limit_singular_bases(matrix, velocity)
        return u, torch.linalg.svdvals(matrix), v
    u, s, vh = torch.linalg.svd(matrix, full_matrices=False)
    return u, s, vh.mT


BLOCKS = ("top", "middle", "bottom")


def split_blocks(u: Tensor, v: Tensor, r: int) -> dict[str, Tensor]:
    """Ordered bases U (m, n), V (k, n) split into top-r, middle (n - 2r) and bottom-r column blocks.

    Keys ``left_top``, ``left_middle``, ``left_bottom``, ``right_top``, ... . Needs n >= 2r.
    """
    n = u.shape[1]
    if not 1 <= r <= n // 2:
        raise ValueError(f"r must be in [1, n/2] = [1, {n // 2}] to split {n} singular vectors; got {r}")
    blocks = {"top": slice(0, r), "middle": slice(r, n - r), "bottom": slice(n - r, n)}
    return {
        f"{side}_{name}": basis[:, idx] for side, basis in (("left", u), ("right", v)) for name, idx in blocks.items()
    }


def subspace_blocks(matrix: Tensor, r: int, velocity: Tensor | None = None) -> dict[str, Tensor]:
    """Left/right singular bases of ``matrix`` split into top-r, middle and bottom-r blocks."""
    u, _, v = singular_bases(matrix, velocity)
    return split_blocks(u, v, r)


def end_to_end_velocity(weights: list[Tensor], velocities: list[Tensor | None]) -> Tensor:
    """``d/dt (W_L ... W_1) = sum_l W_L..W_{l+1} dW_l W_{l-1}..W_1`` for unbatched layers (out, in)."""
    total = None
    for layer, velocity in enumerate(velocities):
        term = velocity
        for below in reversed(weights[:layer]):
            term = term @ below
        for above in weights[layer + 1 :]:
            term = above @ term
        total = term if total is None else total + term
    assert total is not None
    return total


class SpectralSnapshots:
    """Snapshot function for :func:`cdln.engine.train` recording, for batch member 0 (k = 2r):

    - ``e2e_svals`` (k,): top singular values of the end-to-end matrix ``W = W_L ... W_1``;
    - ``target_svals`` (r,): ``|u_i*^T W v_i*|``, the end-to-end matrix's value along each of the target's
      singular pairs (tracks a value by its target direction, not by its sorted position);
    - ``align_left``/``align_right`` (k,): :func:`alignments` of its singular vectors with the
      target's, ``|<u_i(t), u_i*>|`` / ``|<v_i(t), v_i*>|`` for i < r (by sorted position);
    - ``followed_left``/``followed_right`` (r,): each target direction followed, ``max_j |<u_j(t), u_i*>|`` over
      the top k singular vectors: the alignment of target pair i whatever position its vector holds;
    - ``layer_svals`` (L, n): every layer's singular values (n = smallest layer dimension);
    - ``layer_angles`` (L, 6): largest principal angle between the left/right top-r, middle
      (n - 2r) and bottom-r singular subspaces of each layer at t and at initialisation, in the
      order of :attr:`ANGLE_NAMES`; NaN for an empty block (n = 2r);
    - ``layer_change_svals`` (L, n): singular values of ``W_l(t) - W_l(0)``; a basis-free check of
      invariance that stays meaningful when the unlearned singular values have no spectral gap
      (then the middle/bottom split, hence their angles, is ill-conditioned);
    - ``top_left_last``/``top_right_first`` (): ``|<u_1(W_L), u_1*>|`` and ``|<v_1(W_1), v_1*>|``.

    At a checkpoint where a matrix is ``c * orthogonal`` (initialisation) its singular vectors are
    the ``t -> 0+`` limits along the gradient flow (module docstring); the subspaces at
    initialisation are taken at the first call, which :func:`cdln.engine.train` makes at iteration 0.
    """

    ANGLE_NAMES = ("left_top", "left_middle", "left_bottom", "right_top", "right_middle", "right_bottom")

    def __init__(self, problem: Problem, n_values: int | None = None) -> None:
        self.problem = problem
        self.rank = problem.spec.rank
        self.n_values = n_values or 2 * self.rank
        self.target_u, _, self.target_v = target_factors(problem)
        self.reference: list[dict[str, Tensor] | None] | None = None
        self.initial_weights: list[Tensor] | None = None

    def __call__(self, iteration: int, network: LinearNetwork, end_to_end: Tensor) -> dict[str, np.ndarray]:
        weights = [w[0] for w in network.weights]
        velocities: list[Tensor | None] = [None] * len(weights)
        e2e_velocity = None
        if self.reference is None:  # initialisation: the degenerate SVDs need the flow's direction
            velocities = [-g[0] for g in layer_gradients([w[:1] for w in network.weights], self.problem)]
            e2e_velocity = end_to_end_velocity(weights, velocities)
        layer_bases = [singular_bases(w, v) for w, v in zip(weights, velocities, strict=True)]
        blocks = [
            split_blocks(u, v, self.rank) if min(u.shape[1], v.shape[1]) >= 2 * self.rank else None
            for u, _, v in layer_bases
        ]
        if self.reference is None:
            self.reference = blocks
            self.initial_weights = [w.clone() for w in weights]
        assert self.initial_weights is not None
        angles = np.full((len(weights), len(self.ANGLE_NAMES)), np.nan)
        for layer, (now, ref) in enumerate(zip(blocks, self.reference, strict=True)):
            if now is None or ref is None:
                continue
            for j, name in enumerate(self.ANGLE_NAMES):
                angles[layer, j] = largest_principal_angle(now[name], ref[name])

        u, s, v = singular_bases(end_to_end[0], e2e_velocity)
        k = min(self.n_values, s.shape[0])
        target_u = self.target_u.to(u)
        target_v = self.target_v.to(u)
        n_min = min(min(w.shape) for w in weights)
        first_right = layer_bases[0][2][:, 0]
        last_left = layer_bases[-1][0][:, 0]
        return {
            "e2e_svals": s[:k].cpu().numpy(),
            "target_svals": (target_u.mT @ end_to_end[0] @ target_v).diagonal().abs().cpu().numpy(),
            "align_left": alignments(u[:, :k], target_u).cpu().numpy(),
            "align_right": alignments(v[:, :k], target_v).cpu().numpy(),
            "followed_left": (u[:, :k].mT @ target_u).abs().amax(dim=0).cpu().numpy(),
            "followed_right": (v[:, :k].mT @ target_v).abs().amax(dim=0).cpu().numpy(),
            "layer_svals": np.stack([sv[:n_min].cpu().numpy() for _, sv, _ in layer_bases]),
            "layer_angles": angles,
            "layer_change_svals": np.stack(
                [
                    torch.linalg.svdvals(w - w0)[:n_min].cpu().numpy()
                    for w, w0 in zip(weights, self.initial_weights, strict=True)
                ]
            ),
            "top_left_last": np.array(float((last_left * target_u[:, 0]).sum().abs())),
            "top_right_first": np.array(float((first_right * target_v[:, 0]).sum().abs())),
        }


def stack_snapshots(snapshots: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """List of per-checkpoint dicts -> dict of arrays with a leading checkpoint axis."""
    if not snapshots:
        return {}
    return {key: np.stack([snap[key] for snap in snapshots]) for key in snapshots[0]}


# ---- findings: the numbers the analysis notebooks state, computed from stacked snapshots ----


def first_iteration_reaching(iterations: np.ndarray, values: np.ndarray, level: float | np.ndarray) -> np.ndarray:
    """Per column of ``values`` (T, k), the first iteration with ``values >= level``; NaN if never."""
    values = np.asarray(values, dtype=float).reshape(len(iterations), -1)
    reached = values >= np.broadcast_to(level, values.shape[1:])
    first = np.argmax(reached, axis=0)
    return np.where(reached.any(axis=0), np.asarray(iterations, dtype=float)[first], np.nan)


def incremental_findings(snaps: dict[str, np.ndarray], rank: int, learned_fraction: float = 1e-2) -> dict:
    """Incremental learning in the end-to-end matrix, from :class:`SpectralSnapshots` output.

    A singular value counts as learned when its final size exceeds ``learned_fraction`` of the largest, and
    as grown when its largest size along the run does. Values are followed by the target's singular pairs
    (``target_svals``: the value along pair i, so a value keeps its index when the sorted order changes):
    the learned values "are the leading ones" when as many target pairs are learned as values, and they are
    the target's first ones; a pair's learning time is the first checkpoint where its value reaches half its
    final size; pairs are learned "one at a time", largest first, when those times strictly increase with
    the pair's index. Each alignment "jumps when its value is learned" when it first reaches 0.9 inside the
    window in which the value is learned: from when it leaves its initial scale (10x its size at t = 0) to
    when it reaches 90% of its final size, widened by one checkpoint on each side. Alignments follow their
    target directions too (``followed_left``/``followed_right``; snapshots recorded before they existed fall back
    to the sorted positions). The end-to-end vectors beyond the first r are "unaligned" by their largest
    alignment with the target's span over the whole run after initialisation (there, at t = 0, they are the
    flow's limit directions) as well as at its end.
    """
    iterations, svals, tracked = snaps["iteration"], snaps["e2e_svals"], np.abs(snaps["target_svals"])
    final, tracked_final = svals[-1], tracked[-1]
    n_learned = int((final > learned_fraction * final[0]).sum())
    learned_pairs = np.flatnonzero(tracked_final > learned_fraction * final[0])
    n_pairs = min(n_learned, tracked.shape[1])
    peak = svals.max(axis=0)
    grown = int((peak > learned_fraction * final[0]).sum())
    half_times = first_iteration_reaching(iterations, tracked[:, :n_pairs], 0.5 * tracked_final[:n_pairs])
    followed = "followed_left" in snaps
    left, right = (snaps["followed_left"], snaps["followed_right"]) if followed else (
        snaps["align_left"][:, :rank], snaps["align_right"][:, :rank])  # fmt: skip
    aligned_times = first_iteration_reaching(iterations, right[:, :n_pairs], 0.9)
    step = float(iterations[1] - iterations[0]) if len(iterations) > 1 else 0.0
    window_start = first_iteration_reaching(iterations, tracked[:, :n_pairs], 10 * tracked[0, :n_pairs]) - step
    window_end = first_iteration_reaching(iterations, tracked[:, :n_pairs], 0.9 * tracked_final[:n_pairs]) + step
    jumps, offsets = [], []
    for alignment in (left, right):
        times = first_iteration_reaching(iterations, alignment[:, :n_pairs], 0.9)
        jumps.append((times >= window_start) & (times <= window_end))
        offsets.append(times - half_times)
    in_window = np.concatenate(jumps) if n_pairs else np.array([], dtype=bool)
    unlearned = final[n_learned:]
    beyond = np.concatenate([snaps["align_left"][:, rank:], snaps["align_right"][:, rank:]], axis=1)
    return {
        "rank": rank,
        "n_learned": n_learned,
        "n_grown": grown,
        "learned_pairs": learned_pairs.tolist(),
        "learned_are_leading": bool(np.array_equal(learned_pairs, np.arange(n_learned))),
        "final_svals": final.tolist(),
        "final_target_svals": tracked_final.tolist(),
        "largest_unlearned_sval": float(unlearned.max()) if unlearned.size else float("nan"),
        "max_overshoot": float(np.max(peak[:n_learned] / final[:n_learned])) if n_learned else float("nan"),
        "half_times": half_times.tolist(),
        "n_distinct_learning_times": int(np.unique(half_times).size),
        "learned_in_decreasing_order": bool(np.all(np.diff(half_times) >= 0)),
        "learned_one_at_a_time": bool(
            n_pairs > 0 and np.all(np.isfinite(half_times)) and np.all(np.diff(half_times) > 0)
        ),
        "checkpoint_spacing": step,
        "alignments_follow_targets": followed,
        "alignment_jump_share": float(in_window.mean()) if in_window.size else float("nan"),
        # iteration at which each learned alignment (left, then right) first reaches 0.9, minus its learning time
        "alignment_offsets": np.concatenate(offsets).tolist() if n_pairs else [],
        "min_final_alignment_learned": float(min(left[-1, :n_pairs].min(), right[-1, :n_pairs].min()))
        if n_pairs
        else float("nan"),
        "max_final_alignment_unlearned": float(beyond[-1].max()) if beyond.shape[1] else float("nan"),
        "max_alignment_unlearned_over_run": float(beyond[1:].max())
        if beyond.shape[1] and len(beyond) > 1
        else float("nan"),  # fmt: skip
        "right_alignment_0.9_times": aligned_times.tolist(),
        "last_iteration": int(iterations[-1]),
    }


def change_leakage(change_svals: np.ndarray, dim: int) -> np.ndarray:
    """Share of ``||W(t) - W(0)||_F`` outside its top-``dim`` singular directions, per row (T, n).

    0 when the change lies in a ``dim``-dimensional subspace; NaN where there is no change yet.
    """
    energy = np.square(change_svals)
    total = energy.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, np.sqrt(energy[..., dim:].sum(axis=-1) / total), np.nan)


def invariance_findings(snaps: dict[str, np.ndarray], rank: int, moved_rtol: float = 0.05) -> dict:
    """Per layer: how far each singular subspace moved, how many singular values moved, and how
    much of the layer's change lies outside a 2r-dimensional subspace: as a share of the whole change
    (:func:`change_leakage`, dominated by the learned directions) and against the initial size of the
    layer outside its top 2r values (``change_outside_2r_vs_initial``: ~0 when the unlearned part
    stays put, ~1 when it changed by as much as it started with).

    A singular value "moved" when its final value differs from its initial one by more than
    ``moved_rtol`` (relative). Angles are in radians, against the subspaces at initialisation.
    """
    angles = snaps["layer_angles"]  # (T, L, 6) in SpectralSnapshots.ANGLE_NAMES order
    names = SpectralSnapshots.ANGLE_NAMES
    svals = snaps["layer_svals"]  # (T, L, n)
    leakage = change_leakage(snaps["layer_change_svals"], 2 * rank)  # (T, L)
    outside = np.sqrt(np.square(snaps["layer_change_svals"][-1, :, 2 * rank :]).sum(axis=-1))  # (L,)
    unlearned_initial = np.sqrt(np.square(svals[0, :, 2 * rank :]).sum(axis=-1))  # (L,)
    layers = []
    for layer in range(angles.shape[1]):
        max_angle = {name: float(np.nanmax(angles[:, layer, j])) for j, name in enumerate(names)}
        final_angle = {name: float(angles[-1, layer, j]) for j, name in enumerate(names)}
        relative = np.abs(svals[-1, layer] / svals[0, layer] - 1.0)
        moved = relative > moved_rtol
        layers.append(
            {
                "max_angle": max_angle,
                "final_angle": final_angle,
                "n_moved_svals": int(moved.sum()),
                "n_moved_middle_svals": int(moved[rank : relative.size - rank].sum()),
                "n_svals": int(relative.size),
                "change_outside_2r_vs_initial": float(outside[layer] / unlearned_initial[layer]),
                "max_change_leakage": float(np.nanmax(leakage[:, layer])),
                "final_change_leakage": float(leakage[-1, layer]),
                "unlearned_sval_range": [float(svals[-1, layer, rank:].min()), float(svals[-1, layer, rank:].max())],
            }
        )

    def worst(key: str, names_: tuple[str, ...], reduce=max) -> float:
        return float(reduce(entry[key][n] for entry in layers for n in names_))

    return {
        "rank": rank,
        "layers": layers,
        "max_middle_angle": worst("max_angle", ("left_middle", "right_middle")),
        "min_final_top_angle": worst("final_angle", ("left_top", "right_top"), min),
        "max_final_top_angle": worst("final_angle", ("left_top", "right_top")),
        "min_final_bottom_angle": worst("final_angle", ("left_bottom", "right_bottom"), min),
        "max_n_moved_svals": max(entry["n_moved_svals"] for entry in layers),
        "max_n_moved_middle_svals": max(entry["n_moved_middle_svals"] for entry in layers),
        "max_change_outside_2r_vs_initial": max(entry["change_outside_2r_vs_initial"] for entry in layers),
        "max_change_leakage": max(entry["max_change_leakage"] for entry in layers),
        "max_final_change_leakage": max(entry["final_change_leakage"] for entry in layers),
        "moved_rtol": moved_rtol,
    }


def findings_over_seeds(seeds: list[int], per_seed: list[dict]) -> dict:
    """One task's findings for every seed: ``{"seeds": [...], "by_seed": [findings, ...]}``."""
    if len(seeds) != len(per_seed):
        raise ValueError(f"{len(seeds)} seeds but {len(per_seed)} findings")
    return {"seeds": list(seeds), "by_seed": per_seed}


def alignment_findings(snaps: dict[str, np.ndarray]) -> dict:
    """Top singular vectors of the outer layers against the target's: start, end, rise times."""
    iterations = snaps["iteration"]
    out: dict = {"last_iteration": int(iterations[-1])}
    for key in ("top_left_last", "top_right_first"):
        values = snaps[key]
        out[key] = {
            "initial": float(values[0]),
            "first_checkpoint": float(values[1]) if values.size > 1 else float("nan"),
            "final": float(values[-1]),
            "iteration_0.9": float(first_iteration_reaching(iterations, values, 0.9)[0]),
            "iteration_0.99": float(first_iteration_reaching(iterations, values, 0.99)[0]),
        }
    return out
