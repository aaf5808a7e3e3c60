"""``kedge secrets rotate-key / status / prune-keys`` on a real data dir and api.db."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kedge.store.sealing import Sealer
from kedge.store.sqlite import Store
from support.cluster import kedge

VALUE = "rotate-me-3c1f0a"


def status(d: Path) -> tuple[int, dict[str, int]]:
    r = kedge("secrets", "status", "--data-dir", str(d))
    return r.returncode, {k: int(v) for k, v in (line.split("\t") for line in r.stdout.splitlines())}


def open_store(d: Path) -> Store:  # what the API server does when it starts
    return Store(d / "api.db", sealer=Sealer.load_or_create(d / "pki" / "encryption.json"))


@pytest.mark.threat("K-CLOUD-DB-THEFT")
def test_rotate_reseal_on_restart_then_prune(tmp_path: Path):
    d = tmp_path / "cloud"
    assert kedge("init", "--data-dir", str(d), "--api-port", "0", "--hub-port", "0", "--cert-port", "0").returncode == 0
    store = open_store(d)
    store.create("/secrets", "default", "s", {"metadata": {"name": "s", "namespace": "default"},
                                              "stringData": {"v": VALUE}})
    store.close()
    assert status(d) == (0, {"key1": 2, "plaintext": 0, "unknown": 0})  # the object and its watch-log entry

    r = kedge("secrets", "rotate-key", "--data-dir", str(d))
    assert r.returncode == 0 and "key2 now seals" in r.stdout
    cfg = d / "pki" / "encryption.json"
    assert [k["name"] for k in json.loads(cfg.read_text())["keys"]] == ["key2", "key1"]
    assert cfg.stat().st_mode & 0o777 == 0o600
    # Until the API server restarts, the rows are still under key1: nothing can be pruned.
    assert "nothing" in kedge("secrets", "prune-keys", "--data-dir", str(d)).stdout
    open_store(d).close()  # restart: re-sealed under key2
    assert status(d)[1] == {"key2": 2, "key1": 0, "plaintext": 0, "unknown": 0}
    r = kedge("secrets", "prune-keys", "--data-dir", str(d))
    assert r.returncode == 0 and "dropped: key1" in r.stdout
    assert [k["name"] for k in json.loads(cfg.read_text())["keys"]] == ["key2"]
    store = open_store(d)
    try:
        assert store.get("/secrets", "default", "s")["stringData"]["v"] == VALUE
    finally:
        store.close()
    assert VALUE.encode() not in b"".join(p.read_bytes() for p in d.glob("api.db*"))


def test_status_fails_when_a_secret_is_stored_in_plaintext(tmp_path: Path):
    d = tmp_path / "cloud"
    assert kedge("init", "--data-dir", str(d), "--api-port", "0", "--hub-port", "0", "--cert-port", "0").returncode == 0
    store = Store(d / "api.db")  # written without encryption
    store.create("/secrets", "default", "p", {"metadata": {"name": "p", "namespace": "default"}})
    store.close()
    code, usage = status(d)
    assert code == 1 and usage["plaintext"] == 2
