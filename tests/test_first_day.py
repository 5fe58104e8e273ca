"""A stranger's first day: nothing of theirs deleted, outputs readable by others, one line for a bad input,
the conventions they expect, a record that says which code made it, and the gallery."""

from __future__ import annotations

import argparse
import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import REPO, cdln_command, cli_env, run_cli, train_options, write_manifest

from cdln.cli import build_parser
from cdln.data.synthetic import make_problem
from cdln.io import save_problem
from cdln.outputs import OutputError, foreign_files
from cdln.pipeline.gallery import make_gallery, run_elapsed
from cdln.spec import ProblemSpec

TRAIN = ["train", "--task", "mf", "--d", "6", "--r", "1", "--lr", "2", "--n-inner", "5", "--max-outer", "2"]


def _one_error_line(result: subprocess.CompletedProcess, *needles: str) -> str:
    """The run failed with exit 2 and one line (no traceback) that says each of ``needles``."""
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


# ---- nothing of the user's is deleted or lost ----


def _users_folder(path: Path) -> None:
    (path / "sub").mkdir(parents=True)
    (path / "notes.txt").write_text("mine")
    (path / "sub" / "data.csv").write_text("1,2\n")


def test_out_refuses_a_folder_of_the_users_and_keeps_its_files(tmp_path):
    folder = tmp_path / "project"
    _users_folder(folder)
    line = _one_error_line(run_cli(*TRAIN, "--out", str(folder)), str(folder), "new folder", "--force")
    assert "holds files cdln did not write (notes.txt, sub/data.csv)" in line
    assert (folder / "notes.txt").read_text() == "mine" and (folder / "sub" / "data.csv").is_file()


def test_out_with_force_writes_beside_the_users_files_and_a_run_record_or_an_empty_folder_is_replaced(tmp_path):
    folder = tmp_path / "project"
    _users_folder(folder)
    assert run_cli(*TRAIN, "--out", str(folder), "--force", "--quiet").returncode == 0
    assert (folder / "record.json").is_file() and (folder / "notes.txt").read_text() == "mine"
    (folder / "notes.txt").unlink()
    (folder / "sub" / "data.csv").unlink()
    (folder / "sub").rmdir()
    assert run_cli(*TRAIN, "--out", str(folder), "--quiet").returncode == 0  # only cdln's files left: replaced
    (tmp_path / "empty").mkdir()
    assert run_cli(*TRAIN, "--out", str(tmp_path / "empty"), "--quiet").returncode == 0


def test_out_naming_a_file_fails_before_training(tmp_path):
    target = tmp_path / "results.txt"
    target.write_text("keep")
    result = run_cli(*TRAIN, "--out", str(target))
    _one_error_line(result, str(target), "is a file")
    assert "iter" not in result.stdout + result.stderr.split("error:")[0]  # no progress line: nothing trained
    assert target.read_text() == "keep"


def test_run_job_checks_out_before_it_trains(tmp_path):
    folder = tmp_path / "job"
    _users_folder(folder)
    run = {"name": "a", "command": "train", "options": train_options(TRAIN[1:])}
    manifest = write_manifest(tmp_path / "job.json", [run])
    result = run_cli("run-job", "--manifest", str(manifest), "--out", str(folder))
    _one_error_line(result, str(folder))
    assert (folder / "notes.txt").read_text() == "mine"


# ---- outputs follow the umask ----


def test_outputs_follow_the_umask(tmp_path):
    def umask_022() -> None:
        os.umask(0o022)

    out = tmp_path / "run"
    done = subprocess.run(cdln_command(*TRAIN, "--out", str(out), "--quiet"), env=cli_env(), capture_output=True,
                          text=True, preexec_fn=umask_022, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    problem = tmp_path / "problem.pt"
    done = subprocess.run(cdln_command("make-problem", "--task", "mf", "--d", "6", "--r", "1", "--out", str(problem)),
                          env=cli_env(), capture_output=True, text=True, preexec_fn=umask_022, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert oct(out.stat().st_mode & 0o777) == oct(0o755)
    for path in (out / "record.json", out / "curves.csv", problem):
        assert oct(path.stat().st_mode & 0o777) == oct(0o644), path


# ---- one line, exit 2, naming the file or key ----


def test_broken_yaml_config(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("task: mf\nd: [6\n")
    _one_error_line(run_cli("train", "--config", str(config), "--out", str(tmp_path / "o")), str(config), "YAML")


@pytest.mark.parametrize("content", [b"not a torch file", b"PK\x03\x04truncated"], ids=["garbage", "truncated"])
def test_unreadable_problem_file(tmp_path, content):
    path = tmp_path / "problem.pt"
    path.write_bytes(content)
    result = run_cli("train", "--problem", str(path), "--task", "mf", "--out", str(tmp_path / "o"))
    _one_error_line(result, str(path), "not a readable cdln problem", "cdln make-problem")


def test_garbage_problem_file_gets_no_torch_advice(tmp_path):
    path = tmp_path / "problem.pt"
    path.write_bytes(b"\x00garbage" * 10)
    line = _one_error_line(run_cli("train", "--problem", str(path), "--task", "mf", "--out", str(tmp_path / "o")))
    assert "mmap" not in line and "weights_only" not in line and "not a torch file, or truncated" in line


@pytest.mark.parametrize(
    "command",
    [
        ["plot", "nonlinear", "--table", "{binary}", "--out", "{out}/f.png"],
        ["claims", "check", "--table", "{binary}"],
        ["train", "--task", "mc", "--matrix", "{binary}", "--mask", "{binary}", "--r", "1", "--out", "{out}/r"],
    ],
    ids=["plot", "claims-check", "matrix"],
)
def test_a_binary_file_is_named_in_one_line(tmp_path, command):
    binary = tmp_path / "table.csv"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff\xfe" * 20)
    args = [part.format(binary=binary, out=tmp_path) for part in command]
    line = _one_error_line(run_cli(*args), str(binary))
    assert "codec" not in line and ("not a CSV table" in line or "not a text file" in line), line


def _subcommand_parsers(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield (*prefix, name), sub
                yield from _subcommand_parsers(sub, (*prefix, name))


def test_every_option_of_every_command_has_help_that_states_its_default_once():
    for command, parser in _subcommand_parsers(build_parser()):
        for action in parser._actions:
            if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
                continue
            name = "/".join(action.option_strings) or action.dest
            assert action.help, f"cdln {' '.join(command)} {name} has no help"
            assert action.help.count("default") <= 1, f"cdln {' '.join(command)} {name}: {action.help}"


def test_a_truncated_real_problem_file(tmp_path):
    path = tmp_path / "problem.pt"
    save_problem(make_problem(ProblemSpec("mf", 8, 8, 2)), path)
    path.write_bytes(path.read_bytes()[:300])
    _one_error_line(run_cli("altmin", "--problem", str(path), "--out", str(tmp_path / "o")), str(path))


def test_the_wrong_table_for_a_plot(tmp_path):
    runs = tmp_path / "mc_runs.csv"
    pd.DataFrame({"experiment": ["mc"], "model": ["cdln"], "stop_iteration": [10]}).to_csv(runs, index=False)
    result = run_cli("plot", "error-curves", "--table", str(runs), "--out", str(tmp_path / "f.png"), "--panels", "r10")
    _one_error_line(result, str(runs), "lacks the column", "_curves.csv")


def test_a_corrupted_run_record(tmp_path):
    job = tmp_path / "runs" / "mc" / "r10_seed0"
    assert run_cli(*TRAIN, "--out", str(job / "original"), "--quiet").returncode == 0
    (job / "job.json").write_text(json.dumps({"runs": [{"name": "original", "argument": "train"}]}))
    (job / "original" / "record.json").write_text('{"kind": "train", ')
    out = tmp_path / "t"
    result = run_cli("aggregate", "synthetic", "--curves", str(out / "c.csv"), "--table", str(out / "r.csv"),
                     "--markdown", str(out / "r.md"), str(job))  # fmt: skip
    _one_error_line(result, str(job / "original" / "record.json"), "not valid JSON")


def test_claims_of_an_unknown_figure_and_a_check_over_nothing(tmp_path):
    claims = REPO / "config" / "claims.yaml"
    result = run_cli("claims", "evaluate", "--claims", str(claims), "--figure", "fig_foo", "--table-dir", str(tmp_path),
                     "--out", str(tmp_path / "x.csv"))  # fmt: skip
    _one_error_line(result, "fig_foo", "fig_mc")
    assert not (tmp_path / "x.csv").exists()
    empty = tmp_path / "claims.csv"
    empty.write_text("figure,id,claim,paper,measured,holds\n")
    _one_error_line(run_cli("claims", "check", "--table", str(empty)), str(empty), "no claims")


def test_run_job_checks_every_run_before_the_first_trains(tmp_path):
    problem = tmp_path / "mc.pt"
    save_problem(make_problem(ProblemSpec("mc", 8, 8, 2, p=0.5)), problem)
    good = dict(task="mc", problem=str(problem), model="cdln", r_hat=4, lr=1, n_inner=5, max_outer=400)
    bad = dict(good, r_hat=9, max_outer=500)  # r_hat > d: known from the file
    runs = [{"name": name, "command": "train", "options": options} for name, options in (("a", good), ("b", bad))]
    manifest = write_manifest(tmp_path / "job.json", runs)
    result = run_cli("run-job", "--manifest", str(manifest), "--out", str(tmp_path / "job"))
    _one_error_line(result, "run b", "--r-hat must be in [1, 8]")
    assert "iter" not in result.stderr and not (tmp_path / "job").exists()


# ---- conventions ----


def test_version():
    result = run_cli("--version")
    assert result.returncode == 0 and result.stdout.strip().startswith("cdln ")


def test_help_has_no_markup():
    for command in ([], ["train"], ["plot"], ["claims", "evaluate"], ["bench"], ["run-job"], ["gallery"]):
        text = run_cli(*command, "--help").stdout
        assert text and "``" not in text and ":func:" not in text, command


def test_records_store_the_resolved_settings_and_the_code_version(tmp_path):
    out = tmp_path / "run"
    args = ["train", "--task", "mc", "--d", "8", "--r", "2", "--p", "0.6", "--model", "cdln", "--lr", "1",
            "--n-inner", "5", "--max-outer", "1", "--out", str(out), "--quiet"]  # fmt: skip
    assert run_cli(*args).returncode == 0
    record = json.loads((out / "record.json").read_text())
    assert record["config"]["r_hat"] == 4  # the default 2r, as it ran
    git = record["environment"]["git"]
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True)
    if head.returncode == 0:  # a checkout: the record names its commit
        assert git["commit"] == head.stdout.strip() and isinstance(git["dirty"], bool)


def test_progress_lines_say_how_long_is_left(tmp_path):
    result = run_cli(*TRAIN[:-4], "--n-inner", "50", "--max-outer", "40", "--progress-every", "0.000001",
                     "--out", str(tmp_path / "o"))  # fmt: skip
    lines = [line for line in result.stderr.splitlines() if " iter " in line]
    assert len(lines) > 2 and all("left" in line for line in lines)
    assert any("s left" in line for line in lines[1:])


# ---- the gallery ----


def test_make_gallery_copies_and_stamps(tmp_path):
    root = tmp_path / "results" / "paper"
    (root / "figures").mkdir(parents=True)
    (root / "tables").mkdir()
    for name in ("fig_mc.png", "fig_mf.png"):
        (root / "figures" / name).write_bytes(b"\x89PNG")
    for name in ("claims.md", "claims.csv", "summary.md", "summary.csv", "mc_runs.csv", "mc_findings.json"):
        (root / "tables" / name).write_text(name)
    record = {"environment": {"git": {"commit": "abc123", "dirty": False}, "torch": "2.13.0", "cdln": "0.1.0"}}
    (root / "runs" / "mc" / "job" / "a").mkdir(parents=True)
    (root / "runs" / "mc" / "job" / "a" / "record.json").write_text(json.dumps(record))
    logs = tmp_path / "logs"
    logs.mkdir()
    log = logs / "2026-12-06T160000.000001.snakemake.log"
    log.write_text("localrule all:\n")
    os.utime(log, (log.stat().st_atime, __import__("datetime").datetime(2026, 12, 6, 16, 57, 20).timestamp()))
    assert run_elapsed(logs)["seconds"] == 57 * 60 + 20
    stamp = make_gallery(root, tmp_path / "gallery", logs)
    assert stamp["commit"] == "abc123" and stamp["run"]["seconds"] == 3440
    gallery = tmp_path / "gallery"
    files = ["fig_mc.png", "fig_mf.png", "claims.md", "claims.csv", "summary.md", "stamp.json", "README.md"]
    assert sorted(p.name for p in gallery.iterdir()) == sorted([*files, "run.snakemake.log", ".cdln-written.json",
                                                                "tables"])  # fmt: skip
    # the tables the claims read, gzipped byte for byte (not the claims table or the summary themselves)
    assert sorted(p.name for p in (gallery / "tables").iterdir()) == ["mc_findings.json.gz", "mc_runs.csv.gz"]
    assert gzip.decompress((gallery / "tables" / "mc_runs.csv.gz").read_bytes()) == b"mc_runs.csv"
    assert foreign_files(gallery) == []
    assert (gallery / "run.snakemake.log").read_text() == "localrule all:\n"  # the run's own log, for its job-seconds
    assert "![fig_mc.png](fig_mc.png)" in (gallery / "README.md").read_text()
    assert "`cdln job-times run.snakemake.log`" in (gallery / "README.md").read_text()
    (root / "figures" / "fig_mf.png").unlink()
    make_gallery(root, gallery, logs)  # an earlier gallery is replaced whole: fig_mf.png is gone with its figure
    assert not (gallery / "fig_mf.png").exists() and (gallery / "fig_mc.png").is_file()
    (gallery / "notes.md").write_text("mine")
    with pytest.raises(OutputError, match="notes.md"):
        make_gallery(root, gallery, logs)
    assert (gallery / "notes.md").read_text() == "mine"
    other = {"environment": {"git": {"commit": "def456", "dirty": False}}}
    (root / "runs" / "mc" / "job" / "b").mkdir()
    (root / "runs" / "mc" / "job" / "b" / "record.json").write_text(json.dumps(other))
    with pytest.raises(ValueError, match="2 code versions"):
        make_gallery(root, tmp_path / "gallery2", logs)


def test_the_gallery_repoints_links_out_of_the_run_and_keeps_the_others(tmp_path):
    from cdln.pipeline.gallery import repoint_links

    root, gallery = tmp_path / "results" / "paper", tmp_path / "docs" / "gallery"
    (root / "tables").mkdir(parents=True)
    (tmp_path / "tests" / "expected").mkdir(parents=True)
    (tmp_path / "tests" / "expected" / "flips.csv").write_text("id\n")
    text = "[flips](../../../tests/expected/flips.csv#x) [fig](fig_mc.png) [web](https://a.b) [gone](../../nowhere.md)"
    assert repoint_links(text, root / "tables", gallery, root) == (
        "[flips](../../tests/expected/flips.csv#x) [fig](fig_mc.png) [web](https://a.b) [gone](../../nowhere.md)"
    )


def test_the_committed_gallery_parses_and_names_a_commit_of_this_history():
    gallery = REPO / "docs" / "gallery"
    stamp = json.loads((gallery / "stamp.json").read_text())
    claims = pd.read_csv(gallery / "claims.csv", keep_default_na=False)
    assert {"figure", "id", "holds"} <= set(claims.columns) and len(claims) > 50
    assert stamp["commit"] and stamp["machine"]["cores"] >= 1
    if (REPO / ".git").exists():
        known = subprocess.run(["git", "-C", str(REPO), "cat-file", "-e", f"{stamp['commit']}^{{commit}}"])
        assert known.returncode == 0, f"the gallery's commit {stamp['commit']} is not in this repository's history"
    for name in stamp["files"]:
        assert (gallery / name).is_file(), name
    assert foreign_files(gallery) == []  # its ledger is committed: `snakemake gallery` may replace it in a clone
    readme = (REPO / "README.md").read_text()
    for png in (name for name in stamp["files"] if name.endswith(".png")):
        assert f"docs/gallery/{png}" in readme, f"the README does not link {png}"


def test_the_two_grids_write_their_reports_apart():
    readme = (REPO / "README.md").read_text()
    assert "--report results/paper/report.html" in readme and "results/report.html" not in readme


def test_config_overrides_take_lists_and_scalars():
    from cdln.pipeline.validate import typed_overrides

    assert typed_overrides({"seeds": ["0", "1"], "lr": "1e-2", "flag": "true", "name": "x", "n": 3}) == {
        "seeds": [0, 1], "lr": 0.01, "flag": True, "name": "x", "n": 3,
    }  # fmt: skip
    assert np.isclose(typed_overrides("2.5"), 2.5) and sys.version_info >= (3, 11) and torch.__version__


def test_claims_whose_data_is_absent_stay_in_the_table_as_not_evaluated(tmp_path):
    from cdln.pipeline.claims import COLUMNS, load_claims

    evaluated = tmp_path / "fig_mc.csv"
    row = dict.fromkeys(COLUMNS, "") | {"figure": "fig_mc", "section": "paper", "id": "x", "claim": "c", "paper": "p",
                                         "measured": "1.0", "holds": "True"}  # fmt: skip
    pd.DataFrame([row], columns=COLUMNS).to_csv(evaluated, index=False)
    why = "MovieLens archive ml-100k.zip not found; to add it: put ml-100k.zip in resources/"
    claims_file = REPO / "config" / "claims.yaml"
    out = tmp_path / "claims"
    files = ["--csv", str(out / "c.csv"), "--markdown", str(out / "c.md"), "--claims", str(claims_file)]
    result = run_cli("claims", "gather", *files, "--absolute", "--not-evaluated", "fig_movielens", why, str(evaluated))
    assert result.returncode == 0, result.stderr
    movielens = [claim for claim in load_claims(claims_file) if claim.figure == "fig_movielens"]
    table = pd.read_csv(out / "c.csv", keep_default_na=False)
    skipped = table[table["not_evaluated"] != ""]
    assert len(skipped) == len(movielens) > 0 and set(skipped["id"]) == {claim.id for claim in movielens}
    markdown = (out / "c.md").read_text()
    assert "**1 of 1 paper claims hold**" in markdown
    assert f"**{len(movielens)} not evaluated** (fig_movielens: {why})" in markdown
    assert run_cli("claims", "check", "--table", str(out / "c.csv")).returncode == 0  # absent data is no violation
