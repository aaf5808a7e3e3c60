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
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

from kedge.errors import AuthenticationError

ISSUER = "https://kubernetes.default.svc.cluster.local"
API_AUDIENCE = "https://kubernetes.default.svc.cluster.local"
MAX_TOKEN_BYTES = 8192
MIN_EXPIRATION_S = 600
MAX_EXPIRATION_S = 48 * 3600
DEFAULT_EXPIRATION_S = 3600
_LEEWAY_S = 60


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
    if not text or len(text) > MAX_TOKEN_BYTES:
        raise TokenError("malformed token")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (ValueError, TypeError) as exc:
        raise TokenError("malformed token") from exc


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
    """Check signature, issuer, time window and audience; return the claims or raise TokenError."""
    if len(token) > MAX_TOKEN_BYTES or token.count(".") != 2:
        raise TokenError("malformed token")
    h64, b64, s64 = token.split(".")
    try:
        header = json.loads(_unb64(h64))
        body = json.loads(_unb64(b64))
    except ValueError as exc:
        raise TokenError("malformed token") from exc
    if not isinstance(header, dict) or header.get("alg") != "ES256" or header.get("kid") != key_id(public_key):
        raise TokenError("unexpected token algorithm or key")
    sig = _unb64(s64)
    if len(sig) != 64:
        raise TokenError("malformed signature")
    der = encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big"))
    try:
        public_key.verify(der, f"{h64}.{b64}".encode(), ec.ECDSA(hashes.SHA256()))
    except InvalidSignature as exc:
        raise TokenError("bad token signature") from exc
    if not isinstance(body, dict) or body.get("iss") != ISSUER:
        raise TokenError("unexpected issuer")
    exp, nbf, iat = body.get("exp"), body.get("nbf"), body.get("iat")
    if not all(isinstance(x, int) and not isinstance(x, bool) for x in (exp, nbf, iat)):
        raise TokenError("token times missing")
    if now >= exp + _LEEWAY_S or now + _LEEWAY_S < nbf:
        raise TokenError("token expired or not yet valid", code="token_expired")
    aud = body.get("aud")
    aud_list = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
    if not any(a in audiences for a in aud_list):
        raise TokenError("token audience not accepted")
    k8s = body.get("kubernetes.io")
    if not isinstance(k8s, dict) or not isinstance(k8s.get("serviceaccount"), dict):
        raise TokenError("not a service account token")
    ns, sa = k8s.get("namespace"), k8s["serviceaccount"]
    pod = k8s.get("pod") if isinstance(k8s.get("pod"), dict) else {}
    claims = TokenClaims(namespace=str(ns), name=str(sa.get("name", "")), uid=str(sa.get("uid", "")),
                         audiences=tuple(str(a) for a in aud_list), issued_at=iat, expires_at=exp,
                         pod_name=str(pod.get("name", "")), pod_uid=str(pod.get("uid", "")))
    if body.get("sub") != claims.username or not claims.namespace or not claims.name:
        raise TokenError("inconsistent token subject")
    return claims
