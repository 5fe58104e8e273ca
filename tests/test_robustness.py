"""Beyond the paper: noisy observations, spectrum shapes, sweep grids, the robustness table and claims."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

from cdln.data.synthetic import low_rank_target, make_problem
from cdln.engine import TrainSettings, train
from cdln.io import load_problem, save_problem
from cdln.networks import compressed_dln, original_dln
from cdln.pipeline import claims, robustness
from cdln.pipeline.grid import Grid, GridError, SweepPoint, sweep_panels
from cdln.problems import Completion
from cdln.spec import ProblemSpec

# ---------------------------------------------------------------- problems


@pytest.mark.parametrize("task,extra", [("mc", {"p": 0.4}), ("ms", {"m": 60})])
def test_noise_changes_only_the_data_and_is_drawn_after_it(task, extra):
    clean = make_problem(ProblemSpec(task, 8, 6, 2, data_seed=3, **extra))
    noisy = make_problem(ProblemSpec(task, 8, 6, 2, data_seed=3, noise=0.05, **extra))
    # Same target (and mask / operator): the noise is drawn last from the same stream.
    torch.testing.assert_close(noisy.target, clean.target, rtol=0, atol=0)
    if task == "mc":
        assert torch.equal(noisy.mask, clean.mask)
        difference = noisy.observations - noisy.target
        assert torch.all(difference[~noisy.mask] == 0) and torch.all(difference[noisy.mask] != 0)
        observed = clean.target[clean.mask]
        noise = difference[noisy.mask]
    else:
        torch.testing.assert_close(noisy.operator, clean.operator, rtol=0, atol=0)
        observed, noise = clean.measurements, noisy.measurements - clean.measurements
    # Its standard deviation is `noise` x the RMS of the clean observations (loosely: a few dozen draws).
    ratio = float(noise.square().mean().sqrt() / observed.square().mean().sqrt())
    assert 0.025 < ratio < 0.1
    # The loss fits the noisy data; the recovery error is measured against the clean target.
    assert float(noisy.train_loss(noisy.target[None])) > 0
    assert float(noisy.recovery_error(noisy.target[None])) == pytest.approx(0.0, abs=1e-15)


def test_noisy_completion_round_trips_through_a_file(tmp_path):
    problem = make_problem(ProblemSpec("mc", 6, 5, 2, data_seed=1, p=0.5, noise=0.1))
    save_problem(problem, tmp_path / "noisy.pt")
    loaded = load_problem(tmp_path / "noisy.pt")
    assert loaded.spec == problem.spec
    torch.testing.assert_close(loaded.observations, problem.observations, rtol=0, atol=0)
    clean = make_problem(ProblemSpec("mc", 6, 5, 2, data_seed=1, p=0.5))
    assert "observations" not in clean.tensors() and clean.observations is clean.target


@pytest.mark.parametrize("model", ["original", "cdln"])
def test_every_engine_path_fits_the_noisy_observations_not_the_clean_target(model):
    """Training on a noisy problem equals training on a clean problem whose target is the noisy data
    (whatever path the engine picks: a path that read the clean target would recover it exactly)."""
    noisy = make_problem(ProblemSpec("mc", 12, 12, 2, data_seed=0, p=0.6, noise=0.1))
    as_target = Completion(noisy.spec, noisy.observations.clone(), noisy.mask)

    def trained(problem):
        if model == "original":
            network = original_dln(12, 12, 3, 0.1, [0])
        else:
            network = compressed_dln(problem.surrogate(), 4, 3, 0.1, alpha=1.0)
        train(network, problem, TrainSettings(5.0, 50, 6))
        return network

    for a, b in zip(trained(noisy).weights, trained(as_target).weights, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_reshaped_spectra_keep_the_spread_targets_vectors_and_norm():
    def draw(spectrum, condition=None):
        return low_rank_target(20, 16, 4, torch.Generator().manual_seed(5), spectrum, condition)

    spread, u, s, v = draw("spread")
    flat, u_flat, s_flat, v_flat = draw("flat")
    geometric, _, s_geo, _ = draw("geometric", 100.0)
    torch.testing.assert_close(u_flat, u) and torch.testing.assert_close(v_flat, v)
    for matrix in (flat, geometric):
        assert float(torch.linalg.matrix_norm(matrix)) == pytest.approx(float(torch.linalg.matrix_norm(spread)))
    assert torch.allclose(s_flat, s_flat[0].expand(4))
    assert float(s_geo[0] / s_geo[-1]) == pytest.approx(100.0)
    ratios = s_geo[:-1] / s_geo[1:]
    torch.testing.assert_close(ratios, ratios[0].expand(3))
    assert float(torch.linalg.matrix_rank(geometric)) == 4


# ---------------------------------------------------------------- sweep grids

SECTION = {
    "task": "mc", "d": 20, "r": 2, "r_hat": 4, "p": 0.5, "depth": 3, "eps": 0.01, "lr": 10, "n_inner": 10,
    "max_outer": 5, "tol": 1e-10, "models": ["original", "cdln"], "level": 1e-4,
    "sweeps": {"r_hat_ratio": [0.5, 2], "p": [0.3, 0.5], "noise": [0, 0.1], "condition": [10], "d": [20, 30]},
    "point_settings": {"d_30": {"lr": 22.5, "model_settings": {"original": {"max_outer": 2}}}},
}  # fmt: skip


def _config(section=SECTION):
    return {"output_root": "t", "device": "cpu", "dtype": "float64", "seeds": [0, 1],
            "experiments": {"robustness": section}}  # fmt: skip


def test_a_sweep_varies_one_factor_at_a_time_and_shares_the_base_point():
    panels = sweep_panels(SECTION, "experiments.robustness")
    assert list(panels)[0] == "base" and panels == {
        "base": {},
        "r_hat_ratio_0p5": {"r_hat": 1},
        "p_0p3": {"p": 0.3},
        "noise_0p1": {"noise": 0.1},
        "condition_10": {"spectrum": "geometric", "condition": 10},
        "d_30": {"d": 30, "lr": 22.5, "model_settings": {"original": {"max_outer": 2}}},
    }
    grid = Grid(_config())
    runs = {(job.job_id, run.name): run.options for job, run in grid.runs("robustness")}
    # The original DLN does not depend on r_hat: trained once, at the base point, and read from there.
    assert ("r_hat_ratio_0p5_seed0", "original") not in runs and ("r_hat_ratio_0p5_seed0", "cdln") in runs
    points = {(p.factor, p.value): p for p in grid.sweep_points("robustness")}
    assert points[("r_hat_ratio", 0.5)].runs == {"original": "base", "cdln": "r_hat_ratio_0p5"}
    assert points[("noise", 0)].panel == "base" and points[("d", 20)].panel == "base"
    # Point and per-model settings reach the runs; problem settings reach the problem file and its name.
    assert runs[("d_30_seed1", "original")]["max_outer"] == 2 and runs[("d_30_seed1", "cdln")]["max_outer"] == 5
    assert runs[("d_30_seed1", "cdln")]["lr"] == 22.5
    noisy = grid.data_file(runs[("noise_0p1_seed0", "cdln")]["problem"])
    assert noisy.options["noise"] == 0.1 and "noise0.1" in noisy.path
    geometric = grid.data_file(runs[("condition_10_seed0", "cdln")]["problem"])
    assert geometric.options["spectrum"] == "geometric" and geometric.options["condition"] == 10
    base = grid.data_file(runs[("base_seed0", "cdln")]["problem"])
    assert "noise" not in base.options and base.path.endswith("d20_r2_p0.5_seed0.pt")  # the paper's file name

    # draw_in_job: no problem files; each run draws the same problem from its options (the file's, seed included).
    drawn = Grid(_config({**SECTION, "draw_in_job": True}))
    assert drawn.data_files() == [] and all(job.inputs == () for job in drawn.jobs("robustness"))
    options = {(job.job_id, run.name): run.options for job, run in drawn.runs("robustness")}
    noisy_run = options[("noise_0p1_seed1", "original")]
    assert noisy_run["problem"] is None and noisy_run["noise"] == 0.1 and noisy_run["data_seed"] == 1
    assert noisy_run["d"] == 20 and noisy_run["p"] == 0.5 and noisy_run["r"] == 2


@pytest.mark.parametrize(
    "change,match",
    [
        ({"sweeps": {"r_hat_ratio": [0.75]}}, r"r_hat_ratio: 0.75 x r = 1.5 is not a width"),
        ({"sweeps": {"depth": [2, 3]}}, r"unknown factor 'depth'"),
        ({"point_settings": {"d_31": {"lr": 1}}}, r"point_settings: unknown panel\(s\) \['d_31'\]"),
    ],
)
def test_a_bad_sweep_names_its_key(change, match):
    with pytest.raises(GridError, match=match):
        Grid(_config({**SECTION, **change}))


# ---------------------------------------------------------------- the table and its claims


def _runs_and_curves():
    """Two seeds of a base point (both reach the level; the original in 4x the seconds) and of a point where
    the C-DLN reaches it and the original hits its budget first."""
    runs, curves = [], []
    specs = {  # (panel, model): errors at iterations 0, 100, 200, stop, budget, converged, seconds per checkpoint
        ("base", "original"): ([1.0, 1e-2, 1e-5], 200, True, 0.4),
        ("base", "cdln"): ([1.0, 1e-3, 1e-6], 200, True, 0.1),
        ("d_30", "original"): ([2.0, 1.5, 1.0], 200, False, 1.0),
        ("d_30", "cdln"): ([2.0, 1e-5, 1e-9], 400, True, 0.1),
    }
    for (panel, model), (errors, budget, converged, step) in specs.items():
        for seed in (0, 1):
            scaled = [e * (1 + seed) for e in errors]
            for i, error in enumerate(scaled):
                curves.append({"panel": panel, "model": model, "seed": seed, "iteration": 100 * i,
                               "seconds": step * i, "recovery_error": error})  # fmt: skip
            runs.append({"panel": panel, "model": model, "seed": seed, "d": 20, "r": 2, "r_hat": 4,
                         "converged": converged, "budget": budget, "stop_iteration": 200,
                         "stop_seconds": 2 * step, "seconds_per_iteration": step / 100, "device_name": "cpu",
                         "engine_path": "native"})  # fmt: skip
    return pd.DataFrame(runs), pd.DataFrame(curves)


POINTS = [
    SweepPoint("d", 20, "base", {"original": "base", "cdln": "base"}),
    SweepPoint("d", 30, "d_30", {"original": "d_30", "cdln": "d_30"}),
]


def test_the_table_finds_the_level_and_marks_budget_hits_as_lower_bounds():
    frame = robustness.table(*_runs_and_curves(), POINTS, level=1e-4)
    base = frame[frame["panel"] == "base"].set_index(["model", "seed"])
    assert base.loc[("original", 0), "level_iteration"] == 200 and base.loc[("cdln", 0), "level_iteration"] == 200
    assert base.loc[("cdln", 1), "relative_error"] == pytest.approx(1e-6)
    far = frame[frame["panel"] == "d_30"].set_index(["model", "seed"])
    assert far.loc[("original", 0), "hit_budget"] and not far.loc[("cdln", 0), "hit_budget"]
    assert math.isnan(far.loc[("original", 0), "level_seconds"])
    assert far.loc[("original", 0), "level_seconds_at_least"] == 2.0  # where it stopped
    assert far.loc[("cdln", 0), "level_iteration"] == 100
    ratios = robustness.paired_ratio(frame, "d", 20, "level_seconds", "original", "cdln")
    assert list(ratios) == [4.0, 4.0]


def test_the_table_names_a_point_without_runs():
    runs, curves = _runs_and_curves()
    with pytest.raises(ValueError, match=r"no original runs in panel 'p_0p1' \(p = 0.1\)"):
        robustness.table(runs, curves, [SweepPoint("p", 0.1, "p_0p1", {"original": "p_0p1"})], level=1e-4)


def _claim(measure, holds):
    return claims.Claim("x", "fig_robustness", "c", "p", measure, holds, section="ours")


def test_robustness_claims_read_the_table_and_can_fail(tmp_path):
    robustness.table(*_runs_and_curves(), POINTS, level=1e-4).to_csv(tmp_path / "robustness.csv", index=False)
    speedup = _claim("robust_ratio(d, 20, level_seconds)", {"at_least": 4})
    lower_bound = _claim("robust_ratio(d, 30, level_seconds_at_least)", {"above": 10})
    never = _claim("robust_ratio(d, 30, level_seconds)", {"above": 0})  # the original never got there: NaN
    worst = _claim("robust(d, 30, original, relative_error, over=max)", {"below": 0.1})
    swapped = _claim("robust_ratio(d, 20, level_seconds, a=cdln, b=original)", {"at_least": 4})
    table = claims.evaluate([speedup, lower_bound, never, worst, swapped], "fig_robustness", tmp_path)
    assert list(table["holds"]) == [True, True, False, False, False]
    assert table["aggregation"].iloc[0] == "min over 2 seeds (paired by seed); spread over seeds 4-4"
    assert claims.tables_read([speedup], "fig_robustness") == ["robustness.csv"]
    with pytest.raises(claims.ClaimError, match=r"no rows for d = 50"):
        claims.evaluate([_claim("robust(d, 50, cdln, final_error)", {"below": 1})], "fig_robustness", tmp_path)


def test_the_eckart_young_floor_is_the_best_narrow_fit_of_the_redrawn_target():
    """A point with r_hat = 1 < r = 2: its floor is the relative squared error of the drawn target's best
    rank-1 approximation (the problem drawn here as a run draws it), which no rank-1 matrix beats."""
    spec = ProblemSpec("mc", 20, 20, 2, p=0.5, data_seed=7)
    target = make_problem(spec).target
    u, s, vh = torch.linalg.svd(target)
    best = s[0] * torch.outer(u[:, 0], vh[0])
    best_error = float((best - target).square().sum() / target.square().sum())
    other = best + 0.1 * torch.outer(u[:, 1], vh[0])  # another rank-1 matrix
    assert float((other - target).square().sum() / target.square().sum()) > best_error
    runs, curves = _runs_and_curves()
    narrow = runs["model"].eq("cdln").map({True: 1, False: math.nan})  # the original has no r_hat
    runs = runs.assign(r_hat=narrow, data_seed=7, spectrum="spread", condition=math.nan)
    frame = robustness.table(runs, curves, POINTS, level=1e-4).set_index(["panel", "model", "seed"])
    assert frame.loc[("base", "cdln", 0), "floor_error"] == pytest.approx(best_error, rel=1e-12)
    relative = frame.loc[("base", "cdln", 0), "relative_error"]
    assert frame.loc[("base", "cdln", 0), "relative_to_floor"] == pytest.approx(relative / best_error)
    with pytest.raises(ValueError, match=r"panel 'base', cdln, seed 0: no data seed to redraw its target"):
        robustness.table(runs.assign(data_seed=math.nan), curves, POINTS, level=1e-4)
    for width in (narrow * 2, 2):  # the original full width (NaN) or not; an int column too
        full_width = robustness.table(runs.assign(r_hat=width), curves, POINTS, level=1e-4)
        assert (full_width["floor_error"] == 0).all() and full_width["relative_to_floor"].isna().all()
    int_width = robustness.table(runs.assign(r_hat=1), curves, POINTS, level=1e-4)
    assert int_width["floor_error"].tolist() == pytest.approx([best_error] * len(int_width), rel=1e-12)
