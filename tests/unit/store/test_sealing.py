"""Secrets encrypted at rest in the API server's store (real SQLite files)."""

from __future__ import annotations

import base64
import json
import os
import sqlite3
from pathlib import Path

import pytest

from kedge.errors import StateError
from kedge.store.sealing import PREFIX, Sealer, SealingError
from kedge.store.sqlite import Store

VALUE = "hunter2-Very-Secret-7d1e"


def secret(name: str, value: str = VALUE) -> dict:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": "default"},
            "data": {"password": base64.b64encode(value.encode()).decode()}, "stringData": {"token": value}}


def config(path: Path, *keys: tuple[str, bytes]) -> Path:
    path.write_text(json.dumps({"keys": [{"name": n, "secret": base64.b64encode(k).decode()} for n, k in keys]}))
    path.chmod(0o600)
    return path


def files_bytes(d: Path) -> bytes:
    return b"".join(p.read_bytes() for p in d.iterdir() if p.name.startswith("api.db"))


def test_secret_values_are_nowhere_in_the_files_and_read_back_plain(tmp_path: Path):
    sealer = Sealer.load_or_create(tmp_path / "encryption.json")
    assert (tmp_path / "encryption.json").stat().st_mode & 0o777 == 0o600
    store = Store(tmp_path / "api.db", sealer=sealer)
    try:
        store.create("/secrets", "default", "db", secret("db"))
        store.create("/configmaps", "default", "cm", {"metadata": {"name": "cm", "namespace": "default"},
                                                      "data": {"visible": "plain-config-value"}})
        store.update("/secrets", "default", "db", secret("db", VALUE + "-v2"))
        assert store.get("/secrets", "default", "db", committed=True)["stringData"]["token"] == VALUE + "-v2"
        _, rows = store.list_raw("/secrets")
        assert VALUE in rows[0]
        assert [e.obj()["stringData"]["token"] for e in store.events_since(0, "/secrets")] == [VALUE, VALUE + "-v2"]
    finally:
        store.close()
    raw = files_bytes(tmp_path)
    assert b"plain-config-value" in raw  # control: unsealed kinds are stored as they are
    assert VALUE.encode() not in raw and base64.b64encode(VALUE.encode()) not in raw
    db = sqlite3.connect(tmp_path / "api.db")
    assert all(d.startswith(PREFIX + "key1:") for (d,) in db.execute("SELECT data FROM objects WHERE resource='/secrets'"))
    db.close()
    # Reopened with the same key: everything is there.
    store = Store(tmp_path / "api.db", sealer=Sealer.load_or_create(tmp_path / "encryption.json"))
    try:
        assert store.get("/secrets", "default", "db")["stringData"]["token"] == VALUE + "-v2"
    finally:
        store.close()


def test_a_store_opened_with_another_key_refuses_clearly(tmp_path: Path):
    k1 = os.urandom(32)
    store = Store(tmp_path / "api.db", sealer=Sealer([("key1", k1)]))
    store.create("/secrets", "default", "db", secret("db"))
    store.close()
    with pytest.raises(StateError) as exc:
        Store(tmp_path / "api.db", sealer=Sealer([("key1", os.urandom(32))]))
    assert exc.value.code == "secrets_key_mismatch"
    # The refused open released the file: the right key still opens it.
    store = Store(tmp_path / "api.db", sealer=Sealer([("key1", k1)]))
    try:
        assert store.get("/secrets", "default", "db")["stringData"]["token"] == VALUE
    finally:
        store.close()


def test_a_sealed_value_moved_to_another_row_does_not_open(tmp_path: Path):
    sealer = Sealer([("key1", os.urandom(32))])
    store = Store(tmp_path / "api.db", sealer=sealer)
    store.create("/secrets", "default", "a", secret("a"))
    store.create("/secrets", "default", "b", secret("b", "other"))
    store.close()
    db = sqlite3.connect(tmp_path / "api.db")
    (a,) = db.execute("SELECT data FROM objects WHERE name='a'").fetchone()
    db.execute("UPDATE objects SET data=? WHERE name='b'", (a,))
    db.commit()
    db.close()
    with pytest.raises(SealingError):
        sealer.open(("/secrets", "default", "b"), a)
    store = Store(tmp_path / "api.db", sealer=sealer)
    try:
        with pytest.raises(SealingError):
            store.get("/secrets", "default", "b")
        assert store.get("/secrets", "default", "a")["metadata"]["name"] == "a"
    finally:
        store.close()


def test_plaintext_from_before_encryption_is_sealed_on_open_and_leaves_no_trace(tmp_path: Path):
    store = Store(tmp_path / "api.db")
    store.create("/secrets", "default", "old", secret("old"))
    store.close()
    assert VALUE.encode() in files_bytes(tmp_path)  # control: without a sealer it is plain
    store = Store(tmp_path / "api.db", sealer=Sealer([("key1", os.urandom(32))]))
    try:
        assert store.get("/secrets", "default", "old")["stringData"]["token"] == VALUE
    finally:
        store.close()
    assert VALUE.encode() not in files_bytes(tmp_path)


def test_key_rotation_reseals_under_the_new_first_key(tmp_path: Path):
    k1, k2 = os.urandom(32), os.urandom(32)
    store = Store(tmp_path / "api.db", sealer=Sealer([("key1", k1)]))
    store.create("/secrets", "default", "s", secret("s"))
    store.close()
    store = Store(tmp_path / "api.db", sealer=Sealer.load_or_create(config(tmp_path / "enc.json", ("key2", k2), ("key1", k1))))
    store.close()
    db = sqlite3.connect(tmp_path / "api.db")
    rows = [d for (d,) in db.execute("SELECT data FROM objects WHERE resource='/secrets' UNION ALL "
                                     "SELECT data FROM events WHERE resource='/secrets'")]
    db.close()
    assert rows and all(d.startswith(PREFIX + "key2:") for d in rows)
    # key1 can now be dropped from the config.
    store = Store(tmp_path / "api.db", sealer=Sealer([("key2", k2)]))
    try:
        assert store.get("/secrets", "default", "s")["stringData"]["token"] == VALUE
    finally:
        store.close()


@pytest.mark.parametrize("doc, mode", [
    ('{"keys": []}', 0o600),
    ('{"keys": [{"name": "k", "secret": "c2hvcnQ="}]}', 0o600),          # 5 bytes, not 32
    ('{"keys": [{"name": "K!", "secret": "' + base64.b64encode(bytes(32)).decode() + '"}]}', 0o600),
    ("not json", 0o600),
    ('{"keys": [{"name": "k", "secret": "' + base64.b64encode(bytes(32)).decode() + '"}]}', 0o644),  # readable
])
def test_bad_encryption_configs_are_refused(tmp_path: Path, doc, mode):
    p = tmp_path / "enc.json"
    p.write_text(doc)
    p.chmod(mode)
    with pytest.raises(SealingError) as exc:
        Sealer.load_or_create(p)
    assert exc.value.code == "bad_encryption_config"
