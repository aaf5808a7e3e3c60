"""Pure-core tests: each planted misconfiguration, as facts, FAILs the right check id."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest

from unit.audit import audit_facts as af
from kedge.audit import catalogue
from kedge.audit.checks import REGISTRY
from kedge.audit.facts import MqttFacts, MqttListener, PlaintextHit, TokenFacts, TokenRow
from kedge.audit.model import Severity, Status
from kedge.audit.runner import evaluate

CAT = catalogue.load()


def statuses(facts) -> dict[str, Status]:
    return {r.check.id: r.status for r in evaluate(facts, CAT).results}


def failing(facts) -> set[str]:
    return {k for k, v in statuses(facts).items() if v is Status.FAIL}


def test_healthy_deployment_has_no_fail_and_every_check_reports():
    report = evaluate(af.facts(), CAT)
    assert len(report.results) == len(CAT.checks) >= 25
    assert [r.check.id for r in report.results if r.status is Status.FAIL] == []
    assert report.exit_code(Severity.LOW) == 0


def test_every_catalogue_check_has_exactly_one_function():
    assert set(REGISTRY) == {c.id for c in CAT.checks}


@pytest.mark.parametrize("planted, check_id", [
    (lambda: af.cloud(key_files=(af.f("/c/pki/hub.key", 0o644),)), "KEDGE-CLOUD-001"),
    (lambda: af.cloud(key_files=(dataclasses.replace(af.f("/c/pki/hub.key"), uid=0),)), "KEDGE-CLOUD-002"),
    (lambda: af.cloud(dirs=(af.f("/c", 0o755, True), af.f("/c/pki", 0o700, True))), "KEDGE-CLOUD-003"),
    (lambda: af.cloud(kubeconfig=af.f("/c/admin.kubeconfig", 0o644)), "KEDGE-CLOUD-004"),
    (lambda: af.cloud(certs=(af.cert("hub.crt", key_type="rsa", key_bits=1024, curve=None,
                                      sans=("ip:127.0.0.1",), eku=(af.SERVER_AUTH,)),)), "KEDGE-CLOUD-005"),
    (lambda: af.cloud(certs=(af.cert("hub.crt", not_after=af.NOW - dt.timedelta(days=1), sans=("ip:127.0.0.1",),
                                      eku=(af.SERVER_AUTH,)),)), "KEDGE-CLOUD-006"),
    (lambda: af.cloud(ca=af.cert("ca.crt", is_ca=False, key_cert_sign=True)), "KEDGE-CLOUD-007"),
    (lambda: af.cloud(certs=(af.cert("admin.crt", subject_cn="kedge-admin", subject_o=("system:masters",),
                                      signed_by_ca=False),)), "KEDGE-CLOUD-008"),
    (lambda: af.cloud(config={**af.cloud().config, "advertise_addresses": ["10.0.0.5"]}), "KEDGE-CLOUD-009"),
    (lambda: af.cloud(certs=(af.cert("cloudcore.crt", subject_cn="system:kedge:cloudcore",
                                      subject_o=("system:masters",)),)), "KEDGE-CLOUD-010"),
    (lambda: af.cloud(config={**af.cloud().config, "allow_tls12": "yes"}), "KEDGE-CLOUD-011"),
    (lambda: af.cloud(config={**af.cloud().config, "node_authorization": "off"}), "KEDGE-CLOUD-012"),
    (lambda: af.cloud(config={**af.cloud().config, "node_cert_validity_s": 400 * 86400}), "KEDGE-CLOUD-013"),
    (lambda: af.cloud(crl=dataclasses.replace(af.cloud().crl, exists=False)), "KEDGE-CLOUD-014"),
    (lambda: af.cloud(config={**af.cloud().config, "token_default_ttl_s": 7 * 86400}), "KEDGE-CLOUD-015"),
    (lambda: af.cloud(tokens=TokenFacts(db_path="/c/state.db", rows=(TokenRow("abc123", "x" * 43),))),
     "KEDGE-CLOUD-016"),
    (lambda: af.cloud(plaintext_hits=(PlaintextHit("/c/notes.txt", 3, "bootstrap-token"),)), "KEDGE-CLOUD-016"),
    (lambda: af.cloud(tokens=TokenFacts(db_path="/c/state.db",
                                        rows=(TokenRow("abc123", af.GOOD_HASH, 0.0, 30 * 86400.0),))),
     "KEDGE-CLOUD-017"),
    (lambda: af.cloud(config={**af.cloud().config, "audit_log": ""}), "KEDGE-CLOUD-018"),
    (lambda: af.cloud(audit_log=af.f("/c/audit.log", 0o644)), "KEDGE-CLOUD-018"),
    (lambda: af.cloud(config={**af.cloud().config, "limits": {"max_frame_bytes": 1 << 30}}), "KEDGE-CLOUD-019"),
    (lambda: af.cloud(config={**af.cloud().config, "limits": {"no_such_limit": 1}}), "KEDGE-CLOUD-019"),
    (lambda: af.cloud(state_db=af.f("/c/state.db", 0o664)), "KEDGE-CLOUD-020"),
])
def test_planted_cloud_misconfiguration_fails_its_check(planted, check_id):
    assert check_id in failing(af.facts(cloud=planted()))


@pytest.mark.parametrize("probe, check_id", [
    (lambda: af.hub_probe(no_client_cert="accepted"), "KEDGE-CLUSTER-001"),
    (lambda: af.hub_probe(versions=(("TLSv1", "accepted"), ("TLSv1.1", "refused"), ("TLSv1.2", "refused"),
                                    ("TLSv1.3", "accepted"))), "KEDGE-CLUSTER-002"),
    (lambda: af.hub_probe(versions=(("TLSv1", "refused"), ("TLSv1.1", "refused"), ("TLSv1.2", "accepted"),
                                    ("TLSv1.3", "accepted")), tls12_cbc="accepted", tls12_non_ecdhe="refused"),
     "KEDGE-CLUSTER-003"),
    (lambda: af.hub_probe(peer_cert=af.cert("served", sans=("dns:evil.example",))), "KEDGE-CLUSTER-004"),
    (lambda: af.api_probe(anonymous_status=200), "KEDGE-CLUSTER-005"),
    (lambda: af.certs_probe(oversized="accepted:400"), "KEDGE-CLUSTER-006"),
    (lambda: af.certs_probe(unauthenticated_csr=400), "KEDGE-CLUSTER-012"),
])
def test_planted_listener_weakness_fails_its_check(probe, check_id):
    assert check_id in failing(af.facts(probes=(probe(),)))


def test_tls12_with_cbc_on_hub_fails_both_version_and_cipher_checks_when_config_forbids_tls12():
    weak = af.hub_probe(versions=(("TLSv1", "refused"), ("TLSv1.1", "refused"), ("TLSv1.2", "accepted"),
                                  ("TLSv1.3", "accepted")), tls12_cbc="accepted", tls12_non_ecdhe="accepted")
    assert {"KEDGE-CLUSTER-002", "KEDGE-CLUSTER-003"} <= failing(af.facts(probes=(weak,)))


def test_old_tls_untestable_locally_is_info_not_pass():
    p = af.hub_probe(versions=(("TLSv1", "unavailable"), ("TLSv1.1", "unavailable"), ("TLSv1.2", "refused"),
                               ("TLSv1.3", "accepted")))
    assert statuses(af.facts(probes=(p,)))["KEDGE-CLUSTER-002"] is Status.INFO


def test_unreachable_endpoint_is_error_and_exit_3():
    report = evaluate(af.facts(probes=(af.hub_probe(error="ConnectionRefusedError"),)), CAT)
    assert {r.check.id for r in report.results if r.status is Status.ERROR} >= {"KEDGE-CLUSTER-001",
                                                                                  "KEDGE-CLUSTER-002"}
    assert report.exit_code(Severity.HIGH) == 3


def test_findings_take_precedence_over_incomplete_probes_in_exit_code():
    facts = af.facts(cloud=af.cloud(state_db=af.f("/c/state.db", 0o644)),
                     probes=(af.hub_probe(error="timeout"),))
    assert evaluate(facts, CAT).exit_code(Severity.HIGH) == 1


def test_fail_on_threshold_ignores_lower_severity_findings():
    # KEDGE-CLOUD-003 is medium: fails the run only when --fail-on is medium or lower.
    facts = af.facts(cloud=af.cloud(dirs=(af.f("/c", 0o755, True), af.f("/c/pki", 0o700, True))))
    report = evaluate(facts, CAT)
    assert report.exit_code(Severity.HIGH) == 0
    assert report.exit_code(Severity.MEDIUM) == 1


def test_absent_components_skip_with_reason_not_pass():
    s = statuses(af.facts(cloud=None, edge=None, probes=()))
    assert all(v is Status.SKIP for k, v in s.items() if k.startswith(("KEDGE-CLOUD", "KEDGE-EDGE")))
    report = evaluate(af.facts(probes=(), edge=af.edge(mqtt=None, edge_db=af.FileStat("/e/edge.db", False))), CAT)
    by_id = {r.check.id: r for r in report.results}
    for cid in ("KEDGE-CLUSTER-001", "KEDGE-CLUSTER-005", "KEDGE-CLUSTER-007", "KEDGE-EDGE-004",
                "KEDGE-EDGE-005", "KEDGE-EDGE-007", "KEDGE-EDGE-008", "KEDGE-EDGE-009", "KEDGE-EDGE-010"):
        assert by_id[cid].status is Status.SKIP, cid
        assert "component not present" in by_id[cid].outcome.actual, cid


# --------------------------------------------------------------------------- RBAC

CRB_NODES_ADMIN = {
    "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
    "metadata": {"name": "nodes-are-admins"},
    "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
    "subjects": [{"kind": "Group", "name": "system:nodes", "apiGroup": "rbac.authorization.k8s.io"}],
}


def test_cluster_admin_binding_to_system_nodes_fails():
    facts = af.facts(cloud=af.cloud(rbac=af.rbac(CRB_NODES_ADMIN)))
    assert "KEDGE-CLUSTER-007" in failing(facts)


def test_wildcard_role_bound_to_a_node_fails():
    role = {"kind": "ClusterRole", "metadata": {"name": "edge-all"},
            "rules": [{"apiGroups": [""], "resources": ["*"], "verbs": ["get"]}]}
    binding = {"kind": "ClusterRoleBinding", "metadata": {"name": "edge-all"},
               "roleRef": {"kind": "ClusterRole", "name": "edge-all"},
               "subjects": [{"kind": "User", "name": "system:node:edge-1"}]}
    assert "KEDGE-CLUSTER-008" in failing(af.facts(cloud=af.cloud(rbac=af.rbac({"kind": "List",
                                                                               "items": [role, binding]}))))


def test_binding_for_unauthenticated_group_fails():
    binding = {"kind": "RoleBinding", "metadata": {"name": "open", "namespace": "default"},
               "roleRef": {"kind": "ClusterRole", "name": "view"},
               "subjects": [{"kind": "Group", "name": "system:unauthenticated"}]}
    assert "KEDGE-CLUSTER-009" in failing(af.facts(cloud=af.cloud(rbac=af.rbac(binding))))


def test_narrow_bindings_pass():
    role = {"kind": "ClusterRole", "metadata": {"name": "kedge-cloudcore"},
            "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}]}
    binding = {"kind": "ClusterRoleBinding", "metadata": {"name": "kedge-cloudcore"},
               "roleRef": {"kind": "ClusterRole", "name": "kedge-cloudcore"},
               "subjects": [{"kind": "User", "name": "system:kedge:cloudcore"}]}
    s = statuses(af.facts(cloud=af.cloud(rbac=af.rbac(role, binding))))
    assert [s[c] for c in ("KEDGE-CLUSTER-007", "KEDGE-CLUSTER-008", "KEDGE-CLUSTER-009")] == [Status.PASS] * 3


# --------------------------------------------------------------------------- edge


@pytest.mark.parametrize("planted, check_id", [
    (lambda: af.edge(node_key=af.f("/e/pki/node.key", 0o644)), "KEDGE-EDGE-001"),
    (lambda: af.edge(dirs=(af.f("/e", 0o755, True), af.f("/e/pki", 0o700, True))), "KEDGE-EDGE-002"),
    (lambda: af.edge(node_cert=af.cert("node.crt", subject_cn="system:node:edge-2", subject_o=("system:nodes",))),
     "KEDGE-EDGE-003"),
    (lambda: af.edge(node_cert=af.cert("node.crt", subject_cn="system:node:edge-1", subject_o=("system:nodes",),
                                       not_after=af.NOW - dt.timedelta(seconds=1))), "KEDGE-EDGE-003"),
    (lambda: af.edge(edge_db=af.f("/e/edge.db", 0o644)), "KEDGE-EDGE-004"),
    (lambda: af.edge(edge_key=af.FileStat("/e/edge.key", False)), "KEDGE-EDGE-005"),
    (lambda: af.edge(config={**af.edge().config, "hub": "ws://127.0.0.1:10000"}), "KEDGE-EDGE-006"),
    (lambda: af.edge(mqtt=MqttFacts(conf_path="/e/mosquitto/mosquitto.conf", listeners=(
        MqttListener(port=1883, address=None),), global_allow_anonymous=True)), "KEDGE-EDGE-007"),
    (lambda: af.edge(mqtt=MqttFacts(conf_path="/e/mosquitto/mosquitto.conf", listeners=(
        MqttListener(port=1883, address=None),), global_allow_anonymous=True)), "KEDGE-EDGE-008"),
    (lambda: af.edge(mqtt=MqttFacts(conf_path="/e/mosquitto/mosquitto.conf", listeners=(
        MqttListener(port=1883, address=None),), global_allow_anonymous=True)), "KEDGE-EDGE-009"),
])
def test_planted_edge_misconfiguration_fails_its_check(planted, check_id):
    assert check_id in failing(af.facts(edge=planted()))


def test_short_lived_node_cert_does_not_warn_until_its_last_third():
    s = statuses(af.facts())
    assert s["KEDGE-EDGE-003"] is Status.PASS  # 29 of 30 days left
    soon = af.cert("node.crt", subject_cn="system:node:edge-1", subject_o=("system:nodes",),
                   not_before=af.NOW - dt.timedelta(days=25), not_after=af.NOW + dt.timedelta(days=5))
    assert statuses(af.facts(edge=af.edge(node_cert=soon)))["KEDGE-EDGE-003"] is Status.WARN


def test_a_crashing_check_is_reported_as_error(monkeypatch):
    def boom(facts):
        raise RuntimeError("bug")

    monkeypatch.setitem(REGISTRY, "KEDGE-CLOUD-001", boom)
    report = evaluate(af.facts(), CAT)
    assert report.results[0].status is Status.ERROR
    assert report.exit_code(Severity.CRITICAL) == 3


def test_stopped_service_named_by_endpoints_json_is_skip_not_error():
    stopped = af.hub_probe(error="ConnectionRefusedError: refused", not_running=True)
    report = evaluate(af.facts(probes=(stopped,)), CAT)
    r = {x.check.id: x for x in report.results}
    assert r["KEDGE-CLUSTER-001"].status is Status.SKIP and "not listening" in r["KEDGE-CLUSTER-001"].outcome.actual
    assert report.exit_code(Severity.LOW) == 0


# --------------------------------------------------------------------------- the MQTT broker, live


def _mqtt_probe(**kw):
    p = dataclasses.replace(af.hub_probe(), url="mqtts://127.0.0.1:8883", role="mqtt", plaintext="refused",
                            peer_cert=None)
    return dataclasses.replace(p, **kw)


@pytest.mark.parametrize("kw, expect", [
    ({}, None),
    ({"plaintext": "accepted"}, "clear-text CONNECT"),
    ({"no_client_cert": "accepted"}, "without a certificate"),
    ({"versions": (("TLSv1", "refused"), ("TLSv1.1", "refused"), ("TLSv1.2", "accepted"),
                   ("TLSv1.3", "accepted"))}, "TLSv1.2"),
    ({"versions": (("TLSv1", "refused"), ("TLSv1.1", "refused"), ("TLSv1.2", "refused"),
                   ("TLSv1.3", "refused"))}, "no TLS 1.3"),
])
def test_live_mqtt_broker_check(kw, expect):
    probes = (af.hub_probe(), af.certs_probe(), af.api_probe(), _mqtt_probe(**kw))
    report = evaluate(af.facts(probes=probes), CAT)
    r = {x.check.id: x for x in report.results}
    if expect is None:
        assert r["KEDGE-EDGE-010"].status is Status.PASS
    else:
        assert r["KEDGE-EDGE-010"].status is Status.FAIL and expect in r["KEDGE-EDGE-010"].outcome.actual
    # The broker is the edge's: the cloud listener checks never judge it.
    assert r["KEDGE-CLUSTER-002"].status is statuses(af.facts())["KEDGE-CLUSTER-002"]
    assert "mqtts://" not in r["KEDGE-CLUSTER-002"].outcome.actual


@pytest.mark.parametrize("text", ["https://[::1", "mqtt://[zz]:1", "wss://host:99999", "ftp://h:1", "https://"])
def test_bad_endpoint_urls_are_a_usage_error(text):
    from kedge.audit.probe import Target
    from kedge.errors import ConfigError

    with pytest.raises(ConfigError) as exc:
        Target.parse(text)
    assert exc.value.code == "bad_endpoint"


def test_deeply_nested_config_is_reported_not_raised(tmp_path):
    from kedge.audit.gather import read_json_config

    p = tmp_path / "config.json"
    p.write_text("[" * 100_000)
    data, err = read_json_config(p)
    assert data is None and err


# --------------------------------------------------------------------------- edge MQTT credentials

def _mqtt_edge(**kw):
    good = dict(mqtt_keys=(af.f("/e/pki/mqtt-broker.key"), af.f("/e/pki/mqtt-client.key")),
                mqtt_certs=(af.cert("mqtt-broker.crt", path="/e/pki/mqtt-broker.crt",
                                    not_before=af.NOW - dt.timedelta(days=10), not_after=af.NOW + dt.timedelta(days=80)),
                            af.cert("mqtt-client.crt", path="/e/pki/mqtt-client.crt",
                                    not_before=af.NOW - dt.timedelta(days=10), not_after=af.NOW + dt.timedelta(days=80))))
    good.update(kw)
    return af.edge(**good)


def _cert90(name: str, left: dt.timedelta, **kw):
    return af.cert(name, path=f"/e/pki/{name}", not_before=af.NOW + left - dt.timedelta(days=90),
                   not_after=af.NOW + left, **kw)


def test_mqtt_credentials_healthy_absent_and_planted_faults():
    assert statuses(af.facts(edge=_mqtt_edge()))["KEDGE-EDGE-011"] is Status.PASS
    # 20 days left of 90 is before the 7-day renewal point: not a warning.
    assert statuses(af.facts(edge=_mqtt_edge(mqtt_certs=(_cert90("mqtt-broker.crt", dt.timedelta(days=20)),))))[
        "KEDGE-EDGE-011"] is Status.PASS
    assert statuses(af.facts(edge=_mqtt_edge(mqtt_certs=(_cert90("mqtt-broker.crt", dt.timedelta(days=3)),))))[
        "KEDGE-EDGE-011"] is Status.WARN
    assert statuses(af.facts(edge=af.edge()))["KEDGE-EDGE-011"] is Status.SKIP
    for planted in (
        _mqtt_edge(mqtt_keys=(af.f("/e/pki/mqtt-broker.key", 0o644),)),
        _mqtt_edge(mqtt_keys=(af.FileStat("/e/pki/mqtt-client.key", False),)),
        _mqtt_edge(mqtt_certs=(_cert90("mqtt-client.crt", -dt.timedelta(seconds=1)),)),
        _mqtt_edge(mqtt_certs=(_cert90("mqtt-client.crt", dt.timedelta(days=30), signed_by_ca=False),)),
    ):
        assert "KEDGE-EDGE-011" in failing(af.facts(edge=planted))


def test_an_operator_broker_skips_the_mosquitto_config_checks_saying_why():
    facts = af.facts(probes=(), edge=af.edge(mqtt=None, mqtt_external=True, mqtt_keys=(af.f("/etc/op/c.key"),),
                                             mqtt_certs=(af.cert("mqtt client certificate", path="/etc/op/c.crt"),)))
    by_id = {r.check.id: r for r in evaluate(facts, CAT).results}
    for cid in ("KEDGE-EDGE-007", "KEDGE-EDGE-008", "KEDGE-EDGE-009"):
        assert by_id[cid].status is Status.SKIP and "operator's MQTT broker" in by_id[cid].outcome.actual
    assert by_id["KEDGE-EDGE-011"].status is Status.PASS
    assert "ACL is not checked" in by_id["KEDGE-EDGE-011"].outcome.actual
