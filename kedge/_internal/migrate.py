"""Schema versions and upgrades of kedge's stores and config files.

Every SQLite store records its schema in ``PRAGMA user_version`` and every config file in a
``schema_version`` field. A store is upgraded when it is opened:

* **Ordered steps.** ``steps[n]`` turns schema ``n`` into ``n + 1``: a function of the
  connection (databases) or of the decoded object (config files). :func:`plan` is the pure
  decision -- which steps, or a refusal.
* **Never downgrade.** A file whose version is above what this kedge knows was written by a
  newer kedge: it is refused with ``StateError(schema_too_new)`` (the CLI exits 2) and left as
  it is, because this code would misread what it does not know.
* **Backed up first.** Before the first step, the file as it was is copied next to itself as
  ``NAME.bak-v<old>`` (temp file + ``os.replace``, 0600 from creation: stores hold secrets).
  A database is copied with SQLite's backup API inside the migration's own write
  transaction, so the copy is exactly what the steps start from.
* **Atomic.** A database's steps and its new ``user_version`` are one ``BEGIN IMMEDIATE``
  transaction (which also makes two processes opening an old file at once migrate it once);
  a config file is replaced with one ``os.replace``. A failing step leaves the file as it was.

A database with ``user_version`` 0 holding tables (written before versions were recorded)
and a config file without ``schema_version`` are version 1, the first release's format. A
database without tables is new: it is stamped with the current version and needs no steps.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from kedge._internal import fsutil
from kedge.errors import StateError

__all__ = ["SCHEMA_TOO_NEW", "backup_path", "migrate_dict", "plan", "upgrade_sqlite"]

SCHEMA_TOO_NEW = "schema_too_new"
CONFIG_VERSION_KEY = "schema_version"
MAX_CONFIG_BYTES = 16 * 1024 * 1024  # a config file copied to its backup (config files are a few KiB)
_T = TypeVar("_T")


def plan(found: int, current: int, steps: Mapping[int, Callable[..., Any]], *, what: str) -> list[Callable[..., Any]]:
    """The steps that take schema ``found`` to ``current``, in order (none if equal).

    ``found > current`` is a file from a newer kedge: ``StateError(schema_too_new)``. A missing
    step is a bug in this kedge, not in the file (``StateError(migration_missing)``).
    """
    if not isinstance(found, int) or isinstance(found, bool) or found < 1:
        raise StateError(f"{what} has an invalid schema version {found!r}", code="schema_invalid")
    if found > current:
        raise StateError(
            f"{what}: this data dir was written by a newer kedge (schema {found}, this kedge knows {current});"
            " run that kedge, or restore a backup taken before the upgrade",
            code=SCHEMA_TOO_NEW,
        )
    missing = [n for n in range(found, current) if n not in steps]
    if missing:
        raise StateError(f"{what}: no migration from schema {missing[0]}", code="migration_missing")
    return [steps[n] for n in range(found, current)]


def backup_path(path: str | os.PathLike[str], old: int) -> Path:
    p = Path(path)
    return p.with_name(f"{p.name}.bak-v{old}")


# --------------------------------------------------------------------------- config files


def config_version(data: Mapping[str, Any], *, what: str) -> int:
    """The ``schema_version`` of a decoded config object (absent: 1)."""
    version = data.get(CONFIG_VERSION_KEY, 1)
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise StateError(f"{what}: schema_version must be a positive integer", code="schema_invalid")
    return version


def migrate_dict(data: dict[str, Any], current: int, steps: Mapping[int, Callable[[dict[str, Any]], dict[str, Any]]],
                 *, what: str) -> tuple[dict[str, Any], int]:
    """Pure: ``(data at schema current, version found)``. Each step gets a copy and returns the
    next version's object; the result carries ``schema_version: current``."""
    found = config_version(data, what=what)
    out = dict(data)
    for step in plan(found, current, steps, what=what):
        out = step(dict(out))
    out[CONFIG_VERSION_KEY] = current
    return out, found


def upgrade_json_file(path: str | os.PathLike[str], data: dict[str, Any], current: int,
                      steps: Mapping[int, Callable[[dict[str, Any]], dict[str, Any]]], *,
                      render: Callable[[dict[str, Any]], bytes], mode: int) -> dict[str, Any]:
    """``data`` (just read from ``path``) at schema ``current``; an older file is backed up
    (``NAME.bak-v<old>``, its exact bytes, 0600) and replaced with the migrated one, atomically."""
    migrated, found = migrate_dict(data, current, steps, what=str(path))
    if found < current:
        try:
            original = fsutil.read_bounded(path, MAX_CONFIG_BYTES)
            fsutil.atomic_write(backup_path(path, found), original, mode=fsutil.PRIVATE_FILE)
            fsutil.atomic_write(path, render(migrated), mode=mode)
        except OSError as exc:
            raise StateError(f"cannot upgrade {path}: {exc.strerror or exc}", code="migration_failed") from exc
    return migrated


# --------------------------------------------------------------------------- SQLite


def upgrade_sqlite(db: Any, path: str | os.PathLike[str] | None, current: int,
                   steps: Mapping[int, Callable[[Any], None]], *, what: str) -> int | None:
    """Bring the database behind ``db`` (an ``isolation_level=None`` sqlite3 connection, outside
    a transaction) to schema ``current``; return the version it was migrated from, or None.

    ``path`` is the file (None for ``:memory:``: nothing to back up). Steps run inside one
    ``BEGIN IMMEDIATE`` transaction after the backup; an error rolls everything back.
    """
    db.execute("BEGIN IMMEDIATE")
    try:
        stamped = db.execute("PRAGMA user_version").fetchone()[0]
        fresh = stamped == 0 and db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0
        found = current if fresh else max(stamped, 1)
        todo = plan(found, current, steps, what=what)
        if todo and path is not None:
            _backup_sqlite(path, backup_path(path, found))
        for step in todo:
            step(db)
        if stamped != current:
            db.execute(f"PRAGMA user_version={int(current)}")
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
    return found if todo else None


def _backup_sqlite(path: str | os.PathLike[str], dest: Path) -> None:
    """A consistent copy of the database at ``path`` at ``dest``, 0600, atomically.

    Called while the migrating connection holds the write lock: a second, read-only
    connection (SQLite refuses to back up from a connection inside a write transaction)
    sees exactly the committed state the steps start from, and nothing can commit meanwhile.
    """
    import sqlite3

    tmp = dest.with_name(f".{dest.name}.{secrets.token_hex(6)}.tmp")
    try:
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, fsutil.PRIVATE_FILE))
        src = sqlite3.connect(f"{Path(path).resolve().as_uri()}?mode=ro", uri=True, timeout=5.0)
        try:
            out = sqlite3.connect(str(tmp))
            try:
                src.backup(out)
            finally:
                out.close()
        finally:
            src.close()
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, dest)
        fsutil.fsync_dir(dest.parent)
    except (OSError, sqlite3.Error) as exc:
        for leftover in (tmp, tmp.with_name(tmp.name + "-journal")):
            leftover.unlink(missing_ok=True)
        raise StateError(f"cannot back up {Path(path).name} before upgrading it: {exc}",
                         code="migration_failed") from exc
