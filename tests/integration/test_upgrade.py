"""Upgrading a data dir written by the first release (``tests/fixtures/upgrade/v1``, made by
``make_v1.py`` with that release's code) and refusing one written by a newer kedge."""

from __future__ import annotations

import base64
import json
import shutil
import sqlite3
from pathlib import Path

import pytest

from kedge.cloud.config import CloudDir
from kedge.cloud.state import CloudState
from kedge.edge.config import EdgeDir
from kedge.edge.devicetwin.table import TwinTable
from kedge.edge.metamanager.store import MetaStore
from kedge.errors import StateError
from kedge.store.sealing import Sealer
from kedge.store.sqlite import Store
from support.cluster import kedge

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "upgrade" / "v1"
SECRET_VALUE = "v1-secret-value-0b4d"  # make_v1.SECRET_VALUE


@pytest.fixture
def v1(tmp_path: Path) -> Path:
    out = tmp_path / "v1"
    shutil.copytree(FIXTURE, out)
    # git keeps no modes: put back what kedge wrote (and checks) -- 0700 dirs, 0600 secrets.
    for path in [out, *out.rglob("*")]:
        if path.is_dir():
            path.chmod(0o700)
        else:
            public = path.suffix in (".crt", ".pem") or path == out / "edge" / "config.json"
            path.chmod(0o644 if public else 0o600)
    return out


def user_version(path: Path) -> int:
    db = sqlite3.connect(path)
    try:
        return db.execute("PRAGMA user_version").fetchone()[0]
    finally:
        db.close()


def test_v1_cloud_dir_opens_with_the_same_objects_after_a_backup(v1: Path):
    d = CloudDir(v1 / "cloud")
    original_config = d.config.read_bytes()
    assert "schema_version" not in json.loads(original_config)
    cfg = d.load_config()
    assert cfg.advertise_addresses == ("127.0.0.1",) and cfg.node_cert_validity_s == 2592000
    assert json.loads(d.config.read_text())["schema_version"] == 2
    assert (d.root / "config.json.bak-v1").read_bytes() == original_config
    assert d.load_config() == cfg  # idempotent

    api_db = d.root / "api.db"
    assert user_version(api_db) == 0
    store = Store(api_db, sealer=Sealer.load_or_create(d.pki / "encryption.json"))
    try:
        secret = store.get("/secrets", "upgrade", "creds")
        assert base64.b64decode(secret["data"]["password"]).decode() == SECRET_VALUE
        assert store.get("/configmaps", "upgrade", "settings")["data"] == {"mode": "v1"}
        assert store.get("/namespaces", "", "upgrade")["metadata"]["name"] == "upgrade"
        assert store.get("rbac.authorization.k8s.io/clusterroles", "", "cluster-admin")
    finally:
        store.close()
    assert user_version(api_db) == 2
    backup = d.root / "api.db.bak-v1"
    assert backup.stat().st_mode & 0o777 == 0o600 and user_version(backup) == 0

    state = CloudState(d.state_db)  # recorded its version (1) from the start: nothing to migrate
    try:
        tokens = {t["node"]: t for t in state.list_tokens()}
        assert tokens["edge-1"]["used_at"] is not None and tokens["edge-2"]["used_at"] is None
        assert state.is_node_revoked("edge-1") is None
    finally:
        state.close()
    assert user_version(d.state_db) == 1 and not (d.root / "state.db.bak-v1").exists()


def test_v1_edge_dir_opens_with_the_same_objects_after_a_backup(v1: Path):
    e = EdgeDir(v1 / "edge")
    cfg = e.load_config()
    assert cfg.node_name == "edge-1" and cfg.pod_uid_range == "200000-265535"
    assert json.loads(e.config.read_text())["schema_version"] == 2
    assert (e.root / "config.json.bak-v1").exists()

    with MetaStore(e.db, e.root / "edge.key") as store:
        assert store.get("upgrade/secret/creds")["stringData"] == {"password": SECRET_VALUE}
        assert store.get("upgrade/configmap/settings")["data"] == {"mode": "v1"}
    assert user_version(e.db) == 2
    assert user_version(e.root / "edge.db.bak-v1") == 0
    db = sqlite3.connect(e.db)
    assert db.execute("SELECT count(*) FROM meta WHERE name = 'schema'").fetchone()[0] == 0
    db.close()

    table = TwinTable(e.root / "twins.db")
    try:
        assert table.twin("upgrade", "thermo") == ({"target": "21"}, {"temperature": "19.5"})
        assert table.dirty_count() == 1  # the unsent report survives the upgrade
    finally:
        table.close()
    assert user_version(e.root / "twins.db") == 2 and (e.root / "twins.db.bak-v1").exists()


def _stamp(path: Path, version: int) -> None:
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version={version}")
    db.close()


def test_stores_stamped_by_a_newer_kedge_are_refused(v1: Path):
    cloud, edge = v1 / "cloud", v1 / "edge"
    opens = {
        cloud / "api.db": lambda: Store(cloud / "api.db"),
        cloud / "state.db": lambda: CloudState(cloud / "state.db"),
        edge / "edge.db": lambda: MetaStore(edge / "edge.db", edge / "edge.key"),
        edge / "twins.db": lambda: TwinTable(edge / "twins.db"),
    }
    for path, open_store in opens.items():
        _stamp(path, 99)
        before = path.read_bytes()
        with pytest.raises(StateError) as err:
            open_store()
        assert err.value.code == "schema_too_new", path
        assert "schema 99" in str(err.value) and path.read_bytes() == before
        assert not list(path.parent.glob(path.name + ".bak-*"))


def test_config_files_from_a_newer_kedge_are_refused(v1: Path):
    for d in (CloudDir(v1 / "cloud"), EdgeDir(v1 / "edge")):
        data = json.loads(d.config.read_text())
        data["schema_version"] = 3
        d.config.write_text(json.dumps(data))
        with pytest.raises(StateError) as err:
            d.load_config()
        assert err.value.code == "schema_too_new"


def test_cli_exits_2_on_a_data_dir_from_a_newer_kedge(v1: Path):
    cloud = v1 / "cloud"
    _stamp(cloud / "state.db", 5)
    r = kedge("token", "create", "--data-dir", str(cloud), "--node", "edge-3")
    assert r.returncode == 2, r.stderr
    assert "schema_too_new" in r.stderr and "this kedge knows 1" in r.stderr
    _stamp(cloud / "state.db", 1)
    assert kedge("token", "create", "--data-dir", str(cloud), "--node", "edge-3").returncode == 0
