"""A researcher's own problem: the worked example of docs/own-problem.md (a new loss in a small class, trained
with no change to the engine), completion from a user's own matrix in Python and from .npy/.csv files."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import REPO, cli_env, pipeline_copy
from test_docs import annotated_blocks

from cdln.cli import main
from cdln.data.synthetic import make_problem
from cdln.engine import TrainSettings, plan_engine, train
from cdln.networks import compressed_dln
from cdln.problems import Completion
from cdln.spec import ProblemSpec

DOC = REPO / "docs" / "own-problem.md"


def _blocks() -> list[tuple[str, str, str | None]]:
    """(language, code, the file the page saves it as or None) of the page's new-loss example and pipeline."""
    blocks = [(language, code, saved_as) for language, code, _, saved_as in annotated_blocks(DOC)]
    return blocks[[i for i, (_, code, _) in enumerate(blocks) if "clean = make_problem" in code][0] :]


def _relative(completed: torch.Tensor, target: torch.Tensor) -> float:
    return float(torch.linalg.matrix_norm(completed - target) / torch.linalg.matrix_norm(target))


def _save_files(folder: Path) -> None:
    for _, code, saved_as in _blocks():
        if saved_as:
            (folder / saved_as).parent.mkdir(parents=True, exist_ok=True)
            (folder / saved_as).write_text(code)


def _python(upto: str) -> str:
    """The page's python blocks that are run (not saved as files), up to the one containing ``upto``."""
    code = ""
    for language, block, saved_as in _blocks():
        if language == "python" and not saved_as:
            code += block + "\n"
            if upto in block:
                return code
    raise AssertionError(f"no python block of {DOC.name} contains {upto!r}")


@pytest.fixture(scope="module")
def example(tmp_path_factory) -> dict:
    """The page's code, run as written: its module saved, then the data, the problem and its training."""
    folder = tmp_path_factory.mktemp("own")
    _save_files(folder)
    namespace: dict = {}
    sys.path.insert(0, str(folder))
    try:
        exec(compile(_python("completed ="), str(DOC), "exec"), namespace)  # noqa: S102 - our own documentation
    finally:
        sys.path.remove(str(folder))
    return namespace


def test_the_new_part_is_at_most_20_lines():
    (module,) = [code for _, code, saved_as in _blocks() if saved_as == "mine/huber.py"]
    lines = [line for line in module.splitlines() if line.strip() and not line.startswith(("import", "from"))]
    assert len(lines) <= 20, f"{len(lines)} lines"


def test_the_example_imports_only_documented_names():
    from cdln import __all__ as documented

    code = "".join(block for language, block, _ in _blocks() if language == "python")
    for module, names in re.findall(r"^from (cdln[\w.]*) import (.+)$", code, flags=re.M):
        for name in (n.strip() for n in names.split(",")):
            assert name in documented or module != "cdln", f"from {module} import {name}: not in cdln.__all__"
    api = (REPO / "docs" / "api.md").read_text()
    for module, names in re.findall(r"^from (cdln\.[\w.]+) import (.+)$", code, flags=re.M):
        for name in (n.strip() for n in names.split(",")):
            assert f"| `{name}` (function) | `{module}` |" in api or f"| `{name}` (class) | `{module}` |" in api


def test_the_huber_problem_trains_in_float32_as_in_float64(example):
    problem = example["problem"].to("cpu", torch.float32)
    network = compressed_dln(problem.surrogate(), r_hat=6, depth=3, eps=1e-2, alpha=1.0).to("cpu", torch.float32)
    train(network, problem, TrainSettings(lr=20, n_inner=100, max_outer=100))
    assert network.end_to_end().dtype == torch.float32
    assert _relative(network.end_to_end()[0].double(), example["clean"].target) < 0.25


def test_the_huber_problem_trains_on_the_torch_step_and_recovers(example):
    result, clean = example["result"], example["clean"]
    assert result.engine_path == "torch"  # a problem of one's own never reaches the MC kernels
    assert result.curves["train_loss"].iloc[-1] < 0.6 * result.curves["train_loss"].iloc[0]  # wrong entries stay
    assert _relative(example["completed"], clean.target) < 0.25


def test_the_squared_loss_on_the_same_data_fits_the_wrong_entries(example):
    """What the page says of the squared loss, so that the Huber row above means something."""
    clean, observed = example["clean"], example["observed"]
    squared = Completion(clean.spec, clean.target, clean.mask, observations=observed)
    network = compressed_dln(squared.surrogate(), r_hat=6, depth=3, eps=1e-2, alpha=1.0)
    train(network, squared, TrainSettings(lr=20, n_inner=100, max_outer=100))
    assert _relative(network.end_to_end()[0], clean.target) > 1.0


def test_completion_from_a_users_matrix_with_heldout_entries():
    truth = make_problem(ProblemSpec("mc", 30, 20, 2, data_seed=3, p=0.5))
    generator = torch.Generator().manual_seed(0)
    heldout = ~truth.mask & (torch.rand(30, 20, generator=generator) < 0.5)
    matrix = truth.target.clone()
    matrix[~(truth.mask | heldout)] = float("nan")  # entries nobody knows
    problem = Completion.from_matrix(matrix, truth.mask, rank=2, heldout=heldout)
    assert problem.shape == (30, 20) and problem.spec.rank == 2
    network = compressed_dln(problem.surrogate(), 4, 3, 1e-2)
    result = train(network, problem, TrainSettings(lr=5.0, n_inner=100, max_outer=60))
    error = result.curves["recovery_error"]
    held = heldout.double() / heldout.sum()
    expected = float(0.5 * ((network.end_to_end()[0] - truth.target).square() * held).sum())
    assert error.iloc[-1] == pytest.approx(expected, rel=1e-9)  # measured on the held-out entries
    assert error.iloc[-1] < 1e-3 * error.iloc[0]


def test_completion_from_a_users_matrix_without_heldout_reports_the_training_error():
    truth = make_problem(ProblemSpec("mc", 12, 12, 2, data_seed=1, p=0.6))
    problem = Completion.from_matrix(truth.target, truth.mask, rank=2)
    w = torch.randn(2, 12, 12, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert torch.equal(problem.recovery_error(w), problem.train_loss(w))
    moved = problem.to("cpu", torch.float32)  # stays a problem without truth
    assert torch.equal(moved.recovery_error(w.float()), moved.train_loss(w.float()))
    network = compressed_dln(problem.surrogate(), 4, 3, 1e-2)
    assert plan_engine(network.weights, problem).path.startswith("native")  # it keeps MC's loss: compiled steps

    with pytest.raises(ValueError, match="non-finite"):
        Completion.from_matrix(torch.full((4, 4), float("nan")), torch.ones(4, 4, dtype=torch.bool), rank=1)
    with pytest.raises(ValueError, match="mask shape"):
        Completion.from_matrix(truth.target, truth.mask[:5], rank=2)


def _cdln(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cdln", *args], env=cli_env(), capture_output=True, text=True)


def test_cli_trains_on_matrix_files_and_writes_the_completed_matrix(tmp_path):
    truth = make_problem(ProblemSpec("mc", 16, 12, 2, data_seed=2, p=0.6))
    heldout = ~truth.mask
    matrix = truth.target.numpy().copy()
    np.savetxt(tmp_path / "matrix.csv", matrix, delimiter=",")
    np.save(tmp_path / "mask.npy", truth.mask.numpy().astype(np.float64))
    np.savetxt(tmp_path / "heldout.csv", heldout.numpy().astype(int), delimiter=",", fmt="%d")
    out = tmp_path / "run"
    result = _cdln(
        "train", "--task", "mc", "--matrix", str(tmp_path / "matrix.csv"), "--mask", str(tmp_path / "mask.npy"),
        "--heldout", str(tmp_path / "heldout.csv"), "--r", "2", "--model", "cdln", "--lr", "3",
        "--n-inner", "50", "--max-outer", "40", "--out", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    completed = np.load(out / "completed.npy")
    assert completed.shape == (1, 16, 12)
    record = json.loads((out / "record.json").read_text())
    assert record["problem"]["d_out"] == 16 and record["problem"]["d_in"] == 12
    assert record["config"]["matrix"].endswith("matrix.csv")
    held = heldout.numpy()
    error = 0.5 * np.mean((completed[0][held] - matrix[held]) ** 2)
    assert record["members"][0]["final_recovery_error"] == pytest.approx(error, rel=1e-9)


@pytest.mark.parametrize(
    "files,extra,message",
    [
        ({"matrix.csv": "1,2\n3,4\n"}, [], "--matrix needs --mask (its observed entries: 1 = observed"),
        ({"mask.csv": "1,0\n0,1\n"}, [], "--mask needs --matrix"),
        ({"matrix.csv": "1,2\n3,4\n", "mask.csv": "1,0\n0,2\n"}, [], "must hold only 0 and 1 (1 = observed, 0"),
        ({"matrix.csv": "1,2\n3,4\n", "mask.csv": "1,0,1\n0,1,1\n"}, [], "has shape (2, 3)"),
        ({"matrix.csv": "1,2\n3,nan\n", "mask.csv": "1,0\n0,1\n"}, [], "non-finite"),
        ({"matrix.csv": "1,2\n3,x\n", "mask.csv": "1,0\n0,1\n"}, [], "line 2, column 2: 'x' is not a number"),
        ({"matrix.csv": "a,b\n1,2\n", "mask.csv": "1,0\n0,1\n"}, [], "'a' is not a number; the file must hold numbers"),
        ({"matrix.csv": "1 2\n3 4\n", "mask.csv": "1,0\n0,1\n"}, [], "must be comma-separated"),
        ({"matrix.csv": "", "mask.csv": "1,0\n0,1\n"}, [], "matrix.csv is empty"),
        ({"matrix.csv": "1,2\n3\n", "mask.csv": "1,0\n0,1\n"}, [], "line 2: 1 fields, the first row has 2"),
        ({"matrix.csv": "5\n", "mask.csv": "1\n"}, ["--model", "cdln"], "--r-hat defaults to 2r = 2, more than"),
        ({"matrix.csv": "1,2\n3,4\n", "mask.csv": "0,0\n0,0\n"}, [], "marks no entry"),
        ({"matrix.tsv": "1\t2\n", "mask.csv": "1,0\n"}, [], "must be .npy, .csv or .txt"),
        ({"matrix.npy": "not numpy", "mask.csv": "1,0\n0,1\n"}, [], "not a readable matrix"),
        ({"matrix.csv": "1,2\n3,4\n", "mask.csv": "1,0\n0,1\n"}, ["--task", "mf"], "want --task mc"),
    ],
)
def test_bad_matrix_files_get_one_line_naming_the_file(tmp_path, files, extra, message):
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    if "matrix.csv" in files and not files["matrix.csv"]:
        (tmp_path / "matrix.csv").write_bytes(b"")
    args = ["train", "--r", "1", "--out", str(tmp_path / "run"), *extra]
    for name in files:
        args += [f"--{name.split('.')[0]}", str(tmp_path / name)]
    if "--task" not in extra:
        args += ["--task", "mc"]
    result = _cdln(*args)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not (tmp_path / "run").exists()


# ---- a run that went wrong says so; the step for a user's matrix follows its scale ----


def _rank3_matrix_files(folder: Path, scale: float) -> list[str]:
    """A rank-3, 50 x 40 matrix times ``scale``, half its entries observed, the rest held out."""
    rng = np.random.default_rng(0)
    matrix = scale * rng.standard_normal((50, 3)) @ rng.standard_normal((3, 40))
    mask = (rng.random((50, 40)) < 0.5).astype(int)
    np.savetxt(folder / "m.csv", matrix, delimiter=",")
    np.savetxt(folder / "mask.csv", mask, delimiter=",", fmt="%d")
    np.savetxt(folder / "held.csv", 1 - mask, delimiter=",", fmt="%d")
    return ["train", "--task", "mc", "--matrix", str(folder / "m.csv"), "--mask", str(folder / "mask.csv"),
            "--heldout", str(folder / "held.csv"), "--r", "3", "--model", "cdln", "--n-inner", "100",
            "--max-outer", "500", "--quiet"]  # fmt: skip


def test_a_step_too_large_warns_with_the_share_and_a_smaller_step(tmp_path, capsys):
    args = _rank3_matrix_files(tmp_path, 0.75)
    assert main([*args, "--lr", "10", "--out", str(tmp_path / "big")]) == 0  # it exits 0 ...
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[-1].startswith("warning: the training loss rose at ") and "try --lr 5" in lines[-1]  # ... and says so
    record = json.loads((tmp_path / "big" / "record.json").read_text())
    member = record["members"][0]
    assert member["loss_rose"] / member["checkpoints"] > 0.2 and record["warnings"]
    assert member["final_relative_error"] > 0.1  # the wrong completion the warning is about
    assert main([*args, "--lr", "5", "--out", str(tmp_path / "small")]) == 0
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "warning" not in lines[0] and "relative error on the held-out entries" in lines[0]
    record = json.loads((tmp_path / "small" / "record.json").read_text())
    assert record["warnings"] == [] and record["members"][0]["final_relative_error"] < 1e-5


@pytest.mark.parametrize("scale", [1e-3, 1.0, 1e3])
def test_the_default_step_for_a_users_matrix_follows_its_scale(tmp_path, capsys, scale):
    args = _rank3_matrix_files(tmp_path, scale)
    assert main([*args, "--out", str(tmp_path / "run")]) == 0
    record = json.loads((tmp_path / "run" / "record.json").read_text())
    assert record["warnings"] == [] and record["members"][0]["loss_rose"] == 0
    assert record["members"][0]["final_relative_error"] < 1e-3, record["members"][
        0
    ]  # 3.5e-4 at 1e-3: eps is large there
    assert record["config"]["lr"] == pytest.approx(4.54 * (0.75 / scale) ** (4 / 3), rel=0.05)


# ---- the page's experiment through the pipeline: both networks over seeds, the figure, the user's claims ----


def test_the_pages_experiment_runs_through_the_pipeline(tmp_path):
    """The section's files saved in a copy of the workflow, its problem file made by its code, then the section's
    command for real: one job per seed, the figure, and the claims table with one row that holds and one that
    fails."""
    clone = pipeline_copy(tmp_path / "clone")
    _save_files(clone)
    made = subprocess.run([sys.executable, "-c", _python("save_problem(")], cwd=clone, env=cli_env(),
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert made.returncode == 0, made.stderr
    (command,) = [code.strip() for language, code, _ in _blocks() if language == "bash"]
    words = command.split()
    assert words[0] == "snakemake", command
    env = dict(cli_env(), OMP_NUM_THREADS="1")
    run = subprocess.run([sys.executable, "-m", *words], cwd=clone, env=env, capture_output=True, text=True,
                         timeout=900)  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    root = clone / "results" / "huber"
    assert (root / "figures" / "fig_huber.png").stat().st_size > 10_000
    assert sorted(p.name for p in (root / "runs" / "huber").iterdir()) == ["main_seed0", "main_seed1", "main_seed2"]
    curves = pd.read_csv(root / "tables" / "huber_curves.csv")
    assert sorted(curves["model"].unique()) == ["cdln", "original"] and sorted(curves["seed"].unique()) == [0, 1, 2]
    holds = pd.read_csv(root / "tables" / "claims.csv").set_index("id")["holds"].astype(str)
    assert holds.to_dict() == {"huber-same-error": "True", "huber-cdln-fewer-iterations": "False"}
    record = json.loads((root / "runs" / "huber" / "main_seed0" / "cdln" / "record.json").read_text())
    assert record["problem"]["task"] == "mine.huber:HuberCompletion"
