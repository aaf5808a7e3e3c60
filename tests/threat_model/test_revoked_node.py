"""Threat: a stolen or decommissioned node keeps using its certificate after revocation."""

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

@pytest.mark.threat("K-REVOKED-NODE")
def test_revoked_node_is_refused_and_live_session_closed_within_2s(cloud: Cloud, tmp_path: Path):
    assert cloud.join("doomed", tmp_path / "d").returncode == 0
    assert cloud.join("bystander", tmp_path / "b").returncode == 0

    async def main():
        async with edge_hub(tmp_path / "d") as doomed, edge_hub(tmp_path / "b") as bystander:
            await hubinfo(doomed)
            conn = doomed.conn
            t0 = time.monotonic()
            proc = await asyncio.create_subprocess_exec(
                *__import__("sys").executable.split(), "-m", "kedge", "node", "revoke", "--data-dir",
                str(cloud.dir), "--node", "doomed")
            assert await proc.wait() == 0
            t_revoked = time.monotonic()
            async with asyncio.timeout(5):
                await conn.wait_closed()
            closed_after = time.monotonic() - t_revoked
            assert conn.close_code == 4003 and conn.close_reason == "revoked"
            assert closed_after <= 2.0, f"live revoked session closed after {closed_after:.2f}s"
            assert (await hubinfo(bystander))["node"] == "bystander"
            del t0

    asyncio.run(main())
    # New handshakes with that certificate are refused.
    host, port = cloud.hub_hostport

    async def reconnect():
        with pytest.raises(InvalidStatus) as info:
            async with connect(f"wss://{host}:{port}/tunnel", ssl=_client_ctx(tmp_path / "d"), proxy=None,
                               open_timeout=5):
                pass
        assert info.value.response.status_code == 403

    asyncio.run(reconnect())
    # And so are renewals.
    from kedge.edge.hub import EdgeHub

    async def renew():
        hub = EdgeHub(tmp_path / "d")
        with pytest.raises(Exception) as info:
            await hub.renew()
        assert getattr(info.value, "code", "") == "revoked"

    asyncio.run(renew())
