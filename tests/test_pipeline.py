"""The Snakemake pipeline: lint, dry runs (the grid's jobs, and nothing else, per rule), single-figure
targets, what parsing may not do (import torch, change the environment, depend on the include order), real
data appearing and disappearing between runs, the SLURM profile's plan, and the regression gate. The
end-to-end run of the reduced grid is in test_pipeline_ci.py (slow); through SLURM in test_slurm.py."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import pipeline_copy

from cdln.pipeline import regression
from cdln.pipeline.claims import load_claims
from cdln.pipeline.grid import SYNTHETIC, Grid
from cdln.pipeline.targets import HOW_TO_ADD

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake"]
EXPECTED = REPO / "tests" / "expected" / "ci_summary.yaml"
PAPER = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
CI = yaml.safe_load((REPO / "config" / "ci.yaml").read_text())


def snakemake(*args: str, timeout: int = 300, cwd: Path = REPO, env=None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ if env is None else env, OMP_NUM_THREADS="1")
    return subprocess.run(
        [*SNAKEMAKE, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def job_counts(output: str) -> dict[str, int]:
    """The 'Job stats' table of a dry run: rule -> number of jobs."""
    _, _, table = output.partition("Job stats:")
    assert table, f"no job stats in the dry run output:\n{output[-3000:]}"
    counts = {}
    for line in table.splitlines()[3:]:
        match = re.match(r"^(\w+)\s+(\d+)$", line.strip())
        if not match:
            break
        counts[match[1]] = int(match[2])
    return counts


def test_lint_is_clean() -> None:
    result = snakemake("--lint")
    assert result.returncode == 0, f"snakemake --lint found problems:\n{result.stdout[-6000:]}{result.stderr[-2000:]}"


def claim_figures(config: dict) -> list[str]:
    """The figures of the config's claims file whose experiment the grid enables."""
    grid = Grid(config)
    figures = dict.fromkeys(claim.figure for claim in load_claims(REPO / config["claims"]["file"]))
    return [figure for figure in figures if grid.enabled(figure.removeprefix("fig_"))]


def make_fashion_mnist(folder: Path, n_train: int, n_test: int) -> None:
    """Fill ``folder`` with generated FashionMNIST-format IDX files (``cdln fashion-mnist-synthetic``)."""
    made = subprocess.run(
        [sys.executable, "-m", "cdln", "fashion-mnist-synthetic", "--out", str(folder)]
        + ["--n-train", str(n_train), "--n-test", str(n_test)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert made.returncode == 0, made.stderr


def with_real_data(config: dict, tmp_path: Path, present: bool, name: str = "cfg") -> dict:
    """``config`` with its real data sets placed (``present``) or absent, whatever this machine has installed:
    FashionMNIST from a folder of generated IDX files or an empty one, MovieLens from a stand-in file or none
    (a copy of the workflow has no resources/)."""
    config = yaml.safe_load(yaml.safe_dump(config))
    fashion = tmp_path / f"{name}-fashion-mnist"
    fashion.mkdir(parents=True)
    if present:
        make_fashion_mnist(fashion, n_train=60, n_test=20)
        (tmp_path / "ml-100k.zip").write_bytes(b"stand-in: only its presence is read when planning")
    config["experiments"]["nonlinear"].update(data_dir=str(fashion), synthetic=False)
    config["experiments"]["movielens"].update(zip_path=str(tmp_path / "ml-100k.zip") if present else None)
    config["experiments"]["movielens"]["synthetic"] = False
    return config


@pytest.mark.parametrize("present", [False, True], ids=["without-real-data", "with-real-data"])
def test_paper_grid_dry_run_plans_exactly_the_grid(tmp_path: Path, present: bool) -> None:
    """config/config.yaml, every job forced: one run_job per job of the grid, one data job per file, one claims
    job per figure with claims. The real data sets are placed or withheld by the test, so the counts follow
    from the grid, whatever this machine has installed."""
    clone = pipeline_copy(tmp_path / "clone")
    config = with_real_data(PAPER, tmp_path, present)
    (clone / "paper.yaml").write_text(yaml.safe_dump(config))
    result = snakemake("-n", "-F", "--quiet", "rules", "--configfile", "paper.yaml", cwd=clone)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    counts = job_counts(output)
    grid = Grid(config)
    files = grid.data_files()
    figures = claim_figures(config)
    # Without its data a real-data figure is left out of the default target: its jobs and files are not planned.
    real = [] if present else ["movielens", "nonlinear"]
    left_out = sum(len(grid.jobs(name)) for name in real)
    expected = {
        "run_job": len(grid.jobs()) - left_out,
        "make_problem": sum(
            f.command == "make-problem" or (f.command == "movielens-problem" and present)
            for f in files
            if not f.temporary
        ),
        "make_sensing_problem": sum(f.temporary for f in files),
        "aggregate_synthetic": len([name for name in grid.experiments if name in SYNTHETIC]),
        "plot_error_curves": 5,
        "plot_ablation_alpha": 1,
        "summary_table": 1,
        "claims_table": 1,
        # one per figure with claims; the real-data figures' only while their data is there
        "claims_figure": len(figures) - (0 if present else len({"fig_movielens", "fig_nonlinear"} & set(figures))),
    }
    assert {rule: counts.get(rule, 0) for rule in expected} == expected
    assert {"fig_movielens", "fig_nonlinear"} <= set(figures)
    # By hand, 3 seeds: mf 3 panels, mc 1, ms 3, ablation_alpha 1, ablation_depth 2, baselines 1 (one job
    # per panel and seed); analysis 3 + 2 + 2 tasks x 3 seeds; movielens 2 split seeds; nonlinear 3 seeds.
    paper_jobs = 3 * (3 + 1 + 3 + 1 + 2 + 1) + 3 * 7 + 2 + 3
    beyond_the_paper = [name for name in grid.experiments if name == "robustness"]  # our own figure, if enabled
    assert expected["run_job"] + left_out == paper_jobs + sum(len(grid.jobs(name)) for name in beyond_the_paper)
    assert ("left out of the default target: fig_nonlinear" in output) is not present
    # without a local copy, planning tried to fetch the ratings (CDLN_OFFLINE=1 in the tests) and says why it could not
    assert ("GroupLens: downloads are off" in output and HOW_TO_ADD["movielens"] in output) is not present
    assert counts.get("all") == 1


def test_ci_grid_uses_its_own_root_and_replaces_the_paper_grid() -> None:
    """--configfile config/ci.yaml replaces (not merges into) the paper grid; outputs go to results/ci."""
    # targets before --configfile, which takes several values
    result = snakemake("fig_mf", "-n", "-F", "-p", "--configfile", "config/ci.yaml")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    text = result.stdout + result.stderr
    assert "results/ci/runs/mf/r4_seed0" in text
    assert "results/paper" not in text
    assert "runs/mf/r10_" not in text, "panels of config.yaml leaked into the ci grid"
    assert job_counts(text) == {
        "make_problem": 4,  # d32: r4, r2 (shared by r2_exact, r2_over) x 2 seeds
        "run_job": 6,  # 3 panels x 2 seeds, each job training the 3 models
        "aggregate_synthetic": 1,
        "plot_error_curves": 1,
        "claims_figure": 1,  # the figure's target rechecks its claims
        "fig_mf": 1,
        "total": 14,
    }


def test_single_figure_target_builds_only_that_figure() -> None:
    """fig_mc's jobs and the jobs that train its runs (on the reduced grid the baselines' longer runs: the mc
    figure reads them cut at its own budget)."""
    result = snakemake("fig_mc", "-n", "-F", "--configfile", "config/ci.yaml")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    counts = job_counts(result.stdout + result.stderr)
    assert counts == {
        "make_problem": 2,
        "run_job": 4,
        "aggregate_synthetic": 1,
        "plot_error_curves": 1,
        "claims_figure": 1,
        "fig_mc": 1,
        "total": 10,
    }


def test_training_shell_is_explicit_and_single_threaded() -> None:
    """Job commands: the job's manifest (each run's options as JSON), one thread per job (no oversubscription),
    python3 via PATH."""
    result = snakemake("results/ci/runs/baselines/r3_seed1", "-n", "-F", "-p", "--configfile", "config/ci.yaml")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    text = result.stdout + result.stderr
    command = next(line for line in text.splitlines() if "-m cdln run-job" in line)
    manifest = json.loads(shlex.split(command.split("|")[0])[-1])
    runs = {run["name"]: run["options"] for run in manifest["runs"]}
    assert list(runs) == ["original", "cdln", "narrow", "yaras"]
    assert all(run["command"] == "train" and "same_as" not in run for run in manifest["runs"])
    assert {key: runs["cdln"][key] for key in ("task", "model", "lr", "r_hat", "init_seed")} == dict(
        task="mc", model="cdln", lr=15, r_hat=6, init_seed=1
    )
    assert {options["problem"] for options in runs.values()} == {"results/ci/data/mc/d32_r3_p0.5_seed1.pt"}
    assert "--manifest - --threads 1" in command and "OMP_NUM_THREADS=1" in command
    assert "config[" not in command


def test_a_job_the_config_does_not_define_is_refused_by_name() -> None:
    """Asking for an analysis seed the config does not have names the jobs it does have (the job is
    never trained under a wrong name, with another seed's settings)."""
    result = snakemake("results/ci/runs/incremental/mf_seed7", "-n", "--configfile", "config/ci.yaml")
    assert result.returncode != 0
    assert "experiments.incremental defines no job 'mf_seed7'" in result.stdout + result.stderr
    assert "mf_seed0" in result.stdout + result.stderr


# ---------------------------------------------------------------------------------------------------
# Regression check: it passes on matching values and fails, readably, on wrong ones.
# ---------------------------------------------------------------------------------------------------


def summary_from_expected(expected: dict) -> pd.DataFrame:
    """A summary table that matches ``expected`` exactly; seconds: 2 for the reference model, 1 otherwise."""
    rows = []
    references = {claim["reference"] for claim in expected["faster"]}
    for want in expected["rows"]:
        row = {k: want[k] for k in ("experiment", "panel", "model")}
        for column in (*regression.ITERATION_COLUMNS, *regression.ERROR_COLUMNS):
            value = want.get(column)
            row[column] = float("nan") if value is None else value
        row.update(
            converged=want["converged"],
            n_seeds=want["n_seeds"],
            stop_seconds_mean=2.0 if want["model"] in references else 1.0,
        )
        rows.append(row)
    return pd.DataFrame(rows)


@pytest.fixture
def expected() -> dict:
    return yaml.safe_load(EXPECTED.read_text())


def test_expected_values_cover_every_synthetic_experiment(expected: dict) -> None:
    experiments = {row["experiment"] for row in expected["rows"]}
    assert experiments >= {"mf", "mc", "ms", "ablation_depth"}
    assert expected["faster"], "no speed-up claim is checked"
    tolerances = expected["tolerances"]
    assert 0 < tolerances["iterations_rel"] <= 0.25 and 1 < tolerances["error_factor"] <= 100


def test_check_passes_on_matching_summary(expected: dict) -> None:
    assert regression.check(summary_from_expected(expected), expected) == []


def test_check_fails_on_more_iterations(expected: dict) -> None:
    summary = summary_from_expected(expected)
    row = summary.index[summary["stop_iteration_mean"].notna()][0]
    summary.loc[row, "stop_iteration_mean"] *= 1.5
    violations = regression.check(summary, expected)
    assert len(violations) == 1, violations
    text = str(violations[0])
    assert "stop_iteration_mean" in text and "+50.0%" in text
    assert "/".join(summary.loc[row, ["experiment", "panel", "model"]]) in text


def test_check_fails_when_cdln_is_slower(expected: dict) -> None:
    summary = summary_from_expected(expected)
    summary.loc[summary["model"] == "cdln", "stop_seconds_mean"] = 3.0
    violations = regression.check(summary, expected)
    assert len(violations) == 1, violations
    text = str(violations[0])
    assert "stop_seconds_mean" in text and "faster than the reference" in text and "0.67" in text


def test_check_fails_when_cdln_needs_more_iterations(expected: dict) -> None:
    summary = summary_from_expected(expected)
    claim = next(c for c in expected["faster"] if c["column"] == "stop_iteration_mean")
    for experiment, panel in claim["rows"]:
        mask = (summary["experiment"] == experiment) & (summary["panel"] == panel) & (summary["model"] == "cdln")
        summary.loc[mask, "stop_iteration_mean"] *= 2.0
    quantities = [v.quantity for v in regression.check(summary, expected)]
    assert quantities.count("stop_iteration_mean") == len(claim["rows"])  # each row outside its tolerance
    assert any(q.startswith("sum stop_iteration_mean") for q in quantities)  # and the pooled claim fails


def test_check_fails_on_wrong_error_and_missing_row(expected: dict) -> None:
    summary = summary_from_expected(expected)
    row = summary.index[summary["final_recovery_error_gmean"] > 1e-6][0]
    summary.loc[row, "final_recovery_error_gmean"] *= 100
    summary = summary.drop(index=summary.index[-1])
    quantities = sorted(v.quantity for v in regression.check(summary, expected))
    assert "final_recovery_error_gmean" in quantities and "row" in quantities


def test_check_script_exit_code_and_message(tmp_path: Path, expected: dict) -> None:
    summary = summary_from_expected(expected)
    good, bad = tmp_path / "good.csv", tmp_path / "bad.csv"
    summary.to_csv(good, index=False)
    summary.assign(stop_iteration_mean=summary["stop_iteration_mean"] * 1.5).to_csv(bad, index=False)
    script = [sys.executable, "-m", "cdln", "check-regression", "--expected", str(EXPECTED)]
    ok = subprocess.run([*script, "--summary", str(good)], capture_output=True, text=True, check=False)
    assert ok.returncode == 0, ok.stderr
    failed = subprocess.run([*script, "--summary", str(bad)], capture_output=True, text=True, check=False)
    assert failed.returncode == 1
    assert "REGRESSION" in failed.stderr and "+50.0%" in failed.stderr


def test_slurm_profile_plans_cpu_jobs() -> None:
    """profiles/slurm with the config's device (ci: cpu): no GPU asked for, the device passed on as configured
    (auto resolves on the node that runs the job), short training jobs with their memory and a short runtime.
    (Which rules stay local and which are grouped is checked on a real cluster: test_slurm.py.)"""
    pytest.importorskip("snakemake_executor_plugin_slurm")
    result = snakemake("--profile", "profiles/slurm", "-n", "-p", "-F", "--configfile", "config/ci.yaml")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    job_commands = [line for line in output.splitlines() if "-m cdln run-job" in line]
    assert job_commands and all('"device": "cpu"' in line and '"device": "cuda"' not in line for line in job_commands)
    resources = [line for line in output.splitlines() if line.strip().startswith("resources:")]
    assert not [line for line in resources if "gpu=1" in line]
    short = [line for line in resources if "mem_mb=2000," in line and "runtime=10," in line + ","]
    assert len(short) >= len(job_commands), resources  # every ci job is short: 10 min, 2 GB


def test_slurm_profile_with_device_cuda_asks_for_a_gpu_per_training_job() -> None:
    pytest.importorskip("snakemake_executor_plugin_slurm")
    result = snakemake("--profile", "profiles/slurm", "-n", "-p", "-F", "fig_mc", "--config", "device=cuda")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    job_commands = [line for line in output.splitlines() if "-m cdln run-job" in line]
    assert len(job_commands) == 3 and all(line.count('"device": "cuda"') == 2 for line in job_commands)
    resources = [line for line in output.splitlines() if line.strip().startswith("resources:")]
    training = [line for line in resources if all(f in line for f in ("mem_mb=8000", "runtime=120", "gpu=1"))]
    assert len(training) == 3, resources


# ---------------------------------------------------------------------------------------------------
# Parsing: no torch, no environment change, no dependence on the include order.
# ---------------------------------------------------------------------------------------------------

PARSE_PROBE = """
import os, runpy, sys
before = dict(os.environ)
sys.argv = ["snakemake", *sys.argv[1:]]
try:
    runpy.run_module("snakemake", run_name="__main__")
except SystemExit as exit:
    code = exit.code
changed = sorted(k for k in set(before) | set(os.environ) if before.get(k) != os.environ.get(k))
print("PROBE", code, "torch" in sys.modules, changed, file=sys.stderr)
"""


def test_parsing_imports_no_torch_and_changes_no_environment_variable() -> None:
    for config in ("config/ci.yaml", "config/config.yaml"):
        result = subprocess.run(
            [sys.executable, "-c", PARSE_PROBE, "-n", "--quiet", "rules", "--configfile", config],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        probe = next(line for line in result.stderr.splitlines() if line.startswith("PROBE"))
        assert probe == "PROBE 0 False []", f"{config}: {probe}\n{result.stderr[-2000:]}"


def test_shell_commands_find_the_venv_without_activation(tmp_path: Path) -> None:
    """PATH without the venv: the jobs still run this interpreter's python3 (shell.prefix, not os.environ)."""
    clone = pipeline_copy(tmp_path / "clone")
    env = dict(os.environ, PATH="/usr/bin:/bin")
    env.pop("PYTHONPATH", None)
    env.pop("VIRTUAL_ENV", None)
    target = "results/ci/data/mc/d32_r3_p0.5_seed0.pt"
    result = snakemake("--cores", "1", target, "--configfile", "config/ci.yaml", cwd=clone, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert (clone / target).is_file()


def dag_edges(clone: Path, *targets: str) -> list[tuple[str, str]]:
    """Every edge of the forced DAG of ``targets`` as (producer, consumer) job labels."""
    result = snakemake("--dag", "-F", *targets, "--configfile", "config/ci.yaml", cwd=clone)
    assert result.returncode == 0, result.stderr[-3000:]
    labels = dict(re.findall(r'^\s*(\d+)\[label = "([^"]*)"', result.stdout, flags=re.M))
    edges = re.findall(r"^\s*(\d+) -> (\d+)", result.stdout, flags=re.M)
    return sorted((labels[a], labels[b]) for a, b in edges)


def test_targets_do_not_depend_on_the_include_order(tmp_path: Path) -> None:
    """The rule files included in reverse order (common.smk first, as it defines the helpers): every named
    target, and the default one, depends on the same jobs."""
    clone = pipeline_copy(tmp_path / "clone")
    listed = snakemake("--list-target-rules", "--configfile", "config/ci.yaml", cwd=clone)
    targets = sorted({line.strip() for line in listed.stdout.splitlines() if re.fullmatch(r"\s*\w+", line)})
    assert {"all", "fig_mf", "claims"} <= set(targets), listed.stdout
    forward = dag_edges(clone, *targets)
    snakefile = clone / "Snakefile"
    text = snakefile.read_text()
    includes = re.findall(r'^include: "workflow/rules/(?!common)\w+\.smk"\n', text, flags=re.M)
    assert len(includes) >= 8
    for line in includes:
        text = text.replace(line, "", 1)
    common = 'include: "workflow/rules/common.smk"\n'
    snakefile.write_text(text.replace(common, common + "".join(reversed(includes))))
    assert dag_edges(clone, *targets) == forward


# ---------------------------------------------------------------------------------------------------
# Real data appearing and disappearing between runs (cdln.pipeline.targets: real_data_present).
# ---------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_real_data_that_appears_joins_and_that_disappears_keeps_its_results(tmp_path: Path) -> None:
    """FashionMNIST (a folder the test fills or empties) behind the reduced grid's nonlinear experiment.
    Absent: planned without its claims, and said so. Appears: its claims join on the next run. Built, then
    removed: nothing reruns, nothing fails, its results stay in the summary and claims, and a line says so."""
    clone = pipeline_copy(tmp_path / "clone")
    config = with_real_data(CI, tmp_path, present=False)
    config["experiments"]["movielens"]["synthetic"] = True  # only FashionMNIST comes and goes here
    (clone / "real.yaml").write_text(yaml.safe_dump(config))
    fashion = Path(config["experiments"]["nonlinear"]["data_dir"])
    figures = claim_figures(config)

    def plan(*targets: str) -> tuple[dict[str, int], str]:
        result = snakemake("-n", "-F", "--quiet", "rules", *targets, "--configfile", "real.yaml", cwd=clone)
        output = result.stdout + result.stderr
        assert result.returncode == 0, output[-3000:]
        return job_counts(output), output

    counts, output = plan()
    assert counts["claims_figure"] == len(figures) - 1
    assert "left out of the default target: fig_nonlinear: FashionMNIST directory" in output
    assert "to add it: apt-get install dataset-fashion-mnist" in output

    # It appears: its claims (and the summary's rows) join the next run's DAG.
    make_fashion_mnist(fashion, n_train=600, n_test=200)
    counts, output = plan()
    assert counts["claims_figure"] == len(figures) and "fig_nonlinear" not in output

    # Built with it...
    table = "results/ci/tables/nonlinear.md"
    built = snakemake("--cores", "2", table, "--configfile", "real.yaml", cwd=clone, timeout=1200)
    assert built.returncode == 0, built.stderr[-3000:]
    stamp = (clone / table).stat().st_mtime_ns

    # ...then it disappears: the built results stay wanted and up to date; nothing reruns, nothing fails.
    for path in fashion.iterdir():
        path.unlink()
    counts, output = plan()
    assert counts["claims_figure"] == len(figures)
    assert "data missing for fig_nonlinear" in output and "keeping its results built earlier" in output
    result = snakemake("-n", table, "--configfile", "real.yaml", cwd=clone)
    assert result.returncode == 0 and "Nothing to be done" in result.stdout + result.stderr, result.stderr[-2000:]
    assert (clone / table).stat().st_mtime_ns == stamp


def test_config_overrides_on_the_command_line_take_lists(tmp_path: Path) -> None:
    """`--config seeds=[0]` (Snakemake reads the list's items as strings) plans one seed's jobs."""
    both = job_counts(snakemake("-n", "-F", "--quiet", "rules", "--configfile", "config/ci.yaml").stdout)
    one = snakemake("-n", "-F", "--quiet", "rules", "--configfile", "config/ci.yaml", "--config", "seeds=[0]")
    assert one.returncode == 0, (one.stdout + one.stderr)[-2000:]
    ci = yaml.safe_load((REPO / "config" / "ci.yaml").read_text())
    assert both["run_job"] == len(Grid(ci).jobs())
    assert job_counts(one.stdout)["run_job"] == len(Grid({**ci, "seeds": [0]}).jobs()) < both["run_job"]
