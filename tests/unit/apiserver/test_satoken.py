"""Service-account JWTs: signature, expiry, audience, tampering."""

from __future__ import annotations

import base64
import json

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from kedge.apiserver import satoken
from kedge.apiserver.satoken import TokenClaims, TokenError, issue, verify

KEY = ec.generate_private_key(ec.SECP256R1())
NOW = 1_700_000_000


def _claims(**kw):
    base = dict(namespace="ns", name="robot", uid="u1", audiences=(satoken.API_AUDIENCE,), issued_at=NOW,
                expires_at=NOW + 3600)
    base.update(kw)
    return TokenClaims(**base)


def test_round_trip():
    c = verify(issue(KEY, _claims(pod_name="p", pod_uid="pu")), KEY.public_key(), now=NOW + 10)
    assert c.username == "system:serviceaccount:ns:robot" and c.pod_name == "p" and c.uid == "u1"
    assert "system:serviceaccounts:ns" in c.groups


@pytest.mark.parametrize("now", [NOW + 3600 + 61, NOW - 120])
def test_outside_validity_window_is_refused(now):
    with pytest.raises(TokenError):
        verify(issue(KEY, _claims()), KEY.public_key(), now=now)


def test_other_audience_is_refused():
    token = issue(KEY, _claims(audiences=("vault",)))
    with pytest.raises(TokenError):
        verify(token, KEY.public_key(), now=NOW)
    assert verify(token, KEY.public_key(), now=NOW, audiences=("vault",)).name == "robot"


def test_wrong_key_and_tampering_are_refused():
    token = issue(KEY, _claims())
    with pytest.raises(TokenError):
        verify(token, ec.generate_private_key(ec.SECP256R1()).public_key(), now=NOW)
    h, b, s = token.split(".")
    body = json.loads(base64.urlsafe_b64decode(b + "=="))
    body["sub"] = "system:serviceaccount:kube-system:admin"
    forged = base64.urlsafe_b64encode(json.dumps(body).encode()).rstrip(b"=").decode()
    with pytest.raises(TokenError):
        verify(f"{h}.{forged}.{s}", KEY.public_key(), now=NOW)
    none_alg = base64.urlsafe_b64encode(b'{"alg":"none"}').rstrip(b"=").decode()
    with pytest.raises(TokenError):
        verify(f"{none_alg}.{b}.", KEY.public_key(), now=NOW)


@pytest.mark.parametrize("garbage", ["", "a.b", "a.b.c", "x" * 9000, "...", "eyJ9.eyJ9.AA"])
def test_garbage_is_refused(garbage):
    with pytest.raises(TokenError):
        verify(garbage, KEY.public_key(), now=NOW)


# -- fuzzing regressions: nothing unauthenticated reaches the JSON decoder -------------

def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _sign_raw(header: bytes, body: bytes) -> str:
    """A token over arbitrary header/body bytes, correctly signed with KEY (as if kedge had issued it)."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

    signing_input = _b64(header) + "." + _b64(body)
    r, s = decode_dss_signature(KEY.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
    return signing_input + "." + _b64(r.to_bytes(32, "big") + s.to_bytes(32, "big"))


def _header() -> bytes:
    return json.dumps({"alg": "ES256", "kid": satoken.key_id(KEY.public_key()), "typ": "JWT"}).encode()


def test_deeply_nested_token_header_is_refused_not_a_recursion_error():
    """The unauthenticated DoS: ``base64url("[" * 1500) + ".e30.AAAA"``."""
    with pytest.raises(TokenError) as err:
        verify(_b64(b"[" * 1500) + ".e30.AAAA", KEY.public_key(), now=NOW)
    assert err.value.code == "invalid_token"


def test_forged_token_is_refused_by_signature_before_its_json_is_parsed():
    # header and body are not even JSON: only the signature check can have refused it
    forged = _b64(b"\xff not json [[[") + "." + _b64(b"{") + "." + _b64(b"\x01" * 64)
    with pytest.raises(TokenError, match="signature"):
        verify(forged, KEY.public_key(), now=NOW)


@pytest.mark.parametrize("header,body", [
    (b"[" * 1500, b"{}"),
    (None, b"[" * 1500 + b"]" * 1500),
    (None, b'{"a":' * (satoken.MAX_JSON_DEPTH + 1) + b"1" + b"}" * (satoken.MAX_JSON_DEPTH + 1)),
    (b'{"alg":"ES256","pad":"' + b"x" * satoken.MAX_HEADER_BYTES + b'"}', b"{}"),
    (None, b"\xff\xfe"),  # not UTF-8
    (None, b"[]"),        # not an object
])
def test_signed_but_oversized_or_deeply_nested_json_is_refused(header, body):
    """Even with a valid signature (a leaked key, or our own bug) the decoder stays bounded."""
    with pytest.raises(TokenError):
        verify(_sign_raw(header if header is not None else _header(), body), KEY.public_key(), now=NOW)


def test_nesting_inside_strings_does_not_count_as_depth():
    c = _claims(uid="[[[[[[[[[[{{{{{{{{{{\\\"")
    assert verify(issue(KEY, c), KEY.public_key(), now=NOW).uid == c.uid


@pytest.mark.parametrize("mangle", [
    lambda h, b, s: f"{h}.{b}.{s[:10]}!{s[10:]}",   # base64 decoders may skip the "!"
    lambda h, b, s: f"{h}.{b}.{s}==",
    lambda h, b, s: f"{h}.{b} .{s}",
    lambda h, b, s: f"{h}.{b}.{s[:20]}\u00e9{s[20:]}",
])
def test_token_with_characters_outside_base64url_is_refused(mangle):
    h, b, s = issue(KEY, _claims()).split(".")
    with pytest.raises(TokenError):
        verify(mangle(h, b, s), KEY.public_key(), now=NOW)


@pytest.mark.parametrize("k8s", [
    {"namespace": ["ns"], "serviceaccount": {"name": "robot", "uid": "u1"}},
    {"namespace": "ns", "serviceaccount": {"name": "robot", "uid": 7}},
    {"namespace": "ns", "serviceaccount": {"name": "robot", "uid": "u1"}, "pod": "p"},
])
def test_claims_of_the_wrong_type_are_refused_not_stringified(k8s):
    body = {"iss": satoken.ISSUER, "sub": "system:serviceaccount:ns:robot", "aud": [satoken.API_AUDIENCE],
            "iat": NOW, "nbf": NOW, "exp": NOW + 3600, "kubernetes.io": k8s}
    with pytest.raises(TokenError):
        verify(_sign_raw(_header(), json.dumps(body).encode()), KEY.public_key(), now=NOW)
