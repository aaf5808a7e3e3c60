"""Slow and oversized clients are cut off by the API server's bounds (config.json limits)."""

from __future__ import annotations

import json
import socket
import ssl
import sys
import time
from pathlib import Path

import pytest

from kedge import tls

sys.path.insert(0, str(Path(__file__).parent))
from test_kubectl import _kedge, start_apiserver  # noqa: E402
from support.cluster import stop_process as stop  # noqa: E402


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    data = tmp_path_factory.mktemp("limits") / "cloud"
    assert _kedge("init", "--data-dir", str(data), "--api-port", "0").returncode == 0
    cfg = json.loads((data / "config.json").read_text())
    cfg["limits"] = {"http_read_timeout_s": 1.0, "handshake_timeout_s": 1.0, "max_http_header_bytes": 4096}
    (data / "config.json").write_text(json.dumps(cfg))
    proc, url = start_apiserver(data)
    host, port = url.removeprefix("https://").rsplit(":", 1)
    yield data, host, int(port)
    stop(proc)


def _tls_socket(data: Path, host: str, port: int) -> ssl.SSLSocket:
    ctx = tls.client_context(data / "pki" / "ca.crt", data / "pki" / "admin.crt", data / "pki" / "admin.key")
    sock = socket.create_connection((host, port), timeout=5)
    return ctx.wrap_socket(sock, server_hostname=host)


def _closed_within(sock, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    sock.settimeout(0.2)
    while time.monotonic() < deadline:
        try:
            if sock.recv(65536) == b"":
                return True
        except (socket.timeout, TimeoutError):
            continue
        except (ConnectionError, ssl.SSLError, OSError):
            return True
    return False


@pytest.mark.threat("K-SLOWLORIS")
def test_slow_headers_are_cut_off(server):
    data, host, port = server
    s = _tls_socket(data, host, port)
    s.sendall(b"GET /version HTTP/1.1\r\nHost: x\r\n")  # never finishes the header block
    t0 = time.monotonic()
    for _ in range(3):
        time.sleep(0.3)
        try:
            s.sendall(b"X-Slow: 1\r\n")
        except (ConnectionError, ssl.SSLError, OSError):
            break
    assert _closed_within(s, 5)
    assert time.monotonic() - t0 < 5


@pytest.mark.threat("K-SLOWLORIS")
def test_silent_tcp_client_is_dropped_before_tls(server):
    _, host, port = server
    s = socket.create_connection((host, port), timeout=5)
    t0 = time.monotonic()
    assert _closed_within(s, 5) and time.monotonic() - t0 < 5


@pytest.mark.threat("K-OVERSIZE")
def test_oversized_headers_are_refused(server):
    data, host, port = server
    s = _tls_socket(data, host, port)
    s.sendall(b"GET /version HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 8192 + b"\r\n\r\n")
    s.settimeout(5)
    reply = s.recv(65536)
    assert reply.startswith(b"HTTP/1.1 431")
    assert _closed_within(s, 5)


def test_keepalive_connection_serves_many_requests(server):
    data, host, port = server
    s = _tls_socket(data, host, port)
    s.settimeout(5)
    for _ in range(3):
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        reply = b""
        while not reply.endswith(b"ok"):
            chunk = s.recv(65536)
            assert chunk
            reply += chunk
        assert reply.startswith(b"HTTP/1.1 200")


def test_second_server_on_the_same_data_dir_is_refused(server):
    data, _, _ = server
    r = _kedge("apiserver", "--data-dir", str(data), "--port", "0")
    assert r.returncode == 2 and "store_locked" in r.stderr


def test_uninitialised_data_dir_is_a_usage_error(tmp_path):
    r = _kedge("apiserver", "--data-dir", str(tmp_path / "nothing"))
    assert r.returncode == 2 and "not_initialised" in r.stderr


def test_expect_100_continue_is_honoured(server):
    data, host, port = server
    s = _tls_socket(data, host, port)
    s.settimeout(5)
    body = b'{"metadata":{"name":"expect-continue"}}'
    s.sendall(b"POST /api/v1/namespaces/default/configmaps HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              b"Expect: 100-continue\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n")
    assert s.recv(65536).startswith(b"HTTP/1.1 100")
    s.sendall(body)
    reply = b""
    while b"\r\n\r\n" not in reply:
        reply += s.recv(65536)
    assert reply.startswith(b"HTTP/1.1 201")
