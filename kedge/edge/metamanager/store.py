"""The edge's durable store of everything the node was given (``EDGEDIR/edge.db``).

Why this shape:

* **One row per key** ``<namespace>/<type>/<name>`` (KubeEdge's edge resource
  string) holding type, namespace, name, the resourceVersion as an integer, a
  deleted flag (a *tombstone*), ``updated_at`` and the object bytes. Tombstones
  keep their rv so a late, stale insert cannot resurrect a deleted object (the
  decision itself is the pure :func:`kedge.edge.metamanager.decide.decide`).
* **Durable before acknowledged.** Every :meth:`MetaStore.apply` is one
  ``BEGIN IMMEDIATE`` transaction (read the stored version, decide, write) in WAL
  mode with ``synchronous=FULL``: when ``apply`` returns, the write is in the
  fsync'ed WAL and survives ``kill -9`` and power loss; only then does the
  handler ack. ``BEGIN IMMEDIATE`` also makes read-decide-write atomic against a
  second process that opens the same file.
* **Secrets encrypted at rest.** Objects of the types in :data:`SEALED_TYPES`
  are stored as ``nonce(12) || AES-256-GCM(key, json, aad)`` with a fresh random
  96-bit nonce per write and ``aad = b"kedge-edge-v1\\0" + key + b"\\0" + rv``, so
  a ciphertext cannot be moved onto another row or another version. Their
  plaintext never reaches SQLite, so neither ``edge.db`` nor its ``-wal``/``-shm``
  ever holds it. The key is 32 random bytes in ``EDGEDIR/edge.key`` (0600 from
  creation, published with ``link`` so two starters cannot end up with two keys).
  A check value in the ``meta`` table (``key_mac``: HMAC-SHA256 of a fixed
  label under the key) proves on open that the key file belongs to this
  database: a wrong key is ``StateError(edge_key_mismatch)``, never garbage.
  (Stores created before ``key_mac`` hold an AES-GCM sealed ``key_check``; it is
  verified once and ``key_mac`` added.) The AES-GCM cipher -- and with it
  ``cryptography`` -- is loaded only when a sealed row is first written or read,
  so an edge without secrets does not carry it. A row of a sealed type stored unsealed, or whose tag fails, is
  ``StateError(edge_store_corrupt)``.
* **Files private from creation**: the directory is made 0700, ``edge.db`` is
  created 0600 before SQLite opens it (SQLite gives ``-wal``/``-shm`` the same
  mode).
* **One connection, one lock.** Handlers call in from ``asyncio.to_thread``
  workers and edged reads from its own threads, so every use of the connection
  is serialised by an ``RLock``. Change callbacks (:meth:`on_change`) run under
  that lock right after the commit, in commit order, on the writer's thread:
  they may read the store but must be quick and hand work to their own loop
  (e.g. ``loop.call_soon_threadsafe``).

Nothing here logs an object: objects may be secrets.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import hmac
import json
import logging
import os
import secrets
import sqlite3
import stat
import threading
from collections.abc import Callable, Collection, Iterator
from pathlib import Path
from typing import Any

from kedge._internal import fsutil, migrate
from kedge.edge.metamanager.decide import (
    WRITE_OPERATIONS,
    Decision,
    PrunePolicy,
    UnsupportedOperation,
    decide,
    format_rv,
    parse_rv,
    tombstones_to_prune,
)
from kedge.errors import ProtocolError, StateError
from kedge.protocol.message import Resource

DEFAULT_PRUNE_POLICY = PrunePolicy()  # frozen: one shared default

__all__ = [
    "KEY_BYTES",
    "SEALED_TYPES",
    "ApplyResult",
    "InvalidObject",
    "MetaStore",
    "load_or_create_key",
]

log = logging.getLogger(__name__)

KEY_BYTES = 32
NONCE_BYTES = 12
SEALED_TYPES: frozenset[str] = frozenset({"secret", "serviceaccounttoken"})
# PRAGMA user_version (kedge._internal.migrate). 1: the first release, which kept its version
# in meta('schema'); 2: user_version, like every kedge store.
SCHEMA_VERSION = 2
# objects.deleted: 0 live, 1 tombstone, 2 tombstone of a *release* (deleted at the rv the edge
# held live: the cloud no longer needs it here, it was not necessarily deleted).
LIVE, TOMBSTONE, RELEASED = 0, 1, 2
# Types whose released version may come back at the same rv (a configmap or secret a pod
# references again). Never pods: a late resend must not restart a pod's processes.
REVIVABLE_TYPES: frozenset[str] = frozenset({"configmap", "secret"})
_AAD_PREFIX = b"kedge-edge-v1\x00"
_KEY_CHECK_AAD = b"kedge-edge-key-check-v1"
_KEY_CHECK_PLAIN = b"kedge edge.key belongs to this edge.db"
_KEY_MAC_LABEL = b"kedge-edge-key-check-v2\x00kedge edge.key belongs to this edge.db"

ChangeCallback = Callable[[str, "dict[str, Any] | None"], None]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS objects (
    key TEXT NOT NULL UNIQUE,
    type TEXT NOT NULL,
    namespace TEXT NOT NULL,
    name TEXT NOT NULL,
    rv INTEGER NOT NULL,
    deleted INTEGER NOT NULL,
    updated_at REAL NOT NULL,
    sealed INTEGER NOT NULL,
    data BLOB
);
CREATE INDEX IF NOT EXISTS objects_by_type ON objects(type, namespace);
CREATE INDEX IF NOT EXISTS objects_tombstones ON objects(deleted, updated_at);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value BLOB NOT NULL);
"""


def _v1_to_v2(db: sqlite3.Connection) -> None:
    """Move the version from ``meta('schema')`` to ``user_version`` (which the framework sets).

    The row goes: the first release refuses a store without it, so it also refuses this one."""
    row = db.execute("SELECT value FROM meta WHERE name = 'schema'").fetchone()
    if row is not None and row[0] != 1:
        raise StateError("edge.db has an unknown schema version", code="edge_store_version")
    db.execute("DELETE FROM meta WHERE name = 'schema'")


_MIGRATIONS = {1: _v1_to_v2}


class InvalidObject(ProtocolError):
    """The object given for an insert/update/patch is not a storable JSON object."""

    code = "invalid_object"


@dataclasses.dataclass(frozen=True)
class ApplyResult:
    """Outcome of one :meth:`MetaStore.apply`: what was decided and what the store now holds."""

    key: str
    decision: Decision
    rv: str  # the incoming change's rv
    stored_rv: str  # the rv the store holds for the key afterwards
    deleted: bool  # whether the stored version is a tombstone

    @property
    def result(self) -> str:
        return self.decision.value


def _corrupt(detail: str) -> StateError:
    return StateError(detail, code="edge_store_corrupt")


def _key_mismatch() -> StateError:
    return StateError(
        "edge.key does not belong to this edge.db (wrong or replaced key file); restore the "
        "node's key, or move edge.db aside so the node re-syncs from the cloud",
        code="edge_key_mismatch",
    )


def _key_mac(key: bytes) -> bytes:
    return hmac.new(key, _KEY_MAC_LABEL, hashlib.sha256).digest()


def load_or_create_key(key_path: str | os.PathLike[str]) -> bytes:
    """Read the 32-byte store key, creating it (0600 from the first byte) if missing.

    A new key is written to a private temp file, fsync'ed, then published with
    ``os.link`` -- which fails if another process published one first, in which
    case that key wins. A key file that is not a regular 32-byte file readable
    only by its owner is refused (``edge_key_invalid`` / ``edge_key_permissions``).
    """
    path = Path(key_path)
    if not path.exists():
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
        fsutil.create_exclusive(tmp, secrets.token_bytes(KEY_BYTES))
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass  # someone else created it first: use theirs
        finally:
            os.unlink(tmp)
        _fsync_dir(path.parent)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as exc:
        raise StateError(f"cannot open the edge store key {path}", code="edge_key_invalid") from exc
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size != KEY_BYTES:
            raise StateError(f"{path} is not a {KEY_BYTES}-byte key file", code="edge_key_invalid")
        if st.st_mode & 0o077:
            raise StateError(f"{path} is readable by others; it must be 0600", code="edge_key_permissions")
        data = os.read(fd, KEY_BYTES + 1)
    finally:
        os.close(fd)
    if len(data) != KEY_BYTES:
        raise StateError(f"{path} is not a {KEY_BYTES}-byte key file", code="edge_key_invalid")
    return data


def _fsync_dir(path: Path) -> None:
    """Make a new directory entry (the published key) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _parse_key(key: str) -> Resource:
    res = Resource.parse(key)
    if res.is_list:
        raise ProtocolError("a stored object needs <namespace>/<type>/<name>", code="bad_resource")
    return res


def _encode_object(obj: Any, rv: str) -> bytes:
    """Compact JSON of ``obj`` with ``metadata.resourceVersion`` set to ``rv``.

    ``ensure_ascii`` keeps lone surrogates (legal in JSON, not in UTF-8) storable.
    """
    if not isinstance(obj, dict):
        raise InvalidObject("object must be a JSON object")
    meta = obj.get("metadata")
    if meta is not None:
        if not isinstance(meta, dict):
            raise InvalidObject("metadata must be a JSON object")
        obj = {**obj, "metadata": {**meta, "resourceVersion": rv}}
    try:
        return json.dumps(obj, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode("ascii")
    except (TypeError, ValueError, RecursionError) as exc:
        raise InvalidObject("object is not encodable JSON") from exc


class MetaStore:
    """SQLite store of the node's objects; see the module docstring for the guarantees."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        key_path: str | os.PathLike[str],
        *,
        prune_policy: PrunePolicy = DEFAULT_PRUNE_POLICY,
        prune_every: int = 256,
        synchronous: str = "FULL",
        busy_timeout_ms: int = 5000,
    ) -> None:
        if synchronous not in ("FULL", "EXTRA"):
            raise ValueError("an acked write must survive power loss: synchronous is FULL or EXTRA")
        self.path = Path(path)
        fsutil.make_private_dir(self.path.parent)
        key = load_or_create_key(key_path)
        if not self.path.exists():
            try:
                os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600))
            except FileExistsError:
                pass  # created concurrently; SQLite opens what is there
        self._init(str(self.path), key, prune_policy, prune_every, synchronous, busy_timeout_ms)

    @classmethod
    def in_memory(cls, key: bytes, *, prune_policy: PrunePolicy = DEFAULT_PRUNE_POLICY,
                  prune_every: int = 256) -> MetaStore:
        """A store in SQLite's ``:memory:`` (fuzzing, pure tests); same code paths otherwise."""
        self = cls.__new__(cls)
        self.path = Path(":memory:")
        self._init(":memory:", key, prune_policy, prune_every, "FULL", 0)
        return self

    def _init(self, target: str, key: bytes, prune_policy: PrunePolicy, prune_every: int, synchronous: str,
              busy_timeout_ms: int) -> None:
        if not isinstance(key, bytes) or len(key) != KEY_BYTES:
            raise StateError("the edge store key must be 32 bytes", code="edge_key_invalid")
        if prune_every < 1:
            raise ValueError("prune_every must be positive")
        self._key = key
        self._aead_obj: Any = None  # AESGCM, created on first use (see _aead)
        self._prune_policy = prune_policy
        self._prune_every = prune_every
        self._tombstones_written = 0
        self._lock = threading.RLock()
        self._callbacks: list[ChangeCallback] = []
        self._closed = False
        try:
            self._db = sqlite3.connect(target, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise StateError(f"cannot open {target}", code="edge_store_corrupt") from exc
        try:
            mode = self._db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode not in ("wal", "memory"):
                raise StateError(f"{target} cannot use WAL (journal_mode={mode})", code="edge_store_io")
            self._db.execute(f"PRAGMA synchronous={synchronous}")
            self._db.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
            # Upgrade an older file (backed up first) or refuse a newer one.
            migrate.upgrade_sqlite(self._db, None if target == ":memory:" else target, SCHEMA_VERSION,
                                   _MIGRATIONS, what=target)
            self._db.executescript(_SCHEMA)
            self._check_key()
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise StateError(f"{target} is not a usable edge store", code="edge_store_corrupt") from exc
        except StateError:
            self._db.close()
            raise

    def _check_key(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            rows = dict(self._db.execute("SELECT name, value FROM meta").fetchall())
            mac = _key_mac(self._key)
            if "key_mac" not in rows and "key_check" not in rows:  # a new store
                self._db.execute("INSERT INTO meta(name, value) VALUES ('key_mac', ?)", (mac,))
            else:
                if "key_mac" in rows:
                    stored = rows["key_mac"]
                    if not isinstance(stored, bytes) or not hmac.compare_digest(stored, mac):
                        raise _key_mismatch()
                else:  # written before key_mac existed: verify the sealed check once, then add key_mac
                    self._verify_legacy_key_check(rows["key_check"])
                    self._db.execute("INSERT INTO meta(name, value) VALUES ('key_mac', ?)", (mac,))
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    def _verify_legacy_key_check(self, check: Any) -> None:
        from cryptography.exceptions import InvalidTag

        try:
            if not isinstance(check, bytes) or self._aead.decrypt(
                check[:NONCE_BYTES], check[NONCE_BYTES:], _KEY_CHECK_AAD
            ) != _KEY_CHECK_PLAIN:
                raise InvalidTag()
        except InvalidTag as exc:
            raise _key_mismatch() from exc

    # -- lifecycle ---------------------------------------------------------------

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._db.close()

    def __enter__(self) -> MetaStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def on_change(self, callback: ChangeCallback) -> Callable[[], None]:
        """Call ``callback(key, obj)`` after each commit that changes what is live.

        ``obj`` is the new object, or ``None`` when the key was deleted. A tombstone
        whose rv moves up, a stale or a duplicate change calls nothing. Returns an
        unsubscribe function. Exceptions from a callback are logged (by type only)
        and swallowed: the write is committed and must still be acknowledged.
        """
        with self._lock:
            self._callbacks.append(callback)

        def unsubscribe() -> None:
            with self._lock:
                if callback in self._callbacks:
                    self._callbacks.remove(callback)

        return unsubscribe

    def _emit(self, key: str, obj: dict[str, Any] | None) -> None:
        for cb in list(self._callbacks):
            try:
                cb(key, obj)
            except Exception as exc:  # a subscriber's bug must not un-ack a committed write
                log.error("metamanager change callback failed for %s: %s", key, type(exc).__name__)

    # -- sealing -----------------------------------------------------------------

    @property
    def _aead(self) -> Any:
        """The AES-256-GCM cipher under the store key; ``cryptography`` is imported on first use."""
        if self._aead_obj is None:  # two threads racing here build equal ciphers: harmless
            from cryptography.hazmat.primitives.ciphers.aead import AESGCM

            self._aead_obj = AESGCM(self._key)
        return self._aead_obj

    @staticmethod
    def _aad(key: str, rv: int) -> bytes:
        return _AAD_PREFIX + key.encode("ascii") + b"\x00" + str(rv).encode("ascii")

    def _seal(self, key: str, rv: int, plain: bytes) -> bytes:
        nonce = secrets.token_bytes(NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, plain, self._aad(key, rv))

    def _open_row(self, key: str, type_: str, rv: int, sealed: int, data: bytes | None) -> dict[str, Any]:
        if data is None:
            raise _corrupt(f"live row {key} has no data")
        if type_ in SEALED_TYPES and not sealed:
            raise _corrupt(f"row {key} of a sealed type is stored in plaintext")
        if sealed:
            from cryptography.exceptions import InvalidTag

            try:
                data = self._aead.decrypt(data[:NONCE_BYTES], data[NONCE_BYTES:], self._aad(key, rv))
            except InvalidTag as exc:
                raise _corrupt(f"row {key} fails authentication (moved or altered)") from exc
        try:
            obj = json.loads(data)
        except ValueError as exc:
            raise _corrupt(f"row {key} does not hold JSON") from exc
        if not isinstance(obj, dict):
            raise _corrupt(f"row {key} does not hold a JSON object")
        return obj

    # -- transactions ------------------------------------------------------------

    @contextlib.contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        """The connection, under the lock, with SQLite failures turned into StateError."""
        with self._lock:
            self._check_open()
            try:
                yield self._db
            except sqlite3.Error as exc:
                raise StateError("edge store read failed", code="edge_store_io") from exc

    @contextlib.contextmanager
    def _writing(self) -> Iterator[sqlite3.Connection]:
        """One ``BEGIN IMMEDIATE`` transaction (caller holds the lock); committed on exit.

        Any failure -- COMMIT (the fsync) included -- rolls back and raises, so
        nothing is ever reported applied that is not durable.
        """
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise StateError("edge store write failed", code="edge_store_write_failed") from exc

    # -- writes ------------------------------------------------------------------

    def apply(self, key: str, operation: str, rv: str, obj: dict[str, Any] | None, *, now: float) -> ApplyResult:
        """Apply one change if it is the newest for ``key``; durable when this returns.

        ``obj`` is the full object for insert/update/patch (its
        ``metadata.resourceVersion`` is set to ``rv`` in what is stored) and is
        ignored for delete. Raises :class:`ProtocolError` subclasses for a bad key,
        operation, rv or object (nothing is written), :class:`StateError` if the
        database is unusable.
        """
        res = _parse_key(key)
        if operation not in WRITE_OPERATIONS:
            raise UnsupportedOperation("only insert, update, patch and delete change the store")
        rv_int = parse_rv(rv)
        deleting = operation == "delete"
        blob: bytes | None = None
        sealed = res.type in SEALED_TYPES
        plain_obj: dict[str, Any] | None = None
        if not deleting:
            plain = _encode_object(obj, rv)
            plain_obj = json.loads(plain)
            blob = self._seal(key, rv_int, plain) if sealed else plain
        with self._lock:
            self._check_open()
            with self._writing() as db:
                row = db.execute("SELECT rv, deleted FROM objects WHERE key=?", (key,)).fetchone()
                stored = None if row is None else (format_rv(row[0]), bool(row[1]))
                decision = decide(stored, operation, rv,
                                  revivable=row is not None and row[1] == RELEASED and res.type in REVIVABLE_TYPES)
                if decision is Decision.APPLY:
                    # A delete at the rv the edge holds live is a *release* (the node no longer needs
                    # it; see decide.py): its tombstone lets that same version back in later.
                    flag = (RELEASED if row is not None and not row[1] and row[0] == rv_int else TOMBSTONE) \
                        if deleting else LIVE
                    db.execute(
                        "INSERT OR REPLACE INTO objects(key, type, namespace, name, rv, deleted, updated_at, "
                        "sealed, data) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (key, res.type, res.namespace, res.name, rv_int, flag, float(now),
                         int(sealed and not deleting), blob),
                    )
            if decision is Decision.APPLY:
                was_live = stored is not None and not stored[1]
                if not deleting or was_live:
                    self._emit(key, plain_obj)
                if deleting:
                    self._tombstones_written += 1
                    if self._tombstones_written % self._prune_every == 0:
                        try:
                            self.prune_tombstones(now=now)
                        except StateError as exc:  # the change is committed: still report it applied
                            log.warning("pruning edge store tombstones failed: %s", exc.code)
                return ApplyResult(key, decision, rv, rv, deleting)
            if stored is None:  # decide() only says STALE/DUPLICATE against a stored version
                raise StateError("newest-wins decision without a stored version", code="internal_error")
            return ApplyResult(key, decision, rv, stored[0], stored[1])

    def delete_missing(
        self,
        type: str,  # noqa: A002 - the resource type, as in the key
        keep: Collection[str],
        rv_floor: str,
        *,
        now: float,
        namespace: str | None = None,
    ) -> list[str]:
        """Tombstone live objects of ``type`` (in ``namespace``) absent from ``keep``; return their keys.

        For a resync whose answer is "the full set of keys of this type you should
        hold, as of the cloud's list at ``rv_floor``": a live object with
        ``rv <= rv_floor`` that is not in ``keep`` was deleted while the edge was
        away. An object with a newer rv reached the edge after that list and is
        kept. Each tombstone keeps the object's own rv, so the cloud's later delete
        (with a higher rv) is still applied and a stale re-insert is still refused.
        One transaction.
        """
        Resource(namespace or "default", type)  # validates the type (and namespace) grammar
        floor = parse_rv(rv_floor)
        keep_set = frozenset(keep)
        query = "SELECT key, rv FROM objects WHERE type=? AND deleted=0 AND rv<=?"
        params: tuple[Any, ...] = (type, floor)
        if namespace is not None:
            query += " AND namespace=?"
            params += (namespace,)
        with self._lock:
            self._check_open()
            with self._writing() as db:
                gone = sorted(k for k, _rv in db.execute(query, params).fetchall() if k not in keep_set)
                db.executemany(
                    "UPDATE objects SET deleted=1, sealed=0, data=NULL, updated_at=? WHERE key=?",
                    [(float(now), k) for k in gone],
                )
            for k in gone:
                self._emit(k, None)
            return gone

    def prune_tombstones(self, *, now: float) -> int:
        """Drop tombstones beyond the prune policy (see :func:`tombstones_to_prune`); return how many."""
        with self._lock:
            self._check_open()
            with self._writing() as db:
                rows = db.execute("SELECT key, rv, updated_at FROM objects WHERE deleted!=0").fetchall()
                drop = tombstones_to_prune(rows, now=now, policy=self._prune_policy)
                db.executemany("DELETE FROM objects WHERE key=? AND deleted!=0", [(k,) for k in drop])
            return len(drop)

    # -- reads -------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise StateError("edge store is closed", code="edge_store_closed")

    def record(self, key: str) -> tuple[str, bool] | None:
        """``(rv, deleted)`` stored for ``key`` (tombstones included), or ``None``."""
        with self._reading() as db:
            row = db.execute("SELECT rv, deleted FROM objects WHERE key=?", (key,)).fetchone()
        return None if row is None else (format_rv(row[0]), bool(row[1]))

    def get(self, key: str) -> dict[str, Any] | None:
        """The live object at ``key`` (secrets decrypted), or ``None`` if absent or deleted."""
        with self._reading() as db:
            row = db.execute(
                "SELECT type, rv, sealed, data FROM objects WHERE key=? AND deleted=0", (key,)
            ).fetchone()
        if row is None:
            return None
        return self._open_row(key, row[0], row[1], row[2], row[3])

    def list(self, type: str, namespace: str | None = None) -> list[dict[str, Any]]:  # noqa: A002,A003
        """Every live object of ``type`` (optionally in ``namespace``), ordered by key."""
        query = "SELECT key, type, rv, sealed, data FROM objects WHERE type=? AND deleted=0"
        params: tuple[Any, ...] = (type,)
        if namespace is not None:
            query += " AND namespace=?"
            params += (namespace,)
        with self._reading() as db:
            rows = db.execute(query + " ORDER BY key", params).fetchall()
        return [self._open_row(*row) for row in rows]

    def snapshot(self) -> tuple[dict[str, str], dict[str, str]]:
        """``(live, tombstones)``: key -> rv of each, read in one transaction."""
        with self._reading() as db:
            rows = db.execute("SELECT key, rv, deleted FROM objects").fetchall()
        live: dict[str, str] = {}
        dead: dict[str, str] = {}
        for key, rv, deleted in rows:
            (dead if deleted else live)[key] = format_rv(rv)
        return live, dead

    def inventory(self) -> dict[str, str]:
        """key -> rv of every live object and every tombstone (what the edge tells the cloud)."""
        live, dead = self.snapshot()
        live.update(dead)
        return live

    def counts(self) -> tuple[int, int]:
        """``(live objects, tombstones)``."""
        with self._reading() as db:
            row = db.execute(
                "SELECT coalesce(sum(deleted=0), 0), coalesce(sum(deleted!=0), 0) FROM objects"
            ).fetchone()
        return int(row[0]), int(row[1])
