"""Reading provenance/bundle files and checking their signatures with sigstore-python.

This is the thin shell around sigstore-python 4.5.1: it recognises the input
format (Sigstore bundle v0.1-v0.3, PEP 740 attestation or provenance file, plain
DSSE envelope, one document per line of a ``.jsonl``), converts PEP 740 objects
to v0.3 bundles, refuses what cannot be verified offline with
:class:`~kedge.errors.UnsupportedFormat`, and maps sigstore's exceptions to
kedge codes. It never talks to the network: the ``Verifier`` is built from an
explicit ``TrustedRoot``.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from kedge.errors import UnsupportedFormat, VerificationError
from kedge.verify import _json
from kedge.verify._limits import DEFAULT, VerifyLimits

BUNDLE_MEDIA_PREFIX = "application/vnd.dev.sigstore.bundle"
FORMAT_BUNDLE = "sigstore-bundle"
FORMAT_PEP740_ATTESTATION = "pep740-attestation"
FORMAT_PEP740_PROVENANCE = "pep740-provenance"
FORMAT_DSSE = "dsse-envelope"


@dataclasses.dataclass(frozen=True)
class Candidate:
    """One signed object found in a provenance file, normalised to a bundle dict or envelope."""

    fmt: str
    doc: dict[str, Any]
    publisher: dict[str, Any] | None = None


def load_documents(data: bytes, limits: VerifyLimits = DEFAULT) -> list[Any]:
    """One JSON document, or one per non-empty line (bounded) for ``.jsonl`` files."""
    if len(data) > limits.max_file_bytes:
        raise VerificationError("provenance file too large", code="limit_exceeded")
    try:
        return [_json.loads(data, limits)]
    except VerificationError as exc:
        if exc.code != "malformed_json":
            raise
        first_error = exc
    lines = [line for line in data.splitlines() if line.strip()]
    if len(lines) < 2:
        raise first_error
    if len(lines) > limits.max_lines:
        raise VerificationError("too many lines in provenance file", code="limit_exceeded")
    return [_json.loads(line, limits) for line in lines]


def _pep740_to_bundle(att: Any) -> dict[str, Any]:
    """PEP 740 attestation object -> equivalent Sigstore bundle v0.3 (DSSE) dict."""
    if not isinstance(att, dict) or att.get("version") != 1:
        raise VerificationError("unsupported PEP 740 attestation version", code="malformed_bundle")
    vm = att.get("verification_material")
    env = att.get("envelope")
    if not isinstance(vm, dict) or not isinstance(env, dict):
        raise VerificationError("PEP 740 attestation lacks material or envelope", code="malformed_bundle")
    cert = vm.get("certificate")
    entries = vm.get("transparency_entries")
    statement = env.get("statement")
    signature = env.get("signature")
    if not all(isinstance(x, str) for x in (cert, statement, signature)) or not isinstance(entries, list):
        raise VerificationError("PEP 740 attestation fields malformed", code="malformed_bundle")
    return {
        "mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
        "verificationMaterial": {"certificate": {"rawBytes": cert}, "tlogEntries": entries},
        "dsseEnvelope": {
            "payload": statement,
            "payloadType": "application/vnd.in-toto+json",
            "signatures": [{"sig": signature}],
        },
    }


def candidates(docs: list[Any], limits: VerifyLimits = DEFAULT) -> list[Candidate]:
    """Classify every document; anything unrecognised is refused."""
    out: list[Candidate] = []
    for doc in docs:
        if not isinstance(doc, dict):
            raise VerificationError("provenance document is not a JSON object", code="malformed_bundle")
        media = doc.get("mediaType")
        if isinstance(media, str) and media.startswith(BUNDLE_MEDIA_PREFIX):
            out.append(Candidate(FORMAT_BUNDLE, doc))
        elif "attestation_bundles" in doc:
            bundles = doc.get("attestation_bundles")
            if not isinstance(bundles, list) or not bundles or len(bundles) > limits.max_signatures:
                raise VerificationError("PEP 740 provenance has no attestation bundles", code="malformed_bundle")
            for ab in bundles:
                atts = ab.get("attestations") if isinstance(ab, dict) else None
                publisher = ab.get("publisher") if isinstance(ab, dict) else None
                if not isinstance(atts, list) or not atts or len(atts) > limits.max_signatures:
                    raise VerificationError("PEP 740 attestation bundle is empty", code="malformed_bundle")
                if not isinstance(publisher, dict):
                    raise VerificationError("PEP 740 attestation bundle has no publisher", code="malformed_bundle")
                out.extend(Candidate(FORMAT_PEP740_PROVENANCE, _pep740_to_bundle(a), publisher) for a in atts)
        elif "verification_material" in doc and "envelope" in doc:
            out.append(Candidate(FORMAT_PEP740_ATTESTATION, _pep740_to_bundle(doc)))
        elif "payloadType" in doc and "signatures" in doc:
            out.append(Candidate(FORMAT_DSSE, doc))
        else:
            raise VerificationError("unrecognised provenance format", code="malformed_bundle")
    if not out:
        raise VerificationError("provenance file is empty", code="malformed_bundle")
    if len(out) > limits.max_lines:
        raise VerificationError("too many signed objects", code="limit_exceeded")
    return out


def refuse_unsupported(cand: Candidate, *, have_key: bool) -> None:
    """Raise UnsupportedFormat for inputs that cannot be verified offline."""
    if cand.fmt == FORMAT_DSSE and not have_key:
        raise UnsupportedFormat(
            "unsupported format: legacy DSSE envelope without an embedded transparency-log proof "
            "(verifying it needs an online Rekor lookup; use --key for key-signed envelopes)"
        )
    if cand.fmt != FORMAT_DSSE:
        vm = cand.doc.get("verificationMaterial")
        entries = vm.get("tlogEntries") if isinstance(vm, dict) else None
        for entry in entries if isinstance(entries, list) else []:
            kv = entry.get("kindVersion") if isinstance(entry, dict) else None
            if isinstance(kv, dict) and kv.get("kind") == "intoto":
                raise UnsupportedFormat(
                    f"unsupported format: Rekor intoto {str(kv.get('version'))[:20]} log entry "
                    "(its body omits the payload; kedge verifies dsse/hashedrekord entries only)"
                )


# --- sigstore-python boundary -------------------------------------------------

_MESSAGE_CODES = (
    ("OIDC issuer", "oidc_issuer_mismatch"),
    ("DSSE", "dsse_bad_signature"),
    ("Signature is invalid", "signature_invalid"),
    ("message digest mismatch", "digest_mismatch"),
    ("certificate chain", "certificate_chain_invalid"),
    ("expired at time of signing", "certificate_expired_at_signing"),
    ("SCT", "sct_invalid"),
    ("verified time", "no_verified_time"),
    ("Timestamp", "timestamp_invalid"),
    ("timestamp", "timestamp_invalid"),
    ("log entry", "tlog_invalid"),
    ("inclusion", "tlog_invalid"),
    ("checkpoint", "tlog_invalid"),
    ("Certificate's", "identity_mismatch"),
    ("Identity", "identity_mismatch"),
    ("issuer", "identity_mismatch"),
)


def _code_for(message: str) -> str:
    for needle, code in _MESSAGE_CODES:
        if needle in message:
            return code
    return "bundle_verification_failed"


def parse_bundle(doc: dict[str, Any]):  # type: ignore[no-untyped-def]
    """sigstore ``Bundle`` from a bundle dict; malformed bundles -> ``malformed_bundle``."""
    from sigstore.errors import Error as SigstoreError
    from sigstore.models import Bundle

    try:
        return Bundle.from_json(json.dumps(doc))
    except (SigstoreError, ValueError, TypeError, KeyError, IndexError) as exc:
        raise VerificationError("Sigstore bundle is malformed", code="malformed_bundle") from exc


def _wrap(exc: Exception) -> VerificationError:
    message = str(exc)[:500]
    return VerificationError(f"Sigstore verification failed: {message}", code=_code_for(message))


def make_verifier(trusted_root):  # type: ignore[no-untyped-def]
    """A sigstore-python ``Verifier`` whose TSA validity window is a closed interval.

    The trusted-root spec defines ``validFor`` as a closed time range, but
    sigstore-python 4.5.1 rejects a timestamp equal to a TSA's ``validFor.end``
    (sigstore-conformance ``trust-root-tsa-validity-end-inclusive``). Only that
    one comparison differs; the timestamp's signature and chain are still checked
    by rfc3161-client against the trusted root's TSA certificates.
    """
    from rfc3161_client import VerificationError as Rfc3161VerificationError
    from rfc3161_client import VerifierBuilder
    from sigstore._internal.timestamp import TimestampSource, TimestampVerificationResult
    from sigstore.verify import Verifier

    class _ClosedRangeTsaVerifier(Verifier):
        def _verify_signed_timestamp(self, timestamp_response, message):  # type: ignore[no-untyped-def]
            when = timestamp_response.tst_info.gen_time
            for authority in self._trusted_root.get_timestamp_authorities():
                chain = authority.certificates(allow_expired=True)
                if len(chain) < 2:  # need at least the TSA leaf and a root
                    continue
                builder = VerifierBuilder().tsa_certificate(chain[0]).add_root_certificate(chain[-1])
                for intermediate in chain[1:-1]:
                    builder = builder.add_intermediate_certificate(intermediate)
                try:
                    builder.build().verify_message(timestamp_response, message)
                except Rfc3161VerificationError:
                    continue
                start, end = authority.validity_period_start, authority.validity_period_end
                if start <= when and (end is None or when <= end):
                    return TimestampVerificationResult(source=TimestampSource.TIMESTAMP_AUTHORITY, time=when)
            return None

    return _ClosedRangeTsaVerifier(trusted_root=trusted_root)


def verify_bundle_dsse(bundle, trusted_root, policy):  # type: ignore[no-untyped-def]
    """Signature, log proof, signing time and chain; returns (cert, payload_type, payload)."""
    from sigstore.errors import Error as SigstoreError

    if bundle._dsse_envelope is None:
        raise VerificationError("bundle holds no DSSE envelope", code="malformed_bundle")
    try:
        verifier = make_verifier(trusted_root)
        payload_type, payload = verifier.verify_dsse(bundle, policy)
    except (SigstoreError, ValueError, TypeError, KeyError, IndexError) as exc:
        raise _wrap(exc) from exc
    return bundle.signing_certificate, payload_type, payload


def verify_bundle_artifact(bundle, hashed, trusted_root, policy) -> None:  # type: ignore[no-untyped-def]
    """hashedrekord path: the bundle's message signature over the artifact digest."""
    from sigstore.errors import Error as SigstoreError

    try:
        verifier = make_verifier(trusted_root)
        verifier.verify_artifact(hashed, bundle, policy)
    except (SigstoreError, ValueError, TypeError, KeyError, IndexError) as exc:
        raise _wrap(exc) from exc


class IssuerPolicy:
    """A sigstore ``VerificationPolicy``: the certificate's OIDC issuer must be ``issuer``.

    The builder identity is checked afterwards by :mod:`kedge.verify.policy`,
    which needs the whole certificate rather than one expected value.
    """

    def __init__(self, issuer: str) -> None:
        self._issuer = issuer

    def verify(self, cert) -> None:  # type: ignore[no-untyped-def]
        from sigstore.errors import VerificationError as SigstoreVerificationError

        from kedge.verify.fulcio import identity_from_certificate

        try:
            ident = identity_from_certificate(cert)
        except VerificationError as exc:
            raise SigstoreVerificationError(f"certificate malformed: {exc}") from exc
        if ident.issuer != self._issuer:
            raise SigstoreVerificationError(f"Certificate's OIDC issuer {ident.issuer!r} is not {self._issuer!r}")
