"""The random-access index of a harvest folder: ``components.sqlite`` beside ``components.jsonl``.

``components.jsonl`` (one `ComponentData` a line, in component-space order) stays
the data and the documented layout; this file only makes it cheap to use. One
SQLite table holds, per component, its key, layer, index, the scalar statistics
(firing count and rate, mean and max activation) and where its line lies in the
JSONL (byte offset and length). So opening a harvest parses nothing, one
component is one indexed look-up, one seek and one line parsed, and lists by
layer or firing rate come from the table without touching the examples.

The index is written inside the same atomically swapped folder as the rest of the
harvest (`HarvestResult.save`), so it is complete or absent with it. A folder
written before the index existed (or whose JSONL changed since: size and
modification time are recorded) gets one on first open, built by one checked scan
(the strict reader of `autointerp.records`: count, order, duplicates, schema);
where the folder is read-only the index is built in memory instead.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import weakref
from collections.abc import Iterator, MutableMapping, Sequence
from pathlib import Path
from typing import Any

from attrs import frozen

from autointerp.paths import HARVEST_COMPONENTS, HARVEST_STORE
from autointerp.schemas import ComponentData, HarvestConfig
from autointerp.storage import atomic_write_with, from_dict, json_loads

#: bump when the table changes; an index of another format is rebuilt
STORE_FORMAT = 1

_SCALARS = ("firing_count", "firing_rate", "mean_activation", "max_activation")
_SCHEMA = """
CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE components (
    pos INTEGER PRIMARY KEY,
    key TEXT NOT NULL UNIQUE,
    layer TEXT NOT NULL,
    idx INTEGER NOT NULL,
    firing_count INTEGER NOT NULL,
    firing_rate REAL NOT NULL,
    mean_activation REAL NOT NULL,
    max_activation REAL NOT NULL,
    offset INTEGER NOT NULL,
    length INTEGER NOT NULL
);
"""
# built after the rows go in: one sorted build is faster than growing the b-trees row by row
_INDEXES = """
CREATE INDEX components_layer_rate ON components(layer, firing_rate);
CREATE INDEX components_rate ON components(firing_rate);
"""


@frozen
class ComponentSummary:
    """One row of the index: what a component is and how often it fired, without its evidence."""

    key: str
    layer: str
    index: int
    firing_count: int
    firing_rate: float
    mean_activation: float
    max_activation: float

    @classmethod
    def of(cls, comp: ComponentData) -> ComponentSummary:
        return cls(comp.key, comp.layer, comp.index, comp.firing_count, comp.firing_rate,
                   comp.mean_activation, comp.max_activation)


class StoreWriter:
    """Writes ``components.jsonl`` and its index together, one component at a time (bounded memory)."""

    def __init__(self, folder: Path):
        self.folder = folder
        self._jsonl = open(folder / HARVEST_COMPONENTS, "wb")
        self._db = sqlite3.connect(folder / HARVEST_STORE)
        # the folder is swapped in only once complete, so the journal buys nothing here
        self._db.execute("PRAGMA journal_mode=OFF")
        self._db.execute("PRAGMA synchronous=OFF")
        self._db.executescript(_SCHEMA)
        self._rows: list[tuple[Any, ...]] = []
        self._offset = 0
        self.n = 0

    def add_record(self, rec: dict[str, Any], line: bytes) -> None:
        """Append one component: its record as a dict (for the index) and its encoded JSON line."""
        self._jsonl.write(line)
        self._rows.append(_row(self.n, rec, self._offset, len(line)))
        self._offset += len(line)
        self.n += 1
        if len(self._rows) >= 4096:
            self._flush()

    def _flush(self) -> None:
        self._db.executemany("INSERT INTO components VALUES (?,?,?,?,?,?,?,?,?,?)", self._rows)
        self._rows.clear()

    def close(self) -> None:
        self._flush()
        self._jsonl.flush()
        os.fsync(self._jsonl.fileno())
        self._jsonl.close()
        st = os.stat(self.folder / HARVEST_COMPONENTS)
        self._db.executescript(_INDEXES)
        self._db.executemany("INSERT INTO meta VALUES (?, ?)", _meta(st, self.n).items())
        self._db.commit()
        self._db.close()

    def abort(self) -> None:
        self._jsonl.close()
        self._db.close()


def _row(pos: int, rec: dict[str, Any], offset: int, length: int) -> tuple[Any, ...]:
    return (pos, rec["key"], rec["layer"], rec["index"], int(rec.get("firing_count", 0)),
            float(rec.get("firing_rate", 0.0)), float(rec.get("mean_activation", 0.0)),
            float(rec.get("max_activation", 0.0)), offset, length)


def _meta(st: os.stat_result, n: int) -> dict[str, str]:
    # size and mtime say whether the JSONL is the one indexed; n that it is the whole of it
    return {"format": str(STORE_FORMAT), "jsonl_size": str(st.st_size), "jsonl_mtime_ns": str(st.st_mtime_ns),
            "n_components": str(n)}


class HarvestStore:
    """Random access to one harvest folder's components; opening it parses nothing.

    Holds an SQLite connection to the index and reads component lines from the
    JSONL on demand. Usable from any thread (a notebook's event loop runs the
    scorers in a worker thread): the connection is shared under a lock. Both are closed by
    `close`, or when the store is collected (a lazy `HarvestResult` is rarely
    closed by hand), so an open harvest never leaks a file handle.
    """

    def __init__(self, folder: str | os.PathLike, config: HarvestConfig):
        self.folder = Path(folder)
        self.config = config
        self.jsonl = self.folder / HARVEST_COMPONENTS
        self._lock = threading.RLock()  # one query or seek+read at a time, from whichever thread
        self._db = self._open_index()
        self._n = config.n_components  # the index was checked to hold exactly these
        self._file = open(self.jsonl, "rb")
        self._closer = weakref.finalize(self, _close_both, self._file, self._db)

    # -- opening ------------------------------------------------------------------------

    def _open_index(self) -> sqlite3.Connection:
        path = self.folder / HARVEST_STORE
        if path.exists():
            db = _connect_readonly(path)
            if db is not None and self._current(db):
                return db
            if db is not None:
                db.close()
        return self._build_index(path)

    def _current(self, db: sqlite3.Connection) -> bool:
        try:
            meta = dict(db.execute("SELECT name, value FROM meta").fetchall())
        except sqlite3.DatabaseError:
            return False  # not an index we can read: build it again from the JSONL
        st = os.stat(self.jsonl)
        return meta == _meta(st, self.config.n_components)

    def _build_index(self, path: Path) -> sqlite3.Connection:
        """Index an old folder (or one whose JSONL changed) by one checked scan of its JSONL."""
        if os.access(self.folder, os.W_OK):
            try:
                atomic_write_with(path, self._fill_index)
            except OSError:
                pass  # a full disk or a race with a swap: fall back to an index in memory
            else:
                db = _connect_readonly(path)
                if db is not None and self._current(db):
                    return db
        db = sqlite3.connect(":memory:", check_same_thread=False)
        self._index_into(db)
        return db

    def _fill_index(self, tmp: Path) -> None:
        tmp.unlink(missing_ok=True)  # sqlite wants to create its own file
        db = sqlite3.connect(tmp)
        try:
            self._index_into(db)
        finally:
            db.close()

    def _index_into(self, db: sqlite3.Connection) -> None:
        from autointerp.records import iter_component_records  # the one strict reader of components.jsonl

        st = os.stat(self.jsonl)
        db.executescript(_SCHEMA)
        rows: list[tuple[Any, ...]] = []
        n = 0
        # the strict reader checks every record (count, order, duplicates, schema) and skips blank
        # lines as the offset scan does, so the two walk the same lines in lockstep
        # (the records first: a file that ends early is found when the reader is asked for one more)
        for rec, (offset, length) in zip(iter_component_records(self.jsonl, self.config, check_schema=True),
                                         _line_spans(self.jsonl)):
            rows.append(_row(n, rec, offset, length))
            n += 1
            if len(rows) >= 4096:
                db.executemany("INSERT INTO components VALUES (?,?,?,?,?,?,?,?,?,?)", rows)
                rows.clear()
        db.executemany("INSERT INTO components VALUES (?,?,?,?,?,?,?,?,?,?)", rows)
        db.executescript(_INDEXES)
        db.executemany("INSERT INTO meta VALUES (?, ?)", _meta(st, n).items())
        db.commit()

    # -- reading ------------------------------------------------------------------------

    def __len__(self) -> int:
        return self._n

    def _query(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    def position(self, key: str) -> int | None:
        rows = self._query("SELECT pos FROM components WHERE key = ?", (key,))
        row = rows[0] if rows else None
        return None if row is None else row[0]

    def get(self, pos: int) -> ComponentData:
        """The component at position ``pos`` (0 <= pos < len), read and parsed from its line."""
        with self._lock:
            row = self._db.execute("SELECT key, offset, length FROM components WHERE pos = ?", (pos,)).fetchone()
            if row is None:
                raise IndexError(f"component position {pos} is out of range (the harvest has {self._n} components)")
            key, offset, length = row
            self._file.seek(offset)
            raw = self._file.read(length)
        return self._parse(raw, key)

    def _parse(self, raw: bytes, key: str) -> ComponentData:
        try:
            rec = json_loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            rec = None
        if not isinstance(rec, dict) or rec.get("key") != key:
            raise ValueError(
                f"{self.folder / HARVEST_STORE} does not match {self.jsonl}: the line it points to for {key!r} "
                "is not that component's record. The JSONL was changed in place without changing its size or "
                f"time; delete {HARVEST_STORE} and load the harvest again to rebuild the index"
            )
        return from_dict(rec, ComponentData)

    def __iter__(self) -> Iterator[ComponentData]:
        """Every component in order, streamed from the JSONL: one line in memory at a time."""
        with open(self.jsonl, "rb") as f:
            for key, (_, raw) in zip(self.keys(), _lines(f)):
                yield self._parse(raw, key)

    def keys(self) -> list[str]:
        return [k for (k,) in self._query("SELECT key FROM components ORDER BY pos")]

    def line_spans(self) -> list[tuple[str, int, int]]:
        """``(key, offset, length)`` of every component's line in the JSONL, in order (for readers
        that read many lines at once, such as the report's workers)."""
        return self._query("SELECT key, offset, length FROM components ORDER BY pos")

    def summaries(self, *, layer: str | None = None, min_firing_rate: float | None = None,
                  order: str = "position", limit: int | None = None) -> list[ComponentSummary]:
        """Index rows, filtered by layer and firing rate, in ``order`` ("position", "firing_rate" high first)."""
        where, args = [], []
        if layer is not None:
            where.append("layer = ?")
            args.append(layer)
        if min_firing_rate is not None:
            where.append("firing_rate >= ?")
            args.append(float(min_firing_rate))
        sql = "SELECT key, layer, idx, firing_count, firing_rate, mean_activation, max_activation FROM components"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += {"position": " ORDER BY pos", "firing_rate": " ORDER BY firing_rate DESC, pos"}[_order(order)]
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        return [ComponentSummary(*row) for row in self._query(sql, args)]

    def n_fired(self) -> int:
        return self._query("SELECT COUNT(*) FROM components WHERE firing_count > 0")[0][0]

    def close(self) -> None:
        self._closer()


def _close_both(file: Any, db: sqlite3.Connection) -> None:
    file.close()
    db.close()


def _order(order: str) -> str:
    if order not in ("position", "firing_rate"):
        raise ValueError(f"order must be 'position' or 'firing_rate', got {order!r}")
    return order


def filter_summaries(rows: Sequence[ComponentSummary], *, layer: str | None, min_firing_rate: float | None,
                     order: str, limit: int | None) -> list[ComponentSummary]:
    """`HarvestStore.summaries` for components held in memory."""
    out = [r for r in rows if (layer is None or r.layer == layer)
           and (min_firing_rate is None or r.firing_rate >= min_firing_rate)]
    if _order(order) == "firing_rate":
        out.sort(key=lambda r: -r.firing_rate)  # stable: ties keep their position
    return out if limit is None else out[: int(limit)]


def _connect_readonly(path: Path) -> sqlite3.Connection | None:
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
        db.execute("SELECT 1 FROM sqlite_master").fetchall()
        return db
    except sqlite3.DatabaseError:
        return None


def _lines(f: Any) -> Iterator[tuple[int, bytes]]:
    """``(offset, line)`` for each non-blank line of a binary file, read a line at a time."""
    offset = 0
    for raw in f:
        if raw.strip():
            yield offset, raw
        offset += len(raw)


def _line_spans(path: Path) -> Iterator[tuple[int, int]]:
    with open(path, "rb") as f:
        for offset, raw in _lines(f):
            yield offset, len(raw)


# --------------------------------------------------------------------------- shared outputs read a row at a time

#: the entry of a shared output's JSON saying that its rows lie in a binary file beside it (`SharedRows`)
ROWS_KEY = "autointerp.rows"


class SharedRows:
    """A shared output too big to read whole: fixed-width binary rows, one per component position.

    On disk it is two files of ``harvest/shared/``: ``<name>.json``, the metadata
    (whatever the producer puts there, plus ``ROWS_KEY: {"file", "n", "row_bytes"}``),
    and ``<name>.rows``, ``n`` rows of ``row_bytes`` bytes. Both are written inside the
    harvest folder's atomic swap (`autointerp.harvest.write_harvest` calls
    `write_shared`), so they are complete or absent together; opening one checks
    that the rows file is there and has exactly ``n * row_bytes`` bytes. A row is one
    seek and one read, so a reader of one component never loads the table.

    Built in memory (``data``) by the producer, or opened on a saved folder (``path``).
    """

    def __init__(self, meta: dict[str, Any], *, data: bytes | None = None, path: Path | None = None):
        if (data is None) == (path is None):
            raise TypeError("SharedRows takes its rows as bytes or as the path of a rows file, one of them")
        info = meta.get(ROWS_KEY)
        if not isinstance(info, dict) or not all(isinstance(info.get(k), int) and info[k] >= 0 for k in ("n", "row_bytes")):
            raise ValueError(f"SharedRows metadata needs {ROWS_KEY}: {{'n': int, 'row_bytes': int}}, got {info!r}")
        self.meta = meta
        self.n: int = info["n"]
        self.row_bytes: int = info["row_bytes"]
        self._data = data
        self.path = path
        self._file: Any = None
        if data is not None and len(data) != self.n * self.row_bytes:
            raise ValueError(f"SharedRows: {len(data)} bytes for {self.n} rows of {self.row_bytes} bytes")

    @classmethod
    def build(cls, meta: dict[str, Any], data: bytes, n: int, row_bytes: int) -> SharedRows:
        return cls({**meta, ROWS_KEY: {"n": n, "row_bytes": row_bytes}}, data=data)

    @classmethod
    def open(cls, json_path: Path, meta: dict[str, Any]) -> SharedRows:
        """The rows beside ``json_path`` (``<name>.rows``), checked for presence and size."""
        from autointerp.records import HARVEST_FIX
        from autointerp.storage import CorruptRunFile

        path = json_path.with_suffix(".rows")
        info = meta.get(ROWS_KEY)
        ok = isinstance(info, dict) and all(isinstance(info.get(k), int) and info[k] >= 0 for k in ("n", "row_bytes"))
        if not ok:
            raise CorruptRunFile(json_path, None, f"{ROWS_KEY} is {info!r}",
                                 f"{ROWS_KEY}: {{\"n\": rows, \"row_bytes\": bytes a row}}", HARVEST_FIX)
        want = info["n"] * info["row_bytes"]
        size = path.stat().st_size if path.exists() else None
        if size != want:
            found = "missing" if size is None else f"{size:,} bytes"
            raise CorruptRunFile(path, None, f"the rows file is {found}",
                                 f"{want:,} bytes ({info['n']:,} rows of {info['row_bytes']} bytes, as {json_path.name} says)",
                                 HARVEST_FIX)
        return cls(meta, path=path)

    def row(self, i: int) -> bytes:
        """Row ``i`` (0 <= i < n) as bytes."""
        if not 0 <= i < self.n:
            raise IndexError(f"row {i} is out of range (the table has {self.n} rows)")
        lo = i * self.row_bytes
        if self._data is not None:
            return self._data[lo : lo + self.row_bytes]
        if self._file is None:
            self._file = open(self.path, "rb")  # type: ignore[arg-type]
        self._file.seek(lo)
        return self._file.read(self.row_bytes)

    def data(self) -> bytes:
        """Every row (reads the whole file)."""
        if self._data is not None:
            return self._data
        return self.path.read_bytes()  # type: ignore[union-attr]

    def write_shared(self, folder: Path, name: str) -> None:
        """Write ``<name>.rows`` then ``<name>.json`` into ``folder`` (a folder being built for a swap)."""
        import shutil

        rows = folder / f"{name}.rows"
        if self._data is not None:
            rows.write_bytes(self._data)
        else:
            shutil.copyfile(self.path, rows)  # type: ignore[arg-type]
        (folder / f"{name}.json").write_text(json.dumps(self.meta, allow_nan=False), encoding="utf-8")

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SharedRows) and self.meta == other.meta and self.data() == other.data()

    def __repr__(self) -> str:
        return f"SharedRows({self.meta.get('format', '?')}: {self.n:,} rows of {self.row_bytes} bytes)"


class SharedOutputs(MutableMapping):
    """The shared outputs of a saved harvest folder (``shared/<name>.json``), each read when first asked for.

    A mapping like the dict it replaces: its keys are the ``*.json`` names of the
    folder (listed when the mapping is made, nothing parsed), ``outputs[name]`` reads
    and checks that one file (a `SharedRows` table is opened, not read) and keeps
    it, so asking for the window pool never parses the weight-space neighbours and
    the other way round. Setting or deleting a key changes this mapping only, as
    it changed the dict (``save`` writes what the mapping then holds). ``reads``
    counts the files parsed.
    """

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self._names = sorted(p.stem for p in self.folder.glob("*.json")) if self.folder.is_dir() else []
        self._values: dict[str, Any] = {}
        self.reads = 0

    def _read(self, name: str) -> Any:
        from autointerp.records import read_shared_json

        path = self.folder / f"{name}.json"
        value = read_shared_json(path)
        self.reads += 1
        # a table with its rows beside it is opened, not read: a row is read when asked for
        return SharedRows.open(path, value) if isinstance(value, dict) and ROWS_KEY in value else value

    def __getitem__(self, name: str) -> Any:
        if name in self._values:
            return self._values[name]
        if name not in self._names:
            raise KeyError(name)
        value = self._values[name] = self._read(name)
        return value

    def __setitem__(self, name: str, value: Any) -> None:
        if name not in self._names:
            self._names.append(name)
        self._values[name] = value

    def __delitem__(self, name: str) -> None:
        if name not in self._names:
            raise KeyError(name)
        self._names.remove(name)
        self._values.pop(name, None)

    def __contains__(self, name: object) -> bool:
        return name in self._names

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._names))

    def __len__(self) -> int:
        return len(self._names)

    def __repr__(self) -> str:
        shown = ", ".join(f"{n!r}: {'read' if n in self._values else 'not read yet'}" for n in self._names)
        return f"SharedOutputs({{{shown}}})"
