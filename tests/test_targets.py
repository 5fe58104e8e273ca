"""The pipeline's targets (cdln.pipeline.targets) and its cluster cost model (cdln.pipeline.cluster), from the
real configs, without Snakemake."""

from __future__ import annotations

import pytest
import yaml
from conftest import REPO

from cdln.pipeline import cluster
from cdln.pipeline.claims import load_claims
from cdln.pipeline.grid import Grid
from cdln.pipeline.targets import HOW_TO_ADD, Targets, missing_real_data
from cdln.pipeline.validate import load_pipeline_config


def _targets(name: str, exists=lambda path: False, **section_overrides) -> Targets:
    config = load_pipeline_config(REPO / "config" / name)
    for experiment, values in section_overrides.items():
        config["experiments"][experiment].update(values)
    claims = [claim.figure for claim in load_claims(REPO / config["claims"]["file"])]
    return Targets(Grid(config), claims, exists=exists)


def test_a_figure_target_lists_its_figure_tables_and_claims():
    targets = _targets("config.yaml")
    root = targets.root
    assert targets.files("fig_mc") == [
        f"{root}/figures/fig_mc.png", f"{root}/figures/fig_mc.pdf", f"{root}/tables/mc_curves.csv",
        f"{root}/tables/claims/fig_mc.csv",
    ]  # fmt: skip
    assert f"{root}/notebooks/invariance.ipynb" in targets.files("fig_invariance")
    assert f"{root}/tables/robustness.csv" in targets.files("fig_robustness")
    assert targets.files("claims_table") == [f"{root}/tables/claims.csv", f"{root}/tables/claims.md"]
    with pytest.raises(ValueError, match="no target 'fig_foo'.*fig_mc"):
        targets.files("fig_foo")


def test_missing_real_data_leaves_its_figure_out_of_the_default_target_and_says_how_to_add_it(tmp_path):
    targets = _targets("config.yaml", movielens={"zip_path": str(tmp_path / "none.zip")})
    left = targets.left_out()
    assert "fig_movielens" in left and HOW_TO_ADD["movielens"] in left["fig_movielens"]
    assert "ml-100k.zip" in left["fig_movielens"]
    everything = targets.files("all")
    assert not any("movielens" in path for path in everything)
    assert set(targets.files("fig_mc")) <= set(everything) and set(targets.files("claims_table")) <= set(everything)
    assert "fig_movielens" not in targets.evaluated_claim_figures()
    assert targets.files("fig_movielens")  # asked for by name it still lists its files (and fails without data)


def test_data_that_appears_or_was_built_before_is_in(tmp_path):
    archive = tmp_path / "ml-100k.zip"
    archive.write_bytes(b"x")
    assert missing_real_data("movielens", {"zip_path": str(archive)}) == (None, None)
    present = _targets("config.yaml", movielens={"zip_path": str(archive)})
    assert "fig_movielens" not in present.left_out()
    assert any("movielens" in path for path in present.files("all"))
    built = _targets("config.yaml", exists=lambda path: path.endswith("tables/movielens.md"),
                     movielens={"zip_path": str(tmp_path / "gone.zip")})  # fmt: skip
    assert "fig_movielens" not in built.left_out() and built.real_data_present("movielens")


def test_the_reduced_grid_makes_stand_ins_so_nothing_is_left_out():
    targets = _targets("ci.yaml")
    assert targets.left_out() == {}
    assert {"fig_movielens", "fig_nonlinear", "claims_table"} <= set(targets.names())


def test_short_jobs_are_the_reduced_grids_and_only_the_paper_grids_compressed_only_points():
    """Every training job of the reduced grid is short (but those that read another job's run: ungrouped); of the
    paper grid's only some of those whose trained runs
    are all narrow (width <= 10: a robustness point of C-DLNs of width <= r, whose original DLN is read from the
    base point; the MF r = 5 panel whose original DLN is the other r = 5 panel's)."""
    for name in ("ci.yaml", "config.yaml"):
        grid = Grid(load_pipeline_config(REPO / "config" / name))
        for job in grid.jobs():
            trained = [run for run in job.trained() if run.command == "train"]
            if trained:
                short = cluster.training_group(grid, job.experiment, job.job_id) == cluster.SHORT_GROUP
                widths = [run.options.get("r_hat") or run.options.get("bm_rank") or 100 for run in trained]
                if any(run.same_as for run in job.runs):  # a job reading another job's run is never grouped
                    assert not short, job.job_id
                elif name == "ci.yaml":
                    assert short, (job.job_id, cluster.estimated_work(grid, job))
                elif short:
                    assert max(widths) <= 10, (job.job_id, cluster.estimated_work(grid, job))


def test_estimated_work_grows_with_the_budget():
    config = load_pipeline_config(REPO / "config" / "ci.yaml")
    job = Grid(config).jobs("ms")[0]
    before = cluster.estimated_work(Grid(config), job)
    config["experiments"]["ms"]["max_outer"] *= 10
    assert before > 0 and cluster.estimated_work(Grid(config), Grid(config).jobs("ms")[0]) == pytest.approx(10 * before)
    borrowing = next(job for job in Grid(config).jobs() if not job.trained())
    assert cluster.estimated_work(Grid(config), borrowing) == 0  # it trains nothing itself


def test_the_longest_jobs_start_first_and_their_problems_with_them():
    grid = Grid(yaml.safe_load((REPO / "config" / "config.yaml").read_text()))
    priority = {(job.experiment, job.job_id): cluster.job_priority(grid, job.experiment, job.job_id)
                for job in grid.jobs()}  # fmt: skip
    work = {(job.experiment, job.job_id): cluster.estimated_work(grid, job) for job in grid.jobs()}
    ordered = sorted(priority, key=lambda key: work[key] or 0)
    assert [priority[key] for key in ordered] == sorted(priority[key] for key in ordered)  # more work, not lower
    assert priority[ordered[-1]] > priority[ordered[0]] >= 1
    for data in grid.data_files():
        readers = [job for job in grid.jobs() if data.path in job.inputs]
        if readers:
            assert cluster.data_priority(grid, data.path) == max(priority[(j.experiment, j.job_id)] for j in readers)
