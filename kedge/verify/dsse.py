"""DSSE (Dead Simple Signing Envelope) primitives: PAE, sign, verify, parse.

Pure functions over bytes and key objects -- no files, no clock. Signatures are
ECDSA P-256 with SHA-256 over the DSSE pre-authentication encoding (PAE), DER
encoded, as cosign, slsa-github-generator and in-toto produce them. The PAE binds
the payload *type* into what is signed, so a signature over one type cannot be
replayed as another.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from kedge.errors import VerificationError
from kedge.verify import _json
from kedge.verify._limits import DEFAULT, VerifyLimits

INTOTO_PAYLOAD_TYPE = "application/vnd.in-toto+json"


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE v1 pre-authentication encoding: ``DSSEv1 SP len(type) SP type SP len(body) SP body``."""
    type_bytes = payload_type.encode("utf-8")
    return b"DSSEv1 %d %b %d %b" % (len(type_bytes), type_bytes, len(payload), payload)


def _b64encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def b64decode(value: Any, what: str) -> bytes:
    """Strict base64 (standard or URL-safe alphabet, as DSSE allows); raise on junk."""
    if not isinstance(value, str):
        raise VerificationError(f"{what} must be a base64 string", code="malformed_envelope")
    try:
        if "-" in value or "_" in value:
            padded = value + "=" * (-len(value) % 4)
            return base64.urlsafe_b64decode(padded.encode("ascii"))
        return base64.b64decode(value.encode("ascii"), validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError) as exc:
        raise VerificationError(f"{what} is not valid base64", code="malformed_envelope") from exc


def sign_envelope(
    private_key: ec.EllipticCurvePrivateKey,
    payload: bytes,
    payload_type: str = INTOTO_PAYLOAD_TYPE,
    keyid: str = "",
) -> dict[str, Any]:
    """Sign ``payload`` into a DSSE envelope dict (JSON-serialisable).

    Only ECDSA P-256 keys are accepted so that every envelope kedge writes can be
    checked by ``verify_envelope`` and by cosign/slsa-verifier alike.
    """
    if not isinstance(private_key, ec.EllipticCurvePrivateKey) or not isinstance(
        private_key.curve, ec.SECP256R1
    ):
        raise VerificationError("DSSE signing needs an ECDSA P-256 private key", code="unsupported_key")
    sig = private_key.sign(pae(payload_type, payload), ec.ECDSA(hashes.SHA256()))
    return {
        "payloadType": payload_type,
        "payload": _b64encode(payload),
        "signatures": [{"keyid": keyid, "sig": _b64encode(sig)}],
    }


def parse_envelope(data: bytes, limits: VerifyLimits = DEFAULT) -> dict[str, Any]:
    """Decode and shape-check a DSSE envelope within ``limits``.

    Returns a normalised dict ``{"payloadType": str, "payload": str,
    "signatures": [{"keyid": str, "sig": str}, ...]}``; raises
    :class:`VerificationError` (``malformed_envelope`` / ``limit_exceeded`` /
    ``malformed_json``) for anything else.
    """
    doc = _json.loads(data, limits)
    return envelope_from_dict(doc, limits)


def envelope_from_dict(doc: Any, limits: VerifyLimits = DEFAULT) -> dict[str, Any]:
    """Shape-check an already decoded envelope (see :func:`parse_envelope`)."""
    if not isinstance(doc, dict):
        raise VerificationError("DSSE envelope must be a JSON object", code="malformed_envelope")
    payload_type = doc.get("payloadType")
    payload = doc.get("payload")
    sigs = doc.get("signatures")
    if not isinstance(payload_type, str) or not payload_type:
        raise VerificationError("DSSE envelope has no payloadType", code="malformed_envelope")
    if not isinstance(payload, str):
        raise VerificationError("DSSE envelope has no payload", code="malformed_envelope")
    if len(payload) > (limits.max_payload_bytes * 4) // 3 + 4:
        raise VerificationError("DSSE payload too large", code="limit_exceeded")
    if not isinstance(sigs, list) or not sigs:
        raise VerificationError("DSSE envelope has no signatures", code="malformed_envelope")
    if len(sigs) > limits.max_signatures:
        raise VerificationError("DSSE envelope has too many signatures", code="limit_exceeded")
    norm = []
    for entry in sigs:
        if not isinstance(entry, dict) or not isinstance(entry.get("sig"), str):
            raise VerificationError("DSSE signature entry malformed", code="malformed_envelope")
        keyid = entry.get("keyid", "")
        if not isinstance(keyid, str):
            raise VerificationError("DSSE keyid must be a string", code="malformed_envelope")
        norm.append({"keyid": keyid, "sig": entry["sig"]})
    return {"payloadType": payload_type, "payload": payload, "signatures": norm}


def verify_envelope(envelope: dict[str, Any], public_key: ec.EllipticCurvePublicKey) -> bytes:
    """Return the payload if any signature verifies under ``public_key``.

    Raises :class:`VerificationError` with code ``dsse_bad_signature`` otherwise --
    including for a wrong key type, so a caller can never get a payload back that
    no trusted key signed.
    """
    env = envelope_from_dict(envelope)
    if not isinstance(public_key, ec.EllipticCurvePublicKey) or not isinstance(
        public_key.curve, ec.SECP256R1
    ):
        raise VerificationError("DSSE verification needs an ECDSA P-256 public key", code="dsse_bad_signature")
    payload = b64decode(env["payload"], "DSSE payload")
    message = pae(env["payloadType"], payload)
    for entry in env["signatures"]:
        try:
            sig = b64decode(entry["sig"], "DSSE signature")
        except VerificationError:
            continue
        try:
            public_key.verify(sig, message, ec.ECDSA(hashes.SHA256()))
        except InvalidSignature:
            continue
        return payload
    raise VerificationError("no DSSE signature verifies with the given key", code="dsse_bad_signature")
