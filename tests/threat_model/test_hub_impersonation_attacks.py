"""Threats: connecting to CloudHub without a node identity, with a foreign CA, spoofing node_id, downgrading TLS."""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import sys
import time
from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from kedge.pki import ca as pki
from support.cluster import Cloud, EdgeProcess, file_mode, kedge, wait_until
from support.edge import edge_hub, hubinfo
from support.fixtures import cloud, node_client_ctx as _client_ctx  # noqa: F401 - pytest fixture

@pytest.mark.threat("KE-T1")
def test_hub_refuses_connection_without_client_certificate(cloud: Cloud, tmp_path: Path):
    assert cloud.join("nocert", tmp_path / "e").returncode == 0
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(tmp_path / "e" / "pki" / "ca.crt")
    host, port = cloud.hub_hostport

    async def main():
        with pytest.raises((ssl.SSLError, ConnectionError, InvalidHandshake, ConnectionClosed, OSError)):
            async with connect(f"wss://{host}:{port}/tunnel", ssl=ctx, proxy=None, open_timeout=5) as ws:
                await ws.recv()

    asyncio.run(main())


@pytest.mark.threat("K-MITM-FOREIGN-CA")
def test_hub_refuses_certificate_from_another_ca(cloud: Cloud, tmp_path: Path):
    import datetime as dt

    now = dt.datetime.now(dt.timezone.utc)
    rogue_key, rogue_ca = pki.create_ca("rogue", now=now)
    key, cert = pki.issue_client_cert(rogue_key, rogue_ca, common_name="system:node:rogue",
                                      organizations=["system:nodes"], now=now, validity=dt.timedelta(hours=1))
    (tmp_path / "k.pem").write_bytes(pki.key_to_pem(key))
    (tmp_path / "c.pem").write_bytes(pki.cert_to_pem(cert))
    assert cloud.join("foreign", tmp_path / "e").returncode == 0
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(tmp_path / "e" / "pki" / "ca.crt")
    ctx.load_cert_chain(tmp_path / "c.pem", tmp_path / "k.pem")
    host, port = cloud.hub_hostport

    async def main():
        with pytest.raises((ssl.SSLError, ConnectionError, InvalidHandshake, ConnectionClosed, OSError)):
            async with connect(f"wss://{host}:{port}/tunnel", ssl=ctx, proxy=None, open_timeout=5) as ws:
                await ws.recv()

    asyncio.run(main())


@pytest.mark.threat("K-NODE-ID-SPOOF")
def test_node_id_header_spoofing_is_refused(cloud: Cloud, tmp_path: Path):
    assert cloud.join("honest", tmp_path / "e").returncode == 0
    host, port = cloud.hub_hostport

    async def main():
        with pytest.raises(InvalidStatus) as info:
            async with connect(f"wss://{host}:{port}/tunnel", ssl=_client_ctx(tmp_path / "e"), proxy=None,
                               additional_headers={"node_id": "victim"}, open_timeout=5):
                pass
        assert info.value.response.status_code == 403
        assert b"node_id_mismatch" in info.value.response.body
        # The path form carrying a node name must match the certificate too.
        with pytest.raises(InvalidStatus):
            async with connect(f"wss://{host}:{port}/p/victim/events", ssl=_client_ctx(tmp_path / "e"),
                               proxy=None, open_timeout=5):
                pass

    asyncio.run(main())
    assert any(e.get("code") == "node_id_mismatch" and e["result"] == "refused" for e in cloud.audit())


@pytest.mark.threat("K-TLS-DOWNGRADE")
@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1, ssl.TLSVersion.TLSv1_2],
                         ids=["tls1.0", "tls1.1", "tls1.2"])
def test_tls_downgrade_is_refused_by_default(cloud: Cloud, tmp_path: Path, version):
    assert cloud.join(f"old-{version.name.lower().replace('_', '')}", tmp_path / "e").returncode == 0
    ctx = _client_ctx(tmp_path / "e")
    ctx.check_hostname = True
    ctx.set_ciphers("ALL:@SECLEVEL=0")
    ctx.minimum_version = version
    ctx.maximum_version = version
    host, port = cloud.hub_hostport
    with socket.create_connection((host, port), timeout=5) as sock:
        with pytest.raises((ssl.SSLError, ConnectionResetError)):
            with ctx.wrap_socket(sock, server_hostname=host) as tls_sock:
                tls_sock.do_handshake()
