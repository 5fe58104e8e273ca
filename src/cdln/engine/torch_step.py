"""The reference GD step in torch: closed-form layer gradients, any device, any problem.

For a loss f(W) of the end-to-end matrix ``W = W_L ... W_1`` with G = df/dW, the gradient of layer l is
``(W_L ... W_{l+1})^T G (W_{l-1} ... W_1)^T``: one forward sweep of prefix products, the problem's loss
gradient, one backward sweep; about 3(L-1) batched products and no autograd. Every compiled step is tested
against this one, and it is the GPU path.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from typing import TYPE_CHECKING

import torch
from torch import Tensor

if TYPE_CHECKING:
    from cdln.problems import Problem

LossGrad = Callable[[Tensor], Tensor]  # (B, d_out, d_in) end-to-end matrices -> the loss gradient, same shape


class Workspace:
    """Preallocated buffers for the step of one network with fixed shapes, reused every step (fresh
    temporaries of (B, d, d) would be allocated, and on the CPU page-faulted, on every step).
    ``prefixes[l]`` = W_{l+2} ... W_1 (B, n_{l+2}, d_in); ``upstreams[l]`` = (W_L ... W_{l+2})^T G
    (B, n_{l+1}, d_in); ``grads[l]`` has the shape of ``weights[l]``."""

    def __init__(self, weights: list[Tensor]) -> None:
        self.shapes = [tuple(w.shape) for w in weights]
        batch, d_in = self.shapes[0][0], self.shapes[0][-1]
        new = {"dtype": weights[0].dtype, "device": weights[0].device}
        self.prefixes = [torch.empty(batch, shape[-2], d_in, **new) for shape in self.shapes[1:]]
        self.upstreams = [torch.empty(batch, shape[-1], d_in, **new) for shape in self.shapes[2:]]
        self.grads = [torch.empty(shape, **new) for shape in self.shapes]

    def fits(self, weights: list[Tensor]) -> bool:
        return [tuple(w.shape) for w in weights] == self.shapes


def forward_products(weights: list[Tensor], workspace: Workspace) -> Tensor:
    """Fill ``workspace.prefixes`` and return the end-to-end matrix W_L ... W_1, (B, d_out, d_in)."""
    prefixes = [weights[0], *workspace.prefixes]
    for layer in range(1, len(weights)):
        torch.bmm(weights[layer], prefixes[layer - 1], out=prefixes[layer])
    return prefixes[-1]


def backward_products(weights: list[Tensor], loss_grad: Tensor, workspace: Workspace) -> list[Tensor]:
    """Layer gradients from G (B, d_out, d_in), after :func:`forward_products`; they live in ``workspace.grads``."""
    grads = workspace.grads
    if len(weights) == 1:
        grads[0].copy_(loss_grad)
        return grads
    prefixes = [weights[0], *workspace.prefixes]
    targets = [grads[0], *workspace.upstreams]
    upstream = loss_grad  # (W_L ... W_{l+1})^T G; the last one is the first layer's gradient
    for layer in range(len(weights) - 1, 0, -1):
        torch.bmm(upstream, prefixes[layer - 1].mT, out=grads[layer])
        upstream = torch.bmm(weights[layer].mT, upstream, out=targets[layer - 1])
    return grads


def layer_gradients(weights: list[Tensor], problem: Problem, workspace: Workspace | None = None) -> list[Tensor]:
    """Closed-form gradients of ``problem``'s training loss w.r.t. each layer (same shapes as ``weights``).

    With a ``workspace`` they live in its buffers (overwritten by the next call)."""
    workspace = workspace if workspace is not None and workspace.fits(weights) else Workspace(weights)
    return backward_products(weights, problem.loss_grad(forward_products(weights, workspace)), workspace)


class TorchSteps:
    """GD steps of a group of networks on one problem, sharing one loss-gradient call per step: the
    networks' end-to-end matrices are stacked into one (sum of batches, d_out, d_in) call (one pass over an
    MS operator for all of them). ``ids`` name the networks stepped (a workspace each); ``clock`` (optional)
    times each network's own work and the shared call."""

    def __init__(self, loss_grad: LossGrad) -> None:
        self.loss_grad = loss_grad
        self.workspaces: dict[int, Workspace] = {}

    def run(self, ids: list[int], works: list[list[Tensor]], neg_steps: list[list[Tensor]], n_steps: int, clock=None):
        for k, work in zip(ids, works, strict=True):
            if k not in self.workspaces or not self.workspaces[k].fits(work):
                self.workspaces[k] = Workspace(work)  # new, or members dropped
        spaces = [self.workspaces[k] for k in ids]
        for _ in range(n_steps):
            ends = []
            for k, work, workspace in zip(ids, works, spaces, strict=True):
                with clock.timed(k) if clock else nullcontext():
                    ends.append(forward_products(work, workspace))
            with clock.timed() if clock else nullcontext():
                grad = self.loss_grad(ends[0] if len(ends) == 1 else torch.cat(ends))
            offset = 0
            for k, work, workspace, steps in zip(ids, works, spaces, neg_steps, strict=True):
                with clock.timed(k) if clock else nullcontext():
                    part = grad[offset : offset + work[0].shape[0]]
                    torch._foreach_addcmul_(work, backward_products(work, part, workspace), steps)
                offset += work[0].shape[0]
