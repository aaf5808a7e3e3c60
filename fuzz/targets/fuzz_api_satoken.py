"""Fuzz service-account bearer token verification (``kedge.apiserver.satoken.verify``).

Any client can put any bytes after ``Authorization: Bearer``; the HTTP shell hands
them to ``verify`` before anything else is known about the peer.

Invariant: ``verify`` returns claims or raises ``TokenError`` (code ``invalid_token``
or ``token_expired``) -- nothing else (no ``RecursionError`` from a deeply nested
header, no ``TypeError`` from odd claim types). And it never accepts a token it did
not sign: a token is accepted only if its signed part (``header.payload``, exactly
as sent) is one this target signed with the service-account key. Accepted claims
are consistent with what was signed: ``sub`` equals ``system:serviceaccount:<ns>:<name>``
with non-empty namespace and name, issuer is the cluster issuer, ``now`` lies inside
``[nbf - leeway, exp + leeway)``, and one of the token's audiences is an accepted one.

Input layout (first byte):

* ``0x00`` -- the rest is a JSON claims body; the target signs it under the correct
  header with the real key (as if kedge had issued it), so the claim checks after the
  signature are fuzzed too;
* ``0x01`` -- the rest is ``HEADER \\n BODY`` (raw bytes, base64url-encoded here) and
  is signed the same way, so header checks are fuzzed with valid signatures;
* anything else -- the bytes, decoded as latin-1, are the token as sent (forgery
  attempts: the target never signs these).

Run: ``.venv/bin/python fuzz/targets/fuzz_api_satoken.py -max_total_time=60 /tmp/scratch fuzz/corpus/api_satoken``
"""

from __future__ import annotations

import base64
import json
import sys
from pathlib import Path

try:
    import kedge  # noqa: F401
except ImportError:  # running as a script from a checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from kedge.apiserver import satoken

# Fixed key and clock: seeds signed once stay valid. The key is a fuzzing fixture only.
KEY = ec.derive_private_key(0x6B65646765_66757A7A, ec.SECP256R1())
PUBLIC = KEY.public_key()
NOW = 1_780_000_000
AUDIENCES = (satoken.API_AUDIENCE, "https://edge.example")
LEEWAY = 60
CODES = {"invalid_token", "token_expired"}
HEADER = {"alg": "ES256", "kid": satoken.key_id(PUBLIC), "typ": "JWT"}
#: Tokens "kedge issued earlier": the raw-token seeds are these, signed by ``issue``.
ISSUED = (
    satoken.TokenClaims(namespace="default", name="builder", uid="u-1", audiences=(satoken.API_AUDIENCE,),
                        issued_at=NOW - 100, expires_at=NOW + 3600),
    satoken.TokenClaims(namespace="kube-system", name="edge-agent", uid="u-2", audiences=("https://edge.example",),
                        issued_at=NOW - 10, expires_at=NOW + 600, pod_name="agent-0", pod_uid="p-1"),
    satoken.TokenClaims(namespace="default", name="old", uid="u-3", audiences=(satoken.API_AUDIENCE,),
                        issued_at=NOW - 7200, expires_at=NOW - 3600),
)
#: The signing inputs (``header.payload``) of the issued tokens above: ECDSA signatures
#: are randomised, the signed part is not. Plus, per iteration, what :func:`sign` signed.
ISSUED_INPUTS = frozenset(satoken.issue(KEY, c).rsplit(".", 1)[0] for c in ISSUED)


def _require(ok: bool, what: str) -> None:
    """Like assert, but survives ``python -O``: a violated invariant is a crash."""
    if not ok:
        raise AssertionError(what)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def sign(header: bytes, body: bytes) -> tuple[str, str]:
    """(token, signing input) over raw header/body bytes, signed with the fixture key."""
    signing_input = _b64(header) + "." + _b64(body)
    r, s = decode_dss_signature(KEY.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
    return signing_input + "." + _b64(r.to_bytes(32, "big") + s.to_bytes(32, "big")), signing_input


def _token(data: bytes) -> tuple[str, str | None]:
    """The token to present and what this iteration signed (``None``: nothing)."""
    if data[:1] == b"\x00":
        return sign(json.dumps(HEADER, separators=(",", ":")).encode(), data[1:])
    if data[:1] == b"\x01":
        header, _, body = data[1:].partition(b"\n")
        return sign(header, body)
    return data.decode("latin-1"), None


def test_one_input(data: bytes) -> None:
    """One fuzz iteration; raises only if the invariant in the module docstring breaks."""
    token, signed_now = _token(data)
    try:
        claims = satoken.verify(token, PUBLIC, now=NOW, audiences=AUDIENCES)
    except satoken.TokenError as exc:
        _require(exc.code in CODES, f"undocumented code {exc.code}")
        return
    signing_input = token.rsplit(".", 1)[0]
    _require(signing_input in ISSUED_INPUTS or signing_input == signed_now,
             "accepted a token whose signed part was never signed")
    body = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=" * (-len(token.split(".")[1]) % 4)))
    _require(body.get("iss") == satoken.ISSUER, "accepted a foreign issuer")
    _require(bool(claims.namespace) and bool(claims.name), "empty namespace or name")
    _require(body.get("sub") == claims.username, "sub is not the service account")
    _require(claims.username == f"system:serviceaccount:{claims.namespace}:{claims.name}", "username")
    _require(claims.expires_at + LEEWAY > NOW >= body["nbf"] - LEEWAY, "accepted outside its validity window")
    _require(any(a in AUDIENCES for a in claims.audiences), "accepted a token for another audience")


def main() -> None:
    import atheris  # lazily: replaying the corpus in the test suite must not need it

    atheris.instrument_all()
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
