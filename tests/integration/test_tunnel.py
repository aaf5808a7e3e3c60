"""The cloud-edge tunnel end to end: real cloudcore process, real TLS on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from kedge.pki import ca as pki
from support.cluster import Cloud, EdgeProcess, file_mode, kedge, running_cloud, wait_until
from support.edge import edge_hub, hubinfo


@pytest.fixture(scope="module")
def cloud(tmp_path_factory):
    root = tmp_path_factory.mktemp("tunnel")
    with running_cloud(root, config={"limits": {"upstream_qps": 200.0, "upstream_burst": 50}}) as c:
        yield c


def _client_ctx(edge_dir: Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(edge_dir / "pki" / "ca.crt")
    ctx.load_cert_chain(edge_dir / "pki" / "node.crt", edge_dir / "pki" / "node.key")
    return ctx


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


def test_replayed_token_is_refused(cloud: Cloud, tmp_path: Path):
    token = cloud.token("replay")
    assert cloud.join("replay", tmp_path / "a", token).returncode == 0
    again = cloud.join("replay", tmp_path / "b", token)
    assert again.returncode != 0 and "token_used" in again.stderr
    assert not (tmp_path / "b" / "pki" / "node.key").exists()


def test_token_for_another_node_is_refused(cloud: Cloud, tmp_path: Path):
    token = cloud.token("node-a")
    r = cloud.join("node-b", tmp_path / "b", token)
    assert r.returncode != 0 and "token_node_mismatch" in r.stderr
    assert not (tmp_path / "b" / "pki" / "node.crt").exists()


def test_expired_token_is_refused(cloud: Cloud, tmp_path: Path):
    token = cloud.token("late", ttl="1s")
    time.sleep(1.2)
    r = cloud.join("late", tmp_path / "late", token)
    assert r.returncode != 0 and "token_expired" in r.stderr


def test_edge_refuses_ca_whose_hash_does_not_match_token(cloud: Cloud, tmp_path: Path):
    token = cloud.token("pinned")
    forged = "0" * 64 + token[64:]
    before = len(cloud.audit())
    r = cloud.join("pinned", tmp_path / "p", forged)
    assert r.returncode == 1 and "ca_pin_mismatch" in r.stderr
    # The token was never sent: the cloud saw no bootstrap attempt, and the real token still works.
    assert not [e for e in cloud.audit()[before:] if e["event"] == "bootstrap"]
    assert cloud.join("pinned", tmp_path / "p2", token).returncode == 0


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


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1, ssl.TLSVersion.TLSv1_2])
def test_tls_downgrade_is_refused_by_default(cloud: Cloud, tmp_path: Path, version):
    assert cloud.join(f"old-{version.name.lower().replace('_', '')}", tmp_path / "e").returncode == 0
    ctx = _client_ctx(tmp_path / "e")
    ctx.check_hostname = True
    ctx.set_ciphers("ALL:@SECLEVEL=0")
    ctx.minimum_version = version
    ctx.maximum_version = version
    host, port = cloud.hub_hostport
    import socket

    with socket.create_connection((host, port), timeout=5) as sock:
        with pytest.raises((ssl.SSLError, ConnectionResetError)):
            with ctx.wrap_socket(sock, server_hostname=host) as tls_sock:
                tls_sock.do_handshake()


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


def test_oversized_frame_closes_only_that_connection(cloud: Cloud, tmp_path: Path):
    assert cloud.join("big", tmp_path / "big").returncode == 0
    assert cloud.join("calm", tmp_path / "calm").returncode == 0
    host, port = cloud.hub_hostport

    async def main():
        async with edge_hub(tmp_path / "calm") as calm:
            async with connect(f"wss://{host}:{port}/tunnel", ssl=_client_ctx(tmp_path / "big"), proxy=None,
                               max_size=None) as ws:
                await ws.send(b"x" * (1024 * 1024 + 1))
                with pytest.raises(ConnectionClosed):
                    async with asyncio.timeout(5):
                        await ws.recv()
                assert ws.close_code == 1009
            assert (await hubinfo(calm))["node"] == "calm"

    asyncio.run(main())


def test_malformed_message_gets_error_code_and_closes_only_that_connection(cloud: Cloud, tmp_path: Path):
    assert cloud.join("garbler", tmp_path / "g").returncode == 0
    assert cloud.join("neighbour", tmp_path / "n").returncode == 0
    host, port = cloud.hub_hostport

    async def main():
        async with edge_hub(tmp_path / "n") as neighbour:
            async with connect(f"wss://{host}:{port}/tunnel", ssl=_client_ctx(tmp_path / "g"), proxy=None) as ws:
                await ws.send('{"header": {"msg_id": "1", "timestamp": 1}, "route": [[[[')
                frames = []
                with pytest.raises(ConnectionClosed):
                    async with asyncio.timeout(5):
                        while True:
                            frames.append(await ws.recv())
                assert ws.close_code == 1008
                assert ws.close_reason == "malformed_json"
                # The peer learns the code, and nothing else: no exception text, no traceback.
                assert frames, "expected an error message before the close"
                err = json.loads(frames[-1])
                assert err["route"]["operation"] == "error"
                assert err["content"] == {"code": "malformed_json"}
                assert "Traceback" not in frames[-1] and "Error" not in json.dumps(err["content"])
            assert (await hubinfo(neighbour))["node"] == "neighbour"

    asyncio.run(main())


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


def test_upstream_flood_is_rate_limited_without_slowing_others(cloud: Cloud, tmp_path: Path):
    """A node firing requests as fast as it can gets ~qps; its neighbour is served promptly."""
    assert cloud.join("flooder", tmp_path / "f").returncode == 0
    assert cloud.join("quiet", tmp_path / "q").returncode == 0
    qps, burst = 200.0, 50  # from the module fixture's config

    async def main():
        async with edge_hub(tmp_path / "f") as flooder, edge_hub(tmp_path / "q") as quiet:
            answered = 0
            stop = time.monotonic() + 2.0

            async def flood():
                nonlocal answered
                while time.monotonic() < stop:
                    batch = [flooder.request(flooder.new_message("query", f"flooder/hubinfo/flooder", None, "hub"))
                             for _ in range(50)]
                    answered += sum(1 for r in await asyncio.gather(*batch, return_exceptions=True)
                                    if not isinstance(r, BaseException))

            flood_task = asyncio.create_task(flood())
            await asyncio.sleep(0.3)
            latencies = []
            while not flood_task.done():
                t = time.monotonic()
                await hubinfo(quiet)
                latencies.append(time.monotonic() - t)
                await asyncio.sleep(0.05)
            await flood_task
            elapsed = 2.0
            # The flooder got no more than its budget (plus one in-flight batch of slack).
            assert answered <= burst + qps * (elapsed + 0.5) + 50, answered
            assert answered >= qps * 0.5, f"flooder starved entirely: {answered}"
            # Nobody else waited for the flooder's backlog.
            latencies.sort()
            assert latencies[len(latencies) // 2] < 0.25, latencies

    asyncio.run(main())
