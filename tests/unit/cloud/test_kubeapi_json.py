"""API server answers (kubeapi responses and watch lines, the device controller's reads) are parsed
by the one bounded loader: bytes in, ``PeerError`` with a stable code out."""

from __future__ import annotations

import asyncio
import threading

import pytest

from kedge.cloud.devicecontroller import LocalDevices
from kedge.cloud.edgecontroller import kubeapi
from kedge.errors import PeerError
from kedge.limits import KUBEAPI_MAX_JSON_DEPTH

DEEP = b'{"kind": "Pod", "spec": ' + b"[" * KUBEAPI_MAX_JSON_DEPTH + b"]" * KUBEAPI_MAX_JSON_DEPTH + b"}"


@pytest.mark.parametrize("data, code", [
    (DEEP, "response_too_deep"),
    (b"[" * 100_000, "response_too_deep"),
    (b'{"kind": "Pod", "x": NaN}', "bad_response"),
    (b'{"kind": "Pod", "x": Infinity}', "bad_response"),
    (b'{"kind": ', "bad_response"),
])
def test_hostile_answer_is_refused_with_its_code(data, code):
    with pytest.raises(PeerError) as info:
        kubeapi.decode_response(data)
    assert info.value.code == code


def test_oversized_answer_is_response_too_large():
    with pytest.raises(PeerError) as info:
        kubeapi.decode_response(b'"' + b"x" * 64 + b'"', max_bytes=64)
    assert info.value.code == "response_too_large"


class _Resp:
    def __init__(self, *chunks: bytes) -> None:
        self.chunks = chunks

    def stream(self, *_a, **_kw):
        yield from self.chunks

    def release_conn(self) -> None:
        pass


@pytest.mark.parametrize("line, code", [
    (b"[" * 10_000 + b"\n", "response_too_deep"),
    (b'{"type": "ADDED", "object": {"x": NaN}}\n', "bad_response"),
    (b'["ADDED"]\n', "bad_response"),
])
def test_hostile_watch_line_is_refused(line, code):
    events = kubeapi._events(_Resp(b'{"type": "ADDED", "object": {}}\n', line), threading.Event())
    assert next(events) == {"type": "ADDED", "object": {}}
    with pytest.raises(PeerError) as info:
        next(events)
    assert info.value.code == code


class _Client:
    def __init__(self, body: bytes) -> None:
        self.body = body

    async def request(self, method: str, target: str, body=None, **_kw):
        return 200, self.body


@pytest.mark.parametrize("body, code", [(b"[" * 10_000, "response_too_deep"), (b'{"items": [NaN]}', "bad_response")])
def test_device_controller_read_is_bounded(body, code):
    with pytest.raises(PeerError) as info:
        asyncio.run(LocalDevices(_Client(body)).get("devices", "default", "d"))
    assert info.value.code == code
