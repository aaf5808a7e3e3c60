"""An operator's MQTT broker instead of the mosquitto edgecore runs (``kedge join
--mqtt-broker``): used only after a live check at start-up; one that falls short leaves
device management off (and says why) while the rest of the edge keeps working.

The "operator's broker" is a real mosquitto started by the test with its own config and
certificates from the cloud's device CA (so ``kedge device credentials`` work for it);
edgecore never starts one of its own here."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from integration.test_devices import (
    DeviceCloud, DeviceEdge, MapperProcess, apply_crds, as_list, credentials, device_json, kubectl, thermostat_device,
    thermostat_model, twin)
from kedge._internal import fsutil
from kedge.edge.broker import Broker, BrokerFiles, find_mosquitto, free_port, render_config
from support.cluster import kedge, wait_until
from support.mqttcerts import broker_bundle

pytestmark = pytest.mark.timeout(180)


def operator_files(cloud, node: str, d: Path) -> dict[str, Path]:
    """Broker server credentials and edgecore's client credentials for ``node``, 0600."""
    bundle = broker_bundle(cloud.dir, d / "keys", node)
    files = {}
    for key, name in (("ca", "ca.crt"), ("serverCert", "server.crt"), ("serverKey", "server.key"),
                      ("clientCert", "edgecore.crt"), ("clientKey", "edgecore.key")):
        files[key] = d / name
        fsutil.write_private(files[key], bundle[key].encode())
    return files


def join_with_broker(cloud, node: str, url: str, files: dict[str, Path]) -> subprocess.CompletedProcess:
    return kedge("join", "--cloud", cloud.certs_hostport, "--token", cloud.token(node), "--node", node,
                 "--data-dir", str(cloud.root / node), "--mqtt-broker", url, "--mqtt-ca", str(files["ca"]),
                 "--mqtt-cert", str(files["clientCert"]), "--mqtt-key", str(files["clientKey"]))


@pytest.fixture(scope="module")
def cloud(tmp_path_factory):
    if find_mosquitto() is None:
        pytest.fail("mosquitto is required (tests/install-system-deps.sh installs it)")
    root = tmp_path_factory.mktemp("extbroker")
    c = DeviceCloud(root).start()
    try:
        apply_crds(c)
        kubectl(c, "apply", "-f", "-", input=as_list([thermostat_model(), thermostat_device("edge-o", "t", "23")]))
        yield c
    finally:
        c.stop()


def test_a_checked_operator_broker_carries_desired_values_and_reports(cloud):
    d = fsutil.make_private_dir(cloud.root / "operator")
    files = operator_files(cloud, "edge-o", d)
    broker = Broker(d / "mqtt", "edge-o", cafile=files["ca"], certfile=files["serverCert"],
                    keyfile=files["serverKey"])
    url = broker.start([("default", "t")])  # the operator's ACL: device t, and edgecore-o for all
    edge = mapper = None
    try:
        r = join_with_broker(cloud, "edge-o", url, files)
        assert r.returncode == 0, r.stderr
        edge = DeviceEdge(cloud.root / "edge-o", cloud.root / "edge-o.log")
        assert edge.mqtt_url() == url
        mapper = MapperProcess("default/t", credentials(cloud, "default/t", cloud.root / "creds-t"), url)
        wait_until(lambda: mapper.saw("desired", target="23"), 30, what="desired 23 at the mapper")
        wait_until(lambda: (o := device_json(cloud, "t")) and twin(o, "temperature")
                   and o["status"].get("state") == "online", 30, what="reports in Device status")
        assert not (edge.dir / "mqtt").exists()  # edgecore started no broker of its own
        assert not (edge.dir / "pki" / "mqtt-broker.key").exists()  # nor asked the cloud for broker certificates
        log = edge.log.read_text(errors="replace")
        assert "using the operator's MQTT broker" in log
    finally:
        if mapper is not None:
            mapper.stop()
        if edge is not None:
            edge.stop()
        broker.stop()


@pytest.mark.parametrize("weakness, reason", [
    ("tls12", "TLSv1.2"),
    ("no-client-cert", "answered a client without a certificate"),
])
def test_a_broker_that_falls_short_leaves_device_management_off_and_the_edge_running(cloud, weakness, reason):
    node = f"edge-w-{weakness}"[:30]
    d = fsutil.make_private_dir(cloud.root / f"weak-{weakness}")
    files = operator_files(cloud, node, d)
    port = free_port()
    bf = BrokerFiles(cafile=files["ca"], certfile=files["serverCert"], keyfile=files["serverKey"],
                     aclfile=d / "acl")
    (d / "acl").write_text(f"user edgecore:{node}\ntopic readwrite #\n")
    import pwd
    import os

    conf = render_config(port, bf, run_as=pwd.getpwuid(os.geteuid()).pw_name)
    if weakness == "tls12":
        conf = conf.replace("tls_version tlsv1.3", "tls_version tlsv1.2")
    else:
        conf = conf.replace("require_certificate true", "require_certificate false").replace(
            "allow_anonymous false", "allow_anonymous true")
    (d / "mosquitto.conf").write_text(conf)
    proc = subprocess.Popen([find_mosquitto(), "-c", str(d / "mosquitto.conf")], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    edge = None
    try:
        import socket

        wait_until(lambda: socket.socket().connect_ex(("127.0.0.1", port)) == 0, 10, what="weak broker listening")
        url = f"mqtts://127.0.0.1:{port}"
        r = join_with_broker(cloud, node, url, files)
        assert r.returncode == 0, r.stderr
        edge = DeviceEdge(cloud.root / node, cloud.root / f"{node}.log")
        line = wait_until(lambda: next((x for x in edge.log.read_text(errors="replace").splitlines()
                                        if "device management is off" in x), None), 60,
                          what="the broker check's verdict")
        assert url in line and reason in line, line
        wait_until(lambda: node in cloud.connected(), 30, what="the edge connected regardless")
        endpoints = json.loads((edge.dir / "endpoints.json").read_text()) if (edge.dir / "endpoints.json").exists() \
            else {}
        assert "mqtt" not in endpoints
        assert edge.proc.poll() is None
    finally:
        if edge is not None:
            edge.stop()
        proc.terminate()
        proc.wait(10)


def test_join_refuses_a_clear_text_broker_url_before_spending_the_token(cloud):
    token = cloud.token("edge-p")
    files = {k: cloud.root / "operator" / n for k, n in (("ca", "ca.crt"), ("clientCert", "edgecore.crt"),
                                                         ("clientKey", "edgecore.key"))}
    r = kedge("join", "--cloud", cloud.certs_hostport, "--token", token, "--node", "edge-p",
              "--data-dir", str(cloud.root / "edge-p"), "--mqtt-broker", "mqtt://127.0.0.1:1883",
              "--mqtt-ca", str(files["ca"]), "--mqtt-cert", str(files["clientCert"]), "--mqtt-key",
              str(files["clientKey"]))
    assert r.returncode != 0 and "mqtts://" in r.stderr
    r = kedge("join", "--cloud", cloud.certs_hostport, "--token", token, "--node", "edge-p",
              "--data-dir", str(cloud.root / "edge-p"), "--mqtt-broker", "mqtts://127.0.0.1:8883")
    assert r.returncode != 0 and "--mqtt-ca" in r.stderr
    # The token was not spent by either refusal.
    r = kedge("join", "--cloud", cloud.certs_hostport, "--token", token, "--node", "edge-p",
              "--data-dir", str(cloud.root / "edge-p"))
    assert r.returncode == 0, r.stderr
