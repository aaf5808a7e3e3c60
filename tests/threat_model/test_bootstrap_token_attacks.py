"""Threats: bootstrap token theft and replay, a token used for another node, a fake cloud (CA pin)."""

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

@pytest.mark.threat("K-TOKEN-REPLAY")
def test_replayed_token_is_refused(cloud: Cloud, tmp_path: Path):
    token = cloud.token("replay")
    assert cloud.join("replay", tmp_path / "a", token).returncode == 0
    again = cloud.join("replay", tmp_path / "b", token)
    assert again.returncode != 0 and "token_used" in again.stderr
    assert not (tmp_path / "b" / "pki" / "node.key").exists()


@pytest.mark.threat("K-TOKEN-OTHER-NODE")
def test_token_for_another_node_is_refused(cloud: Cloud, tmp_path: Path):
    token = cloud.token("node-a")
    r = cloud.join("node-b", tmp_path / "b", token)
    assert r.returncode != 0 and "token_node_mismatch" in r.stderr
    assert not (tmp_path / "b" / "pki" / "node.crt").exists()
    # Refused before it was used up: node-a can still join with it, exactly once.
    assert cloud.join("node-a", tmp_path / "a", token).returncode == 0
    again = cloud.join("node-a", tmp_path / "a2", token)
    assert again.returncode != 0 and "token_used" in again.stderr


@pytest.mark.threat("K-TOKEN-REPLAY")
def test_expired_token_is_refused(cloud: Cloud, tmp_path: Path):
    token = cloud.token("late", ttl="1s")
    time.sleep(1.2)
    r = cloud.join("late", tmp_path / "late", token)
    assert r.returncode != 0 and "token_expired" in r.stderr


@pytest.mark.threat("K-MITM-FOREIGN-CA")
def test_edge_refuses_ca_whose_hash_does_not_match_token(cloud: Cloud, tmp_path: Path):
    token = cloud.token("pinned")
    forged = "0" * 64 + token[64:]
    before = len(cloud.audit())
    r = cloud.join("pinned", tmp_path / "p", forged)
    assert r.returncode == 1 and "ca_pin_mismatch" in r.stderr
    # The token was never sent: the cloud saw no bootstrap attempt, and the real token still works.
    assert not [e for e in cloud.audit()[before:] if e["event"] == "bootstrap"]
    assert cloud.join("pinned", tmp_path / "p2", token).returncode == 0


def _bad_token_posts(cloud: Cloud, n: int) -> list[tuple[int, str]]:
    """``n`` bootstrap attempts with a malformed token from 127.0.0.1, as the red team sent them."""
    import http.client

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cloud.dir / "pki" / "ca.crt")
    out = []
    for _ in range(n):
        conn = http.client.HTTPSConnection("127.0.0.1", cloud.certs_port, context=ctx, timeout=5)
        try:
            conn.request("POST", "/edge.crt", body=b"-", headers={"Authorization": "Bearer bad.bad.bad"})
            resp = conn.getresponse()
            out.append((resp.status, json.loads(resp.read())["error"]))
        finally:
            conn.close()
    return out


@pytest.mark.threat("K-TOKEN-FORGERY")
def test_bad_token_flood_from_an_address_does_not_block_joins_or_renewals_from_it(tmp_path: Path):
    from kedge.edge.renewal import renew_identity
    from support.cluster import running_cloud

    with running_cloud(tmp_path) as c:
        edge = tmp_path / "renewer"
        assert c.join("renewer", edge).returncode == 0  # joined before the flood
        before = pki.load_cert_file(edge / "pki" / "node.crt").serial_number
        flood = _bad_token_posts(c, 14)
        assert flood[:10] == [(401, "token_malformed")] * 10 and flood[10:] == [(429, "rate_limited")] * 4
        # A valid join from the same address, with a fresh token, still works...
        r = c.join("newcomer", tmp_path / "newcomer")
        assert r.returncode == 0, r.stderr
        # ...and so does a node's renewal over mutual TLS from it.
        renew_identity(edge)
        assert pki.load_cert_file(edge / "pki" / "node.crt").serial_number != before
        # The flood itself stays refused.
        assert _bad_token_posts(c, 3) == [(429, "rate_limited")] * 3
        accepted = [e for e in c.audit() if e.get("result") == "accepted"]
        assert {(e["event"], e["node"]) for e in accepted} >= {("bootstrap", "newcomer"), ("renewal", "renewer")}
