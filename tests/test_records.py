"""Run records: atomic writes, round trips, contents of a real run's record."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import TINY

from cdln.config import RunConfig
from cdln.outputs import OutputError, torch_save, write_csv, write_json, write_text
from cdln.records import check_record, make_record, read_run_record, read_snapshots, write_run_record
from cdln.runner import run


def record(**extra) -> dict:
    """A minimal valid run record with ``extra`` sections."""
    return make_record(
        "train",
        config={"model": "cdln"},
        members=[{"member": 0}],
        parameters={"model": 1},
        timing={"seconds": 0.5, "iterations": 10, "seconds_per_iteration": 0.05},
        device={"type": "cpu", "name": "cpu", "dtype": "float64"},
        **extra,
    )


CURVES = pd.DataFrame(
    {
        "member": [0, 0],
        "iteration": [0, 10],
        "seconds": [0.0, 0.1],
        "train_loss": [1 / 3, np.nextafter(1e-300, 1)],
        "recovery_error": [np.pi, 2.0 / 7.0],
    }
)


def test_round_trip_is_exact(tmp_path):
    written = record(extra={"a": 1, "b": [1.5, "x"], "seed": np.int64(3), "f": np.float64(0.25)})
    write_run_record(tmp_path / "run", written, CURVES, {"x": np.arange(6).reshape(2, 3)})
    loaded, curves = read_run_record(tmp_path / "run")
    assert loaded["extra"] == {"a": 1, "b": [1.5, "x"], "seed": 3, "f": 0.25}
    assert loaded == json.loads(json.dumps(written, default=int))
    pd.testing.assert_frame_equal(curves, CURVES, check_exact=True)  # %.17g round-trips doubles
    assert np.array_equal(read_snapshots(tmp_path / "run")["x"], np.arange(6).reshape(2, 3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no staging dir left


def test_every_writer_gets_the_one_schema():
    """A record without a section, a section key, a member index or a known kind is refused by name."""
    good = record()
    check_record(good)
    for broken, message in (
        ({k: v for k, v in good.items() if k != "timing"}, r"lacks \['timing'"),
        ({**good, "device": {"type": "cpu"}}, r"device\.name"),
        ({**good, "members": [{"seed": 0}]}, r"'member' index"),
        ({**good, "kind": "magic"}, r"kind must be one of \['train', 'altmin', 'nonlinear'\]"),
    ):
        with pytest.raises(ValueError, match=message):
            check_record(broken)
    with pytest.raises(ValueError, match="lacks"):
        write_run_record("unused", {"v": 1}, CURVES)
    with pytest.raises(ValueError, match=r"curves lack the columns \['seconds'\]"):
        write_run_record("unused", good, CURVES.drop(columns="seconds"))


def test_rewrite_replaces_existing_directory(tmp_path):
    """An earlier run record is replaced whole; a file someone added is refused, or kept with force
    (tests/test_outputs.py)."""
    run_dir = tmp_path / "run"
    write_run_record(run_dir, record(v=1), CURVES, snapshots={"x": np.zeros(2)})
    write_run_record(run_dir, record(v=2), CURVES)
    assert sorted(p.name for p in run_dir.iterdir()) == [".cdln-written.json", "curves.csv", "record.json"]
    assert read_run_record(run_dir)[0]["v"] == 2
    (run_dir / "stale.txt").write_text("old")
    with pytest.raises(OutputError, match="stale.txt"):
        write_run_record(run_dir, record(v=3), CURVES)
    write_run_record(run_dir, record(v=3), CURVES, force=True)
    assert read_run_record(run_dir)[0]["v"] == 3 and (run_dir / "stale.txt").read_text() == "old"


def test_failed_write_leaves_nothing(tmp_path):
    """A record that cannot be serialised fails after the curves were staged: no run dir, no staging dir."""
    with pytest.raises(TypeError, match="cannot store object"):
        write_run_record(tmp_path / "run", record(bad=object()), CURVES)
    assert list(tmp_path.iterdir()) == []


def test_failed_rewrite_keeps_the_old_record(tmp_path):
    write_run_record(tmp_path / "run", record(v=1), CURVES)
    with pytest.raises(TypeError):
        write_run_record(tmp_path / "run", record(bad=object()), CURVES)
    assert read_run_record(tmp_path / "run")[0]["v"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_incomplete_run_dir_is_reported_clearly(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "curves.csv").write_text("member\n0\n")
    with pytest.raises(FileNotFoundError, match=r"not a complete run record \(missing record.json\)"):
        read_run_record(tmp_path / "run")
    with pytest.raises(FileNotFoundError, match="--snapshots"):
        read_snapshots(tmp_path / "run")


def test_atomic_writers_write_whole_files_or_nothing(tmp_path):
    folder = tmp_path / "d"
    write_text(folder / "t.txt", "hello")
    write_json(folder / "j.json", {"b": np.float64(0.5), "a": np.int64(1)})
    write_csv(folder / "c.csv", CURVES)
    torch_save({"x": torch.ones(2)}, folder / "x.pt")
    assert (folder / "t.txt").read_text() == "hello"
    assert (folder / "j.json").read_text() == '{\n  "a": 1,\n  "b": 0.5\n}\n'
    assert list(pd.read_csv(folder / "c.csv").columns) == list(CURVES.columns)
    assert torch.equal(torch.load(folder / "x.pt")["x"], torch.ones(2))
    expected = [".cdln-written.json", "c.csv", "j.json", "t.txt", "x.pt"]  # and the ledger of what cdln wrote
    assert sorted(p.name for p in folder.iterdir()) == expected

    class Boom:
        def __reduce__(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        torch_save({"x": Boom()}, folder / "x.pt")  # an existing file stays as it was
    with pytest.raises(TypeError, match="cannot store object"):
        write_json(folder / "j.json", {"bad": object()})
    assert sorted(p.name for p in folder.iterdir()) == expected
    assert torch.equal(torch.load(folder / "x.pt")["x"], torch.ones(2))


def test_run_record_contents(tmp_path):
    config = RunConfig(
        model="cdln", depth=3, n_inner=50, max_outer=6, alpha=[1.0, 2.0], device="cpu", snapshots=True, **TINY["mc"]
    )
    record = run(config, tmp_path / "run")
    loaded, curves = read_run_record(tmp_path / "run")
    assert loaded == json.loads(json.dumps(record, default=str))
    assert loaded["config"]["alpha"] == [1.0, 2.0] and loaded["config"]["task"] == "mc"
    problem = {k: loaded["problem"][k] for k in ("task", "d_out", "d_in", "rank", "data_seed", "p", "m")}
    assert problem == {"task": "mc", "d_out": 12, "d_in": 12, "rank": 2, "data_seed": 0, "p": 0.7, "m": None}
    assert loaded["parameters"] == {"model": 2 * 12 * 4 + 4 * 4, "original_dln": 3 * 12 * 12}
    assert [m["alpha"] for m in loaded["members"]] == [1.0, 2.0]
    assert [m["init_seed"] for m in loaded["members"]] == [0, 0]
    assert loaded["device"]["type"] == "cpu" and loaded["device"]["dtype"] == "float64"
    assert {"torch", "numpy", "python", "cdln"} <= set(loaded["environment"])
    assert loaded["timing"]["batch"] == 2 and loaded["timing"]["seconds"] > 0
    assert list(curves.columns[:5]) == ["member", "iteration", "seconds", "train_loss", "recovery_error"]
    assert {"model", "init_seed", "alpha"} <= set(curves.columns)
    assert set(curves.model) == {"cdln"} and list(curves.groupby("member").alpha.first()) == [1.0, 2.0]
    for member in loaded["members"]:
        last = curves[curves.member == member["member"]].iloc[-1]
        assert last.recovery_error == member["final_recovery_error"]
        assert last.iteration == member["stop_iteration"] == 300
    snapshots = read_snapshots(tmp_path / "run")
    assert list(snapshots["iteration"]) == list(range(0, 301, 50))


@pytest.mark.parametrize(
    "task,forced,expected",
    [
        ("mc", None, "native-dense"),  # p = 0.7: too dense to sample
        ("mc", "torch", "torch"),
        ("ms", None, "torch+native-one-pass"),
        ("ms", "torch", "torch+torch-two-pass"),  # torch everywhere, the operator pass included
    ],
)
def test_record_states_the_engine_path_its_seconds_were_measured_on(tmp_path, monkeypatch, task, forced, expected):
    if forced is not None:
        monkeypatch.setenv("CDLN_ENGINE", forced)
    record = run(RunConfig(model="cdln", depth=3, n_inner=5, max_outer=2, device="cpu", **TINY[task]))
    assert record["timing"]["engine_path"] == expected
