"""MQTT broker/client credentials made the way an edge makes them (keys on the edge side,
CSRs certified by the cloud's device CA), for tests that run a broker without edgecore."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from kedge.cloud.devicecontroller import pki as device_pki
from kedge.edge import mqttkeys


def broker_bundle(cloud_dir: Path, work_dir: Path, node: str = "edge-1") -> dict[str, str]:
    """PEM strings ``ca``, ``serverCert``, ``serverKey``, ``clientCert``, ``clientKey``."""
    work_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    csrs = mqttkeys.stage_keys(work_dir, node)
    certs = device_pki.issue_broker_certs(cloud_dir, node, csrs["serverCsr"].encode(), csrs["clientCsr"].encode(),
                                          now=dt.datetime.now(dt.timezone.utc))
    server_key = work_dir / mqttkeys.SERVER_KEY_STAGED
    client_key = work_dir / mqttkeys.CLIENT_KEY_STAGED
    out = dict(certs, serverKey=server_key.read_text(), clientKey=client_key.read_text())
    server_key.unlink()
    client_key.unlink()
    return out
