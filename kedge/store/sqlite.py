"""SQLite-backed object store for the embedded API server.

Why this shape:

* One table of current objects keyed by ``(resource, namespace, name)`` holding the
  object as compact JSON, so adding a kind costs nothing and a LIST can splice stored
  bytes into the response without decoding them.
* One global, monotonically increasing ``resourceVersion`` shared by every kind (like
  etcd's revision). It is allocated in memory by the owner (the file is ``flock``-ed, so
  only one process can open it) and persisted with the row.
* An event log (``events``) of the last ``window`` writes feeds watches from an old
  resourceVersion. Older entries are compacted; a watch from before the compaction
  point raises :class:`Expired` (the API turns it into ``410 Gone`` / ``Expired``).
* Group commit. A write is decided on the owner's thread (the event loop): the
  precondition is checked against the newest accepted state, the resourceVersion is
  allocated and the object stamped, all before anything touches the disk -- so a stale
  resourceVersion is a :class:`Conflict` at once and writes keep their order. One writer
  thread then takes every write waiting at that moment and applies them in one
  transaction with one ``COMMIT`` in WAL mode with ``synchronous=FULL``: a few multi-row
  statements after checking that each object is still at the rv it was decided on, or,
  if not (an earlier write failed) or a statement fails, write by write, each in its own
  savepoint, so a write that fails there fails alone (and so do writes decided on it). Only after
  that commit is a write *published* on the owner's thread:
  listeners (watch fan-out) see events in resourceVersion order and the caller is
  acknowledged. So an acknowledged write survives ``kill -9`` (and power loss on a disk
  that honours fsync), and no SQLite work blocks the event loop's writers.

Reads: ``get``/``get_raw`` answer the newest accepted state (what a write must be decided
on) unless ``committed=True``; lists, counts and the event log read only committed state,
each from one snapshot. ``create``/``update``/``delete`` block until their write is
published, except inside :meth:`Store.deferred`, where they return at once and the caller
waits for the collected writes (:meth:`Store.wait` or :meth:`Store.wait_async`).

This module is the I/O shell; it knows nothing about Kubernetes semantics beyond
``metadata.resourceVersion``. The owner calls it from one thread.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import fcntl
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from kedge._internal import migrate
from kedge.errors import LocalError, PeerError, StateError
from kedge.store import rv as rv_text

__all__ = [
    "Conflict",
    "AlreadyExists",
    "NotFound",
    "Expired",
    "StorageFailed",
    "WatchEvent",
    "Store",
]

log = logging.getLogger(__name__)

MAX_BATCH_WRITES = 512  # writes per transaction
MAX_BATCH_BYTES = 16 * 1024 * 1024  # object bytes per transaction (one write may exceed it alone)
READ_BUSY_TIMEOUT_MS = 5000
ROW_CACHE_BYTES = 32 * 1024 * 1024  # recently read or written objects kept decoded-free in memory
ROW_CACHE_MAX_OBJECT = 256 * 1024


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


class StorageFailed(LocalError):
    """The database refused a transaction (I/O error, disk full, closed store): nothing was written."""

    code = "storage_failed"


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


# PRAGMA user_version. 1: the first release (which recorded none); 2: the version is recorded.
SCHEMA_VERSION = 2


def _v1_to_v2(db: sqlite3.Connection) -> None:
    """Nothing changes in the tables: schema 2 is schema 1 with ``user_version`` recorded."""


_MIGRATIONS = {1: _v1_to_v2}


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
    number = rv_text.parse(value)
    if number is None:
        raise StoreError("invalid resourceVersion", code="invalid_resource_version")
    return number


Key = tuple[str, str, str]
_ROWS_PER_STATEMENT = 128  # multi-row statements stay far below SQLite's bound-parameter limit


def _marks(rows: int, width: int) -> str:
    """``(?,?),(?,?),...``: placeholders for a multi-row statement (never any value)."""
    return ",".join(["(" + ",".join("?" * width) + ")"] * rows)


def _chunks(items: list[Any]) -> Iterator[list[Any]]:
    for i in range(0, len(items), _ROWS_PER_STATEMENT):
        yield items[i:i + _ROWS_PER_STATEMENT]


class PendingWrite:
    """One accepted write on its way to the disk (owned by the store; callers only wait on it)."""

    __slots__ = ("kind", "key", "rv", "data", "index", "prev", "prev_index", "base_rv", "error", "done",
                 "published", "waiters")

    def __init__(self, kind: str, key: Key, rv: int, data: str, index: str | None, prev: str | None,
                 prev_index: str | None, base_rv: int | None) -> None:
        self.kind, self.key, self.rv, self.data, self.index = kind, key, rv, data, index
        self.prev, self.prev_index = prev, prev_index
        self.base_rv = base_rv  # the stored rv this write was decided on (None: the object must not exist)
        self.error: BaseException | None = None  # set by the writer thread
        self.done: threading.Event | None = None  # the batch's "committed or failed" signal
        self.published = False
        self.waiters: list[asyncio.Future[None]] = []


class _Batch:
    __slots__ = ("writes", "done", "rv", "compacted", "failed")

    def __init__(self, writes: list[PendingWrite]) -> None:
        self.writes = writes
        self.done = threading.Event()
        self.rv = writes[-1].rv if writes else 0
        self.compacted: int | None = None
        self.failed = False


class Collector:
    """The writes made (and the pending writes read) inside one :meth:`Store.deferred` block."""

    def __init__(self) -> None:
        self.writes: list[PendingWrite] = []
        self.reads: list[PendingWrite] = []

    def __bool__(self) -> bool:
        return bool(self.writes or self.reads)


class Store:
    """Objects, a global resourceVersion and a bounded event log in one SQLite file."""

    def __init__(self, path: str | os.PathLike[str], *, window: int = 10_000,
                 synchronous: str = "FULL", sealer: Any = None) -> None:
        if window < 1:
            raise ValueError("window must be positive")
        if synchronous not in ("FULL", "NORMAL", "EXTRA"):
            raise ValueError("synchronous must be FULL, NORMAL or EXTRA")
        self.path = Path(path)
        self.window = window
        # Encryption at rest (kedge.store.sealing.Sealer): rows of sealer.resources are sealed on
        # their way to the file and opened on their way back; memory holds plaintext.
        self._sealer = sealer
        self._sealed: frozenset[str] = frozenset(sealer.resources) if sealer is not None else frozenset()
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
            # The write connection is used by the writer thread only (after this set-up).
            self._wdb = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False)
            self._wdb.execute("PRAGMA journal_mode=WAL")
            self._wdb.execute(f"PRAGMA synchronous={synchronous}")
            self._wdb.execute("PRAGMA foreign_keys=ON")
            if sealer is not None:
                self._wdb.execute("PRAGMA secure_delete=ON")  # no old (plaintext) content left in freed pages
            # Upgrade an older file (backed up first) or refuse a newer one: kedge._internal.migrate.
            migrate.upgrade_sqlite(self._wdb, self.path, SCHEMA_VERSION, _MIGRATIONS, what=str(self.path))
            self._wdb.executescript(_SCHEMA)
            row = self._wdb.execute(
                "SELECT max(m) FROM (SELECT max(rv) AS m FROM events UNION ALL "
                "SELECT max(rv) FROM objects UNION ALL SELECT value FROM meta WHERE key='rv')"
            ).fetchone()
            self._rv = int(row[0] or 0)
            row = self._wdb.execute("SELECT value FROM meta WHERE key='compacted'").fetchone()
            if row is None:
                row = self._wdb.execute("SELECT min(rv) - 1 FROM events").fetchone()
            self._compacted = int(row[0]) if row[0] is not None else self._rv
            with self._wdb:
                self._wdb.execute("BEGIN IMMEDIATE")
                self._wdb.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('rv', ?)", (self._rv,))
                self._wdb.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('compacted', ?)",
                                  (self._compacted,))
                resealed = self._reseal(self._wdb)
            if resealed:
                # The plaintext it replaced must not linger in the WAL (secure_delete wipes freed pages).
                self._wdb.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            # Reads happen on the owner's thread, on their own connection (WAL: never blocked by the writer).
            self._rdb = sqlite3.connect(str(self.path), isolation_level=None)
            self._rdb.execute(f"PRAGMA busy_timeout={READ_BUSY_TIMEOUT_MS}")
            self._rdb.execute("PRAGMA query_only=ON")
        except sqlite3.DatabaseError as exc:
            with contextlib.suppress(Exception):
                self._wdb.close()
            os.close(self._lock_fd)
            raise StateError(f"{self.path} is not a usable store", code="corrupt_state") from exc
        except StateError:  # e.g. sealed rows that do not open with the configured key
            with contextlib.suppress(Exception):
                self._wdb.close()
            os.close(self._lock_fd)
            raise
        self._published_rv = self._rv
        # Writer-side state (touched by the writer thread only, after start).
        self._w_rv = self._rv
        self._w_compacted = self._compacted
        self._w_since_compact = 0
        # Owner-side state.
        self._pending: dict[Key, PendingWrite] = {}  # newest accepted, unpublished write per key
        # Published rows by key, most recent last: reads of hot objects (a PATCH reads its object
        # twice) need no SQLite call -- each one gives up the GIL and waits to get it back.
        self._rows: collections.OrderedDict[Key, tuple[int, str, str | None]] = collections.OrderedDict()
        self._rows_bytes = 0
        self._collector: Collector | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        # Hand-over between the two.
        self._cv = threading.Condition()
        self._queue: collections.deque[PendingWrite] = collections.deque()
        self._force_compact = False
        self._done: collections.deque[_Batch] = collections.deque()
        self._closing = False
        self._closed = False
        self.transactions = 0  # committed write transactions (each holds one or more writes)
        # Metrics hook: seconds one write transaction took, called in the writer thread.
        self.on_commit: Callable[[float], None] | None = None
        self._writer = threading.Thread(target=self._write_loop, name="store-writer", daemon=True)
        self._writer.start()

    def _reseal(self, db: sqlite3.Connection) -> int:
        """Seal what is not sealed under the current key: rows written before encryption was
        switched on, and rows of a rotated-out key. Part of the opening transaction; returns how many."""
        if self._sealer is None:
            return 0
        done, checked = 0, False
        for resource in sorted(self._sealed):
            for table, cols in (("objects", "resource, namespace, name"), ("events", "rv, resource, namespace, name")):
                rows = db.execute(f"SELECT {cols}, data FROM {table} WHERE resource=?",  # nosec B608 - fixed names
                                  (resource,)).fetchall()
                for row in rows:
                    key, data = tuple(row[-4:-1]), row[-1]
                    if self._sealer.is_current(data):
                        if not checked:  # a wrong key file must fail here, clearly, not on some later read
                            self._sealer.open(key, data)
                            checked = True
                        continue
                    sealed = self._sealer.seal(key, self._sealer.open(key, data))
                    if table == "objects":
                        db.execute("UPDATE objects SET data=? WHERE resource=? AND namespace=? AND name=?",
                                   (sealed, *key))
                    else:
                        db.execute("UPDATE events SET data=? WHERE rv=?", (sealed, row[0]))
                    done += 1
        return done

    def _disk(self, key: Key, data: str) -> str:
        """What goes into the file for ``key``'s JSON (sealed for sealed resources)."""
        return self._sealer.seal(key, data) if key[0] in self._sealed else data

    def _plain(self, key: Key, data: str) -> str:
        return self._sealer.open(key, data) if key[0] in self._sealed else data

    # -- lifecycle -------------------------------------------------------------

    def close(self) -> None:
        """Finish the writes already accepted, publish them, then close the files."""
        if self._closed:
            return
        self._closed = True
        with self._cv:
            self._closing = True
            self._cv.notify()
        self._writer.join()
        try:
            self._publish()
        finally:
            self._rows.clear()  # a closed store answers nothing, not even from memory
            self._rows_bytes = 0
            try:
                self._rdb.close()
                self._wdb.close()
            finally:
                os.close(self._lock_fd)

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """Publish finished batches on ``loop`` (the owner's thread) as they complete."""
        self._loop = loop

    def subscribe(self, fn: Callable[[WatchEvent], None]) -> Callable[[], None]:
        """Call ``fn`` after each committed write, in resourceVersion order; returns an unsubscribe function."""
        self._listeners.append(fn)
        return lambda: self._listeners.remove(fn) if fn in self._listeners else None

    @property
    def current_rv(self) -> int:
        """The newest published resourceVersion: every write up to it is committed and announced."""
        return self._published_rv

    @property
    def latest_rv(self) -> int:
        """The newest allocated resourceVersion (including writes not yet committed)."""
        return self._rv

    @property
    def compacted_rv(self) -> int:
        """Events with rv > this value are still in the log."""
        return self._compacted

    # -- reads -----------------------------------------------------------------

    def get_raw(self, resource: str, namespace: str, name: str, *, committed: bool = False) -> str | None:
        """The object's JSON: the newest accepted state, or with ``committed`` the newest committed one.

        Inside :meth:`deferred`, reading an object whose newest state is not yet committed
        makes the caller wait for that write too (its answer depends on it).
        """
        if not committed:
            w = self._pending.get((resource, namespace, name))
            if w is not None:
                if self._collector is not None:
                    self._collector.reads.append(w)
                return None if w.kind == "DELETED" else w.data
        row = self._row((resource, namespace, name))
        return row[1] if row else None

    def _row(self, key: Key) -> tuple[int, str, str | None] | None:
        """The published (committed) row of ``key``: ``(rv, data, index)``."""
        row = self._rows.get(key)
        if row is not None:
            self._rows.move_to_end(key)
            return row
        found = self._rdb.execute("SELECT rv, data, idx FROM objects WHERE resource=? AND namespace=? AND name=?",
                                  key).fetchone()
        if found is None:
            return None
        row = (int(found[0]), self._plain(key, str(found[1])), found[2])
        self._remember(key, row)
        return row

    def _remember(self, key: Key, row: tuple[int, str, str | None] | None) -> None:
        old = self._rows.pop(key, None)
        if old is not None:
            self._rows_bytes -= len(old[1])
        if row is None or len(row[1]) > ROW_CACHE_MAX_OBJECT:
            return
        self._rows[key] = row
        self._rows_bytes += len(row[1])
        while self._rows_bytes > ROW_CACHE_BYTES:
            _, gone = self._rows.popitem(last=False)
            self._rows_bytes -= len(gone[1])

    def get(self, resource: str, namespace: str, name: str, *, committed: bool = False) -> dict[str, Any] | None:
        raw = self.get_raw(resource, namespace, name, committed=committed)
        return json.loads(raw) if raw is not None else None

    def list_raw(self, resource: str, namespace: str | None = None, *, index: str | None = None,
                 after: tuple[str, str] | None = None, limit: int | None = None) -> tuple[int, list[str]]:
        """Return ``(list_rv, [object JSON, ...])`` ordered by (namespace, name), committed state only.

        ``index`` filters on the per-kind index column (``spec.nodeName`` for pods);
        ``after`` resumes after a (namespace, name) key for paginated lists. ``list_rv`` is
        the resourceVersion of the snapshot the rows come from (a watch from it misses nothing).
        """
        sql = "SELECT data, namespace, name FROM objects WHERE resource=?"
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
        published = self._published_rv
        with self._snapshot() as db:
            snap = db.execute("SELECT value FROM meta WHERE key='rv'").fetchone()
            rows = db.execute(sql, args).fetchall()
        if resource in self._sealed:
            return max(published, int(snap[0]) if snap else 0), [self._plain((resource, r[1], r[2]), r[0]) for r in rows]
        return max(published, int(snap[0]) if snap else 0), [r[0] for r in rows]

    def names(self, resource: str, namespace: str) -> list[str]:
        """Names of the objects of ``resource`` in ``namespace`` in the newest accepted state."""
        rows = self._rdb.execute("SELECT name FROM objects WHERE resource=? AND namespace=?",
                                 (resource, namespace)).fetchall()
        out = {r[0] for r in rows}
        for (res, ns, name), w in self._pending.items():
            if res == resource and ns == namespace:
                if w.kind == "DELETED":
                    out.discard(name)
                else:
                    out.add(name)
        return sorted(out)

    def count(self, resource: str) -> int:
        return int(self._rdb.execute("SELECT count(*) FROM objects WHERE resource=?", (resource,)).fetchone()[0])

    def events_since(self, rv: int, resource: str | None = None) -> Iterator[WatchEvent]:
        """Yield published events with ``rv > rv`` (for one resource if given).

        Raises :class:`Expired` when events after ``rv`` were already compacted away. Events
        committed but not yet published are left out: they reach watchers when published.
        """
        if rv < self._compacted:
            raise Expired(f"resourceVersion {rv} is older than {self._compacted}")
        published = self._published_rv
        if rv >= published:
            # Nothing published after it (a future resourceVersion: Kubernetes waits; we treat it as "now").
            return iter(())
        sql = "SELECT rv, type, resource, namespace, name, data, idx FROM events WHERE rv > ? AND rv <= ?"
        args: list[Any] = [rv, published]
        if resource is not None:
            sql += " AND resource=?"
            args.append(resource)
        sql += " ORDER BY rv"
        with self._snapshot() as db:
            floor = db.execute("SELECT value FROM meta WHERE key='compacted'").fetchone()
            if floor is not None and rv < int(floor[0]):
                raise Expired(f"resourceVersion {rv} is older than {int(floor[0])}")
            rows = db.execute(sql, args).fetchall()
        return (WatchEvent(r[0], r[1], r[2], r[3], r[4], self._plain((r[2], r[3], r[4]), r[5]), r[6]) for r in rows)

    @contextlib.contextmanager
    def _snapshot(self) -> Iterator[sqlite3.Connection]:
        """Several reads from one committed state."""
        db = self._rdb
        db.execute("BEGIN")
        try:
            yield db
        finally:
            db.execute("COMMIT")

    # -- writes ----------------------------------------------------------------

    def create(self, resource: str, namespace: str, name: str, obj: dict[str, Any], *,
               index: str | None = None) -> dict[str, Any]:
        """Insert a new object; stamps ``metadata.resourceVersion``. Raises AlreadyExists."""
        if self.get_raw(resource, namespace, name) is not None:
            raise AlreadyExists(f"{resource} {namespace}/{name} exists")
        return self._submit("ADDED", (resource, namespace, name), obj, index, None, None, None)

    def update(self, resource: str, namespace: str, name: str, obj: dict[str, Any], *,
               expected_rv: int | None = None, index: str | None = None) -> dict[str, Any]:
        """Replace an object, optionally only if its stored rv equals ``expected_rv``."""
        base, prev, prev_index = self._check_precondition(resource, namespace, name, expected_rv)
        return self._submit("MODIFIED", (resource, namespace, name), obj, index, prev, prev_index, base)

    def delete(self, resource: str, namespace: str, name: str, *,
               expected_rv: int | None = None) -> dict[str, Any]:
        """Remove an object; returns its last state stamped with the deletion rv."""
        base, prev, prev_index = self._check_precondition(resource, namespace, name, expected_rv)
        # the DELETED event keeps the object's index so index-filtered watchers still see it
        return self._submit("DELETED", (resource, namespace, name), json.loads(prev), prev_index, prev,
                            prev_index, base)

    def _check_precondition(self, resource: str, namespace: str, name: str,
                            expected_rv: int | None) -> tuple[int, str, str | None]:
        key = (resource, namespace, name)
        w = self._pending.get(key)
        if w is not None:
            if w.kind == "DELETED":
                raise NotFound(f"{resource} {namespace}/{name} not found")
            current: tuple[int, str, str | None] = (w.rv, w.data, w.index)
        else:
            row = self._row(key)
            if row is None:
                raise NotFound(f"{resource} {namespace}/{name} not found")
            current = row
        if expected_rv is not None and current[0] != expected_rv:
            raise Conflict(f"{resource} {namespace}/{name} was modified")
        return current

    def _submit(self, kind: str, key: Key, obj: dict[str, Any], index: str | None, prev: str | None,
                prev_index: str | None, base_rv: int | None) -> dict[str, Any]:
        if self._closing:
            raise StorageFailed("the store is closed")
        rv = self._rv + 1
        data = _stamp(obj, rv)
        w = PendingWrite(kind, key, rv, data, index, prev, prev_index, base_rv)
        self._rv = rv
        self._pending[key] = w
        with self._cv:
            self._queue.append(w)
            self._cv.notify()
        if self._collector is not None:
            self._collector.writes.append(w)
        else:
            self._wait_sync([w])
            if w.error is not None:
                raise w.error
        return obj

    def compact(self) -> None:
        """Drop events older than the retained window now (the writer also does so every window/10 writes)."""
        with self._cv:
            self._force_compact = True
            self._cv.notify()
            # The writer compacts with its next transaction; it clears the flag once that committed.
            while self._force_compact and self._writer.is_alive():
                self._cv.wait(0.05)
        self._publish()

    # -- waiting for writes ------------------------------------------------------

    @contextlib.contextmanager
    def deferred(self) -> Iterator[Collector]:
        """Writes inside return at once (decided, not yet durable); wait on the collector before answering."""
        outer, self._collector = self._collector, Collector()
        try:
            yield self._collector
        finally:
            self._collector = outer

    def outcome(self, c: Collector) -> BaseException | None:
        """After waiting: the first failure among ``c``'s writes (a read dependency that failed is a Conflict)."""
        for w in c.writes:
            if w.error is not None:
                return w.error
        for w in c.reads:
            if w.error is not None:
                return Conflict("an object this answer depends on could not be written")
        return None

    def wait(self, c: Collector) -> BaseException | None:
        """Block until every write in ``c`` is published; returns :meth:`outcome`."""
        self._wait_sync(c.writes + c.reads)
        return self.outcome(c)

    async def wait_async(self, c: Collector) -> BaseException | None:
        """Wait (on the attached loop) until every write in ``c`` is published; returns :meth:`outcome`."""
        if self._loop is None:
            return self.wait(c)
        self._publish()
        for w in c.writes + c.reads:
            if not w.published:
                fut = self._loop.create_future()
                w.waiters.append(fut)
                await fut
        return self.outcome(c)

    def _wait_sync(self, writes: list[PendingWrite]) -> None:
        for w in writes:
            while not w.published:
                if w.done is not None:
                    w.done.wait()
                else:
                    with self._cv:  # not yet taken by the writer: wait for it to pick the write up
                        if w.done is None:
                            self._cv.wait(0.05)
                self._publish()

    # -- publishing (owner's thread) -----------------------------------------------

    def _publish(self) -> None:
        """Announce finished batches in order: listeners, then the waiting callers."""
        while self._done:
            batch = self._done.popleft()
            for w in batch.writes:
                if self._pending.get(w.key) is w:
                    del self._pending[w.key]
                if w.error is None:
                    self._remember(w.key, None if w.kind == "DELETED" else (w.rv, w.data, w.index))
            self._published_rv = max(self._published_rv, batch.rv)
            if batch.compacted is not None:
                self._compacted = max(self._compacted, batch.compacted)
            for w in batch.writes:
                if w.error is None:
                    (resource, namespace, name) = w.key
                    event = WatchEvent(w.rv, w.kind, resource, namespace, name, w.data, w.index, w.prev, w.prev_index)
                    for fn in list(self._listeners):
                        try:
                            fn(event)
                        except Exception:  # noqa: BLE001 - one listener's bug must not hide the event from others
                            log.exception("store listener failed on %s %s/%s", w.kind, namespace, name)
            for w in batch.writes:
                w.published = True
                for fut in w.waiters:
                    if not fut.done():
                        fut.set_result(None)
                w.waiters.clear()

    def _notify_owner(self) -> None:
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: close() publishes the rest
                loop.call_soon_threadsafe(self._publish)

    # -- the writer thread -------------------------------------------------------------

    def _write_loop(self) -> None:
        while True:
            with self._cv:
                while not self._queue and not self._closing and not self._force_compact:
                    self._cv.wait()
                if not self._queue and not self._force_compact:
                    return  # closing and drained
                writes: list[PendingWrite] = []
                size = 0
                while self._queue and len(writes) < MAX_BATCH_WRITES and (not writes or size < MAX_BATCH_BYTES):
                    w = self._queue.popleft()
                    writes.append(w)
                    size += len(w.data)
                force = self._force_compact
                batch = _Batch(writes)
                for w in writes:
                    w.done = batch.done
            started = time.monotonic()
            self._commit(batch, force)
            if self.on_commit is not None and not batch.failed:
                try:
                    self.on_commit(time.monotonic() - started)
                except Exception:  # noqa: BLE001 - metrics must never stop the writer
                    log.exception("store commit hook failed")
            self._done.append(batch)
            batch.done.set()
            with self._cv:
                if force:
                    self._force_compact = False
                self._cv.notify_all()
            self._notify_owner()

    def _commit(self, batch: _Batch, force_compact: bool) -> None:
        db = self._wdb
        try:
            db.execute("BEGIN IMMEDIATE")
            writes = [w for w in batch.writes if self._storable(w)]
            if not self._apply_together(db, writes):
                for w in writes:
                    db.execute("SAVEPOINT w")
                    try:
                        self._apply(db, w)
                    except (StoreError, sqlite3.IntegrityError, sqlite3.DataError, sqlite3.InterfaceError,
                            UnicodeError, ValueError, OverflowError) as exc:
                        # This write alone is refused; the others in the transaction go ahead.
                        db.execute("ROLLBACK TO w")
                        w.error = exc if isinstance(exc, StoreError) else StoreError(
                            "the object cannot be stored", code="invalid")
                    db.execute("RELEASE w")
            self._w_rv = max(self._w_rv, batch.rv)
            # The snapshot's resourceVersion (lists answer it) and the rv that survives deleting everything.
            db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('rv', ?)", (self._w_rv,))
            self._w_since_compact += len(batch.writes)
            compacted = None
            if force_compact or self._w_since_compact >= max(1, self.window // 10):
                floor = self._w_rv - self.window
                if floor > self._w_compacted:
                    db.execute("DELETE FROM events WHERE rv <= ?", (floor,))
                    db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('compacted', ?)", (floor,))
                    compacted = floor
                self._w_since_compact = 0
            db.execute("COMMIT")
            self.transactions += 1
            if compacted is not None:
                self._w_compacted = compacted
                batch.compacted = compacted
        except Exception as exc:  # noqa: BLE001 - whatever the database did, every caller gets an answer
            with contextlib.suppress(sqlite3.Error):
                if db.in_transaction:
                    db.execute("ROLLBACK")
            log.error("store transaction of %d writes failed: %s", len(batch.writes), type(exc).__name__)
            batch.failed = True
            for w in batch.writes:
                w.error = StorageFailed("the write could not be committed")

    @staticmethod
    def _storable(w: PendingWrite) -> bool:
        """Refuse, alone, a write whose text SQLite cannot take (e.g. a lone surrogate from a JSON escape)."""
        try:
            for text in (w.data, w.index or "", *w.key):
                text.encode("utf-8")
        except UnicodeError:
            w.error = StoreError("the object cannot be stored", code="invalid")
            return False
        return True

    def _apply_together(self, db: sqlite3.Connection, writes: list[PendingWrite]) -> bool:
        """Apply ``writes`` with a few multi-row statements; False (nothing applied) when any
        write was decided on a state that is not the stored one, or a statement fails: then
        the caller applies them one by one, each alone on failure.

        Why: every statement the sqlite3 module runs releases and re-takes the GIL, and in a
        busy process each re-take waits behind other threads -- per-row statements made the
        writer's transaction, and so every caller's acknowledgement, slow.
        """
        if not writes:
            return True
        first: dict[Key, PendingWrite] = {}
        last: dict[Key, PendingWrite] = {}
        for w in writes:
            before = last.get(w.key)
            if before is None:
                first[w.key] = w
            elif w.base_rv != (None if before.kind == "DELETED" else before.rv):
                return False  # a chain within the batch that does not hold: sort it out one by one
            last[w.key] = w
        try:
            db.execute("SAVEPOINT together")
            try:
                for part in _chunks(list(first.values())):
                    sql = (f"SELECT count(*) FROM (VALUES {_marks(len(part), 4)}) AS v "  # nosec B608 - only placeholders
                           "LEFT JOIN objects AS o ON o.resource=v.column1 AND o.namespace=v.column2 "
                           "AND o.name=v.column3 WHERE o.rv IS NOT v.column4")
                    bad = db.execute(sql, [x for w in part for x in (*w.key, w.base_rv)]).fetchone()
                    if bad[0]:
                        db.execute("ROLLBACK TO together")
                        return False
                gone = [w for w in last.values() if w.kind == "DELETED"]
                for part in _chunks(gone):
                    sql = f"DELETE FROM objects WHERE (resource, namespace, name) IN (VALUES {_marks(len(part), 3)})"  # nosec B608 - only placeholders
                    db.execute(sql, [x for w in part for x in w.key])
                kept = [w for w in last.values() if w.kind != "DELETED"]
                for part in _chunks(kept):
                    sql = (f"INSERT INTO objects(resource, namespace, name, rv, idx, data) VALUES {_marks(len(part), 6)} "  # nosec B608 - only placeholders
                           "ON CONFLICT(resource, namespace, name) DO UPDATE SET rv=excluded.rv, idx=excluded.idx, "
                           "data=excluded.data")
                    db.execute(sql, [x for w in part for x in (*w.key, w.rv, w.index, self._disk(w.key, w.data))])
                for part in _chunks(writes):
                    sql = f"INSERT INTO events(rv, type, resource, namespace, name, idx, data) VALUES {_marks(len(part), 7)}"  # nosec B608 - only placeholders
                    db.execute(sql, [x for w in part for x in (w.rv, w.kind, *w.key, w.index, self._disk(w.key, w.data))])
            except sqlite3.DatabaseError:
                if not db.in_transaction:
                    raise  # the whole transaction is gone (I/O error, disk full): nothing to retry here
                db.execute("ROLLBACK TO together")
                return False
        finally:
            if db.in_transaction:
                db.execute("RELEASE together")
        return True

    def _apply(self, db: sqlite3.Connection, w: PendingWrite) -> None:
        resource, namespace, name = w.key
        row = db.execute("SELECT rv FROM objects WHERE resource=? AND namespace=? AND name=?", w.key).fetchone()
        stored = int(row[0]) if row else None
        if stored != w.base_rv:
            # Decided on a state that never reached the disk (an earlier write failed).
            if w.base_rv is None:
                raise AlreadyExists(f"{resource} {namespace}/{name} exists")
            if stored is None:
                raise NotFound(f"{resource} {namespace}/{name} not found")
            raise Conflict(f"{resource} {namespace}/{name} was modified")
        data = self._disk(w.key, w.data)
        if w.kind == "DELETED":
            db.execute("DELETE FROM objects WHERE resource=? AND namespace=? AND name=?", w.key)
        elif w.kind == "ADDED":
            db.execute("INSERT INTO objects(resource, namespace, name, rv, idx, data) VALUES (?, ?, ?, ?, ?, ?)",
                       (resource, namespace, name, w.rv, w.index, data))
        else:
            db.execute("UPDATE objects SET rv=?, idx=?, data=? WHERE resource=? AND namespace=? AND name=?",
                       (w.rv, w.index, data, resource, namespace, name))
        db.execute("INSERT INTO events(rv, type, resource, namespace, name, idx, data) VALUES (?, ?, ?, ?, ?, ?, ?)",
                   (w.rv, w.kind, resource, namespace, name, w.index, data))
