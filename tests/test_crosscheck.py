"""`cdln crosscheck`: loading the authors' checkout, running it beside our engine, the table, the errors.

The authors' repository is not needed: a fake checkout in ``tmp_path`` has the same file and function
names (``network.py``, ``loss.py``, ``solver.py``) implemented in numpy, with closed-form gradients.
"""

from __future__ import annotations

import importlib.util
import math
import os
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import REPO

from cdln.cli import main
from cdln.engine import TrainSettings
from cdln.networks import product
from cdln.reference import authors as cc
from cdln.spec import ProblemSpec

FAKE_NETWORK = '''
import numpy as np
from utils import product


class _Random:
    """Stands in for jax.random: keys are integers."""

    @staticmethod
    def PRNGKey(seed):
        return int(seed)

    @staticmethod
    def split(key, num=2):
        return [int(key) * 7919 + i + 1 for i in range(num)]

    @staticmethod
    def orthogonal(key, n):
        q, _ = np.linalg.qr(np.random.default_rng(key).standard_normal((n, n)))
        return q


random = _Random()


def init_net(key, input_dim, output_dim, width, depth, init_scale, init_type="orth"):
    keys = random.split(key, num=depth)
    shapes = [(width, input_dim)] + [(width, width)] * (depth - 2) + [(output_dim, width)]
    weights = []
    for k, (m, n) in zip(keys, shapes):
        q = init_scale * random.orthogonal(k, max(m, n))
        weights.append(q[:m, :n])
    return weights


def compute_end_to_end(weights):
    return product(weights)


def kwon_compress_network(target, grad_rank, init_scale, depth):
    u, _, vt = np.linalg.svd(target)
    layers = [vt[:grad_rank]] + [init_scale * np.eye(grad_rank) for _ in range(depth)] + [u[:, :grad_rank]]
    return layers, [vt[:grad_rank], u[:, :grad_rank]]
'''

FAKE_UTILS = """
def product(weights):
    result = weights[0]
    for w in weights[1:]:
        result = w @ result
    return result
"""

FAKE_LOSS = """
import numpy as np


class _Loss:
    def __init__(self, value, grad):
        self.value, self.grad = value, grad

    def __call__(self, output):
        return self.value(output)


def create_loss(target, mask=None, reduction="mean"):
    weight = np.ones_like(target) / target.size if mask is None else mask / mask.sum()
    return _Loss(lambda w: 0.5 * np.sum(weight * (w - target) ** 2), lambda w: weight * (w - target))


def create_loss_ms(labels, sensing_matrices, reduction="sum"):
    def residual(w):
        return (sensing_matrices * w).sum((-2, -1)) - labels

    return _Loss(lambda w: 0.5 * np.sum(residual(w) ** 2), lambda w: np.tensordot(residual(w), sensing_matrices, 1))


def reconstruction_loss(target):
    return lambda w: np.linalg.norm(target - w) / np.linalg.norm(target)
"""

FAKE_SOLVER = """
import sys

import numpy as np
from utils import product


def train(init_weights, network_fn, loss_fn_dict, n_outer_loops, step_size, optimizer="gd", dlr=None, tol=0,
          n_inner_loops=100, save_weights=False):
    print("a progress bar on stderr", file=sys.stderr)
    weights = [np.array(w) for w in init_weights]
    depth = len(weights)
    scales = [1.0] * depth
    if dlr is not None:
        scales[0] = scales[-1] = dlr
    train_fn, test_fn = loss_fn_dict["train"], loss_fn_dict["test"]
    train_loss, test_loss = [train_fn(network_fn(weights))], [test_fn(network_fn(weights))]
    saved = [weights]
    for _ in range(n_outer_loops):
        for _ in range(n_inner_loops):
            g = train_fn.grad(network_fn(weights))
            grads = []
            for l in range(depth):
                left = product(weights[l + 1:]) if l + 1 < depth else np.eye(g.shape[0])
                right = product(weights[:l]) if l > 0 else np.eye(g.shape[1])
                grads.append(left.T @ g @ right.T)
            weights = [w - step_size * s * gw for w, s, gw in zip(weights, scales, grads)]
        train_loss.append(train_fn(network_fn(weights)))
        test_loss.append(test_fn(network_fn(weights)))
        saved.append(weights)
        if train_loss[-1] < tol:
            break
    result = {"train_loss": np.array(train_loss), "test_loss": np.array(test_loss), "final_weights": weights,
              "time": np.zeros(len(train_loss))}
    if save_weights:
        result["weights"] = saved
    return result
"""


def fake_checkout(root: Path, drop: str | None = None, solver_imports: str = "") -> Path:
    """A fake authors' checkout under ``root``; ``drop`` = a function name to leave out of it."""
    root.mkdir(parents=True, exist_ok=True)
    sources = {"network.py": FAKE_NETWORK, "utils.py": FAKE_UTILS, "loss.py": FAKE_LOSS,
               "solver.py": solver_imports + FAKE_SOLVER}  # fmt: skip
    for name, source in sources.items():
        if drop is not None:
            source = source.replace(f"def {drop}(", f"def _renamed_{drop}(")
        (root / name).write_text(textwrap.dedent(source))
    return root


def tiny_panels() -> list[cc.Panel]:
    """MF, MC (with two alphas, the L=2 notebook init) and alignment on tiny instances."""
    mf_settings = TrainSettings(lr=2.0, n_inner=10, max_outer=100, tol=1e-4)
    mc_settings = TrainSettings(lr=2.0, n_inner=5, max_outer=40, tol=1e-8)
    return [
        cc.Panel("mf", "tiny", ProblemSpec("mf", 6, 6, 1, data_seed=0), 3, 0.3, 2, mf_settings, error_levels=(1e-3,)),
        cc.Panel("depth", "L2", ProblemSpec("mc", 6, 6, 1, data_seed=0, p=0.8), 2, 0.3, 2, mc_settings,
                 alphas=(1.0, 2.0), splits_before=2, their_depth2_cdln=True),
        cc.Panel("alignment", "mf", ProblemSpec("mf", 6, 6, 2, data_seed=1), 3, 0.3, 4,
                 TrainSettings(lr=2.0, n_inner=100, max_outer=3, tol=0.0), alignment=True, cdln=False),
    ]  # fmt: skip


@pytest.fixture
def fake_code(tmp_path: Path) -> cc.AuthorsCode:
    return cc.load_authors_code(fake_checkout(tmp_path / "authors"))


def test_loads_the_fake_checkout_without_leaking_its_module_names(tmp_path: Path) -> None:
    sys.modules.pop("utils", None)
    code = cc.load_authors_code(fake_checkout(tmp_path / "authors"))
    assert code.path == (tmp_path / "authors").resolve()
    assert code.random.PRNGKey(3) == 3
    assert "utils" not in sys.modules and "network" not in sys.modules and "solver" not in sys.modules
    assert str(code.path) not in sys.path


def test_authors_code_and_our_engine_agree_on_tiny_panels(fake_code: cc.AuthorsCode, tmp_path: Path) -> None:
    table = cc.run_panels(fake_code, tiny_panels(), seed=0)
    assert list(table.columns) == cc.COLUMNS
    models = set(table.loc[table.panel == "L2", "model"])
    assert models == {"original (our init)", "original (their init)", "cdln alpha=1 (their init)",
                      "cdln alpha=2 (their init)", "cdln alpha=1 (our init)", "cdln alpha=1 (their L=2 init)",
                      "cdln alpha=2 (their L=2 init)"}  # fmt: skip
    # The fake trains by the same GD from the same weights: every quantity matches to rounding.
    both = table.dropna(subset=["authors_code", "ours"], how="all")
    np.testing.assert_allclose(both.authors_code, both.ours, rtol=1e-6, atol=1e-14)
    final = table[(table.quantity == "final_train_loss") & (table.panel == "tiny")]
    assert (final.authors_code < 1e-4).all()  # MF tiny reaches tol
    assert table.loc[table.quantity == "iterations_to_train_loss<0.0001", "authors_code"].notna().all()
    alignment = table[table.task == "alignment"]
    assert set(alignment.quantity) >= {"alignment_u@0", "alignment_v@300", "iterations_to_alignment_u>=0.99"}
    at_300 = alignment.loc[alignment.quantity == "alignment_u@300", "authors_code"]
    assert ((at_300 > 0.99) & (at_300 <= 1 + 1e-12)).all()  # rank-2 MF: the top direction is learned by 300
    assert alignment.loc[alignment.quantity == "alignment_u@1000", "authors_code"].isna().all()  # beyond budget

    csv_path, md_path = cc.write_table(table, tmp_path / "out", header="# title")
    written = pd.read_csv(csv_path)
    assert list(written.columns) == cc.COLUMNS and len(written) == len(table)
    markdown = md_path.read_text()
    assert markdown.startswith("# title") and "## depth / L2" in markdown and "not reached" in markdown
    assert not list((tmp_path / "out").glob("*.partial"))


def test_their_init_follows_their_notebook_key_chain(fake_code: cc.AuthorsCode) -> None:
    problem = cc.make_problem(ProblemSpec("mc", 6, 6, 1, data_seed=0, p=0.5))
    weights = cc.their_original_init(fake_code, problem, 3, 0.1, seed=4, splits_before=2)
    key = 4
    for _ in range(3):
        key, subkey = fake_code.random.split(key)
    expected = fake_code.init_net(key=subkey, input_dim=6, output_dim=6, width=6, depth=3, init_scale=0.1)
    for ours, theirs in zip(weights, expected, strict=True):
        np.testing.assert_array_equal(ours, theirs)
    compressed = cc.their_compressed_init(fake_code, problem, 2, 3, 0.1)
    assert [w.shape for w in compressed] == [(2, 6), (2, 2), (6, 2)]
    np.testing.assert_allclose(product(compressed), product(cc.our_compressed_init(problem, 2, 3, 0.1)),
                               atol=1e-12)  # fmt: skip
    no_eps = cc.their_compressed_init(fake_code, problem, 2, 2, 0.1, without_eps_at_depth_2=True)
    np.testing.assert_allclose(no_eps[0] @ no_eps[0].T, np.eye(2), atol=1e-12)


def test_cli_writes_the_table(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import cdln.cli.crosscheck as command

    monkeypatch.setattr(command, "default_panels", lambda config, seed, tasks: tiny_panels()[:1])
    code = main(["crosscheck", "--authors", str(fake_checkout(tmp_path / "a")), "--out", str(tmp_path / "o"),
                 "--tasks", "mf", "--quiet"])  # fmt: skip
    assert code == 0
    table = pd.read_csv(tmp_path / "o" / "crosscheck.csv")
    assert set(table.panel) == {"tiny"} and (table.authors_code.dropna() >= 0).all()
    assert "Authors' code:" in (tmp_path / "o" / "crosscheck.md").read_text()


def test_missing_path_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(cc.AuthorsCodeError, match="nowhere: no such directory"):
        cc.load_authors_code(missing)
    assert main(["crosscheck", "--authors", str(missing), "--out", str(tmp_path / "o")]) == 2
    assert f"{missing}" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_not_a_checkout_names_the_missing_files(tmp_path: Path) -> None:
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "network.py").write_text("")
    with pytest.raises(cc.AuthorsCodeError, match=r"not a checkout .* missing loss.py, solver.py"):
        cc.load_authors_code(tmp_path / "other")


@pytest.mark.parametrize("function", ["kwon_compress_network", "train", "create_loss_ms"])
def test_missing_function_is_named(tmp_path: Path, function: str) -> None:
    with pytest.raises(cc.AuthorsCodeError, match=f"has no function '{function}'"):
        cc.load_authors_code(fake_checkout(tmp_path / "a", drop=function))


def test_missing_jax_says_how_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "optax", None)  # `import optax` now raises ModuleNotFoundError
    checkout = fake_checkout(tmp_path / "a", solver_imports="import optax\n")
    with pytest.raises(cc.AuthorsCodeError, match=r"needs 'optax', which is not installed: pip install -e '\.\[jax\]'"):
        cc.load_authors_code(checkout)


def test_unknown_task_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown crosscheck task"):
        cc.default_panels({}, 0, ["mf", "nope"])


def test_panels_take_the_pipeline_grids_settings() -> None:
    """The cross-check runs what the figures run: a changed step size in the config changes the panel's."""
    import copy

    from cdln.pipeline.validate import load_pipeline_config

    config = load_pipeline_config(REPO / "config" / "config.yaml")
    (mc,) = cc.default_panels(config, 0, ["mc"])
    section = config["experiments"]["mc"]
    assert (mc.spec.d_out, mc.spec.rank, mc.spec.p) == (section["d"], section["panels"]["r10"]["r"], section["p"])
    assert (mc.settings.lr, mc.settings.n_inner, mc.depth, mc.r_hat) == (section["lr"], section["n_inner"], 3, 20)
    changed = copy.deepcopy(config)
    changed["experiments"]["mc"]["lr"] = 7
    assert cc.default_panels(changed, 0, ["mc"])[0].settings.lr == 7
    depth = {panel.name: panel for panel in cc.default_panels(config, 0, ["depth"])}
    assert (depth["L2"].depth, depth["L3"].depth, depth["L2"].alphas) == (2, 3, (2.0,))


JAX_MISSING = importlib.util.find_spec("jax") is None

FAKE_JAX_SOLVER = """
import jax
import jax.numpy as jnp
import numpy as np


def train(init_weights, network_fn, loss_fn_dict, n_outer_loops, step_size, optimizer="gd", dlr=None, tol=0,
          n_inner_loops=100, save_weights=False):
    loss = lambda ws: loss_fn_dict["train"].jax_value(network_fn(ws))
    scales = [1.0] * len(init_weights)
    if dlr is not None:
        scales[0] = scales[-1] = dlr
    weights = [jnp.asarray(w) for w in init_weights]
    assert weights[0].dtype == jnp.float64, "x64 must be on"

    @jax.jit
    def steps(ws):
        def body(_, ws):
            return [w - step_size * s * g for w, s, g in zip(ws, scales, jax.grad(loss)(ws))]

        return jax.lax.fori_loop(0, n_inner_loops, body, ws)

    train_loss, test_loss = [float(loss(weights))], [loss_fn_dict["test"](np.asarray(network_fn(weights)))]
    for _ in range(n_outer_loops):
        weights = steps(weights)
        train_loss.append(float(loss(weights)))
        test_loss.append(loss_fn_dict["test"](np.asarray(network_fn(weights))))
        if train_loss[-1] < tol:
            break
    return {"train_loss": np.array(train_loss), "test_loss": np.array(test_loss), "final_weights": weights}
"""


@pytest.mark.skipif(JAX_MISSING, reason="needs jax (pip install -e '.[jax]'); the numpy fake covers the rest")
def test_jax_autodiff_fake_matches_our_closed_form_engine(tmp_path: Path) -> None:
    checkout = fake_checkout(tmp_path / "a")
    (checkout / "solver.py").write_text(textwrap.dedent(FAKE_JAX_SOLVER))
    loss_source = (checkout / "loss.py").read_text()
    loss_source = loss_source.replace(
        "        self.value, self.grad = value, grad\n",
        "        self.value, self.grad = value, grad\n        self.jax_value = value\n",
    ).replace("np.sum(weight", "__import__('jax').numpy.sum(weight")
    (checkout / "loss.py").write_text(loss_source)
    code = cc.load_authors_code(checkout)
    assert code.x64
    table = cc.run_panels(code, tiny_panels()[:1], seed=0)
    np.testing.assert_allclose(table.authors_code, table.ours, rtol=1e-9, atol=1e-14)


@pytest.mark.skipif(
    JAX_MISSING or not os.environ.get("CDLN_AUTHORS_CHECKOUT"),
    reason="needs jax, optax and CDLN_AUTHORS_CHECKOUT=<checkout of soominkwon/comp-deep-nets>",
)
def test_real_authors_code_matches_our_engine_on_tiny_panels() -> None:
    code = cc.load_authors_code(os.environ["CDLN_AUTHORS_CHECKOUT"])
    table = cc.run_panels(code, tiny_panels(), seed=0)
    finite = table.dropna(subset=["authors_code"])
    assert not finite.empty and not math.isnan(finite.ours.sum())
    np.testing.assert_allclose(finite.authors_code, finite.ours, rtol=1e-6, atol=1e-12)


def test_divergence_is_recorded_not_raised(fake_code: cc.AuthorsCode) -> None:
    too_large = TrainSettings(lr=10.0, n_inner=5, max_outer=4, tol=1e-8)
    panel = cc.Panel("mf", "tiny", ProblemSpec("mf", 6, 6, 1, data_seed=0), 3, 0.3, 2, too_large, cdln=False)
    table = cc.run_panels(fake_code, [panel], seed=0)
    assert table.note.str.contains("our engine: training diverged").all()
    assert table.note.str.contains("authors' code: non-finite training loss").all()
    assert table.loc[table.quantity == "final_train_loss", ["authors_code", "ours"]].isna().all().all()
