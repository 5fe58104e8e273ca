"""The nonlinear experiment: model construction, the C-DLN block init, optimiser groups, training."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from cdln import seeding
from cdln.cli import main
from cdln.data.fashion_mnist import load_fashion_mnist, synthetic_fashion_mnist, to_tensors
from cdln.nonlinear import (
    MODELS,
    NonlinearConfig,
    ReluBlock,
    block_surrogate,
    build_model,
    param_groups,
    train_classifier,
)

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
    models = {name: build_model(small(name), x, y, 10)[0] for name in MODELS}
    reference = models["mlp"].state_dict()
    for name in MODELS[1:]:
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
    generator = seeding.generator(config.init_seed, "block")  # the stream build_model draws the batch from
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


def test_relu_blocks_shapes_init_and_no_bias(data):
    x, y = data[0], data[1]
    dln, info_dln = build_model(small("relu_dln", init_scale=0.7), x, y, 10)
    cdln, info_cdln = build_model(small("relu_cdln", init_scale=0.7, depth=4), x, y, 10)
    assert isinstance(dln.block, ReluBlock) and isinstance(cdln.block, ReluBlock)
    assert [tuple(w.shape) for w in dln.block.layers] == [(48, 32), (48, 48), (32, 48)]
    assert [tuple(w.shape) for w in cdln.block.layers] == [(20, 32), (20, 20), (20, 20), (32, 20)]
    assert sum(p.numel() for p in cdln.block.parameters()) == 2 * 32 * 20 + 2 * 20 * 20  # bias-free
    for weight in [*dln.block.layers, *cdln.block.layers]:  # init_scale x random orthogonal
        k = min(weight.shape)
        gram = weight @ weight.T if weight.shape[0] == k else weight.T @ weight
        assert torch.allclose(gram, 0.49 * torch.eye(k, dtype=weight.dtype), atol=1e-12)
    assert info_dln["widths"] == [32, 48, 48, 32] and info_cdln["widths"] == [32, 20, 20, 20, 32]
    assert info_cdln["alpha_layer"] == "input" and "alpha_layer" not in info_dln


def test_relu_block_puts_a_relu_after_every_layer(data):
    model, _ = build_model(small("relu_cdln"), data[0], data[1], 10)
    h = model.features(data[0][:50]).detach()
    expected = h
    for weight in model.block.layers:
        expected = torch.clamp(expected @ weight.detach().T, min=0)
    out = model.block(h).detach()
    torch.testing.assert_close(out, expected)
    linear = h
    for weight in model.block.layers:
        linear = linear @ weight.detach().T
    assert (out >= 0).all() and not torch.allclose(out, linear)
    torch.testing.assert_close(model(data[0][:50]), model.head(out))


@pytest.mark.parametrize("alpha_layer", ["input", "bottleneck"])
def test_relu_cdln_discrepant_rate_lands_on_one_layer(data, alpha_layer):
    """One SGD step (no momentum): the chosen layer moves alpha x as far as with alpha = 1, the rest alike."""
    x, y = data[0][:64], data[1][:64]
    deltas = {}
    for alpha in (1.0, 3.0):
        config = small("relu_cdln", alpha=alpha, alpha_layer=alpha_layer, optimizer="sgd", momentum=0.0, lr=0.05)
        model, _ = build_model(config, data[0], data[1], 10)
        before = {name: p.detach().clone() for name, p in model.named_parameters()}
        optimizer = torch.optim.SGD(param_groups(model, config), momentum=0.0)
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
        deltas[alpha] = {name: p.detach() - before[name] for name, p in model.named_parameters()}
    chosen = {"input": {"trunk.0.weight", "trunk.0.bias"}, "bottleneck": {"block.layers.0"}}[alpha_layer]
    for name, delta in deltas[1.0].items():
        assert float(delta.abs().max()) > 0, name
        ratio = 3.0 if name in chosen else 1.0
        torch.testing.assert_close(deltas[3.0][name], ratio * delta, rtol=1e-10, atol=1e-15)


def test_relu_dln_steps_every_layer_at_lr(data):
    config = small("relu_dln", alpha=3.0, lr=0.01)
    model, _ = build_model(config, data[0], data[1], 10)
    groups = param_groups(model, config)
    assert len(groups) == 1 and groups[0]["lr"] == 0.01
    assert len(groups[0]["params"]) == len(list(model.parameters()))


@pytest.mark.parametrize("model", ["relu_dln", "relu_cdln"])
def test_relu_block_models_learn(data, model):
    record, curves = train_classifier(small(model, steps=60, alpha=2.0), data, CPU)
    assert curves["test_accuracy"].iloc[-1] > 0.5  # 10 classes: chance is 0.1
    assert record["block_init"]["block"] == model and record["parameters"]["block"] > 0


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
        ({"alpha_layer": "head"}, "--alpha-layer must be one of"),
        ({"init_scale": -1.0}, "--init-scale must be a finite number > 0"),
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
    assert record["data"]["files"]["train-images-idx3-ubyte"]["path"].startswith(str(tmp_path / "data"))
    assert len(record["data"]["files"]["train-images-idx3-ubyte"]["sha256"]) == 64


def test_a_diverging_classifier_exits_3_like_a_diverging_gd_run(tmp_path, capsys):
    synthetic_fashion_mnist(tmp_path / "data", n_train=200, n_test=50)
    args = ["nonlinear", "--data-dir", str(tmp_path / "data"), "--out", str(tmp_path / "run"), "--model", "mlp",
            "--hidden", "16", "--r-hat", "4", "--steps", "20", "--eval-every", "5", "--batch-size", "full",
            "--optimizer", "gd", "--lr", "1e30", "--device", "cpu", "--quiet"]  # fmt: skip
    assert main(args) == 3
    line = capsys.readouterr().err.strip()
    assert line.startswith("cdln: error: training diverged: non-finite loss at iteration") and "--lr" in line
    assert not (tmp_path / "run").exists()


def test_a_job_reads_the_data_set_once(tmp_path, monkeypatch):
    """The runs of one job share one read of FashionMNIST (read, checksummed, converted once per process);
    every run's record still names the files and their checksums."""
    from conftest import write_manifest

    import cdln.data.fashion_mnist as fashion_mnist

    synthetic_fashion_mnist(tmp_path / "data", n_train=200, n_test=50)
    reads = []
    counting = lambda files: reads.append(files) or load_fashion_mnist(files)  # noqa: E731
    monkeypatch.setattr(fashion_mnist, "load_fashion_mnist", counting)
    options = dict(data_dir=str(tmp_path / "data"), hidden=[16], width=16, r_hat=4, steps=5, eval_every=5,
                   batch_size=16, surrogate_batch=64, device="cpu")  # fmt: skip
    runs = [{"name": model, "command": "nonlinear", "options": dict(options, model=model)} for model in ("mlp", "cdln")]
    manifest = write_manifest(tmp_path / "job.json", runs)
    assert main(["run-job", "--manifest", str(manifest), "--out", str(tmp_path / "job"), "--quiet"]) == 0
    assert len(reads) == 1
    files = [json.loads((tmp_path / "job" / m / "record.json").read_text())["data"]["files"] for m in ("mlp", "cdln")]
    assert files[0] == files[1] and len(files[0]["train-images-idx3-ubyte"]["sha256"]) == 64
