"""Bootstrap tokens: per-node, single-use, short-lived, stored only as a hash.

Printed form (``kedge token create``)::

    <ca hash: 64 lower-case hex>.<token id: 6 x [a-z0-9]>.<secret: 43 x base64url>

* ``ca hash`` is the sha256 of the CA certificate's DER. The joining edge refuses a
  CA whose hash differs (pinning, as kubeadm's discovery hash does), so the token is
  also the trust anchor and a man in the middle cannot substitute its own CA.
* ``token id`` names the row in the cloud's state store; it is not secret.
* ``secret`` is 32 random bytes (256 bits) in unpadded URL-safe base64. Only a hash
  of it is stored; the cloud cannot print it again.

Unlike KubeEdge, the CA private key is never used as an HMAC key (or for anything
but certificate and CRL signing). Everything here is pure: randomness is injected.
"""

from __future__ import annotations

import base64
import binascii
import datetime as _dt
import hashlib
import hmac
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass

from kedge.errors import AuthenticationError, ConfigError, LocalError

__all__ = [
    "BootstrapToken",
    "TOKEN_LENGTH",
    "format_token",
    "generate",
    "hash_secret",
    "is_secret_hash",
    "is_token_id",
    "parse_duration",
    "parse_token",
    "secret_matches",
]

SECRET_BYTES = 32
SECRET_CHARS = 43  # ceil(32 * 8 / 6), no padding
TOKEN_ID_CHARS = 6
CA_HASH_CHARS = 64
TOKEN_LENGTH = CA_HASH_CHARS + 1 + TOKEN_ID_CHARS + 1 + SECRET_CHARS
# The joining edge names the node it expects to become, so a token for another node is
# refused before it is used up (lower-case: the HTTP layer lower-cases header names).
NODE_HEADER = "x-kedge-node"

_ID_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"
_CA_HASH = re.compile(r"[0-9a-f]{64}", re.ASCII)
_TOKEN_ID = re.compile(r"[a-z0-9]{6}", re.ASCII)
_SECRET = re.compile(r"[A-Za-z0-9_-]{43}", re.ASCII)
_TOKEN = re.compile(r"([0-9a-f]{64})\.([a-z0-9]{6})\.([A-Za-z0-9_-]{43})", re.ASCII)

_HASH_DOMAIN = b"kedge bootstrap token secret v1\x00"
_HASH_PREFIX = "sha256:"

_MAX_DURATION_TEXT = 32
_DURATION = re.compile(r"(?:([0-9]{1,6})d)?(?:([0-9]{1,6})h)?(?:([0-9]{1,7})m)?(?:([0-9]{1,9})s)?", re.ASCII)
#: Upper bound for any duration we parse (token TTLs, certificate validity).
MAX_DURATION = _dt.timedelta(days=36500)


def _malformed() -> AuthenticationError:
    return AuthenticationError("bootstrap token is malformed", code="token_malformed")


@dataclass(frozen=True)
class BootstrapToken:
    """A parsed bootstrap token; validated on construction so no invalid one exists."""

    ca_hash: str
    token_id: str
    secret: str

    def __post_init__(self) -> None:
        for value, pattern in ((self.ca_hash, _CA_HASH), (self.token_id, _TOKEN_ID), (self.secret, _SECRET)):
            if not isinstance(value, str) or not pattern.fullmatch(value):
                raise _malformed()
        if not _canonical_secret(self.secret):
            raise _malformed()

    def __repr__(self) -> str:  # never leak the secret into logs or tracebacks
        return f"BootstrapToken(ca_hash={self.ca_hash!r}, token_id={self.token_id!r}, secret=<redacted>)"

    __str__ = __repr__


def _canonical_secret(secret: str) -> bool:
    """43 base64url chars decode to 32 bytes only if the last char's spare bits are 0.

    Requiring the canonical encoding means each secret has exactly one spelling.
    """
    try:
        raw = base64.urlsafe_b64decode(secret + "=")
    except (binascii.Error, ValueError):
        return False
    return len(raw) == SECRET_BYTES and _encode_secret(raw) == secret


def _encode_secret(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def _token_id(randbytes: Callable[[int], bytes]) -> str:
    """Six unbiased characters from [a-z0-9] by rejection sampling (bounded rounds)."""
    out: list[str] = []
    limit = 256 - (256 % len(_ID_ALPHABET))  # 252: largest multiple of 36 <= 256
    for _ in range(32):
        for b in randbytes(16):
            if b < limit:
                out.append(_ID_ALPHABET[b % len(_ID_ALPHABET)])
                if len(out) == TOKEN_ID_CHARS:
                    return "".join(out)
    raise LocalError("random source returned unusable bytes", code="bad_randomness")


def generate(ca_hash: str, *, randbytes: Callable[[int], bytes] = secrets.token_bytes) -> BootstrapToken:
    """A fresh token pinning ``ca_hash`` (see :func:`kedge.pki.ca.ca_fingerprint`)."""
    if not isinstance(ca_hash, str) or not _CA_HASH.fullmatch(ca_hash):
        raise ConfigError("CA hash must be 64 lower-case hex characters", code="bad_ca_hash")
    raw = randbytes(SECRET_BYTES)
    if not isinstance(raw, bytes) or len(raw) != SECRET_BYTES:
        raise LocalError("random source returned the wrong number of bytes", code="bad_randomness")
    return BootstrapToken(ca_hash=ca_hash, token_id=_token_id(randbytes), secret=_encode_secret(raw))


def format_token(tok: BootstrapToken) -> str:
    """The one-line form an operator copies to the edge."""
    return f"{tok.ca_hash}.{tok.token_id}.{tok.secret}"


def parse_token(s: str) -> BootstrapToken:
    """Parse strictly: exact length, exact alphabet, canonical secret, no whitespace.

    Raises :class:`AuthenticationError` with code ``token_malformed``; the message
    never contains the input (it may be a secret).
    """
    if not isinstance(s, str) or len(s) != TOKEN_LENGTH:
        raise _malformed()
    m = _TOKEN.fullmatch(s)
    if m is None:
        raise _malformed()
    return BootstrapToken(ca_hash=m.group(1), token_id=m.group(2), secret=m.group(3))


def hash_secret(token_id: str, secret: str) -> str:
    """What the state store keeps instead of the secret: ``sha256:<hex>``.

    A single domain-separated SHA-256 (not a slow password hash) is enough here:
    the secret is 256 bits from ``secrets``, so a stolen hash cannot be brute-forced,
    and slowness would only hand a cheap CPU-exhaustion lever to unauthenticated
    peers. The token id is part of the input, so hashes are per token and one
    secret cannot be replayed against a different token id.
    """
    if not isinstance(token_id, str) or not _TOKEN_ID.fullmatch(token_id):
        raise _malformed()
    if not isinstance(secret, str) or not _SECRET.fullmatch(secret):
        raise _malformed()
    digest = hashlib.sha256(_HASH_DOMAIN + token_id.encode("ascii") + b"\x00" + secret.encode("ascii"))
    return _HASH_PREFIX + digest.hexdigest()


def is_token_id(value: object) -> bool:
    """Whether ``value`` is a well-formed token id (6 x [a-z0-9])."""
    return isinstance(value, str) and _TOKEN_ID.fullmatch(value) is not None


def is_secret_hash(value: object) -> bool:
    """Whether ``value`` has the shape :func:`hash_secret` produces."""
    return (
        isinstance(value, str)
        and value.startswith(_HASH_PREFIX)
        and _CA_HASH.fullmatch(value[len(_HASH_PREFIX):]) is not None
    )


def secret_matches(token_id: str, secret: str, stored_hash: str) -> bool:
    """Constant-time comparison of ``secret`` against the stored hash."""
    try:
        candidate = hash_secret(token_id, secret)
    except AuthenticationError:
        return False
    if not isinstance(stored_hash, str):
        return False
    return hmac.compare_digest(candidate.encode("ascii"), stored_hash.encode("utf-8", "replace"))


def parse_duration(s: str) -> _dt.timedelta:
    """Parse ``90s``, ``15m``, ``1h``, ``2h30m``, ``30d``, ``1d12h`` strictly.

    Units in the order d, h, m, s, each at most once; plain ASCII digits; no
    spaces, signs or fractions; the total must be positive and at most 100 years.
    Raises :class:`ConfigError` with code ``bad_duration``.
    """
    bad = ConfigError(f"invalid duration {s!r}: use e.g. 90s, 15m, 2h30m, 30d", code="bad_duration")
    if not isinstance(s, str) or not 0 < len(s) <= _MAX_DURATION_TEXT:
        raise bad
    m = _DURATION.fullmatch(s)
    if m is None or not any(m.groups()):
        raise bad
    d, h, mi, sec = (int(g) if g else 0 for g in m.groups())
    total = _dt.timedelta(days=d, hours=h, minutes=mi, seconds=sec)
    if total <= _dt.timedelta(0) or total > MAX_DURATION:
        raise bad
    return total
