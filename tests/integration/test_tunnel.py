"""The cloud-edge tunnel end to end: real cloudcore process, real TLS on 127.0.0.1."""

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

def test_init_creates_private_files_and_refuses_to_overwrite(cloud: Cloud):
    d = cloud.dir
    assert file_mode(d) == 0o700 and file_mode(d / "pki") == 0o700
    for key in ("ca.key", "hub.key", "admin.key", "cloudcore.key"):
        assert file_mode(d / "pki" / key) == 0o600, key
    assert file_mode(d / "state.db") == 0o600
    before = (d / "pki" / "ca.key").read_bytes()
    r = kedge("init", "--data-dir", str(d))
    assert r.returncode == 2 and "exists" in r.stderr
    assert (d / "pki" / "ca.key").read_bytes() == before


def test_join_connects_and_is_served(cloud: Cloud, tmp_path: Path):
    r = cloud.join("join-ok", tmp_path / "e")
    assert r.returncode == 0, r.stderr
    edge = tmp_path / "e"
    assert file_mode(edge) == 0o700 and file_mode(edge / "pki" / "node.key") == 0o600
    cert = pki.load_cert_file(edge / "pki" / "node.crt")
    assert pki.node_name_from_cert(cert) == "join-ok"
    proc = EdgeProcess(edge, tmp_path / "edge.log")
    try:
        wait_until(lambda: "join-ok" in cloud.connected(), what="edge in connected.json")
    finally:
        proc.stop()

    async def main():
        async with edge_hub(edge) as hub:
            info = await hubinfo(hub)
            assert info["node"] == "join-ok"

    asyncio.run(main())
    events = [(e["event"], e.get("result")) for e in cloud.audit() if e.get("node") == "join-ok"]
    assert ("bootstrap", "accepted") in events and ("connect", "accepted") in events


def test_newest_session_of_a_node_replaces_the_older(cloud: Cloud, tmp_path: Path):
    assert cloud.join("twin", tmp_path / "t").returncode == 0

    async def main():
        async with edge_hub(tmp_path / "t") as first:
            old = first.conn
            host, port = cloud.hub_hostport
            async with connect(f"wss://{host}:{port}/tunnel", ssl=_client_ctx(tmp_path / "t"), proxy=None):
                async with asyncio.timeout(5):
                    await old.wait_closed()
                assert old.close_code == 4001 and old.close_reason == "superseded"

    asyncio.run(main())
