"""The cloud's security state: bootstrap tokens, issued node certificates, revocations.

One SQLite file (``DIR/state.db``), WAL mode, mode 0600 from creation, one
transaction per change. Several processes share it: ``kedge token create`` and
``kedge node revoke`` write while ``kedge cloudcore`` serves. Two properties rest on
SQLite's locking rather than on any in-process lock:

* **Single use.** :meth:`CloudState.consume_token` runs ``BEGIN IMMEDIATE`` (the
  database write lock) before it reads the token, so of any number of concurrent
  callers, in any number of processes, exactly one sees the token unused.
* **Prompt revocation.** Every revocation bumps a counter row in the same
  transaction; a running cloudcore polls :meth:`CloudState.generation` (one
  primary-key read) and re-checks its live sessions when it changes.

Times are stored as integer microseconds since the epoch (UTC), so "issued at or
before the node's revocation" is exact even when a node re-joins within the same
second. Serials are stored as decimal TEXT: x509 serials are up to 159 bits.
"""

from __future__ import annotations

import datetime as _dt
import os
import sqlite3
import stat
import threading
from pathlib import Path
from typing import Any, Callable, TypeVar

from kedge._internal import migrate
from kedge.errors import AuthenticationError, ConfigError, RateLimited, StateError
from kedge.pki.ca import validate_node_name
from kedge.pki.tokens import is_secret_hash, is_token_id, secret_matches

__all__ = ["CloudState", "SCHEMA_VERSION"]

# PRAGMA user_version, recorded since the first release; upgrades: kedge._internal.migrate.
SCHEMA_VERSION = 1
_MIGRATIONS: dict[int, Callable[[sqlite3.Connection], None]] = {}  # n -> n+1, none yet
BUSY_TIMEOUT_S = 2.0
_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc)
_US = _dt.timedelta(microseconds=1)
_T = TypeVar("_T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tokens (
    id          TEXT PRIMARY KEY,
    node        TEXT NOT NULL,
    secret_hash TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    used_at     INTEGER,
    revoked_at  INTEGER
);
CREATE TABLE IF NOT EXISTS certs (
    serial      TEXT PRIMARY KEY,
    node        TEXT NOT NULL,
    not_before  INTEGER NOT NULL,
    not_after   INTEGER NOT NULL,
    issued_at   INTEGER NOT NULL,
    revoked_at  INTEGER
);
CREATE INDEX IF NOT EXISTS certs_by_node ON certs(node);
CREATE TABLE IF NOT EXISTS cert_issuers (
    serial      TEXT PRIMARY KEY,
    issuer      TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS nodes (
    name        TEXT PRIMARY KEY,
    revoked_at  INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS counters (
    name        TEXT PRIMARY KEY,
    value       INTEGER NOT NULL
);
INSERT OR IGNORE INTO counters(name, value) VALUES ('generation', 0);
"""


def _to_us(when: _dt.datetime) -> int:
    if not isinstance(when, _dt.datetime) or when.tzinfo is None or when.utcoffset() is None:
        raise ValueError("times must be timezone-aware datetimes")
    return (when - _EPOCH) // _US


def _from_us(value: int | None) -> _dt.datetime | None:
    return None if value is None else _EPOCH + value * _US


def _check_serial(serial: int) -> str:
    if not isinstance(serial, int) or isinstance(serial, bool) or serial <= 0 or serial.bit_length() > 160:
        raise ValueError(f"invalid certificate serial {serial!r}")
    return str(serial)


def _create_private_file(path: Path) -> None:
    """Create the database file 0600 before SQLite opens it; refuse a loose existing one.

    SQLite gives its ``-wal`` and ``-shm`` files the main file's permissions, so the
    whole state stays private. A planted symlink is refused, never followed.

    An existing file is only ``lstat``-ed, never opened and closed: closing any descriptor
    of the file drops every POSIX lock this process holds on it -- including those of a
    ``CloudState`` already open in the same process (cloudcore's, while its embedded API
    server opens its own), whose WAL another process would then delete under it.
    """
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        except FileExistsError:
            st = os.lstat(path)  # created concurrently: check theirs
        except OSError as exc:
            raise StateError(f"cannot create {path}: {exc.strerror}", code="state_unavailable") from exc
        else:
            try:
                st = os.fstat(fd)
            finally:
                os.close(fd)  # a new file: no SQLite connection of ours has it open yet
    except OSError as exc:
        raise StateError(f"cannot read {path}: {exc.strerror}", code="state_unavailable") from exc
    if not stat.S_ISREG(st.st_mode):
        raise StateError(f"{path} is not a regular file", code="state_unavailable")
    if st.st_mode & 0o077:
        raise StateError(
            f"{path} is accessible by group or others (mode {stat.S_IMODE(st.st_mode):o}); expected 0600",
            code="insecure_permissions",
        )


class CloudState:
    """Tokens, certificates and revocations of one cluster, shared across processes.

    Thread-safe: one connection guarded by a lock (``check_same_thread=False``).
    Process-safe: every change is one SQLite transaction.
    """

    def __init__(self, path: str | Path) -> None:
        self._path = Path(path)
        _create_private_file(self._path)
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(
                str(self._path), timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise StateError(f"cannot open {self._path}", code="state_unavailable") from exc
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            # FULL: a consumed token must stay consumed across a power cut.
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.execute("PRAGMA trusted_schema=OFF")
            try:
                migrate.upgrade_sqlite(self._db, self._path, SCHEMA_VERSION, _MIGRATIONS, what=str(self._path))
            except sqlite3.OperationalError as exc:
                raise StateError("state database is busy", code="state_busy") from exc
            self._write(self._create_tables)
        except BaseException:
            self._db.close()
            raise

    # ------------------------------------------------------------------ plumbing

    @staticmethod
    def _create_tables(db: sqlite3.Connection) -> None:
        # Statement by statement: executescript() would COMMIT our BEGIN IMMEDIATE.
        for statement in _SCHEMA.split(";"):
            if statement.strip():
                db.execute(statement)

    def _write(self, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run ``fn`` in one ``BEGIN IMMEDIATE`` transaction (the cross-process write lock)."""
        with self._lock:
            db = self._db
            try:
                db.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                raise StateError("state database is busy", code="state_busy") from exc
            try:
                result = fn(db)
                db.execute("COMMIT")
                return result
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise

    def _read(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            try:
                return self._db.execute(sql, params).fetchall()
            except sqlite3.OperationalError as exc:
                raise StateError("state database is busy", code="state_busy") from exc

    @staticmethod
    def _bump(db: sqlite3.Connection) -> None:
        db.execute("UPDATE counters SET value = value + 1 WHERE name = 'generation'")

    # ------------------------------------------------------------------ tokens

    def add_token(
        self,
        *,
        token_id: str,
        node: str,
        secret_hash: str,
        expires_at: _dt.datetime,
        created_at: _dt.datetime,
    ) -> None:
        """Store a new token (its hash only). A colliding token id is refused, never replaced."""
        if not is_token_id(token_id):
            raise ConfigError("invalid token id", code="bad_token_id")
        validate_node_name(node)
        if not is_secret_hash(secret_hash):
            raise ConfigError("secret_hash must come from tokens.hash_secret", code="bad_secret_hash")
        exp, created = _to_us(expires_at), _to_us(created_at)
        if exp <= created:
            raise ConfigError("token would expire before it was created", code="bad_duration")

        def tx(db: sqlite3.Connection) -> None:
            try:
                db.execute(
                    "INSERT INTO tokens(id, node, secret_hash, created_at, expires_at) VALUES (?, ?, ?, ?, ?)",
                    (token_id, node, secret_hash, created, exp),
                )
            except sqlite3.IntegrityError as exc:
                raise StateError("token id already exists", code="token_exists") from exc

        self._write(tx)

    def consume_token(self, *, token_id: str, secret: str, now: _dt.datetime, expect_node: str | None = None) -> str:
        """Use a token once; return the node it was issued for.

        ``expect_node`` is the node the joining edge says it is: a token for another node
        is refused with ``token_node_mismatch`` *without* being used up (checked after the
        secret, so only the token's holder learns it), instead of issuing a certificate the
        edge would then refuse.

        Order of checks, all inside one write-locked transaction:
        unknown id -> ``token_unknown``; wrong secret -> ``token_bad_secret`` (the token
        is NOT burnt, and nothing about its state is revealed to someone without the
        secret); revoked -> ``token_revoked``; already used -> ``token_used``;
        expired -> ``token_expired``; otherwise it is marked used and committed.
        """
        t = _to_us(now)
        if not isinstance(token_id, str) or not isinstance(secret, str):
            raise AuthenticationError("unknown token", code="token_unknown")

        def tx(db: sqlite3.Connection) -> str:
            row = db.execute(
                "SELECT node, secret_hash, expires_at, used_at, revoked_at FROM tokens WHERE id = ?",
                (token_id,),
            ).fetchone()
            if row is None:
                raise AuthenticationError("unknown token", code="token_unknown")
            node, stored, expires_at, used_at, revoked_at = row
            if not secret_matches(token_id, secret, stored):
                raise AuthenticationError("wrong token secret", code="token_bad_secret")
            if revoked_at is not None:
                raise AuthenticationError("token revoked", code="token_revoked")
            if used_at is not None:
                raise AuthenticationError("token already used", code="token_used")
            if expires_at <= t:
                raise AuthenticationError("token expired", code="token_expired")
            if expect_node is not None and expect_node != node:
                raise AuthenticationError("token is for another node", code="token_node_mismatch")
            cur = db.execute(
                "UPDATE tokens SET used_at = ? WHERE id = ? AND used_at IS NULL AND revoked_at IS NULL"
                " AND expires_at > ?",
                (t, token_id, t),
            )
            if cur.rowcount != 1:  # cannot happen under the write lock; fail closed anyway
                raise AuthenticationError("token already used", code="token_used")
            return str(node)

        # An AuthenticationError rolls the transaction back; nothing was written.
        return self._write(tx)

    def token_usable(self, *, token_id: str, now: _dt.datetime) -> bool:
        """Whether a token ``token_id`` exists that is unused, unrevoked and unexpired at ``now``.

        Read-only and secret-free: the certificate endpoint uses it to tell a request naming a
        usable token from anonymous noise (which bucket its failures go to); only
        :meth:`consume_token` checks the secret and decides.
        """
        if not is_token_id(token_id):
            return False
        rows = self._read(
            "SELECT 1 FROM tokens WHERE id = ? AND used_at IS NULL AND revoked_at IS NULL AND expires_at > ?",
            (token_id, _to_us(now)),
        )
        return bool(rows)

    def node_has_valid_cert(self, node: str, *, now: _dt.datetime) -> bool:
        """Whether ``node`` holds a node certificate that is recorded, unrevoked, unexpired at
        ``now`` and issued after the node's last revocation (if any) -- what a request over its
        tunnel needs to still be authorised (see :meth:`is_cert_revoked` for one serial)."""
        validate_node_name(node)
        rows = self._read(
            "SELECT 1 FROM certs WHERE node = ? AND revoked_at IS NULL AND not_after > ?"
            " AND issued_at > COALESCE((SELECT revoked_at FROM nodes WHERE name = ?), -1) LIMIT 1",
            (node, _to_us(now), node),
        )
        return bool(rows)

    def revoke_token(self, token_id: str, *, now: _dt.datetime | None = None) -> None:
        """Make an unused token unusable. Unknown ids raise ``StateError('token_unknown')``."""
        stamp = _to_us(now) if now is not None else _to_us(_dt.datetime.now(_dt.timezone.utc))

        def tx(db: sqlite3.Connection) -> None:
            cur = db.execute(
                "UPDATE tokens SET revoked_at = COALESCE(revoked_at, ?) WHERE id = ?", (stamp, token_id)
            )
            if cur.rowcount != 1:
                raise StateError("no such token", code="token_unknown")
            self._bump(db)

        self._write(tx)

    def list_tokens(self) -> list[dict[str, Any]]:
        """All tokens with their state; secrets are never stored, hashes never returned."""
        rows = self._read(
            "SELECT id, node, created_at, expires_at, used_at, revoked_at FROM tokens ORDER BY created_at, id"
        )
        return [
            {
                "token_id": r[0],
                "node": r[1],
                "created_at": _from_us(r[2]),
                "expires_at": _from_us(r[3]),
                "used_at": _from_us(r[4]),
                "revoked_at": _from_us(r[5]),
            }
            for r in rows
        ]

    # ------------------------------------------------------------------ certificates

    def record_cert(
        self,
        *,
        serial: int,
        node: str,
        not_before: _dt.datetime,
        not_after: _dt.datetime,
        issued_at: _dt.datetime,
        renewed_from: int | None = None,
        token_id: str | None = None,
        max_recent: tuple[int, _dt.timedelta] | None = None,
        issuer: str | None = None,
    ) -> None:
        """Remember an issued node certificate (for revocation and the CRL).

        ``issuer`` is the issuing CA's fingerprint (kept in ``cert_issuers``, a table of its own
        so that a ``state.db`` of an earlier kedge needs no migration): ``kedge ca finish`` reads
        it to tell which nodes still hold a certificate of the previous CA.

        With the authority the certificate was issued on -- ``renewed_from`` (the serial of
        the certificate that asked for a renewal) or ``token_id`` (the bootstrap token) --
        issuance is serialised with :meth:`revoke_node` by the database write lock: in the
        same transaction that records the certificate, a revocation of the node committed
        since that authority was granted (or at or after ``issued_at``) is looked for, and if
        there is one the certificate is recorded *as revoked* (so later CRLs list it) and
        ``AuthenticationError('revoked')`` is raised: the caller must not hand it out. A
        revocation committed after this transaction revokes the certificate itself. So a
        certificate issued while its node is being revoked cannot escape the revocation.

        ``max_recent = (n, window)``: refuse (``RateLimited('renewal_rate_limited')``, nothing
        recorded) if ``n`` certificates of this node were issued within ``window`` before
        ``issued_at``.
        """
        s = _check_serial(serial)
        validate_node_name(node)
        row = (s, node, _to_us(not_before), _to_us(not_after), _to_us(issued_at))
        parent = None if renewed_from is None else _check_serial(renewed_from)
        strict = parent is not None or token_id is not None
        if issuer is not None and (not isinstance(issuer, str) or not 0 < len(issuer) <= 128):
            raise ValueError("issuer must be a CA fingerprint")

        def tx(db: sqlite3.Connection) -> bool:
            doomed = False
            if strict:
                nrow = db.execute("SELECT revoked_at FROM nodes WHERE name = ?", (node,)).fetchone()
                node_revoked_at = None if nrow is None else int(nrow[0])
                if parent is not None and self._revoked_in(db, node=node, serial=parent):
                    doomed = True
                if node_revoked_at is not None:
                    if row[4] <= node_revoked_at:
                        doomed = True
                    if token_id is not None:
                        trow = db.execute("SELECT created_at FROM tokens WHERE id = ?", (token_id,)).fetchone()
                        doomed = doomed or trow is None or int(trow[0]) <= node_revoked_at
                if not doomed and max_recent is not None:
                    limit, window = max_recent
                    recent = db.execute("SELECT COUNT(*) FROM certs WHERE node = ? AND issued_at > ?",
                                        (node, row[4] - window // _US)).fetchone()[0]
                    if int(recent) >= limit:
                        raise RateLimited("too many certificates issued to this node", code="renewal_rate_limited")
            try:
                db.execute(
                    "INSERT INTO certs(serial, node, not_before, not_after, issued_at, revoked_at)"
                    " VALUES (?, ?, ?, ?, ?, ?)", (*row, row[4] if doomed else None)
                )
            except sqlite3.IntegrityError as exc:
                raise StateError("certificate serial already recorded", code="serial_exists") from exc
            if issuer is not None:
                db.execute("INSERT OR REPLACE INTO cert_issuers(serial, issuer) VALUES (?, ?)", (s, issuer))
            if doomed:
                self._bump(db)
            return doomed

        if self._write(tx):
            raise AuthenticationError("the node was revoked while this certificate was issued", code="revoked")

    def newest_cert_issuers(self, *, now: _dt.datetime) -> dict[str, str | None]:
        """For every node holding a valid certificate at ``now`` (recorded, unrevoked, unexpired,
        issued after the node's last revocation): the issuer fingerprint of its newest one, or
        None if it was recorded without one (issued before kedge recorded issuers)."""
        rows = self._read(
            "SELECT c.node, c.issued_at, c.serial, i.issuer FROM certs c"
            " LEFT JOIN cert_issuers i ON i.serial = c.serial"
            " WHERE c.revoked_at IS NULL AND c.not_after > ?"
            " AND c.issued_at > COALESCE((SELECT revoked_at FROM nodes WHERE name = c.node), -1)"
            " ORDER BY c.node, c.issued_at, c.serial",
            (_to_us(now),),
        )
        newest: dict[str, str | None] = {}
        for node, _issued, _serial, issuer in rows:
            newest[str(node)] = None if issuer is None else str(issuer)  # ordered: the last one wins
        return newest

    def revoke_node(self, node: str, *, now: _dt.datetime) -> int:
        """Revoke every certificate of ``node`` recorded so far (issued at or before ``now``,
        or recorded before this transaction -- a renewal that committed a moment earlier with a
        later clock reading is revoked too).

        Also records the node as revoked at ``now`` (so certificates this store never
        saw are refused too) and revokes the node's unused bootstrap tokens created
        up to ``now``. A token created afterwards lets the node re-join. Returns the
        number of certificates newly marked revoked.
        """
        validate_node_name(node)
        t = _to_us(now)

        def tx(db: sqlite3.Connection) -> int:
            db.execute(
                "INSERT INTO nodes(name, revoked_at) VALUES (?, ?)"
                " ON CONFLICT(name) DO UPDATE SET revoked_at = MAX(revoked_at, excluded.revoked_at)",
                (node, t),
            )
            cur = db.execute("UPDATE certs SET revoked_at = ? WHERE node = ? AND revoked_at IS NULL", (t, node))
            db.execute(
                "UPDATE tokens SET revoked_at = ? WHERE node = ? AND used_at IS NULL AND revoked_at IS NULL"
                " AND created_at <= ?",
                (t, node, t),
            )
            self._bump(db)
            return int(cur.rowcount)

        return self._write(tx)

    def is_cert_revoked(self, *, node: str, serial: int) -> bool:
        """Whether the certificate ``serial`` presented by ``node`` must be refused.

        True if the serial was revoked; if it was recorded for a different node; if it
        was issued at or before the node's revocation; or if the node is revoked and
        the serial is unknown. A certificate issued after the revocation (the node
        re-joined with a new token) is valid.
        """
        s = _check_serial(serial)
        with self._lock:
            try:
                return self._revoked_in(self._db, node=node, serial=s)
            except sqlite3.OperationalError as exc:
                raise StateError("state database is busy", code="state_busy") from exc

    @staticmethod
    def _revoked_in(db: sqlite3.Connection, *, node: str, serial: str) -> bool:
        cert = db.execute("SELECT node, issued_at, revoked_at FROM certs WHERE serial = ?", (serial,)).fetchone()
        nrow = db.execute("SELECT revoked_at FROM nodes WHERE name = ?", (node,)).fetchone()
        node_revoked_at = None if nrow is None else nrow[0]
        if cert is None:
            return node_revoked_at is not None
        cert_node, issued_at, revoked_at = cert
        if cert_node != node or revoked_at is not None:
            return True
        return node_revoked_at is not None and issued_at <= node_revoked_at

    def is_node_revoked(self, node: str) -> _dt.datetime | None:
        """When ``node`` was (last) revoked, or None."""
        rows = self._read("SELECT revoked_at FROM nodes WHERE name = ?", (node,))
        return _from_us(rows[0][0]) if rows else None

    def revoked_serials(self, *, now: _dt.datetime | None = None) -> list[tuple[int, _dt.datetime]]:
        """Every revoked serial with its revocation time, for the CRL.

        With ``now``, certificates that have expired by then are left out: an expired
        certificate is refused anyway, so the CRL need not grow forever.
        """
        if now is None:
            rows = self._read(
                "SELECT serial, revoked_at FROM certs WHERE revoked_at IS NOT NULL ORDER BY revoked_at, serial"
            )
        else:
            rows = self._read(
                "SELECT serial, revoked_at FROM certs WHERE revoked_at IS NOT NULL AND not_after > ?"
                " ORDER BY revoked_at, serial",
                (_to_us(now),),
            )
        out: list[tuple[int, _dt.datetime]] = []
        for serial, revoked_at in rows:
            when = _from_us(revoked_at)
            if when is not None:  # always, given the WHERE clause
                out.append((int(serial), when))
        return out

    def prune(self, *, now: _dt.datetime, keep: _dt.timedelta = _dt.timedelta(days=7)) -> int:
        """Delete tokens that expired, and certificates that expired, more than ``keep`` ago.

        Node revocation records are kept forever (they are what refuses certificates
        this store never saw). Returns the number of rows deleted.
        """
        if not isinstance(keep, _dt.timedelta) or keep < _dt.timedelta(0):
            raise ConfigError("keep must be a non-negative duration", code="bad_duration")
        cutoff = _to_us(now - keep)

        def tx(db: sqlite3.Connection) -> int:
            a = db.execute("DELETE FROM tokens WHERE expires_at <= ?", (cutoff,)).rowcount
            b = db.execute("DELETE FROM certs WHERE not_after <= ?", (cutoff,)).rowcount
            db.execute("DELETE FROM cert_issuers WHERE serial NOT IN (SELECT serial FROM certs)")
            return int(a) + int(b)

        return self._write(tx)

    def generation(self) -> int:
        """A counter that grows on every revocation; one indexed read, cheap to poll."""
        rows = self._read("SELECT value FROM counters WHERE name = 'generation'")
        return int(rows[0][0]) if rows else 0

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> "CloudState":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
