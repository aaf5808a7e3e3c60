"""Who signed: the GitHub Actions identity Fulcio wrote into a signing certificate.

Pure: takes a parsed ``cryptography`` certificate, returns a frozen
:class:`CertIdentity`. Fulcio's v2 extensions (OIDs 1.3.6.1.4.1.57264.1.8+) are
DER UTF8Strings; the deprecated v1 ones (1.1-1.6) hold raw bytes. v2 wins when
both are present; v1 fills gaps for certificates issued before v2 existed.
"""

from __future__ import annotations

import dataclasses

from cryptography import x509

from kedge.errors import VerificationError

_OID_PREFIX = "1.3.6.1.4.1.57264.1."

# v1 (raw bytes)
_V1_ISSUER = "1"
_V1_TRIGGER = "2"
_V1_SHA = "3"
_V1_REPOSITORY = "5"  # "owner/repo"
_V1_REF = "6"
# v2 (DER UTF8String)
_V2_ISSUER = "8"
_V2_BUILD_SIGNER_URI = "9"
_V2_BUILD_SIGNER_DIGEST = "10"
_V2_RUNNER_ENVIRONMENT = "11"
_V2_SOURCE_REPOSITORY_URI = "12"
_V2_SOURCE_REPOSITORY_DIGEST = "13"
_V2_SOURCE_REPOSITORY_REF = "14"
_V2_BUILD_CONFIG_URI = "18"
_V2_BUILD_TRIGGER = "20"

GITHUB_ACTIONS_ISSUER = "https://token.actions.githubusercontent.com"
_MAX_EXT_BYTES = 4096


@dataclasses.dataclass(frozen=True)
class CertIdentity:
    """The signing identity claims of one Fulcio certificate (all strings, "" if absent)."""

    issuer: str
    san_uri: str
    build_signer_uri: str
    build_signer_digest: str
    runner_environment: str
    source_repository_uri: str
    source_repository_digest: str
    source_repository_ref: str
    build_config_uri: str
    build_trigger: str

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            if not isinstance(getattr(self, field.name), str):
                raise ValueError(f"{field.name} must be a string")


def _der_utf8(value: bytes) -> str:
    """Decode one DER UTF8String (tag 0x0C) with definite length; refuse anything else."""
    if len(value) < 2 or value[0] != 0x0C:
        raise VerificationError("Fulcio extension is not a UTF8String", code="certificate_malformed")
    first = value[1]
    if first < 0x80:
        length, start = first, 2
    else:
        count = first & 0x7F
        if count == 0 or count > 2 or len(value) < 2 + count:
            raise VerificationError("Fulcio extension length invalid", code="certificate_malformed")
        length = int.from_bytes(value[2 : 2 + count], "big")
        start = 2 + count
    if start + length != len(value):
        raise VerificationError("Fulcio extension length invalid", code="certificate_malformed")
    try:
        return value[start:].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise VerificationError("Fulcio extension is not UTF-8", code="certificate_malformed") from exc


def _raw_utf8(value: bytes) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise VerificationError("Fulcio extension is not UTF-8", code="certificate_malformed") from exc


def identity_from_certificate(cert: x509.Certificate) -> CertIdentity:
    """Extract :class:`CertIdentity`; malformed Fulcio extensions raise VerificationError."""
    v1: dict[str, str] = {}
    v2: dict[str, str] = {}
    for ext in cert.extensions:
        dotted = ext.oid.dotted_string
        if not dotted.startswith(_OID_PREFIX):
            continue
        arc = dotted[len(_OID_PREFIX) :]
        raw = getattr(ext.value, "value", b"")
        if not isinstance(raw, bytes) or len(raw) > _MAX_EXT_BYTES:
            raise VerificationError("Fulcio extension malformed", code="certificate_malformed")
        if arc in (_V1_ISSUER, _V1_TRIGGER, _V1_SHA, _V1_REPOSITORY, _V1_REF):
            v1[arc] = _raw_utf8(raw)
        elif arc.isdigit() and int(arc) >= 8:
            v2[arc] = _der_utf8(raw)
    san = ""
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        uris = names.get_values_for_type(x509.UniformResourceIdentifier)
        if uris:
            san = uris[0]
    except x509.ExtensionNotFound:
        pass
    repo_v1 = v1.get(_V1_REPOSITORY, "")
    return CertIdentity(
        issuer=v2.get(_V2_ISSUER) or v1.get(_V1_ISSUER, ""),
        san_uri=san,
        build_signer_uri=v2.get(_V2_BUILD_SIGNER_URI) or san,
        build_signer_digest=v2.get(_V2_BUILD_SIGNER_DIGEST, ""),
        runner_environment=v2.get(_V2_RUNNER_ENVIRONMENT, ""),
        source_repository_uri=v2.get(_V2_SOURCE_REPOSITORY_URI)
        or (f"https://github.com/{repo_v1}" if repo_v1 else ""),
        source_repository_digest=v2.get(_V2_SOURCE_REPOSITORY_DIGEST) or v1.get(_V1_SHA, ""),
        source_repository_ref=v2.get(_V2_SOURCE_REPOSITORY_REF) or v1.get(_V1_REF, ""),
        build_config_uri=v2.get(_V2_BUILD_CONFIG_URI, ""),
        build_trigger=v2.get(_V2_BUILD_TRIGGER) or v1.get(_V1_TRIGGER, ""),
    )
