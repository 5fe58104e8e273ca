"""Deep linear networks: the original DLN, the compressed C-DLN and the baselines.

A network is a list of layer weights ``W_1, ..., W_L`` (``W_1`` acts first), each stored with a
leading batch dimension, shape ``(B, n_out, n_in)``, so that B runs of the same shapes (seeds,
sweep values) train together. Each layer carries a per-member step-size multiplier of shape (B,):
the C-DLN's discrepant rate alpha and the Yaras et al. gamma live there.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from cdln import seeding

MODELS: tuple[str, ...] = ("original", "cdln", "narrow", "bm", "yaras")


@dataclass
class LinearNetwork:
    """``W = W_L ... W_1``; ``weights[l]`` has shape (B, n_out_l, n_in_l); ``lr_scales[l]`` (B,)."""

    name: str
    weights: list[Tensor]
    lr_scales: list[Tensor]

    @property
    def depth(self) -> int:
        return len(self.weights)

    @property
    def batch(self) -> int:
        return self.weights[0].shape[0]

    @property
    def widths(self) -> list[int]:
        """Feature dimensions ``[d_in, n_1, ..., d_out]``."""
        return [self.weights[0].shape[-1]] + [w.shape[-2] for w in self.weights]

    def end_to_end(self) -> Tensor:
        """The product ``W_L ... W_1``, shape (B, d_out, d_in)."""
        return product(self.weights)

    def n_params(self) -> int:
        """Trainable parameters of one batch member."""
        return sum(w.shape[-2] * w.shape[-1] for w in self.weights)

    def to(self, device: torch.device | str, dtype: torch.dtype) -> LinearNetwork:
        return LinearNetwork(
            self.name,
            [w.to(device=device, dtype=dtype) for w in self.weights],
            [s.to(device=device, dtype=dtype) for s in self.lr_scales],
        )

    def clone(self) -> LinearNetwork:
        return LinearNetwork(self.name, [w.clone() for w in self.weights], [s.clone() for s in self.lr_scales])


def product(weights: list[Tensor]) -> Tensor:
    """``W_L ... W_1`` of layer weights given first-layer first, shape (B, d_out, d_in)."""
    result = weights[0]
    for weight in weights[1:]:
        result = weight @ result
    return result


def dln_param_count(d_out: int, d_in: int, width: int, depth: int) -> int:
    """Parameters of a depth-``depth`` DLN ``d_in -> width -> ... -> d_out``."""
    if depth == 1:
        return d_out * d_in
    return width * d_in + (depth - 2) * width * width + d_out * width


def random_orthogonal(n_out: int, n_in: int, generator: torch.Generator) -> Tensor:
    """Haar-random matrix with orthonormal rows or columns (a crop of a square orthogonal), float64."""
    n = max(n_out, n_in)
    q, r = torch.linalg.qr(torch.randn(n, n, generator=generator, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r))  # sign fix makes the distribution Haar
    return q[:n_out, :n_in]


def _layer_shapes(d_out: int, d_in: int, width: int, depth: int) -> list[tuple[int, int]]:
    dims = [d_in] + [width] * (depth - 1) + [d_out]
    return [(dims[i + 1], dims[i]) for i in range(depth)]


def _per_member(value: float | Sequence[float], batch: int, what: str) -> Tensor:
    values = [float(value)] * batch if isinstance(value, (int, float)) else [float(v) for v in value]
    if len(values) != batch:
        raise ValueError(f"{what}: got {len(values)} values for a batch of {batch}")
    return torch.tensor(values, dtype=torch.float64)


def random_dln(
    name: str, d_out: int, d_in: int, width: int, depth: int, eps: float, init_seeds: Sequence[int]
) -> LinearNetwork:
    """DLN with every layer ``eps *`` a random orthogonal matrix; one member per init seed."""
    if depth < 1:
        raise ValueError(f"depth must be >= 1; got {depth}")
    members = []
    for seed in init_seeds:
        generator = seeding.generator(int(seed), "init")
        members.append([eps * random_orthogonal(o, i, generator) for o, i in _layer_shapes(d_out, d_in, width, depth)])
    weights = [torch.stack(layer) for layer in zip(*members, strict=True)]
    ones = torch.ones(len(init_seeds), dtype=torch.float64)
    return LinearNetwork(name, weights, [ones.clone() for _ in weights])


def original_dln(d_out: int, d_in: int, depth: int, eps: float, init_seeds: Sequence[int], width: int | None = None):
    """The overparameterised DLN: layers (B, width, d_in), (B, width, width) x (L-2), (B, d_out, width), width
    ``max(d_out, d_in)`` by default; every layer ``eps x`` a random orthogonal matrix, one member per seed."""
    return random_dln("original", d_out, d_in, width or max(d_out, d_in), depth, eps, init_seeds)


def narrow_dln(d_out: int, d_in: int, depth: int, eps: float, init_seeds: Sequence[int], width: int) -> LinearNetwork:
    """Baseline: a DLN of width ``width`` (= r_hat), layers (B, width, d_in) ... (B, d_out, width), orthogonal init."""
    return random_dln("narrow", d_out, d_in, width, depth, eps, init_seeds)


def burer_monteiro(d_out: int, d_in: int, k: int, scale: float, init_seeds: Sequence[int]) -> LinearNetwork:
    """Baseline ``W = X Y^T`` with X (d_out, k), Y (d_in, k): a depth-2 DLN of width k.

    Each factor starts at ``scale x`` a random orthogonal matrix, so ``W(0)`` has k singular values
    ``scale**2``. ``scale = eps`` is the small start of the DLNs (B-M then sits on a plateau first);
    ``scale = 1`` is an order-one start, whose error falls from the first iteration.
    """
    if not math.isfinite(scale) or scale <= 0:
        raise ValueError(f"Burer-Monteiro init scale must be a finite number > 0; got {scale}")
    return random_dln("bm", d_out, d_in, k, 2, scale, init_seeds)


def spectral_dln(
    name: str,
    u: Tensor,
    v: Tensor,
    depth: int,
    eps: float,
    outer_scale: float | Sequence[float],
    batch: int = 1,
) -> LinearNetwork:
    """``W_1 = eps V^T``, inner ``W_l = eps I``, ``W_L = eps U``; outer layers step ``outer_scale x``.

    ``u`` is (d_out, k), ``v`` (d_in, k). For depth 2 both layers are outer layers.
    """
    if depth < 2:
        raise ValueError(f"depth must be >= 2 for a compressed network; got {depth}")
    k = u.shape[1]
    layers = [eps * v.T] + [eps * torch.eye(k, dtype=u.dtype)] * (depth - 2) + [eps * u]
    weights = [layer.unsqueeze(0).repeat(batch, 1, 1) for layer in layers]
    outer = _per_member(outer_scale, batch, "outer-layer step multiplier")
    ones = torch.ones(batch, dtype=torch.float64)
    scales = [outer] + [ones.clone() for _ in range(depth - 2)] + [outer.clone()]
    return LinearNetwork(name, weights, scales)


def top_singular_vectors(matrix: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Top-``k`` left (d_out, k) and right (d_in, k) singular vectors of ``matrix``."""
    if not 1 <= k <= min(matrix.shape):
        raise ValueError(f"r_hat must be in [1, {min(matrix.shape)}]; got {k}")
    u, _, vh = torch.linalg.svd(matrix.to(torch.float64), full_matrices=False)
    return u[:, :k], vh[:k].T


def compressed_dln(
    surrogate: Tensor, r_hat: int, depth: int, eps: float, alpha: float | Sequence[float] = 1.0, batch: int = 1
) -> LinearNetwork:
    """The C-DLN: layers (B, r_hat, d_in), (B, r_hat, r_hat) x (L-2), (B, d_out, r_hat), initialised from the
    top-``r_hat`` singular vectors of ``surrogate`` (d_out, d_in); the outer layers step ``alpha`` x."""
    u, v = top_singular_vectors(surrogate, r_hat)
    return spectral_dln("cdln", u, v, depth, eps, alpha, batch)


def _check_eps_orthogonal(weights: list[Tensor], eps: float, what: str) -> None:
    """Raise unless every layer is ``eps x`` a matrix with orthonormal rows or columns (each member)."""
    for layer, weight in enumerate(weights):
        small = min(weight.shape[-2:])
        gram = weight @ weight.mT if weight.shape[-2] == small else weight.mT @ weight
        eye = torch.eye(small, dtype=weight.dtype, device=weight.device)
        if not torch.allclose(gram, eps**2 * eye, rtol=0, atol=1e-8 * eps**2):
            raise ValueError(f"{what}: layer {layer + 1} is not eps x a (partial) orthogonal matrix with eps = {eps:g}")


def yaras_subspace(initial_weights: list[Tensor], end_to_end_gradient: Tensor, rank: int, eps: float) -> Tensor:
    """Yaras et al.'s ``V_{1,1}`` (B, d_in, 2 rank): the input-side subspace in which the first layer moves.

    With the first-layer gradient at initialisation ``G_1 = (W_L ... W_2)^T G`` (G the loss gradient
    w.r.t. the end-to-end matrix, (B, d_out, d_in)) and its top-``rank`` singular vectors
    ``G_1 ~ U_g S V_g^T``, the first layer stays ``eps x`` an isometry on the invariant subspace
    ``V_{1,2} = span(V_g)^perp`` intersected with ``(W_1(0)^T span(U_g) / eps)^perp`` (the gradient neither acts on it
    nor maps into its image); ``V_{1,1}`` is its orthogonal complement,
    ``span(V_g, W_1(0)^T U_g / eps)``, returned as an orthonormal basis. (Their code computes
    ``V_{1,2}`` as that intersection and takes its complement; for a square ``W_1(0)`` this is the same
    space, tests/test_networks.py checks it. For a rectangular ``W_1(0)`` the pull-back
    ``W_1(0)^T U_g / eps`` is the same formula, now a projection of U_g onto the rows of W_1(0).)
    """
    if len(initial_weights) < 1:
        raise ValueError("need the initial weights of at least one layer")
    first = initial_weights[0]
    width, d_in = first.shape[-2:]
    if not 1 <= rank <= min(width, d_in) or 2 * rank > d_in:
        raise ValueError(f"rank must be in [1, {min(width, d_in // 2)}] (2 x rank <= d_in = {d_in}); got {rank}")
    upstream = product(list(initial_weights[1:])) if len(initial_weights) > 1 else None  # W_L ... W_2
    first_grad = end_to_end_gradient if upstream is None else upstream.mT @ end_to_end_gradient  # (B, width, d_in)
    u, _, vh = torch.linalg.svd(first_grad, full_matrices=False)
    pulled_back = first.mT @ u[..., :rank] / eps  # (B, d_in, rank)
    spanning = torch.cat([vh[..., :rank, :].mT, pulled_back], dim=-1)  # (B, d_in, 2 rank)
    basis, _, _ = torch.linalg.svd(spanning, full_matrices=False)
    return basis[..., : 2 * rank]


def yaras_compressed_dln(
    initial: LinearNetwork, end_to_end_gradient: Tensor, rank: int, eps: float, gamma: float | Sequence[float] = 0.01
) -> LinearNetwork:
    """Yaras et al.'s compressed network for an original DLN ``initial`` (2406.04112; Law of Parsimony).

    Reading of their code (cjyaras/law-of-parsimony ``network.py``: ``compute_factor``,
    ``compress_network``; the same two functions in soominkwon/comp-deep-nets ``network.py``; used with
    ``dlr = 0.01`` in ``fig_compare_iteration_time.ipynb``): for an original DLN of depth L whose layers
    are ``eps x`` (partial) orthogonal matrices, and ``end_to_end_gradient`` the loss gradient w.r.t.
    its end-to-end matrix at initialisation, (B, d_out, d_in) (``rank`` = the target rank r),

    - ``V = V_{1,1}`` (d_in, 2r) from :func:`yaras_subspace` (complement of the invariant subspace of
      the first-layer gradient at initialisation);
    - ``U = U_{L,1} = W(0) V / eps^L`` (d_out, 2r): the outer factors are at unit scale and built from
      ``W(0) = W_L(0) ... W_1(0)``;
    - the network ``W = U (eps I)^L V^T``: L + 2 factors ``V^T, eps I_{2r} (L times), U``, so its
      end-to-end matrix at initialisation is ``W(0) V V^T`` (the original's, projected onto V;
      ``U U^T W(0)`` when built on the transpose, below);
    - the two outer factors V^T and U step at ``gamma x`` the learning rate, the inner ones at 1x.

    Their code and theory have square layers. Rectangular targets (original width max(d_out, d_in)):
    when d_out <= d_in the first original layer is square and the formulas above apply as they stand;
    when d_out > d_in they are applied to the transposed network ``W^T = W_1^T ... W_L^T`` (whose first
    layer, ``W_L^T``, is square): ``U = U_{L,1}`` from the last layer's gradient, ``V = W(0)^T U / eps^L``.
    The factor built from W(0) then has columns of norm <= 1 (an orthonormal set mapped by an original
    layer with orthonormal rows); for square targets both are orthonormal.
    Building from the non-square side instead misses the directions the gradient opens outside the
    range of ``W_1(0)``: with gamma = 0 on MF the network then no longer tracks the original DLN, which
    it does (up to the eps^L complement ``W(0) (I - V V^T)``) for every shape this way; see
    tests/test_networks.py.

    One member per member of ``initial`` (its own W(0) and gradient); ``gamma`` is one value or one
    per member.
    """
    weights = [w.to(torch.float64) for w in initial.weights]
    _check_eps_orthogonal(weights, eps, "yaras_compressed_dln: the initial network")
    gradient = end_to_end_gradient.to(torch.float64)
    if gradient.ndim == 2:
        gradient = gradient.unsqueeze(0).expand(initial.batch, -1, -1)
    expected = (initial.batch, weights[-1].shape[-2], weights[0].shape[-1])
    if tuple(gradient.shape) != expected:
        raise ValueError(f"end_to_end_gradient must have shape {expected}; got {tuple(gradient.shape)}")
    if gradient.shape[-2] > gradient.shape[-1]:  # d_out > d_in: build on the transpose, W^T = W_1^T ... W_L^T
        u = yaras_subspace([w.mT for w in reversed(weights)], gradient.mT, rank, eps)
        v = product(weights).mT @ u / eps**initial.depth
    else:
        v = yaras_subspace(weights, gradient, rank, eps)
        u = product(weights) @ v / eps**initial.depth
    batch, width = initial.batch, 2 * rank
    inner = eps * torch.eye(width, dtype=torch.float64).expand(batch, width, width)
    layers = [v.mT.contiguous()] + [inner.clone() for _ in range(initial.depth)] + [u]
    outer = _per_member(gamma, batch, "outer-factor step multiplier gamma")
    ones = torch.ones(batch, dtype=torch.float64)
    scales = [outer] + [ones.clone() for _ in range(initial.depth)] + [outer.clone()]
    return LinearNetwork("yaras", layers, scales)


def yaras_dln(
    loss_grad: Callable[[Tensor], Tensor],
    d_out: int,
    d_in: int,
    depth: int,
    eps: float,
    init_seeds: Sequence[int],
    rank: int,
    gamma: float | Sequence[float] = 0.01,
    width: int | None = None,
) -> LinearNetwork:
    """Yaras et al.'s network built from the original DLN of each init seed (:func:`original_dln`).

    ``loss_grad`` maps end-to-end matrices (B, d_out, d_in) to the loss gradient, e.g.
    ``problem.loss_grad`` of a CPU float64 problem. Width ``2 rank``, depth ``depth + 2``; see
    :func:`yaras_compressed_dln`.
    """
    initial = original_dln(d_out, d_in, depth, eps, init_seeds, width)
    return yaras_compressed_dln(initial, loss_grad(initial.end_to_end()), rank, eps, gamma)


def check_chain(weights: Sequence[Tensor], d_out: int, d_in: int) -> None:
    """Raise ``ValueError`` unless the weights chain into a (d_out, d_in) end-to-end matrix: layer l is
    (B, n_{l+1}, n_l), one B, n_0 = d_in, n_L = d_out."""
    shapes = [tuple(w.shape) for w in weights]
    problem = f"weights {shapes} do not chain into the problem's ({d_out}, {d_in}) end-to-end matrix"
    if not shapes or any(len(s) != 3 for s in shapes):
        raise ValueError(f"{problem}: want (B, n_out, n_in) layers")
    batch = shapes[0][0]
    if any(s[0] != batch for s in shapes) or batch < 1:
        raise ValueError(f"{problem}: batch sizes differ")
    if shapes[0][2] != d_in or shapes[-1][1] != d_out:
        raise ValueError(problem)
    for below, above in zip(shapes, shapes[1:], strict=False):
        if above[2] != below[1]:
            raise ValueError(f"{problem}: layer of shape {above} cannot follow {below}")
