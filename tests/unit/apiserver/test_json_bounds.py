"""Peer JSON at the API server is parsed by the one bounded loader: request bodies and continue tokens.

Bytes in, a Kubernetes status out: too deep, too large, NaN/Infinity and (under
``fieldValidation=Strict``) duplicate keys are refused with the documented 4xx.
"""

from __future__ import annotations

import base64
import json

import pytest

from kedge.apiserver.api import API, Request, User
from kedge.apiserver.decoding import decode_json
from kedge.apiserver.reads import _decode_continue, _encode_continue
from kedge.apiserver.status import ApiError
from kedge.limits import API_CONTINUE_MAX_CHARS, API_MAX_JSON_DEPTH
from kedge.store.sqlite import Store

ADMIN = User("admin", ("system:masters", "system:authenticated"))


@pytest.fixture()
def api(tmp_path):
    store = Store(tmp_path / "api.db", window=50, synchronous="NORMAL")
    yield API(store, clock=lambda: 1_700_000_000.0)
    store.close()


def send(api, method: str, path: str, raw: bytes, ctype: str = "application/json"):
    resp = api.handle(Request(method, path, {"content-type": [ctype]}, raw, ADMIN))
    return resp.status, json.loads(resp.body)


def _refused(fn, *args, **kw) -> ApiError:
    with pytest.raises(ApiError) as info:
        fn(*args, **kw)
    return info.value


# -- request bodies -----------------------------------------------------------------------------

def _deep(n: int) -> bytes:
    return b'{"metadata": {"name": "x"}, "data": {"a": ' + b"[" * n + b"]" * n + b"}}"


@pytest.mark.parametrize("raw, status, message", [
    (_deep(API_MAX_JSON_DEPTH + 1), 400, "the request body is nested too deeply"),
    (b"[" * 200_000, 400, "the request body is nested too deeply"),  # recursion bomb, refused before parsing
    (b'{"metadata": {"name": "x"}, "data": {"a": NaN}}', 400, "the request body could not be decoded"),
    (b'{"metadata": {"name": "x"}, "count": Infinity}', 400, "the request body could not be decoded"),
    (b'{"metadata": {"name": "x"}, "count": -Infinity}', 400, "the request body could not be decoded"),
    (b'\xff{"metadata": {}}', 400, "the request body could not be decoded"),
])
def test_hostile_json_body_is_refused_with_its_status(raw, status, message):
    exc = _refused(decode_json, raw, max_bytes=3 << 20)
    assert (exc.status, exc.message) == (status, message)


def test_oversized_json_body_is_413():
    assert _refused(decode_json, b'"' + b"x" * 100 + b'"', max_bytes=100).status == 413


def test_duplicate_keys_are_refused_under_strict_field_validation():
    raw = b'{"metadata": {"name": "a", "name": "b"}, "data": {"k": "1", "k": "2"}}'
    exc = _refused(decode_json, raw, max_bytes=1 << 20, strict=True)
    assert exc.status == 400
    assert exc.message == 'strict decoding error: duplicate field "k", duplicate field "name"'
    # Without it the last value wins, as in Go's decoder.
    assert decode_json(raw, max_bytes=1 << 20) == {"metadata": {"name": "b"}, "data": {"k": "2"}}


def test_nan_body_is_refused_end_to_end(api):
    status, body = send(api, "POST", "/api/v1/namespaces/default/configmaps",
                        b'{"metadata": {"name": "cm"}, "data": {"a": "1"}, "x": NaN}')
    assert status == 400 and body["reason"] == "BadRequest"


def test_deep_body_is_refused_end_to_end(api):
    status, body = send(api, "POST", "/api/v1/namespaces/default/configmaps", b"[" * 100_000)
    assert status == 400 and body["message"] == "the request body is nested too deeply"


def test_strict_duplicate_field_is_refused_end_to_end(api):
    raw = b'{"metadata": {"name": "cm"}, "data": {"a": "1", "a": "2"}}'
    status, body = send(api, "POST", "/api/v1/namespaces/default/configmaps?fieldValidation=Strict", raw)
    assert status == 400 and 'duplicate field "a"' in body["message"]
    status, _ = send(api, "POST", "/api/v1/namespaces/default/configmaps", raw)
    assert status == 201


# -- continue tokens ------------------------------------------------------------------------------

def _token(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode()


@pytest.mark.parametrize("raw", [
    b'{"v": 1, "ns": "a", "n": {"x": [1]}}',  # deeper than a token kedge issues
    b"[" * 1000,
    b'{"v": NaN, "ns": "a", "n": "b"}',
    b'{"v": 1, "ns": "a", "n": "b"',
    b"\xff\xfe",
])
def test_hostile_continue_token_is_400(raw):
    exc = _refused(_decode_continue, _token(raw))
    assert (exc.status, exc.message) == (400, "invalid continue token")


def test_oversized_continue_token_is_400():
    token = _token(b'{"v": 1, "ns": "a", "n": "' + b"b" * API_CONTINUE_MAX_CHARS + b'"}')
    assert _refused(_decode_continue, token).status == 400


def test_issued_continue_token_round_trips():
    assert _decode_continue(_encode_continue("ns", "name")) == ("ns", "name")


def test_hostile_continue_token_is_400_end_to_end(api):
    status, body = send(api, "GET", "/api/v1/namespaces/default/configmaps?limit=1&continue="
                        + _token(b"[" * 1000), b"")
    assert status == 400 and body["message"] == "invalid continue token"


@pytest.mark.parametrize("body,ctype", [
    (b'{"metadata":{"name":"c"},"data":{},"x":1e999}', "application/json"),
    (b'{"metadata":{"name":"c"},"data":{},"x":-1e999999}', "application/json"),
    (b"metadata: {name: c}\ndata: {}\nx: .inf\n", "application/yaml"),
    (b"metadata: {name: c}\ndata: {}\nx: [.nan]\n", "application/yaml"),
])
def test_numbers_json_cannot_hold_are_refused_not_stored_as_infinity_or_nan(body, ctype):
    """Red-team finding: 1e999 (JSON) or .inf/.nan (YAML) were stored as Infinity/NaN, which no
    client can read back: the node lifecycle and edge sync of every node stalled on them."""
    from kedge.apiserver.api import API, Request, User
    from kedge.store.sqlite import Store
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as d:
        store = Store(Path(d) / "api.db")
        try:
            api = API(store)
            resp = api.handle(Request("POST", "/api/v1/namespaces/default/configmaps", {"content-type": [ctype]},
                                      body, User("admin", ("system:masters", "system:authenticated"))))
            assert resp.status == 400, resp.body
            assert b"Infinity" not in resp.body and b"NaN" not in resp.body
        finally:
            store.close()
