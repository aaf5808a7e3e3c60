"""Shared pytest fixtures: import the ones a module needs (``from support.fixtures import cloud``)."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from support.cluster import running_cloud

# Small limits so attacks on them are quick to run; the defaults are documented in kedge.limits.
TEST_LIMITS = {"upstream_qps": 200.0, "upstream_burst": 50, "http_read_timeout_s": 1.0,
               "handshake_timeout_s": 2.0}


@pytest.fixture(scope="module")
def cloud(tmp_path_factory):
    root = tmp_path_factory.mktemp("cloud")
    with running_cloud(root, config={"limits": TEST_LIMITS}) as c:
        yield c


def node_client_ctx(edge_dir: Path) -> ssl.SSLContext:
    """A plain client context holding a joined node's identity (to craft raw attacks)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(edge_dir / "pki" / "ca.crt")
    ctx.load_cert_chain(edge_dir / "pki" / "node.crt", edge_dir / "pki" / "node.key")
    return ctx
