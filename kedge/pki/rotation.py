"""CA rotation decisions, as pure functions: cross-certificates, the trust bundle an edge may
accept, and the rotation record.

A rotation replaces the cluster CA without downtime (``kedge ca rotate`` / ``finish``):

* the next CA is a new self-signed root with a *different* subject (``kedge-ca-<generation>``),
  so chain building, CRL issuer matching and "which CA issued this" never confuse the two;
* it is **cross-certified** both ways: a certificate for the new CA's subject and key signed
  by the old CA key, and one for the old CA signed by the new key. They are never trust
  anchors; they are the evidence an edge checks before it trusts a CA it did not pin;
* while both are trusted, verifiers load the **trust bundle** (issuing CA first, then the
  previous one); after ``finish`` it holds the new CA alone.

An edge replaces its pinned ``ca.crt`` only with a bundle that passes :func:`accept_bundle`:
every CA in it is either one the edge already trusts or is vouched for by a cross-certificate
that a CA the edge already trusts signed, and at least one already trusted CA stays. A joining
edge runs the same check with the CA its token pins as the only trusted one.

Nothing here reads the clock or touches files: ``now`` is a parameter.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import re
from collections.abc import Sequence
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from kedge.errors import StateError, VerificationError
from kedge.limits import CA_BUNDLE_MAX_BYTES, CA_BUNDLE_MAX_CERTS
from kedge.pki import ca as pki

__all__ = [
    "BundleError",
    "PHASES",
    "RotationRecord",
    "accept_bundle",
    "accept_bundle_pem",
    "ca_name",
    "cross_certify",
    "issuer_of",
    "same_cert",
]

#: ``none``: one CA, never rotated; ``rotating``: two CAs trusted, the new one issues;
#: ``finished``: the previous CA was dropped.
PHASES = ("none", "rotating", "finished")

_GENERATION_RE = re.compile(r"kedge-ca(?:-([1-9][0-9]{0,8}))?")


class BundleError(VerificationError):
    """A CA bundle offered to an edge was refused.

    Codes: ``bundle_empty``, ``bundle_too_large``, ``bundle_not_ca``, ``bundle_unvouched``,
    ``bundle_drops_trust``, ``bundle_malformed``.
    """

    code = "bundle_malformed"


def _der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def _spki(cert: x509.Certificate) -> bytes:
    return cert.public_key().public_bytes(serialization.Encoding.DER,
                                          serialization.PublicFormat.SubjectPublicKeyInfo)


def same_cert(a: x509.Certificate, b: x509.Certificate) -> bool:
    return _der(a) == _der(b)


def ca_name(previous: x509.Certificate) -> str:
    """The subject CN of the CA that follows ``previous``: ``kedge-ca`` -> ``kedge-ca-2`` -> ``-3``."""
    cns = previous.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    value = cns[0].value if len(cns) == 1 else ""
    match = _GENERATION_RE.fullmatch(value) if isinstance(value, str) else None
    generation = int(match.group(1) or 1) if match else 1
    return f"kedge-ca-{generation + 1}"


def _signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True


def issuer_of(cert: x509.Certificate, cas: Sequence[x509.Certificate]) -> x509.Certificate | None:
    """The CA among ``cas`` whose key signed ``cert`` (name and signature checked), or None."""
    for ca in cas:
        if _signed_by(cert, ca):
            return ca
    return None


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except (x509.ExtensionNotFound, ValueError):
        return False
    return bool(bc.ca and ku.key_cert_sign)


def _current(cert: x509.Certificate, now: _dt.datetime) -> bool:
    return cert.not_valid_before_utc - pki.SKEW <= now < cert.not_valid_after_utc


def cross_certify(
    issuer_key: pki.PrivateKey,
    issuer_cert: x509.Certificate,
    subject_cert: x509.Certificate,
    *,
    now: _dt.datetime,
) -> x509.Certificate:
    """``subject_cert``'s subject and key, certified by ``issuer_key``: the evidence that the
    holder of ``issuer_cert``'s key vouches for that CA. Valid from ``now`` until the earlier of
    the two CAs' expiry; a CA certificate (pathlen 0), so it can only ever vouch for a CA."""
    pki._check_ca_pair(issuer_key, issuer_cert)
    now = pki._utc(now)
    not_after = min(issuer_cert.not_valid_after_utc, subject_cert.not_valid_after_utc)
    if not_after <= now:
        raise StateError("a CA to cross-certify has expired", code="ca_expired")
    pub = subject_cert.public_key()
    if not isinstance(pub, (ec.EllipticCurvePublicKey, rsa.RSAPublicKey)):
        raise StateError("the CA's key is neither EC nor RSA", code="ca_bad_key")
    return (
        x509.CertificateBuilder()
        .subject_name(subject_cert.subject)
        .issuer_name(issuer_cert.subject)
        .public_key(pub)
        .serial_number(x509.random_serial_number())
        .not_valid_before(max(now - pki.SKEW, issuer_cert.not_valid_before_utc))
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                          data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                          encipher_only=False, decipher_only=False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(pub), critical=False)
        .add_extension(pki._ca_ski(issuer_cert), critical=False)
        .sign(issuer_key, pki._sign_alg(issuer_key))
    )


def _vouched(candidate: x509.Certificate, trusted: Sequence[x509.Certificate],
             cross: Sequence[x509.Certificate], now: _dt.datetime) -> bool:
    """Whether a cross-certificate signed by a trusted CA certifies ``candidate``'s subject and key."""
    subject, spki = candidate.subject, _spki(candidate)
    for c in cross:
        if c.subject != subject or _spki(c) != spki or not _is_ca(c) or not _current(c, now):
            continue
        if any(_signed_by(c, t) for t in trusted):
            return True
    return False


def accept_bundle(
    trusted: Sequence[x509.Certificate],
    offered: Sequence[x509.Certificate],
    cross: Sequence[x509.Certificate] = (),
    *,
    now: _dt.datetime,
    max_certs: int = CA_BUNDLE_MAX_CERTS,
) -> list[x509.Certificate]:
    """The bundle an edge that trusts ``trusted`` may install instead, or :class:`BundleError`.

    ``offered`` must hold 1..``max_certs`` self-signed CA certificates, current at ``now``,
    without duplicates; at least one of them must be trusted already (a bundle never replaces
    the edge's root of trust wholesale); every other one must be vouched for by a current CA
    cross-certificate in ``cross`` that a trusted CA signed for exactly its subject and key.
    Dropping a trusted CA is allowed (that is how ``finish`` retires the old one).
    """
    now = pki._utc(now)
    if not offered:
        raise BundleError("the CA bundle is empty", code="bundle_empty")
    if len(offered) > max_certs or len(cross) > max_certs:
        raise BundleError("the CA bundle holds too many certificates", code="bundle_too_large")
    if not trusted:
        raise BundleError("nothing is trusted to vouch for a bundle", code="bundle_unvouched")
    trusted_der = {_der(t) for t in trusted}
    seen: set[bytes] = set()
    kept_one = False
    for cert in offered:
        der = _der(cert)
        if der in seen:
            raise BundleError("the CA bundle repeats a certificate", code="bundle_malformed")
        seen.add(der)
        if not _is_ca(cert) or not _signed_by(cert, cert) or not _current(cert, now):
            raise BundleError("the CA bundle holds a certificate that is not a current self-signed CA",
                              code="bundle_not_ca")
        if der in trusted_der:
            kept_one = True
        elif not _vouched(cert, trusted, cross, now):
            raise BundleError("the CA bundle holds a CA no trusted CA vouches for", code="bundle_unvouched")
    if not kept_one:
        raise BundleError("the CA bundle drops every CA this node trusts", code="bundle_drops_trust")
    return list(offered)


def accept_bundle_pem(trusted_pem: bytes, bundle_pem: bytes, cross_pem: bytes, *, now: _dt.datetime) -> bytes:
    """:func:`accept_bundle` over PEM (bounded by ``CA_BUNDLE_MAX_BYTES``): the PEM to pin
    instead of ``trusted_pem``, or :class:`BundleError`."""
    if len(bundle_pem) + len(cross_pem) > CA_BUNDLE_MAX_BYTES:
        raise BundleError("CA bundle too large", code="bundle_too_large")
    try:
        trusted = pki.load_cert_bundle_pem(trusted_pem)
        offered = pki.load_cert_bundle_pem(bundle_pem)
        cross = pki.load_cert_bundle_pem(cross_pem) if cross_pem.strip() else []
    except pki.PemError as exc:
        raise BundleError("the CA bundle is not PEM certificates", code="bundle_malformed") from exc
    accepted = accept_bundle(trusted, offered, cross, now=now)
    return b"".join(pki.cert_to_pem(c) for c in accepted)


@dataclasses.dataclass(frozen=True)
class RotationRecord:
    """``DIR/pki/rotation.json``: where a cluster CA rotation stands.

    ``current``/``previous`` are CA fingerprints (:func:`kedge.pki.ca.ca_fingerprint`);
    ``previous`` is empty outside ``rotating``. ``renew_now`` asks cloudcore to make every
    edge still on the previous CA renew at once; ``renew_requested`` counts such requests so
    a repeated ``rotate --renew-now`` is seen as new.
    """

    phase: str = "none"
    current: str = ""
    previous: str = ""
    started_at: str = ""
    finished_at: str = ""
    renew_now: bool = False
    renew_requested: int = 0

    def __post_init__(self) -> None:
        if self.phase not in PHASES:
            raise StateError(f"unknown rotation phase {self.phase!r}", code="corrupt_state")
        for name in ("current", "previous", "started_at", "finished_at"):
            if not isinstance(getattr(self, name), str):
                raise StateError(f"rotation record field {name} must be a string", code="corrupt_state")
        if not isinstance(self.renew_now, bool) or not isinstance(self.renew_requested, int) \
                or isinstance(self.renew_requested, bool) or self.renew_requested < 0:
            raise StateError("rotation record renew fields are malformed", code="corrupt_state")
        if self.phase == "rotating" and not self.previous:
            raise StateError("a rotation in progress must name the previous CA", code="corrupt_state")

    @classmethod
    def from_dict(cls, data: Any) -> "RotationRecord":
        if not isinstance(data, dict):
            raise StateError("the rotation record must be a JSON object", code="corrupt_state")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise StateError(f"unknown keys in the rotation record: {sorted(unknown)}", code="corrupt_state")
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
