"""Threats: oversized frames, malformed messages and upstream floods from one node (CVE-2022-31073..31080 class)."""

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

@pytest.mark.threat("K-OVERSIZE")
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


@pytest.mark.threat("K-MALFORMED-INPUT")
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


@pytest.mark.threat("K-UPSTREAM-FLOOD")
def test_upstream_flood_is_rate_limited_without_slowing_others(cloud: Cloud, tmp_path: Path):
    """A node firing requests as fast as it can gets ~qps; its neighbour is served promptly."""
    assert cloud.join("flooder", tmp_path / "f").returncode == 0
    assert cloud.join("quiet", tmp_path / "q").returncode == 0
    qps, burst = 200.0, 50  # from the module fixture's config

    async def main():
        async with edge_hub(tmp_path / "f") as flooder, edge_hub(tmp_path / "q") as quiet:
            answered = 0
            started = time.monotonic()
            stop = started + 2.0

            async def flood():
                nonlocal answered
                while time.monotonic() < stop:
                    batch = [flooder.request(flooder.new_message("query", "flooder/hubinfo/flooder", None, "hub"))
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
            elapsed = time.monotonic() - started
            # The flooder got no more than its budget (plus one in-flight batch of slack).
            assert answered <= burst + qps * elapsed + 10, (answered, elapsed)
            assert answered >= qps * 0.5, f"flooder starved entirely: {answered}"
            # Nobody else waited for the flooder's backlog.
            latencies.sort()
            assert latencies[len(latencies) // 2] < 0.25, latencies

    asyncio.run(main())


@pytest.mark.threat("K-OVERSIZE")
def test_oversized_bootstrap_body_is_refused(cloud: Cloud):
    import http.client

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cloud.dir / "pki" / "ca.crt")
    conn = http.client.HTTPSConnection("127.0.0.1", cloud.certs_port, context=ctx, timeout=5)
    try:
        conn.request("POST", "/edge.crt", body=b"A" * (64 * 1024 + 1),
                     headers={"Authorization": "Bearer x", "Content-Type": "application/pkcs10"})
        resp = conn.getresponse()
        assert resp.status == 413
        assert json.loads(resp.read()) == {"error": "body_too_large"}
    finally:
        conn.close()
    # A chunked body that lies about nothing but keeps growing is cut at the same bound.
    conn = http.client.HTTPSConnection("127.0.0.1", cloud.certs_port, context=ctx, timeout=5)
    try:
        conn.request("POST", "/edge.crt", body=iter([b"B" * 32768] * 4), encode_chunked=True,
                     headers={"Transfer-Encoding": "chunked"})
        assert conn.getresponse().status == 413
    except (ConnectionError, BrokenPipeError):
        pass  # the server may close while we are still sending: also a refusal
    finally:
        conn.close()


@pytest.mark.threat("K-SLOWLORIS")
def test_slowloris_request_is_cut_off(cloud: Cloud):
    """A client that trickles its request is disconnected after the read timeout (1 s here)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cloud.dir / "pki" / "ca.crt")
    with socket.create_connection(("127.0.0.1", cloud.certs_port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
            s.sendall(b"GET /ca.crt HTTP/1.1\r\n")
            t0 = time.monotonic()
            data = b""
            try:
                for _ in range(20):  # bounded trickle: one header byte every 0.2 s
                    s.sendall(b"X")
                    time.sleep(0.2)
            except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
                pass
            try:
                data = s.recv(4096)
            except (ConnectionResetError, ssl.SSLError):
                pass
            elapsed = time.monotonic() - t0
    assert elapsed < 4.5
    assert data == b"" or b" 408 " in data.split(b"\r\n", 1)[0]


@pytest.mark.threat("K-SLOWLORIS")
def test_silent_tcp_connection_to_hub_is_dropped_after_handshake_timeout(cloud: Cloud):
    host, port = cloud.hub_hostport
    with socket.create_connection((host, port), timeout=6) as raw:
        t0 = time.monotonic()
        data = raw.recv(1024)  # we never start the TLS handshake
        elapsed = time.monotonic() - t0
    assert data == b""
    assert 1.0 < elapsed < 5.0, elapsed


@pytest.mark.threat("K-TOKEN-FORGERY")
def test_cert_endpoint_rate_limits_failed_attempts_per_source(cloud: Cloud):
    import http.client

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cloud.dir / "pki" / "ca.crt")
    statuses = []
    for _ in range(15):  # burst is 10 failures
        conn = http.client.HTTPSConnection("127.0.0.1", cloud.certs_port, context=ctx, timeout=5,
                                           source_address=("127.0.0.2", 0))
        try:
            conn.request("POST", "/edge.crt", body=b"-", headers={"Authorization": "Bearer nope"})
            statuses.append(conn.getresponse().status)
        finally:
            conn.close()
    assert statuses[0] == 401
    assert statuses[-1] == 429
