"""The nonlinear experiment: model construction, the C-DLN block init, optimiser groups, training."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from cdln.cli import main
from cdln.data.fashion_mnist import load_fashion_mnist, synthetic_fashion_mnist, to_tensors
from cdln.nonlinear import NonlinearConfig, block_surrogate, build_model, param_groups, train_classifier

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    directory = tmp_path_factory.mktemp("fashion")
    train, test = load_fashion_mnist(synthetic_fashion_mnist(directory, n_train=600, n_test=200, seed=0))
    return to_tensors(train, test, CPU, torch.float64)


def small(model: str = "cdln", **overrides) -> NonlinearConfig:
    values = dict(model=model, hidden=[32], width=48, r_hat=20, batch_size=32, steps=40, eval_every=10,
                  surrogate_batch=128)  # fmt: skip
    values.update(overrides)
    return NonlinearConfig(**values)


def test_models_share_trunk_and_head_initialisation(data):
    x, y = data[0], data[1]
    models = {name: build_model(small(name), x, y, 10)[0] for name in ("mlp", "dln", "cdln")}
    reference = models["mlp"].state_dict()
    for name in ("dln", "cdln"):
        state = models[name].state_dict()
        for key, value in reference.items():
            assert torch.equal(state[key], value), (name, key)
    assert models["mlp"].block is None


def test_block_shapes_and_parameter_counts(data):
    x, y = data[0], data[1]
    dln, _ = build_model(small("dln", depth=3), x, y, 10)
    cdln, _ = build_model(small("cdln", depth=4), x, y, 10)
    assert [tuple(w.shape) for w in dln.block.layers] == [(48, 32), (48, 48), (32, 48)]
    assert [tuple(w.shape) for w in cdln.block.layers] == [(20, 32), (20, 20), (20, 20), (32, 20)]
    assert sum(w.numel() for w in dln.block.parameters()) == 32 * 48 + 48 * 48 + 48 * 32
    assert sum(w.numel() for w in cdln.block.parameters()) == 2 * 32 * 20 + 2 * 20 * 20


def test_dln_block_is_eps_times_orthogonal(data):
    model, _ = build_model(small("dln", eps=0.1), data[0], data[1], 10)
    for weight in model.block.layers:
        small_side = min(weight.shape)
        gram = weight @ weight.T if weight.shape[0] == small_side else weight.T @ weight
        assert torch.allclose(gram, 0.01 * torch.eye(small_side, dtype=weight.dtype), atol=1e-12)


def test_surrogate_is_the_negative_gradient_at_zero(data):
    x, y = data[0][:100], data[1][:100]
    model, _ = build_model(small("mlp"), data[0], data[1], 10)
    surrogate = block_surrogate(model, x, y)
    h = model.features(x).detach()
    probabilities = torch.softmax(model.head(torch.zeros_like(h)), dim=1)
    residual = probabilities - nn.functional.one_hot(y, 10).to(h.dtype)
    expected = -(model.head.weight.T @ residual.T @ h) / len(x)  # d loss / dE = W_head^T (P - Y)^T H / n
    assert torch.allclose(surrogate, expected.detach(), atol=1e-12)
    assert torch.linalg.matrix_rank(surrogate) <= 10  # the head has 10 outputs


def test_cdln_block_is_spectral_from_the_surrogate(data):
    config = small("cdln", eps=0.1)
    model, info = build_model(config, data[0], data[1], 10)
    first, inner, last = model.block.layers
    assert torch.allclose(first @ first.T, 0.01 * torch.eye(20, dtype=first.dtype), atol=1e-12)
    assert torch.allclose(inner, 0.1 * torch.eye(20, dtype=inner.dtype))
    # The top singular directions of the init's end-to-end block are those of the surrogate.
    generator = torch.Generator().manual_seed(config.init_seed + 1_000_003)
    index = torch.randperm(len(data[0]), generator=generator)[: config.surrogate_batch]
    surrogate = block_surrogate(model, data[0][index], data[1][index])
    u, s, vh = torch.linalg.svd(surrogate)
    end_to_end = model.block.end_to_end().detach()
    for i in range(5):  # well-separated leading singular values
        assert abs(float(u[:, i] @ end_to_end @ vh[i])) == pytest.approx(0.1**3, rel=1e-8)
    assert info["block"] == "cdln" and len(info["surrogate_top_singular_values"]) == 20


def test_cdln_outer_layers_step_at_alpha_times_lr(data):
    config = small("cdln", alpha=3.0, lr=0.01)
    model, _ = build_model(config, data[0], data[1], 10)
    groups = param_groups(model, config)
    layers = list(model.block.layers)
    outer = next(g for g in groups if g["lr"] == pytest.approx(0.03))
    assert {id(p) for p in outer["params"]} == {id(layers[0]), id(layers[-1])}
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))


def test_training_learns_and_is_reproducible(data):
    record, curves = train_classifier(small("mlp", steps=60), data, CPU)
    assert list(curves.columns[:6]) == ["member", "iteration", "seconds", "train_loss", "test_loss", "test_accuracy"]
    assert curves["iteration"].tolist() == [0, 10, 20, 30, 40, 50, 60]
    assert curves["test_accuracy"].iloc[-1] > 0.5  # 10 classes: chance is 0.1
    assert curves["seconds"].is_monotonic_increasing
    again, curves_again = train_classifier(small("mlp", steps=60), data, CPU)
    assert curves_again["test_accuracy"].tolist() == curves["test_accuracy"].tolist()
    assert record["parameters"]["block"] == 0 and record["timing"]["iterations"] == 60


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"model": "resnet"}, "--model must be one of"),
        ({"optimizer": "lbfgs"}, "--optimizer must be one of"),
        ({"r_hat": 64}, "--r-hat must be <= the feature size 32"),
        ({"depth": 1}, "--depth must be >= 2"),
        ({"lr": 0.0}, "--lr must be a finite number > 0"),
        ({"hidden": []}, "--hidden needs at least one width"),
    ],
)
def test_invalid_options_are_named(overrides, message):
    with pytest.raises(ValueError, match=message):
        small(**overrides).validate()


def test_cli_trains_on_a_configured_directory(tmp_path):
    synthetic_fashion_mnist(tmp_path / "data", n_train=200, n_test=50)
    out = tmp_path / "run"
    code = main(["nonlinear", "--data-dir", str(tmp_path / "data"), "--out", str(out), "--model", "cdln",
                 "--hidden", "16", "--width", "16", "--r-hat", "4", "--steps", "5", "--eval-every", "5",
                 "--batch-size", "16", "--surrogate-batch", "64", "--device", "cpu", "--quiet"])  # fmt: skip
    assert code == 0
    record = json.loads((out / "record.json").read_text())
    assert record["config"]["model"] == "cdln" and record["parameters"]["block"] == 2 * 16 * 4 + 4 * 4
    assert record["data"]["files"]["train-images-idx3-ubyte"].startswith(str(tmp_path / "data"))
