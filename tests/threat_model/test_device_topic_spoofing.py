"""Threat K-DEVICE-TOPIC-SPOOF / KE-T3: a rogue device (or a local process) uses the edge
MQTT broker to spoof or read another device's twin.

Real mosquitto started by :class:`kedge.edge.broker.Broker` with the config edgecore
generates; real TLS; credentials from the device CA exactly as ``kedge device
credentials`` issues them. Each attack has a control that succeeds, so a test cannot
pass because nothing works at all.
"""

from __future__ import annotations

import datetime as dt
import socket
import ssl
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from kedge import tls
from kedge._internal import fsutil
from kedge.cloud.devicecontroller import pki as device_pki
from kedge.edge.broker import Broker, find_mosquitto
from kedge.pki import ca as pki
from support.mqttcerts import broker_bundle

pytestmark = pytest.mark.timeout(60)

NOW = dt.datetime.now(dt.timezone.utc)
TOPICS = "$hw/events/device"
# MQTT 3.1.1 CONNECT, clean session, client id "x".
CONNECT = bytes([0x10, 13, 0, 4]) + b"MQTT" + bytes([4, 2, 0, 60, 0, 1]) + b"x"


class Client:
    """A paho MQTT v5 client that records what it receives and the reason codes it gets."""

    def __init__(self, port: int, ctx: ssl.SSLContext, name: str) -> None:
        self.got: list[tuple[str, bytes]] = []
        self.pubacks: dict[int, str] = {}
        self.subacks: list[str] = []
        self.connected = threading.Event()
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=name, protocol=mqtt.MQTTv5)
        self.c.tls_set_context(ctx)
        self.c.on_connect = lambda c, u, f, rc, p: (not rc.is_failure) and self.connected.set()
        self.c.on_message = lambda c, u, msg: self.got.append((msg.topic, msg.payload))
        self.c.on_publish = lambda c, u, mid, rc, p: self.pubacks.__setitem__(mid, str(rc))
        self.c.on_subscribe = lambda c, u, mid, rcs, p: self.subacks.extend(str(r) for r in rcs)
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()
        assert self.connected.wait(10), f"{name} could not connect"

    def publish(self, topic: str, payload: bytes) -> str:
        info = self.c.publish(topic, payload, qos=1)
        info.wait_for_publish(5)
        deadline = time.monotonic() + 5
        while info.mid not in self.pubacks and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.pubacks.get(info.mid, "no puback")

    def subscribe(self, topic: str) -> None:
        n = len(self.subacks)
        self.c.subscribe(topic, qos=1)
        deadline = time.monotonic() + 5
        while len(self.subacks) == n and time.monotonic() < deadline:
            time.sleep(0.01)

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    if find_mosquitto() is None:
        pytest.fail("mosquitto is required (tests/install-system-deps.sh installs it)")
    root: Path = tmp_path_factory.mktemp("broker")
    cloud = root / "cloud"
    fsutil.make_private_dir(cloud / "pki")
    edge = fsutil.make_private_dir(root / "edge")
    bundle = broker_bundle(cloud, root / "mqtt-keys")
    for key, name in (("ca", "ca.crt"), ("serverCert", "broker.crt"), ("serverKey", "broker.key"),
                      ("clientCert", "edgecore.crt"), ("clientKey", "edgecore.key")):
        fsutil.write_private(edge / name, bundle[key].encode())
    creds = {}
    for dev in ("a", "b", "stranger"):
        crt, key, ca = device_pki.issue_device_credentials(cloud, "default", dev, now=NOW)
        d = fsutil.make_private_dir(root / dev)
        fsutil.write_private(d / "device.crt", crt)
        fsutil.write_private(d / "device.key", key)
        fsutil.write_private(d / "ca.crt", ca)
        creds[dev] = d
    broker = Broker(edge / "mqtt", "edge-1", cafile=edge / "ca.crt", certfile=edge / "broker.crt",
                    keyfile=edge / "broker.key")
    broker.start([("default", "a"), ("default", "b")])  # "stranger" is not bound to this node

    def ctx(dev: str) -> ssl.SSLContext:
        d = creds[dev]
        return tls.client_context(d / "ca.crt", d / "device.crt", d / "device.key")

    admin = Client(broker.port, tls.client_context(edge / "ca.crt", edge / "edgecore.crt", edge / "edgecore.key"),
                   "edgecore")
    admin.subscribe(f"{TOPICS}/#")
    try:
        yield {"root": root, "broker": broker, "ctx": ctx, "admin": admin, "edge": edge, "creds": creds}
    finally:
        admin.close()
        broker.stop()


def _settle(predicate, timeout: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def test_device_cannot_publish_on_another_devices_topics(env):
    admin, port = env["admin"], env["broker"].port
    a = Client(port, env["ctx"]("a"), "dev-a")
    try:
        spoof = f"{TOPICS}/default/b/twin/update".encode()
        assert a.publish(f"{TOPICS}/default/b/twin/update", spoof) == "Not authorized"
        assert a.publish(f"{TOPICS}/default/b/state/update", spoof) == "Not authorized"
        # Control: its own topic works, and the observer sees that one but never the spoof.
        assert a.publish(f"{TOPICS}/default/a/twin/update", b"own-a") == "Success"
        assert _settle(lambda: (f"{TOPICS}/default/a/twin/update", b"own-a") in admin.got)
        assert not any(p == spoof for _, p in admin.got)
    finally:
        a.close()


def test_device_cannot_read_another_devices_topics(env):
    admin, port = env["admin"], env["broker"].port
    a = Client(port, env["ctx"]("a"), "dev-a2")
    b = Client(port, env["ctx"]("b"), "dev-b")
    try:
        a.subscribe(f"{TOPICS}/default/b/#")
        a.subscribe(f"{TOPICS}/#")  # a wildcard across devices yields only its own messages
        b.subscribe(f"{TOPICS}/default/b/#")
        assert admin.publish(f"{TOPICS}/default/b/twin/update/delta", b"secret-b") == "Success"
        assert admin.publish(f"{TOPICS}/default/a/twin/update/delta", b"for-a") == "Success"
        assert _settle(lambda: (f"{TOPICS}/default/b/twin/update/delta", b"secret-b") in b.got)
        assert _settle(lambda: (f"{TOPICS}/default/a/twin/update/delta", b"for-a") in a.got)
        time.sleep(0.2)
        assert all(p != b"secret-b" for _, p in a.got)
    finally:
        a.close()
        b.close()


def test_device_not_bound_to_this_node_gets_no_topic(env):
    port = env["broker"].port
    s = Client(port, env["ctx"]("stranger"), "stranger")
    try:
        assert s.publish(f"{TOPICS}/default/stranger/twin/update", b"x") == "Not authorized"
        assert s.publish(f"{TOPICS}/default/a/twin/update", b"x") == "Not authorized"
    finally:
        s.close()


def _raw_mqtt(port: int, ctx: ssl.SSLContext | None) -> bytes:
    """CONNECT over TLS (or plaintext if ctx is None); return what the broker answered."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        sock = ctx.wrap_socket(raw, server_hostname="127.0.0.1") if ctx is not None else raw
        try:
            sock.sendall(CONNECT)
            return sock.recv(4)
        except (ssl.SSLError, ConnectionError, socket.timeout):
            return b""


def test_client_without_certificate_cannot_connect(env):
    edge, port = env["edge"], env["broker"].port
    no_cert = tls.client_context(edge / "ca.crt")
    try:
        answer = _raw_mqtt(port, no_cert)
    except ssl.SSLError:
        answer = b""
    assert not answer.startswith(b"\x20"), "a client without a certificate got a CONNACK"
    # Control: the same exchange with a device certificate gets a CONNACK.
    assert _raw_mqtt(port, env["ctx"]("a")).startswith(b"\x20\x02\x00\x00")


def test_plaintext_connection_is_refused(env):
    answer = _raw_mqtt(env["broker"].port, None)
    assert not answer.startswith(b"\x20")


def test_certificate_from_another_ca_is_refused(env, tmp_path):
    # A look-alike CA issuing "device:default/b" must not be accepted (only the device CA is trusted).
    fake_key, fake_ca = pki.create_ca("kedge device CA", now=NOW)
    key, cert = pki.issue_client_cert(fake_key, fake_ca, common_name="device:default/b",
                                      organizations=["kedge:devices"], now=NOW)
    fsutil.write_private(tmp_path / "d.key", pki.key_to_pem(key))
    fsutil.write_private(tmp_path / "d.crt", pki.cert_to_pem(cert))
    ctx = tls.client_context(env["edge"] / "ca.crt", tmp_path / "d.crt", tmp_path / "d.key")
    try:
        answer = _raw_mqtt(env["broker"].port, ctx)
    except ssl.SSLError:
        answer = b""
    assert not answer.startswith(b"\x20")


def test_broker_listens_on_loopback_only_with_tls13(env):
    conf = (env["broker"].dir / "mosquitto.conf").read_text()
    listeners = [line for line in conf.splitlines() if line.startswith(("listener", "port", "bind_address"))]
    assert listeners == [f"listener {env['broker'].port} 127.0.0.1"]
    for line in ("require_certificate true", "use_identity_as_username true", "allow_anonymous false",
                 "tls_version tlsv1.3"):
        assert line in conf.splitlines()
    # TLS 1.2 is not offered.
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(str(env["edge"] / "ca.crt"))
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    with pytest.raises((ssl.SSLError, ConnectionError)):
        with socket.create_connection(("127.0.0.1", env["broker"].port), timeout=5) as raw:
            ctx.wrap_socket(raw, server_hostname="127.0.0.1").close()
