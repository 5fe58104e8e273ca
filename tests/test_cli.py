"""The `cdln` command line: --help, bad input rejected before any work, divergence, YAML configs."""

from __future__ import annotations

import dataclasses
import json
import re

import pytest
from conftest import run_cli, train_options, write_manifest

import cdln.runner
from cdln.cli import build_parser, main
from cdln.config import RunConfig
from cdln.records import read_run_record

TINY_MC = ["--task", "mc", "--d", "10", "--r", "2", "--p", "0.5", "--model", "cdln", "--depth", "3",
           "--lr", "2", "--n-inner", "10", "--max-outer", "3", "--device", "cpu", "--quiet"]  # fmt: skip


def _with(args: list[str], **overrides: str) -> list[str]:
    """``TINY_MC`` with ``--flag value`` pairs replaced or added."""
    args = list(args)
    for key, value in overrides.items():
        flag = "--" + key.replace("_", "-")
        if flag in args:
            args[args.index(flag) + 1] = value
        else:
            args += [flag, value]
    return args


def _help_text(capsys, *command: str) -> str:
    with pytest.raises(SystemExit) as info:
        main([*command, "--help"])
    assert info.value.code == 0
    return re.sub(r"\s+", " ", capsys.readouterr().out)


def test_help_documents_every_option(capsys):
    text = _help_text(capsys, "train")
    helps = {f.name: f.metadata["help"] for f in dataclasses.fields(RunConfig)}
    for name, help_text in helps.items():
        flag = "--" + name.replace("_", "-")
        assert re.search(rf"{flag}\b", text), flag
        assert re.sub(r"\s+", " ", help_text) in text, f"help of {flag} missing"
    for extra in ("--out", "--config", "--threads", "--quiet", "--progress-every"):
        assert extra in text
    # Ranges of the options issue 2 names are stated in the help.
    for fragment in ("in (0, 1]", "L >= 2", "eta, > 0", "1 <= r <= min(d_out, d_in)", ">= 1 (default 2r)"):
        assert fragment in text, fragment


def test_make_problem_help(capsys):
    text = _help_text(capsys, "make-problem")
    for flag in ("--task", "--d", "--r", "--p", "--m", "--data-seed", "--out", "--spectrum"):
        assert flag in text
    assert "--lr" not in text and "--model" not in text


BAD_FLAGS = [
    ({"lr": "-1"}, r"--lr must be a finite number > 0; got -1"),
    ({"lr": "0"}, r"--lr must be a finite number > 0"),
    ({"r": "11"}, r"--r must be in \[1, min\(d_out, d_in\)\] = \[1, 10\]; got 11"),
    ({"p": "0"}, r"--p must be in \(0, 1\]"),
    ({"p": "1.01"}, r"--p must be in \(0, 1\]"),
    ({"p": "-0.5"}, r"--p must be in \(0, 1\]"),
    ({"depth": "1"}, r"--depth must be an integer >= 2; got 1"),
    ({"task": "mx"}, r"--task must be one of \['mf', 'mc', 'ms'\]; got 'mx'"),
    ({"model": "transformer"}, r"--model must be one of \['original', 'cdln', 'narrow', 'bm', 'yaras'\]"),
    ({"r_hat": "0"}, r"--r-hat must be an integer >= 1; got 0"),
    ({"r_hat": "-3"}, r"--r-hat must be an integer >= 1; got -3"),
    ({"n_inner": "0"}, r"--n-inner must be an integer >= 1"),
    ({"eps": "-0.01"}, r"--eps must be a finite number > 0"),
    ({"alpha": "-1"}, r"--alpha must be a finite number > 0"),
    ({"device": "gpu"}, r"--device must be one of auto, cpu, cuda, cuda:N"),
    ({"threads": "0"}, r"--threads must be an integer >= 1"),
]


@pytest.mark.parametrize("overrides,message", BAD_FLAGS, ids=[str(o) for o, _ in BAD_FLAGS])
def test_bad_flags_are_rejected_before_any_work(monkeypatch, tmp_path, capsys, overrides, message):
    def no_work(*args, **kwargs):
        raise AssertionError("work started before validation")

    monkeypatch.setattr(cdln.runner, "make_problem", no_work)
    monkeypatch.setattr(cdln.runner, "train", no_work)
    code = main(["train", "--out", str(tmp_path / "run"), *_with(TINY_MC, **overrides)])
    err = capsys.readouterr().err
    assert code == 2
    assert re.search(r"^cdln: error: " + message, err, re.MULTILINE), err
    assert list(tmp_path.iterdir()) == []


def test_the_tiny_flags_are_valid(tmp_path, capsys):
    assert main(["train", "--out", str(tmp_path / "run"), *TINY_MC]) == 0
    record, curves = read_run_record(tmp_path / "run")
    assert record["config"]["lr"] == 2.0 and curves.iteration.max() == 30
    assert "wrote" in capsys.readouterr().err


def test_progress_lines_are_throttled_and_quiet_silences_them(tmp_path, capsys, monkeypatch):
    quiet = [a for a in TINY_MC if a != "--quiet"]
    clock = iter(range(0, 1000, 10))  # each checkpoint 10 s after the previous one
    monkeypatch.setattr("cdln.progress.time.monotonic", lambda: next(clock))
    assert main(["train", "--out", str(tmp_path / "a"), *quiet, "--progress-every", "15"]) == 0
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("[mc/cdln] iter")]
    # 4 checkpoints (iterations 0, 10, 20, 30) at 0, 10, 20, 30 s: printed at 0 and 20 s only.
    assert [line.split()[2] for line in lines] == ["0/30", "20/30"]
    assert main(["train", "--out", str(tmp_path / "b"), *TINY_MC]) == 0
    assert "[mc/cdln]" not in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv,message",
    [
        (["train", "--out", "x", "--d", "ten"], r"argument --d: invalid int value: 'ten'"),
        (["train", "--out", "x", "--lr", "fast"], r"argument --lr: invalid float value: 'fast'"),
        (["train", "--task", "mc"], r"the following arguments are required: --out"),
        (["train", "--out", "x", "--learning-rate", "1"], r"unrecognized arguments: --learning-rate"),
        (["fit"], r"invalid choice: 'fit'"),
        (["train", "--out", "x", "--progress-every", "0"], r"--progress-every: must be a number of seconds > 0; got 0"),
        (["altmin", "--progress-every", "-1"], r"--progress-every: must be a number of seconds > 0; got -1"),
    ],
)
def test_argparse_errors_name_the_option(capsys, argv, message):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert re.search(message, capsys.readouterr().err)


def test_divergence_exits_3_names_iteration_and_writes_nothing(tmp_path, capsys):
    code = main(["train", "--out", str(tmp_path / "run"), *_with(TINY_MC, lr="1e6", eps="1")])
    err = capsys.readouterr().err
    assert code == 3
    assert re.search(r"training diverged: non-finite loss at iteration [1-9]\d* .*try a smaller --lr", err), err
    assert "no record was written" in err
    assert list(tmp_path.iterdir()) == []


def test_yaml_config_flags_win_and_unknown_keys_are_named(tmp_path, capsys):
    config = tmp_path / "run.yaml"
    config.write_text("task: mc\nd: 10\nr: 2\np: 0.5\nmodel: cdln\nlr: 1e-1\nn_inner: 5\nmax_outer: 2\ndevice: cpu\n")
    assert main(["train", "--config", str(config), "--out", str(tmp_path / "a"), "--quiet", "--max-outer", "3"]) == 0
    record, _ = read_run_record(tmp_path / "a")
    assert record["config"]["lr"] == 0.1 and record["config"]["max_outer"] == 3  # YAML "1e-1" read as a number
    config.write_text("task: mc\nlearning_rate: 1.0\n")
    assert main(["train", "--config", str(config), "--out", str(tmp_path / "b")]) == 2
    assert re.search(r"run.yaml: unknown key\(s\) \['learning_rate'\]; valid keys", capsys.readouterr().err)
    config.write_text("- not\n- a mapping\n")
    assert main(["train", "--config", str(config), "--out", str(tmp_path / "b")]) == 2
    assert "must hold a mapping" in capsys.readouterr().err
    assert main(["train", "--config", str(tmp_path / "none.yaml"), "--out", str(tmp_path / "b")]) == 2
    assert "none.yaml does not exist" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()


def test_make_problem_then_train_on_it(tmp_path, capsys):
    path = tmp_path / "p.pt"
    assert main(["make-problem", "--out", str(path), "--task", "ms", "--d", "6", "--r", "1", "--m", "50"]) == 0
    assert path.is_file()
    args = ["train", "--problem", str(path), "--task", "ms", "--model", "cdln", "--lr", "5", "--n-inner", "5",
            "--max-outer", "2", "--device", "cpu", "--quiet"]  # fmt: skip
    assert main([*args, "--out", str(tmp_path / "run")]) == 0
    record, _ = read_run_record(tmp_path / "run")
    assert record["problem"]["m"] == 50 and record["config"]["d_out"] == 6 and record["config"]["r"] == 1
    capsys.readouterr()
    wrong = [*args, "--out", str(tmp_path / "bad")]
    wrong[wrong.index("ms")] = "mf"
    assert main(wrong) == 2
    assert re.search(r"holds a 'ms' problem but --task is 'mf'", capsys.readouterr().err)
    assert main(["make-problem", "--out", str(tmp_path / "q.pt"), "--task", "mc", "--d", "5", "--r", "1",
                 "--p", "2"]) == 2  # fmt: skip
    assert re.search(r"p must be in \(0, 1\]", capsys.readouterr().err)
    assert not (tmp_path / "q.pt").exists() and not (tmp_path / "bad").exists()


def test_memory_refusal_from_the_cli(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(cdln.runner, "make_problem", lambda *a: (_ for _ in ()).throw(AssertionError("built")))
    args = ["--task", "ms", "--d", "3000", "--r", "5", "--m", "200000", "--out", str(tmp_path / "x")]
    assert main(["train", *args, "--model", "cdln", "--device", "cpu"]) == 2
    assert re.search(r"need about \d+\.\d GiB of memory but only .* GiB is available", capsys.readouterr().err)
    assert main(["make-problem", *args]) == 2
    assert re.search(r"need about \d+\.\d GiB of memory", capsys.readouterr().err)
    assert list(tmp_path.iterdir()) == []


def test_real_process_exit_codes(tmp_path):
    """The installed entry point's exit status: 0 ok, 2 bad config, 3 divergence (messages on stderr)."""
    ok = run_cli("train", "--out", str(tmp_path / "ok"), *TINY_MC)
    assert ok.returncode == 0, ok.stderr
    bad = run_cli("train", "--out", str(tmp_path / "bad"), *_with(TINY_MC, depth="1"))
    assert bad.returncode == 2 and "--depth must be an integer >= 2" in bad.stderr
    diverged = run_cli("train", "--out", str(tmp_path / "div"), *_with(TINY_MC, lr="1e6", eps="1"))
    assert diverged.returncode == 3 and "smaller --lr" in diverged.stderr and "Traceback" not in diverged.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ok"]


def test_parser_builds_one_option_per_field():
    parser = build_parser()
    train = parser._subparsers._group_actions[0].choices["train"]  # argparse has no public accessor
    dests = {a.dest for a in train._actions}
    assert {f.name for f in dataclasses.fields(RunConfig)} <= dests


def _job(tmp_path, *runs: tuple[str, list[str] | dict]) -> list[str]:
    """``cdln run-job`` of ``train`` runs (name, flags or options), its manifest written beside the job."""
    entries = [
        {"name": name, "command": "train", "options": flags if isinstance(flags, dict) else train_options(flags)}
        for name, flags in runs
    ]
    manifest = write_manifest(tmp_path / "job.manifest.json", entries)
    return ["run-job", "--manifest", str(manifest), "--out", str(tmp_path / "job"), "--quiet"]


def test_run_job_trains_every_run_into_one_directory_with_its_manifest(tmp_path, capsys):
    assert main(_job(tmp_path, ("first", TINY_MC), ("second", _with(TINY_MC, lr="1")))) == 0
    job = tmp_path / "job"
    assert sorted(p.name for p in job.iterdir()) == [".cdln-written.json", "first", "job.json", "second"]
    manifest = json.loads((job / "job.json").read_text())
    assert [run["name"] for run in manifest["runs"]] == ["first", "second"]
    assert (
        read_run_record(job / "first")[0]["config"]["lr"] == 2.0
        and read_run_record(job / "second")[0]["config"]["lr"] == 1.0
    )
    err = capsys.readouterr().err
    assert f"{job}/first: cdln stopped at iteration 30" in err and f"wrote {job} (2 runs trained, 0 read)" in err


@pytest.mark.parametrize(
    "second,message",
    [
        (_with(TINY_MC, lr="-1"), r"run second: --lr must be a finite number > 0; got -1"),
        ({"learning_rate": 1}, r"run second: unknown option\(s\) \['learning_rate'\]; cdln train takes \["),
    ],
)
def test_run_job_checks_every_run_before_training_any(tmp_path, capsys, monkeypatch, second, message):
    monkeypatch.setattr(cdln.runner, "train", lambda *a, **k: (_ for _ in ()).throw(AssertionError("trained")))
    assert main(_job(tmp_path, ("first", TINY_MC), ("second", second))) == 2
    assert re.search(message, capsys.readouterr().err)
    assert not (tmp_path / "job").exists()


def test_run_job_failing_in_a_later_run_leaves_no_job_directory(tmp_path, capsys):
    assert main(_job(tmp_path, ("first", TINY_MC), ("second", _with(TINY_MC, lr="1e6", eps="1")))) == 3
    assert "training diverged" in capsys.readouterr().err
    assert not (tmp_path / "job").exists()


def test_run_job_reads_a_run_another_job_trained(tmp_path, capsys):
    """A manifest's run with ``same_as`` is not trained again: the job lists it (its options and where it is) and
    trains nothing for it; one whose run is not finished is refused before any work."""
    assert main(_job(tmp_path, ("first", TINY_MC))) == 0
    trained = tmp_path / "job" / "first"
    entry = {"name": "again", "command": "train", "options": train_options(TINY_MC), "same_as": str(trained)}
    manifest = write_manifest(tmp_path / "second.json", [entry])
    assert main(["run-job", "--manifest", str(manifest), "--out", str(tmp_path / "second"), "--quiet"]) == 0
    assert sorted(p.name for p in (tmp_path / "second").iterdir()) == [".cdln-written.json", "job.json"]
    assert json.loads((tmp_path / "second" / "job.json").read_text())["runs"] == [entry]
    assert f"the same run as {trained}" in capsys.readouterr().err
    manifest = write_manifest(tmp_path / "third.json", [dict(entry, same_as=str(tmp_path / "missing"))])
    assert main(["run-job", "--manifest", str(manifest), "--out", str(tmp_path / "third"), "--quiet"]) == 2
    assert "run again: same_as" in capsys.readouterr().err and not (tmp_path / "third").exists()


@pytest.mark.parametrize(
    "text,message",
    [
        ("{not json", "is not valid JSON"),
        ('{"runs": []}', 'must hold {"runs"'),
        ('{"runs": [{"name": "a", "command": "fit", "options": {}}]}', "run a: command must be one of"),
        ('{"runs": [{"name": "a b", "command": "train"}]}', "run name 'a b' must be unique"),
        ('{"runs": [{"name": "a", "command": "altmin", "options": {}}]}', r"needs option\(s\) \['problem'\]"),
    ],
)
def test_run_job_refuses_a_bad_manifest_in_one_line(tmp_path, capsys, text, message):
    (tmp_path / "job.json").write_text(text)
    assert main(["run-job", "--manifest", str(tmp_path / "job.json"), "--out", str(tmp_path / "job")]) == 2
    assert re.search(message, capsys.readouterr().err) and not (tmp_path / "job").exists()


def test_ms_runs_of_a_job_are_timed_alone(tmp_path):
    """Every MS network of a job trains and is timed on its own, as the paper's seconds are: its record's
    seconds are its own run's, on the compiled operator pass."""
    problem = tmp_path / "ms.pt"
    assert main(["make-problem", "--out", str(problem), "--task", "ms", "--d", "6", "--r", "1", "--m", "50"]) == 0
    train = dict(problem=str(problem), task="ms", lr=5, n_inner=5, max_outer=2, device="cpu")
    assert main(_job(tmp_path, ("original", dict(train, model="original")), ("cdln", dict(train, model="cdln")))) == 0
    for name in ("original", "cdln"):
        timing = read_run_record(tmp_path / "job" / name)[0]["timing"]
        assert timing["engine_path"] == "torch+native-one-pass", timing["engine_path"]
        assert timing["engine_plan"]["operator_pass"] == "native-one-pass"


def test_each_run_settings_help_lives_once_beside_its_field():
    """`cdln train --help`, the pipeline schema's run settings and config/README.md's synthetic table give each
    setting the help of its RunConfig field (cdln.config.setting), word for word."""
    import argparse

    import yaml
    from conftest import REPO

    from cdln.cli.train import add_run_config_options
    from cdln.config import RunConfig

    helps = {field.name: field.metadata["help"] for field in dataclasses.fields(RunConfig)}
    parser = argparse.ArgumentParser()
    add_run_config_options(parser)
    for action in parser._actions[1:]:
        assert action.help.startswith(helps[action.dest]), action.dest
    schema = yaml.safe_load((REPO / "workflow" / "schemas" / "config.schema.yaml").read_text())
    shared = {key: prop for key, prop in schema["$defs"]["run_settings"]["properties"].items() if key in helps}
    assert len(shared) >= 20 and all(prop["description"] == helps[key] for key, prop in shared.items())
    readme = (REPO / "config" / "README.md").read_text()
    section = readme[readme.index("## Synthetic experiments") :].split("\n## ")[0]
    rows = dict(re.findall(r"^\| `(\w+)` \| (.*) \|$", section, flags=re.M))
    assert {key: rows.get(key) for key in shared} == {key: helps[key] for key in shared}


def test_the_batch_benchmark_runs_pipeline_jobs_from_manifests():
    """`cdln bench --sections batch`'s process comparison starts `cdln run-job` with a manifest, as the pipeline
    does: no run is turned into flag strings."""
    import torch

    from cdln.bench.runs import bench_batch_cli

    options = {"task": "mc", "d": 10, "r": 2, "p": 0.5, "model": "cdln", "r_hat": 4, "depth": 3, "lr": 2,
               "n_inner": 10, "max_outer": 2, "tol": 0.0, "init_seed": 0, "dtype": "float64"}  # fmt: skip
    result = bench_batch_cli(torch.device("cpu"), options, [1.0, 2.0])
    assert result["runs"] == 2 and result["sequential_seconds"] > 0 and result["batched_seconds"] > 0
