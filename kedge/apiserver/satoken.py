"""Service-account tokens: ES256 JWTs with Kubernetes TokenRequest semantics, pure functions.

A token names ``system:serviceaccount:<ns>:<name>``, carries the service account's uid
(and optionally the pod it is bound to), is audience-bound and expires. Verification
takes ``now`` and the accepted audiences; the API server additionally checks that the
service account (and bound pod) still exist with the same uid, so deleting either
revokes the token. Tokens are bounded in size before any parsing.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import re
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

from kedge._internal import jsonutil
from kedge.errors import AuthenticationError, LimitExceeded, ProtocolError
from kedge.limits import SA_TOKEN_MAX_BYTES as MAX_TOKEN_BYTES
from kedge.limits import SA_TOKEN_MAX_HEADER_BYTES as MAX_HEADER_BYTES
from kedge.limits import SA_TOKEN_MAX_JSON_DEPTH as MAX_JSON_DEPTH

ISSUER = "https://kubernetes.default.svc.cluster.local"
API_AUDIENCE = "https://kubernetes.default.svc.cluster.local"
MIN_EXPIRATION_S = 600
MAX_EXPIRATION_S = 48 * 3600
DEFAULT_EXPIRATION_S = 3600
_LEEWAY_S = 60
_B64URL = re.compile(r"[A-Za-z0-9_-]+")


class TokenError(AuthenticationError):
    code = "invalid_token"


@dataclasses.dataclass(frozen=True)
class TokenClaims:
    namespace: str
    name: str
    uid: str
    audiences: tuple[str, ...]
    issued_at: int
    expires_at: int
    pod_name: str = ""
    pod_uid: str = ""

    @property
    def username(self) -> str:
        return f"system:serviceaccount:{self.namespace}:{self.name}"

    @property
    def groups(self) -> tuple[str, ...]:
        return ("system:serviceaccounts", f"system:serviceaccounts:{self.namespace}", "system:authenticated")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    """Strict base64url without padding (RFC 7515): other characters are refused, not skipped."""
    if not text or len(text) > MAX_TOKEN_BYTES or not _B64URL.fullmatch(text):
        raise TokenError("malformed token")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (ValueError, TypeError) as exc:  # e.g. a length of 4n+1
        raise TokenError("malformed token") from exc


def _json_part(segment: str, max_bytes: int) -> dict[str, Any]:
    """Decode one token segment to a JSON object, bounded in size and depth; raises only TokenError."""
    if len(segment) > max_bytes * 4 // 3 + 4:
        raise TokenError("token part too large")
    raw = _unb64(segment)  # at most MAX_TOKEN_BYTES
    try:
        value = jsonutil.loads(raw, max_bytes=MAX_TOKEN_BYTES, max_depth=MAX_JSON_DEPTH)
    except LimitExceeded as exc:
        raise TokenError("token JSON nested too deeply") from exc
    except ProtocolError as exc:
        raise TokenError("malformed token") from exc
    if not isinstance(value, dict):
        raise TokenError("malformed token")
    return value


def key_id(public_key: ec.EllipticCurvePublicKey) -> str:
    from cryptography.hazmat.primitives import serialization

    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return _b64(hashlib.sha256(der).digest())


def issue(key: ec.EllipticCurvePrivateKey, claims: TokenClaims) -> str:
    header = {"alg": "ES256", "kid": key_id(key.public_key()), "typ": "JWT"}
    body: dict[str, Any] = {
        "iss": ISSUER, "sub": claims.username, "aud": list(claims.audiences),
        "iat": claims.issued_at, "nbf": claims.issued_at, "exp": claims.expires_at,
        "kubernetes.io": {"namespace": claims.namespace,
                          "serviceaccount": {"name": claims.name, "uid": claims.uid}},
    }
    if claims.pod_name:
        body["kubernetes.io"]["pod"] = {"name": claims.pod_name, "uid": claims.pod_uid}
    signing_input = (_b64(json.dumps(header, separators=(",", ":")).encode()) + "." +
                     _b64(json.dumps(body, separators=(",", ":")).encode()))
    der = key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256()))
    r, s = decode_dss_signature(der)
    return signing_input + "." + _b64(r.to_bytes(32, "big") + s.to_bytes(32, "big"))


def verify(token: str, public_key: ec.EllipticCurvePublicKey, *, now: float,
           audiences: tuple[str, ...] = (API_AUDIENCE,)) -> TokenClaims:
    """Check signature, issuer, time window and audience; return the claims or raise TokenError.

    The signature is checked over the segments exactly as sent, before any JSON is
    parsed: an unauthenticated client's bytes never reach the JSON decoder. Only one
    key and one algorithm are accepted, so nothing in the header is needed to pick
    them; the header is still checked afterwards. ``TokenError`` is the only exception.
    """
    if not isinstance(token, str) or len(token) > MAX_TOKEN_BYTES or token.count(".") != 2:
        raise TokenError("malformed token")
    h64, b64, s64 = token.split(".")
    sig = _unb64(s64)
    if len(sig) != 64:
        raise TokenError("malformed signature")
    if len(h64) > MAX_HEADER_BYTES * 4 // 3 + 4 or not _B64URL.fullmatch(h64) or not _B64URL.fullmatch(b64):
        raise TokenError("malformed token")
    der = encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big"))
    try:
        public_key.verify(der, f"{h64}.{b64}".encode("ascii"), ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError) as exc:
        raise TokenError("bad token signature") from exc
    header = _json_part(h64, MAX_HEADER_BYTES)
    if header.get("alg") != "ES256" or header.get("kid") != key_id(public_key):
        raise TokenError("unexpected token algorithm or key")
    body = _json_part(b64, MAX_TOKEN_BYTES)
    return _claims(body, now=now, audiences=audiences)


def _str_field(obj: dict[str, Any], key: str) -> str:
    value = obj.get(key, "")
    if not isinstance(value, str):
        raise TokenError("malformed token claims")
    return value


def _claims(body: dict[str, Any], *, now: float, audiences: tuple[str, ...]) -> TokenClaims:
    """The claim checks, on a body whose signature has been verified."""
    if body.get("iss") != ISSUER:
        raise TokenError("unexpected issuer")
    exp, nbf, iat = body.get("exp"), body.get("nbf"), body.get("iat")
    if not all(isinstance(x, int) and not isinstance(x, bool) for x in (exp, nbf, iat)):
        raise TokenError("token times missing")
    if now >= exp + _LEEWAY_S or now + _LEEWAY_S < nbf:
        raise TokenError("token expired or not yet valid", code="token_expired")
    aud = body.get("aud")
    aud_list = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
    if not all(isinstance(a, str) for a in aud_list) or not any(a in audiences for a in aud_list):
        raise TokenError("token audience not accepted")
    k8s = body.get("kubernetes.io")
    if not isinstance(k8s, dict) or not isinstance(k8s.get("serviceaccount"), dict):
        raise TokenError("not a service account token")
    sa = k8s["serviceaccount"]
    pod = k8s.get("pod")
    if pod is None:
        pod = {}
    if not isinstance(pod, dict):
        raise TokenError("malformed token claims")
    claims = TokenClaims(namespace=_str_field(k8s, "namespace"), name=_str_field(sa, "name"),
                         uid=_str_field(sa, "uid"), audiences=tuple(aud_list), issued_at=iat, expires_at=exp,
                         pod_name=_str_field(pod, "name"), pod_uid=_str_field(pod, "uid"))
    if body.get("sub") != claims.username or not claims.namespace or not claims.name:
        raise TokenError("inconsistent token subject")
    return claims
