"""Tiny bounded HTTPS client for the certificate endpoint (blocking; run in a thread)."""

from __future__ import annotations

import http.client
import ssl
from typing import Any
from urllib.parse import urlsplit

from kedge._internal import jsonutil
from kedge.errors import KedgeError, PeerError

from kedge.limits import HTTP_CLIENT_MAX_JSON_DEPTH as MAX_JSON_DEPTH
from kedge.limits import HTTP_CLIENT_MAX_RESPONSE_BYTES as MAX_RESPONSE_BYTES


class HTTPError(PeerError):
    def __init__(self, status: int, code: str) -> None:
        super().__init__(f"HTTP {status}: {code}", code=code)
        self.status = status


def request(url: str, ctx: ssl.SSLContext, *, method: str = "GET", body: bytes | None = None,
            headers: dict[str, str] | None = None, timeout: float = 10.0,
            server_hostname: str | None = None) -> bytes:
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        raise PeerError(f"not an https URL: {url}", code="bad_url")
    conn = http.client.HTTPSConnection(parts.hostname, parts.port or 443, context=ctx, timeout=timeout)
    try:
        conn.request(method, parts.path or "/", body=body, headers=headers or {})
        resp = conn.getresponse()
        data = resp.read(MAX_RESPONSE_BYTES + 1)
        if len(data) > MAX_RESPONSE_BYTES:
            raise PeerError("response too large", code="response_too_large")
        if resp.status != 200:
            code = "http_error"
            try:
                obj = _loads(data)
                if isinstance(obj, dict) and isinstance(obj.get("error"), str):
                    code = obj["error"][:64]
            except KedgeError:
                pass
            raise HTTPError(resp.status, code)
        return data
    finally:
        conn.close()


def _loads(data: bytes) -> Any:
    return jsonutil.loads(data, max_bytes=MAX_RESPONSE_BYTES, max_depth=MAX_JSON_DEPTH)


def request_json(url: str, ctx: ssl.SSLContext, **kw: Any) -> Any:
    """:func:`request`, its answer decoded as JSON: at most ``HTTP_CLIENT_MAX_RESPONSE_BYTES``
    (``response_too_large``) nesting at most ``HTTP_CLIENT_MAX_JSON_DEPTH``, strict UTF-8 and
    no NaN/Infinity -- else :class:`PeerError` ``bad_response``."""
    return decode_json(request(url, ctx, **kw))


def decode_json(data: bytes) -> Any:
    """The JSON of a response body (the part of :func:`request_json` after the bytes arrived)."""
    try:
        return _loads(data)
    except KedgeError as exc:
        raise PeerError("invalid JSON from server", code="bad_response") from exc
