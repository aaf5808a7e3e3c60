"""A small, bounded HTTP/1.1 server shell over asyncio streams, built on h11.

One request per connection (``Connection: close``): the certificate endpoint serves
a handful of short requests, so keep-alive buys nothing and costs slow-loris surface.
Every read is bounded in size and time.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from typing import Awaitable, Callable

import h11

from kedge.limits import Limits

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Request:
    method: str
    target: str
    headers: dict[str, str]  # lower-cased names; repeated headers joined with ","
    body: bytes
    peer: str
    peer_cert_der: bytes | None


@dataclasses.dataclass
class Response:
    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: list[tuple[str, str]] = dataclasses.field(default_factory=list)

    @classmethod
    def json(cls, status: int, obj: object) -> "Response":
        return cls(status, (json.dumps(obj) + "\n").encode())

    @classmethod
    def error(cls, status: int, code: str) -> "Response":
        # Peers get a stable code, never exception text.
        return cls.json(status, {"error": code})


_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
            405: "Method Not Allowed", 408: "Request Timeout", 409: "Conflict", 413: "Payload Too Large",
            415: "Unsupported Media Type", 429: "Too Many Requests", 500: "Internal Server Error",
            503: "Service Unavailable"}


def _serialise(response: Response) -> bytes:
    """Serialise a response ourselves: it also has to work when the request never parsed."""
    reason = _REASONS.get(response.status, "Unknown")
    lines = [f"HTTP/1.1 {response.status} {reason}", f"content-type: {response.content_type}",
             f"content-length: {len(response.body)}", "connection: close", "cache-control: no-store"]
    lines += [f"{k}: {v}" for k, v in response.headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + response.body


Handler = Callable[[Request], Awaitable[Response]]


class _BodyTooLarge(Exception):
    pass


async def _read_request(reader: asyncio.StreamReader, conn: h11.Connection, limits: Limits) -> h11.Request | None:
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            data = await reader.read(16384)
            conn.receive_data(data)
            continue
        if isinstance(event, h11.Request):
            return event
        return None


async def _read_body(reader: asyncio.StreamReader, conn: h11.Connection, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(await reader.read(16384))
            continue
        if isinstance(event, h11.Data):
            size += len(event.data)
            if size > limit:
                raise _BodyTooLarge()
            chunks.append(bytes(event.data))
            continue
        if isinstance(event, h11.EndOfMessage):
            return b"".join(chunks)
        raise h11.RemoteProtocolError("unexpected event")


async def serve_connection(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    handler: Handler,
    limits: Limits,
) -> None:
    peername = writer.get_extra_info("peername") or ("?", 0)
    peer = f"{peername[0]}:{peername[1]}"
    ssl_obj = writer.get_extra_info("ssl_object")
    peer_cert = ssl_obj.getpeercert(binary_form=True) if ssl_obj is not None else None
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=limits.max_http_header_bytes)
    response: Response
    try:
        async with asyncio.timeout(limits.http_read_timeout_s):
            req = await _read_request(reader, conn, limits)
            if req is None:
                return
            headers: dict[str, str] = {}
            for name, value in req.headers:
                key = name.decode("latin-1").lower()
                val = value.decode("latin-1")
                headers[key] = f"{headers[key]},{val}" if key in headers else val
            length = headers.get("content-length")
            if length is not None and length.isdigit() and int(length) > limits.max_http_body_bytes:
                response = Response.error(413, "body_too_large")
            else:
                body = await _read_body(reader, conn, limits.max_http_body_bytes)
                request = Request(req.method.decode("ascii", "replace"), req.target.decode("latin-1"),
                                  headers, body, peer, peer_cert)
                response = await handler(request)
    except _BodyTooLarge:
        response = Response.error(413, "body_too_large")
    except (h11.RemoteProtocolError, UnicodeError):
        response = Response.error(400, "malformed_http")
    except TimeoutError:
        response = Response.error(408, "request_timeout")
    except (ConnectionError, asyncio.IncompleteReadError):
        writer.close()
        return
    try:
        writer.write(_serialise(response))
        async with asyncio.timeout(limits.http_read_timeout_s):
            await writer.drain()
    except (ConnectionError, TimeoutError):
        pass
    finally:
        writer.close()
        try:
            async with asyncio.timeout(1.0):
                await writer.wait_closed()
        except (ConnectionError, TimeoutError, OSError, Exception):  # noqa: BLE001 - best-effort close
            pass
