"""Files that survive a kill at any moment, and the one converter for our schemas.

Every output of the project is written through these helpers:

* ``atomic_write_text`` / ``atomic_write_bytes``: temp file in the same folder,
  fsync, rename. A reader sees the old file or the new one, never a half.
* ``replace_dir_atomically``: a folder of several files swapped as a whole, so
  ``config.json`` and ``components.jsonl`` always belong to the same harvest;
  ``recover_dir`` repairs what a killed swap left, and leaves a live one alone
  (the swap holds a lock beside the folder).
* ``append_jsonl`` / ``read_jsonl``: append-only logs with one fsynced line per
  record; a torn last line (killed mid-write) is dropped when read, never fatal.
* ``JsonlAppender``: the same log for a stream of records from an event loop
  (group commit in a writer thread); ``completed_keys`` is the resume scan over
  such a log.
* ``RunLock``: refuses a second process writing the same run.

Every file and folder written here gets the mode the user's umask gives a new
one (``file_mode``, ``folder_mode``), so collaborators on a shared machine can
read a run: temp files and folders are private when made and are opened up
before the rename.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import errno
import fcntl
import gc
import json
import math
import os
import reprlib
import shutil
import tempfile
import threading
import types
import typing
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import attrs
import cattrs
import cattrs.v
import orjson
from cattrs.cols import is_mapping, is_sequence, list_structure_factory, mapping_structure_factory

T = TypeVar("T")

_CONVERTER: cattrs.Converter | None = None


class SchemaTypeError(TypeError):
    """A value of the wrong JSON type for a schema field (raised by `make_converter`'s hooks)."""


def _arrived(value: Any) -> str:
    """What arrived, for an error message: ``the int 7``, ``a str 'abc'``, ``a list``."""
    if value is None:
        return "null"
    name = type(value).__name__
    if isinstance(value, (bool, int, float, str)):
        return f"the {name} {reprlib.repr(value)}"
    return f"a {name}"


def _exactly(kind: type, what: str) -> Callable[[Any, Any], Any]:
    def structure(value: Any, _: Any) -> Any:
        # bool is an int subclass, but `true` is never a count or an index
        if isinstance(value, kind) and (kind is bool or not isinstance(value, bool)):
            return value
        raise SchemaTypeError(f"expected {what}, got {_arrived(value)}")

    return structure


def _a_number(value: Any, _: Any) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    raise SchemaTypeError(f"expected a number, got {_arrived(value)}")


#: the element types a list of each scalar may hold (bool is its own type, so `true` is not an int)
_SCALAR_ITEMS: dict[Any, frozenset[type]] = {
    int: frozenset({int}),
    float: frozenset({float, int}),
    str: frozenset({str}),
}


def _list_hook(cl: Any, conv: cattrs.Converter) -> Callable[[Any, Any], Any]:
    """Lists are lists: cattrs would iterate a str into its characters or a dict into its keys."""
    args = getattr(cl, "__args__", None) or (Any,)
    item = args[0]
    allowed = _SCALAR_ITEMS.get(item)
    if allowed is not None:
        # the long lists of a harvest (token ids, activations) are checked in C, with no call per element
        def scalars(value: Any, _: Any) -> Any:
            if type(value) is list:
                kinds = set(map(type, value))
                if kinds <= allowed:
                    return list(map(float, value)) if item is float and int in kinds else list(value)
                i = next(i for i, x in enumerate(value) if type(x) not in allowed)
                raise SchemaTypeError(f"expected a list of {item.__name__}, but item {i} is {_arrived(value[i])}")
            raise SchemaTypeError(f"expected a list of {item.__name__}, got {_arrived(value)}")

        return scalars
    default = list_structure_factory(cl, conv)

    def structure(value: Any, _: Any) -> Any:
        if not isinstance(value, list):
            raise SchemaTypeError(f"expected a list, got {_arrived(value)}")
        return default(value, cl)

    return structure


def _mapping_hook(cl: Any, conv: cattrs.Converter) -> Callable[[Any, Any], Any]:
    default = mapping_structure_factory(cl, conv)

    def structure(value: Any, _: Any) -> Any:
        if not isinstance(value, Mapping):
            raise SchemaTypeError(f"expected an object, got {_arrived(value)}")
        return default(value, cl)

    return structure


def _attrs_hook(cl: Any, conv: cattrs.Converter, cache: FastCache | None) -> Callable[[Any, Any], Any]:
    default = conv.gen_structure_attrs_fromdict(cl)
    fast = None if cache is None else _fast_structurer(cl, conv, cache)

    def structure(value: Any, _: Any) -> Any:
        if fast is not None:
            try:
                return fast(value)
            except Exception:  # noqa: BLE001 - declined: the checked path below gives the value or the error
                pass
        # without this, a str given for a class whose fields all have defaults became the defaults
        if not isinstance(value, Mapping):
            raise SchemaTypeError(f"expected a {cl.__name__} object, got {_arrived(value)}")
        return default(value, cl)

    return structure


# -- the fast path of the strict converter ------------------------------------------------
#
# cattrs' generated structurers call one hook per field (the Optional wrapper, then the
# strict scalar check), so structuring a harvest's records cost more than parsing their
# JSON. The fast path below is generated per schema class with the same checks written
# inline (1.3-1.7x faster on the demo harvest's records). It never decides an error: on anything it does not accept exactly as the
# strict hooks would (a wrong type, a missing field, an unusual field type), it gives up and
# the cattrs path structures the whole value again, so the result -- or the error, with
# its path -- is always the strict converter's.


class _NotFast(Exception):
    """The fast path declines a value; the checked cattrs path decides."""


def _fast_field_code(t: Any, var: str, ns: dict[str, Any], conv: cattrs.Converter, cache: FastCache,
                     building: set[Any], indent: str) -> list[str]:
    """Lines that check ``var`` as the strict hooks check type ``t`` and leave the structured value in it."""
    origin, args = typing.get_origin(t), typing.get_args(t)
    if t is Any:
        return []
    if t is str or t is int or t is bool:
        return [f"{indent}if type({var}) is not {t.__name__}: raise _NotFast"]
    if t is float:
        return [f"{indent}if type({var}) is not float:",
                f"{indent}    if type({var}) is not int: raise _NotFast",
                f"{indent}    {var} = float({var})"]
    if origin in (typing.Union, types.UnionType) and len(args) == 2 and type(None) in args:
        inner = args[0] if args[1] is type(None) else args[1]
        body = _fast_field_code(inner, var, ns, conv, cache, building, indent + "    ")
        return [f"{indent}if {var} is not None:", *(body or [f"{indent}    pass"])]
    if origin is list and len(args) == 1:
        item = args[0]
        if item in (int, str):
            return [f"{indent}if type({var}) is not list or not set(map(type, {var})) <= _ONLY_{item.__name__}: raise _NotFast",
                    f"{indent}{var} = list({var})"]
        if item is float:
            return [f"{indent}if type({var}) is not list: raise _NotFast",
                    f"{indent}_k = set(map(type, {var}))",
                    f"{indent}if not _k <= _ONLY_float: raise _NotFast",
                    f"{indent}{var} = list(map(float, {var})) if int in _k else list({var})"]
        if attrs.has(item):
            fn = _fast_structurer(item, conv, cache, building)
            if fn is not None:
                name = f"_f_{len(ns)}"
                ns[name] = fn
                return [f"{indent}if type({var}) is not list: raise _NotFast",
                        f"{indent}{var} = [{name}(_x) for _x in {var}]"]
    if origin is dict and len(args) == 2 and args[0] is str and args[1] is Any:
        return [f"{indent}if type({var}) is not dict: raise _NotFast",
                f"{indent}for _x in {var}:",
                f"{indent}    if type(_x) is not str: raise _NotFast",
                f"{indent}{var} = dict({var})"]
    if attrs.has(t):
        fn = _fast_structurer(t, conv, cache, building)
        if fn is not None:
            name = f"_f_{len(ns)}"
            ns[name] = fn
            return [f"{indent}{var} = {name}({var})"]
    # anything else goes through the strict hook itself (its error makes the caller take the cattrs path)
    hook, tname = f"_h_{len(ns)}", f"_t_{len(ns)}"
    ns[hook], ns[tname] = conv.get_structure_hook(t), t
    return [f"{indent}{var} = {hook}({var}, {tname})"]


FastCache = dict[Any, Callable[[Any], Any] | None]


def _fast_structurer(cl: Any, conv: cattrs.Converter, cache: FastCache,
                     building: set[Any] | None = None) -> Callable[[Any], Any] | None:
    """``cl``'s generated fast structurer (raises `_NotFast` where it declines), or None where
    the class has something the fast path does not copy (an init-less, keyword-only or aliased
    field, a converter, a factory that takes self, a recursive type)."""
    if cl in cache:
        return cache[cl]
    building = set() if building is None else building
    if cl in building:
        return None
    building.add(cl)
    try:
        fn = _build_fast(cl, conv, cache, building)
    finally:
        building.discard(cl)
    cache[cl] = fn
    return fn


def _build_fast(cl: Any, conv: cattrs.Converter, cache: FastCache, building: set[Any]) -> Callable[[Any], Any] | None:
    try:
        hints = typing.get_type_hints(cl)
    except Exception:
        return None
    ns: dict[str, Any] = {"_NotFast": _NotFast, "_cl": cl, "_ONLY_int": _SCALAR_ITEMS[int],
                          "_ONLY_str": _SCALAR_ITEMS[str], "_ONLY_float": _SCALAR_ITEMS[float]}
    lines = ["def structure(d):", "    if type(d) is not dict: raise _NotFast"]
    names = []
    for i, f in enumerate(attrs.fields(cl)):
        if not f.init or f.kw_only or f.converter is not None or getattr(f, "alias", f.name) != f.name:
            return None
        var = f"a{i}"
        names.append(var)
        ns[f"_n{i}"] = f.name
        lines.append(f"    {var} = d.get(_n{i}, _NotFast)")
        lines.append(f"    if {var} is _NotFast:")
        default = f.default
        if default is attrs.NOTHING:
            lines.append("        raise _NotFast")
        elif isinstance(default, attrs.Factory):  # type: ignore[arg-type]
            if default.takes_self:
                return None
            ns[f"_d{i}"] = default.factory
            lines.append(f"        {var} = _d{i}()")
        else:
            ns[f"_d{i}"] = default
            lines.append(f"        {var} = _d{i}")
        lines.append("    else:")
        lines.extend(_fast_field_code(hints.get(f.name, Any), var, ns, conv, cache, building, "        ") or ["        pass"])
    lines.append(f"    return _cl({', '.join(names)})")
    exec(compile("\n".join(lines), f"<autointerp fast structure {cl.__name__}>", "exec"), ns)
    return ns["structure"]


def make_converter(*, fast: bool = True) -> cattrs.Converter:
    """A private converter for every schema in the project (never the global one).

    Strict where cattrs is lenient, so a damaged record is an error rather than a
    quietly different value: a ``str`` field takes only a string (not ``7``), an
    ``int`` only an integer (not ``"5"``, ``5.7`` or ``true``), a ``float`` only a
    number, a ``bool`` only ``true``/``false``, a list only a list, a mapping or a
    schema class only an object. Unknown keys are ignored (older files stay readable).
    Each schema class is first tried by a generated fast path with the same checks
    inline (`_fast_structurer`); whatever it declines goes through cattrs' checked path.
    ``fast=False`` leaves the fast path out (the tests compare the two).
    """
    conv = cattrs.Converter(forbid_extra_keys=False)
    conv.register_structure_hook(str, _exactly(str, "a string"))
    conv.register_structure_hook(int, _exactly(int, "an integer"))
    conv.register_structure_hook(bool, _exactly(bool, "true or false"))
    conv.register_structure_hook(float, _a_number)
    fast_cache: FastCache | None = {} if fast else None
    conv.register_structure_hook_factory(attrs.has, lambda cl: _attrs_hook(cl, conv, fast_cache))
    conv.register_structure_hook_factory(is_sequence, lambda cl: _list_hook(cl, conv))
    conv.register_structure_hook_factory(is_mapping, lambda cl: _mapping_hook(cl, conv))
    return conv


def _schema_message(exc: BaseException, type_: Any) -> str:
    if isinstance(exc, SchemaTypeError):
        return str(exc)
    return cattrs.v.format_exception(exc, type_)


def schema_problem(error: BaseException) -> str:
    """A structuring error as one line: ``expected a string, got the int 7 @ $.component_key``."""
    if isinstance(error, cattrs.BaseValidationError):
        return "; ".join(cattrs.transform_error(error, format_exception=_schema_message))
    return str(error)


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


_UMASK: int | None = None
_UMASK_LOCK = threading.Lock()


def _umask() -> int:
    """The process's umask, read once."""
    global _UMASK
    with _UMASK_LOCK:
        if _UMASK is None:
            _UMASK = _read_umask()
        return _UMASK


def _read_umask() -> int:
    # /proc tells it without changing it; os.umask can only read it by setting it, which for an
    # instant applies the value set to every file another thread creates
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    old = os.umask(0o077)  # during that instant, other threads' new files are private rather than open
    os.umask(old)
    return old


def file_mode() -> int:
    """The mode of a new file under the user's umask (``0o644`` for umask 022): what every run file gets."""
    return 0o666 & ~_umask()


def folder_mode() -> int:
    """The mode of a new folder under the user's umask (``0o755`` for umask 022)."""
    return 0o777 & ~_umask()


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
            # mkstemp makes the file 0600, and the rename keeps that: collaborators could not read it
            os.fchmod(f.fileno(), file_mode())
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
            os.fchmod(f.fileno(), file_mode())  # mkstemp's 0600 would survive the rename
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
    ``recover_dir(target)``, which every loader calls first. The whole build and
    swap holds the swap lock of ``target``, so that recovery (by a loader in
    another process) never mistakes this live build for a dead writer's, and two
    swaps of one folder take turns.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    with _swap_lock(target, wait=True):
        _recover_unlocked(target)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.new-", dir=target.parent))
        try:
            fill(tmp)
            # every file and folder the fill wrote, subfolders (shared/) included, durable and with the
            # umask's mode: mkdtemp makes the folder 0700, and a library (sqlite) may choose its own mode
            for folder, _, files in os.walk(tmp):
                os.chmod(folder, folder_mode())
                for name in files:
                    with open(os.path.join(folder, name), "rb+") as f:
                        os.fchmod(f.fileno(), file_mode())
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
    """Undo a swap that a dead writer interrupted, and clear its half-built temp folders.

    Only what a dead writer left is touched: while a live `replace_dir_atomically`
    of ``target`` holds the swap lock, this does nothing (its temp folder is work
    in progress, and it repairs what it finds itself). A reader that finds nothing
    to repair writes nothing.
    """
    target = Path(target)
    if not _leftovers(target):
        return
    try:
        with _swap_lock(target, wait=False) as held:
            if held:
                _recover_unlocked(target)
    except PermissionError:
        return  # a reader without write access cannot repair; the next writer will


def _leftovers(target: Path) -> bool:
    if not target.parent.exists():
        return False
    if (target.parent / f".{target.name}.old").exists():
        return True
    return any(target.parent.glob(f".{target.name}.new-*"))


def _recover_unlocked(target: Path) -> None:
    old = target.parent / f".{target.name}.old"
    if not target.exists() and old.exists():
        os.rename(old, target)
    elif target.exists() and old.exists():
        shutil.rmtree(old, ignore_errors=True)
    for stale in target.parent.glob(f".{target.name}.new-*"):
        shutil.rmtree(stale, ignore_errors=True)


@contextmanager
def _swap_lock(target: Path, *, wait: bool) -> Iterator[bool]:
    """Hold ``flock`` on ``<parent>/.<name>.swap.lock``; yields False when ``wait`` is
    False and a live process holds it. A killed holder releases it with its file
    descriptors, so a dead writer never blocks recovery."""
    path = target.parent / f".{target.name}.swap.lock"
    fd = _lock_file(path, wait)
    if fd is None:
        yield False
        return
    try:
        yield True
    finally:
        # unlinked while still held, so the folder is left as clean as before;
        # a waiter that locked this inode sees it is gone and locks a fresh file
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        os.close(fd)


def _lock_file(path: Path, wait: bool) -> int | None:
    """An fd holding ``flock`` on the file now at ``path``; None if busy and not ``wait``."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)  # the umask applies
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except OSError as e:
            os.close(fd)
            if not wait and e.errno in (errno.EAGAIN, errno.EACCES):
                return None
            raise
        try:
            here = os.stat(path)
        except FileNotFoundError:
            here = None
        mine = os.fstat(fd)
        if here is not None and (here.st_ino, here.st_dev) == (mine.st_ino, mine.st_dev):
            return fd
        os.close(fd)  # the previous holder unlinked it before letting go: try the new file


_isfinite = math.isfinite
_ORJSON_OPTS = orjson.OPT_NON_STR_KEYS | orjson.OPT_APPEND_NEWLINE


def _all_finite(x: Any) -> bool:
    """No NaN or infinity anywhere in a JSON-like value (orjson would write them as null)."""
    t = type(x)
    if t is float:
        return _isfinite(x)
    if t is dict:
        items: Any = x.values()
    elif t is list or t is tuple:
        if not x:
            return True
        try:  # a list of numbers: one C-level sum (a NaN or an infinity makes it non-finite)
            if _isfinite(sum(x)):
                return True
        except TypeError:
            pass
        items = x
    else:
        return True
    for v in items:
        tv = type(v)
        if tv is float:
            if not _isfinite(v):
                return False
        elif (tv is dict or tv is list or tv is tuple) and not _all_finite(v):
            return False
    return True


@contextmanager
def paused_gc() -> Iterator[None]:
    """Pause Python's cyclic garbage collector for a stretch that builds millions of small objects.

    Finalizing and writing a harvest makes about 200 lists, dicts and attrs objects a
    component, none of them in a reference cycle, so reference counting frees each as
    soon as its line is written. The collector would still run every 700 allocations
    and, each time its older generations fill, walk every live container: that walk
    was half of a save (a 4,096-component save: 9.1 s with it, 4.8 s paused). Nested
    uses are fine; the collector runs again as before once the outermost one ends.
    """
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def json_line(data: Any) -> bytes:
    """A JSON-like value as one UTF-8 JSON line (with its newline), refusing NaN and infinities.

    orjson (about 15x faster than the standard library on a harvest's float-heavy
    component lines, 30 KB each); anything it cannot encode as the standard
    library would (a float subclass, an int past 64 bits) goes through the
    standard library, whose error is the one raised.
    """
    try:
        out = orjson.dumps(data, option=_ORJSON_OPTS)
    except TypeError:
        return (json.dumps(data, ensure_ascii=False, allow_nan=False) + "\n").encode("utf-8")
    if not _all_finite(data):
        raise ValueError("Out of range float values are not JSON compliant (a NaN or an infinity)")
    return out


def _jsonl_line(record: Any) -> bytes:
    """One record as the bytes of one JSONL line. ``record`` is a dict or an attrs object.

    Raises ValueError naming the record when it cannot be stored (a lone surrogate
    such as an LLM's ``"\\ud83d"``, NaN, an object JSON does not know), before any
    byte is written, so a bad record never damages the file it was meant for.
    """
    try:
        data = record if isinstance(record, dict) else to_dict(record)
        return (json.dumps(data, ensure_ascii=False, allow_nan=False) + "\n").encode("utf-8")
    except (ValueError, TypeError) as e:  # UnicodeEncodeError is a ValueError
        raise ValueError(f"cannot store {_name_of(record)} as a line of UTF-8 JSON: {e}") from None


def _name_of(record: Any) -> str:
    for name in ("component_key", "key"):
        value = record.get(name) if isinstance(record, Mapping) else getattr(record, name, None)
        if value is not None:
            return f"the record of {value!r}"
    # repr escapes what cannot be encoded, so the message itself can always be stored
    return f"the record {reprlib.repr(record)}"


def append_jsonl(path: str | os.PathLike, record: Any) -> None:
    """Append one record as one fsynced line. ``record`` is a dict or an attrs object.

    A torn last line left by a killed writer is repaired first (`_drop_torn_tail`);
    the caller holds the run's lock. Raises ValueError naming the record, and writes nothing, when it cannot be
    stored (a lone surrogate, NaN, an object JSON does not know).
    """
    line = _jsonl_line(record)  # refuses what it cannot store before touching the file
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # a torn last line from a killed writer must neither glue onto ours nor become a bad line in the middle
    _drop_torn_tail(path)
    with open(path, "ab") as f:
        f.write(line)
        f.flush()
        os.fsync(f.fileno())


class CorruptRunFile(ValueError):
    """A run file holds something that is not what autointerp wrote there.

    The message names the file, the line (when there is one), what was found and
    what was expected, and says what to do; the command line prints it as one line.
    """

    FIX = "fix or delete that line (or the file) and run again"

    def __init__(self, path: str | os.PathLike, line_no: int | None, problem: str, expected: str, fix: str = FIX):
        self.path, self.line_no, self.problem = Path(path), line_no, problem
        where = f"{self.path}, line {line_no}" if line_no is not None else f"{self.path}"
        super().__init__(f"{where}: {problem}; expected {expected}. The file was changed outside autointerp: {fix}")
        self._args = (path, line_no, problem, expected, fix)

    def __reduce__(self) -> tuple[Any, ...]:
        # rebuilt from its parts, so it crosses to the parent process of a worker pool unchanged
        return (type(self), self._args)


def iter_jsonl(path: str | os.PathLike, expected: str = "one JSON object per line") -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line number, record)`` for every record of a JSONL file (missing file: none).

    The one policy for every append-only file of a run: a torn last line (text
    after the last newline that does not parse: a writer killed mid-line) is
    skipped, and the next writer cuts it off (`append_jsonl`, `JsonlAppender`);
    a reader never changes the file. Anything else that is not a JSON object (a
    bad line in the middle, ``[1, 2, 3]``, a string) raises `CorruptRunFile`
    naming the file, the line and ``expected``. Blank lines are skipped.
    """
    for line_no, _, rec in iter_jsonl_spans(path, expected):
        yield line_no, rec


def iter_jsonl_spans(path: str | os.PathLike,
                     expected: str = "one JSON object per line") -> Iterator[tuple[int, int, dict[str, Any]]]:
    """``(line number, byte offset of the line, record)`` by `iter_jsonl`'s policy, for readers that
    note where a record lies and read it again later (one seek and one line)."""
    path = Path(path)
    if not path.exists():
        return
    # read a line at a time (a harvest's components.jsonl can be gigabytes): only the text after
    # the last newline lacks one, so that is the one line that may be torn
    with open(path, "rb") as f:
        offset = 0
        for line_no, raw in enumerate(f, start=1):
            at, offset = offset, offset + len(raw)
            if not raw.strip():
                continue
            try:
                rec = json_loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                if not raw.endswith(b"\n"):
                    continue  # torn: never reported as written, so nothing is lost
                raise CorruptRunFile(path, line_no, f"not JSON ({e})", expected) from None
            if not isinstance(rec, dict):
                raise CorruptRunFile(path, line_no, f"a JSON {_json_kind(rec)}, not an object", expected)
            yield line_no, at, rec


_orjson: Any = orjson  # a module attribute, so a test can read every line through the standard library alone

# an integer of 19 digits or more may not fit in 64 bits (orjson reads it as a float): a line with one
# is read by the standard library, so every value is what it always was. Found with C-speed byte
# operations (a regex walks a 28 KB component line at ~20 MB/s): digits become "0", the characters
# that continue a number's digits ("." "e" "E") become ".", all else a space, so an integer's digits
# (or an exponent's, read the slow way too) are a space and then zeros, a fraction's a "." and zeros.
_DIGIT_CLASSES = bytes(0x30 if chr(b).isdigit() and b < 128 else 0x2E if b in b".eE" else 0x20 for b in range(256))
_LONG_INTEGER = b" " + b"0" * 19


def json_loads(raw: bytes) -> Any:
    """``json.loads(raw.decode("utf-8"))``, through orjson: it reads a JSON line to the same values
    and refuses what it would read otherwise (``NaN``, ``1e400``, a lone surrogate, invalid UTF-8),
    which the standard library then reads or refuses as it always did (`json.JSONDecodeError`,
    `UnicodeDecodeError`: both ``ValueError``). Every reader of the run's files parses with this."""
    if _orjson is not None and _LONG_INTEGER not in raw.translate(_DIGIT_CLASSES):
        try:
            return _orjson.loads(raw)
        except _orjson.JSONDecodeError:
            pass
    return json.loads(raw.decode("utf-8"))


def _json_kind(value: Any) -> str:
    return {list: "list", str: "string", bool: "boolean", type(None): "null", int: "number", float: "number"}.get(
        type(value), type(value).__name__)


def read_jsonl(path: str | os.PathLike, expected: str = "one JSON object per line") -> Iterator[dict[str, Any]]:
    """Yield the records of a JSONL file by `iter_jsonl`'s policy (torn last line skipped, else strict)."""
    for _, rec in iter_jsonl(path, expected):
        yield rec


def iter_jsonl_as(path: str | os.PathLike, cls: type[T]) -> Iterator[tuple[int, T]]:
    """``(line number, record)`` with every record structured as ``cls`` (one of our attrs schemas);
    a record that breaks the schema is a `CorruptRunFile` naming the field."""
    expected = f"one {cls.__name__} JSON object per line"
    for line_no, rec in iter_jsonl(path, expected):
        yield line_no, structure_line(rec, cls, path, line_no, expected)


def structure_line(rec: Any, cls: type[T], path: str | os.PathLike, line_no: int | None, expected: str,
                   fix: str = CorruptRunFile.FIX) -> T:
    """``from_dict(rec, cls)``, or a `CorruptRunFile` at ``path``/``line_no`` saying which field is wrong."""
    try:
        return from_dict(rec, cls)
    except (cattrs.BaseValidationError, TypeError, KeyError, ValueError) as e:
        raise CorruptRunFile(path, line_no, f"breaks the schema ({schema_problem(e)})", expected, fix) from None


def read_jsonl_as(path: str | os.PathLike, cls: type[T]) -> list[T]:
    """Every record of a JSONL file as ``cls``, by `iter_jsonl_as`."""
    return [rec for _, rec in iter_jsonl_as(path, cls)]


def completed_keys(results_path: str | os.PathLike, record_key: Callable[[Mapping[str, Any]], str]) -> set[str]:
    """Keys of the records already in a results file (a torn last line is ignored).

    ``record_key`` names the job a record belongs to; records it cannot name
    (a missing field) are not counted. A line that is not a JSON object is a
    `CorruptRunFile` (`iter_jsonl`), never a silent skip that would pay for the
    job again. `JobRunner` and the Message Batches runner both resume from this scan.
    """
    done = set()
    for rec in read_jsonl(results_path):
        try:
            done.add(record_key(rec))
        except (KeyError, TypeError):
            continue
    return done




# --------------------------------------------------------------------------------------
# the writer: one fsynced line per record, group commit in a thread


def _drop_torn_tail(path: Path) -> None:
    """Repair the end of ``path`` the way `iter_jsonl` reads it, before appending.

    Text after the last newline that does not parse is a torn line (a writer
    killed mid-line): it was never reported as written, so it is cut off and
    nothing is lost. Text that parses is a whole line that only lost its newline:
    readers already count it, so it gets the newline instead. Callers hold the
    run's lock, so no other writer is appending.
    """
    if not path.exists():
        return
    with open(path, "rb+") as f:
        size = f.seek(0, os.SEEK_END)
        if size == 0:
            return
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return
        pos = size
        chunk = 4096
        start_of_tail = 0
        while pos > 0:
            start = max(0, pos - chunk)
            f.seek(start)
            buf = f.read(pos - start)
            i = buf.rfind(b"\n")
            if i >= 0:
                start_of_tail = start + i + 1
                break
            pos = start
        f.seek(start_of_tail)
        tail = f.read()
        try:
            json.loads(tail.decode("utf-8"))
            f.seek(0, os.SEEK_END)
            f.write(b"\n")
        except (json.JSONDecodeError, UnicodeDecodeError):
            f.truncate(start_of_tail)
        f.flush()
        os.fsync(f.fileno())


class JsonlAppender:
    """Appends records to a JSONL file from a background thread.

    ``await append(record)`` returns once the record's line is on disk (fsynced).
    Records that arrive while an fsync is running are written together and share
    the next fsync, so the event loop never blocks on the disk and a fast stream
    of results is not limited to one fsync per record.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        _drop_torn_tail(self.path)
        self._f = open(self.path, "ab")
        self._lock = threading.Lock()
        self._pending: list[tuple[bytes, concurrent.futures.Future]] = []
        self._cond = threading.Condition(self._lock)
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name=f"jsonl-writer:{self.path.name}", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._closed:
                    self._cond.wait()
                if not self._pending and self._closed:
                    return
                batch, self._pending = self._pending, []
            try:
                self._f.write(b"".join(line for line, _ in batch))
                self._f.flush()
                os.fsync(self._f.fileno())
                err: BaseException | None = None
            except BaseException as e:  # noqa: BLE001 - handed to the waiting coroutine
                err = e
            for _, fut in batch:
                if err is None:
                    fut.set_result(None)
                else:
                    fut.set_exception(err)

    def submit(self, record: Any) -> concurrent.futures.Future:
        """Queue ``record``; the future is done once its line is fsynced.

        Raises ValueError (see `append_jsonl`) for a record it cannot store,
        before anything is queued, so the lines it shares an fsync with are safe.
        """
        line = _jsonl_line(record)
        fut: concurrent.futures.Future = concurrent.futures.Future()
        with self._cond:
            if self._closed:
                raise RuntimeError(f"{self.path} writer is closed")
            self._pending.append((line, fut))
            self._cond.notify()
        return fut

    async def append(self, record: Any) -> None:
        await asyncio.wrap_future(self.submit(record))

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join()
        self._f.close()


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
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)  # the umask applies, as for every run file
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
