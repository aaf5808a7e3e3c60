"""The static gatherers on real files in tmp: mosquitto.conf, state.db tokens, manifests, certs."""

from __future__ import annotations

import datetime as dt
import sqlite3

import pytest

from kedge.audit import catalogue, gather
from kedge.audit.model import REFERENCE_KEYS
from kedge.errors import ConfigError
from kedge.pki import ca as pki

NOW = dt.datetime.now(dt.timezone.utc)


def test_mosquitto_listener_on_all_interfaces_without_tls():
    m = gather.parse_mosquitto_conf("listener 1883\nallow_anonymous true\n", "/x")
    (li,) = m.listeners
    assert (li.port, li.address, li.tls, m.global_allow_anonymous) == (1883, None, False, True)


def test_mosquitto_tls_loopback_listener_with_acl():
    conf = """
# device broker
per_listener_settings true
listener 8883 127.0.0.1
cafile /e/pki/ca.crt
certfile /e/mosquitto/server.crt
keyfile /e/mosquitto/server.key
require_certificate true
allow_anonymous false
acl_file /e/mosquitto/acl
listener 0 /run/kedge/mqtt.sock
"""
    m = gather.parse_mosquitto_conf(conf, "/x")
    tls, sock = m.listeners
    assert (tls.address, tls.tls, tls.require_certificate, tls.allow_anonymous, tls.acl_file) == (
        "127.0.0.1", True, True, False, "/e/mosquitto/acl")
    assert sock.socket_path == "/run/kedge/mqtt.sock" and m.per_listener_settings


def test_mosquitto_port_and_bind_address_form_the_default_listener():
    m = gather.parse_mosquitto_conf("port 1884\nbind_address 0.0.0.0\n", "/x")
    assert [(li.port, li.address) for li in m.listeners] == [(1884, "0.0.0.0")]


def test_mosquitto_without_listeners_is_loopback_1883_plain():
    (li,) = gather.parse_mosquitto_conf("", "/x").listeners
    assert (li.port, li.address, li.tls) == (1883, "127.0.0.1", False)


def _tokens_db(path, secret_hash, created_us, expires_us):
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE tokens (id TEXT PRIMARY KEY, node TEXT NOT NULL, secret_hash TEXT NOT NULL, "
                 "created_at INTEGER NOT NULL, expires_at INTEGER NOT NULL, used_at INTEGER, revoked_at INTEGER)")
    conn.execute("INSERT INTO tokens VALUES ('abc123', 'edge-1', ?, ?, ?, NULL, NULL)",
                 (secret_hash, created_us, expires_us))
    conn.commit()
    conn.close()


def test_token_rows_are_read_read_only_with_microsecond_epochs(tmp_path):
    db = tmp_path / "state.db"
    t0 = int(NOW.timestamp() * 1_000_000)
    _tokens_db(db, "sha256:" + "0" * 64, t0, t0 + 900 * 1_000_000)
    facts = gather.read_tokens(db)
    (row,) = facts.rows
    assert facts.error is None and row.token_id == "abc123" and row.used is False
    assert row.expires_at - row.created_at == pytest.approx(900)


def test_a_token_anywhere_in_the_data_dir_is_found(tmp_path):
    token = "a" * 64 + ".abc123." + "B" * 43
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "notes.txt").write_text(f"join with\n{token}\n")
    (tmp_path / "clean.txt").write_text("sha256:" + "a" * 64 + "\n")
    hits = gather.scan_plaintext_tokens(tmp_path)
    assert [(h.path.endswith("notes.txt"), h.line) for h in hits] == [(True, 2)]


def test_rbac_manifests_absent_means_not_present(tmp_path):
    assert gather.read_rbac(tmp_path) is None
    (tmp_path / "manifests").mkdir()
    (tmp_path / "manifests" / "rbac.yaml").write_text(
        "kind: ClusterRoleBinding\nmetadata: {name: b}\nroleRef: {kind: ClusterRole, name: cluster-admin}\n"
        "subjects: [{kind: Group, name: system:nodes}]\n---\nkind: ClusterRole\nmetadata: {name: r}\n"
        "rules: [{apiGroups: ['*'], resources: [pods], verbs: [get]}]\n")
    rb = gather.read_rbac(tmp_path)
    assert [(b.role_name, b.subjects) for b in rb.bindings] == [("cluster-admin", (("Group", "system:nodes"),))]
    assert rb.roles[0].rules == ((("*",), ("pods",), ("get",)),)


def test_cert_facts_from_kedge_pki(tmp_path):
    ca_key, ca_cert = pki.create_ca("kedge-ca", now=NOW)
    other_key, other_ca = pki.create_ca("other", now=NOW)
    _, hub = pki.issue_server_cert(ca_key, ca_cert, common_name="hub", sans=["127.0.0.1", "localhost"], now=NOW)
    info = gather.cert_info("hub.crt", "/x", hub, ca_cert)
    assert (info.key_type, info.curve, info.signed_by_ca) == ("ec", "secp256r1", True)
    assert set(info.sans) == {"ip:127.0.0.1", "dns:localhost"}
    assert gather.cert_info("hub.crt", "/x", hub, other_ca).signed_by_ca is False
    assert gather.cert_info("ca.crt", "/x", ca_cert, ca_cert).is_ca


def test_catalogue_is_complete_and_references_use_known_keys():
    cat = catalogue.load()
    assert len(cat.checks) >= 25
    assert {c.scope for c in cat.checks} == {"cloud", "edge", "cluster"}
    for c in cat.checks:
        assert set(c.reference_dict) <= set(REFERENCE_KEYS)
    assert cat.cis_benchmark.startswith("CIS Kubernetes Benchmark")


@pytest.mark.parametrize("doc", [
    {"checks": [{"id": "KEDGE-CLOUD-001", "title": "t", "scope": "edge", "severity": "high", "automated": True,
                 "remediation": "r"}]},
    {"checks": [{"id": "KEDGE-CLOUD-001", "title": "t", "scope": "cloud", "severity": "urgent",
                 "automated": True, "remediation": "r"}]},
    {"checks": [{"id": "KEDGE-CLOUD-001", "title": "t", "scope": "cloud", "severity": "high", "automated": True,
                 "remediation": "r", "references": {"cis_v2": "1.1"}}]},
    {"checks": [{"id": "KEDGE-CLOUD-001", "title": "t", "scope": "cloud", "severity": "high", "automated": True,
                 "remediation": "r"}] * 2},
])
def test_malformed_catalogue_is_refused(doc):
    with pytest.raises(ConfigError):
        catalogue.from_dict(doc)


def test_kedge_threat_references_name_threats_in_the_register():
    import yaml
    from pathlib import Path

    register = Path(__file__).resolve().parents[3] / "threat-model" / "threats.yaml"
    known = {t["id"] for t in yaml.safe_load(register.read_text())["threats"]}
    refs = {c.id: c.reference_dict["kedge_threat"] for c in catalogue.load().checks
            if "kedge_threat" in c.reference_dict}
    assert refs and {cid: ref for cid, ref in refs.items() if ref not in known} == {}


def test_rbac_is_read_from_the_api_server_store(tmp_path):
    from kedge.store.sqlite import Store

    store = Store(tmp_path / "api.db")
    try:
        store.create("rbac.authorization.k8s.io/clusterrolebindings", "", "b", {
            "kind": "ClusterRoleBinding", "metadata": {"name": "b"},
            "roleRef": {"kind": "ClusterRole", "name": "cluster-admin"},
            "subjects": [{"kind": "User", "name": "system:node:edge-1"}]})
    finally:
        store.close()
    rb = gather.read_rbac(tmp_path)
    assert rb is not None and rb.errors == ()
    assert [(b.name, b.subjects) for b in rb.bindings] == [("b", (("User", "system:node:edge-1"),))]


def test_mqtt_credentials_are_gathered_from_the_edge_pki_or_the_operator_broker_config(tmp_path):
    import json
    import os

    from support.mqttcerts import broker_bundle

    cloud = tmp_path / "cloud"
    (cloud / "pki").mkdir(parents=True)
    edge = tmp_path / "edge"
    (edge / "pki").mkdir(parents=True)
    bundle = broker_bundle(cloud, tmp_path / "keys")
    for key, name in (("ca", "mqtt-ca.crt"), ("serverCert", "mqtt-broker.crt"), ("serverKey", "mqtt-broker.key"),
                      ("clientCert", "mqtt-client.crt"), ("clientKey", "mqtt-client.key")):
        (edge / "pki" / name).write_text(bundle[key])
        os.chmod(edge / "pki" / name, 0o600)
    facts = gather.gather_edge(edge)
    assert [k.path.rsplit("/", 1)[1] for k in facts.mqtt_keys] == ["mqtt-broker.key", "mqtt-client.key"]
    assert [c.signed_by_ca for c in facts.mqtt_certs] == [True, True] and not facts.mqtt_external
    (edge / "config.json").write_text(json.dumps({"node_name": "edge-1", "mqtt_broker": {
        "url": "mqtts://127.0.0.1:8883", "ca": str(edge / "pki" / "mqtt-ca.crt"),
        "cert": str(edge / "pki" / "mqtt-client.crt"), "key": str(edge / "pki" / "mqtt-client.key")}}))
    facts = gather.gather_edge(edge)
    assert facts.mqtt_external and [c.signed_by_ca for c in facts.mqtt_certs] == [True]
    assert [k.path for k in facts.mqtt_keys] == [str(edge / "pki" / "mqtt-client.key")]
