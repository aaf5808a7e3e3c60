"""The one HTTP/1.1 server shell of kedge: asyncio streams around ``h11.Connection``.

``h11.Connection`` is the protocol object (bytes in, events out; events in, bytes out); the
shell, :class:`ServerConnection`, only feeds it what it reads -- every read bounded in size
(``max_incomplete_event_size``, body limits) and time -- and writes what ``Connection.send``
serialises, every write bounded in time. Nothing here writes HTTP by hand.

Its users: :func:`serve_connection` (one request per connection, ``Connection: close``) for the
certificate endpoint and the metrics endpoints -- they serve a handful of short requests, so
keep-alive buys nothing and costs slow-loris surface -- and the API server's keep-alive,
streaming connections (:mod:`kedge.apiserver.http`), which add their own policy on top.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from typing import Awaitable, Callable, Sequence

import h11

from kedge.limits import Limits

log = logging.getLogger(__name__)

READ_CHUNK = 16384


class BodyTooLarge(Exception):
    """A request body grew past the limit given to :meth:`ServerConnection.read_body`."""


class ServerConnection:
    """The server side of one HTTP/1.1 connection: feeds, drains and nothing else.

    ``h11`` is the ``h11.Connection`` (its states decide keep-alive and framing).
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, max_header_bytes: int,
                 write_timeout_s: float, read_chunk: int = READ_CHUNK) -> None:
        self.reader, self.writer = reader, writer
        self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=max_header_bytes)
        self.write_timeout_s = write_timeout_s
        self.read_chunk = read_chunk

    async def next_event(self, idle_timeout: float | None = None, total_timeout: float | None = None) -> object:
        """The next h11 event. ``idle_timeout`` bounds the wait for its first bytes; once some have
        arrived the whole event must complete within ``total_timeout`` (slow-loris). ``None``: no
        bound here (the caller holds an overall deadline). Raises ``TimeoutError`` and
        ``h11.RemoteProtocolError``."""
        loop = asyncio.get_running_loop()
        deadline: float | None = None
        while True:
            event = self.h11.next_event()
            if event is not h11.NEED_DATA:
                return event
            wait = idle_timeout if deadline is None else deadline - loop.time()
            if wait is not None and wait <= 0:
                raise TimeoutError()
            data = await asyncio.wait_for(self.reader.read(self.read_chunk), wait)
            if deadline is None and total_timeout is not None:
                deadline = loop.time() + total_timeout
            self.h11.receive_data(data)

    async def read_body(self, limit: int, *, idle_timeout: float | None = None, deadline: float | None = None) -> bytes:
        """The request body, up to its end: :class:`BodyTooLarge` past ``limit`` bytes,
        ``TimeoutError`` after ``deadline`` (loop time) or ``idle_timeout`` without bytes,
        ``h11.RemoteProtocolError`` for anything but body data and its end."""
        loop = asyncio.get_running_loop()
        body = bytearray()
        while True:
            left = None if deadline is None else deadline - loop.time()
            if left is not None and left <= 0:
                raise TimeoutError()
            idle = left if idle_timeout is None else (idle_timeout if left is None else min(idle_timeout, left))
            event = await self.next_event(idle, left)
            if isinstance(event, h11.Data):
                body += event.data
                if len(body) > limit:
                    raise BodyTooLarge()
            elif isinstance(event, h11.EndOfMessage):
                return bytes(body)
            else:
                raise h11.RemoteProtocolError("unexpected event in a request body")

    async def send(self, *events: h11.Event) -> None:
        """Serialise ``events`` with h11 and write them at once (one TLS record and one send()
        instead of one per event); the peer must take them within ``write_timeout_s``."""
        data = b"".join(self.h11.send(ev) or b"" for ev in events)
        if data:
            self.writer.write(data)
        await asyncio.wait_for(self.writer.drain(), self.write_timeout_s)

    def can_respond(self) -> bool:
        """Whether a response may still start (none begun yet; also after a request that never
        parsed: h11 lets a server answer it, e.g. ``400``, from ``IDLE``)."""
        return self.h11.our_state in (h11.IDLE, h11.SEND_RESPONSE)

    async def send_response(self, status: int, headers: Sequence[tuple[str, str | bytes]], body: bytes, *,
                            reason: str = "", head: bool = False) -> None:
        """A whole response with the ``content-length`` the caller put in ``headers``; to a
        ``HEAD`` request (``head``) without the body bytes, as h11 frames it."""
        if head:
            body = b""
        await self.send(h11.Response(status_code=status, headers=list(headers), reason=reason.encode("latin-1")),
                        h11.Data(data=body), h11.EndOfMessage())

    async def close(self) -> None:
        self.writer.close()
        try:
            async with asyncio.timeout(1.0):
                await self.writer.wait_closed()
        except (ConnectionError, TimeoutError, OSError, Exception):  # noqa: BLE001 - best-effort close
            pass


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


def response_event(response: Response) -> h11.Response:
    """The h11 event of a one-shot :class:`Response` (``connection: close``, ``no-store``).
    h11 validates it: a handler's header with CR/LF or NUL raises ``h11.LocalProtocolError``."""
    headers = [("content-type", response.content_type), ("content-length", str(len(response.body))),
               ("connection", "close"), ("cache-control", "no-store"), *response.headers]
    reason = _REASONS.get(response.status, "Unknown")
    return h11.Response(status_code=response.status, headers=headers, reason=reason.encode("latin-1"))


Handler = Callable[[Request], Awaitable[Response]]


async def serve_connection(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    handler: Handler,
    limits: Limits,
) -> None:
    """Read one request (headers and body within ``http_read_timeout_s`` together with the
    handler; at most ``max_http_header_bytes`` of head and ``max_http_body_bytes`` of body),
    answer it through h11 and close. A request that does not parse is a ``400
    malformed_http``, a slow one a ``408 request_timeout``, a large one a ``413 body_too_large``."""
    peername = writer.get_extra_info("peername") or ("?", 0)
    peer = f"{peername[0]}:{peername[1]}"
    ssl_obj = writer.get_extra_info("ssl_object")
    peer_cert = ssl_obj.getpeercert(binary_form=True) if ssl_obj is not None else None
    conn = ServerConnection(reader, writer, max_header_bytes=limits.max_http_header_bytes,
                            write_timeout_s=limits.http_read_timeout_s)
    try:
        await _serve_one(conn, handler, limits, peer, peer_cert)
    finally:
        await conn.close()


async def _serve_one(conn: ServerConnection, handler: Handler, limits: Limits, peer: str,
                     peer_cert: bytes | None) -> None:
    response: Response
    head = False
    try:
        async with asyncio.timeout(limits.http_read_timeout_s):
            req = await conn.next_event()
            if not isinstance(req, h11.Request):
                return  # closed (or paused) before a request: nothing to answer
            head = req.method == b"HEAD"
            headers: dict[str, str] = {}
            for name, value in req.headers:
                key = name.decode("latin-1").lower()
                val = value.decode("latin-1")
                headers[key] = f"{headers[key]},{val}" if key in headers else val
            length = headers.get("content-length")
            if length is not None and length.isdigit() and int(length) > limits.max_http_body_bytes:
                response = Response.error(413, "body_too_large")
            else:
                body = await conn.read_body(limits.max_http_body_bytes)
                request = Request(req.method.decode("ascii", "replace"), req.target.decode("latin-1"),
                                  headers, body, peer, peer_cert)
                response = await handler(request)
    except BodyTooLarge:
        response = Response.error(413, "body_too_large")
    except (h11.RemoteProtocolError, UnicodeError):
        response = Response.error(400, "malformed_http")
    except TimeoutError:
        response = Response.error(408, "request_timeout")
    except (ConnectionError, asyncio.IncompleteReadError):
        return
    try:
        event = response_event(response)
    except h11.LocalProtocolError:  # our handler's bug; the peer gets a code
        log.error("HTTP handler produced an invalid response header (status %d)", response.status)
        response = Response.error(500, "internal_error")
        event = response_event(response)
    if not conn.can_respond():
        return
    try:
        await conn.send(event, h11.Data(data=b"" if head else response.body), h11.EndOfMessage())
    except (ConnectionError, TimeoutError, h11.LocalProtocolError):
        pass
