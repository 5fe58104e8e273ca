"""MovieLens-100K: parsing u.data, the split and the completion problem (its sources: test_movielens_sources.py)."""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from cdln.cli import main
from cdln.data import DataFormatError, download
from cdln.data import movielens as ml
from cdln.data import movielens_sources as src
from cdln.io import load_problem, save_problem
from cdln.outputs import sha256
from cdln.problems import Completion
from cdln.spec import ProblemSpec

GOOD = "1\t10\t5\t881250949\n2\t10\t3\t891717742\n943\t1682\t1\t875747190\n"


def write_zip(path: Path, text: str, member: str = ml.RATINGS_MEMBER) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(member, text)
    return path


def test_parse_reads_zero_based_indices_and_values():
    ratings = ml.parse_ratings(GOOD + "\n", "u.data")
    assert len(ratings) == 3
    assert ratings.users.tolist() == [0, 1, 942]
    assert ratings.items.tolist() == [9, 9, 1681]
    assert ratings.values.tolist() == [5.0, 3.0, 1.0]
    assert (ratings.n_users, ratings.n_items) == (943, 1682)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("1\t10\t5", "expected 4 tab-separated fields"),
        ("1 10 5 881250949", "expected 4 tab-separated fields"),
        ("1\tten\t5\t881250949", "fields must be integers"),
        ("944\t10\t5\t881250949", "user id 944 outside 1..943"),
        ("0\t10\t5\t881250949", "user id 0 outside 1..943"),
        ("1\t1683\t5\t881250949", "item id 1683 outside 1..1682"),
        ("1\t11\t6\t881250949", "rating 6 outside 1..5"),
        ("1\t11\t0\t881250949", "rating 0 outside 1..5"),
    ],
)
def test_parse_rejects_bad_lines_naming_file_and_line(line, message):
    with pytest.raises(DataFormatError, match=message) as error:
        ml.parse_ratings(GOOD + line + "\n", "some/u.data")
    assert "some/u.data, line 4" in str(error.value)


def test_parse_rejects_duplicate_pairs_naming_both_lines():
    text = GOOD + "2\t10\t4\t891717743\n"
    with pytest.raises(DataFormatError, match=r"line 4: user 2 rated item 10 twice \(first on line 2\)"):
        ml.parse_ratings(text, "u.data")


def test_parse_rejects_empty_input():
    with pytest.raises(DataFormatError, match="no ratings found"):
        ml.parse_ratings("\n\n", "u.data")


def test_read_archive_and_bad_archives(tmp_path):
    ratings = ml.read_ml100k(src.verify_ratings(src.read_ratings_bytes(write_zip(tmp_path / "a.zip", GOOD)), "a", True))
    assert len(ratings) == 3
    with pytest.raises(DataFormatError, match="has no ml-100k/u.data"):
        src.read_ratings_bytes(write_zip(tmp_path / "b.zip", GOOD, member="u.data"))
    not_zip = tmp_path / "c.zip"
    not_zip.write_text("not a zip")
    with pytest.raises(DataFormatError, match="c.zip is not a readable zip archive"):
        src.read_ratings_bytes(not_zip)


def test_download_verifies_checksum_and_keeps_nothing_on_mismatch(tmp_path, monkeypatch):
    monkeypatch.delenv("CDLN_OFFLINE")
    source = tmp_path / "source.bin"
    source.write_bytes(b"payload")
    good = hashlib.md5(b"payload").hexdigest()
    dest = tmp_path / "out" / "file.bin"
    with pytest.raises(OSError, match="checksum mismatch"):
        download(source.as_uri(), dest, "0" * 32)
    assert not dest.exists() and not list(dest.parent.glob("*.partial"))
    assert download(source.as_uri(), dest, good) == dest
    assert dest.read_bytes() == b"payload"
    monkeypatch.setenv("CDLN_OFFLINE", "1")
    with pytest.raises(OSError, match="downloads are off"):
        download(source.as_uri(), tmp_path / "other.bin", good)


def test_synthetic_archive_has_the_real_format_and_size(tmp_path, capsys):
    path = ml.synthetic_ml100k(tmp_path / "ml-100k.zip", seed=3)
    with pytest.raises(DataFormatError, match="not MovieLens-100K's"):
        src.find_ratings(path, tmp_path)  # never passed off as MovieLens
    source = src.find_ratings(path, tmp_path, accept_other=True)
    assert not source.official and "not MovieLens-100K" in capsys.readouterr().err
    ratings = ml.read_ml100k(source)  # the strict parser accepts it: no duplicates, ids in range
    assert len(ratings) == 100_000
    assert ratings.users.max() == ml.N_USERS - 1 and ratings.items.max() < ml.N_ITEMS
    assert set(np.unique(ratings.values)) <= {1.0, 2.0, 3.0, 4.0, 5.0}
    assert 3.0 < ratings.values.mean() < 4.0


def test_split_is_seeded_disjoint_and_sized():
    train, test = ml.split_ratings(1000, 0.2, seed=1)
    assert len(test) == 200 and len(train) == 800
    assert not set(train) & set(test) and set(train) | set(test) == set(range(1000))
    again, _ = ml.split_ratings(1000, 0.2, seed=1)
    other, _ = ml.split_ratings(1000, 0.2, seed=2)
    assert np.array_equal(train, again) and not np.array_equal(train, other)
    with pytest.raises(ValueError, match="test_fraction must be in"):
        ml.split_ratings(1000, 1.0, seed=0)


def test_completion_problem_holds_out_the_test_ratings(tmp_path):
    archive = ml.synthetic_ml100k(tmp_path / "s.zip", seed=0, n_ratings=5000)
    ratings = ml.read_ml100k(src.find_ratings(archive, tmp_path, accept_other=True))
    problem = ml.completion_problem(ratings, rank=10, test_fraction=0.2, split_seed=0)
    assert problem.shape == (943, 1682)
    assert int(problem.mask.sum()) == 4000 and int(problem.heldout.sum()) == 1000
    assert not (problem.mask & problem.heldout).any()
    assert problem.spec.p == pytest.approx(4000 / (943 * 1682))
    # The truth has zero held-out error; predicting 0 costs 1/2 mean of the held-out squared ratings.
    assert float(problem.recovery_error(problem.target[None])[0]) == 0.0
    test_values = problem.target[problem.heldout]
    zero_error = float(problem.recovery_error(torch.zeros(1, 943, 1682, dtype=torch.float64))[0])
    assert zero_error == pytest.approx(0.5 * float(test_values.square().mean()))
    # Training entries do not move the held-out error; held-out entries do not move the loss.
    nudged = problem.target.clone()
    nudged[problem.mask] += 1.0
    assert float(problem.recovery_error(nudged[None])[0]) == 0.0
    assert float(problem.train_loss(nudged[None])[0]) == pytest.approx(0.5)
    # Surrogate = observed training ratings / p (no held-out rating leaks into the C-DLN init).
    assert torch.equal(problem.surrogate() != 0, problem.mask & (problem.target != 0))
    save_problem(problem, tmp_path / "p.pt")
    loaded = load_problem(tmp_path / "p.pt")
    assert isinstance(loaded, Completion) and torch.equal(loaded.heldout, problem.heldout)
    assert loaded.to("cpu", torch.float32).heldout.dtype == torch.bool


def test_completion_without_heldout_is_unchanged():
    spec = ProblemSpec("mc", 4, 5, 1, p=0.5)
    target = torch.arange(20, dtype=torch.float64).reshape(4, 5)
    mask = torch.zeros(4, 5, dtype=torch.bool)
    mask[:2] = True
    problem = Completion(spec, target, mask)
    assert problem.heldout is None and set(problem.tensors()) == {"target", "mask"}
    error = float(problem.recovery_error(torch.zeros(1, 4, 5, dtype=torch.float64))[0])
    assert error == pytest.approx(0.5 * float(target[~mask].square().mean()))


def test_completion_rejects_overlapping_heldout():
    spec = ProblemSpec("mc", 2, 2, 1, p=0.5)
    mask = torch.tensor([[True, False], [False, True]])
    with pytest.raises(ValueError, match="disjoint"):
        Completion(spec, torch.ones(2, 2, dtype=torch.float64), mask, heldout=mask)


def test_slice_keeps_the_first_users_and_items():
    ratings = ml.parse_ratings(GOOD, "u.data")
    small = ml.slice_ratings(ratings, 2, 20)
    assert (small.n_users, small.n_items, len(small)) == (2, 20, 2)
    with pytest.raises(DataFormatError, match="holds no ratings"):
        ml.slice_ratings(ratings, 1, 5)


def test_cli_missing_archive_fails_with_exit_4_and_the_path(tmp_path, capsys):
    code = main(["movielens-problem", "--out", str(tmp_path / "p.pt"), "--resources", str(tmp_path), "--no-download"])
    assert code == 4
    assert f"at {tmp_path / 'ml-100k.zip'}" in capsys.readouterr().err
    assert not (tmp_path / "p.pt").exists()


def test_cli_malformed_archive_fails_with_exit_5(tmp_path, capsys):
    write_zip(tmp_path / "ml-100k.zip", GOOD + "5\t5\t9\t1\n")
    args = ["--resources", str(tmp_path), "--no-download", "--accept-other-ratings"]
    code = main(["movielens-problem", "--out", str(tmp_path / "p.pt"), *args])
    assert code == 5
    assert "line 4: rating 9 outside 1..5" in capsys.readouterr().err


def test_cli_builds_a_problem_that_cdln_train_accepts_and_records_its_source(tmp_path):
    ml.synthetic_ml100k(tmp_path / "ml-100k.zip", n_ratings=20_000)
    problem_file = tmp_path / "p.pt"
    args = ["movielens-problem", "--out", str(problem_file), "--resources", str(tmp_path), "--no-download",
            "--accept-other-ratings"]  # fmt: skip
    assert main([*args, "--n-users", "60", "--n-items", "80", "--r", "3", "--split-seed", "4"]) == 0
    problem = load_problem(problem_file)
    assert problem.shape == (60, 80) and problem.spec.data_seed == 4
    out = tmp_path / "run"
    train = ["train", "--problem", str(problem_file), "--task", "mc", "--model", "cdln", "--r-hat", "6"]
    assert (
        main([*train, "--lr", "1", "--eps", "0.1", "--n-inner", "10", "--max-outer", "2", "--quiet", "--out", str(out)])
        == 0
    )
    record = json.loads((out / "record.json").read_text())
    assert record["data"]["provenance"]["official"] is False
    assert record["data"]["provenance"]["source"] == str(tmp_path / "ml-100k.zip")
    assert record["data"]["files"]["problem"]["sha256"] == sha256(problem_file)
