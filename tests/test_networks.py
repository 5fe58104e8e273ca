"""Networks: orthogonal inits and their scale, the C-DLN's spectral init, parameter counts, rates."""

from __future__ import annotations

import pytest
import torch

from cdln.config import RunConfig
from cdln.data.synthetic import make_problem
from cdln.engine import TrainSettings, train
from cdln.networks import (
    burer_monteiro,
    compressed_dln,
    dln_param_count,
    narrow_dln,
    original_dln,
    random_orthogonal,
    spectral_dln,
    top_singular_vectors,
    yaras_compressed_dln,
    yaras_dln,
    yaras_subspace,
)
from cdln.runner import build_network
from cdln.spec import ProblemSpec

EYE = lambda n: torch.eye(n, dtype=torch.float64)  # noqa: E731


@pytest.mark.parametrize("n_out,n_in", [(6, 6), (4, 9), (9, 4)])
def test_random_orthogonal_is_orthonormal(n_out, n_in):
    q = random_orthogonal(n_out, n_in, torch.Generator().manual_seed(0))
    assert q.shape == (n_out, n_in) and q.dtype == torch.float64
    k = min(n_out, n_in)
    gram = q @ q.T if n_out <= n_in else q.T @ q
    torch.testing.assert_close(gram, EYE(k), atol=1e-12, rtol=0)


def test_random_orthogonal_is_seeded_and_not_sign_biased():
    a = random_orthogonal(5, 5, torch.Generator().manual_seed(1))
    assert torch.equal(a, random_orthogonal(5, 5, torch.Generator().manual_seed(1)))
    assert not torch.equal(a, random_orthogonal(5, 5, torch.Generator().manual_seed(2)))
    # Haar: diagonal signs are +-1 equally often (without the sign fix, QR's R>0 convention biases them).
    diag = torch.stack([torch.diagonal(random_orthogonal(4, 4, torch.Generator().manual_seed(s))) for s in range(200)])
    assert 0.3 < float((diag > 0).double().mean()) < 0.7


@pytest.mark.parametrize("depth", [2, 3, 5])
def test_original_dln_layers_are_eps_orthogonal(depth):
    eps, d = 1e-2, 7
    net = original_dln(d, d, depth, eps, init_seeds=[0, 1])
    assert net.depth == depth and net.batch == 2 and net.widths == [d] * (depth + 1)
    for w in net.weights:
        assert w.shape == (2, d, d)
        torch.testing.assert_close(w.mT @ w, eps**2 * EYE(d).expand(2, d, d), atol=1e-15, rtol=0)
    assert not torch.equal(net.weights[0][0], net.weights[0][1])  # seeds give different members
    assert not torch.equal(net.weights[0][0], net.weights[1][0])  # layers are drawn independently
    # End-to-end singular values are all eps^L.
    torch.testing.assert_close(
        torch.linalg.svdvals(net.end_to_end()[0]), torch.full((d,), eps**depth, dtype=torch.float64), rtol=1e-10, atol=0
    )
    assert all(torch.equal(s, torch.ones(2, dtype=torch.float64)) for s in net.lr_scales)


def test_rectangular_original_and_narrow_dln_shapes_and_orthonormality():
    eps = 0.1
    net = original_dln(5, 8, 3, eps, [3])
    assert net.widths == [8, 8, 8, 5]
    net = narrow_dln(9, 6, 4, eps, [3], width=2)
    assert net.widths == [6, 2, 2, 2, 9] and net.name == "narrow"
    for w in net.weights:
        w = w[0] / eps
        gram = w @ w.T if w.shape[0] <= w.shape[1] else w.T @ w
        torch.testing.assert_close(gram, EYE(min(w.shape)), atol=1e-12, rtol=0)
    assert torch.equal(original_dln(5, 8, 3, eps, [3]).weights[1], original_dln(5, 8, 3, eps, [3]).weights[1])


def test_burer_monteiro_is_depth_two_of_width_k():
    net = burer_monteiro(7, 6, 3, 1e-3, [0, 1, 2])
    assert net.depth == 2 and net.widths == [6, 3, 7] and net.batch == 3 and net.n_params() == 7 * 3 + 6 * 3


@pytest.mark.parametrize("scale", [1e-2, 1.0])
def test_burer_monteiro_init_scale(scale):
    net = burer_monteiro(7, 6, 3, scale, [0, 1])
    y_t, x = net.weights  # W_1 = Y^T (k, d_in), W_2 = X (d_out, k): each scale x orthonormal columns
    for factor in (y_t.mT, x):
        torch.testing.assert_close(factor.mT @ factor, scale**2 * EYE(3).expand(2, 3, 3), atol=1e-14, rtol=0)
    # W(0) = X Y^T has k singular values scale^2: order one at scale 1, no plateau to escape.
    torch.testing.assert_close(
        torch.linalg.svdvals(net.end_to_end()[0])[:3], torch.full((3,), scale**2, dtype=torch.float64)
    )
    assert torch.equal(burer_monteiro(7, 6, 3, scale, [0]).weights[0][0] / scale, net.weights[0][0] / scale)
    with pytest.raises(ValueError, match="init scale must be a finite number > 0"):
        burer_monteiro(7, 6, 3, 0.0, [0])


def test_burer_monteiro_at_scale_one_learns_from_the_first_iterations():
    problem = make_problem(ProblemSpec("mf", 10, 10, 2, data_seed=0))
    curves = {}
    for scale in (1e-2, 1.0):
        net = burer_monteiro(10, 10, 2, scale, [0])
        curves[scale] = train(net, problem, TrainSettings(20.0, 1, 4)).curves.recovery_error.to_numpy()
    assert curves[1.0][-1] < 0.5 * curves[1.0][0]  # falls at once (4 iterations)
    assert curves[1e-2][-1] > 0.99 * curves[1e-2][0]  # the small start sits on its plateau


def _surrogate(d_out=10, d_in=8, seed=0):
    return torch.randn(d_out, d_in, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("depth", [2, 3, 4])
def test_cdln_initial_end_to_end_is_eps_power_l_u_v(depth):
    eps, r_hat = 0.05, 3
    surrogate = _surrogate()
    u, s, vh = torch.linalg.svd(surrogate)
    u_hat, v_hat = u[:, :r_hat], vh[:r_hat].T
    net = compressed_dln(surrogate, r_hat, depth, eps, alpha=2.0, batch=2)
    assert net.widths == [8] + [r_hat] * (depth - 1) + [10]
    expected = eps**depth * u_hat @ v_hat.T
    for b in range(2):
        torch.testing.assert_close(net.end_to_end()[b], expected, atol=1e-15, rtol=1e-12)
    # Layer by layer: W_1 = eps V^T, inner eps I, W_L = eps U (up to a common sign per singular pair).
    w1, wl = net.weights[0][0], net.weights[-1][0]
    torch.testing.assert_close(wl @ w1, eps**2 * u_hat @ v_hat.T, atol=1e-15, rtol=1e-12)
    torch.testing.assert_close(w1 @ w1.T, eps**2 * EYE(r_hat), atol=1e-15, rtol=0)
    torch.testing.assert_close(wl.T @ wl, eps**2 * EYE(r_hat), atol=1e-15, rtol=0)
    for w in net.weights[1:-1]:
        assert torch.equal(w[0], eps * EYE(r_hat))


def test_cdln_uses_the_top_singular_vectors_not_any_basis():
    surrogate = _surrogate(seed=1)
    net = compressed_dln(surrogate, 2, 3, 1.0)
    u, v = top_singular_vectors(surrogate, 2)
    # The C-DLN's end-to-end map is the projection U U^T S V V^T direction set: U^T S V is diagonal, top values.
    core = net.weights[-1][0].T @ surrogate @ net.weights[0][0].T
    s = torch.linalg.svdvals(surrogate)[:2]
    torch.testing.assert_close(core, torch.diag(s), atol=1e-12, rtol=1e-12)
    assert u.shape == (10, 2) and v.shape == (8, 2)


def test_cdln_built_from_a_problem_uses_the_surrogate():
    problem = make_problem(ProblemSpec("mc", 10, 10, 2, data_seed=0, p=0.5))
    config = RunConfig(task="mc", d=10, r=2, p=0.5, model="cdln", depth=3, eps=0.1)
    net = build_network(config, problem)
    u, v = top_singular_vectors(problem.surrogate(), 4)  # r_hat defaults to 2r
    torch.testing.assert_close(net.end_to_end()[0], 0.1**3 * u @ v.T, atol=1e-15, rtol=1e-12)
    u_target, v_target = top_singular_vectors(problem.target, 4)
    assert not torch.allclose(net.end_to_end()[0], 0.1**3 * u_target @ v_target.T, atol=1e-6 * 0.1**3)


@pytest.mark.parametrize("d,r_hat,depth", [(10, 4, 2), (10, 4, 3), (20, 3, 5), (7, 7, 4)])
def test_parameter_count_formula(d, r_hat, depth):
    net = compressed_dln(_surrogate(d, d), r_hat, depth, 0.01)
    assert net.n_params() == 2 * d * r_hat + (depth - 2) * r_hat**2
    assert original_dln(d, d, depth, 0.01, [0]).n_params() == depth * d * d == dln_param_count(d, d, d, depth)
    assert dln_param_count(d, d, r_hat, depth) == net.n_params()


def test_parameter_count_rectangular():
    assert dln_param_count(5, 8, 3, 3) == 3 * 8 + 3 * 3 + 5 * 3
    assert dln_param_count(5, 8, 3, 1) == 40
    assert narrow_dln(5, 8, 3, 0.1, [0], width=3).n_params() == dln_param_count(5, 8, 3, 3)


@pytest.mark.parametrize("depth", [2, 3, 4])
def test_alpha_multiplies_only_the_outer_layers_rates(depth):
    net = compressed_dln(_surrogate(), 3, depth, 0.01, alpha=[1.0, 5.0, 0.5], batch=3)
    expected_outer = torch.tensor([1.0, 5.0, 0.5], dtype=torch.float64)
    assert torch.equal(net.lr_scales[0], expected_outer) and torch.equal(net.lr_scales[-1], expected_outer)
    for scale in net.lr_scales[1:-1]:
        assert torch.equal(scale, torch.ones(3, dtype=torch.float64))


def _yaras_setup(d_out, d_in, depth=3, eps=1e-2, task="mf", seeds=(0,), rank=2):
    spec = ProblemSpec(task, d_out, d_in, rank, data_seed=0, p=0.6 if task == "mc" else None)
    problem = make_problem(spec)
    initial = original_dln(d_out, d_in, depth, eps, list(seeds))
    return problem, initial, problem.loss_grad(initial.end_to_end())


def _projector(basis):
    q, _ = torch.linalg.qr(basis)
    return q @ q.mT


@pytest.mark.parametrize("d_out,d_in,depth", [(10, 10, 3), (12, 8, 3), (8, 12, 2), (9, 9, 4)])
def test_yaras_network_shapes_rates_and_initial_end_to_end(d_out, d_in, depth):
    eps, rank = 1e-2, 2
    _, initial, gradient = _yaras_setup(d_out, d_in, depth, eps, seeds=(0, 1))
    net = yaras_compressed_dln(initial, gradient, rank, eps, gamma=0.01)
    assert net.name == "yaras" and net.batch == 2 and net.depth == depth + 2
    assert net.widths == [d_in] + [2 * rank] * (depth + 1) + [d_out]
    assert net.n_params() == 2 * rank * (d_in + d_out) + depth * (2 * rank) ** 2
    v, u = net.weights[0].mT, net.weights[-1]  # V (B, d_in, 2r), U (B, d_out, 2r)
    for inner in net.weights[1:-1]:
        assert torch.equal(inner, eps * EYE(2 * rank).expand(2, -1, -1))
    assert torch.equal(net.lr_scales[0], torch.full((2,), 0.01, dtype=torch.float64))
    assert torch.equal(net.lr_scales[-1], net.lr_scales[0])
    assert all(torch.equal(s, torch.ones(2, dtype=torch.float64)) for s in net.lr_scales[1:-1])
    # Outer factors at unit scale: the side the construction starts from (input side when d_out <= d_in)
    # is orthonormal, the other is the image of it under W(0) / eps^L (orthonormal for square targets).
    w0 = initial.end_to_end()
    start, other = (v, u) if d_out <= d_in else (u, v)
    torch.testing.assert_close(start.mT @ start, EYE(2 * rank).expand(2, -1, -1), atol=1e-12, rtol=0)
    image = w0 @ v if d_out <= d_in else w0.mT @ u
    torch.testing.assert_close(other, image / eps**depth, atol=1e-12, rtol=1e-12)
    if d_out == d_in:
        torch.testing.assert_close(other.mT @ other, EYE(2 * rank).expand(2, -1, -1), atol=1e-12, rtol=0)
    # End-to-end at init = U eps^L V^T = W(0) V V^T (square first layer) or U U^T W(0) (square last layer):
    # the original's initial matrix restricted to the 2r-dim subspace.
    torch.testing.assert_close(net.end_to_end(), eps**depth * u @ v.mT, atol=1e-18, rtol=1e-12)
    restricted = w0 @ v @ v.mT if d_out <= d_in else u @ u.mT @ w0
    torch.testing.assert_close(net.end_to_end(), restricted, atol=1e-18, rtol=1e-10)
    assert not torch.equal(net.weights[0][0], net.weights[0][1])  # one construction per init seed


def test_yaras_subspace_is_the_complement_of_the_invariant_subspace():
    """V_{1,1} contains the first-layer gradient's top-r right singular vectors and the pull-back of its
    top-r left ones, and is the orthogonal complement of V_{1,2} = the intersection of their orthogonal
    complements (computed here as Yaras et al. do: the null space of [W_1^T U_perp / eps, -V_perp])."""
    eps, rank, d = 1e-2, 2, 10
    _, initial, gradient = _yaras_setup(d, d, 3, eps, task="mc")
    weights = [w[0] for w in initial.weights]
    first_grad = (weights[2] @ weights[1]).T @ gradient[0]
    u_g, _, vh_g = torch.linalg.svd(first_grad)
    v = yaras_subspace([w.unsqueeze(0) for w in weights], gradient, rank, eps)[0]
    assert v.shape == (d, 2 * rank)
    torch.testing.assert_close(v.T @ v, EYE(2 * rank), atol=1e-12, rtol=0)
    projector = v @ v.T
    torch.testing.assert_close(projector @ vh_g[:rank].T, vh_g[:rank].T, atol=1e-12, rtol=0)
    pulled = weights[0].T @ u_g[:, :rank] / eps
    torch.testing.assert_close(projector @ pulled, pulled, atol=1e-12, rtol=0)
    a, b = weights[0].T @ u_g[:, rank:] / eps, vh_g[rank:].T  # complements, (d, d - r) each
    stacked = torch.cat([a, -b], dim=1)  # (d, 2d - 2r) of rank d: a null space of dimension d - 2r
    null = torch.linalg.svd(stacked)[2][d:].T  # its last right singular vectors, (2d - 2r, d - 2r)
    torch.testing.assert_close(stacked @ null, torch.zeros(d, d - 2 * rank, dtype=torch.float64), atol=1e-12, rtol=0)
    invariant = a @ null[: d - rank]  # = b @ null[d - rank:]: a basis of the intersection V_{1,2}
    torch.testing.assert_close(_projector(invariant), EYE(d) - projector, atol=1e-10, rtol=0)
    # ... and it is not simply the top-2r singular subspace of the end-to-end gradient (the old reading).
    _, v_old = top_singular_vectors(-gradient[0], 2 * rank)
    assert float((projector - v_old @ v_old.T).norm()) > 0.5


@pytest.mark.parametrize("d_out,d_in,depth", [(10, 10, 3), (12, 8, 3), (8, 12, 3), (12, 8, 2)])
def test_yaras_network_with_frozen_factors_tracks_the_original_dln_on_mf(d_out, d_in, depth):
    """Their theorem: on MF the original DLN moves only within these subspaces, so with gamma = 0 the
    compressed network's end-to-end matrix follows the original's at every iteration (up to the eps^L
    complement term and a transient of ~1e-4 while the error drops fastest), not just at the solution."""
    eps = 1e-2
    problem, initial, gradient = _yaras_setup(d_out, d_in, depth, eps)
    net = yaras_compressed_dln(initial, gradient, 2, eps, gamma=0.0)
    u, v = top_singular_vectors(-gradient[0], 4)  # an earlier, wrong reading, for contrast: a C-DLN-shaped
    old = spectral_dln("yaras", u, v, depth, eps, 0.0)  # net on the end-to-end gradient's top subspace
    gaps, old_gaps, errors = [], [], []
    for _ in range(8):  # 8 x 100 iterations: through the plateau, the drop and the convergence
        settings = TrainSettings(5.0 if depth == 3 else 1.0, 100, 1)
        errors.append(float(train(initial, problem, settings).curves.recovery_error.iloc[-1]))
        train(net, problem, settings)
        train(old, problem, settings)
        gaps.append(float((initial.end_to_end() - net.end_to_end()).norm() / problem.target.norm()))
        old_gaps.append(float((initial.end_to_end() - old.end_to_end()).norm() / problem.target.norm()))
    assert errors[-1] < 1e-3 * errors[0]  # the original DLN learned the target along the way
    assert max(gaps) < 1e-3 and gaps[-1] < 10 * eps**depth, gaps
    assert max(old_gaps) > 0.1  # a C-DLN-shaped net on the gradient's top subspace follows another path


def test_yaras_network_recovers_a_tiny_mc_problem():
    problem = make_problem(ProblemSpec("mc", 14, 10, 2, data_seed=0, p=0.6))
    net = yaras_dln(problem.loss_grad, 14, 10, 3, 1e-2, [0], rank=2, gamma=0.01)
    curves = train(net, problem, TrainSettings(10.0, 500, 10)).curves
    assert curves.recovery_error.iloc[-1] < 1e-6 * curves.recovery_error.iloc[0]


def test_yaras_network_rejects_bad_arguments():
    _, initial, gradient = _yaras_setup(10, 10)
    with pytest.raises(ValueError, match=r"rank must be in \[1, 5\]"):
        yaras_compressed_dln(initial, gradient, 6, 1e-2)
    with pytest.raises(ValueError, match="not eps x a"):
        yaras_compressed_dln(initial, gradient, 2, 0.1)  # eps does not match the initial network
    with pytest.raises(ValueError, match="end_to_end_gradient must have shape"):
        yaras_compressed_dln(initial, gradient[:, :5], 2, 1e-2)


def test_bad_network_arguments_are_rejected():
    with pytest.raises(ValueError, match=r"r_hat must be in \[1, 8\]"):
        compressed_dln(_surrogate(), 9, 3, 0.01)
    with pytest.raises(ValueError, match=r"r_hat must be in \[1, 8\]"):
        compressed_dln(_surrogate(), 0, 3, 0.01)
    with pytest.raises(ValueError, match="depth must be >= 2"):
        spectral_dln("x", EYE(3), EYE(3), 1, 0.1, 1.0)
    with pytest.raises(ValueError, match="got 2 values for a batch of 3"):
        compressed_dln(_surrogate(), 2, 3, 0.01, alpha=[1.0, 2.0], batch=3)


def test_to_and_clone_do_not_alias():
    net = original_dln(4, 4, 3, 0.1, [0])
    copy = net.clone()
    copy.weights[0].add_(1.0)
    assert not torch.equal(copy.weights[0], net.weights[0])
    f32 = net.to("cpu", torch.float32)
    assert all(w.dtype == torch.float32 for w in f32.weights) and all(s.dtype == torch.float32 for s in f32.lr_scales)
