"""FashionMNIST: an IDX parser and a loader that finds the files or downloads them.

Search order: a directory the user configures; Debian's ``dataset-fashion-mnist`` package
(``/usr/share/datasets/fashion-mnist/``); ``resources/fashion-mnist/``; a download into
``resources/fashion-mnist/`` (MD5 of each file verified). Each file may be gzipped (``.gz``) or raw.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from cdln.data import DataFormatError, DataUnavailableError, download
from cdln.outputs import atomic_write

if TYPE_CHECKING:  # torch only where tensors are made: locating the files stays cheap
    import torch
    from torch import Tensor

DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
RESOURCES_SUBDIR = "fashion-mnist"
DOWNLOAD_BASE = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
# File stem -> MD5 of the published .gz file (Zalando's release; Debian recompresses, so its .gz differ).
FILES: dict[str, str] = {
    "train-images-idx3-ubyte": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte": "bb300cfdad3c16e7a12a480ee83cd310",
}
N_CLASSES = 10
IMAGE_SHAPE = (28, 28)

# IDX type codes -> big-endian numpy dtypes.
IDX_DTYPES: dict[int, str] = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def parse_idx(data: bytes, source: str) -> np.ndarray:
    """Parse IDX bytes: 2 zero bytes, a type code, the number of dims, dims as big-endian uint32, data.

    Raises :class:`DataFormatError` naming ``source`` for a bad magic number, an unknown type code
    or a payload whose size does not match the header.
    """
    if len(data) < 4:
        raise DataFormatError(f"{source}: too short for an IDX header ({len(data)} bytes)")
    if data[0] != 0 or data[1] != 0:
        raise DataFormatError(f"{source}: not an IDX file (magic starts {data[:2].hex()}, expected 0000)")
    code, n_dims = data[2], data[3]
    if code not in IDX_DTYPES:
        raise DataFormatError(f"{source}: unknown IDX type code 0x{code:02x}; valid: {[hex(c) for c in IDX_DTYPES]}")
    header = 4 + 4 * n_dims
    if len(data) < header:
        raise DataFormatError(f"{source}: header declares {n_dims} dims but the file has {len(data)} bytes")
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=n_dims, offset=4))
    dtype = np.dtype(IDX_DTYPES[code])
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(data) - header != expected:
        raise DataFormatError(
            f"{source}: header says shape {dims} ({expected} data bytes) but the file has {len(data) - header}"
        )
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file, gunzipping it when it starts with the gzip magic."""
    path = Path(path)
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as error:
            raise DataFormatError(f"{path}: corrupt gzip data ({error})") from None
    return parse_idx(raw, str(path))


def _find(directory: Path, stem: str) -> Path | None:
    for name in (stem + ".gz", stem):
        if (directory / name).is_file():
            return directory / name
    return None


def _complete(directory: Path) -> dict[str, Path] | None:
    found = {stem: _find(directory, stem) for stem in FILES}
    return None if any(path is None for path in found.values()) else found  # type: ignore[return-value]


def locate_fashion_mnist(
    data_dir: str | Path | None,
    resources: str | Path,
    debian_dir: str | Path = DEBIAN_DIR,
    allow_download: bool = True,
) -> dict[str, Path]:
    """The four IDX files (stem -> path), searched in the documented order.

    Raises :class:`DataUnavailableError` naming the missing files and where to put them.
    """
    if data_dir is not None:
        found = _complete(Path(data_dir))
        if found is None:
            missing = [s for s in FILES if _find(Path(data_dir), s) is None]
            raise DataUnavailableError(
                f"FashionMNIST directory {data_dir} (configured nonlinear.data_dir) lacks {missing} (.gz or raw)"
            )
        return found
    target = Path(resources) / RESOURCES_SUBDIR
    for directory in (Path(debian_dir), target):
        found = _complete(directory)
        if found is not None:
            return found
    hint = (
        f"FashionMNIST not found: install Debian's dataset-fashion-mnist (files in {debian_dir}), put the four "
        f"files {sorted(s + '.gz' for s in FILES)} in {target}, or set nonlinear.data_dir"
    )
    if not allow_download:
        raise DataUnavailableError(hint + " (download disabled)")
    try:
        return {
            stem: download(DOWNLOAD_BASE + stem + ".gz", target / (stem + ".gz"), md5) for stem, md5 in FILES.items()
        }
    except OSError as error:
        raise DataUnavailableError(f"{hint} (download failed: {error})") from None


@dataclass
class ImageData:
    """Images (n, 28, 28) uint8 and labels (n,) int64 of one split."""

    images: np.ndarray
    labels: np.ndarray


def load_split(images_path: Path, labels_path: Path) -> ImageData:
    """One split, checked: 3-d uint8 images, 1-d labels in 0..9, equal counts."""
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise DataFormatError(
            f"{images_path}: expected uint8 images of shape (n, h, w); got {images.dtype} {images.shape}"
        )
    if labels.ndim != 1:
        raise DataFormatError(f"{labels_path}: expected a 1-d label array; got shape {labels.shape}")
    if len(images) != len(labels):
        raise DataFormatError(f"{images_path} has {len(images)} images but {labels_path} has {len(labels)} labels")
    if labels.size and (labels.min() < 0 or labels.max() >= N_CLASSES):
        raise DataFormatError(
            f"{labels_path}: labels must lie in 0..{N_CLASSES - 1}; got {labels.min()}..{labels.max()}"
        )
    return ImageData(images, labels.astype(np.int64))


def load_fashion_mnist(files: dict[str, Path]) -> tuple[ImageData, ImageData]:
    """``(train, test)`` from the paths :func:`locate_fashion_mnist` returns."""
    train = load_split(files["train-images-idx3-ubyte"], files["train-labels-idx1-ubyte"])
    test = load_split(files["t10k-images-idx3-ubyte"], files["t10k-labels-idx1-ubyte"])
    return train, test


def to_tensors(
    train: ImageData, test: ImageData, device: torch.device, dtype: torch.dtype
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Flattened images standardised with the training mean/std: x_train (n, 784), y_train (n,), x_test, y_test."""
    import torch

    x_train = torch.from_numpy(train.images.reshape(len(train.images), -1)).to(torch.float64) / 255.0
    x_test = torch.from_numpy(test.images.reshape(len(test.images), -1)).to(torch.float64) / 255.0
    mean, std = x_train.mean(), x_train.std()
    scale = lambda x: ((x - mean) / std).to(device=device, dtype=dtype)  # noqa: E731
    return (
        scale(x_train),
        torch.from_numpy(train.labels).to(device),
        scale(x_test),
        torch.from_numpy(test.labels).to(device),
    )


def write_idx(path: str | Path, array: np.ndarray) -> Path:
    """Write ``array`` as an IDX file (gzipped when ``path`` ends in .gz); the inverse of :func:`read_idx`."""
    codes = {np.dtype(v).newbyteorder("="): k for k, v in IDX_DTYPES.items()}
    array = np.asarray(array)
    code = codes.get(array.dtype.newbyteorder("="))
    if code is None:
        raise ValueError(f"IDX cannot store dtype {array.dtype}; valid: {sorted(str(d) for d in codes)}")
    header = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    payload = header + array.astype(np.dtype(IDX_DTYPES[code])).tobytes()
    data = gzip.compress(payload, mtime=0) if Path(path).suffix == ".gz" else payload
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


def synthetic_fashion_mnist(
    directory: str | Path, n_train: int = 2000, n_test: int = 500, seed: int = 0
) -> dict[str, Path]:
    """Write a small stand-in data set in the FashionMNIST file format (NOT FashionMNIST).

    Each class is a random smooth 28 x 28 prototype; images are noisy, randomly shifted copies,
    so a classifier can learn them but not perfectly. For the reduced CI grid and the tests.
    """
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0, 1, size=(N_CLASSES, 7, 7))
    prototypes = np.kron(coarse, np.ones((4, 4)))  # (10, 28, 28), blocky shapes

    def draw(n: int) -> tuple[np.ndarray, np.ndarray]:
        labels = rng.integers(0, N_CLASSES, size=n)
        shifts = rng.integers(-2, 3, size=(n, 2))
        images = np.stack([np.roll(prototypes[c], tuple(s), axis=(0, 1)) for c, s in zip(labels, shifts, strict=True)])
        images = np.clip(images + rng.normal(0, 0.35, size=images.shape), 0, 1)
        return (images * 255).astype(np.uint8), labels.astype(np.uint8)

    directory = Path(directory)
    train_x, train_y = draw(n_train)
    test_x, test_y = draw(n_test)
    arrays = {
        "train-images-idx3-ubyte": train_x,
        "train-labels-idx1-ubyte": train_y,
        "t10k-images-idx3-ubyte": test_x,
        "t10k-labels-idx1-ubyte": test_y,
    }
    return {stem: write_idx(directory / f"{stem}.gz", array) for stem, array in arrays.items()}
