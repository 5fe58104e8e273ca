"""cdln.analysis on constructed matrices whose principal angles and singular subspaces are known."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from cdln.analysis import (
    SpectralSnapshots,
    alignments,
    change_leakage,
    end_to_end_velocity,
    first_iteration_reaching,
    incremental_findings,
    largest_principal_angle,
    limit_singular_bases,
    principal_angles,
    singular_bases,
    split_blocks,
    stack_snapshots,
    target_factors,
)
from cdln.data.synthetic import make_problem
from cdln.engine import TrainSettings, layer_gradients, train
from cdln.networks import original_dln, random_orthogonal
from cdln.spec import ProblemSpec


def rotated_pair(n: int, thetas: list[float], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Two k-dim subspaces of R^n with principal angles exactly ``thetas`` (needs n >= 2k):
    A = span(q_1..q_k), B = span(cos t_i q_i + sin t_i q_{k+i}) for a random orthonormal q."""
    k = len(thetas)
    q = random_orthogonal(n, n, torch.Generator().manual_seed(seed))
    t = torch.tensor(thetas, dtype=torch.float64)
    a = q[:, :k]
    b = q[:, :k] * torch.cos(t) + q[:, k : 2 * k] * torch.sin(t)
    return a, b


@pytest.mark.parametrize("thetas", [[0.3, 1.1, 0.05], [1e-11, 2e-9, 1e-6], [math.pi / 2, 0.0, 0.7854]])
def test_principal_angles_of_rotated_bases(thetas):
    a, b = rotated_pair(12, thetas)
    got = principal_angles(a, b)
    assert torch.allclose(got, torch.tensor(sorted(thetas), dtype=torch.float64), rtol=1e-9, atol=1e-14)
    assert largest_principal_angle(a, b) == pytest.approx(max(thetas), rel=1e-9, abs=1e-14)


def test_principal_angles_ignore_the_choice_of_basis():
    a, b = rotated_pair(10, [0.2, 0.9])
    mix = random_orthogonal(2, 2, torch.Generator().manual_seed(3))
    assert torch.allclose(principal_angles(a @ mix, b @ mix.T), principal_angles(a, b), atol=1e-12)


def test_principal_angles_of_unequal_dimensions():
    # span(e1, e2, e3) against span(cos t e1 + sin t e4): one angle, t
    eye = torch.eye(6, dtype=torch.float64)
    t = 0.4
    line = (math.cos(t) * eye[:, 0] + math.sin(t) * eye[:, 3]).unsqueeze(1)
    for first, second in ((eye[:, :3], line), (line, eye[:, :3])):
        angles = principal_angles(first, second)
        assert angles.shape == (1,)
        assert float(angles[0]) == pytest.approx(t, rel=1e-12)


def test_principal_angles_reject_different_ambient_spaces():
    with pytest.raises(ValueError, match="different spaces"):
        principal_angles(torch.eye(4, dtype=torch.float64)[:, :2], torch.eye(5, dtype=torch.float64)[:, :2])


def test_largest_angle_of_an_empty_block_is_nan():
    empty = torch.empty(5, 0, dtype=torch.float64)
    assert math.isnan(largest_principal_angle(empty, torch.eye(5, dtype=torch.float64)[:, :2]))


def test_alignments_pair_and_project():
    eye = torch.eye(5, dtype=torch.float64)
    target = eye[:, :2]
    t = 0.3
    vectors = torch.stack(
        [
            -eye[:, 0],  # aligned up to sign: 1
            math.cos(t) * eye[:, 1] + math.sin(t) * eye[:, 2],  # cos t
            (eye[:, 0] + eye[:, 3]) / math.sqrt(2),  # beyond r: projection norm 1/sqrt 2
            eye[:, 4],  # beyond r, orthogonal to the target: 0
        ],
        dim=1,
    )
    expected = torch.tensor([1.0, math.cos(t), 1 / math.sqrt(2), 0.0], dtype=torch.float64)
    assert torch.allclose(alignments(vectors, target), expected, atol=1e-12)


def test_split_blocks_shapes_and_bad_rank():
    u = random_orthogonal(8, 8, torch.Generator().manual_seed(1))
    blocks = split_blocks(u, u, 3)
    assert [blocks[f"left_{b}"].shape[1] for b in ("top", "middle", "bottom")] == [3, 2, 3]
    assert torch.equal(blocks["right_bottom"], u[:, 5:])
    with pytest.raises(ValueError, match="r must be in"):
        split_blocks(u, u, 5)


def test_limit_bases_match_the_svd_a_small_step_later():
    """For W = c Q, the SVD of W + h dW converges to the t -> 0+ limit as h -> 0."""
    gen = torch.Generator().manual_seed(7)
    n, c = 9, 1e-2
    q = random_orthogonal(n, n, gen)
    velocity = torch.randn(n, n, generator=gen, dtype=torch.float64)
    u_lim, rates, v_lim = limit_singular_bases(c * q, velocity)
    assert torch.all(rates[:-1] >= rates[1:])
    assert torch.allclose(u_lim, q @ v_lim)
    for h in (1e-6, 1e-8):
        u, s, vh = torch.linalg.svd(c * q + h * velocity)
        # each singular pair, not only each block, since the rates are distinct here
        for i in range(n):
            assert largest_principal_angle(vh[i].unsqueeze(1), v_lim[:, i : i + 1]) < 1e3 * h / c
            assert largest_principal_angle(u[:, i : i + 1], u_lim[:, i : i + 1]) < 1e3 * h / c
        assert torch.allclose((s - c) / h, rates, rtol=1e-3, atol=1e-3 * float(rates.abs().max()))


def test_limit_bases_refuse_a_non_degenerate_matrix():
    with pytest.raises(ValueError, match="all singular values equal"):
        limit_singular_bases(torch.diag(torch.tensor([2.0, 1.0], dtype=torch.float64)), torch.eye(2))
    # singular_bases falls back to the SVD there
    u, s, v = singular_bases(torch.diag(torch.tensor([1.0, 3.0], dtype=torch.float64)), torch.eye(2))
    assert torch.allclose(s, torch.tensor([3.0, 1.0], dtype=torch.float64))
    assert abs(float(v[1, 0])) == pytest.approx(1.0)


def test_limit_middle_block_is_yaras_invariant_subspace():
    """MF, W_1 = eps Q_1: the zero-rate block is the complement of span(V*, Q_{L:1}^T U*)."""
    d, r, depth, eps = 12, 2, 3, 1e-2
    problem = make_problem(ProblemSpec("mf", d, d, r, data_seed=0))
    net = original_dln(d, d, depth, eps, [0])
    grads = layer_gradients(net.weights, problem)
    u_lim, rates, v_lim = limit_singular_bases(net.weights[0][0], -grads[0][0])
    assert (rates[:r] > 0).all() and (rates[-r:] < 0).all()
    # the middle rates vanish up to the eps^(2L) term that W(0) = eps^L Q contributes to the gradient
    assert float(rates[r:-r].abs().max()) < 1e-6 * float(rates.abs().max())
    u_star, _, v_star = target_factors(problem)
    q_total = net.end_to_end()[0] / eps**depth
    spanning = torch.cat([v_star, q_total.T @ u_star], dim=1)
    complement = torch.linalg.svd(spanning, full_matrices=True)[0][:, 2 * r :]
    assert largest_principal_angle(v_lim[:, r:-r], complement) < 1e-6


def test_end_to_end_velocity_is_the_derivative_of_the_product():
    gen = torch.Generator().manual_seed(2)
    weights = [torch.randn(4, 4, generator=gen, dtype=torch.float64) for _ in range(3)]
    velocities = [torch.randn(4, 4, generator=gen, dtype=torch.float64) for _ in range(3)]
    h = 1e-6

    def product(ws):
        return ws[2] @ ws[1] @ ws[0]

    numeric = (product([w + h * v for w, v in zip(weights, velocities, strict=True)]) - product(weights)) / h
    assert torch.allclose(end_to_end_velocity(weights, velocities), numeric, atol=1e-4)


def snapshots_of_training(task: str, d: int, r: int, lr: float, iterations: int, **problem_kwargs) -> dict:
    problem = make_problem(ProblemSpec(task, d, d, r, data_seed=0, **problem_kwargs))
    net = original_dln(d, d, 3, 1e-2, [0])
    result = train(net, problem, TrainSettings(lr, 10, iterations // 10, 0.0), snapshot=SpectralSnapshots(problem))
    return stack_snapshots(result.snapshots)


@pytest.fixture(scope="module")
def mf_snapshots() -> dict:
    return snapshots_of_training("mf", 16, 2, 4.0, 2000)


def test_snapshot_shapes(mf_snapshots):
    n = len(mf_snapshots["iteration"])
    assert mf_snapshots["e2e_svals"].shape == (n, 4)
    assert mf_snapshots["align_left"].shape == mf_snapshots["align_right"].shape == (n, 4)
    assert mf_snapshots["layer_svals"].shape == (n, 3, 16)
    assert mf_snapshots["layer_angles"].shape == (n, 3, 6)
    assert mf_snapshots["top_left_last"].shape == mf_snapshots["top_right_first"].shape == (n,)
    assert np.all(mf_snapshots["layer_angles"][0] < 1e-12)  # the reference is the first checkpoint


def test_snapshots_show_invariance_and_incremental_learning_on_mf(mf_snapshots):
    """The paper's claims on a tiny MF: learned, invariant middle subspace, values learned in order."""
    snaps, r = mf_snapshots, 2
    final_svals = snaps["e2e_svals"][-1]
    assert final_svals[r - 1] > 100 * final_svals[r]  # r values learned, the rest not
    assert np.all(snaps["align_left"][-1, :r] > 0.999) and np.all(snaps["align_right"][-1, :r] > 0.999)
    assert np.all(snaps["align_right"][-1, r:] < 1e-3)
    angles = snaps["layer_angles"]  # (t, L, 6): left/right x top/middle/bottom
    assert np.nanmax(angles[:, :, [1, 4]]) < 1e-6  # middle subspaces do not move
    assert np.nanmin(angles[-1, :, [0, 3]]) > 0.1  # top subspaces do
    crossing = [int(np.argmax(snaps["e2e_svals"][:, i] > 0.5 * final_svals[i])) for i in range(r)]
    assert crossing == sorted(crossing) and crossing[0] < crossing[-1]
    assert snaps["top_right_first"][-1] > 0.999 and snaps["top_left_last"][-1] > 0.999


def test_first_iteration_reaching_and_change_leakage():
    iterations = np.array([0, 10, 20, 30])
    values = np.array([[0.0, 0.0], [0.2, 0.0], [0.6, 0.1], [1.0, 0.2]])
    got = first_iteration_reaching(iterations, values, np.array([0.5, 0.5]))
    assert got[0] == 20 and math.isnan(got[1])
    change = np.array([[0.0, 0.0, 0.0], [3.0, 4.0, 0.0], [3.0, 0.0, 4.0]])
    leak = change_leakage(change, 1)
    assert math.isnan(leak[0])  # no change yet
    assert leak[1] == pytest.approx(0.8) and leak[2] == pytest.approx(0.8)
    assert change_leakage(change, 2)[1] == 0.0


def learning_snapshots(rise_at: list[int], targets: list[float], k: int = 4) -> dict[str, np.ndarray]:
    """Snapshots of an end-to-end matrix whose value along target pair i jumps from 1e-6 to ``targets[i]``
    at iteration ``rise_at[i]``; ``e2e_svals`` are those values sorted, as an SVD reports them."""
    iterations = np.arange(0, 1001, 100)
    tracked = np.array([[t if it >= at else 1e-6 for at, t in zip(rise_at, targets, strict=True)] for it in iterations])
    padded = np.concatenate([tracked, np.full((len(iterations), k - len(targets)), 1e-6)], axis=1)
    aligned = np.where(padded > 1e-3, 1.0, 0.0)
    return {"iteration": iterations, "target_svals": tracked, "e2e_svals": -np.sort(-padded, axis=1),
            "align_left": aligned, "align_right": aligned}  # fmt: skip


def test_incremental_findings_follow_values_by_their_target_direction():
    """In order (largest first) passes; the smaller target value learned first fails "one at a time, largest
    first", although the sorted values alone would look the same; a value along a non-target direction fails
    "the learned values are the leading ones"."""
    in_order = incremental_findings(learning_snapshots([200, 500], [3.0, 1.0]), rank=2)
    assert in_order["learned_one_at_a_time"] and in_order["learned_are_leading"] and in_order["n_learned"] == 2
    assert in_order["half_times"] == [200.0, 500.0]
    out_of_order = incremental_findings(learning_snapshots([500, 200], [3.0, 1.0]), rank=2)
    assert out_of_order["n_learned"] == 2 and not out_of_order["learned_one_at_a_time"]
    assert out_of_order["half_times"] == [500.0, 200.0]
    skipped = learning_snapshots([200, 500], [3.0, 1.0])
    skipped["target_svals"][:, 1] = 1e-6  # the second value grows along a direction that is not the target's
    assert not incremental_findings(skipped, rank=2)["learned_are_leading"]
