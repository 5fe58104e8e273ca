"""Reliability of single runs: kills leave no record, reruns equal uninterrupted runs, determinism.

Pipeline-level reliability (interrupted grid, --keep-going, regression gate) is at the bottom.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from conftest import REPO, cdln_command, cli_env, pipeline_copy, run_cli, run_experiment

import cdln.outputs
import cdln.runner
from cdln.cli import main
from cdln.config import RunConfig
from cdln.pipeline import aggregate, regression, summary
from cdln.records import read_run_record, write_run_record
from cdln.runner import run

# ~1 s of training on one idle thread (two init seeds batched, 15,000 GD steps of a width-40 DLN).
LONG = ["--task", "mc", "--d", "40", "--r", "3", "--p", "0.5", "--model", "original", "--depth", "3",
        "--lr", "20", "--n-inner", "50", "--max-outer", "300", "--init-seed", "0", "1", "--device", "cpu",
        "--threads", "1"]  # fmt: skip
NOT_TIMING = ["member", "iteration", "train_loss", "recovery_error", "model", "init_seed", "alpha"]


def stable_record(record: dict) -> dict:
    """The record without what legitimately differs between identical runs (clock, argv, paths)."""
    record = json.loads(json.dumps(record))
    for key in ("timing", "command", "date"):
        record.pop(key, None)
    record["device"].pop("name", None)
    for member in record["members"]:
        member.pop("stop_seconds", None)
    return record


def assert_same_run(dir_a: Path, dir_b: Path) -> None:
    """Bitwise equal curves (all but the seconds column) and equal records (all but timings)."""
    record_a, curves_a = read_run_record(dir_a)
    record_b, curves_b = read_run_record(dir_b)
    assert (dir_a / "curves.csv").read_text().count("\n") == (dir_b / "curves.csv").read_text().count("\n")
    pd.testing.assert_frame_equal(curves_a[NOT_TIMING], curves_b[NOT_TIMING], check_exact=True)
    assert stable_record(record_a) == stable_record(record_b)


def visible_entries(root: Path) -> list[str]:
    """Everything under ``root`` that a reader globbing for runs would see (no hidden staging dirs)."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if not any(s.startswith(".") for s in p.parts))


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory) -> Path:
    """An uninterrupted run of ``LONG`` (in this process: the kill tests compare across processes)."""
    out = tmp_path_factory.mktemp("reference") / "run"
    assert main(["train", "--out", str(out), "--quiet", *LONG]) == 0
    return out


def _default_sigint() -> None:
    """The child gets Ctrl-C as from a terminal, even where this test runs in a background job (bash starts those with
    SIGINT ignored, and an ignored signal is inherited)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_and_kill(out: Path, sig: signal.Signals, run: list[str] = LONG) -> tuple[int, str]:
    """Start ``cdln train`` with ``run`` and send ``sig`` ~0.3 s after it reported iteration 0 (mid-training)."""
    proc = subprocess.Popen(
        cdln_command("train", "--out", str(out), *run), stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
        text=True, env=cli_env(), preexec_fn=_default_sigint,
    )  # fmt: skip
    seen = []
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line:
                break
            seen.append(line)
            if "iter " in line:  # checkpoint 0 is done: training has started
                break
        time.sleep(0.3)
        assert proc.poll() is None, "the run ended before it could be interrupted: " + "".join(seen)
        assert not seen[-1].startswith("wrote"), seen
        os.kill(proc.pid, sig)
        proc.wait(timeout=30)
        seen.append(proc.stderr.read())
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()
    return proc.returncode, "".join(seen)


def test_ctrl_c_says_nothing_was_written_in_one_line(tmp_path):
    out = tmp_path / "run"
    longer = [
        *LONG[: LONG.index("--max-outer") + 1],
        "3000",
        *LONG[LONG.index("--max-outer") + 2 :],
    ]  # seconds of training: the signal lands mid-run
    code, stderr = start_and_kill(out, signal.SIGINT, longer)
    assert code == 130, stderr
    assert "Traceback" not in stderr and stderr.strip().splitlines()[-1] == "cdln: error: interrupted; nothing written"
    assert list(tmp_path.iterdir()) == []  # no record, no staging folder, no lock


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_killed_run_leaves_no_record_and_rerun_equals_uninterrupted(tmp_path, reference_run, sig):
    out = tmp_path / "runs" / "exp" / "run"
    code, stderr = start_and_kill(out, sig)
    assert code == -sig, stderr
    assert "iter " in stderr and "wrote" not in stderr
    assert visible_entries(tmp_path) == [] or visible_entries(tmp_path) in (["runs"], ["runs", "runs/exp"])
    assert not out.exists()
    assert not list(tmp_path.rglob("record.json")) and not list(tmp_path.rglob("curves.csv"))
    # Rerunning the same command gives exactly the uninterrupted run.
    assert main(["train", "--out", str(out), "--quiet", *LONG]) == 0
    assert_same_run(out, reference_run)


def test_killed_rerun_keeps_the_previous_complete_record(tmp_path, reference_run):
    out = tmp_path / "run"
    write_run_record(out, *[read_run_record(reference_run)[0], read_run_record(reference_run)[1]])
    before = (out / "curves.csv").read_bytes()
    code, _ = start_and_kill(out, signal.SIGKILL)
    assert code == -signal.SIGKILL
    assert (out / "curves.csv").read_bytes() == before and (out / "record.json").is_file()


def test_interrupt_while_renaming_into_place_leaves_nothing(tmp_path, monkeypatch):
    """Ctrl-C (or any BaseException) at the last moment of a write: no run dir and no staging dir."""

    def interrupted(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(cdln.outputs.os, "replace", interrupted)
    config = RunConfig(task="mf", d=6, r=1, model="cdln", lr=1.0, n_inner=2, max_outer=2, device="cpu")
    with pytest.raises(KeyboardInterrupt):
        run(config, tmp_path / "run")
    assert list(tmp_path.iterdir()) == []


def test_two_processes_give_bitwise_identical_records(tmp_path):
    args = [
        "--task",
        "ms",
        "--d",
        "8",
        "--r",
        "2",
        "--m",
        "60",
        "--model",
        "cdln",
        "--alpha",
        "1",
        "2",
        "--lr",
        "3",
        "--n-inner",
        "20",
        "--max-outer",
        "10",
        "--device",
        "cpu",
        "--quiet",
        "--threads",
        "1",
    ]
    result = run_cli("train", "--out", str(tmp_path / "a"), *args)
    assert result.returncode == 0, result.stderr
    assert main(["train", "--out", str(tmp_path / "b"), *args]) == 0
    assert_same_run(tmp_path / "a", tmp_path / "b")
    curves = read_run_record(tmp_path / "a")[1]
    assert curves.recovery_error.nunique() > 10  # the run did something worth comparing


def test_in_process_runs_are_bitwise_identical_and_seeds_matter(tmp_path):
    base = dict(task="mc", d=12, r=2, p=0.5, model="original", depth=3, lr=3.0, n_inner=20, max_outer=5)
    run(RunConfig(**base, init_seed=[3]), tmp_path / "a")
    run(RunConfig(**base, init_seed=[3]), tmp_path / "b")
    run(RunConfig(**base, init_seed=[4]), tmp_path / "c")
    run(RunConfig(**base, init_seed=[3], data_seed=1), tmp_path / "d")
    assert_same_run(tmp_path / "a", tmp_path / "b")
    errors = {k: read_run_record(tmp_path / k)[1].recovery_error.iloc[-1] for k in "acd"}
    assert len(set(errors.values())) == 3  # a different init seed or data seed changes the numbers


# ================================================================ pipeline level (Snakemake)


def tiny_pipeline_config(**experiments) -> dict:
    """A reduced grid of a few seconds per job: MC, original DLN vs C-DLN, two seeds."""
    mc = dict(task="mc", d=40, p=0.5, depth=3, eps=0.01, lr=20, n_inner=50, max_outer=300, tol=0.0, alpha=1.0,
              models=["original", "cdln"], panels={"r3": {"r": 3, "r_hat": 6}})  # fmt: skip
    return {
        "output_root": "t",
        "device": "cpu",
        "dtype": "float64",
        "threads_per_job": 1,
        "seeds": [0, 1, 2],
        "experiments": experiments or {"mc": mc},
    }


def snakemake_command(*targets: str, cores: int = 1, extra: tuple[str, ...] = ()) -> list[str]:
    return [sys.executable, "-m", "snakemake", *targets, "--cores", str(cores), *extra, "--configfile", "tiny.yaml"]


def run_snakemake(
    root: Path, *targets: str, cores: int = 1, extra: tuple[str, ...] = ()
) -> subprocess.CompletedProcess:
    return subprocess.run(
        snakemake_command(*targets, cores=cores, extra=extra), cwd=root, env=cli_env(), capture_output=True,
        text=True, timeout=600,
    )  # fmt: skip


def complete_records(root: Path) -> list[Path]:
    return sorted(p.parent for p in (root / "results").rglob("record.json") if ".partial" not in str(p))


def assert_every_visible_run_is_complete(root: Path) -> None:
    """Each job directory a reader can see holds its manifest and, for every run it lists, a full
    record (readable record.json and curves.csv)."""
    runs = root / "results" / "t" / "runs"
    if not runs.exists():
        return
    for job_dir in (path for path in runs.glob("*/*") if not path.name.startswith(".")):  # not staging dirs
        manifest = json.loads((job_dir / "job.json").read_text())
        visible = sorted(p.name for p in job_dir.iterdir() if not p.name.startswith("."))
        assert visible == sorted(["job.json", *(r["name"] for r in manifest["runs"])])
        for entry in manifest["runs"]:
            record, curves = read_run_record(job_dir / entry["name"])
            last = curves.groupby("member").iteration.max()
            assert [m["stop_iteration"] for m in record["members"]] == list(last), job_dir


TABLES = ["results/t/tables/mc_runs.csv", "results/t/tables/mc_curves.csv"]
N_RUNS = 6  # 3 jobs (seeds), each training 2 models


@pytest.fixture(scope="module")
def uninterrupted_pipeline(tmp_path_factory) -> Path:
    """The tiny grid run once without interruption, two jobs at a time."""
    root = pipeline_copy(tmp_path_factory.mktemp("pipeline") / "ref", tiny_pipeline_config())
    result = run_snakemake(root, *TABLES, cores=2)
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(complete_records(root)) == N_RUNS
    return root


def training_jobs(log: Path) -> tuple[int, int]:
    """(Training jobs started, finished) as Snakemake's log shows them so far."""
    text = log.read_text()
    return text.count("rule run_job:"), text.count("(Rule: run_job)")


def start_pipeline_and_kill(root: Path, sig: signal.Signals, after_records: int) -> int:
    """Start the grid on one core; once ``after_records`` runs are complete and the next training job has
    started, send ``sig`` a second into it (interpreter start-up, then training).

    SIGTERM goes to Snakemake alone (what a scheduler or ``kill`` does; Snakemake stops its jobs);
    SIGKILL goes to the whole process group, jobs included (a crash or power loss). Waiting for a job to
    run matters for SIGTERM: Snakemake's handler (9.27) takes its scheduler's lock, so a SIGTERM that lands
    while the scheduler holds it, between jobs, hangs Snakemake (seen once in CI; docs/reliability.md)."""
    log = root / f"snakemake_{sig.name}.log"
    with log.open("w") as handle:
        proc = subprocess.Popen(
            snakemake_command(*TABLES, cores=1), cwd=root, env=cli_env(), stdout=handle, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    deadline = time.monotonic() + 300
    try:
        while len(complete_records(root)) < after_records and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        started_before = training_jobs(log)[0]
        while proc.poll() is None and time.monotonic() < deadline:
            started, finished = training_jobs(log)
            if started > started_before and started > finished:
                break
            time.sleep(0.05)
        time.sleep(1.0)
        assert proc.poll() is None, "the grid ended before it could be interrupted:\n" + log.read_text()[-3000:]
        started, finished = training_jobs(log)
        assert started > finished, "no training job was running to interrupt:\n" + log.read_text()[-3000:]
        if sig == signal.SIGKILL:
            os.killpg(proc.pid, signal.SIGKILL)
        else:
            proc.send_signal(sig)
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return proc.returncode


@pytest.mark.slow
def test_interrupted_grid_reruns_to_the_uninterrupted_result(tmp_path, uninterrupted_pipeline):
    """SIGTERM, then SIGKILL, in the middle of training; the rerun equals the uninterrupted run.

    Also the determinism check across --cores: the reference ran two jobs at a time, this one one."""
    root = pipeline_copy(tmp_path / "interrupted", tiny_pipeline_config())
    assert start_pipeline_and_kill(root, signal.SIGTERM, after_records=2) != 0
    assert_every_visible_run_is_complete(root)
    done_after_term = len(complete_records(root))
    assert done_after_term < N_RUNS
    assert start_pipeline_and_kill(root, signal.SIGKILL, after_records=done_after_term) == -signal.SIGKILL
    assert_every_visible_run_is_complete(root)
    assert len(complete_records(root)) < N_RUNS
    # After a SIGKILL Snakemake's lock is stale: --unlock, then rerun (the profile sets --rerun-incomplete).
    unlock = run_snakemake(root, *TABLES, extra=("--unlock",))
    assert unlock.returncode == 0, unlock.stderr[-2000:]
    rerun = run_snakemake(root, *TABLES, cores=1)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    reference_runs = complete_records(uninterrupted_pipeline)
    runs = complete_records(root)
    assert [p.relative_to(root) for p in runs] == [p.relative_to(uninterrupted_pipeline) for p in reference_runs]
    for mine, reference in zip(runs, reference_runs, strict=True):
        assert_same_run(mine, reference)
    assert not [p for p in (root / "results").rglob("*.partial")]
    for table in TABLES:
        ours, theirs = pd.read_csv(root / table), pd.read_csv(uninterrupted_pipeline / table)
        exact = [c for c in ours.columns if "second" not in c and "time" not in c and "speed" not in c]
        assert len(exact) >= 4 and list(ours.columns) == list(theirs.columns)
        pd.testing.assert_frame_equal(ours[exact], theirs[exact], check_exact=True)


@pytest.mark.slow
def test_divergent_job_fails_clearly_and_keep_going_finishes_the_rest(tmp_path):
    good = dict(task="mc", d=12, p=0.6, depth=3, eps=0.01, lr=5, n_inner=50, max_outer=20, tol=0.0,
                models=["cdln"], panels={"r2": {"r": 2}})  # fmt: skip
    bad = dict(good, task="mf", lr=1.0e6, eps=1.0)  # diverges within the first checkpoint interval
    config = tiny_pipeline_config(mc=good, mf=bad)
    config["seeds"] = [0]
    root = pipeline_copy(tmp_path / "keep_going", config)
    targets = ["results/t/tables/mc_runs.csv", "results/t/tables/mf_runs.csv"]
    result = run_snakemake(root, *targets, cores=2, extra=("--keep-going",))
    assert result.returncode != 0
    assert (root / "results/t/tables/mc_runs.csv").is_file()  # the rest of the pipeline completed
    assert not (root / "results/t/tables/mf_runs.csv").exists()
    assert not (root / "results/t/runs/mf").exists() or not any((root / "results/t/runs/mf").rglob("record.json"))
    log = (root / "results/t/logs/runs/mf/r2_seed0.log").read_text()
    assert re.search(r"training diverged: non-finite loss at iteration \d+ .*try a smaller --lr", log), log
    assert "no record was written" in log and "Traceback" not in log
    assert "run_job" in result.stderr and "r2_seed0" in result.stderr  # Snakemake names the failed job
    assert "training diverged" in result.stderr  # and shows why, not only where the log is


def test_torch_thread_count_does_not_change_the_numbers(tmp_path):
    """One run on 1 and on 2 torch threads: bitwise equal curves on this CPU build (d = 64 uses the
    multi-threaded GEMM path). If a BLAS ever breaks this, the README's determinism claim must change."""
    import torch

    config = dict(task="mc", d=64, r=3, p=0.5, model="original", depth=3, lr=20.0, n_inner=10, max_outer=3)
    for threads in (1, 2):
        torch.set_num_threads(threads)
        run(RunConfig(**config), tmp_path / f"threads{threads}")
    assert_same_run(tmp_path / "threads1", tmp_path / "threads2")


# ================================================================ regression gate

# A grid on which the original DLN and the C-DLN (alpha = 2) reach tol for both seeds in ~0.2 s a run.
GATE_RUN = dict(task="mc", d=12, r=2, p=0.6, depth=3, eps=0.01, lr=3.0, r_hat=4, n_inner=10, max_outer=600, tol=1e-10)
GATE_SECTION = dict(GATE_RUN, models=["original", "cdln"], panels={"r2": {"r": 2, "r_hat": 4}})


def gate_summary(root: Path, monkeypatch, eps: float = 0.01, alpha: float = 2.0) -> pd.DataFrame:
    """Train the gate grid (real code unless a test patched it) as the pipeline does, then aggregate
    and summarise it with the pipeline's own functions, as its rules do."""
    section = {key: value for key, value in GATE_SECTION.items() if key not in ("r", "r_hat")}
    config = dict(tiny_pipeline_config(gate=dict(section, eps=eps, alpha=alpha)), seeds=[0, 1])
    config["experiments"]["mf"] = config["experiments"].pop("gate")  # a synthetic section's name
    root.mkdir(parents=True)
    monkeypatch.chdir(root)
    job_dirs = run_experiment(config, "mf")
    _, runs = aggregate.collect(job_dirs, reach_error=1e-8)
    return summary.summarise(runs.assign(experiment="gate"), "original")


def test_regression_gate_passes_real_code_and_catches_wrong_changes(tmp_path, monkeypatch):
    """Expected values come from the real code; the gate's committed tolerances are used as they are.
    The wall-clock ``faster`` claims are left out here: they are timings, noisy on a shared machine."""
    expected = regression.expected_from_summary(gate_summary(tmp_path / "real", monkeypatch))
    expected["faster"] = []
    assert len(expected["rows"]) == 2 and all(row["converged"] == 2 for row in expected["rows"])

    # The real code, run again: no violation.
    assert regression.check(gate_summary(tmp_path / "again", monkeypatch), expected) == []

    # eps doubled (a config-level mistake): both models start larger and stop earlier.
    violations = regression.check(gate_summary(tmp_path / "eps", monkeypatch, eps=0.02), expected)
    assert {v.row for v in violations} >= {"gate/r2/cdln"}, violations
    assert any("iteration" in v.quantity for v in violations)

    # alpha ignored (a code mistake): the C-DLN's outer layers step at eta instead of 2 eta.
    monkeypatch.setattr(cdln.runner, "compressed_dln", alpha_ignored(cdln.runner.compressed_dln))
    violations = regression.check(gate_summary(tmp_path / "alpha", monkeypatch), expected)
    assert {v.row for v in violations} == {"gate/r2/cdln"}, violations  # the original DLN is untouched
    assert any(v.quantity == "stop_iteration_mean" for v in violations)


def alpha_ignored(compressed_dln):
    """``compressed_dln`` with the discrepant rate dropped (every alpha replaced by 1): a planted bug."""

    def planted(surrogate, r_hat, depth, eps, alpha=1.0, batch=1):
        return compressed_dln(surrogate, r_hat, depth, eps, 1.0, batch)

    return planted


def test_regression_gate_cli_exit_codes(tmp_path, monkeypatch):
    """The gate as CI calls it: exit 0 on a match, 1 with a readable list of violations otherwise."""
    table = gate_summary(tmp_path / "real", monkeypatch)
    table.to_csv(tmp_path / "summary.csv", index=False)
    expected = tmp_path / "expected.yaml"
    gate = ["check-regression", "--summary", str(tmp_path / "summary.csv"), "--expected", str(expected)]
    assert main([*gate, "--write-expected"]) == 0
    assert main(gate) == 0
    wrong = table.copy()
    wrong["stop_iteration_mean"] = wrong["stop_iteration_mean"].astype(float)
    wrong.loc[wrong.model == "cdln", "stop_iteration_mean"] *= 1.5
    wrong.to_csv(tmp_path / "summary.csv", index=False)
    assert main(gate) == 1


CI_EXPECTED = REPO / "tests" / "expected" / "ci_summary.yaml"
CI_CONFIG = REPO / "config" / "ci.yaml"


def ci_panel_summary(root: Path, monkeypatch, experiment: str, panel: str, eps_factor: float = 1.0) -> pd.DataFrame:
    """The CI grid's jobs of one panel, as the pipeline runs them (config/ci.yaml through the grid),
    summarised by the pipeline's functions; ``eps_factor`` scales every run's eps (a planted mistake)."""
    import yaml

    config = yaml.safe_load(CI_CONFIG.read_text())
    section = config["experiments"][experiment]
    section["panels"] = {panel: section["panels"][panel]}
    config["experiments"] = {experiment: section, "summary": config["experiments"]["summary"]}
    root.mkdir(parents=True)
    monkeypatch.chdir(root)
    job_dirs = run_experiment(config, experiment, edit=lambda o: dict(o, eps=o["eps"] * eps_factor))
    _, runs = aggregate.collect(job_dirs, reach_error=config["experiments"]["summary"]["reach_error"][experiment])
    return summary.summarise(runs, "original")


def test_committed_ci_expectations_hold_for_real_code_and_fail_for_wrong_changes(tmp_path, monkeypatch):
    """The committed expected values of the reduced grid (tests/expected/ci_summary.yaml) for the depth
    ablation's L = 3 panel, whose C-DLN uses alpha = 2: the real code matches them; eps doubled (via
    the config) and alpha ignored (in the code) are both caught by the gate, on the C-DLN's rows."""
    import yaml

    committed = yaml.safe_load(CI_EXPECTED.read_text())
    rows = [r for r in committed["rows"] if (r["experiment"], str(r["panel"])) == ("ablation_depth", "L3")]
    assert {r["model"] for r in rows} == {"original", "cdln"}
    expected = {"tolerances": committed["tolerances"], "rows": rows}  # wall-clock claims need the whole grid

    assert regression.check(ci_panel_summary(tmp_path / "real", monkeypatch, "ablation_depth", "L3"), expected) == []

    eps = ci_panel_summary(tmp_path / "eps", monkeypatch, "ablation_depth", "L3", eps_factor=2.0)
    assert "ablation_depth/L3/cdln" in {v.row for v in regression.check(eps, expected)}

    monkeypatch.setattr(cdln.runner, "compressed_dln", alpha_ignored(cdln.runner.compressed_dln))
    violations = regression.check(ci_panel_summary(tmp_path / "alpha", monkeypatch, "ablation_depth", "L3"), expected)
    assert {v.row for v in violations} == {"ablation_depth/L3/cdln"}, violations
