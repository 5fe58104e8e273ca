"""What cdln writes: every file appears whole or not at all, and only over what cdln itself wrote.

**Atomic.** A file or folder is written to a hidden temporary sibling (``.<name>.XXXX.partial``) and renamed into
place; on any failure, interrupts included, the temporary is removed and what was at the path stays as it was.
What appears has the permissions the umask gives (0644 files and 0755 folders under umask 022).

**Only over cdln's own files.** Every folder cdln writes into holds a ledger, ``.cdln-written.json``: the relative
path, size and SHA-256 of each file cdln wrote there. An existing file is replaced only when a ledger names it with
its current content, so a user's file of the same name, or one the user has edited, is refused. An existing folder
is replaced whole only when it holds exactly what its ledgers name (or nothing). A folder that also holds other
files is refused, or with ``force`` written into: cdln's earlier files there are replaced, every other file is left
as it is, and a user's file at a path cdln would write is still refused. cdln never removes a file it did not write.

**One writer at a time.** A folder being written is claimed by a lock file beside it (``.<name>.cdln-lock``,
holding the writer's process id) from the check to the final rename; a second writer fails at once.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd

LEDGER = ".cdln-written.json"
LOCK_SUFFIX = ".cdln-lock"
PARTIAL_SUFFIX = ".partial"


class OutputError(ValueError):
    """An output path that cannot be written without losing something; the message says what to do."""


# ---- permissions ----


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def public_mode(path: Path, directory: bool = False) -> None:
    """Give ``path`` the mode a plain ``open``/``mkdir`` would (0666 / 0777 less the umask)."""
    os.chmod(path, (0o777 if directory else 0o666) & ~_umask())


# ---- the ledger: which files cdln wrote ----


def sha256(path: str | os.PathLike[str], chunk: int = 1 << 22) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def _entry(path: Path) -> dict[str, Any]:
    stat = path.stat()
    return {"bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": sha256(path)}


def read_ledger(folder: Path) -> dict[str, dict[str, Any]]:
    """Relative path -> {bytes, mtime_ns, sha256} of the files cdln wrote in ``folder`` ({} without a ledger; an
    unreadable ledger vouches for nothing)."""
    try:
        entries = json.loads((folder / LEDGER).read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(entries, dict) or not all(isinstance(v, dict) for v in entries.values()):
        return {}
    return entries


def _write_ledger(folder: Path, entries: dict[str, dict[str, Any]]) -> None:
    fd, name = tempfile.mkstemp(dir=folder, prefix=f"{LEDGER}.", suffix=PARTIAL_SUFFIX)
    with os.fdopen(fd, "w") as handle:
        json.dump(entries, handle, indent=1, sort_keys=True)
        handle.write("\n")
    public_mode(Path(name))
    os.replace(name, folder / LEDGER)


def _vouched(path: Path, entry: dict[str, Any] | None) -> bool:
    """Whether ``path`` is a plain file with the size and content ``entry`` records."""
    if entry is None or path.is_symlink() or not path.is_file():
        return False
    return path.stat().st_size == entry.get("bytes") and sha256(path) == entry.get("sha256")


def _ours_by_name(name: str) -> bool:
    """cdln's own bookkeeping: ledgers and the lock files of writers."""
    return name == LEDGER or (name.startswith(".") and name.endswith(LOCK_SUFFIX))


def written_by_cdln(path: str | os.PathLike[str]) -> bool:
    """Whether the ledger of the file's folder names it with its current content."""
    path = Path(path)
    return _vouched(path, read_ledger(path.parent).get(path.name))


def foreign_files(folder: str | os.PathLike[str]) -> list[str]:
    """The files (and empty folders, as ``name/``) under ``folder`` that no ledger there vouches for, as relative
    paths, sorted. A file is vouched for by the ledger of its own folder or of any folder above it up to
    ``folder``. Links are never followed, and count as foreign."""
    folder = Path(folder)
    ledgers: dict[Path, dict[str, dict[str, Any]]] = {}
    foreign = []
    for current, dirs, files in os.walk(folder):
        here = Path(current)
        ledgers[here] = read_ledger(here)
        if here != folder and not dirs and not files:
            foreign.append(f"{here.relative_to(folder).as_posix()}/")
        for name in files + [d for d in dirs if (here / d).is_symlink()]:
            if _ours_by_name(name):
                continue
            rel = (here / name).relative_to(folder)
            owners = [folder / above for above in rel.parents]  # its own folder first, then each one above
            if not any(_vouched(here / name, ledgers[owner].get(rel.relative_to(above).as_posix()))
                       for owner, above in zip(owners, rel.parents, strict=True)):  # fmt: skip
                foreign.append(rel.as_posix())
    return sorted(foreign)


def _listing(names: list[str], most: int = 3) -> str:
    shown = ", ".join(names[:most])
    return shown + (f" and {len(names) - most} more" if len(names) > most else "")


# ---- one writer at a time ----


def _make_parent(path: Path) -> list[Path]:
    """Make ``path``'s folder; returns the folders this made, deepest first."""
    created = [folder for folder in [path.parent, *path.parent.parents] if not folder.exists()]
    path.parent.mkdir(parents=True, exist_ok=True)
    return created


def _remove_if_empty(folders: list[Path]) -> None:
    """The folders made for an output that never came: gone again when left empty."""
    for folder in folders:
        with contextlib.suppress(OSError):
            folder.rmdir()


@contextmanager
def claimed(path: str | os.PathLike[str], what: str = "--out") -> Iterator[None]:
    """Hold the lock of output ``path`` (a lock file beside it) for the duration; a second writer gets an
    :class:`OutputError` at once, naming the first's process id."""
    path = Path(path)
    created = _make_parent(path)
    lock = path.parent / f".{path.name}{LOCK_SUFFIX}"
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
            os.close(fd)
            if error.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            by = f" (process {holder})" if holder else ""
            raise OutputError(
                f"{what} {path} is being written by another cdln run{by}; wait for it to finish or name another"
            ) from None
        try:  # its last holder may have removed the lock file between our open and our lock: take a fresh one
            current = os.stat(lock).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            current = False
        if current:
            break
        os.close(fd)
    os.ftruncate(fd, 0)
    os.write(fd, str(os.getpid()).encode())
    try:
        yield
    except BaseException:
        lock.unlink(missing_ok=True)
        _remove_if_empty(created)
        raise
    finally:
        lock.unlink(missing_ok=True)
        os.close(fd)


@contextmanager
def _folder_locked(folder: Path) -> Iterator[None]:
    """A short exclusive lock on ``folder`` itself while its ledger is read and rewritten."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


# ---- files ----


def check_output_file(path: str | os.PathLike[str], what: str = "--out") -> Path:
    """Raise :class:`OutputError` unless ``path`` can be written without losing anything: it does not exist, or
    cdln wrote it (its folder's ledger names it with its current content). Call it before the work."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{what} {path} is a folder; name a file to write")
    if (path.exists() or path.is_symlink()) and not written_by_cdln(path):
        raise OutputError(
            f"{what} {path} exists and was not written by cdln (or was changed since); "
            "move it away or name another file: cdln never overwrites a file it did not write"
        )
    return path


def atomic_write(path: str | os.PathLike[str], write: Callable[[Path], None], what: str = "output") -> Path:
    """Call ``write(tmp)`` on a temporary sibling of ``path``, then rename it to ``path`` and record it in the
    folder's ledger. An existing ``path`` that cdln did not write is refused (:func:`check_output_file`)."""
    path = check_output_file(path, what)
    created = _make_parent(path)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=PARTIAL_SUFFIX)
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        public_mode(tmp)
        entry = _entry(tmp)
        with _folder_locked(path.parent):
            check_output_file(path, what)  # again: another process may have put a file there meanwhile
            os.replace(tmp, path)
            entries = {k: v for k, v in read_ledger(path.parent).items() if (path.parent / k).exists()}
            _write_ledger(path.parent, {**entries, path.name: entry})
    except BaseException:
        tmp.unlink(missing_ok=True)
        _remove_if_empty(created)
        raise
    return path


def write_text(path: str | os.PathLike[str], text: str, what: str = "output") -> Path:
    """``text`` to ``path``, atomically."""
    return atomic_write(path, lambda tmp: tmp.write_text(text), what)


def write_json(path: str | os.PathLike[str], value: Any, what: str = "output") -> Path:
    """``value`` as indented, key-sorted JSON (numpy scalars, paths and torch types allowed), atomically."""
    return write_text(path, json.dumps(value, indent=2, sort_keys=True, default=json_default) + "\n", what)


def write_csv(
    path: str | os.PathLike[str], frame: pd.DataFrame, float_format: str = "%.10g", what: str = "output"
) -> Path:
    """``frame`` as CSV without its index, atomically."""
    return write_text(path, frame.to_csv(index=False, float_format=float_format), what)


def copy_file(source: str | os.PathLike[str], path: str | os.PathLike[str], what: str = "output") -> Path:
    """``source``'s bytes to ``path``, atomically."""
    return atomic_write(path, lambda tmp: shutil.copyfile(source, tmp), what)


def torch_save(payload: Any, path: str | os.PathLike[str], what: str = "output") -> Path:
    """``torch.save(payload)`` to ``path``, atomically; the same payload gives the same bytes (saved through a file
    object: given a path, torch names the archive's root after the file, here a random temporary name)."""
    import torch

    def save(tmp: Path) -> None:
        with tmp.open("wb") as handle:
            torch.save(payload, handle)

    return atomic_write(path, save, what)


def json_default(value: Any) -> Any:
    """JSON encoding of the non-JSON values run records hold (numpy scalars, paths, torch types)."""
    import numpy as np
    import torch

    if isinstance(value, (np.integer, np.floating, np.bool_)):
        return value.item()
    if isinstance(value, (Path, torch.device, torch.dtype)):
        return str(value)
    raise TypeError(f"cannot store {type(value).__name__} in a JSON file")


def data_checksum(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a data file a run reads: taken from the ledger when cdln wrote the file and its size and
    modification time are still those recorded (no second read of a large problem file), else computed."""
    path = Path(path)
    entry = read_ledger(path.parent).get(path.name)
    stat = path.stat()
    if entry and entry.get("bytes") == stat.st_size and entry.get("mtime_ns") == stat.st_mtime_ns:
        return str(entry["sha256"])
    return sha256(path)


# ---- folders ----


def check_output_dir(
    path: str | os.PathLike[str], force: bool = False, what: str = "--out", writes: Collection[str] = ()
) -> list[str]:
    """Raise :class:`OutputError` unless ``path`` can become an output folder without losing anything; returns
    the files there that cdln did not write (non-empty only with ``force``, which writes beside them).

    Allowed: no such path, an empty folder, a folder holding exactly what cdln wrote there, or with ``force`` any
    folder none of whose foreign files sits at a path in ``writes`` (the names the caller will write at the top
    of the folder; a file of the user's inside a folder cdln writes stays beside cdln's). A file at ``path`` is
    refused. Call it before the work whose result goes there."""
    path = Path(path)
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        raise OutputError(f"{what} {path} is a file, not a folder; name a new folder for the output")
    if not path.is_dir():
        return []
    foreign = foreign_files(path)
    if foreign and not force:
        raise OutputError(
            f"{what} {path} holds files cdln did not write ({_listing(foreign)}); name a new folder, or pass --force "
            "to write beside them (cdln never removes a file it did not write)"
        )
    clashes = [name for name in foreign if name.rstrip("/") in writes]  # what is inside a folder cdln writes stays
    if clashes:
        raise OutputError(
            f"{what} {path}: {_listing(clashes)} was not written by cdln and would be overwritten, even with "
            "--force; move it away or name a new folder"
        )
    return foreign


def _seal(staging: Path) -> None:
    """Public modes for everything staged, and one ledger at the top naming every file."""
    entries = {}
    public_mode(staging, directory=True)
    for current, dirs, files in os.walk(staging):
        here = Path(current)
        for name in dirs:
            public_mode(here / name, directory=True)
        for name in files:
            path = here / name
            if name == LEDGER:
                path.unlink()
                continue
            public_mode(path)
            entries[path.relative_to(staging).as_posix()] = _entry(path)
    _write_ledger(staging, entries)


def _replace_whole(staging: Path, path: Path) -> None:
    """``staging`` becomes ``path``; an earlier folder there (cdln's own, or empty) is moved aside first and then
    removed, so ``path`` always holds one complete result."""
    if not path.exists():
        os.replace(staging, path)
        return
    old = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".old"))
    os.replace(path, old / "folder")
    try:
        os.replace(staging, path)
    except BaseException:
        os.replace(old / "folder", path)
        raise
    finally:
        shutil.rmtree(old, ignore_errors=True)


def _write_beside(staging: Path, path: Path) -> None:
    """``--force`` into a folder that also holds files cdln did not write: cdln's earlier files there are removed,
    the staged ones moved in, every other file left; the ledger last."""
    staged = read_ledger(staging)
    foreign = set(foreign_files(path))
    clashes = [rel for rel in staged if rel in foreign or any(p.as_posix() in foreign for p in Path(rel).parents)]
    if clashes:
        raise OutputError(f"{path}: {_listing(sorted(clashes))} appeared meanwhile and is not cdln's; nothing written")
    for current, _, files in os.walk(path):
        for name in files:
            rel = (Path(current) / name).relative_to(path).as_posix()
            earlier_own = rel not in foreign and not _ours_by_name(name)
            if earlier_own or (name == LEDGER and Path(current) != path):
                (path / rel).unlink()
    for current, _, _ in os.walk(path, topdown=False):  # folders that held only cdln's files
        here = Path(current)
        if here != path and not any(here.iterdir()) and f"{here.relative_to(path).as_posix()}/" not in foreign:
            here.rmdir()
    for rel in staged:
        (path / rel).parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging / rel, path / rel)
    _write_ledger(path, staged)
    shutil.rmtree(staging, ignore_errors=True)


@contextmanager
def atomic_directory(
    path: str | os.PathLike[str], force: bool = False, what: str = "--out", writes: Collection[str] = ()
) -> Iterator[Path]:
    """Claim ``path`` (:func:`claimed`), check it (:func:`check_output_dir`), and yield an empty staging folder;
    on success the staged files replace ``path`` (or, with ``force`` beside files cdln did not write, are written
    into it), with a ledger naming each; on failure the staging folder is removed and ``path`` is left as it was.
    Hold it around the work itself, so that a second writer fails before it starts."""
    path = Path(path)
    with claimed(path, what):
        check_output_dir(path, force, what, writes)
        staging = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=PARTIAL_SUFFIX))
        try:
            yield staging
            _seal(staging)
            if check_output_dir(path, force, what, writes):  # again: the user may have added files meanwhile
                _write_beside(staging, path)
            else:
                _replace_whole(staging, path)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
