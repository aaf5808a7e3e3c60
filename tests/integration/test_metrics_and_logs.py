"""Prometheus metrics and JSON logs of real cloudcore/edgecore processes (issue 16, items 2 and 3).

A real cloudcore with ``--metrics-address 127.0.0.1:0 --log-format json`` and two real
edgecores with their own loopback metrics endpoints; every scrape is parsed with
prometheus_client's own parser, every stderr line as JSON.
"""

from __future__ import annotations

import json
import ssl
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest

from support.api import scrape
from support.cluster import REPO, Cloud, kedge, stop_process, wait_until

NODES = ("metrics-a", "metrics-b")


def _start(args: list[str], log: Path) -> subprocess.Popen:
    fh = open(log, "ab")
    try:
        return subprocess.Popen([sys.executable, "-m", "kedge", *args], stdout=fh, stderr=fh, cwd=REPO)
    finally:
        fh.close()  # the child holds its own descriptor


def _endpoints(d: Path) -> dict:
    try:
        return json.loads((d / "endpoints.json").read_text())
    except (FileNotFoundError, ValueError):
        return {}


_scrape = scrape


def _value(families: dict, family: str, sample: str | None = None, **labels: str) -> float:
    return families[family][(sample or family, tuple(sorted(labels.items())))]


def _json_lines(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def metered(tmp_path_factory) -> Iterator[dict]:
    root = tmp_path_factory.mktemp("metrics")
    cloud = Cloud(root)  # kedge init only; cloudcore is started here with the options under test
    cloud_log = root / "cloudcore.log"
    procs: list[subprocess.Popen] = []
    try:
        procs.append(_start(["cloudcore", "--data-dir", str(cloud.dir), "--metrics-address", "127.0.0.1:0",
                             "--log-format", "json"], cloud_log))
        wait_until(lambda: {"hub", "certs", "metrics"} <= set(_endpoints(cloud.dir)), 30, what="cloudcore endpoints")
        edges = {}
        for node in NODES:
            edge_dir = root / node
            cloud.join(node, edge_dir)
            log = root / f"{node}.log"
            procs.append(_start(["edgecore", "--data-dir", str(edge_dir), "--metrics-address", "127.0.0.1:0",
                                 "--log-format", "json"], log))
            edges[node] = {"dir": edge_dir, "log": log}
        wait_until(lambda: set(NODES) <= cloud.connected(), 30, what="both edges connected")
        for edge in edges.values():
            wait_until(lambda e=edge: "metrics" in _endpoints(e["dir"]), 30, what="edge metrics endpoint")
        yield {"cloud": cloud, "cloud_log": cloud_log, "edges": edges}
    finally:
        for proc in reversed(procs):
            stop_process(proc)


def test_cloudcore_metrics_count_the_connected_edges(metered):
    url = _endpoints(metered["cloud"].dir)["metrics"]
    assert url.startswith("http://127.0.0.1:")

    def synced():
        fams = _scrape(url)
        return fams if (_value(fams, "kedge_cloudhub_connected_edges") == 2
                        and _value(fams, "kedge_cloud_resyncs", "kedge_cloud_resyncs_total") >= 2) else None

    fams = wait_until(synced, 15, what="connected-edges gauge == 2 and both edges resynced")
    # Tunnel traffic by bounded type/resource labels: both edges' inventories came in and were answered.
    assert _value(fams, "kedge_cloudhub_messages", "kedge_cloudhub_messages_total",
                  direction="in", type="query", resource="inventory") >= 2
    assert _value(fams, "kedge_cloudhub_messages", "kedge_cloudhub_messages_total",
                  direction="out", type="response", resource="inventory") >= 2
    assert _value(fams, "kedge_certificate_requests", "kedge_certificate_requests_total",
                  kind="bootstrap", result="accepted", code="ok") == 2
    # Node certificates live 30 days by default: both expire within 30 d, none within 1 d.
    assert _value(fams, "kedge_node_certificates_expiring", within="1d") == 0
    assert _value(fams, "kedge_node_certificates_expiring", within="30d") == 2
    assert _value(fams, "kedge_node_certificate_earliest_expiry_timestamp_seconds") > 0
    # The embedded API server's requests (the controllers' list/watch) and its store commits.
    assert _value(fams, "kedge_apiserver_requests", "kedge_apiserver_requests_total", verb="list", code="200") >= 1
    assert _value(fams, "kedge_apiserver_watches_open") >= 1
    assert _value(fams, "kedge_apiserver_request_duration_seconds", "kedge_apiserver_request_duration_seconds_count",
                  verb="list") >= 1
    assert _value(fams, "kedge_store_commit_duration_seconds", "kedge_store_commit_duration_seconds_count") >= 1
    # Cardinality: no label carries a node or pod name.
    for family in fams.values():
        for _name, labels in family:
            assert not any(v in NODES for _k, v in labels), (family, labels)


def test_edgecore_metrics_show_the_tunnel_up(metered):
    for node, edge in metered["edges"].items():
        url = _endpoints(edge["dir"])["metrics"]
        assert url.startswith("http://127.0.0.1:")
        fams = _scrape(url)
        assert _value(fams, "kedge_edge_tunnel_connected") == 1, node
        assert _value(fams, "kedge_edge_tunnel_connects", "kedge_edge_tunnel_connects_total") >= 1
        assert _value(fams, "kedge_edge_store_bytes") > 0
        assert _value(fams, "kedge_edge_pods", phase="Running") == 0


def test_json_logs_name_the_tunnel_events_with_the_node(metered):
    edge = metered["edges"][NODES[0]]
    lines = _json_lines(edge["log"])  # every line parses: nothing but JSON on stderr
    assert lines
    for line in lines:
        assert {"ts", "level", "logger", "event", "msg"} <= set(line), line
    assert any(line["event"] == "tunnel.connected" and line.get("node") == NODES[0] for line in lines)
    cloud_lines = wait_until(lambda: [ln for ln in _json_lines(metered["cloud_log"])
                                      if ln["event"] == "tunnel.connected"], 10, what="cloud tunnel.connected")
    assert {ln.get("node") for ln in cloud_lines} >= set(NODES)
    assert any(ln["event"] == "bootstrap.accepted" for ln in _json_lines(metered["cloud_log"]))


def test_metrics_endpoint_answers_only_get_metrics(metered):
    url = _endpoints(metered["cloud"].dir)["metrics"]
    for path, method, status in (("/nope", "GET", 404), ("/metrics", "POST", 405)):
        req = urllib.request.Request(url + path, method=method, data=b"" if method == "POST" else None)
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(req, timeout=10)  # noqa: S310 - loopback test URL
        assert err.value.code == status


def test_edgecore_refuses_a_non_loopback_metrics_address(tmp_path):
    proc = kedge("edgecore", "--data-dir", str(tmp_path / "edge"), "--metrics-address", "0.0.0.0:9100")
    assert proc.returncode == 2
    assert "loopback" in proc.stderr


def test_cloudcore_metrics_off_loopback_need_a_scraper_client_certificate(tmp_path):
    """Served over TLS with client certificates of the cluster CA required; the admin (system:masters)
    may read, a node certificate may not, a client without a certificate cannot even connect."""
    import socket

    cloud = Cloud(tmp_path)
    # A non-loopback address of this host: the source address of a route out (no packet is sent).
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("10.255.255.255", 1))
            host = probe.getsockname()[0]
        except OSError:
            pytest.skip("no non-loopback IPv4 address")
    if host.startswith("127.") or host == "0.0.0.0":
        pytest.skip("no non-loopback IPv4 address")
    log = tmp_path / "cloudcore.log"
    proc = _start(["cloudcore", "--data-dir", str(cloud.dir), "--metrics-address", f"{host}:0"], log)
    try:
        wait_until(lambda: "metrics" in _endpoints(cloud.dir), 30, what="metrics endpoint")
        url = _endpoints(cloud.dir)["metrics"]
        assert url.startswith("https://")
        pki = cloud.dir / "pki"
        base = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        base.check_hostname = False  # the hub certificate names the advertise addresses, not this one
        with pytest.raises((ssl.SSLError, ConnectionError, urllib.error.URLError)):
            urllib.request.urlopen(url + "/metrics", context=base, timeout=10).read()  # noqa: S310
        admin = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        admin.check_hostname = False
        admin.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
        with urllib.request.urlopen(url + "/metrics", context=admin, timeout=10) as resp:  # noqa: S310
            assert b"kedge_cloudhub_connected_edges" in resp.read()
        cloud.join("scraper-node", tmp_path / "edge")
        node = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        node.check_hostname = False
        edge_pki = tmp_path / "edge" / "pki"
        node.load_cert_chain(str(edge_pki / "node.crt"), str(edge_pki / "node.key"))
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(url + "/metrics", context=node, timeout=10)  # noqa: S310
        assert err.value.code == 403
    finally:
        stop_process(proc)
