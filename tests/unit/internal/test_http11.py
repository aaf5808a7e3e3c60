"""kedge._internal.http11: the one h11 server shell (one request per connection), over real sockets."""

from __future__ import annotations

import asyncio

import pytest

from kedge._internal.http11 import Request, Response, serve_connection
from kedge.limits import Limits

LIMITS = Limits(max_http_body_bytes=1024, max_http_header_bytes=2048, http_read_timeout_s=0.5)


async def _handler(req: Request) -> Response:
    if req.target == "/inject":
        return Response(200, b"x", headers=[("x-evil", "a\r\nset-cookie: b")])
    return Response.json(200, {"method": req.method, "body": req.body.decode()})


async def _exchange(raw: bytes, *, pause: float = 0.0) -> bytes:
    server = await asyncio.start_server(lambda r, w: serve_connection(r, w, _handler, LIMITS), "127.0.0.1", 0,
                                        limit=LIMITS.max_http_header_bytes)
    port = server.sockets[0].getsockname()[1]
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(raw)
        await writer.drain()
        if pause:
            await asyncio.sleep(pause)
        data = await asyncio.wait_for(reader.read(), 5)
        writer.close()
        return data
    finally:
        server.close()
        await server.wait_closed()


def exchange(raw: bytes, **kw) -> bytes:
    return asyncio.run(_exchange(raw, **kw))


def test_response_is_serialised_by_h11_with_the_same_status_line_and_headers():
    out = exchange(b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhi")
    head, _, body = out.partition(b"\r\n\r\n")
    assert head.split(b"\r\n") == [b"HTTP/1.1 200 OK", b"content-type: application/json", b"content-length: 33",
                                   b"connection: close", b"cache-control: no-store"]
    assert body == b'{"method": "POST", "body": "hi"}\n'


def test_garbage_request_gets_400_malformed_http():
    out = exchange(b"\x00\x01 nonsense\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 400 Bad Request\r\n") and out.endswith(b'{"error": "malformed_http"}\n')


def test_slow_loris_gets_408_request_timeout():
    out = exchange(b"GET / HTTP/1.1\r\nHost: a\r\n", pause=0.8)
    assert out.startswith(b"HTTP/1.1 408 Request Timeout\r\n")


@pytest.mark.parametrize("raw", [
    b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4096\r\n\r\n",  # declared
    b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n800\r\n" + b"x" * 2048 + b"\r\n0\r\n\r\n",
])
def test_oversized_body_gets_413(raw):
    assert exchange(raw).startswith(b"HTTP/1.1 413 Payload Too Large\r\n")


def test_oversized_head_gets_400():
    assert exchange(b"GET / HTTP/1.1\r\nHost: a\r\nX: " + b"y" * 65536 + b"\r\n\r\n").startswith(b"HTTP/1.1 400 ")


def test_head_response_has_no_body():
    out = exchange(b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\n")
    head, _, body = out.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n") and b"content-length: 31" in head and body == b""


def test_handler_header_with_crlf_is_never_written():
    out = exchange(b"GET /inject HTTP/1.1\r\nHost: a\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 500 Internal Server Error\r\n") and b"set-cookie" not in out


def test_a_client_asking_to_close_still_gets_one_connection_close():
    out = exchange(b"GET / HTTP/1.0\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 200 OK\r\n") and out.lower().count(b"connection: close") == 1
