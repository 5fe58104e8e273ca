"""The nonlinear experiment: an MLP classifier, alone or with a block (deep linear, or ReLU) before its head.

All models share one trunk and head (same shapes, same initial weights for a given seed):

- ``mlp``:  x -> trunk (Linear-ReLU-...-Linear-ReLU, features of size f) -> head Linear(f, 10)
- ``dln``:  trunk -> DLN block of ``depth`` linear layers f -> w -> ... -> w -> f -> head;
            every block layer is ``eps *`` a random orthogonal matrix (the original DLN init).
- ``cdln``: trunk -> compressed block f -> r_hat -> ... -> r_hat -> f -> head, initialised as a
            C-DLN: ``W_1 = eps V^T``, inner ``eps I``, ``W_L = eps U``, with U, V the top-r_hat
            singular vectors of a surrogate of the block's target, and the outer block layers
            stepped at ``alpha x`` the learning rate.

There is no target matrix here, so the C-DLN surrogate is the negative gradient of the training
loss with respect to the block's end-to-end matrix at initialisation (the direction GD first
moves it), on a seeded batch of ``surrogate_batch`` training examples. Because the head has 10
outputs, that gradient has rank <= 10, which is why r_hat = 2 x 10 is the natural choice.

Two more models are the authors' own construction (soominkwon/comp-deep-nets: ``network.py``
``kwon_compress_network_cls`` builds the weights, ``compute_outputs(..., nonlinear=True)`` puts a ReLU
after every layer but the last, ``solver.py`` ``train_cls`` trains them): a bottleneck of
``depth`` bias-free layers inside the MLP, each followed by a ReLU, every layer
``init_scale x`` a random orthogonal matrix (no spectral init):

- ``relu_dln``:  trunk -> f -> w -> ... -> w -> f (ReLU after each) -> head, w = ``width``;
- ``relu_cdln``: trunk -> f -> r_hat -> ... -> r_hat -> f (ReLU after each) -> head, the same block
                 at the compressed width, with a discrepant rate: one layer steps at ``alpha x lr``.
                 Which layer: ``alpha_layer="input"`` (default) is the network's first layer, the one
                 ``train_cls`` labels ``'factor'`` (``['factor'] + (depth - 1) * ['weight']`` over the
                 whole weight list, whose first entry is the input layer); ``"bottleneck"`` is the
                 bottleneck's first layer (f -> r_hat) instead.

Training: cross-entropy; minibatch Adam or SGD with seeded sampling, or, with ``batch_size=None``, full-batch
steps (every step's gradient over the whole training set), with plain gradient descent (``gd``, the authors'
``train_cls`` with optax ``sgd``) or Adam. Every ``eval_every`` steps the test accuracy/loss is computed on the
whole test set with the clock paused.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import pandas as pd
import torch
from torch import Tensor, nn

from cdln import seeding
from cdln.devices import SyncTimer, device_name
from cdln.engine import DivergenceError
from cdln.networks import random_orthogonal, top_singular_vectors
from cdln.progress import time_left
from cdln.records import make_record

MODELS: tuple[str, ...] = ("mlp", "dln", "cdln", "relu_dln", "relu_cdln")
OPTIMIZERS: tuple[str, ...] = ("adam", "sgd", "gd")  # sgd: with momentum; gd: plain gradient steps
ALPHA_LAYERS: tuple[str, ...] = ("input", "bottleneck")


def _option(default: Any, help: str) -> Any:  # noqa: A002
    """A field with its help text beside it (the CLI's ``--help`` reads it)."""
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={"help": help})
    return field(default=default, metadata={"help": help})


@dataclass
class NonlinearConfig:
    """One training run of one model; every field is a CLI flag and a config key (its help beside it)."""

    model: str = _option("cdln", f"classifier: {', '.join(MODELS)} (module docstring)")
    hidden: list[int] = _option([512, 512], "trunk widths; the last is the feature size f")
    depth: int = _option(3, "layers of the block, >= 2")
    width: int = _option(512, "width w of the DLN block (and of relu_dln's bottleneck)")
    r_hat: int = _option(20, "width of the C-DLN block (and of relu_cdln's bottleneck), <= f")
    eps: float = _option(0.1, "block init scale: eps x random orthogonal (dln), eps x spectral (cdln)")
    alpha: float = _option(1.0, "step multiplier of the C-DLN block's outer layers; relu_cdln: of its alpha_layer")
    init_scale: float = _option(1.0, "relu_dln/relu_cdln: every bottleneck layer is init_scale x random orthogonal")
    alpha_layer: str = _option("input", f"relu_cdln: the layer at alpha x lr, one of {', '.join(ALPHA_LAYERS)}")
    optimizer: str = _option("adam", "adam, sgd (with --momentum) or gd (plain gradient steps, the authors' train_cls)")
    lr: float = _option(1e-3, "step size, > 0")
    momentum: float = _option(0.9, "sgd's momentum, in [0, 1)")
    batch_size: int | None = _option(256, "examples per step, or 'full' (every step over the whole training set)")
    steps: int = _option(1500, "optimiser steps")
    eval_every: int = _option(25, "steps between test-set evaluations (clock paused)")
    surrogate_batch: int = _option(2048, "training examples for the C-DLN block's init gradient")
    train_subset: int | None = _option(None, "train on the first n training images (default all 60,000)")
    test_subset: int | None = _option(None, "test on the first n test images (default all 10,000)")
    init_seed: int = _option(0, "seed of the trunk, head and block inits and of the minibatch order")
    dtype: str = _option("float32", "float32 or float64")

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first invalid option and its valid values."""
        if self.model not in MODELS:
            raise ValueError(f"--model must be one of {list(MODELS)}; got {self.model!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"--optimizer must be one of {list(OPTIMIZERS)}; got {self.optimizer!r}")
        if not self.hidden or any(h < 1 for h in self.hidden):
            raise ValueError(f"--hidden needs at least one width >= 1; got {self.hidden}")
        for name in ("depth", "width", "r_hat", "batch_size", "steps", "eval_every", "surrogate_batch"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1; got {getattr(self, name)}")
        if self.depth < 2:
            raise ValueError(f"--depth must be >= 2 for a linear block; got {self.depth}")
        if self.r_hat > self.hidden[-1]:
            raise ValueError(f"--r-hat must be <= the feature size {self.hidden[-1]}; got {self.r_hat}")
        if self.alpha_layer not in ALPHA_LAYERS:
            raise ValueError(f"--alpha-layer must be one of {list(ALPHA_LAYERS)}; got {self.alpha_layer!r}")
        for name in ("eps", "alpha", "lr", "init_scale"):
            value = getattr(self, name)
            if not math.isfinite(value) or value <= 0:
                raise ValueError(f"--{name.replace('_', '-')} must be a finite number > 0; got {value}")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"--momentum must be in [0, 1); got {self.momentum}")
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"--dtype must be float32 or float64; got {self.dtype!r}")
        for name in ("train_subset", "test_subset"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1; got {getattr(self, name)}")


class LinearBlock(nn.Module):
    """``depth`` bias-free linear layers, no nonlinearity: ``x -> x W_1^T ... W_L^T``."""

    def __init__(self, weights: list[Tensor]) -> None:
        super().__init__()
        self.layers = nn.ParameterList([nn.Parameter(w.clone()) for w in weights])

    def forward(self, x: Tensor) -> Tensor:
        for weight in self.layers:
            x = x @ weight.T
        return x

    def end_to_end(self) -> Tensor:
        product = self.layers[0]
        for weight in self.layers[1:]:
            product = weight @ product
        return product


class ReluBlock(nn.Module):
    """``depth`` bias-free linear layers, each followed by a ReLU: ``x -> relu(... relu(x W_1^T) ... W_L^T)``."""

    def __init__(self, weights: list[Tensor]) -> None:
        super().__init__()
        self.layers = nn.ParameterList([nn.Parameter(w.clone()) for w in weights])

    def forward(self, x: Tensor) -> Tensor:
        for weight in self.layers:
            x = torch.relu(x @ weight.T)
        return x


class Classifier(nn.Module):
    """Trunk -> optional block (linear or ReLU) -> head."""

    def __init__(self, trunk: nn.Sequential, head: nn.Linear, block: nn.Module | None = None) -> None:
        super().__init__()
        self.trunk, self.head, self.block = trunk, head, block

    def features(self, x: Tensor) -> Tensor:
        return self.trunk(x)

    def forward(self, x: Tensor) -> Tensor:
        h = self.trunk(x)
        if self.block is not None:
            h = self.block(h)
        return self.head(h)


def _trunk_and_head(
    n_in: int, hidden: list[int], n_classes: int, generator: torch.Generator
) -> tuple[nn.Sequential, nn.Linear]:
    """PyTorch's default Linear init (uniform +-1/sqrt(fan_in)), drawn from ``generator``."""
    layers: list[nn.Module] = []
    dims = [n_in, *hidden]
    for n_prev, n_next in zip(dims[:-1], dims[1:], strict=True):
        layers += [_linear(n_prev, n_next, generator), nn.ReLU()]
    return nn.Sequential(*layers), _linear(hidden[-1], n_classes, generator)


def _linear(n_in: int, n_out: int, generator: torch.Generator) -> nn.Linear:
    layer = nn.Linear(n_in, n_out)
    bound = 1.0 / math.sqrt(n_in)
    with torch.no_grad():
        layer.weight.copy_(torch.empty(n_out, n_in).uniform_(-bound, bound, generator=generator))
        layer.bias.copy_(torch.empty(n_out).uniform_(-bound, bound, generator=generator))
    return layer


def block_surrogate(model: Classifier, x: Tensor, y: Tensor) -> Tensor:
    """Negative gradient of the loss w.r.t. a zero end-to-end block matrix E (f x f) on (x, y)."""
    with torch.no_grad():
        h = model.features(x)
    end_to_end = torch.zeros(h.shape[1], h.shape[1], dtype=h.dtype, device=h.device, requires_grad=True)
    loss = nn.functional.cross_entropy(model.head(h @ end_to_end.T), y)
    (grad,) = torch.autograd.grad(loss, end_to_end)
    return -grad.detach()


def build_model(
    config: NonlinearConfig, x_train: Tensor, y_train: Tensor, n_classes: int
) -> tuple[Classifier, dict[str, Any]]:
    """The model ``config.model`` (float64 on the CPU); also returns how its block was initialised."""
    generator = seeding.generator(config.init_seed, "init")
    trunk, head = _trunk_and_head(x_train.shape[1], config.hidden, n_classes, generator)
    model = Classifier(trunk.double(), head.double())
    f = config.hidden[-1]
    info: dict[str, Any] = {"block": None}
    block_generator = seeding.generator(config.init_seed, "block")  # separate stream: the trunk
    if config.model == "dln":  # stays identical across models
        dims = [f] + [config.width] * (config.depth - 1) + [f]
        weights = [
            config.eps * random_orthogonal(o, i, block_generator) for i, o in zip(dims[:-1], dims[1:], strict=True)
        ]
        model.block = LinearBlock(weights)
        info = {"block": "dln", "init": f"eps * random orthogonal, eps={config.eps}"}
    elif config.model == "cdln":
        index = torch.randperm(len(x_train), generator=block_generator)[: config.surrogate_batch]
        surrogate = block_surrogate(model, x_train[index].cpu().double(), y_train[index].cpu())
        u, v = top_singular_vectors(surrogate, config.r_hat)
        inner = [config.eps * torch.eye(config.r_hat, dtype=torch.float64)] * (config.depth - 2)
        model.block = LinearBlock([config.eps * v.T, *inner, config.eps * u])
        singular = torch.linalg.svdvals(surrogate)
        info = {
            "block": "cdln",
            "init": "eps * top-r_hat singular vectors of -dLoss/dE at E = 0 (E = block end-to-end matrix)",
            "surrogate_batch": len(index),
            "surrogate_top_singular_values": singular[: config.r_hat].tolist(),
        }
    elif config.model in ("relu_dln", "relu_cdln"):
        inner = config.width if config.model == "relu_dln" else config.r_hat
        dims = [f] + [inner] * (config.depth - 1) + [f]
        weights = [
            config.init_scale * random_orthogonal(o, i, block_generator)
            for i, o in zip(dims[:-1], dims[1:], strict=True)
        ]
        model.block = ReluBlock(weights)
        info = {
            "block": config.model,
            "init": f"init_scale * random orthogonal, init_scale={config.init_scale}; no bias; ReLU after every layer",
            "widths": dims,
        }
        if config.model == "relu_cdln":
            info["alpha_layer"] = config.alpha_layer
    return model, info


def param_groups(model: Classifier, config: NonlinearConfig) -> list[dict[str, Any]]:
    """Optimiser groups: the C-DLN's outer block layers step at ``alpha x lr``; so does relu_cdln's
    ``alpha_layer`` (the network's first layer, weight and bias, or the bottleneck's first layer)."""
    if config.model == "relu_cdln" and model.block is not None:
        first = list(model.trunk[0].parameters()) if config.alpha_layer == "input" else [model.block.layers[0]]
        chosen = {id(p) for p in first}
        rest = [p for p in model.parameters() if id(p) not in chosen]
        return [{"params": rest, "lr": config.lr}, {"params": first, "lr": config.alpha * config.lr}]
    if config.model != "cdln" or model.block is None:
        return [{"params": list(model.parameters()), "lr": config.lr}]
    layers = list(model.block.layers)
    outer, inner = [layers[0], layers[-1]], layers[1:-1]
    rest = list(model.trunk.parameters()) + list(model.head.parameters()) + inner
    return [{"params": rest, "lr": config.lr}, {"params": outer, "lr": config.alpha * config.lr}]


def count_parameters(model: Classifier) -> dict[str, int]:
    block = sum(p.numel() for p in model.block.parameters()) if model.block is not None else 0
    return {"total": sum(p.numel() for p in model.parameters()), "block": block}


@torch.no_grad()
def evaluate(model: Classifier, x: Tensor, y: Tensor, chunk: int = 5000) -> tuple[float, float]:
    """``(accuracy, mean cross-entropy)`` on ``(x, y)``, in chunks to bound memory."""
    correct, total_loss = 0, 0.0
    for start in range(0, len(x), chunk):
        logits = model(x[start : start + chunk])
        target = y[start : start + chunk]
        correct += int((logits.argmax(dim=1) == target).sum())
        total_loss += float(nn.functional.cross_entropy(logits, target, reduction="sum"))
    return correct / len(x), total_loss / len(x)


def train_classifier(
    config: NonlinearConfig,
    data: tuple[Tensor, Tensor, Tensor, Tensor],
    device: torch.device,
    progress: Callable[[str], None] | None = None,
) -> tuple[dict[str, Any], pd.DataFrame]:
    """Train one model; returns ``(record, curves)`` with curves columns member, iteration, seconds,
    train_loss (mean over the steps since the last checkpoint: over whole-set losses in full batch),
    test_loss, test_accuracy."""
    config.validate()
    dtype = {"float32": torch.float32, "float64": torch.float64}[config.dtype]
    x_train, y_train, x_test, y_test = data
    if config.train_subset is not None:
        x_train, y_train = x_train[: config.train_subset], y_train[: config.train_subset]
    if config.test_subset is not None:
        x_test, y_test = x_test[: config.test_subset], y_test[: config.test_subset]
    n_classes = int(max(int(y_train.max()), int(y_test.max()))) + 1
    model, init_info = build_model(config, x_train, y_train, n_classes)
    model = model.to(device=device, dtype=dtype)
    x_train, x_test = x_train.to(device=device, dtype=dtype), x_test.to(device=device, dtype=dtype)
    y_train, y_test = y_train.to(device), y_test.to(device)
    groups = param_groups(model, config)
    if config.optimizer == "adam":
        optimizer: torch.optim.Optimizer = torch.optim.Adam(groups)
    else:
        optimizer = torch.optim.SGD(groups, momentum=config.momentum if config.optimizer == "sgd" else 0.0)
    full_batch = config.batch_size is None
    sampler = seeding.generator(config.init_seed, "batches")
    order = torch.randperm(len(x_train), generator=sampler)
    position = 0

    rows: list[tuple[int, int, float, float, float, float]] = []
    timer = SyncTimer(device)
    running, seen = 0.0, 0

    def checkpoint(step: int) -> None:
        nonlocal running, seen
        timer.pause()
        model.eval()
        accuracy, test_loss = evaluate(model, x_test, y_test)
        model.train()
        train_loss = running / seen if seen else math.nan
        if seen and not math.isfinite(train_loss):
            raise DivergenceError(step, advice=f"try a smaller --lr than {config.lr:g}")
        rows.append((0, step, timer.elapsed, train_loss, test_loss, accuracy))
        running, seen = 0.0, 0
        if progress is not None:
            left = time_left(timer.elapsed, step, config.steps)
            progress(f"step {step:>6d}/{config.steps}  {timer.elapsed:7.2f}s  test acc {accuracy:.4f}  {left}")
        timer.start()

    checkpoint(0)
    for step in range(1, config.steps + 1):
        if full_batch:
            loss = nn.functional.cross_entropy(model(x_train), y_train)
        else:
            if position + config.batch_size > len(order):
                order, position = torch.randperm(len(x_train), generator=sampler), 0
            index = order[position : position + config.batch_size].to(device)
            position += config.batch_size
            loss = nn.functional.cross_entropy(model(x_train[index]), y_train[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        running += float(loss.detach())  # also synchronises the device once per step
        seen += 1
        if step % config.eval_every == 0 or step == config.steps:
            checkpoint(step)
    timer.pause()
    curves = pd.DataFrame(rows, columns=["member", "iteration", "seconds", "train_loss", "test_loss", "test_accuracy"])
    curves["model"], curves["init_seed"] = config.model, config.init_seed
    final = curves.iloc[-1]
    record = make_record(
        "nonlinear",
        experiment="nonlinear",
        config=asdict(config),
        data={"n_train": len(x_train), "n_test": len(x_test), "n_classes": n_classes},
        block_init=init_info,
        parameters={"model": count_parameters(model)["total"], **count_parameters(model)},
        members=[
            {
                "member": 0,
                "init_seed": config.init_seed,
                "final_test_accuracy": float(final["test_accuracy"]),
                "best_test_accuracy": float(curves["test_accuracy"].max()),
                "final_test_loss": float(final["test_loss"]),
            }
        ],
        timing={
            "seconds": timer.elapsed,
            "iterations": config.steps,
            "seconds_per_iteration": timer.elapsed / config.steps,
        },
        device={"type": device.type, "name": device_name(device), "dtype": config.dtype},
    )
    return record, curves
