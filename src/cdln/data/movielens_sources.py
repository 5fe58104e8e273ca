"""Where the MovieLens-100K ratings come from, and the check that they are MovieLens-100K's (no torch here: the
pipeline asks it while planning).

The GroupLens licence forbids redistribution: the ratings are never part of the project. They are taken, in
this order, from a path the user configures; ``resources/ml-100k.zip``; ``resources/ml-100k/u.data`` (the copy
a fetch leaves); a download from GroupLens; the pinned wheel ``recbole==1.2.1`` on the package index, which
carries the same ratings (fetched with ``pip download --no-deps``, its SHA-256 checked). Whatever the source,
the ratings are checked against one content checksum, the MD5 of ``u.data`` itself; ratings with another
checksum are refused unless the caller accepts other ratings (a stand-in, or a user's own data), and are then
recorded as not MovieLens-100K.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from cdln.data import OFFLINE_VARIABLE, DataFormatError, DataUnavailableError, download, offline
from cdln.outputs import atomic_write, copy_file

ML100K_URL = "https://files.grouplens.org/datasets/movielens/ml-100k.zip"
ML100K_MD5 = "0e33842e24a9c977be4e0107933c0723"  # of the archive, published by GroupLens (ml-100k.zip.md5)
ML100K_FILE = "ml-100k.zip"
RATINGS_MEMBER = "ml-100k/u.data"
RATINGS_CACHE = "ml-100k/u.data"  # under resources/: the verified ratings a fetch leaves, read first next time
# The ratings themselves: the MD5 of u.data (1,979,173 bytes, 100,000 lines), the same in GroupLens' archive
# and in the wheel below; every source is checked against it.
RATINGS_MD5 = "6e47046882bad158b0efbb84cd5cb987"


@dataclass(frozen=True)
class PinnedWheel:
    """A wheel on the package index that carries the ratings: its requirement, SHA-256, member and header."""

    requirement: str
    filename: str
    sha256: str
    member: str
    header: bytes


RATINGS_WHEEL = PinnedWheel(
    "recbole==1.2.1",
    "recbole-1.2.1-py3-none-any.whl",
    "9c9948202011f37eb0a7c6768129313f00d6403ad221ec940d5e2d5d5f33a407",
    "recbole/dataset_example/ml-100k/ml-100k.inter",
    b"user_id:token\titem_id:token\trating:float\ttimestamp:float\n",
)


@dataclass(frozen=True)
class RatingsFile:
    """The ``u.data`` bytes, where they came from, their MD5, and whether they are MovieLens-100K's."""

    data: bytes
    source: str
    md5: str
    official: bool

    def provenance(self) -> dict[str, object]:
        """What a problem file and its run records keep of the ratings."""
        dataset = "MovieLens-100K" if self.official else "not MovieLens-100K (other ratings, accepted on purpose)"
        return {"dataset": dataset, "source": self.source, "u_data_md5": self.md5, "official": self.official}


def _md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def read_ratings_bytes(path: str | Path) -> bytes:
    """The ``u.data`` bytes a file holds: an ``ml-100k.zip`` (its ``ml-100k/u.data``), the pinned wheel (its
    ratings without their header line), or ``u.data`` itself. Raises :class:`DataFormatError` naming the file."""
    path = Path(path)
    if not path.is_file():
        raise DataUnavailableError(f"MovieLens ratings {path} do not exist")
    if not zipfile.is_zipfile(path):
        if path.suffix.lower() in (".zip", ".whl"):
            raise DataFormatError(f"{path} is not a readable zip archive (truncated or corrupt); remove it")
        return path.read_bytes()
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            if RATINGS_WHEEL.member in names:
                raw = archive.read(RATINGS_WHEEL.member)
                if not raw.startswith(RATINGS_WHEEL.header):
                    raise DataFormatError(f"{path}:{RATINGS_WHEEL.member} lacks its header line; is it the wheel?")
                return raw[len(RATINGS_WHEEL.header) :]
            if RATINGS_MEMBER in names:
                return archive.read(RATINGS_MEMBER)
    except (zipfile.BadZipFile, OSError, EOFError) as error:
        raise DataFormatError(f"{path} is not a readable zip archive ({error}); remove it") from None
    raise DataFormatError(f"{path} has no {RATINGS_MEMBER}; is it the MovieLens-100K archive?")


def verify_ratings(data: bytes, source: str, accept_other: bool = False) -> RatingsFile:
    """Check ``data`` against MovieLens-100K's checksum. Other ratings raise :class:`DataFormatError` naming the
    source, or with ``accept_other`` are returned marked as not MovieLens-100K (and a warning is printed)."""
    digest = _md5(data)
    official = digest == RATINGS_MD5
    if not official:
        what = f"{source}: its u.data has MD5 {digest}, not MovieLens-100K's ({RATINGS_MD5})"
        if not accept_other:
            raise DataFormatError(
                f"{what}; refused (a changed or truncated copy?): remove it, or accept other ratings on purpose "
                "(movielens.accept_other_ratings: true, or --accept-other-ratings)"
            )
        print(f"warning: {what}; used as other ratings, recorded as not MovieLens-100K", file=sys.stderr)
    return RatingsFile(data, source, digest, official)


def fetch_wheel(folder: Path, wheel: PinnedWheel = RATINGS_WHEEL, timeout: float = 120.0) -> Path:
    """``pip download --no-deps`` the pinned wheel into ``folder``; the user's pip settings apply (an index
    mirror; ``PIP_NO_INDEX`` with ``PIP_FIND_LINKS``). Raises ``OSError`` saying why it failed."""
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--quiet",
               "--disable-pip-version-check", "--retries", "1", "--timeout", "15", "--dest", str(folder),
               wheel.requirement]  # fmt: skip
    if offline():
        raise OSError(f"downloads are off ({OFFLINE_VARIABLE}={os.environ[OFFLINE_VARIABLE]})")
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise OSError(f"pip download {wheel.requirement}: {error}") from None
    path = folder / wheel.filename
    if done.returncode != 0 or not path.is_file():
        reason = " ".join(done.stderr.split())[-300:] or f"exit status {done.returncode}"
        raise OSError(f"pip download {wheel.requirement} failed: {reason}")
    return path


def _from_wheel(resources: Path, accept_other: bool) -> RatingsFile:
    source = f"{RATINGS_WHEEL.requirement} from the package index"
    with tempfile.TemporaryDirectory(prefix="cdln-wheel-") as folder:
        path = fetch_wheel(Path(folder))
        with path.open("rb") as handle:
            digest = hashlib.file_digest(handle, "sha256").hexdigest()
        if digest != RATINGS_WHEEL.sha256:
            raise DataFormatError(f"{source}: {path.name} has SHA-256 {digest}, not the pinned {RATINGS_WHEEL.sha256}")
        ratings = verify_ratings(read_ratings_bytes(path), source, accept_other)
    cache = resources / RATINGS_CACHE
    atomic_write(cache, lambda tmp: tmp.write_bytes(ratings.data))
    return RatingsFile(ratings.data, f"{source} (kept in {cache})", ratings.md5, ratings.official)


def _from_grouplens(resources: Path, accept_other: bool) -> RatingsFile:
    with tempfile.TemporaryDirectory(prefix="cdln-grouplens-") as folder:
        path = download(ML100K_URL, Path(folder) / ML100K_FILE, ML100K_MD5, timeout=20.0)
        ratings = verify_ratings(read_ratings_bytes(path), ML100K_URL, accept_other)
        kept = copy_file(path, resources / ML100K_FILE)  # only once verified
    return RatingsFile(ratings.data, f"{ML100K_URL} (kept in {kept})", ratings.md5, ratings.official)


def local_sources(zip_path: str | Path | None, resources: str | Path) -> list[Path]:
    """The files :func:`find_ratings` reads before any download, in its order (existing or not)."""
    resources = Path(resources)
    return [Path(zip_path)] if zip_path is not None else [resources / ML100K_FILE, resources / RATINGS_CACHE]


def find_ratings(
    zip_path: str | Path | None,
    resources: str | Path,
    allow_download: bool = True,
    accept_other: bool = False,
) -> RatingsFile:
    """The MovieLens-100K ratings from the first source that has them (module docstring), verified.

    A configured path must hold them; a local file that is there but wrong raises :class:`DataFormatError` naming
    it; a download that fails is passed over for the next source. Raises :class:`DataUnavailableError` saying what
    each source gave when none has them."""
    resources = Path(resources)
    if zip_path is not None:
        path = Path(zip_path)
        if not path.is_file():
            raise DataUnavailableError(
                f"MovieLens ratings {path} (configured movielens.zip_path) do not exist; put ml-100k.zip there, or "
                f"set movielens.zip_path: null to use {resources / ML100K_FILE} or a download"
            )
        return verify_ratings(read_ratings_bytes(path), str(path), accept_other)
    for path in local_sources(None, resources):
        if path.is_file():
            return verify_ratings(read_ratings_bytes(path), str(path), accept_other)
    hint = (
        f"MovieLens-100K not found: put ml-100k.zip (from {ML100K_URL}) at {resources / ML100K_FILE} or set "
        "movielens.zip_path; its licence forbids shipping it with this project"
    )
    if not allow_download:
        raise DataUnavailableError(f"{hint} (download disabled)")
    failures = []
    for name, fetch in (("GroupLens", _from_grouplens), ("the package index", _from_wheel)):
        try:
            return fetch(resources, accept_other)
        except OSError as error:
            failures.append(f"{name}: {' '.join(str(error).split())[:200]}")
    raise DataUnavailableError(f"{hint}; tried {'; '.join(failures)}")
