"""Deep linear networks: the original DLN, the compressed C-DLN and the baselines.

A network is a list of layer weights ``W_1, ..., W_L`` (``W_1`` acts first), each stored with a
leading batch dimension, shape ``(B, n_out, n_in)``, so that B runs of the same shapes (seeds,
sweep values) train together. Each layer carries a per-member step-size multiplier of shape (B,):
the C-DLN's discrepant rate alpha and the Yaras et al. gamma live there.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

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
        generator = torch.Generator().manual_seed(int(seed))
        members.append([eps * random_orthogonal(o, i, generator) for o, i in _layer_shapes(d_out, d_in, width, depth)])
    weights = [torch.stack(layer) for layer in zip(*members, strict=True)]
    ones = torch.ones(len(init_seeds), dtype=torch.float64)
    return LinearNetwork(name, weights, [ones.clone() for _ in weights])


def original_dln(d_out: int, d_in: int, depth: int, eps: float, init_seeds: Sequence[int], width: int | None = None):
    """The overparameterised DLN of width ``max(d_out, d_in)`` (square layers for square targets)."""
    return random_dln("original", d_out, d_in, width or max(d_out, d_in), depth, eps, init_seeds)


def narrow_dln(d_out: int, d_in: int, depth: int, eps: float, init_seeds: Sequence[int], width: int) -> LinearNetwork:
    """Baseline: a DLN of width ``width`` (= r_hat) with random orthogonal init."""
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
    """The C-DLN: spectral init from the surrogate's top-``r_hat`` singular vectors, outer rate alpha."""
    u, v = top_singular_vectors(surrogate, r_hat)
    return spectral_dln("cdln", u, v, depth, eps, alpha, batch)


def yaras_network(
    initial_gradient: Tensor, r_hat: int, depth: int, eps: float, gamma: float = 0.01, batch: int = 1
) -> LinearNetwork:
    """Yaras et al. (2024) compression: outer factors from the top-``r_hat`` singular subspace of the
    loss gradient at initialisation (``initial_gradient``, (d_out, d_in)), trained at ``gamma x`` rate."""
    u, v = top_singular_vectors(-initial_gradient, r_hat)
    return spectral_dln("yaras", u, v, depth, eps, gamma, batch)
