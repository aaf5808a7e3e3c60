"""DSSE primitives: PAE bytes, sign/verify round trip, tampering refused."""

from __future__ import annotations

import base64
import copy
import json

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from kedge.errors import VerificationError
from kedge.verify import dsse
from kedge.verify._limits import VerifyLimits


@pytest.fixture(scope="module")
def key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def test_pae_matches_dsse_spec_example() -> None:
    # Example from the DSSE protocol spec.
    assert dsse.pae("http://example.com/HelloWorld", b"hello world") == (
        b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
    )


def test_pae_counts_utf8_bytes_not_characters() -> None:
    assert dsse.pae("\u00e9", b"") == b"DSSEv1 2 \xc3\xa9 0 "


def test_round_trip(key: ec.EllipticCurvePrivateKey) -> None:
    env = dsse.sign_envelope(key, b'{"a": 1}', keyid="k1")
    parsed = dsse.parse_envelope(json.dumps(env).encode())
    assert dsse.verify_envelope(parsed, key.public_key()) == b'{"a": 1}'
    assert parsed["signatures"][0]["keyid"] == "k1"


def test_edited_payload_is_refused(key: ec.EllipticCurvePrivateKey) -> None:
    env = dsse.sign_envelope(key, b'{"a": 1}')
    env["payload"] = base64.b64encode(b'{"a": 2}').decode()
    with pytest.raises(VerificationError) as info:
        dsse.verify_envelope(env, key.public_key())
    assert info.value.code == "dsse_bad_signature"


def test_payload_type_swap_is_refused(key: ec.EllipticCurvePrivateKey) -> None:
    env = dsse.sign_envelope(key, b"x", payload_type="text/plain")
    env["payloadType"] = dsse.INTOTO_PAYLOAD_TYPE
    with pytest.raises(VerificationError) as info:
        dsse.verify_envelope(env, key.public_key())
    assert info.value.code == "dsse_bad_signature"


def test_other_key_is_refused(key: ec.EllipticCurvePrivateKey) -> None:
    env = dsse.sign_envelope(key, b"x")
    other = ec.generate_private_key(ec.SECP256R1()).public_key()
    with pytest.raises(VerificationError) as info:
        dsse.verify_envelope(env, other)
    assert info.value.code == "dsse_bad_signature"


def test_one_good_signature_among_junk_verifies(key: ec.EllipticCurvePrivateKey) -> None:
    env = dsse.sign_envelope(key, b"x")
    env["signatures"].insert(0, {"keyid": "", "sig": "!!notbase64"})
    assert dsse.verify_envelope(env, key.public_key()) == b"x"


def test_non_p256_key_refused_for_signing() -> None:
    with pytest.raises(VerificationError):
        dsse.sign_envelope(ec.generate_private_key(ec.SECP384R1()), b"x")


@pytest.mark.parametrize(
    "doc",
    [
        b"[]",
        b"{}",
        b'{"payloadType": "t", "payload": "eA==", "signatures": []}',
        b'{"payloadType": "t", "payload": 1, "signatures": [{"sig": "eA=="}]}',
        b'{"payloadType": "", "payload": "eA==", "signatures": [{"sig": "eA=="}]}',
        b'{"payloadType": "t", "payload": "eA==", "signatures": [{"sig": 5}]}',
        b'{"payloadType": "t", "payload": "eA==", "payload": "eQ==", "signatures": [{"sig": "eA=="}]}',
        b"\xff\xfe",
        b"[" * 200 + b"]" * 200,
    ],
)
def test_malformed_envelopes_raise_verification_error(doc: bytes) -> None:
    with pytest.raises(VerificationError):
        dsse.parse_envelope(doc)


def test_size_bound_enforced(key: ec.EllipticCurvePrivateKey) -> None:
    env = json.dumps(dsse.sign_envelope(key, b"x" * 2000)).encode()
    with pytest.raises(VerificationError) as info:
        dsse.parse_envelope(env, VerifyLimits(max_file_bytes=1000))
    assert info.value.code == "limit_exceeded"


def test_too_many_signatures_refused(key: ec.EllipticCurvePrivateKey) -> None:
    env = dsse.sign_envelope(key, b"x")
    env["signatures"] = [copy.deepcopy(env["signatures"][0]) for _ in range(3)]
    with pytest.raises(VerificationError) as info:
        dsse.parse_envelope(json.dumps(env).encode(), VerifyLimits(max_signatures=2))
    assert info.value.code == "limit_exceeded"
