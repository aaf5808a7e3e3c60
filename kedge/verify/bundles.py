"""Reading provenance/bundle files and checking their signatures with sigstore-python.

This is the thin shell around sigstore-python 4.5 (public API only; the few
private members kedge needs are in :mod:`kedge.verify._sigstore_adapter`): it
recognises the input format (Sigstore bundle v0.1-v0.3, PEP 740 attestation or
provenance file, plain DSSE envelope, one document per line of a ``.jsonl``),
converts PEP 740 objects to bundles with pypi-attestations, refuses what cannot
be verified offline with :class:`~kedge.errors.UnsupportedFormat`, and maps
sigstore's exceptions to kedge codes by their type. It never talks to the
network: the ``Verifier`` is built from an explicit ``TrustedRoot``.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, utils
from sigstore.errors import CertValidationError
from sigstore.errors import Error as SigstoreError
from sigstore.errors import VerificationError as SigstoreVerificationError
from sigstore.hashes import Hashed
from sigstore.models import Bundle, InvalidBundle, TrustedRoot
from sigstore.verify import Verifier
from sigstore_models.bundle.v1 import Bundle as BundleModel
from sigstore_models.common.v1 import HashAlgorithm

from kedge.errors import UnsupportedFormat, VerificationError
from kedge.verify import _json, _sigstore_adapter, dsse
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


def _pep740_bundle(att: Any) -> dict[str, Any]:
    """PEP 740 attestation object -> the equivalent Sigstore bundle dict (pypi-attestations)."""
    from pypi_attestations import Attestation

    try:
        bundle = Attestation.model_validate(att).to_bundle()
    except (ValueError, SigstoreError) as exc:  # pydantic, pypi-attestations and sigstore model errors
        raise VerificationError("PEP 740 attestation is malformed", code="malformed_bundle") from exc
    doc: dict[str, Any] = json.loads(bundle.to_json())
    return doc


def _pep740_provenance(doc: dict[str, Any], limits: VerifyLimits) -> list[Candidate]:
    """A PEP 740 provenance object -> one candidate per attestation, with its publisher."""
    from pypi_attestations import Provenance

    raw = doc.get("attestation_bundles")
    if not isinstance(raw, list) or not raw or len(raw) > limits.max_signatures:
        raise VerificationError("PEP 740 provenance has no attestation bundles", code="malformed_bundle")
    for ab in raw:
        atts = ab.get("attestations") if isinstance(ab, dict) else None
        if not isinstance(atts, list) or not atts or len(atts) > limits.max_signatures:
            raise VerificationError("PEP 740 attestation bundle is empty", code="malformed_bundle")
    try:
        prov = Provenance.model_validate(doc)
    except ValueError as exc:  # pydantic's ValidationError: no or an unknown publisher, bad fields
        raise VerificationError("PEP 740 provenance is malformed", code="malformed_bundle") from exc
    out = []
    for ab in prov.attestation_bundles:
        publisher = ab.publisher.model_dump(mode="json")
        for att in ab.attestations:
            out.append(Candidate(FORMAT_PEP740_PROVENANCE, _pep740_bundle(att.model_dump(mode="json")), publisher))
    return out


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
            out.extend(_pep740_provenance(doc, limits))
        elif "verification_material" in doc and "envelope" in doc:
            out.append(Candidate(FORMAT_PEP740_ATTESTATION, _pep740_bundle(doc)))
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


def is_dsse_bundle(doc: dict[str, Any]) -> bool:
    """Whether a Sigstore bundle dict carries a DSSE envelope (else a message signature)."""
    return isinstance(doc.get("dsseEnvelope"), dict)


# --- sigstore-python boundary -------------------------------------------------
#
# Codes come from the type of what failed, never from exception text: kedge's own
# checks (signature over the envelope or digest, the identity policy) run first or
# raise their own types; what is left is told apart by sigstore's exception type.


class PolicyRefused(SigstoreVerificationError):
    """A kedge ``VerificationPolicy`` refused the signing certificate; carries the code."""

    def __init__(self, message: str, *, code: str) -> None:
        super().__init__(message)
        self.code = code


class CodedPolicy:
    """Wrap a sigstore ``VerificationPolicy`` so that its refusal carries ``code``."""

    def __init__(self, inner: Any, code: str) -> None:
        self._wrapped = inner
        self._code = code

    def verify(self, cert: x509.Certificate) -> None:
        try:
            self._wrapped.verify(cert)
        except PolicyRefused:
            raise
        except SigstoreVerificationError as exc:
            raise PolicyRefused(f"signing certificate refused: {exc}", code=self._code) from exc


class IssuerPolicy:
    """A sigstore ``VerificationPolicy``: the certificate's OIDC issuer must be ``issuer``.

    The builder identity is checked afterwards by :mod:`kedge.verify.policy`,
    which needs the whole certificate rather than one expected value.
    """

    def __init__(self, issuer: str) -> None:
        self._issuer = issuer

    def verify(self, cert: x509.Certificate) -> None:
        from kedge.verify.fulcio import identity_from_certificate

        try:
            ident = identity_from_certificate(cert)
        except VerificationError as exc:
            raise PolicyRefused(f"certificate malformed: {exc}", code="certificate_malformed") from exc
        if ident.issuer != self._issuer:
            raise PolicyRefused(
                f"certificate's OIDC issuer {ident.issuer[:200]!r} is not {self._issuer!r}",
                code="oidc_issuer_mismatch",
            )


#: sigstore-python's exception types -> kedge codes, most specific first.
_TYPE_CODES: tuple[tuple[type[Exception], str], ...] = (
    (CertValidationError, "certificate_chain_invalid"),
    (InvalidBundle, "malformed_bundle"),
    (SigstoreVerificationError, "bundle_verification_failed"),
    (SigstoreError, "bundle_verification_failed"),
)
#: What sigstore-python may raise from a verification besides its own errors
#: (malformed data met deep inside it).
_FOREIGN = (SigstoreError, ValueError, TypeError, KeyError, IndexError)


def code_for(exc: BaseException) -> str:
    """The kedge code for an exception raised by sigstore-python, by type."""
    if isinstance(exc, PolicyRefused):
        return exc.code
    for kind, code in _TYPE_CODES:
        if isinstance(exc, kind):
            return code
    return "bundle_verification_failed"


def _wrap(exc: Exception) -> VerificationError:
    return VerificationError(f"Sigstore verification failed: {str(exc)[:500]}", code=code_for(exc))


def parse_bundle(doc: dict[str, Any]) -> Bundle:
    """sigstore ``Bundle`` from a bundle dict; malformed bundles -> ``malformed_bundle``."""
    try:
        return Bundle.from_json(json.dumps(doc))
    except _FOREIGN as exc:
        raise VerificationError("Sigstore bundle is malformed", code="malformed_bundle") from exc


def make_verifier(trusted_root: TrustedRoot) -> Verifier:
    """An offline sigstore-python ``Verifier`` over ``trusted_root`` (see the adapter)."""
    return _sigstore_adapter.make_verifier(trusted_root)


def _leaf_ec_key(cert: x509.Certificate) -> ec.EllipticCurvePublicKey | None:
    """The signing certificate's EC key; None for another key type (sigstore-python refuses those)."""
    try:
        key = cert.public_key()
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise VerificationError("signing certificate's public key is malformed", code="certificate_malformed") from exc
    return key if isinstance(key, ec.EllipticCurvePublicKey) else None


def _check_dsse_signature(doc: dict[str, Any], cert: x509.Certificate, limits: VerifyLimits) -> None:
    """The envelope's one signature must verify with the signing certificate's key.

    sigstore-python checks this too, after the certificate; checking it first
    gives an edited or swapped envelope its own code. Passing here trusts nothing.
    """
    env = dsse.envelope_from_dict(doc.get("dsseEnvelope"), limits)
    key = _leaf_ec_key(cert)
    if key is None:
        return
    if len(env["signatures"]) != 1:
        raise VerificationError("a bundle's DSSE envelope must hold exactly one signature", code="dsse_bad_signature")
    message = dsse.pae(env["payloadType"], dsse.b64decode(env["payload"], "DSSE payload"))
    signature = dsse.b64decode(env["signatures"][0]["sig"], "DSSE signature")
    try:
        key.verify(signature, message, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature as exc:
        raise VerificationError(
            "DSSE signature does not verify with the signing certificate's key", code="dsse_bad_signature"
        ) from exc


def verify_bundle_dsse(
    doc: dict[str, Any], trusted_root: TrustedRoot, policy: Any, limits: VerifyLimits = DEFAULT
) -> tuple[x509.Certificate, str, bytes]:
    """Signature, log proof, signing time and chain; returns (cert, payload_type, payload)."""
    if not is_dsse_bundle(doc):
        raise VerificationError("bundle holds no DSSE envelope", code="malformed_bundle")
    bundle = parse_bundle(doc)
    _check_dsse_signature(doc, bundle.signing_certificate, limits)
    try:
        payload_type, payload = make_verifier(trusted_root).verify_dsse(bundle, policy)
    except _FOREIGN as exc:
        raise _wrap(exc) from exc
    return bundle.signing_certificate, payload_type, payload


def _check_message_signature(doc: dict[str, Any], cert: x509.Certificate, digest: bytes) -> None:
    """The bundle's recorded digest and its signature over ``digest`` (SHA-256), checked first."""
    try:
        inner = BundleModel.from_json(json.dumps(doc))
    except _FOREIGN as exc:
        raise VerificationError("Sigstore bundle is malformed", code="malformed_bundle") from exc
    ms = inner.message_signature
    if ms is None:
        raise VerificationError("bundle holds no message signature", code="malformed_bundle")
    if ms.message_digest is not None and ms.message_digest.digest != digest:
        raise VerificationError("bundle message digest differs from the artifact", code="digest_mismatch")
    key = _leaf_ec_key(cert)
    if key is None:
        return
    try:
        key.verify(ms.signature, digest, ec.ECDSA(utils.Prehashed(hashes.SHA256())))
    except InvalidSignature as exc:
        raise VerificationError("signature does not verify over the artifact", code="signature_invalid") from exc


def verify_bundle_artifact(doc: dict[str, Any], digest: bytes, trusted_root: TrustedRoot, policy: Any) -> None:
    """hashedrekord path: the bundle's message signature over the artifact's SHA-256 ``digest``."""
    bundle = parse_bundle(doc)
    _check_message_signature(doc, bundle.signing_certificate, digest)
    hashed = Hashed(algorithm=HashAlgorithm.SHA2_256, digest=digest)
    try:
        make_verifier(trusted_root).verify_artifact(hashed, bundle, policy)
    except _FOREIGN as exc:
        raise _wrap(exc) from exc
