"""FashionMNIST: the IDX parser (on files the tests write) and the search order of the loader."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from cdln.cli import main
from cdln.data import DataFormatError, DataUnavailableError
from cdln.data import fashion_mnist as fm


def idx_bytes(code: int, shape: tuple[int, ...], payload: bytes) -> bytes:
    return bytes([0, 0, code, len(shape)]) + np.asarray(shape, dtype=">u4").tobytes() + payload


def test_parse_hand_written_ubyte_file():
    data = idx_bytes(0x08, (2, 3), bytes([0, 1, 2, 253, 254, 255]))
    array = fm.parse_idx(data, "x")
    assert array.dtype == np.uint8 and array.tolist() == [[0, 1, 2], [253, 254, 255]]


def test_parse_big_endian_int32():
    data = idx_bytes(0x0C, (2,), np.array([1, -2], dtype=">i4").tobytes())
    assert fm.parse_idx(data, "x").tolist() == [1, -2]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x00\x00", "too short"),
        (b"\x01\x00\x08\x01" + b"\x00\x00\x00\x01" + b"\x00", "not an IDX file"),
        (b"\x00\x00\x07\x01" + b"\x00\x00\x00\x01" + b"\x00", "unknown IDX type code 0x07"),
        (b"\x00\x00\x08\x03" + b"\x00\x00\x00\x01", "header declares 3 dims"),
        (idx_bytes(0x08, (2, 2), b"\x00\x01\x02"), r"shape \(2, 2\) \(4 data bytes\) but the file has 3"),
    ],
)
def test_parse_rejects_malformed_files(data, message):
    with pytest.raises(DataFormatError, match=message):
        fm.parse_idx(data, "bad.idx")


@pytest.mark.parametrize("name", ["a.idx", "a.idx.gz"])
@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.float32, np.float64])
def test_write_read_round_trip(tmp_path, name, dtype):
    array = (np.arange(24).reshape(2, 3, 4) * 3).astype(dtype)
    path = fm.write_idx(tmp_path / name, array)
    assert (path.read_bytes()[:2] == b"\x1f\x8b") == name.endswith(".gz")
    back = fm.read_idx(path)
    assert back.dtype == np.dtype(dtype) and np.array_equal(back, array)


def test_corrupt_gzip_is_reported(tmp_path):
    path = tmp_path / "x.gz"
    path.write_bytes(gzip.compress(idx_bytes(0x08, (4,), b"\x00" * 4))[:-6])
    with pytest.raises(DataFormatError, match="corrupt gzip"):
        fm.read_idx(path)


def write_set(directory: Path, n_train: int = 6, n_test: int = 4, gz: bool = True) -> None:
    rng = np.random.default_rng(0)
    suffix = ".gz" if gz else ""
    fm.write_idx(
        directory / f"train-images-idx3-ubyte{suffix}", rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8)
    )
    fm.write_idx(directory / f"train-labels-idx1-ubyte{suffix}", (np.arange(n_train) % 10).astype(np.uint8))
    fm.write_idx(directory / f"t10k-images-idx3-ubyte{suffix}", rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8))
    fm.write_idx(directory / f"t10k-labels-idx1-ubyte{suffix}", (np.arange(n_test) % 10).astype(np.uint8))


def test_loads_raw_or_gz_and_checks_labels_and_counts(tmp_path):
    write_set(tmp_path / "raw", gz=False)
    train, test = fm.load_fashion_mnist(fm.locate_fashion_mnist(tmp_path / "raw", tmp_path, allow_download=False))
    assert train.images.shape == (6, 28, 28) and test.labels.tolist() == [0, 1, 2, 3]
    write_set(tmp_path / "bad")
    fm.write_idx(tmp_path / "bad" / "t10k-labels-idx1-ubyte.gz", np.array([0, 1, 2, 10], dtype=np.uint8))
    with pytest.raises(DataFormatError, match=r"labels must lie in 0..9; got 0..10"):
        fm.load_fashion_mnist(fm.locate_fashion_mnist(tmp_path / "bad", tmp_path, allow_download=False))
    fm.write_idx(tmp_path / "bad" / "t10k-labels-idx1-ubyte.gz", np.array([0, 1, 2], dtype=np.uint8))
    with pytest.raises(DataFormatError, match="has 4 images but .* has 3 labels"):
        fm.load_fashion_mnist(fm.locate_fashion_mnist(tmp_path / "bad", tmp_path, allow_download=False))


def test_search_order_configured_then_debian_then_resources(tmp_path):
    configured, debian, resources = tmp_path / "mine", tmp_path / "debian", tmp_path / "resources"
    for directory in (configured, debian, resources / "fashion-mnist"):
        write_set(directory)
    find = fm.locate_fashion_mnist
    assert find(configured, resources, debian, allow_download=False)["train-images-idx3-ubyte"].parent == configured
    assert find(None, resources, debian, allow_download=False)["train-images-idx3-ubyte"].parent == debian
    empty = tmp_path / "empty"
    found = find(None, resources, empty, allow_download=False)
    assert found["t10k-labels-idx1-ubyte"].parent == resources / "fashion-mnist"


def test_incomplete_configured_dir_names_the_missing_files(tmp_path):
    write_set(tmp_path / "d")
    (tmp_path / "d" / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataUnavailableError, match=r"lacks \['t10k-labels-idx1-ubyte'\]"):
        fm.locate_fashion_mnist(tmp_path / "d", tmp_path)


def test_nothing_found_and_no_network_says_where_to_put_the_files(tmp_path, monkeypatch):
    with pytest.raises(DataUnavailableError, match="download disabled") as error:
        fm.locate_fashion_mnist(None, tmp_path / "res", tmp_path / "nodebian", allow_download=False)
    assert str(tmp_path / "res" / "fashion-mnist") in str(error.value)
    assert "dataset-fashion-mnist" in str(error.value)

    def offline(url, dest, md5):
        raise OSError("no route")

    monkeypatch.setattr(fm, "download", offline)
    with pytest.raises(DataUnavailableError, match="download failed: no route"):
        fm.locate_fashion_mnist(None, tmp_path / "res", tmp_path / "nodebian")


def test_synthetic_set_is_learnable_format(tmp_path):
    files = fm.synthetic_fashion_mnist(tmp_path, n_train=50, n_test=20, seed=1)
    train, test = fm.load_fashion_mnist(files)
    assert train.images.shape == (50, 28, 28) and test.images.dtype == np.uint8
    assert set(train.labels) <= set(range(10))


@pytest.mark.skipif(not fm.DEBIAN_DIR.is_dir(), reason="Debian package dataset-fashion-mnist not installed")
def test_debian_package_is_the_standard_split():
    files = fm.locate_fashion_mnist(None, "resources", allow_download=False)
    train, test = fm.load_fashion_mnist(files)
    assert train.images.shape == (60_000, 28, 28) and test.images.shape == (10_000, 28, 28)
    assert np.bincount(train.labels).tolist() == [6000] * 10
    assert np.bincount(test.labels).tolist() == [1000] * 10


def test_cli_without_data_exits_4(tmp_path, capsys):
    code = main(["nonlinear", "--out", str(tmp_path / "run"), "--data-dir", str(tmp_path / "none"), "--no-download"])
    assert code == 4
    assert "configured nonlinear.data_dir" in capsys.readouterr().err
