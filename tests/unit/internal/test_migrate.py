"""kedge._internal.migrate: ordered steps, refusal of newer files, backup first, atomic."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from kedge._internal import migrate
from kedge.errors import StateError


def test_plan_orders_steps_and_needs_none_at_the_current_version():
    steps = {1: "a", 2: "b", 3: "c"}
    assert migrate.plan(1, 4, steps, what="x") == ["a", "b", "c"]
    assert migrate.plan(3, 4, steps, what="x") == ["c"]
    assert migrate.plan(4, 4, steps, what="x") == []


def test_a_file_from_a_newer_kedge_is_refused_with_both_versions_named():
    with pytest.raises(StateError) as err:
        migrate.plan(5, 2, {1: "a"}, what="api.db")
    assert err.value.code == migrate.SCHEMA_TOO_NEW == "schema_too_new"
    assert "schema 5, this kedge knows 2" in str(err.value) and "newer kedge" in str(err.value)


@pytest.mark.parametrize("bad", [0, -1, True, "2", 1.5, None])
def test_invalid_versions_are_refused(bad):
    with pytest.raises(StateError) as err:
        migrate.plan(bad, 2, {1: "a"}, what="x")
    assert err.value.code == "schema_invalid"


def test_a_missing_step_is_refused_not_skipped():
    with pytest.raises(StateError) as err:
        migrate.plan(1, 3, {2: "b"}, what="x")
    assert err.value.code == "migration_missing"


def test_config_without_a_version_is_version_1_and_gets_the_current_one():
    out, found = migrate.migrate_dict({"a": 1}, 3, {1: lambda d: {**d, "b": 2}, 2: lambda d: {**d, "c": 3}},
                                      what="config.json")
    assert found == 1 and out == {"a": 1, "b": 2, "c": 3, "schema_version": 3}
    with pytest.raises(StateError) as err:
        migrate.migrate_dict({"schema_version": 4}, 3, {}, what="config.json")
    assert err.value.code == "schema_too_new"


def test_old_config_file_is_backed_up_then_rewritten(tmp_path: Path):
    path = tmp_path / "config.json"
    original = b'{"a": 1}\n'
    path.write_bytes(original)
    render = lambda d: json.dumps(d).encode()  # noqa: E731
    out = migrate.upgrade_json_file(path, {"a": 1}, 2, {1: lambda d: d}, render=render, mode=0o600)
    assert out == {"a": 1, "schema_version": 2}
    assert json.loads(path.read_text()) == out and path.stat().st_mode & 0o777 == 0o600
    backup = tmp_path / "config.json.bak-v1"
    assert backup.read_bytes() == original and backup.stat().st_mode & 0o777 == 0o600
    # At the current version: nothing is written.
    backup.unlink()
    migrate.upgrade_json_file(path, out, 2, {1: lambda d: d}, render=render, mode=0o600)
    assert not backup.exists()


def _db(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    return db


def test_sqlite_steps_run_after_a_backup_of_the_old_file(tmp_path: Path):
    path = tmp_path / "s.db"
    db = _db(path)
    db.execute("CREATE TABLE t (v)")
    db.execute("INSERT INTO t VALUES ('old')")  # user_version 0 with tables: version 1
    found = migrate.upgrade_sqlite(db, path, 3, {1: lambda c: c.execute("ALTER TABLE t ADD COLUMN w"),
                                                 2: lambda c: c.execute("UPDATE t SET w = 'new'")}, what="s.db")
    assert found == 1
    assert db.execute("PRAGMA user_version").fetchone()[0] == 3
    assert db.execute("SELECT v, w FROM t").fetchall() == [("old", "new")]
    backup = tmp_path / "s.db.bak-v1"
    assert backup.stat().st_mode & 0o777 == 0o600
    old = sqlite3.connect(backup)
    assert old.execute("SELECT * FROM t").fetchall() == [("old",)]
    assert old.execute("PRAGMA user_version").fetchone()[0] == 0
    old.close()
    assert migrate.upgrade_sqlite(db, path, 3, {}, what="s.db") is None  # nothing more to do
    db.close()


def test_a_new_database_is_stamped_without_steps_or_backup(tmp_path: Path):
    path = tmp_path / "s.db"
    db = _db(path)
    assert migrate.upgrade_sqlite(db, path, 2, {1: lambda c: pytest.fail("no step on a new file")}, what="s.db") is None
    assert db.execute("PRAGMA user_version").fetchone()[0] == 2
    assert not list(tmp_path.glob("*.bak-*"))
    db.close()


def test_a_failing_step_leaves_the_database_as_it_was(tmp_path: Path):
    path = tmp_path / "s.db"
    db = _db(path)
    db.execute("CREATE TABLE t (v)")
    db.execute("PRAGMA user_version=1")

    def step2(c):
        c.execute("INSERT INTO t VALUES ('half')")
        raise RuntimeError("step failed")

    with pytest.raises(RuntimeError):
        migrate.upgrade_sqlite(db, path, 3, {1: lambda c: c.execute("INSERT INTO t VALUES ('x')"), 2: step2},
                               what="s.db")
    assert not db.in_transaction
    assert db.execute("PRAGMA user_version").fetchone()[0] == 1
    assert db.execute("SELECT count(*) FROM t").fetchone()[0] == 0
    db.close()


def test_a_database_from_a_newer_kedge_is_refused_and_left_untouched(tmp_path: Path):
    path = tmp_path / "s.db"
    db = _db(path)
    db.execute("CREATE TABLE t (v)")
    db.execute("PRAGMA user_version=7")
    with pytest.raises(StateError) as err:
        migrate.upgrade_sqlite(db, path, 2, {1: lambda c: None}, what=str(path))
    assert err.value.code == "schema_too_new" and "schema 7, this kedge knows 2" in str(err.value)
    assert db.execute("PRAGMA user_version").fetchone()[0] == 7 and not db.in_transaction
    assert not list(tmp_path.glob("*.bak-*"))
    db.close()
