"""Problems: targets, masks, sensing operators, loss normalisations, surrogates, I/O."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from cdln.analysis import target_factors
from cdln.data.synthetic import low_rank_target, make_problem
from cdln.io import load_problem, save_problem
from cdln.problems import Completion, Factorization, Problem, ProblemSpec, Sensing, problem_class


def _spec(task: str, d_out: int = 2, d_in: int = 2, rank: int = 1, **kw) -> ProblemSpec:
    return ProblemSpec(task, d_out, d_in, rank, **kw)


# ---------------------------------------------------------------- targets


@pytest.mark.parametrize("d_out,d_in,rank", [(12, 12, 3), (16, 10, 2), (9, 14, 4), (8, 8, 1)])
def test_target_has_rank_r_and_the_spread_singular_values(d_out, d_in, rank):
    generator = torch.Generator().manual_seed(7)
    m, u, s, v = low_rank_target(d_out, d_in, rank, generator, "spread")
    assert m.shape == (d_out, d_in) and m.dtype == torch.float64
    # The kept triplets are those of the same Gaussian draw at indices 0, n/(2r), 2n/(2r), ...
    gaussian = torch.randn(d_out, d_in, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    all_s = torch.linalg.svdvals(gaussian)
    step = max(1, min(d_out, d_in) // (2 * rank))
    torch.testing.assert_close(s, all_s[torch.arange(rank) * step], rtol=1e-12, atol=0)
    # Exactly rank r with those singular values; distinct and descending.
    sv = torch.linalg.svdvals(m)
    torch.testing.assert_close(sv[:rank], s, rtol=1e-10, atol=0)
    assert sv[rank:].abs().max() < 1e-10 * s[0] if sv.numel() > rank else True
    assert torch.linalg.matrix_rank(m) == rank
    assert bool((s[:-1] > s[1:]).all())
    torch.testing.assert_close(u.T @ u, torch.eye(rank, dtype=torch.float64), atol=1e-12, rtol=0)
    torch.testing.assert_close(v.T @ v, torch.eye(rank, dtype=torch.float64), atol=1e-12, rtol=0)
    torch.testing.assert_close((u * s) @ v.T, m, atol=1e-12, rtol=0)


def test_spread_skips_singular_values_and_top_keeps_the_largest():
    d, rank = 20, 2
    gaussian = torch.randn(d, d, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    all_s = torch.linalg.svdvals(gaussian)
    _, _, top, _ = low_rank_target(d, d, rank, torch.Generator().manual_seed(3), "top")
    _, _, spread, _ = low_rank_target(d, d, rank, torch.Generator().manual_seed(3), "spread")
    torch.testing.assert_close(top, all_s[:2], rtol=1e-12, atol=0)
    torch.testing.assert_close(spread, all_s[[0, 5]], rtol=1e-12, atol=0)  # step d/(2r) = 5


def test_make_problem_target_matches_spec_and_is_seeded():
    spec = ProblemSpec("mf", 10, 10, 3, data_seed=5)
    a, b = make_problem(spec), make_problem(spec)
    assert torch.equal(a.target, b.target)
    assert not torch.equal(a.target, make_problem(ProblemSpec("mf", 10, 10, 3, data_seed=6)).target)
    assert torch.linalg.matrix_rank(a.target) == 3
    u, s, v = target_factors(a)
    assert u.shape == (10, 3) and s.shape == (3,) and v.shape == (10, 3)
    torch.testing.assert_close((u * s) @ v.T, a.target, atol=1e-12, rtol=0)


# ---------------------------------------------------------------- completion mask


@pytest.mark.parametrize("d_out,d_in,p", [(10, 10, 0.3), (10, 10, 0.333), (7, 9, 0.5), (6, 6, 1.0), (12, 5, 0.01)])
def test_mask_observes_floor_p_entries(d_out, d_in, p):
    problem = make_problem(ProblemSpec("mc", d_out, d_in, 1, data_seed=1, p=p))
    assert problem.mask.dtype == torch.bool and problem.mask.shape == (d_out, d_in)
    assert int(problem.mask.sum()) == max(1, math.floor(p * d_out * d_in))


def test_mask_depends_on_data_seed_and_is_spread_uniformly():
    masks = [make_problem(ProblemSpec("mc", 20, 20, 2, data_seed=s, p=0.3)).mask for s in range(40)]
    assert not torch.equal(masks[0], masks[1])
    assert torch.equal(masks[0], make_problem(ProblemSpec("mc", 20, 20, 2, data_seed=0, p=0.3)).mask)
    # Uniform sampling: every entry observed with frequency ~ p (40 draws: std ~ 0.07).
    freq = torch.stack(masks).double().mean(0)
    assert abs(float(freq.mean()) - 0.3) < 1e-12
    assert float(freq.min()) > 0.0 and float(freq.max()) < 0.8


# ---------------------------------------------------------------- sensing operator


def test_sensing_operator_entries_have_std_one_over_m():
    m, d = 400, 10
    problem = make_problem(ProblemSpec("ms", d, d, 2, data_seed=0, m=m))
    a = problem.operator
    assert a.shape == (m, d * d)
    # 40,000 entries: the std estimate has relative error ~ 1/sqrt(2 * 40000) = 0.35 %.
    assert float(a.std()) * m == pytest.approx(1.0, rel=0.02)
    assert abs(float(a.mean())) * m < 0.03
    assert torch.equal(problem.measurements, a.double() @ problem.target.reshape(-1))  # y of the stored operator
    # Different m changes the scale (catches a hard-coded 1/sqrt(m) or 1/d normalisation).
    small = make_problem(ProblemSpec("ms", d, d, 2, data_seed=0, m=50))
    assert float(small.operator.std()) * 50 == pytest.approx(1.0, rel=0.05)


def test_ms_loss_of_zero_is_about_half_target_norm_squared_over_m():
    """E ||A(M)||^2 = ||M||_F^2 / m for entries of variance 1/m^2: the scale the step sizes rely on."""
    m, d = 600, 8
    problem = make_problem(ProblemSpec("ms", d, d, 2, data_seed=2, m=m))
    zero = torch.zeros(1, d, d, dtype=torch.float64)
    expected = 0.5 * float(problem.target.square().sum()) / m
    assert float(problem.train_loss(zero)[0]) == pytest.approx(expected, rel=0.15)


# ---------------------------------------------------------------- hand-checked losses


TARGET = torch.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=torch.float64)
W = torch.tensor([[[1.0, 0.0], [3.0, 2.0]], [[2.0, 2.0], [3.0, 4.0]]], dtype=torch.float64)  # B = 2


def test_factorization_loss_by_hand():
    problem = Factorization(_spec("mf"), TARGET)
    # member 0: residual [[0,-2],[0,-2]] -> 1/2 * (4 + 4) / 4 = 1; member 1: [[1,0],[0,0]] -> 1/8
    torch.testing.assert_close(problem.train_loss(W), torch.tensor([1.0, 0.125], dtype=torch.float64))
    torch.testing.assert_close(problem.recovery_error(W), torch.tensor([1.0, 0.125], dtype=torch.float64))
    torch.testing.assert_close(problem.loss_grad(W)[0], torch.tensor([[0.0, -0.5], [0.0, -0.5]], dtype=torch.float64))
    assert torch.equal(problem.surrogate(), TARGET)


def test_completion_loss_by_hand():
    mask = torch.tensor([[True, True], [False, True]])  # 3 observed, (1, 0) held out
    problem = Completion(_spec("mc", p=0.75), TARGET, mask)
    # member 0 residual [[0,-2],[0,-2]]: observed 1/2 * (0 + 4 + 4) / 3 = 4/3; unobserved 1/2 * 0 = 0
    # member 1 residual [[1,0],[0,0]]:   observed 1/2 * 1 / 3 = 1/6;           unobserved 0
    torch.testing.assert_close(problem.train_loss(W), torch.tensor([4 / 3, 1 / 6], dtype=torch.float64))
    torch.testing.assert_close(problem.recovery_error(W), torch.tensor([0.0, 0.0], dtype=torch.float64))
    w = torch.tensor([[[1.0, 2.0], [5.0, 4.0]]], dtype=torch.float64)  # wrong only on the held-out entry
    torch.testing.assert_close(problem.train_loss(w), torch.tensor([0.0], dtype=torch.float64))
    torch.testing.assert_close(problem.recovery_error(w), torch.tensor([2.0], dtype=torch.float64))  # 1/2 * 4 / 1
    grad = problem.loss_grad(W)[0]
    torch.testing.assert_close(grad, torch.tensor([[0.0, -2 / 3], [0.0, -2 / 3]], dtype=torch.float64))
    # Surrogate (1/p) P_Omega(M*) with p = observed fraction 3/4.
    torch.testing.assert_close(problem.surrogate(), torch.tensor([[4 / 3, 8 / 3], [0.0, 16 / 3]], dtype=torch.float64))


def test_completion_with_everything_observed_reports_error_on_all_entries():
    problem = Completion(_spec("mc", p=1.0), TARGET, torch.ones(2, 2, dtype=torch.bool))
    torch.testing.assert_close(problem.recovery_error(W), problem.train_loss(W))
    assert bool(torch.isfinite(problem.recovery_error(W)).all())


def test_sensing_loss_and_surrogate_by_hand():
    # m = 2 measurements of a 2x2 target: A_1 picks entry (0,0), A_2 = [[1,1],[0,1]] (row-major vec).
    operator = torch.tensor([[1.0, 0.0, 0.0, 0.0], [1.0, 1.0, 0.0, 1.0]], dtype=torch.float64)
    y = operator @ TARGET.reshape(-1)  # [1, 7]
    problem = Sensing(_spec("ms", m=2), TARGET, operator, y)
    # member 0: <A,W> = [1, 3] -> residual [0, -4] -> 1/2 * 16 = 8; member 1: [2, 8] -> [1, 1] -> 1
    torch.testing.assert_close(problem.train_loss(W), torch.tensor([8.0, 1.0], dtype=torch.float64))
    torch.testing.assert_close(problem.loss_grad(W)[0], torch.tensor([[-4.0, -4.0], [0.0, -4.0]], dtype=torch.float64))
    # relative Frobenius error: member 1 differs by 1 in one entry; ||M*||_F = sqrt(30)
    torch.testing.assert_close(
        problem.recovery_error(W), torch.tensor([math.sqrt(8 / 30), math.sqrt(1 / 30)], dtype=torch.float64)
    )
    # surrogate (1/m) sum_i y_i A_i = ([1,0,0,0] + 7 [1,1,0,1]) / 2
    torch.testing.assert_close(problem.surrogate(), torch.tensor([[4.0, 3.5], [0.0, 3.5]], dtype=torch.float64))


@pytest.mark.parametrize("task", ["mf", "mc", "ms"])
def test_loss_grad_is_the_gradient_of_train_loss(task):
    spec = ProblemSpec(task, 6, 5, 2, data_seed=4, p=0.5, m=40)
    problem = make_problem(spec)
    w = torch.randn(3, 6, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64, requires_grad=True)
    problem.train_loss(w).sum().backward()
    torch.testing.assert_close(problem.loss_grad(w.detach()), w.grad, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("task", ["mf", "mc", "ms"])
def test_exact_target_has_zero_loss_and_error(task):
    problem = make_problem(ProblemSpec(task, 6, 6, 2, data_seed=0, p=0.5, m=60))
    w = problem.target.unsqueeze(0)
    assert float(problem.train_loss(w)[0]) < 1e-25
    assert float(problem.recovery_error(w)[0]) < 1e-12


def test_mc_surrogate_singular_vectors_approach_target_for_p_one():
    problem = make_problem(ProblemSpec("mc", 8, 8, 2, data_seed=0, p=1.0))
    torch.testing.assert_close(problem.surrogate(), problem.target, rtol=1e-14, atol=1e-14)


# ---------------------------------------------------------------- I/O, devices, validation


@pytest.mark.parametrize("task", ["mf", "mc", "ms"])
def test_save_load_roundtrip(tmp_path, task):
    problem = make_problem(ProblemSpec(task, 5, 7, 2, data_seed=3, p=0.4, m=30))
    save_problem(problem, tmp_path / "sub" / "p.pt")
    assert sorted(f.name for f in (tmp_path / "sub").iterdir()) == [".cdln-written.json", "p.pt"]  # no temp file
    loaded = load_problem(tmp_path / "sub" / "p.pt")
    assert type(loaded) is type(problem) and loaded.spec == problem.spec
    for key, tensor in problem.tensors().items():
        assert torch.equal(loaded.tensors()[key], tensor), key


def test_load_missing_problem_names_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        load_problem(tmp_path / "nope.pt")


def test_to_float32_keeps_mask_boolean():
    problem = make_problem(ProblemSpec("mc", 6, 6, 2, p=0.5)).to("cpu", torch.float32)
    assert problem.target.dtype == torch.float32 and problem.mask.dtype == torch.bool
    w = torch.zeros(1, 6, 6, dtype=torch.float32)
    assert problem.train_loss(w).dtype == torch.float32


@pytest.mark.parametrize(
    "spec,match",
    [
        (ProblemSpec("mx", 5, 5, 1), "task must be one of"),
        (ProblemSpec("mf", 5, 5, 6), r"r must be in \[1, min"),
        (ProblemSpec("mf", 5, 5, 0), r"r must be in \[1, min"),
        (ProblemSpec("mc", 5, 5, 1, p=0.0), r"p must be in \(0, 1\]"),
        (ProblemSpec("mc", 5, 5, 1, p=1.5), r"p must be in \(0, 1\]"),
        (ProblemSpec("mc", 5, 5, 1), r"p must be in \(0, 1\]"),
        (ProblemSpec("ms", 5, 5, 1, m=0), "m must be >= 1"),
        (ProblemSpec("mf", 5, 5, 1, spectrum="bumpy"), "spectrum must be one of"),
        (ProblemSpec("mf", 5, 5, 2, spectrum="geometric"), "condition must be >= 1"),
        (ProblemSpec("mf", 5, 5, 2, spectrum="geometric", condition=0.5), "condition must be >= 1"),
        (ProblemSpec("mf", 5, 5, 2, condition=10.0), "condition applies to spectrum 'geometric' only"),
        (ProblemSpec("mc", 5, 5, 1, p=0.5, noise=-0.1), "noise must be a finite number >= 0"),
        (ProblemSpec("mf", 5, 5, 1, noise=0.1), r"noise applies to tasks \['mc', 'ms'\]"),
    ],
)
def test_spec_validation(spec, match):
    with pytest.raises(ValueError, match=match):
        make_problem(spec)


def test_operator_bytes():
    assert ProblemSpec("ms", 10, 20, 1, m=30).operator_bytes() == 8 * 200 * 30
    assert ProblemSpec("ms", 10, 20, 1, m=30).operator_bytes(torch.float32) == 4 * 200 * 30
    assert ProblemSpec("mc", 10, 20, 1, p=0.5).operator_bytes() == 8 * 200


def test_sensing_surrogate_estimates_the_target_direction():
    """(1/m) sum_i y_i A_i = M*/m^2 in expectation (entries of A_i have variance 1/m^2); rectangular, so
    a transposed reshape would not even have the target's shape, let alone its singular vectors."""
    m = 4000
    problem = make_problem(ProblemSpec("ms", 4, 7, 2, data_seed=0, m=m))
    surrogate = problem.surrogate()
    assert surrogate.shape == (4, 7)
    relative = torch.linalg.matrix_norm(m**2 * surrogate - problem.target) / torch.linalg.matrix_norm(problem.target)
    assert float(relative) < 0.3  # ~ sqrt(d_out d_in / m) = 0.08 expected
    u, _, _ = torch.linalg.svd(surrogate)
    u_star, _, _ = target_factors(problem)
    overlap = torch.linalg.svdvals(u[:, :2].T @ u_star)  # cosines of the principal angles
    assert float(overlap.min()) > 0.9


def test_mc_surrogate_is_unbiased_over_masks():
    """E[(1/p) P_Omega(M*)] = M*: averaged over 200 masks the surrogate is close to the target."""
    spec = dict(task="mc", d_out=6, d_in=6, rank=2, p=0.5)
    target = make_problem(ProblemSpec(**spec, data_seed=0)).target
    mean = torch.zeros_like(target)
    for seed in range(200):
        problem = make_problem(ProblemSpec(**spec, data_seed=seed))
        mean += Completion(problem.spec, target, problem.mask).surrogate() / 200
    assert float(torch.linalg.matrix_norm(mean - target) / torch.linalg.matrix_norm(target)) < 0.15


# ---- a problem is its loss: the gradient defaults to autograd's, tensors are declared once, classes by name ----


@pytest.mark.parametrize("task", ["mf", "mc", "ms"])
def test_autograds_gradient_is_the_closed_form_of_every_builtin_problem(task):
    spec = ProblemSpec(task, 7, 5, 2, data_seed=1, p=0.5, m=40, noise=0.1 if task != "mf" else 0.0)
    problem = make_problem(spec)
    end_to_end = torch.randn(3, 7, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    closed = problem.loss_grad(end_to_end)
    assert torch.allclose(Problem.loss_grad(problem, end_to_end), closed, rtol=1e-12, atol=1e-15)


class ScaledFactorization(Problem):
    """A user's problem in a few lines: a loss, no gradient (autograd's), data and a setting declared once."""

    data = ("target",)
    settings = ("weight",)

    def __init__(self, spec, target, weight=1.0):
        self.spec, self.target, self.weight = spec, target, weight

    def train_loss(self, end_to_end):
        return 0.5 * self.weight * (end_to_end - self.target).square().mean(dim=(-2, -1))

    def recovery_error(self, end_to_end):
        return torch.linalg.matrix_norm(end_to_end - self.target) / torch.linalg.matrix_norm(self.target)

    def surrogate(self):
        return self.target


def test_a_users_problem_moves_saves_and_loads_from_what_it_declares(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    target = make_problem(ProblemSpec("mf", 6, 4, 2)).target
    problem = ScaledFactorization(ProblemSpec("test_problems:ScaledFactorization", 6, 4, 2), target, weight=3.0)
    moved = problem.to("cpu", torch.float32)
    assert moved.target.dtype == torch.float32 and moved.weight == 3.0
    save_problem(problem, tmp_path / "p.pt")
    loaded = load_problem(tmp_path / "p.pt")
    assert type(loaded).__name__ == "ScaledFactorization" and loaded.weight == 3.0
    assert torch.equal(loaded.target, target)
    w = torch.zeros(1, 6, 4, dtype=torch.float64)
    assert torch.allclose(loaded.loss_grad(w), -3.0 * target[None] / target.numel())


@pytest.mark.parametrize(
    ("task", "message"),
    [("nope", "module:Class"), ("no_such_module:X", "cannot import X"), ("torch:Tensor", "not a subclass")],
)
def test_a_problem_class_that_cannot_be_used_is_named(task, message):
    with pytest.raises(ValueError, match=message):
        problem_class(task)


def test_cdln_train_runs_a_users_problem_class_from_its_file(tmp_path, monkeypatch, capsys):
    from cdln.cli import main

    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    task = "test_problems:ScaledFactorization"
    target = make_problem(ProblemSpec("mf", 10, 8, 2, data_seed=4)).target
    save_problem(ScaledFactorization(ProblemSpec(task, 10, 8, 2), target, weight=2.0), tmp_path / "p.pt")
    args = ["train", "--task", task, "--problem", str(tmp_path / "p.pt"), "--model", "cdln", "--lr", "2",
            "--n-inner", "100", "--max-outer", "20", "--quiet", "--out", str(tmp_path / "run")]  # fmt: skip
    assert main(args) == 0, capsys.readouterr().err
    record = json.loads((tmp_path / "run" / "record.json").read_text())
    assert record["problem"]["task"] == task and record["timing"]["engine_path"] == "torch"
    assert record["members"][0]["final_recovery_error"] < 1e-6
    capsys.readouterr()
    assert main(["train", "--task", task, "--model", "cdln", "--quiet", "--out", str(tmp_path / "other")]) == 2
    assert "needs --problem: a file of it saved with cdln.io.save_problem" in capsys.readouterr().err
