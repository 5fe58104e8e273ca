"""The run grid (cdln.pipeline.grid): the one expansion of a pipeline config into jobs, runs and files."""

from __future__ import annotations

import copy
import itertools
import json
import shlex

import pytest
import yaml
from conftest import REPO

from cdln.cli.train import parse_job, resolve_config
from cdln.pipeline.grid import Grid, GridError, alpha_values, cli_flags, real_data_seed, synthetic_run_keys

PAPER = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
CI = yaml.safe_load((REPO / "config" / "ci.yaml").read_text())


def test_paper_grid_by_hand():
    """Jobs = panels x seeds; every model of a panel (every alpha of a sweep) is a run of its job."""
    grid = Grid(PAPER)
    seeds = len(PAPER["seeds"])
    assert len(grid.jobs("mf")) == 3 * seeds and {len(job.runs) for job in grid.jobs("mf")} == {3}
    assert [run.name for run in grid.jobs("mf")[0].runs] == ["original", "cdln", "bm"]
    alphas = alpha_values(PAPER["experiments"]["ablation_alpha"]["alpha_sweep"])
    assert len(alphas) == 38 and alphas[:3] == [0.5, 0.75, 1.0] and alphas[-1] == 9.75
    sweep = grid.jobs("ablation_alpha")[0]
    assert [run.name for run in sweep.runs][:3] == ["original", "cdln_alpha0.5", "cdln_alpha0.75"]
    assert len(sweep.runs) == 1 + 38
    assert [job.job_id for job in grid.jobs("incremental")] == [
        f"{task}_seed{seed}" for task in ("mf", "mc", "ms") for seed in PAPER["seeds"]
    ]
    assert [job.job_id for job in grid.jobs("movielens")] == ["seed0", "seed1"]
    assert [run.name for run in grid.jobs("movielens")[0].runs] == ["original", "cdln", "altmin"]


@pytest.mark.parametrize("dtype", ["float32", "float64", None])
def test_a_movielens_dtype_sets_both_dlns_and_altmin_keeps_the_global_one(dtype):
    config = copy.deepcopy(PAPER)
    config["experiments"]["movielens"].pop("dtype", None)
    if dtype:
        config["experiments"]["movielens"]["dtype"] = dtype
    runs = {run.name: run.options["dtype"] for run in Grid(config).jobs("movielens")[0].runs}
    assert runs == {"original": dtype or PAPER["dtype"], "cdln": dtype or PAPER["dtype"], "altmin": PAPER["dtype"]}


def test_runs_of_one_job_share_one_problem_file_and_experiments_share_draws():
    grid = Grid(PAPER)
    for job in grid.jobs("mc") + grid.jobs("ablation_depth"):
        assert {run.options["problem"] for run in job.runs} == set(job.inputs)
    mc = {path for job in grid.jobs("mc") for path in job.inputs}
    depth = {path for job in grid.jobs("ablation_depth") for path in job.inputs}
    assert mc == depth  # the same (task, d, r, p, seed): drawn once, trained on by both experiments
    ms = grid.data_file(grid.jobs("ms")[0].inputs[0])
    assert ms.temporary and ms.command == "make-problem" and ms.options["m"] == 4000 and ms.options["p"] is None


def trained_manifest(job) -> dict:
    """The job's manifest through JSON, every run as one trained here (a run another job trains parses too)."""
    manifest = json.loads(json.dumps(job.manifest()))
    for entry in manifest["runs"]:
        entry.pop("same_as", None)
    return manifest


def test_every_run_parses_with_its_cdln_command():
    """What the grid asks for, the CLI accepts: each job's manifest as ``cdln run-job`` parses it, through
    JSON (the files it reads do not exist here; the values are checked by tests/test_config_validation.py)."""
    for config in (PAPER, CI):
        for job in Grid(config).jobs():
            parsed = parse_job(trained_manifest(job), validate=False)
            assert [run.name for run in parsed] == [run.name for run in job.runs]


def test_a_setting_reaches_the_run_config_by_one_path():
    """alpha: config section -> run options -> the manifest (JSON) -> the RunConfig the engine is given."""
    config = copy.deepcopy(CI)
    config["experiments"]["mc"]["alpha"] = 3.5
    job = Grid(config).jobs("mc")[0]
    runs = {run.name: run for run in parse_job(trained_manifest(job), validate=False)}
    assert resolve_config(runs["cdln"].args).alpha == [3.5]
    assert "alpha" not in job.manifest()["runs"][0]["options"]  # alpha belongs to the C-DLN only
    assert resolve_config(runs["original"].args).alpha == [1.0]  # the default


def test_batched_alpha_sweep_is_one_run_with_every_alpha():
    config = copy.deepcopy(CI)
    config["experiments"]["ablation_alpha"]["batch_alphas"] = True
    job = Grid(config).jobs("ablation_alpha")[0]
    assert [run.name for run in job.runs] == ["original", "cdln_alphabatch"]
    assert job.runs[1].options["alpha"] == alpha_values(CI["experiments"]["ablation_alpha"]["alpha_sweep"])


def test_analysis_seed_is_the_configured_one():
    """The seed of an analysis job comes from the config, in its id and in its flags alike."""
    config = copy.deepcopy(CI)
    config["experiments"]["incremental"]["seeds"] = [1]
    grid = Grid(config)
    job = grid.job("incremental", "mf_seed1")
    assert job.runs[0].options["init_seed"] == 1 and job.runs[0].options["data_seed"] == 1
    with pytest.raises(GridError, match=r"experiments.incremental defines no job 'mf_seed0'; its jobs: \['mc_seed1'"):
        grid.job("incremental", "mf_seed0")
    assert grid.analysis_run_dirs("incremental")["mf"] == ["results/ci/runs/incremental/mf_seed1/original"]
    every_seed = Grid(CI).analysis_run_dirs("incremental")["mf"]  # default: the global seeds, in order
    assert every_seed == [f"results/ci/runs/incremental/mf_seed{seed}/original" for seed in CI["seeds"]]


def test_unknown_names_are_refused_with_what_exists():
    grid = Grid(CI)
    with pytest.raises(GridError, match=r"no enabled experiment 'fig_magic' trains runs; those that do: \['mf'"):
        grid.jobs("fig_magic")
    with pytest.raises(GridError, match=r"makes no data file 'nope.pt'; it makes: \['results/ci/data/"):
        grid.data_file("nope.pt")


def test_disabled_experiments_have_no_jobs():
    config = copy.deepcopy(CI)
    config["experiments"]["ms"]["enabled"] = False
    grid = Grid(config)
    assert "ms" not in grid.experiments and all(not path.startswith("results/ci/data/ms") for path in grid._data)


def test_one_file_asked_for_with_two_settings_is_a_naming_bug():
    config = copy.deepcopy(CI)
    config["experiments"]["ablation_depth"]["p"] = 0.4000001  # formats as p0.4 like ablation_alpha's p = 0.4
    with pytest.raises(GridError, match=r"d32_r3_p0.4_seed0.pt is asked for with two different settings"):
        Grid(config)


def test_run_directory_names_read_back():
    assert synthetic_run_keys("results/ci/runs/ablation_alpha/r3_seed1/cdln_alpha0.5") == {
        "experiment": "ablation_alpha",
        "panel": "r3",
        "panel_id": "r3_alpha0.5",
        "model": "cdln",
        "seed": 1,
    }
    assert synthetic_run_keys("results/ci/runs/mf/r2_exact_seed0/bm")["panel"] == "r2_exact"
    assert real_data_seed("results/ci/runs/movielens/seed3/altmin") == 3
    per_panel = synthetic_run_keys("results/ci/runs/robustness/p_0p2/cdln_seed2")  # a job per panel
    assert (per_panel["panel"], per_panel["model"], per_panel["seed"]) == ("p_0p2", "cdln", 2)
    with pytest.raises(ValueError, match="not a synthetic run directory"):
        synthetic_run_keys("results/ci/runs/mf/r2/bm")


def test_cli_flags_round_trip_through_shell_quoting():
    flags = cli_flags({"title": "MF, r = 10 [config: ci]", "alpha": [0.5, 1], "quiet": True, "skip": None, "no": False})
    assert shlex.split(flags) == ["--title", "MF, r = 10 [config: ci]", "--alpha", "0.5", "1", "--quiet"]


def test_panels_in_config_order():
    assert Grid(PAPER).panels("mf") == list(PAPER["experiments"]["mf"]["panels"])
    assert Grid(CI).panels("ablation_depth") == ["L2", "L3"]


def test_a_named_nonlinear_protocol_replaces_the_sections_training_settings():
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    section = config["experiments"]["nonlinear"]
    options = Grid(config).jobs("nonlinear")[0].runs[0].options
    assert (options["batch_size"], options["steps"]) == (256, 3000)
    section["protocol"] = "full_batch"
    options = Grid(config).jobs("nonlinear")[0].runs[0].options
    protocol = (options["batch_size"], options["steps"], options["eval_every"], options["optimizer"])
    assert protocol == ("full", 1250, 10, "adam")
    manifest = Grid(config).jobs("nonlinear")[0].manifest()
    (run,) = [r for r in parse_job(manifest, validate=False) if r.name == "mlp"]
    assert run.args.batch_size is None  # full: the whole training set every step
    section["protocol"] = "mine"
    with pytest.raises(GridError, match=r"protocol: 'mine' is not in its protocols \['full_batch'\]"):
        Grid(config)


def test_each_run_trains_once_on_the_paper_grid():
    """No two jobs of the paper grid train runs of equal settings: among the runs that train, none could stand
    for another (same settings, stopping no later, readable by its figure). The pairs that used to train twice
    are each one run, read by every figure that needs it; a job that reads a run depends on the job that
    trains it. The grid is the one Snakemake builds: the config with the schema's defaults filled in."""
    from snakemake.utils import validate

    config = copy.deepcopy(PAPER)
    validate(config, str(REPO / "workflow" / "schemas" / "config.schema.yaml"))  # fills defaults, as the Snakefile does
    assert config["experiments"]["incremental"]["tasks"]["ms"]["operator_dtype"] == "float32"
    grid = Grid(config)
    where = {job.run_dir(run): (job, run) for job in grid.jobs() for run in job.runs}
    groups: dict[str, list] = {}
    for job in grid.jobs():
        for run in job.trained():
            groups.setdefault(grid.run_identity(run), []).append((job, run))
    for trained in groups.values():
        for (job_a, a), (_, b) in itertools.permutations(trained, 2):
            assert not Grid._can_read(job_a.experiment, a, b), f"{job_a.directory}/{a.name} trains twice"
    read = {f"{job.experiment}/{job.job_id}/{run.name}": run.same_as for job in grid.jobs() for run in job.runs}
    for seed in PAPER["seeds"]:
        for model in ("original", "cdln"):
            assert read[f"baselines/r10_seed{seed}/{model}"] == f"results/paper/runs/mc/r10_seed{seed}/{model}"
            assert read[f"robustness/base/{model}_seed{seed}"] == f"results/paper/runs/mc/r10_seed{seed}/{model}"
        assert read[f"incremental/ms_seed{seed}/original"] == f"results/paper/runs/ms/r10_seed{seed}/original"
        assert read[f"incremental/mc_seed{seed}/original"] == f"results/paper/runs/mc/r10_seed{seed}/original"
        assert read[f"invariance/mc_seed{seed}/original"] == f"results/paper/runs/mc/r10_seed{seed}/original"
        assert read[f"invariance/mf_seed{seed}/original"] == f"results/paper/runs/incremental/mf_seed{seed}/original"
    for job in grid.jobs():
        for run in job.runs:
            if run.same_as:
                owner_job, owner = where[run.same_as]
                assert owner.same_as is None and owner_job.directory in job.inputs
                assert owner.options.get("snapshots") or not run.options.get("snapshots")
    assert grid.analysis_run_dirs("incremental")["ms"][0] == "results/paper/runs/ms/r10_seed0/original"


def test_a_run_stopped_sooner_reads_the_longer_run_only_where_its_reader_can_cut_it():
    """An aggregated figure reads a longer run cut at its own tol (robustness's base point, tol 1e-10, from the
    mc runs, 1e-12); an analysis notebook reads whole runs, so its run must stop where the trained one does."""
    config = copy.deepcopy(PAPER)
    config["experiments"]["invariance"]["tasks"]["mc"]["tol"] = 1e-10
    grid = Grid(config)
    assert grid.job("robustness", "base").runs[0].same_as == "results/paper/runs/mc/r10_seed0/original"
    assert grid.job("invariance", "mc_seed0").runs[0].same_as is None  # trained itself


def test_an_experiment_on_a_users_problem_is_each_model_per_seed_on_their_file(tmp_path):
    """Any experiment name but the paper's: each model on the user's problem file, one job per seed (the init seed),
    panel main; its figure and curves table are a target; a misspelt name of the paper's gets one line."""
    from cdln.pipeline.targets import Targets
    from cdln.pipeline.validate import SCHEMA, pipeline_config_errors, pipeline_run_errors

    config = copy.deepcopy(CI)
    own = {"task": "mine.huber:HuberCompletion", "problem": str(tmp_path / "huber.pt"), "models": ["original", "cdln"],
           "depth": 3, "eps": 0.01, "lr": 20, "r_hat": 6, "n_inner": 10, "max_outer": 5, "tol": 0.0,
           "model_settings": {"cdln": {"lr": 10}}}  # fmt: skip
    config["experiments"]["huber"] = own
    grid = Grid(config)
    assert grid.own_experiments == ["huber"]
    jobs = grid.jobs("huber")
    assert [job.job_id for job in jobs] == [f"main_seed{seed}" for seed in config["seeds"]]
    assert all(job.inputs == (own["problem"],) for job in jobs)
    original, cdln = jobs[0].runs
    assert original.options["problem"] == own["problem"] and original.options["task"] == own["task"]
    assert (original.options["lr"], cdln.options["lr"], cdln.options["r_hat"], original.options["r_hat"]) == (
        20,
        10,
        6,
        None,
    )
    assert cdln.keys == {"experiment": "huber", "panel": "main", "model": "cdln", "seed": config["seeds"][0]}
    targets = Targets(grid, exists=lambda path: True)
    assert "fig_huber" in targets.names() and f"{grid.root}/tables/huber_curves.csv" in targets.files("fig_huber")
    assert pipeline_config_errors(config, SCHEMA) == []
    assert any("huber.pt does not exist" in line for line in pipeline_run_errors(config, check_memory=False))
    config["experiments"]["mcc"] = {"task": "mc", "d": 10}
    (line,) = pipeline_config_errors(config, SCHEMA)
    assert line.startswith("experiments.mcc: not an experiment of the paper's (mf, mc,") and "module:Class" in line
