"""MQTT twin payloads (devices -> edge, edge -> mapper) are parsed by the one bounded loader."""

from __future__ import annotations

import types

import pytest

from kedge.edge.devicetwin import model as tm
from kedge.limits import TWIN_MAX_JSON_DEPTH
from kedge.mapper import Mapper

TOO_DEEP = b'{"twin": {"p": ' + b"[" * TWIN_MAX_JSON_DEPTH + b"]" * TWIN_MAX_JSON_DEPTH + b"}}"
GOOD = b'{"twin": {"target": {"expected": {"value": "21"}}}}'


@pytest.mark.parametrize("payload, code", [
    (TOO_DEEP, "bad_json"),
    (b'{"twin": {"temp": {"actual": {"value": NaN}}}}', "bad_json"),
    (b'{"twin": {"temp": {"actual": {"value": Infinity}}}}', "bad_json"),
    (b" " * (tm.MAX_PAYLOAD_BYTES + 1), "payload_too_large"),
    ("{}", "bad_payload"),
])
def test_hostile_twin_payload_is_refused(payload, code):
    with pytest.raises(tm.TwinRejected) as info:
        tm.load_json(payload)
    assert info.value.code == code


def _mapper() -> Mapper:
    m = Mapper.__new__(Mapper)  # no broker: only the message handler is exercised
    m.desired, m.on_desired, m.state = {}, None, None
    m.twin_received = types.SimpleNamespace(is_set=lambda: True, set=lambda: None)
    return m


@pytest.mark.parametrize("payload", [TOO_DEEP, b"[" * 20_000, b'{"twin": NaN}',
                                     b"{" * (tm.MAX_PAYLOAD_BYTES + 1)])
def test_mapper_drops_hostile_message_from_the_edge(payload):
    m = _mapper()
    m._on_message(None, None, types.SimpleNamespace(payload=payload))
    assert m.desired == {}
    m._on_message(None, None, types.SimpleNamespace(payload=GOOD))
    assert m.desired == {"target": "21"}
