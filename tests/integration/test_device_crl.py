"""The device CA has a revocation path that a real mosquitto enforces: a revoked device
certificate is refused at the handshake, an expired device CRL refuses everyone, a missing one
keeps the broker from starting (fail closed). End to end: ``kedge device revoke`` on the cloud
reaches a running edge's broker within the edge's CRL poll interval, ending the revoked
device's live session while other devices keep working."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import socket
import ssl
import time
from pathlib import Path

import pytest

from kedge import tls
from kedge._internal import fsutil
from kedge.audit.probe import mqtt_connect_packet, read_connack
from kedge.cloud.devicecontroller import pki as device_pki
from kedge.edge.broker import Broker, BrokerUnavailable, find_mosquitto
from support.mqttcerts import broker_bundle

pytestmark = pytest.mark.timeout(120)


def _connack(port: int, ca: Path, crt: Path, key: Path) -> int | None:
    """CONNECT as the certificate's identity; the CONNACK code, or None if the broker refused
    the TLS identity (handshake failure or the connection closed)."""
    ctx = tls.client_context(ca, crt, key)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
                ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
            s.sendall(mqtt_connect_packet(b"probe"))
            return read_connack(s)
    except (ssl.SSLError, OSError):
        return None


def _device(cloud: Path, tmp: Path, name: str) -> tuple[Path, Path]:
    crt, key, _ = device_pki.issue_device_credentials(cloud, "default", name, now=dt.datetime.now(dt.timezone.utc))
    fsutil.atomic_write(tmp / f"{name}.crt", crt)
    fsutil.write_private(tmp / f"{name}.key", key)
    return tmp / f"{name}.crt", tmp / f"{name}.key"


@pytest.mark.threat("K-DEVICE-CERT-REVOCATION")
def test_revoked_device_certificate_is_refused_by_the_broker_and_stale_or_missing_crls_fail_closed(tmp_path):
    if find_mosquitto() is None:
        pytest.fail("mosquitto is required (tests/install-system-deps.sh installs it)")
    cloud = tmp_path / "cloud"
    fsutil.make_private_dir(cloud / "pki")
    bundle = broker_bundle(cloud, tmp_path / "keys", "edge-1")
    files = {}
    for key in bundle:
        files[key] = tmp_path / key
        fsutil.write_private(files[key], bundle[key].encode())
    good, bad = _device(cloud, tmp_path, "good"), _device(cloud, tmp_path, "bad")
    assert device_pki.revoke_device(cloud, "default", "bad", now=dt.datetime.now(dt.timezone.utc)) == 1
    crl = tmp_path / "mqtt-crl.pem"
    now = dt.datetime.now(dt.timezone.utc)
    fsutil.atomic_write(crl, device_pki.device_crl_pem(cloud, now=now, lifetime=dt.timedelta(days=1)).encode())

    b = Broker(tmp_path / "mqtt", "edge-1", cafile=files["ca"], certfile=files["serverCert"],
               keyfile=files["serverKey"], crlfile=crl)
    b.start([("default", "good"), ("default", "bad")])
    try:
        assert _connack(b.port, files["ca"], *good) == 0
        assert _connack(b.port, files["ca"], *bad) is None
    finally:
        b.stop()

    # A CRL past its nextUpdate: OpenSSL refuses every client certificate.
    stale = device_pki.device_crl_pem(cloud, now=now - dt.timedelta(days=3), lifetime=dt.timedelta(days=1))
    fsutil.atomic_write(crl, stale.encode())
    b.start([("default", "good")])
    try:
        assert _connack(b.port, files["ca"], *good) is None
    finally:
        b.stop()

    # No CRL: the broker does not start.
    crl.unlink()
    with pytest.raises(BrokerUnavailable) as info:
        b.start([("default", "good")])
    assert info.value.code == "crl_missing"


# --------------------------------------------------------------------------- end to end


class RawDevice:
    """A device's own MQTT 3.1.1 session over TLS, held open by the test: it publishes twin
    reports and pings, and notices when the broker ends the session."""

    def __init__(self, url: str, creds: Path, ns: str, name: str) -> None:
        host, port = url.removeprefix("mqtts://").rsplit(":", 1)
        ctx = tls.client_context(creds / "ca.crt", creds / "device.crt", creds / "device.key")
        self.topic = f"$hw/events/device/{ns}/{name}/twin/update".encode()
        self.sock = ctx.wrap_socket(socket.create_connection((host, int(port)), timeout=5), server_hostname=host)
        self.sock.sendall(mqtt_connect_packet(f"raw-{name}".encode()))
        assert read_connack(self.sock) == 0

    def publish(self, prop: str, value: str) -> None:
        body = json.dumps({"event_id": f"e{time.monotonic_ns()}", "timestamp": int(time.time() * 1000),
                           "twin": {prop: {"actual": {"value": value}, "metadata": {"type": "Updated"}}}}).encode()
        rest = len(self.topic).to_bytes(2, "big") + self.topic + body
        length, n = b"", len(rest)
        while True:  # MQTT variable-length remaining length
            n, digit = n >> 7, n & 0x7F
            length += bytes([digit | (0x80 if n else 0)])
            if not n:
                break
        self.sock.sendall(b"\x30" + length + rest)

    def cut_by_broker(self) -> bool:
        """Ping; True once the broker has closed this session (EOF, reset, TLS alert)."""
        try:
            self.sock.sendall(b"\xc0\x00")  # PINGREQ
            self.sock.settimeout(1.0)
            return self.sock.recv(2) != b"\xd0\x00"  # b"" on EOF
        except TimeoutError:
            return False
        except (ssl.SSLError, OSError):
            return True

    def close(self) -> None:
        self.sock.close()


def _handshake_error(url: str, creds: Path) -> str | None:
    """None if a new session with these credentials is accepted (CONNACK 0), else what refused it."""
    host, port = url.removeprefix("mqtts://").rsplit(":", 1)
    ctx = tls.client_context(creds / "ca.crt", creds / "device.crt", creds / "device.key")
    try:
        with socket.create_connection((host, int(port)), timeout=5) as raw, \
                ctx.wrap_socket(raw, server_hostname=host) as s:
            # TLS 1.3: the broker checks our certificate after our side of the handshake is done
            # and answers a refused one with an alert. Listen for it before sending anything (a
            # CONNECT the broker leaves unread can turn its close into a reset that loses the alert).
            s.settimeout(1.0)
            with contextlib.suppress(TimeoutError):
                if not s.recv(1):
                    return "closed"
            s.settimeout(5)
            s.sendall(mqtt_connect_packet(b"probe"))
            code = read_connack(s)
            return None if code == 0 else f"connack {code}"
    except (ssl.SSLError, OSError) as exc:
        return repr(exc)


CRL_POLL_S = 2.0


@pytest.mark.threat("K-DEVICE-CERT-REVOCATION")
def test_revoked_device_is_cut_off_by_a_running_edge_broker_within_the_crl_poll_interval(tmp_path):
    """A device connected and publishing through a running edge is revoked on the cloud
    (``kedge device revoke``): within the edge's CRL poll interval its live session ends and
    its reconnection is refused at the handshake (certificate revoked), while another device on
    the same broker keeps working."""
    from integration.test_devices import (DeviceCloud, DeviceEdge, MapperProcess, apply_crds, as_list, credentials,
                                          device_json, kubectl, thermostat_device, thermostat_model, twin)
    from support.cluster import kedge, wait_until

    if find_mosquitto() is None:
        pytest.fail("mosquitto is required (tests/install-system-deps.sh installs it)")
    cloud = DeviceCloud(tmp_path).start()
    edge = mapper = bad = None
    try:
        apply_crds(cloud)
        assert cloud.join("edge-c").returncode == 0
        config = tmp_path / "edge-c" / "config.json"
        cfg = json.loads(config.read_text())
        cfg["limits"] = {**cfg.get("limits", {}), "device_crl_poll_s": CRL_POLL_S}
        fsutil.atomic_write(config, json.dumps(cfg).encode())
        edge = DeviceEdge(tmp_path / "edge-c", tmp_path / "edge-c.log")
        url = edge.mqtt_url()
        kubectl(cloud, "apply", "-f", "-", input=as_list([
            thermostat_model(), thermostat_device("edge-c", "good", "20"), thermostat_device("edge-c", "bad", "20")]))
        good_creds = credentials(cloud, "default/good", tmp_path / "creds-good")
        bad_creds = credentials(cloud, "default/bad", tmp_path / "creds-bad")
        assert (edge.dir / "pki" / "mqtt-crl.pem").stat().st_mode & 0o777 == 0o600
        mapper = MapperProcess("default/good", good_creds, url)
        wait_until(lambda: mapper.saw("desired", target="20"), 30, what="desired 20 at the good mapper")

        # The device to revoke is connected and its reports reach the cloud.
        bad = RawDevice(url, bad_creds, "default", "bad")

        def bad_reported(value: str) -> bool:
            bad.publish("target-temperature", value)
            return twin(device_json(cloud, "bad"), "target-temperature") == value

        wait_until(lambda: bad_reported("21"), 30, interval=0.3, what="the bad device's report in its status")
        assert not bad.cut_by_broker()

        r = kedge("device", "revoke", "--data-dir", str(cloud.dir), "--device", "default/bad")
        assert r.returncode == 0 and "revoked 1 certificate" in r.stdout, r.stdout + r.stderr
        revoked_at = time.monotonic()
        # The live session ends: the edge fetched the new CRL and restarted its broker with it.
        wait_until(bad.cut_by_broker, CRL_POLL_S + 15, interval=0.1, what="the revoked device's session cut")
        took = time.monotonic() - revoked_at
        # And the device cannot come back: refused at the handshake, as revoked.
        def answer() -> str | None:  # what the broker says to the revoked device, once it listens again
            e = _handshake_error(url, bad_creds)
            return "accepted" if e is None else None if "ConnectionRefused" in e else e

        refused = wait_until(answer, 15, what="the restarted broker answering")
        assert "CERTIFICATE_REVOKED" in refused, refused
        wait_until(lambda: "device CRL updated" in edge.log.read_text(errors="replace"), 5, what="the edge's log line")
        print(f"revoked device cut off {took:.1f} s after kedge device revoke (poll interval {CRL_POLL_S} s)")

        # The other device keeps working on the same address: new sessions, desired values, reports.
        assert edge.mqtt_url() == url
        wait_until(lambda: _handshake_error(url, good_creds) is None, 15, what="a new session of the good device")
        kubectl(cloud, "patch", "device", "good", "--type=json", "-p",
                json.dumps([{"op": "replace", "path": "/spec/properties/0/desired/value", "value": "24"}]))
        wait_until(lambda: mapper.saw("desired", target="24"), 30, what="desired 24 at the good mapper")
        wait_until(lambda: twin(device_json(cloud, "good"), "target-temperature") == "24", 30,
                   what="the good device's report after the revocation")
    finally:
        if bad is not None:
            bad.close()
        if mapper is not None:
            mapper.stop()
        if edge is not None:
            edge.stop()
        cloud.stop()
