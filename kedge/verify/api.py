"""``kedge verify`` and ``kedge conformance verify-bundle`` as plain functions.

The CLI module only parses flags and prints; everything it decides comes from
here. Order of work: bound and parse the file, refuse unsupported formats, check
signatures/log proof/certificate chain (sigstore-python, pinned root), then the
SLSA policy (:mod:`kedge.verify.policy`). Nothing is trusted before its
signature is checked, and no network is used.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from kedge.errors import ConfigError, UnsupportedFormat, VerificationError
from kedge.verify import bundles, dsse, policy
from kedge.verify._limits import DEFAULT, VerifyLimits
from kedge.verify.fulcio import GITHUB_ACTIONS_ISSUER, identity_from_certificate
from kedge.verify.provenance import Statement
from kedge.verify.trust import load_trusted_root, read_bounded

_DIGEST_ARG = re.compile(r"sha256:([0-9a-fA-F]{64})")
_CHUNK = 1024 * 1024


def artifact_digest(arg: str) -> str:
    """``sha256:HEX`` or a file path -> lowercase hex SHA-256 (file hashed in chunks)."""
    m = _DIGEST_ARG.fullmatch(arg)
    if m:
        return m.group(1).lower()
    if arg.startswith("sha256:"):
        raise ConfigError("artifact digest must be sha256: followed by 64 hex characters", code="bad_digest")
    h = hashlib.sha256()
    try:
        with open(arg, "rb") as fh:
            while chunk := fh.read(_CHUNK):
                h.update(chunk)
    except FileNotFoundError as exc:
        raise ConfigError(f"artifact {arg} does not exist", code="file_not_found") from exc
    except IsADirectoryError as exc:
        raise ConfigError(f"artifact {arg} is a directory", code="file_not_found") from exc
    except OSError as exc:
        raise ConfigError(f"cannot read artifact {arg}", code="file_unreadable") from exc
    return h.hexdigest()


def load_public_key(path: str | Path, limits: VerifyLimits = DEFAULT) -> ec.EllipticCurvePublicKey:
    data = read_bounded(path, limits.max_key_bytes, "public key")
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise ConfigError("public key is not a PEM public key", code="bad_key") from exc
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise ConfigError("public key must be ECDSA P-256", code="bad_key")
    return key


@dataclasses.dataclass(frozen=True)
class VerifyOutcome:
    result: policy.VerifiedProvenance
    statement: bytes
    fmt: str


def _verify_candidate(
    cand: bundles.Candidate,
    opts: policy.SlsaOptions,
    key: ec.EllipticCurvePublicKey | None,
    root_getter: Any,
    limits: VerifyLimits,
) -> VerifyOutcome:
    bundles.refuse_unsupported(cand, have_key=key is not None)
    if key is not None:
        env_doc = cand.doc if cand.fmt == bundles.FORMAT_DSSE else cand.doc.get("dsseEnvelope")
        env = dsse.envelope_from_dict(env_doc, limits)
        payload = dsse.verify_envelope(env, key)
        stmt = Statement.from_payload(payload, limits)
        result = policy.evaluate(None, env["payloadType"], stmt, opts)
        return VerifyOutcome(result, payload, cand.fmt)
    cert, payload_type, payload = bundles.verify_bundle_dsse(
        cand.doc, root_getter(), bundles.IssuerPolicy(GITHUB_ACTIONS_ISSUER), limits
    )
    identity = identity_from_certificate(cert)
    stmt = Statement.from_payload(payload, limits)
    result = policy.evaluate(identity, payload_type, stmt, opts, publisher=cand.publisher)
    return VerifyOutcome(result, payload, cand.fmt)


def verify_provenance(
    provenance: bytes,
    opts: policy.SlsaOptions,
    *,
    trusted_root: str | Path | None = None,
    key: ec.EllipticCurvePublicKey | None = None,
    limits: VerifyLimits = DEFAULT,
) -> VerifyOutcome:
    """Verify ``provenance`` (file bytes) for the artifact and expectations in ``opts``.

    A file may hold several signed objects (``.jsonl`` lines, PEP 740 bundles);
    the first that passes every check wins, otherwise the first failure is raised.
    """
    cands = bundles.candidates(bundles.load_documents(provenance, limits), limits)
    cache: list[Any] = []

    def root_getter() -> Any:
        if not cache:
            cache.append(load_trusted_root(trusted_root, limits))
        return cache[0]

    first: VerificationError | None = None
    for cand in cands:
        try:
            return _verify_candidate(cand, opts, key, root_getter, limits)
        except UnsupportedFormat:
            raise
        except VerificationError as exc:
            if first is None:
                first = exc
    if first is None:  # cannot happen: candidates() never returns an empty list
        raise VerificationError("no signed object in provenance file", code="malformed_bundle")
    raise first


def verify_provenance_file(path: str | Path, opts: policy.SlsaOptions, **kwargs: Any) -> VerifyOutcome:
    limits = kwargs.get("limits", DEFAULT)
    return verify_provenance(read_bounded(path, limits.max_file_bytes, "provenance"), opts, **kwargs)


# --- sigstore-conformance ---------------------------------------------------------


def conformance_verify(
    bundle_bytes: bytes,
    digest_hex: str,
    *,
    identity: str | None = None,
    issuer: str | None = None,
    key: ec.EllipticCurvePublicKey | None = None,
    trusted_root: str | Path | None = None,
    limits: VerifyLimits = DEFAULT,
) -> str:
    """Verify one bundle against an identity+issuer (or a key). Returns a short description."""
    from sigstore.verify.policy import Identity

    docs = bundles.load_documents(bundle_bytes, limits)
    if len(docs) != 1:
        raise VerificationError("expected exactly one bundle", code="malformed_bundle")
    cands = bundles.candidates(docs, limits)
    if len(cands) != 1 or cands[0].fmt == bundles.FORMAT_DSSE:
        raise VerificationError("expected exactly one Sigstore bundle", code="malformed_bundle")
    cand = cands[0]
    bundles.refuse_unsupported(cand, have_key=key is not None)
    root = load_trusted_root(trusted_root, limits)
    if key is not None:
        from kedge.verify import managed_key

        return managed_key.verify(cand.doc, digest_hex, key, root, limits)
    if not identity or not issuer:
        raise ConfigError("need --certificate-identity and --certificate-oidc-issuer, or --key", code="usage")
    pol = bundles.CodedPolicy(Identity(identity=identity, issuer=issuer), "identity_mismatch")
    if bundles.is_dsse_bundle(cand.doc):
        _cert, payload_type, payload = bundles.verify_bundle_dsse(cand.doc, root, pol, limits)
        if payload_type != dsse.INTOTO_PAYLOAD_TYPE:
            raise VerificationError("DSSE payload is not an in-toto statement", code="payload_type_invalid")
        stmt = Statement.from_payload(payload, limits)
        if not stmt.has_sha256(digest_hex):
            raise VerificationError("artifact digest is not a subject of the statement", code="digest_mismatch")
        return "dsse"
    bundles.verify_bundle_artifact(cand.doc, bytes.fromhex(digest_hex), root, pol)
    return "message-signature"
