"""The device CA has a revocation path that a real mosquitto enforces: a revoked device
certificate is refused at the handshake, an expired device CRL refuses everyone, a missing one
keeps the broker from starting (fail closed)."""

from __future__ import annotations

import datetime as dt
import socket
import ssl
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
