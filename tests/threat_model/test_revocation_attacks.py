"""Threat: a revoked node or user keeps access on connections opened before the revocation,
or gets a certificate issued while it is being revoked, or a CRL that is gone or stale is
read as "nothing revoked".

Every test drives a real cloudcore (real TLS, real SQLite, the real CLI) except the
issuance race, which runs the real certificate endpoint in-process so the revocation can be
interleaved deterministically between signing and recording.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import http.client
import json
import ssl
import sys
import threading
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from kedge import tls
from kedge._internal import fsutil
from kedge.pki import ca as pki
from support.cluster import Cloud, kedge, running_cloud
from support.fixtures import cloud  # noqa: F401 - pytest fixture

# The requirement: a live connection observes a revocation within 2 s.
REVOCATION_DEADLINE_S = 2.0


def _api(cloud: Cloud) -> tuple[str, int]:
    host, port = cloud.endpoints()["api"].removeprefix("https://").rsplit(":", 1)
    return host, int(port)


def _ctx(ca: Path, crt: Path, key: Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(ca)
    ctx.load_cert_chain(crt, key)
    return ctx


def _node_ctx(edge: Path) -> ssl.SSLContext:
    return _ctx(edge / "pki" / "ca.crt", edge / "pki" / "node.crt", edge / "pki" / "node.key")


def _user_cert(cloud: Cloud, tmp: Path, name: str, groups: list[str]) -> tuple[ssl.SSLContext, int]:
    """A client certificate from the cluster CA, as an operator issues one to a user."""
    ca_key, ca_cert = pki.load_key_file(cloud.dir / "pki" / "ca.key"), pki.load_cert_file(cloud.dir / "pki" / "ca.crt")
    key, cert = pki.issue_client_cert(ca_key, ca_cert, common_name=name, organizations=groups,
                                      now=dt.datetime.now(dt.timezone.utc), validity=dt.timedelta(hours=1))
    fsutil.write_private(tmp / f"{name}.key", pki.key_to_pem(key))
    fsutil.atomic_write(tmp / f"{name}.crt", pki.cert_to_pem(cert))
    return _ctx(cloud.dir / "pki" / "ca.crt", tmp / f"{name}.crt", tmp / f"{name}.key"), cert.serial_number


def _write_crl(cloud: Cloud, serials: list[int], *, now: dt.datetime, lifetime: dt.timedelta) -> None:
    """Revoke ``serials`` as an operator holding the CA would: a new signed CRL, written atomically."""
    ca_key, ca_cert = pki.load_key_file(cloud.dir / "pki" / "ca.key"), pki.load_cert_file(cloud.dir / "pki" / "ca.crt")
    crl = pki.build_crl(ca_key, ca_cert, [(s, now) for s in serials], now=now, next_update=lifetime)
    fsutil.atomic_write(cloud.dir / "pki" / "crl.pem", crl.public_bytes(serialization.Encoding.PEM))


def _get(conn: http.client.HTTPSConnection, path: str) -> int:
    conn.request("GET", path, headers={"Accept": "application/json"})
    resp = conn.getresponse()
    resp.read()
    return resp.status


def _revoke(cloud: Cloud, node: str) -> float:
    """``kedge node revoke``; the monotonic time it returned (the revocation is committed)."""
    kedge("node", "revoke", "--data-dir", str(cloud.dir), "--node", node, check=True)
    return time.monotonic()


@pytest.mark.threat("K-REVOKED-NODE")
def test_revoked_node_keepalive_connection_gets_401_on_its_next_request(cloud: Cloud, tmp_path: Path):
    edge = tmp_path / "ka"
    assert cloud.join("keepalive", edge).returncode == 0
    conn = http.client.HTTPSConnection(*_api(cloud), context=_node_ctx(edge), timeout=10)
    try:
        assert _get(conn, "/api/v1/nodes/keepalive") in (200, 404)  # authenticated (no Node object yet)
        sock = conn.sock
        _revoke(cloud, "keepalive")
        # The same TLS connection, opened before the revocation: its next request is refused.
        assert _get(conn, "/api/v1/nodes/keepalive") == 401
        assert conn.sock is sock, "the 401 must come on the connection that was open before the revocation"
    finally:
        conn.close()


@pytest.mark.threat("K-REVOKED-NODE")
def test_revoked_user_keepalive_connection_gets_401_on_its_next_request(cloud: Cloud, tmp_path: Path):
    ctx, serial = _user_cert(cloud, tmp_path, "mallory", ["system:masters"])
    conn = http.client.HTTPSConnection(*_api(cloud), context=ctx, timeout=10)
    crl_before = (cloud.dir / "pki" / "crl.pem").read_bytes()
    try:
        assert _get(conn, "/api/v1/namespaces") == 200
        sock = conn.sock
        _write_crl(cloud, [serial], now=dt.datetime.now(dt.timezone.utc), lifetime=dt.timedelta(days=7))
        assert _get(conn, "/api/v1/namespaces") == 401
        assert conn.sock is sock
    finally:
        conn.close()
        fsutil.atomic_write(cloud.dir / "pki" / "crl.pem", crl_before)


def _open_watch(cloud: Cloud, ctx: ssl.SSLContext, path: str) -> tuple[http.client.HTTPSConnection, threading.Event]:
    """Start a watch; the event is set when the server ends the stream (or the socket dies)."""
    conn = http.client.HTTPSConnection(*_api(cloud), context=ctx, timeout=60)
    conn.request("GET", path, headers={"Accept": "application/json"})
    resp = conn.getresponse()
    assert resp.status == 200, resp.read()
    ended = threading.Event()

    def drain() -> None:
        try:
            while resp.read1(65536):
                pass
        except (OSError, http.client.HTTPException):
            pass
        ended.set()

    threading.Thread(target=drain, daemon=True).start()
    return conn, ended


@pytest.mark.threat("K-REVOKED-NODE")
def test_revoked_nodes_open_watch_ends_within_2s(cloud: Cloud, tmp_path: Path):
    edge = tmp_path / "w"
    assert cloud.join("watcher", edge).returncode == 0
    conn, ended = _open_watch(cloud, _node_ctx(edge), "/api/v1/pods?watch=1&fieldSelector=spec.nodeName%3Dwatcher&timeoutSeconds=300")
    try:
        assert not ended.wait(1.0), "the watch must stay open while the node is valid"
        revoked_at = _revoke(cloud, "watcher")
        assert ended.wait(10), "the revoked node's watch was never ended"
        elapsed = time.monotonic() - revoked_at
        assert elapsed <= REVOCATION_DEADLINE_S, f"watch ended {elapsed:.2f}s after the revocation"
    finally:
        conn.close()


@pytest.mark.threat("K-REVOKED-NODE")
def test_revoked_users_open_watch_ends_within_2s(cloud: Cloud, tmp_path: Path):
    ctx, serial = _user_cert(cloud, tmp_path, "watching-user", ["system:masters"])
    crl_before = (cloud.dir / "pki" / "crl.pem").read_bytes()
    conn, ended = _open_watch(cloud, ctx, "/api/v1/namespaces/default/configmaps?watch=1&timeoutSeconds=300")
    try:
        assert not ended.wait(1.0)
        _write_crl(cloud, [serial], now=dt.datetime.now(dt.timezone.utc), lifetime=dt.timedelta(days=7))
        revoked_at = time.monotonic()
        assert ended.wait(10), "the revoked user's watch was never ended"
        elapsed = time.monotonic() - revoked_at
        assert elapsed <= REVOCATION_DEADLINE_S, f"watch ended {elapsed:.2f}s after the revocation"
    finally:
        conn.close()
        fsutil.atomic_write(cloud.dir / "pki" / "crl.pem", crl_before)


@pytest.mark.threat("K-REVOKED-NODE")
def test_missing_crl_is_not_read_as_nothing_revoked(tmp_path: Path):
    c = Cloud(tmp_path).start()
    try:
        admin = _ctx(c.dir / "pki" / "ca.crt", c.dir / "pki" / "admin.crt", c.dir / "pki" / "admin.key")
        conn = http.client.HTTPSConnection(*_api(c), context=admin, timeout=10)
        assert _get(conn, "/api/v1/namespaces") == 200
        saved = (c.dir / "pki" / "crl.pem").read_bytes()
        (c.dir / "pki" / "crl.pem").unlink()
        # While running: every client certificate is refused, on open connections too.
        assert _get(conn, "/api/v1/namespaces") == 401
        conn.close()
    finally:
        c.stop()
    # A cloud without its CRL does not start at all, and says why.
    r = kedge("cloudcore", "--data-dir", str(c.dir), timeout=60)
    assert r.returncode != 0 and "crl_missing" in r.stderr and "crl.pem" in r.stderr, r.stderr[-2000:]
    # Restored, it serves again: the refusal was about the CRL, nothing else.
    fsutil.atomic_write(c.dir / "pki" / "crl.pem", saved)
    c.start()
    try:
        conn = http.client.HTTPSConnection(*_api(c), context=admin, timeout=10)
        assert _get(conn, "/api/v1/namespaces") == 200
        conn.close()
    finally:
        c.stop()


@pytest.mark.threat("K-REVOKED-NODE")
def test_expired_crl_is_refused_not_trusted(cloud: Cloud, tmp_path: Path):
    """A CRL past its nextUpdate (an old list replayed, or one nobody renewed) is an error."""
    admin = _ctx(cloud.dir / "pki" / "ca.crt", cloud.dir / "pki" / "admin.crt", cloud.dir / "pki" / "admin.key")
    conn = http.client.HTTPSConnection(*_api(cloud), context=admin, timeout=10)
    crl_before = (cloud.dir / "pki" / "crl.pem").read_bytes()
    try:
        assert _get(conn, "/api/v1/namespaces") == 200
        long_ago = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=30)
        _write_crl(cloud, [], now=long_ago, lifetime=dt.timedelta(days=7))  # signed by the CA, expired
        assert _get(conn, "/api/v1/namespaces") == 401
        fsutil.atomic_write(cloud.dir / "pki" / "crl.pem", crl_before)
        assert _get(conn, "/api/v1/namespaces") == 200
    finally:
        conn.close()
        fsutil.atomic_write(cloud.dir / "pki" / "crl.pem", crl_before)


def _renew(edge: Path) -> str | None:
    """One renewal through the real edge code (its child process); the refusal code or None."""
    code = (
        "import asyncio, json, sys\n"
        "from kedge.edge.hub import EdgeHub\n"
        "hub = EdgeHub(sys.argv[1])\n"
        "try:\n"
        "    asyncio.run(hub.renew()); print(json.dumps(None))\n"
        "except Exception as exc:\n"
        "    print(json.dumps(getattr(exc, 'code', type(exc).__name__)))\n"
    )
    import subprocess

    out = subprocess.run([sys.executable, "-c", code, str(edge)], capture_output=True, text=True, timeout=90,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.threat("K-CERT-ISSUANCE-RACE")
def test_renewals_beyond_the_per_node_rate_are_refused_with_a_code(tmp_path: Path):
    with running_cloud(tmp_path, config={"limits": {"renewals_per_node_per_hour": 3}}) as c:
        edge = tmp_path / "r"
        assert c.join("renewer", edge).returncode == 0  # certificate 1 of the hour
        assert _renew(edge) is None  # 2
        assert _renew(edge) is None  # 3
        assert _renew(edge) == "renewal_rate_limited"
        refused = [e for e in c.audit() if e["event"] == "renewal" and e.get("result") == "refused"]
        assert [e["code"] for e in refused] == ["renewal_rate_limited"]
        # Other nodes are not affected.
        assert c.join("other", tmp_path / "o").returncode == 0
        assert _renew(tmp_path / "o") is None


class _Interleaved:
    """The cert endpoint's state, with ``kedge node revoke`` (another connection, as the CLI)
    run at a chosen point of recording a certificate: before it, or just after it with a clock
    reading from before the renewal (the CLI computed ``now`` first, then waited for the lock)."""

    def __init__(self, state, revoker, *, when: str) -> None:
        self._state, self._revoker, self.when = state, revoker, when
        self.revoked_at: dt.datetime | None = None

    def __getattr__(self, name):
        return getattr(self._state, name)

    def record_cert(self, **kw):
        node, issued_at = kw["node"], kw["issued_at"]
        if self.when == "before":
            self.revoked_at = issued_at + dt.timedelta(milliseconds=1)
            self._revoker.revoke_node(node, now=self.revoked_at)
            return self._state.record_cert(**kw)
        result = self._state.record_cert(**kw)
        self.revoked_at = issued_at - dt.timedelta(milliseconds=1)
        self._revoker.revoke_node(node, now=self.revoked_at)
        return result


@pytest.mark.threat("K-CERT-ISSUANCE-RACE")
@pytest.mark.parametrize("when", ["before", "after"])
def test_certificate_renewed_while_its_node_is_revoked_does_not_escape(tmp_path: Path, when: str):
    from kedge._internal.auditlog import AuditLog
    from kedge.cloud.certserver import CertService, start_cert_server
    from kedge.cloud.config import CloudDir
    from kedge.cloud.state import CloudState
    from kedge.edge.renewal import renew_identity

    c = Cloud(tmp_path)  # a real data dir; its endpoint runs in-process below
    d = CloudDir(c.dir)
    ca_key, ca_cert = pki.load_key_file(d.ca_key), pki.load_cert_file(d.ca_crt)
    edge = tmp_path / "racer"

    async def main() -> tuple[object, object]:
        state, revoker = CloudState(d.state_db), CloudState(d.state_db)
        audit = AuditLog(tmp_path / "audit.log")
        service = CertService(ca_key=ca_key, ca_cert=ca_cert, state=state, audit=audit,
                              limits=d.load_config().build_limits(), node_cert_validity=dt.timedelta(hours=1),
                              hub_url=lambda: "wss://127.0.0.1:1")
        ctx = tls.server_context(d.hub_crt, d.hub_key, d.ca_crt, client_cert="optional")
        server = await start_cert_server(service, ctx, "127.0.0.1", 0, service.limits)
        port = server.sockets[0].getsockname()[1]
        try:
            r = await asyncio.to_thread(kedge, "join", "--cloud", f"127.0.0.1:{port}", "--token",
                                        c.token("racer"), "--node", "racer", "--data-dir", str(edge))
            assert r.returncode == 0, r.stderr
            service.state = _Interleaved(state, revoker, when=when)
            try:
                await asyncio.to_thread(renew_identity, edge)
                outcome: object = None
            except Exception as exc:  # noqa: BLE001 - the refusal is the outcome
                outcome = getattr(exc, "code", type(exc).__name__)
            return outcome, service.state.revoked_at
        finally:
            server.close()
            state.close()
            revoker.close()
            audit.close()

    outcome, _ = asyncio.run(main())
    state = CloudState(d.state_db)
    try:
        crl_serials = {s for s, _ in state.revoked_serials()}
        rows = state._read("SELECT serial, revoked_at FROM certs WHERE node = 'racer'")
        issued = {int(s) for s, _ in rows}
        # Every certificate the node was ever issued is revoked, and every one is in the CRL's view:
        # none was issued (or handed out) outside the revocation.
        assert len(issued) == 2
        assert issued <= crl_serials, f"certificates that escaped the CRL: {issued - crl_serials}"
        for serial in issued:
            assert state.is_cert_revoked(node="racer", serial=serial)
        current = pki.load_cert_file(edge / "pki" / "node.crt").serial_number
        assert state.is_cert_revoked(node="racer", serial=current)
        if when == "before":
            # Revoked between signing and recording: the renewal is refused, nothing handed out.
            assert outcome == "revoked"
    finally:
        state.close()
