"""Verify a Sigstore bundle signed with a managed (non-Fulcio) key, offline.

sigstore-python 4.5.1 only verifies certificate-bearing bundles, so the
sigstore-conformance ``managed-key-*`` vectors need this path. It reuses
sigstore-python's log-entry proof checks (Merkle inclusion, signed checkpoint,
signed entry timestamp; through :mod:`kedge.verify._sigstore_adapter`) and
rfc3161-client's timestamp checks, and does the rest here:
the message signature against the given key, and the consistency of the log
entry body (digest, signature, public key) with the bundle -- so a bundle cannot
borrow another artifact's log entry.

Only ``hashedrekord 0.0.1`` message-signature bundles are accepted; anything else
is an :class:`~kedge.errors.UnsupportedFormat`.
"""

from __future__ import annotations

import base64
import binascii
import json
from datetime import datetime, timezone
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, utils

from kedge.errors import UnsupportedFormat, VerificationError
from kedge.verify import _json, _sigstore_adapter
from kedge.verify._limits import DEFAULT, VerifyLimits

_MAX_TIMESTAMPS = 32


def _spki(key: ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _check_body(body: bytes, digest: bytes, signature: bytes, key: ec.EllipticCurvePublicKey, limits: VerifyLimits) -> None:
    """The log entry must record exactly this digest, signature and key."""
    doc: Any = _json.loads(body, limits)
    spec = doc.get("spec") if isinstance(doc, dict) else None
    ok = (
        isinstance(doc, dict)
        and doc.get("kind") == "hashedrekord"
        and doc.get("apiVersion") == "0.0.1"
        and isinstance(spec, dict)
    )
    if not ok:
        raise VerificationError("log entry is not a hashedrekord 0.0.1 body", code="tlog_inconsistent")
    data_hash = (spec.get("data") or {}).get("hash") if isinstance(spec.get("data"), dict) else None
    sig = spec.get("signature") if isinstance(spec.get("signature"), dict) else {}
    pub = sig.get("publicKey") if isinstance(sig.get("publicKey"), dict) else {}
    try:
        logged_sig = base64.b64decode(str(sig.get("content", "")), validate=True)
        logged_key_pem = base64.b64decode(str(pub.get("content", "")), validate=True)
        logged_key = serialization.load_pem_public_key(logged_key_pem)
    except (binascii.Error, ValueError, TypeError) as exc:
        raise VerificationError("log entry body malformed", code="tlog_inconsistent") from exc
    if not isinstance(data_hash, dict) or data_hash.get("algorithm") != "sha256" or data_hash.get("value") != digest.hex():
        raise VerificationError("log entry records another digest", code="tlog_inconsistent")
    if logged_sig != signature:
        raise VerificationError("log entry records another signature", code="tlog_inconsistent")
    if not isinstance(logged_key, ec.EllipticCurvePublicKey) or _spki(logged_key) != _spki(key):
        raise VerificationError("log entry records another public key", code="tlog_inconsistent")


def _timestamps(vm: Any) -> list[Any]:
    """The bundle's RFC 3161 timestamp responses, decoded (bounded)."""
    from rfc3161_client import decode_timestamp_response

    tvd = vm.timestamp_verification_data
    raw = (tvd.rfc3161_timestamps or []) if tvd is not None else []
    if len(raw) > _MAX_TIMESTAMPS:
        raise VerificationError("too many timestamps", code="limit_exceeded")
    try:
        return [decode_timestamp_response(ts.signed_timestamp) for ts in raw]
    except ValueError as exc:
        raise VerificationError("timestamp malformed", code="timestamp_invalid") from exc


def verify(doc: dict[str, Any], digest_hex: str, key: ec.EllipticCurvePublicKey, trusted_root: Any,
           limits: VerifyLimits = DEFAULT) -> str:
    """Verify ``doc`` (a bundle dict) for the artifact ``digest_hex`` with ``key``."""
    from sigstore.errors import Error as SigstoreError
    from sigstore.models import Bundle
    from sigstore_models.bundle.v1 import Bundle as BundleModel

    try:
        inner = BundleModel.from_json(json.dumps(doc))
        Bundle.BundleType(inner.media_type)
    except (ValueError, TypeError, KeyError) as exc:
        raise VerificationError("Sigstore bundle is malformed", code="malformed_bundle") from exc
    vm = inner.verification_material
    if vm.public_key is None or vm.certificate is not None or vm.x509_certificate_chain is not None:
        raise VerificationError("bundle is not signed with a managed key", code="malformed_bundle")
    ms = inner.message_signature
    if ms is None:
        raise UnsupportedFormat("unsupported format: key-signed DSSE bundles are not supported")
    if not vm.tlog_entries or len(vm.tlog_entries) != 1:
        raise VerificationError("expected exactly one transparency log entry", code="tlog_invalid")
    digest = bytes.fromhex(digest_hex)
    if ms.message_digest is not None and ms.message_digest.digest != digest:
        raise VerificationError("bundle message digest differs from the artifact", code="digest_mismatch")
    entry = vm.tlog_entries[0]
    kv = entry.kind_version
    if (kv.kind, kv.version) != ("hashedrekord", "0.0.1"):
        raise UnsupportedFormat(f"unsupported format: {kv.kind[:40]} {kv.version[:20]} entry for a key-signed bundle")
    try:
        key.verify(ms.signature, digest, ec.ECDSA(utils.Prehashed(hashes.SHA256())))
    except InvalidSignature as exc:
        raise VerificationError("signature does not verify with the given key", code="signature_invalid") from exc
    _check_body(entry.canonicalized_body, digest, ms.signature, key, limits)
    try:
        _sigstore_adapter.verify_log_entry(entry, trusted_root)
    except (SigstoreError, ValueError) as exc:  # InvalidBundle (no proof) is a SigstoreError too
        raise VerificationError(f"invalid log entry: {str(exc)[:300]}", code="tlog_invalid") from exc
    # Signing time: RFC 3161 timestamps from trusted TSAs and/or the log's promise.
    times: list[datetime] = []
    tsrs = _timestamps(vm)
    if tsrs:
        if not trusted_root.get_timestamp_authorities():
            raise VerificationError("bundle has timestamps but no TSA is trusted", code="timestamp_invalid")
        for tsr in tsrs:
            when = _sigstore_adapter.timestamp_time(trusted_root, tsr, ms.signature)
            if when is None:
                raise VerificationError("timestamp not signed by a trusted TSA", code="timestamp_invalid")
            times.append(when)
    if entry.integrated_time and entry.inclusion_promise:
        times.append(datetime.fromtimestamp(entry.integrated_time, tz=timezone.utc))
    if not times:
        raise VerificationError("no verified signing time", code="no_verified_time")
    return "managed-key"
