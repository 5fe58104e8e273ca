"""AltMin: the per-row least-squares solve, recovery of an exactly low-rank matrix, the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from cdln.altmin import AltMinSettings, altmin, solve_factor
from cdln.cli import main
from cdln.io import save_problem
from cdln.problems import Completion
from cdln.spec import ProblemSpec


def low_rank_completion(d_out: int, d_in: int, rank: int, p: float, seed: int) -> Completion:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(d_out, rank, generator=generator, dtype=torch.float64)
    y = torch.randn(d_in, rank, generator=generator, dtype=torch.float64)
    observed = torch.rand(d_out, d_in, generator=generator) < p
    heldout = ~observed
    return Completion(ProblemSpec("mc", d_out, d_in, rank, p=p), x @ y.T, observed, heldout=heldout)


def test_solve_factor_matches_row_by_row_least_squares():
    rng = np.random.default_rng(0)
    fixed = rng.normal(size=(12, 3))
    target = rng.normal(size=(12, 5))
    weights = (rng.random((12, 5)) < 0.7).astype(float)
    ridge = 0.1
    got = solve_factor(torch.from_numpy(fixed), torch.from_numpy(target), torch.from_numpy(weights), ridge).numpy()
    for j in range(5):
        rows = weights[:, j] > 0
        a = np.vstack([fixed[rows], np.sqrt(ridge) * np.eye(3)])
        b = np.concatenate([target[rows, j], np.zeros(3)])
        expected = np.linalg.lstsq(a, b, rcond=None)[0]
        np.testing.assert_allclose(got[j], expected, rtol=1e-10, atol=1e-12)


def test_recovers_an_exactly_low_rank_matrix():
    problem = low_rank_completion(40, 50, 2, 0.5, seed=1)
    curves, estimate, seconds = altmin(problem, AltMinSettings(k=2, iterations=30, ridge=0.0))
    assert curves["recovery_error"].iloc[-1] < 1e-12
    assert torch.allclose(estimate, problem.target, atol=1e-6)
    assert seconds > 0 and list(curves["iteration"]) == list(range(31))


def test_training_loss_never_increases_without_ridge():
    problem = low_rank_completion(30, 35, 3, 0.6, seed=2)
    noisy = Completion(problem.spec, problem.target + 0.3 * torch.randn(30, 35, dtype=torch.float64), problem.mask)
    curves, _, _ = altmin(noisy, AltMinSettings(k=3, iterations=15, ridge=0.0))
    losses = curves["train_loss"].to_numpy()[1:]  # from the first exact solve on
    assert np.all(np.diff(losses) <= 1e-12 * losses[:-1])


def test_settings_are_validated():
    problem = low_rank_completion(5, 6, 1, 0.8, seed=0)
    with pytest.raises(ValueError, match=r"--r \(rank k\) must be in \[1, 5\]"):
        altmin(problem, AltMinSettings(k=6))
    with pytest.raises(ValueError, match="--ridge"):
        altmin(problem, AltMinSettings(k=1, ridge=-1.0))


def test_cli_writes_a_run_record(tmp_path):
    problem = low_rank_completion(20, 25, 2, 0.6, seed=3)
    save_problem(problem, tmp_path / "p.pt")
    out = tmp_path / "run"
    code = main(["altmin", "--problem", str(tmp_path / "p.pt"), "--out", str(out), "--r", "2", "--iterations", "30",
                 "--ridge", "0", "--device", "cpu", "--quiet"])  # fmt: skip
    assert code == 0
    record = json.loads((out / "record.json").read_text())
    assert record["config"]["model"] == "altmin" and record["parameters"]["model"] == 2 * 45
    assert record["members"][0]["final_recovery_error"] < 1e-10
    assert (out / "curves.csv").read_text().splitlines()[0].startswith("member,iteration,seconds")


def test_cli_rejects_a_non_completion_problem(tmp_path, capsys):
    from cdln.data.synthetic import make_problem

    save_problem(make_problem(ProblemSpec("mf", 5, 5, 1)), tmp_path / "mf.pt")
    assert main(["altmin", "--problem", str(tmp_path / "mf.pt"), "--out", str(tmp_path / "r"), "--r", "1"]) == 2
    assert "AltMin needs 'mc'" in capsys.readouterr().err
