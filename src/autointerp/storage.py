"""Files that survive a kill at any moment, and the one converter for our schemas.

Every output of the project is written through these helpers:

* ``atomic_write_text`` / ``atomic_write_bytes``: temp file in the same folder,
  fsync, rename. A reader sees the old file or the new one, never a half.
* ``replace_dir_atomically``: a folder of several files swapped as a whole, so
  ``config.json`` and ``components.jsonl`` always belong to the same harvest.
* ``append_jsonl`` / ``read_jsonl``: append-only logs with one fsynced line per
  record; a torn last line (killed mid-write) is dropped when read, never fatal.
* ``RunLock``: refuses a second process writing the same run.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import cattrs

T = TypeVar("T")

_CONVERTER: cattrs.Converter | None = None


def make_converter() -> cattrs.Converter:
    """A private converter for every schema in the project (never the global one)."""
    conv = cattrs.Converter(forbid_extra_keys=False)
    return conv


def converter() -> cattrs.Converter:
    global _CONVERTER
    if _CONVERTER is None:
        _CONVERTER = make_converter()
    return _CONVERTER


def to_dict(obj: Any) -> Any:
    return converter().unstructure(obj)


def from_dict(data: Any, cls: type[T]) -> T:
    return converter().structure(data, cls)


def to_json(obj: Any) -> str:
    return json.dumps(to_dict(obj), ensure_ascii=False, allow_nan=False)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_with(path: str | os.PathLike, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp_path)`` and rename the finished file onto ``path``.

    For writers that want a path rather than bytes (``torch.save``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        write(tmp_path)
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    except BaseException:
        if tmp_path.exists():
            tmp_path.unlink()
        raise
    _fsync_dir(path.parent)


def replace_dir_atomically(target: str | os.PathLike, fill: Callable[[Path], None]) -> None:
    """Build a folder with ``fill(tmp_dir)`` and swap it in place of ``target``.

    A crash leaves either the old folder or the new one. The single moment where
    neither is at ``target`` (between two renames) is repaired by
    ``recover_dir(target)``, which every loader calls first.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    recover_dir(target)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.new-", dir=target.parent))
    try:
        fill(tmp)
        # every file and folder the fill wrote, subfolders (shared/) included
        for folder, _, files in os.walk(tmp):
            for name in files:
                with open(os.path.join(folder, name), "rb+") as f:
                    os.fsync(f.fileno())
            _fsync_dir(Path(folder))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = target.parent / f".{target.name}.old"
    if target.exists():
        if old.exists():
            shutil.rmtree(old)
        os.rename(target, old)
    os.rename(tmp, target)
    _fsync_dir(target.parent)
    shutil.rmtree(old, ignore_errors=True)


def recover_dir(target: str | os.PathLike) -> None:
    """Undo a swap that a crash interrupted, and clear half-built temp folders."""
    target = Path(target)
    old = target.parent / f".{target.name}.old"
    if not target.exists() and old.exists():
        os.rename(old, target)
    elif target.exists() and old.exists():
        shutil.rmtree(old, ignore_errors=True)
    if target.parent.exists():
        for stale in target.parent.glob(f".{target.name}.new-*"):
            shutil.rmtree(stale, ignore_errors=True)


def append_jsonl(path: str | os.PathLike, record: Any) -> None:
    """Append one record as one fsynced line. ``record`` is a dict or an attrs object."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = record if isinstance(record, dict) else to_dict(record)
    line = json.dumps(data, ensure_ascii=False, allow_nan=False) + "\n"
    with open(path, "ab") as f:
        # A torn last line from a killed writer must not glue onto ours.
        if f.tell() > 0:
            with open(path, "rb") as r:
                r.seek(-1, os.SEEK_END)
                if r.read(1) != b"\n":
                    f.write(b"\n")
        f.write(line.encode("utf-8"))
        f.flush()
        os.fsync(f.fileno())


def read_jsonl(path: str | os.PathLike) -> Iterator[dict[str, Any]]:
    """Yield the records of a JSONL file; lines that do not parse (torn writes) are skipped."""
    path = Path(path)
    if not path.exists():
        return
    with open(path, "rb") as f:
        for raw in f:
            raw = raw.strip()
            if not raw:
                continue
            try:
                yield json.loads(raw.decode("utf-8"))
            except (json.JSONDecodeError, UnicodeDecodeError):
                continue


def read_jsonl_as(path: str | os.PathLike, cls: type[T]) -> list[T]:
    out = []
    for rec in read_jsonl(path):
        try:
            out.append(from_dict(rec, cls))
        except (cattrs.BaseValidationError, TypeError, KeyError, ValueError):
            continue
    return out


class RunLock:
    """An exclusive lock on a run folder: a second writer gets a clear error.

    Uses ``flock`` on ``<dir>/.lock``, so a killed process releases it with its
    file descriptors and a stale lock never blocks a resume.
    """

    def __init__(self, directory: str | os.PathLike, what: str = "this run"):
        self.path = Path(directory) / ".lock"
        self.what = what
        self._fd: int | None = None

    def __enter__(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno in (errno.EAGAIN, errno.EACCES):
                raise RuntimeError(
                    f"another process is writing {self.what} ({self.path.parent}); "
                    "wait for it to finish or stop it, then run again"
                ) from None
            raise
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
