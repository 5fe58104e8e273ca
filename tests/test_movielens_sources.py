"""Where the MovieLens-100K ratings come from: every source, in order, each checked against the one content
checksum of u.data; small planted files only, never the network (pip runs against a local folder)."""

from __future__ import annotations

import dataclasses
import hashlib
import zipfile
from pathlib import Path

import pytest

from cdln.cli import main
from cdln.data import DataFormatError, DataUnavailableError
from cdln.data import movielens_sources as src
from cdln.pipeline.targets import missing_real_data

GOOD = b"1\t10\t5\t881250949\n2\t10\t3\t891717742\n943\t1682\t1\t875747190\n"
CHANGED = GOOD.replace(b"2\t10\t3", b"2\t10\t4")  # one rating changed


@pytest.fixture(autouse=True)
def planted_ratings(monkeypatch):
    """GOOD plays MovieLens-100K: its MD5 is the one every source is checked against."""
    monkeypatch.setattr(src, "RATINGS_MD5", hashlib.md5(GOOD).hexdigest())


def write_zip(path: Path, data: bytes, member: str = src.RATINGS_MEMBER) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(member, data)
    return path


def write_wheel(folder: Path, data: bytes, header: bytes = src.RATINGS_WHEEL.header) -> Path:
    """A wheel pip accepts as recbole 1.2.1, carrying ``data`` where the real one carries the ratings."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / src.RATINGS_WHEEL.filename
    with zipfile.ZipFile(path, "w") as wheel:
        wheel.writestr(src.RATINGS_WHEEL.member, header + data)
        wheel.writestr("recbole-1.2.1.dist-info/METADATA", "Metadata-Version: 2.1\nName: recbole\nVersion: 1.2.1\n")
        wheel.writestr(
            "recbole-1.2.1.dist-info/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        )
        wheel.writestr("recbole-1.2.1.dist-info/RECORD", "")
    return path


def a_local_index(monkeypatch, folder: Path, wheel: Path | None) -> None:
    """pip finds packages in ``folder`` only (no network); the pinned SHA-256 is that of ``wheel``."""
    monkeypatch.delenv("CDLN_OFFLINE")
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(folder))
    monkeypatch.setattr(src, "ML100K_URL", (folder / "grouplens-unreachable.zip").as_uri())
    if wheel is not None:
        pinned = hashlib.sha256(wheel.read_bytes()).hexdigest()
        monkeypatch.setattr(src, "RATINGS_WHEEL", dataclasses.replace(src.RATINGS_WHEEL, sha256=pinned))


# ---- each source, in order ----


def test_a_configured_zip_or_u_data_comes_first(tmp_path):
    resources = tmp_path / "resources"
    write_zip(resources / "ml-100k.zip", CHANGED)  # never read: the configured path wins
    configured = write_zip(tmp_path / "mine.zip", GOOD)
    assert src.find_ratings(configured, resources).source == str(configured)
    plain = tmp_path / "u.data"
    plain.write_bytes(GOOD)
    found = src.find_ratings(plain, resources)
    assert found.data == GOOD and found.official and found.provenance()["u_data_md5"] == src.RATINGS_MD5
    with pytest.raises(DataUnavailableError, match=r"nope\.zip \(configured movielens.zip_path\) do not exist"):
        src.find_ratings(tmp_path / "nope.zip", resources)


def test_then_resources_zip_then_the_copy_a_fetch_left(tmp_path):
    resources = tmp_path / "resources"
    cache = resources / src.RATINGS_CACHE
    cache.parent.mkdir(parents=True)
    cache.write_bytes(GOOD)
    assert src.find_ratings(None, resources, allow_download=False).source == str(cache)
    write_zip(resources / "ml-100k.zip", GOOD)
    assert src.find_ratings(None, resources, allow_download=False).source == str(resources / "ml-100k.zip")


def test_then_grouplens(tmp_path, monkeypatch):
    index = tmp_path / "index"
    a_local_index(monkeypatch, index, None)
    archive = write_zip(index / "ml-100k.zip", GOOD)
    monkeypatch.setattr(src, "ML100K_URL", archive.as_uri())
    monkeypatch.setattr(src, "ML100K_MD5", hashlib.md5(archive.read_bytes()).hexdigest())
    resources = tmp_path / "resources"
    found = src.find_ratings(None, resources)
    assert (
        found.official
        and "kept in" in found.source
        and (resources / "ml-100k.zip").read_bytes() == archive.read_bytes()
    )


def test_then_the_pinned_wheel_from_the_package_index(tmp_path, monkeypatch):
    index = tmp_path / "index"
    a_local_index(monkeypatch, index, write_wheel(index, GOOD))
    resources = tmp_path / "resources"
    found = src.find_ratings(None, resources)
    assert found.official and found.data == GOOD and found.source.startswith("recbole==1.2.1 from the package index")
    assert (resources / src.RATINGS_CACHE).read_bytes() == GOOD  # read first next time, no second fetch
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "empty"))
    assert src.find_ratings(None, resources).source == str(resources / src.RATINGS_CACHE)


def test_no_source_names_what_each_gave(tmp_path, monkeypatch):
    with pytest.raises(DataUnavailableError) as error:
        src.find_ratings(None, tmp_path / "resources")  # the tests run with CDLN_OFFLINE=1
    assert "GroupLens: downloads are off" in str(error.value) and "the package index: downloads are off" in str(
        error.value
    )
    a_local_index(monkeypatch, tmp_path / "index", None)
    with pytest.raises(DataUnavailableError, match="pip download recbole==1.2.1 failed"):
        src.find_ratings(None, tmp_path / "resources")
    assert not (tmp_path / "resources" / src.RATINGS_CACHE).exists()


# ---- a changed or broken source is refused, by name, by every path ----


@pytest.mark.parametrize("where", ["configured zip", "configured u.data", "resources zip", "resources copy",
                                   "grouplens", "wheel"])  # fmt: skip
def test_a_changed_rating_is_refused_by_every_source(tmp_path, monkeypatch, capsys, where):
    resources, index = tmp_path / "resources", tmp_path / "index"
    configured = None
    if where == "configured zip":
        configured = write_zip(tmp_path / "mine.zip", CHANGED)
    elif where == "configured u.data":
        configured = tmp_path / "u.data"
        configured.write_bytes(CHANGED)
    elif where == "resources zip":
        write_zip(resources / "ml-100k.zip", CHANGED)
    elif where == "resources copy":
        (resources / "ml-100k").mkdir(parents=True)
        (resources / src.RATINGS_CACHE).write_bytes(CHANGED)
    elif where == "grouplens":
        a_local_index(monkeypatch, index, None)
        archive = write_zip(index / "ml-100k.zip", CHANGED)
        monkeypatch.setattr(src, "ML100K_URL", archive.as_uri())
        monkeypatch.setattr(src, "ML100K_MD5", hashlib.md5(archive.read_bytes()).hexdigest())
    else:
        a_local_index(monkeypatch, index, write_wheel(index, CHANGED))
    args = ["movielens-problem", "--out", str(tmp_path / "p.pt"), "--resources", str(resources)]
    assert main([*args, *(["--zip-path", str(configured)] if configured else [])]) == 5
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "not MovieLens-100K's" in lines[0] and "refused" in lines[0], lines
    assert not (tmp_path / "p.pt").exists()
    if where in ("grouplens", "wheel"):  # a fetch that fails its check leaves nothing behind
        assert not resources.exists()


def test_a_truncated_archive_or_a_wheel_of_another_checksum_is_refused_by_name(tmp_path, monkeypatch):
    resources = tmp_path / "resources"
    archive = write_zip(resources / "ml-100k.zip", GOOD)
    archive.write_bytes(archive.read_bytes()[:40])
    with pytest.raises(DataFormatError, match=r"ml-100k\.zip is not a readable zip archive"):
        src.find_ratings(None, resources)
    index = tmp_path / "index"
    a_local_index(monkeypatch, index, None)
    write_wheel(index, GOOD)  # the pinned SHA-256 stays the real wheel's: this one is not it
    with pytest.raises(DataFormatError, match="has SHA-256 .* not the pinned 9c99482"):
        src.find_ratings(None, tmp_path / "other-resources")
    assert not (tmp_path / "other-resources").exists()  # nothing half-written


def test_other_ratings_on_purpose_are_used_and_recorded_as_such(tmp_path, capsys):
    configured = write_zip(tmp_path / "mine.zip", CHANGED)
    found = src.find_ratings(configured, tmp_path, accept_other=True)
    assert not found.official and found.provenance()["dataset"].startswith("not MovieLens-100K")
    assert "used as other ratings, recorded as not MovieLens-100K" in capsys.readouterr().err


# ---- the pipeline asks while planning ----


def test_planning_fetches_missing_ratings_once_and_says_from_where(tmp_path, monkeypatch):
    index = tmp_path / "index"
    a_local_index(monkeypatch, index, write_wheel(index, GOOD))
    resources = str(tmp_path / "resources")
    section = {"download": True}
    assert missing_real_data("movielens", section, resources, fetch=False)[0] is not None  # jobs never fetch
    reason, note = missing_real_data("movielens", section, resources, fetch=True)
    assert reason is None and "fetched: recbole==1.2.1 from the package index" in note
    assert missing_real_data("movielens", section, resources, fetch=False) == (None, None)  # found on disk now
    assert "downloads off" in missing_real_data("movielens", {"download": False}, str(tmp_path / "r2"), fetch=True)[0]
