"""The edge's twin table: ``EDGEDIR/twins.db`` (SQLite, WAL, 0600), separate from edge.db.

One row per (device, property): the desired value from the cloud (with the Device's
resourceVersion it came with) and the last reported value from the mapper (with its
timestamp and a per-row version). ``dirty`` marks reports the cloud has not acked yet:
they survive restarts and offline periods and go up on reconnect, oldest unsent first
(``dirty_since``: a report superseded while waiting keeps its place in the queue; one
arriving while the previous is in flight starts a new wait, so a busy device cannot hog
the uploads). A row is cleaned only
if its version is still the one that was sent, so a report arriving while an upload is
in flight is never lost. Reports never touch ``desired``: the cloud's desired wins.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from pathlib import Path
from typing import Any, Iterable

from kedge._internal import migrate

# PRAGMA user_version (kedge._internal.migrate). 1: the first release (which recorded none);
# 2: the version is recorded.
SCHEMA_VERSION = 2


def _v1_to_v2(db: sqlite3.Connection) -> None:
    """Nothing changes in the tables: schema 2 is schema 1 with ``user_version`` recorded."""


_MIGRATIONS = {1: _v1_to_v2}
_SCHEMA = """
CREATE TABLE IF NOT EXISTS twins (
    ns TEXT NOT NULL, name TEXT NOT NULL, prop TEXT NOT NULL,
    desired TEXT, desired_rv TEXT NOT NULL DEFAULT '',
    reported TEXT, reported_ts INTEGER NOT NULL DEFAULT 0, observed_desired TEXT,
    version INTEGER NOT NULL DEFAULT 0, dirty INTEGER NOT NULL DEFAULT 0,
    dirty_since INTEGER NOT NULL DEFAULT 0, inflight_version INTEGER,
    PRIMARY KEY (ns, name, prop)
);
CREATE TABLE IF NOT EXISTS states (
    ns TEXT NOT NULL, name TEXT NOT NULL, state TEXT NOT NULL, ts INTEGER NOT NULL,
    version INTEGER NOT NULL DEFAULT 0, dirty INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (ns, name)
);
CREATE INDEX IF NOT EXISTS twins_dirty ON twins(dirty) WHERE dirty=1;
CREATE INDEX IF NOT EXISTS states_dirty ON states(dirty) WHERE dirty=1;
"""


class TwinTable:
    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            # Created 0600 before SQLite opens it (reported values can be sensitive).
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
            os.close(fd)
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        try:
            self._open()
        except BaseException:
            self._db.close()
            raise

    def _open(self) -> None:
        with self._lock:
            if self.path != ":memory:":
                mode = self._db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
                if str(mode).lower() != "wal":
                    raise sqlite3.OperationalError("twins.db: WAL not available")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA busy_timeout=5000")
            # Upgrade an older file (backed up first) or refuse a newer one.
            migrate.upgrade_sqlite(self._db, None if self.path == ":memory:" else self.path, SCHEMA_VERSION,
                                   _MIGRATIONS, what=self.path)
            self._db.executescript(_SCHEMA)
            self._db.execute("UPDATE twins SET inflight_version=NULL WHERE inflight_version IS NOT NULL")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- desired (from the cloud) ------------------------------------------------------

    def set_desired(self, ns: str, name: str, desired: dict[str, str], rv: str) -> dict[str, str]:
        """Replace the device's desired values; return those that changed (prop -> value)."""
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                rows = dict(db.execute("SELECT prop, desired FROM twins WHERE ns=? AND name=?", (ns, name)).fetchall())
                changed = {p: v for p, v in desired.items() if rows.get(p) != v}
                for prop, value in desired.items():
                    db.execute(
                        "INSERT INTO twins(ns, name, prop, desired, desired_rv) VALUES (?,?,?,?,?) "
                        "ON CONFLICT(ns, name, prop) DO UPDATE SET desired=excluded.desired, "
                        "desired_rv=excluded.desired_rv", (ns, name, prop, value, rv))
                gone = [p for p, v in rows.items() if v is not None and p not in desired]
                for prop in gone:
                    db.execute("UPDATE twins SET desired=NULL, desired_rv=? WHERE ns=? AND name=? AND prop=?",
                               (rv, ns, name, prop))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return changed

    def remove_device(self, ns: str, name: str) -> None:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute("DELETE FROM twins WHERE ns=? AND name=?", (ns, name))
            self._db.execute("DELETE FROM states WHERE ns=? AND name=?", (ns, name))
            self._db.execute("COMMIT")

    # -- reported (from the mapper) ----------------------------------------------------

    def apply(self, twin_reports: Iterable[tuple[str, str, dict[str, str], int]],
              state_reports: Iterable[tuple[str, str, str, int]] = ()) -> None:
        """Record reports in one transaction; each becomes dirty (to upload) with a new version."""
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                for ns, name, values, ts in twin_reports:
                    for prop, value in values.items():
                        db.execute(
                            "INSERT INTO twins(ns, name, prop, reported, reported_ts, observed_desired, version, dirty, "
                            "dirty_since) VALUES (?,?,?,?,?,NULL,1,1,?) ON CONFLICT(ns, name, prop) DO UPDATE SET "
                            "reported=excluded.reported, reported_ts=excluded.reported_ts, "
                            "observed_desired=twins.desired, version=twins.version+1, "
                            "dirty_since=CASE WHEN twins.dirty=1 AND twins.version IS NOT twins.inflight_version "
                            "THEN twins.dirty_since ELSE excluded.dirty_since END, "
                            "dirty=1", (ns, name, prop, value, ts, ts))
                for ns, name, state, ts in state_reports:
                    db.execute(
                        "INSERT INTO states(ns, name, state, ts, version, dirty) VALUES (?,?,?,?,1,1) "
                        "ON CONFLICT(ns, name) DO UPDATE SET state=excluded.state, ts=excluded.ts, "
                        "version=states.version+1, dirty=1", (ns, name, state, ts))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    def twin(self, ns: str, name: str) -> tuple[dict[str, str], dict[str, str]]:
        """(desired, reported) of one device."""
        with self._lock:
            rows = self._db.execute("SELECT prop, desired, reported FROM twins WHERE ns=? AND name=?",
                                    (ns, name)).fetchall()
        return ({p: d for p, d, _ in rows if d is not None}, {p: r for p, _, r in rows if r is not None})

    # -- upload -------------------------------------------------------------------------

    def pending(self, max_devices: int, exclude: frozenset[tuple[str, str]] | set[tuple[str, str]] = frozenset()
                ) -> list[dict[str, Any]]:
        """Unacked reports grouped per device (at most ``max_devices``, none of ``exclude`` --
        devices already in flight), with the versions sent."""
        max_rows = (max_devices + len(exclude)) * 8
        with self._lock:
            twins = self._db.execute(
                "SELECT ns, name, prop, reported, reported_ts, observed_desired, version FROM twins "
                "WHERE dirty=1 ORDER BY dirty_since LIMIT ?", (max_rows,)).fetchall()
            states = self._db.execute(
                "SELECT ns, name, state, ts, version FROM states WHERE dirty=1 ORDER BY ts LIMIT ?",
                (max_devices + len(exclude),)).fetchall()
        out: dict[tuple[str, str], dict[str, Any]] = {}
        picked: list[tuple[int, str, str, str]] = []
        for ns, name, prop, value, ts, observed, version in twins:
            if (ns, name) in exclude:
                continue
            entry = out.get((ns, name))
            if entry is None:
                if len(out) >= max_devices:
                    continue
                entry = out[(ns, name)] = {"namespace": ns, "name": name, "twins": {}, "_versions": {}}
            twin = {"value": value, "timestamp": ts}
            if observed is not None:
                twin["observedDesired"] = observed
            entry["twins"][prop] = twin
            entry["_versions"][prop] = version
            picked.append((version, ns, name, prop))
        for ns, name, state, ts, version in states:
            if (ns, name) in exclude:
                continue
            entry = out.get((ns, name))
            if entry is None:
                if len(out) >= max_devices:
                    continue
                entry = out[(ns, name)] = {"namespace": ns, "name": name, "twins": {}, "_versions": {}}
            entry["state"], entry["stateTimestamp"], entry["_state_version"] = state, ts, version
        if picked:
            # Remember what is in flight: a report arriving meanwhile starts a new wait (dirty_since).
            with self._lock:
                self._db.executemany("UPDATE twins SET inflight_version=? WHERE ns=? AND name=? AND prop=?", picked)
        return list(out.values())

    def mark_sent(self, entries: Iterable[dict[str, Any]]) -> None:
        """The cloud acked (or finally refused) these: clean rows still at the sent version."""
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                for e in entries:
                    for prop, version in e.get("_versions", {}).items():
                        key = (e["namespace"], e["name"], prop)
                        db.execute("UPDATE twins SET dirty=0 WHERE ns=? AND name=? AND prop=? AND version=?",
                                   (*key, version))
                        db.execute("UPDATE twins SET inflight_version=NULL WHERE ns=? AND name=? AND prop=?", key)
                    if "_state_version" in e:
                        db.execute("UPDATE states SET dirty=0 WHERE ns=? AND name=? AND version=?",
                                   (e["namespace"], e["name"], e["_state_version"]))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    def dirty_count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT (SELECT count(*) FROM twins WHERE dirty=1) + "
                                        "(SELECT count(*) FROM states WHERE dirty=1)").fetchone()[0])
