"""SQLite-backed object store for the embedded API server.

Why this shape:

* One table of current objects keyed by ``(resource, namespace, name)`` holding the
  object as compact JSON, so adding a kind costs nothing and a LIST can splice stored
  bytes into the response without decoding them.
* One global, monotonically increasing ``resourceVersion`` shared by every kind (like
  etcd's revision). It is allocated in memory by the single writer (the file is
  ``flock``-ed, so only one process can open it) and persisted with the row.
* An event log (``events``) of the last ``window`` writes feeds watches from an old
  resourceVersion. Older entries are compacted; a watch from before the compaction
  point raises :class:`Expired` (the API turns it into ``410 Gone`` / ``Expired``).
* Every write is one transaction, committed before the caller acknowledges it, in WAL
  mode with ``synchronous=FULL``: an acknowledged write survives ``kill -9`` (and power
  loss on a disk that honours fsync).

This module is the I/O shell; it knows nothing about Kubernetes semantics beyond
``metadata.resourceVersion``. Callers run it on one thread (the event loop).
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from kedge.errors import PeerError, StateError

__all__ = [
    "Conflict",
    "AlreadyExists",
    "NotFound",
    "Expired",
    "WatchEvent",
    "Store",
]


class StoreError(PeerError):
    """A write or read the store refuses because of what the caller asked for."""

    code = "store_error"


class NotFound(StoreError):
    code = "not_found"


class AlreadyExists(StoreError):
    code = "already_exists"


class Conflict(StoreError):
    """The caller's resourceVersion precondition does not match the stored object."""

    code = "conflict"


class Expired(StoreError):
    """The requested resourceVersion is older than the retained event window."""

    code = "expired"


@dataclasses.dataclass(frozen=True)
class WatchEvent:
    """One committed change: ``type`` is ADDED, MODIFIED or DELETED."""

    rv: int
    type: str
    resource: str
    namespace: str
    name: str
    data: str  # the object JSON (for DELETED: the last state, stamped with the delete RV)
    index: str | None = None
    prev: str | None = None  # the previous object JSON (live events only, not replayed ones)
    prev_index: str | None = None  # the previous object's index value (live events only)

    def obj(self) -> dict[str, Any]:
        return json.loads(self.data)


_SCHEMA = """
CREATE TABLE IF NOT EXISTS objects (
    resource TEXT NOT NULL,
    namespace TEXT NOT NULL,
    name TEXT NOT NULL,
    rv INTEGER NOT NULL,
    idx TEXT,
    data TEXT NOT NULL,
    PRIMARY KEY (resource, namespace, name)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS objects_idx ON objects(resource, idx);
CREATE TABLE IF NOT EXISTS events (
    rv INTEGER PRIMARY KEY,
    type TEXT NOT NULL,
    resource TEXT NOT NULL,
    namespace TEXT NOT NULL,
    name TEXT NOT NULL,
    idx TEXT,
    data TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


def _stamp(obj: dict[str, Any], rv: int) -> str:
    meta = obj.setdefault("metadata", {})
    if not isinstance(meta, dict):
        raise StoreError("metadata must be an object", code="invalid")
    meta["resourceVersion"] = str(rv)
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def parse_rv(value: str | None) -> int | None:
    """Parse a client-supplied resourceVersion; empty means "none given"."""
    if value is None or value == "":
        return None
    if not value.isdigit() or len(value) > 19:
        raise StoreError("invalid resourceVersion", code="invalid_resource_version")
    return int(value)


class Store:
    """Objects, a global resourceVersion and a bounded event log in one SQLite file."""

    def __init__(self, path: str | os.PathLike[str], *, window: int = 10_000,
                 synchronous: str = "FULL") -> None:
        if window < 1:
            raise ValueError("window must be positive")
        if synchronous not in ("FULL", "NORMAL", "EXTRA"):
            raise ValueError("synchronous must be FULL, NORMAL or EXTRA")
        self.path = Path(path)
        self.window = window
        self._listeners: list[Callable[[WatchEvent], None]] = []
        # One writer process: hold an exclusive lock for our lifetime.
        lock = self.path.with_name(f".{self.path.name}.lock")
        self._lock_fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(self._lock_fd)
            raise StateError(f"{self.path} is in use by another process", code="store_locked") from exc
        if not self.path.exists():
            # Create the file 0600 before SQLite opens it.
            os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        try:
            self._db = sqlite3.connect(str(self.path), isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={synchronous}")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.executescript(_SCHEMA)
            row = self._db.execute(
                "SELECT max(m) FROM (SELECT max(rv) AS m FROM events UNION ALL "
                "SELECT max(rv) FROM objects UNION ALL SELECT value FROM meta WHERE key='rv')"
            ).fetchone()
            self._rv = int(row[0] or 0)
            row = self._db.execute("SELECT min(rv) FROM events").fetchone()
            self._compacted = (int(row[0]) - 1) if row[0] is not None else self._rv
        except sqlite3.DatabaseError as exc:
            os.close(self._lock_fd)
            raise StateError(f"{self.path} is not a usable store", code="corrupt_state") from exc
        self._writes_since_compact = 0

    # -- lifecycle -------------------------------------------------------------

    def close(self) -> None:
        try:
            self._db.close()
        finally:
            os.close(self._lock_fd)

    def subscribe(self, fn: Callable[[WatchEvent], None]) -> Callable[[], None]:
        """Call ``fn`` after each committed write; returns an unsubscribe function."""
        self._listeners.append(fn)
        return lambda: self._listeners.remove(fn) if fn in self._listeners else None

    @property
    def current_rv(self) -> int:
        return self._rv

    @property
    def compacted_rv(self) -> int:
        """Events with rv > this value are still in the log."""
        return self._compacted

    # -- reads -----------------------------------------------------------------

    def get_raw(self, resource: str, namespace: str, name: str) -> str | None:
        row = self._db.execute(
            "SELECT data FROM objects WHERE resource=? AND namespace=? AND name=?",
            (resource, namespace, name),
        ).fetchone()
        return row[0] if row else None

    def get(self, resource: str, namespace: str, name: str) -> dict[str, Any] | None:
        raw = self.get_raw(resource, namespace, name)
        return json.loads(raw) if raw is not None else None

    def list_raw(self, resource: str, namespace: str | None = None, *, index: str | None = None,
                 after: tuple[str, str] | None = None, limit: int | None = None) -> tuple[int, list[str]]:
        """Return ``(list_rv, [object JSON, ...])`` ordered by (namespace, name).

        ``index`` filters on the per-kind index column (``spec.nodeName`` for pods);
        ``after`` resumes after a (namespace, name) key for paginated lists.
        """
        sql = "SELECT data FROM objects WHERE resource=?"
        args: list[Any] = [resource]
        if namespace is not None:
            sql += " AND namespace=?"
            args.append(namespace)
        if index is not None:
            sql += " AND idx=?"
            args.append(index)
        if after is not None:
            sql += " AND (namespace, name) > (?, ?)"
            args.extend(after)
        sql += " ORDER BY namespace, name"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(int(limit))
        rows = self._db.execute(sql, args).fetchall()
        return self._rv, [r[0] for r in rows]

    def count(self, resource: str) -> int:
        return int(self._db.execute("SELECT count(*) FROM objects WHERE resource=?", (resource,)).fetchone()[0])

    def events_since(self, rv: int, resource: str | None = None) -> Iterator[WatchEvent]:
        """Yield committed events with ``rv > rv`` (for one resource if given).

        Raises :class:`Expired` when events after ``rv`` were already compacted away.
        """
        if rv < self._compacted:
            raise Expired(f"resourceVersion {rv} is older than {self._compacted}")
        if rv > self._rv:
            # A future resourceVersion: Kubernetes waits; we treat it as "now".
            return iter(())
        sql = "SELECT rv, type, resource, namespace, name, data, idx FROM events WHERE rv > ?"
        args: list[Any] = [rv]
        if resource is not None:
            sql += " AND resource=?"
            args.append(resource)
        sql += " ORDER BY rv"
        rows = self._db.execute(sql, args).fetchall()
        return (WatchEvent(r[0], r[1], r[2], r[3], r[4], r[5], r[6]) for r in rows)

    # -- writes ----------------------------------------------------------------

    def create(self, resource: str, namespace: str, name: str, obj: dict[str, Any], *,
               index: str | None = None) -> dict[str, Any]:
        """Insert a new object; stamps ``metadata.resourceVersion``. Raises AlreadyExists."""
        return self._write("ADDED", resource, namespace, name, obj, index)

    def update(self, resource: str, namespace: str, name: str, obj: dict[str, Any], *,
               expected_rv: int | None = None, index: str | None = None) -> dict[str, Any]:
        """Replace an object, optionally only if its stored rv equals ``expected_rv``."""
        prev, prev_index = self._check_precondition(resource, namespace, name, expected_rv)
        return self._write("MODIFIED", resource, namespace, name, obj, index, prev, prev_index)

    def delete(self, resource: str, namespace: str, name: str, *,
               expected_rv: int | None = None) -> dict[str, Any]:
        """Remove an object; returns its last state stamped with the deletion rv."""
        prev, prev_index = self._check_precondition(resource, namespace, name, expected_rv)
        # the DELETED event keeps the object's index so index-filtered watchers still see it
        return self._write("DELETED", resource, namespace, name, json.loads(prev), prev_index, prev, prev_index)

    def _check_precondition(self, resource: str, namespace: str, name: str,
                            expected_rv: int | None) -> tuple[str, str | None]:
        row = self._db.execute(
            "SELECT rv, data, idx FROM objects WHERE resource=? AND namespace=? AND name=?",
            (resource, namespace, name),
        ).fetchone()
        if row is None:
            raise NotFound(f"{resource} {namespace}/{name} not found")
        if expected_rv is not None and int(row[0]) != expected_rv:
            raise Conflict(f"{resource} {namespace}/{name} was modified")
        return str(row[1]), row[2]

    def _write(self, kind: str, resource: str, namespace: str, name: str,
               obj: dict[str, Any], index: str | None, prev: str | None = None,
               prev_index: str | None = None) -> dict[str, Any]:
        rv = self._rv + 1
        data = _stamp(obj, rv)
        cur = self._db.cursor()
        try:
            cur.execute("BEGIN IMMEDIATE")
            if kind == "DELETED":
                cur.execute("DELETE FROM objects WHERE resource=? AND namespace=? AND name=?",
                            (resource, namespace, name))
            elif kind == "ADDED":
                try:
                    cur.execute(
                        "INSERT INTO objects(resource, namespace, name, rv, idx, data) VALUES (?, ?, ?, ?, ?, ?)",
                        (resource, namespace, name, rv, index, data))
                except sqlite3.IntegrityError as exc:
                    cur.execute("ROLLBACK")
                    raise AlreadyExists(f"{resource} {namespace}/{name} exists") from exc
            else:
                cur.execute(
                    "INSERT OR REPLACE INTO objects(resource, namespace, name, rv, idx, data) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (resource, namespace, name, rv, index, data),
                )
            cur.execute(
                "INSERT INTO events(rv, type, resource, namespace, name, idx, data) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (rv, kind, resource, namespace, name, index, data),
            )
            cur.execute("COMMIT")
        except BaseException:
            if self._db.in_transaction:
                cur.execute("ROLLBACK")
            raise
        self._rv = rv
        self._writes_since_compact += 1
        if self._writes_since_compact >= max(1, self.window // 10):
            self.compact()
        event = WatchEvent(rv, kind, resource, namespace, name, data, index, prev, prev_index)
        for fn in list(self._listeners):
            fn(event)
        return obj

    def compact(self) -> None:
        """Drop events older than the retained window (the newest event always stays: it holds the rv)."""
        floor = self._rv - self.window
        if floor > self._compacted:
            with self._db:
                self._db.execute("BEGIN IMMEDIATE")
                self._db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('rv', ?)", (self._rv,))
                self._db.execute("DELETE FROM events WHERE rv <= ?", (floor,))
            self._compacted = floor
        self._writes_since_compact = 0
