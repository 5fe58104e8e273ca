"""The reference GD step in torch: closed-form layer gradients, any device, any problem.

For a loss f(W) of the end-to-end matrix ``W = W_L ... W_1`` with G = df/dW, the gradient of layer l is
``(W_L ... W_{l+1})^T G (W_{l-1} ... W_1)^T``: one forward sweep of prefix products, the problem's loss
gradient, one backward sweep; about 3(L-1) batched products and no autograd. Every compiled step is tested
against this one, and it is the GPU path.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from torch import Tensor

if TYPE_CHECKING:
    from cdln.problems import Problem

LossGrad = Callable[[Tensor], Tensor]  # (B, d_out, d_in) end-to-end matrices -> the loss gradient, same shape
LossAndGrad = Callable[[Tensor], tuple[Tensor, Tensor]]  # -> (the loss (B,), its gradient)


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
    """GD steps of one network on one problem in torch. A checkpoint computes the loss gradient at its
    weights along with the loss (one MS operator pass for both) and keeps it for the next step."""

    def __init__(self, loss_grad: LossGrad, loss_and_grad: LossAndGrad) -> None:
        self.loss_grad, self.loss_and_grad = loss_grad, loss_and_grad
        self.workspace: Workspace | None = None
        self._kept: tuple[list[Tensor], Tensor] | None = None  # (the weights list it is for, the gradient)

    def _workspace(self, work: list[Tensor]) -> Workspace:
        if self.workspace is None or not self.workspace.fits(work):
            self.workspace = Workspace(work)  # new, or members dropped
        return self.workspace

    def checkpoint(self, work: list[Tensor]) -> tuple[Tensor, Tensor]:
        """(end-to-end matrices (B, d_out, d_in), training loss (B,)) at ``work``; the end-to-end matrices live
        in the workspace until the next step."""
        end = forward_products(work, self._workspace(work))
        losses, grad = self.loss_and_grad(end)
        self._kept = (work, grad)
        return end, losses

    def run(self, work: list[Tensor], neg_steps: list[Tensor], n_steps: int) -> None:
        """``n_steps`` steps of ``work`` (B, n_out, n_in) in place; ``neg_steps[l]`` (B, 1, 1)."""
        workspace = self._workspace(work)
        kept, self._kept = self._kept, None
        for step in range(n_steps):
            if step == 0 and kept is not None and kept[0] is work:  # the checkpoint's pass, at these weights
                grad = kept[1]
            else:
                grad = self.loss_grad(forward_products(work, workspace))
            torch._foreach_addcmul_(work, backward_products(work, grad, workspace), neg_steps)
