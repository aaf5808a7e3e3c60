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
