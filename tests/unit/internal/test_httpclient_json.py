"""kedge._internal.httpclient: a JSON answer from the cert endpoint is decoded through the bounded loader."""

from __future__ import annotations

import pytest

from kedge._internal import httpclient
from kedge.errors import PeerError
from kedge.limits import HTTP_CLIENT_MAX_JSON_DEPTH, HTTP_CLIENT_MAX_RESPONSE_BYTES


@pytest.mark.parametrize("data", [
    b"[" * (HTTP_CLIENT_MAX_JSON_DEPTH + 1) + b"]" * (HTTP_CLIENT_MAX_JSON_DEPTH + 1),  # too deep
    b"[" * 100_000,  # a recursion bomb
    b'{"certificate": NaN}',
    b'{"a": Infinity}',
    b'"' + b"x" * HTTP_CLIENT_MAX_RESPONSE_BYTES + b'"',  # oversized
    b"\xff\xfe{}",
])
def test_hostile_json_answer_is_bad_response(data):
    with pytest.raises(PeerError) as info:
        httpclient.decode_json(data)
    assert info.value.code == "bad_response"


def test_a_well_formed_answer_decodes():
    assert httpclient.decode_json(b'{"certificate": "-----BEGIN", "ca": ["x"]}') == {
        "certificate": "-----BEGIN", "ca": ["x"]}
