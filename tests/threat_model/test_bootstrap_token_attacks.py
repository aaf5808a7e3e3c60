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
