"""Nothing of a user's is lost: cdln replaces only what it wrote (its ledger), one writer at a time, atomically."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
from conftest import REPO, cdln_command, cli_env

from cdln.cli import main
from cdln.outputs import (
    LEDGER,
    OutputError,
    atomic_directory,
    atomic_write,
    check_output_dir,
    foreign_files,
    write_text,
    written_by_cdln,
)

TRAIN = ["train", "--task", "mf", "--d", "6", "--r", "1", "--lr", "2", "--n-inner", "5", "--max-outer", "2"]


def _tree(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (but cdln's ledgers) with its bytes."""
    return {
        path.relative_to(folder).as_posix(): path.read_bytes()
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.name != LEDGER
    }


def _refused(capsys: pytest.CaptureFixture, *args: str) -> str:
    """Run ``cdln ARGS`` in this process: it exits 2 with one line and no traceback; returns the line."""
    capsys.readouterr()
    assert main(list(args)) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in lines[0], lines
    return lines[0]


def _ok(*args: str) -> None:
    assert main([*args, "--quiet"] if args[0] == "train" else list(args)) == 0, args


# ---- the four cases of a user's folder ----


def test_a_thesis_folder_holding_a_record_json_is_never_replaced(tmp_path, capsys):
    thesis = tmp_path / "thesis"
    (thesis / "src").mkdir(parents=True)
    (thesis / "record.json").write_text('{"mine": true}')
    (thesis / "thesis.tex").write_text("\\documentclass{book}")
    (thesis / "src" / "main.py").write_text("print('hello')")
    before = _tree(thesis)

    line = _refused(capsys, *TRAIN, "--out", str(thesis))
    assert "record.json, src/main.py, thesis.tex" in line and "--force" in line
    line = _refused(capsys, *TRAIN, "--out", str(thesis), "--force")
    assert "record.json was not written by cdln" in line  # --force writes beside a user's files, never over them
    assert _tree(thesis) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["thesis"]  # no lock, no staging folder left


def test_a_file_added_to_a_run_folder_stays(tmp_path, capsys):
    run = tmp_path / "run"
    _ok(*TRAIN, "--out", str(run))
    _ok(*TRAIN, "--out", str(run), "--lr", "1")  # cdln's own: replaced whole
    assert json.loads((run / "record.json").read_text())["config"]["lr"] == 1.0
    (run / "notes.txt").write_text("what I saw")
    (run / "plots").mkdir()
    (run / "plots" / "mine.png").write_bytes(b"\x89PNG")

    line = _refused(capsys, *TRAIN, "--out", str(run))
    assert "notes.txt, plots/mine.png" in line
    _ok(*TRAIN, "--out", str(run), "--force", "--lr", "3")
    assert (run / "notes.txt").read_text() == "what I saw" and (run / "plots" / "mine.png").read_bytes() == b"\x89PNG"
    assert json.loads((run / "record.json").read_text())["config"]["lr"] == 3.0
    assert foreign_files(run) == ["notes.txt", "plots/mine.png"]  # the new record is cdln's again


def test_an_edited_run_file_is_no_longer_cdlns(tmp_path):
    run = tmp_path / "run"
    _ok(*TRAIN, "--out", str(run))
    assert foreign_files(run) == []
    curves = run / "curves.csv"
    curves.write_text(curves.read_text() + "# my annotation\n")
    assert foreign_files(run) == ["curves.csv"]
    with pytest.raises(OutputError, match="curves.csv"):
        check_output_dir(run)
    with pytest.raises(OutputError, match="curves.csv was not written by cdln"):
        check_output_dir(run, force=True, writes=["curves.csv"])


def test_a_second_writer_into_the_same_folder_fails_at_once(tmp_path, capsys):
    out = tmp_path / "run"
    slow = [*TRAIN[:4], "40", *TRAIN[5:-4], "--n-inner", "1000", "--max-outer", "150", "--threads", "1", "--quiet"]
    first = subprocess.Popen(
        cdln_command(*slow, "--out", str(out)), env=cli_env(), cwd=REPO, stderr=subprocess.PIPE, text=True
    )
    lock = tmp_path / ".run.cdln-lock"
    deadline = time.monotonic() + 60
    while not (lock.exists() and lock.read_text().strip()) and time.monotonic() < deadline:
        time.sleep(0.02)
    try:
        assert lock.read_text().strip() == str(first.pid)
        assert main([*TRAIN, "--out", str(out), "--quiet"]) == 2  # in this process: no start-up to wait for
        assert first.poll() is None  # the first keeps running
        line = capsys.readouterr().err.strip()
        assert "\n" not in line and f"being written by another cdln run (process {first.pid})" in line
    finally:
        _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    assert json.loads((out / "record.json").read_text())["config"]["n_inner"] == 1000  # the first's record, whole
    assert not lock.exists()


def test_plot_refuses_to_overwrite_a_users_file_but_replaces_its_own(tmp_path, capsys):
    table = tmp_path / "curves.csv"
    pd.DataFrame(
        {
            "panel": "a",
            "model": ["original", "cdln"],
            "seed": 0,
            "iteration": 10,
            "seconds": 0.1,
            "recovery_error": [1e-3, 1e-4],
            "train_loss": [1e-4, 1e-5],
            "r": 1,
            "depth": 3,
            "r_hat": [None, 2],
            "bm_rank": None,
        }  # fmt: skip
    ).to_csv(table, index=False)
    figure = tmp_path / "figure.png"
    figure.write_bytes(b"my own figure")
    plot = ["plot", "error-curves", "--table", str(table), "--panels", "a", "--out", str(figure)]
    line = _refused(capsys, *plot)
    assert str(figure) in line and "not written by cdln" in line
    assert figure.read_bytes() == b"my own figure"

    figure.unlink()
    _ok(*plot)
    assert written_by_cdln(figure)
    _ok(*plot, "--title", "again")  # its own figure: replaced
    pdf = tmp_path / "figure.pdf"
    pdf.write_bytes(b"%PDF mine")
    assert "--pdf" in _refused(capsys, *plot, "--pdf", str(pdf))
    assert pdf.read_bytes() == b"%PDF mine"


# ---- the mechanism ----


def test_every_file_output_flag_is_checked_before_the_work(tmp_path, capsys):
    mine = tmp_path / "mine.csv"
    mine.write_text("keep")
    for command in (
        ["make-problem", "--task", "mf", "--d", "6", "--r", "1", "--out", str(mine)],
        ["movielens-synthetic", "--out", str(mine)],
        ["summary", "--csv", str(mine), "--markdown", str(tmp_path / "s.md"), str(tmp_path / "none.csv")],
        ["claims", "gather", "--csv", str(mine), "--markdown", str(tmp_path / "c.md"), str(tmp_path / "none.csv")],
    ):
        line = _refused(capsys, *command)
        assert str(mine) in line and "not written by cdln" in line, command
    assert mine.read_text() == "keep" and sorted(p.name for p in tmp_path.iterdir()) == ["mine.csv"]


def test_a_failed_write_leaves_what_was_there_and_no_new_folder(tmp_path):
    out = tmp_path / "a" / "b" / "run"
    with pytest.raises(RuntimeError), atomic_directory(out) as staging:
        (staging / "x.txt").write_text("half")
        raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []  # the folders made for it are gone again
    write_text(tmp_path / "t.txt", "one")

    def write_then_fail(tmp: Path) -> None:
        tmp.write_text("two")
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        atomic_write(tmp_path / "t.txt", write_then_fail)
    assert (tmp_path / "t.txt").read_text() == "one" and written_by_cdln(tmp_path / "t.txt")


def test_a_ledger_vouches_only_for_the_content_it_recorded(tmp_path):
    write_text(tmp_path / "table.csv", "a,b\n1,2\n")
    assert written_by_cdln(tmp_path / "table.csv")
    (tmp_path / "table.csv").write_text("a,b\n1,3\n")
    assert not written_by_cdln(tmp_path / "table.csv")
    with pytest.raises(OutputError, match="not written by cdln"):
        write_text(tmp_path / "table.csv", "new")
    (tmp_path / LEDGER).write_text("not json")  # a broken ledger vouches for nothing
    (tmp_path / "table.csv").write_text("a,b\n1,2\n")
    assert not written_by_cdln(tmp_path / "table.csv")


def test_the_same_problem_saved_twice_has_the_same_bytes(tmp_path):
    """Records name each data file by its SHA-256, so a file must be a function of its content."""
    from cdln.data.synthetic import make_problem
    from cdln.io import save_problem
    from cdln.spec import ProblemSpec

    problem = make_problem(ProblemSpec("mc", 6, 5, 2, data_seed=1, p=0.5))
    save_problem(problem, tmp_path / "a.pt")
    save_problem(problem, tmp_path / "b.pt")
    assert (tmp_path / "a.pt").read_bytes() == (tmp_path / "b.pt").read_bytes()


def test_force_keeps_a_users_file_inside_a_folder_cdln_writes(tmp_path):
    job = tmp_path / "job"

    def write_job(value: str, force: bool = False) -> None:
        with atomic_directory(job, force=force, writes=["a", "job.json"]) as staging:
            (staging / "a").mkdir()
            (staging / "a" / "record.json").write_text(value)
            (staging / "job.json").write_text(value)

    write_job("1")
    (job / "a" / "notes.txt").write_text("mine")
    with pytest.raises(OutputError, match="a/notes.txt"):
        write_job("2")
    write_job("2", force=True)
    assert (job / "a" / "record.json").read_text() == "2" and (job / "a" / "notes.txt").read_text() == "mine"
    assert foreign_files(job) == ["a/notes.txt"]
