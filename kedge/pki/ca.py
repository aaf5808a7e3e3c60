"""Cluster CA and certificate decisions, as pure functions over ``cryptography``.

Nothing here reads the clock, touches the network or writes files: every function
takes ``now`` (a timezone-aware datetime) and returns objects. That keeps the
decisions that matter -- *what* a certificate says -- testable and fuzzable.

The central hardening versus KubeEdge is :func:`sign_node_csr`: the certificate a
joining or renewing edge receives is decided by the server from the node name the
caller authenticated (bootstrap token or current client certificate). The CSR only
contributes a public key, and only after it proved possession of the private key.
Its subject, SANs and requested extensions are ignored entirely.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import ipaddress
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Union

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from kedge._internal import fsutil
from kedge.errors import AuthenticationError, ConfigError, PeerError, StateError
from kedge.limits import CSR_MAX_RSA_BITS, MAX_CSR_BYTES

__all__ = [
    "CsrError",
    "PemError",
    "NODE_GROUP",
    "NODE_PREFIX",
    "build_crl",
    "check_node_csr",
    "ca_fingerprint",
    "cert_to_pem",
    "create_ca",
    "generate_key",
    "issue_client_cert",
    "issue_server_cert",
    "key_to_pem",
    "load_cert_bundle_file",
    "load_cert_bundle_pem",
    "load_cert_file",
    "load_cert_pem",
    "load_key_file",
    "load_key_pem",
    "make_csr",
    "node_name_from_cert",
    "sign_node_csr",
    "validate_node_name",
]

PrivateKey = Union[ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey]
PublicKey = Union[ec.EllipticCurvePublicKey, rsa.RSAPublicKey]

NODE_PREFIX = "system:node:"
NODE_GROUP = "system:nodes"

#: Clock-skew allowance: certificates become valid this long before ``now`` so an
#: edge whose clock lags a little can use a certificate it has just received.
SKEW = _dt.timedelta(seconds=60)

#: Bound for key and certificate files we read from disk (a cert bundle is a few KiB).
MAX_PEM_FILE_BYTES = 1024 * 1024

#: Smallest RSA modulus accepted in a CSR; the largest (kedge.limits) keeps a peer from making
#: us do arbitrarily expensive big-number work.
MIN_RSA_BITS = 2048
MAX_RSA_BITS = CSR_MAX_RSA_BITS

_ACCEPTED_CURVES = (ec.SECP256R1, ec.SECP384R1)
_ACCEPTED_CSR_HASHES = (hashes.SHA256, hashes.SHA384, hashes.SHA512)

# Kubernetes node names are DNS-1123 subdomains (IsDNS1123Subdomain): lower-case
# alphanumerics, '-' and '.', starting and ending alphanumeric, at most 253 chars.
_DNS1123_LABEL = r"[a-z0-9](?:[-a-z0-9]*[a-z0-9])?"
_DNS1123_SUBDOMAIN = re.compile(rf"{_DNS1123_LABEL}(?:\.{_DNS1123_LABEL})*", re.ASCII)
_MAX_NODE_NAME = 253

# SAN DNS names: letters, digits, '-', '.', optional leading "*." wildcard label.
_DNS_SAN = re.compile(r"(?:\*\.)?[A-Za-z0-9](?:[-A-Za-z0-9.]*[A-Za-z0-9])?", re.ASCII)


class CsrError(PeerError):
    """A node's certificate signing request was refused.

    Codes: ``csr_too_large``, ``csr_malformed``, ``csr_bad_signature``, ``csr_weak_key``.
    """

    code = "csr_malformed"


class PemError(StateError):
    """A PEM certificate or key could not be loaded (code ``bad_pem`` or ``missing``).

    This is a :class:`StateError` because the loaders serve our own files; a caller
    that loads peer-supplied PEM must map it to a peer-facing error itself.
    """

    code = "bad_pem"


# --------------------------------------------------------------------------- helpers


def _utc(now: _dt.datetime) -> _dt.datetime:
    """Return ``now`` in UTC; naive datetimes are a programming error."""
    if not isinstance(now, _dt.datetime) or now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be a timezone-aware datetime")
    return now.astimezone(_dt.timezone.utc)


def _positive(validity: _dt.timedelta) -> _dt.timedelta:
    if not isinstance(validity, _dt.timedelta) or validity <= _dt.timedelta(0):
        raise ConfigError("certificate validity must be a positive duration", code="bad_validity")
    return validity


def _check_ca_pair(ca_key: PrivateKey, ca_cert: x509.Certificate) -> None:
    """Refuse to sign with a key that does not belong to ``ca_cert`` (mixed-up files)."""
    ours = ca_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    theirs = ca_cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    if ours != theirs:
        raise StateError("CA key does not match CA certificate", code="ca_key_mismatch")
    try:
        bc = ca_cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound as exc:
        raise StateError("CA certificate lacks basicConstraints", code="not_a_ca") from exc
    if not bc.ca:
        raise StateError("certificate is not a CA", code="not_a_ca")


def _window(
    ca_cert: x509.Certificate, now: _dt.datetime, validity: _dt.timedelta
) -> tuple[_dt.datetime, _dt.datetime]:
    """Validity window [now - SKEW, now + validity], never outliving the CA."""
    now = _utc(now)
    _positive(validity)
    not_before = now - SKEW
    not_after = min(now + validity, ca_cert.not_valid_after_utc)
    if not_after <= now:
        raise StateError("the CA certificate has expired", code="ca_expired")
    return max(not_before, ca_cert.not_valid_before_utc), not_after


def _ca_ski(ca_cert: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    try:
        ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)
    except x509.ExtensionNotFound:
        pub = ca_cert.public_key()
        if not isinstance(pub, (ec.EllipticCurvePublicKey, rsa.RSAPublicKey)):
            raise StateError("the CA certificate's key is neither EC nor RSA", code="ca_bad_key") from None
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(pub)


def _sign_alg(key: PrivateKey) -> hashes.SHA256 | hashes.SHA384:
    if isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP384R1):
        return hashes.SHA384()
    return hashes.SHA256()


def _leaf_builder(
    ca_cert: x509.Certificate,
    subject: x509.Name,
    public_key: PublicKey,
    not_before: _dt.datetime,
    not_after: _dt.datetime,
    *,
    eku: x509.ObjectIdentifier,
) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([eku]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(_ca_ski(ca_cert), critical=False)
    )


def _check_text(value: str, what: str, *, max_len: int = 64) -> str:
    """Subject attribute values: non-empty printable text within the X.520 bound."""
    if not isinstance(value, str) or not value or len(value) > max_len or not value.isprintable():
        raise ConfigError(f"invalid {what}: {value!r}", code="bad_name")
    return value


# --------------------------------------------------------------------------- keys and CA


def generate_key() -> ec.EllipticCurvePrivateKey:
    """A fresh ECDSA P-256 private key (the cluster's key type everywhere)."""
    return ec.generate_private_key(ec.SECP256R1())


def create_ca(
    common_name: str,
    *,
    now: _dt.datetime,
    validity: _dt.timedelta = _dt.timedelta(days=3650),
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """Create the self-signed cluster CA.

    pathlen 0: the CA signs leaves only, so a leaked leaf key can never mint
    certificates; keyUsage is limited to certificate and CRL signing.
    """
    now = _utc(now)
    _positive(validity)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, _check_text(common_name, "CA name"))])
    key = generate_key()
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - SKEW)
        .not_valid_after(now + validity)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _san_entries(sans: Sequence[str]) -> list[x509.GeneralName]:
    if isinstance(sans, str):
        raise ConfigError("sans must be a sequence of names, not a string", code="bad_san")
    out: list[x509.GeneralName] = []
    seen: set[str] = set()
    for raw in sans:
        entry: x509.GeneralName
        if not isinstance(raw, str) or not raw or len(raw) > 253:
            raise ConfigError(f"invalid subject alternative name {raw!r}", code="bad_san")
        value = raw[1:-1] if raw.startswith("[") and raw.endswith("]") else raw
        try:
            ip = ipaddress.ip_address(value)
        except ValueError:
            ip = None
        if ip is not None:
            key, entry = f"ip:{ip}", x509.IPAddress(ip)
        else:
            if not _DNS_SAN.fullmatch(value) or ".." in value:
                raise ConfigError(f"invalid DNS name {raw!r}", code="bad_san")
            key, entry = f"dns:{value.lower()}", x509.DNSName(value.lower())
        if key not in seen:
            seen.add(key)
            out.append(entry)
    if not out:
        raise ConfigError("a server certificate needs at least one name", code="bad_san")
    return out


def _own_or_given_key(public_key: PublicKey | None) -> tuple[ec.EllipticCurvePrivateKey | None, PublicKey]:
    """A fresh key pair when no public key is given; else (None, the checked given key)."""
    if public_key is None:
        key = generate_key()
        return key, key.public_key()
    return None, _check_public_key(public_key)


def issue_server_cert(
    ca_key: PrivateKey,
    ca_cert: x509.Certificate,
    *,
    common_name: str,
    sans: Sequence[str],
    now: _dt.datetime,
    validity: _dt.timedelta = _dt.timedelta(days=365),
    public_key: PublicKey | None = None,
) -> tuple[ec.EllipticCurvePrivateKey | None, x509.Certificate]:
    """Issue a TLS server certificate (hub, cert endpoint, apiserver, edge MQTT broker).

    IP literals (v4, v6, optionally bracketed) become IPAddress SANs, everything
    else DNSName; the EKU is serverAuth only, so the cert cannot act as a client.
    With ``public_key`` the caller keeps its own private key and gets ``None`` back.
    """
    _check_ca_pair(ca_key, ca_cert)
    names = _san_entries(sans)
    not_before, not_after = _window(ca_cert, now, validity)
    key, public_key = _own_or_given_key(public_key)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, _check_text(common_name, "common name"))])
    cert = (
        _leaf_builder(
            ca_cert, subject, public_key, not_before, not_after, eku=ExtendedKeyUsageOID.SERVER_AUTH
        )
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .sign(ca_key, _sign_alg(ca_key))
    )
    return key, cert


def issue_client_cert(
    ca_key: PrivateKey,
    ca_cert: x509.Certificate,
    *,
    common_name: str,
    organizations: Sequence[str],
    now: _dt.datetime,
    validity: _dt.timedelta = _dt.timedelta(days=365),
    public_key: PublicKey | None = None,
) -> tuple[ec.EllipticCurvePrivateKey | None, x509.Certificate]:
    """Issue a client certificate (admin, controllers, device credentials).

    With ``public_key`` the caller keeps its own private key and gets ``None`` back
    for the key. clientAuth EKU and digitalSignature only.
    """
    _check_ca_pair(ca_key, ca_cert)
    if isinstance(organizations, str):
        raise ConfigError("organizations must be a sequence, not a string", code="bad_name")
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, _check_text(o, "organization")) for o in organizations]
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, _check_text(common_name, "common name")))
    not_before, not_after = _window(ca_cert, now, validity)
    key, public_key = _own_or_given_key(public_key)
    cert = _leaf_builder(
        ca_cert, x509.Name(attrs), public_key, not_before, not_after, eku=ExtendedKeyUsageOID.CLIENT_AUTH
    ).sign(ca_key, _sign_alg(ca_key))
    return key, cert


# --------------------------------------------------------------------------- node certificates


def validate_node_name(name: str) -> str:
    """Return ``name`` if it is a valid Kubernetes node name (DNS-1123 subdomain).

    Applied before a name goes into a certificate subject or the state store, so
    names can never smuggle ':' / ',' / '/' or upper-case look-alikes.
    """
    if not isinstance(name, str) or not 0 < len(name) <= _MAX_NODE_NAME or not _DNS1123_SUBDOMAIN.fullmatch(name):
        raise ConfigError(f"invalid node name {name!r}: must be a DNS-1123 subdomain", code="bad_node_name")
    return name


def _check_public_key(pub: object) -> PublicKey:
    """Accept EC P-256/P-384 and RSA 2048..8192 with e=65537 (returned); refuse everything else."""
    if isinstance(pub, ec.EllipticCurvePublicKey):
        if not isinstance(pub.curve, _ACCEPTED_CURVES):
            raise CsrError("unsupported elliptic curve", code="csr_weak_key")
        return pub
    if isinstance(pub, rsa.RSAPublicKey):
        if not MIN_RSA_BITS <= pub.key_size <= MAX_RSA_BITS:
            raise CsrError("RSA key size not accepted", code="csr_weak_key")
        if pub.public_numbers().e != 65537:
            raise CsrError("RSA public exponent not accepted", code="csr_weak_key")
        return pub
    raise CsrError("key type not accepted", code="csr_weak_key")


def check_node_csr(csr_pem: bytes, *, max_csr_bytes: int = MAX_CSR_BYTES) -> PublicKey:
    """Validate a node CSR without signing anything; return the public key to certify.

    Exactly the checks :func:`sign_node_csr` applies, so a server can run them
    *before* consuming a single-use token (a broken request must not burn it).
    Raises :class:`CsrError` (codes ``csr_too_large``, ``csr_malformed``,
    ``csr_bad_signature``, ``csr_weak_key``) and nothing else for any input.
    """
    if not isinstance(csr_pem, (bytes, bytearray, memoryview)):
        raise CsrError("CSR must be bytes", code="csr_malformed")
    if len(csr_pem) > max_csr_bytes:
        raise CsrError("CSR too large", code="csr_too_large")
    data = bytes(csr_pem)
    if b"-----BEGIN CERTIFICATE REQUEST-----" not in data:
        raise CsrError("CSR is not PEM", code="csr_malformed")
    try:
        csr = x509.load_pem_x509_csr(data)
    except (ValueError, TypeError, UnsupportedAlgorithm, x509.InvalidVersion) as exc:
        # InvalidVersion is not a ValueError (found by fuzz_csr).
        raise CsrError("CSR cannot be parsed", code="csr_malformed") from exc
    try:
        pub = csr.public_key()
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise CsrError("CSR public key not accepted", code="csr_weak_key") from exc
    key = _check_public_key(pub)
    try:
        alg = csr.signature_hash_algorithm
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise CsrError("CSR signature algorithm not accepted", code="csr_bad_signature") from exc
    if not isinstance(alg, _ACCEPTED_CSR_HASHES):
        raise CsrError("CSR signature algorithm not accepted", code="csr_bad_signature")
    try:
        valid = csr.is_signature_valid
    except (ValueError, TypeError, UnsupportedAlgorithm, InvalidSignature) as exc:
        raise CsrError("CSR signature invalid", code="csr_bad_signature") from exc
    if not valid:
        raise CsrError("CSR signature invalid", code="csr_bad_signature")
    return key


def sign_node_csr(
    ca_key: PrivateKey,
    ca_cert: x509.Certificate,
    csr_pem: bytes,
    *,
    node_name: str,
    now: _dt.datetime,
    validity: _dt.timedelta,
    max_csr_bytes: int = MAX_CSR_BYTES,
) -> x509.Certificate:
    """Certify the CSR's public key as node ``node_name``; everything else is ours.

    ``node_name`` comes from what authenticated the caller (the token's node, or the
    node of the presented client certificate), never from the CSR. The CSR must be
    PEM, at most ``max_csr_bytes``, signed by its own key with SHA-2 (proof of
    possession), and carry an accepted key. The issued certificate: CN
    ``system:node:<node_name>``, O ``system:nodes``, clientAuth only,
    digitalSignature only, no SANs, valid from ``now - 60s`` to ``now + validity``
    (capped at the CA's expiry).
    """
    validate_node_name(node_name)
    _check_ca_pair(ca_key, ca_cert)
    pub = check_node_csr(csr_pem, max_csr_bytes=max_csr_bytes)

    not_before, not_after = _window(ca_cert, now, validity)
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, NODE_GROUP),
            x509.NameAttribute(NameOID.COMMON_NAME, NODE_PREFIX + node_name),
        ]
    )
    return _leaf_builder(
        ca_cert, subject, pub, not_before, not_after, eku=ExtendedKeyUsageOID.CLIENT_AUTH
    ).sign(ca_key, _sign_alg(ca_key))


def make_csr(key: PrivateKey, node_name: str) -> bytes:
    """The PEM CSR an edge sends. Its subject is informative only; the server ignores it."""
    validate_node_name(node_name)
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, NODE_GROUP),
                    x509.NameAttribute(NameOID.COMMON_NAME, NODE_PREFIX + node_name),
                ]
            )
        )
        .sign(key, _sign_alg(key))
    )
    return csr.public_bytes(serialization.Encoding.PEM)


def make_csr_for(key: PrivateKey, common_name: str) -> bytes:
    """A PEM CSR proving possession of ``key``; its subject is informative only (the issuer
    sets every name itself)."""
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, _check_text(common_name, "common name"))]))
        .sign(key, _sign_alg(key))
    )
    return csr.public_bytes(serialization.Encoding.PEM)


def node_name_from_cert(cert: x509.Certificate) -> str:
    """The node identity a (chain-verified) client certificate asserts.

    Requires exactly one CN ``system:node:<valid name>``, organizations exactly
    ``{system:nodes}`` (a node cert that also claims another group is refused), and
    an EKU that includes clientAuth. Does not verify the chain -- TLS did that.
    """
    bad = AuthenticationError("not a node certificate", code="not_a_node_cert")
    try:
        cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        orgs = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except (x509.ExtensionNotFound, ValueError) as exc:
        raise bad from exc
    if len(cns) != 1 or not orgs or any(o.value != NODE_GROUP for o in orgs):
        raise bad
    if ExtendedKeyUsageOID.CLIENT_AUTH not in eku:
        raise bad
    cn = cns[0].value
    if not isinstance(cn, str) or not cn.startswith(NODE_PREFIX):
        raise bad
    name = cn[len(NODE_PREFIX):]
    try:
        return validate_node_name(name)
    except ConfigError as exc:
        raise bad from exc


def ca_fingerprint(ca_cert: x509.Certificate) -> str:
    """sha256 of the CA certificate's DER, lower-case hex: what bootstrap tokens pin."""
    return hashlib.sha256(ca_cert.public_bytes(serialization.Encoding.DER)).hexdigest()


# --------------------------------------------------------------------------- PEM I/O


def cert_to_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def key_to_pem(key: PrivateKey) -> bytes:
    """PKCS#8, unencrypted: the file itself is protected by mode 0600."""
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def load_cert_pem(data: bytes) -> x509.Certificate:
    """The first certificate in ``data``; :class:`PemError` if there is none."""
    try:
        return x509.load_pem_x509_certificate(bytes(data))
    except (ValueError, TypeError, UnsupportedAlgorithm, x509.InvalidVersion) as exc:
        raise PemError("not a PEM certificate", code="bad_pem") from exc


def load_cert_bundle_pem(data: bytes) -> list[x509.Certificate]:
    """Every certificate in a PEM bundle (CA rotation keeps old and new CA side by side)."""
    try:
        certs = x509.load_pem_x509_certificates(bytes(data))
    except (ValueError, TypeError, UnsupportedAlgorithm, x509.InvalidVersion) as exc:
        raise PemError("not a PEM certificate bundle", code="bad_pem") from exc
    if not certs:
        raise PemError("empty certificate bundle", code="bad_pem")
    return certs


def load_key_pem(data: bytes) -> PrivateKey:
    """An unencrypted EC or RSA private key."""
    try:
        key = serialization.load_pem_private_key(bytes(data), password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise PemError("not an unencrypted PEM private key", code="bad_pem") from exc
    if not isinstance(key, (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey)):
        raise PemError("private key type not supported", code="bad_pem")
    return key


def _read_bounded(path: str | Path) -> bytes:
    try:
        return fsutil.read_bounded(path, MAX_PEM_FILE_BYTES)
    except FileNotFoundError as exc:
        raise PemError(f"{path} does not exist", code="missing") from exc
    except OSError as exc:
        raise PemError(f"{path} cannot be read", code="unreadable") from exc
    except fsutil.FileTooLarge as exc:
        raise PemError(f"{path} is too large for a PEM file", code="bad_pem") from exc


def load_cert_file(path: str | Path) -> x509.Certificate:
    return load_cert_pem(_read_bounded(path))


def load_cert_bundle_file(path: str | Path) -> list[x509.Certificate]:
    return load_cert_bundle_pem(_read_bounded(path))


def load_key_file(path: str | Path) -> PrivateKey:
    return load_key_pem(_read_bounded(path))


# --------------------------------------------------------------------------- revocation


def build_crl(
    ca_key: PrivateKey,
    ca_cert: x509.Certificate,
    revoked: Iterable[tuple[int, _dt.datetime]],
    *,
    now: _dt.datetime,
    next_update: _dt.timedelta = _dt.timedelta(days=7),
) -> x509.CertificateRevocationList:
    """A CRL listing ``(serial, revoked_at)`` pairs, signed by the CA.

    The CRL number is the issuing time in seconds, so later CRLs get larger numbers.
    """
    _check_ca_pair(ca_key, ca_cert)
    now = _utc(now)
    _positive(next_update)
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca_cert.subject)
        .last_update(now)
        .next_update(now + next_update)
        .add_extension(x509.CRLNumber(int(now.timestamp())), critical=False)
        .add_extension(_ca_ski(ca_cert), critical=False)
    )
    seen: set[int] = set()
    for serial, when in revoked:
        if not isinstance(serial, int) or serial <= 0:
            raise ValueError(f"invalid serial {serial!r}")
        if serial in seen:
            continue
        seen.add(serial)
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(_utc(when)).build()
        )
    return builder.sign(ca_key, _sign_alg(ca_key))
