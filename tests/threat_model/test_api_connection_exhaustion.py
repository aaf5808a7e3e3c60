"""Threat: idle anonymous sockets lock every client out of the API server.

Red-team finding: 2,100 TLS connections with no client certificate, sending nothing, filled the
API server's global connection budget; every kubectl user, node and controller then got its
connection closed at accept. Certificate-less connections now share a smaller budget (per
source address too) and must send a request within the read timeout.
"""

from __future__ import annotations

import http.client
import select
import socket
import ssl
import time

import pytest

from kedge import tls
from support.cluster import Cloud, running_cloud
from support.fixtures import TEST_LIMITS

# Small budgets so the attack needs tens of sockets, not hundreds (the defaults are 256 and 32).
MAX_CERTLESS, PER_SOURCE = 24, 6


@pytest.fixture(scope="module")
def cloud(tmp_path_factory):
    limits = dict(TEST_LIMITS, api_max_certless_connections=MAX_CERTLESS, api_max_certless_per_source=PER_SOURCE)
    with running_cloud(tmp_path_factory.mktemp("conns"), config={"limits": limits}) as c:
        yield c


def _api(cloud: Cloud) -> tuple[str, int]:
    host, port = cloud.endpoints()["api"].removeprefix("https://").rsplit(":", 1)
    return host, int(port)


def _anonymous(cloud: Cloud, source: str) -> ssl.SSLSocket:
    ctx = tls.client_context(cloud.dir / "pki" / "ca.crt")
    raw = socket.create_connection(_api(cloud), timeout=5, source_address=(source, 0))
    return ctx.wrap_socket(raw, server_hostname="127.0.0.1")


def _closed_by_server(s: ssl.SSLSocket, within: float) -> bool:
    """The server ends the connection (EOF or reset) within ``within`` seconds."""
    s.settimeout(within)
    try:
        return s.recv(1) == b""
    except (ConnectionError, ssl.SSLError):
        return True
    except TimeoutError:
        return False


def _admin_status(cloud: Cloud) -> int:
    pki = cloud.dir / "pki"
    host, port = _api(cloud)
    conn = http.client.HTTPSConnection(host, port, timeout=5, context=tls.client_context(
        pki / "ca.crt", pki / "admin.crt", pki / "admin.key"))
    try:
        conn.request("GET", "/api/v1/namespaces/default")
        return conn.getresponse().status
    finally:
        conn.close()


@pytest.mark.threat("K-API-CONNECTION-EXHAUSTION")
def test_idle_anonymous_sockets_cannot_lock_out_clients_with_certificates(cloud: Cloud):
    sources = [f"127.0.0.{i}" for i in range(2, 2 + MAX_CERTLESS // PER_SOURCE + 1)]
    held: list[ssl.SSLSocket] = []
    try:
        for source in sources:
            for _ in range(PER_SOURCE + 2):
                s = _anonymous(cloud, source)
                held.append(s)
        # Every socket over a budget was closed at accept (readable: EOF); the others are still open.
        readable, _, _ = select.select(held, [], [], 1.0)
        refused = sum(1 for s in readable if _closed_by_server(s, 1.0))
        assert refused >= len(held) - MAX_CERTLESS, (refused, len(held))
        # Clients with certificates still get answers while all those are held.
        assert _admin_status(cloud) == 200
    finally:
        for s in held:
            s.close()


@pytest.mark.threat("K-API-CONNECTION-EXHAUSTION")
def test_connection_that_sends_no_request_is_closed_after_the_read_timeout(cloud: Cloud):
    s = _anonymous(cloud, "127.0.0.1")
    try:
        t0 = time.monotonic()
        assert _closed_by_server(s, TEST_LIMITS["http_read_timeout_s"] + 5)
        assert time.monotonic() - t0 < TEST_LIMITS["http_read_timeout_s"] + 5
    finally:
        s.close()
