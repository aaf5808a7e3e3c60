"""Certificate identity extraction, the pinned trust root, and input-format triage."""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from kedge.errors import UnsupportedFormat, VerificationError
from kedge.verify import bundles, trust
from kedge.verify._limits import VerifyLimits
from kedge.verify.fulcio import identity_from_certificate
from kedge.verify.provenance import Statement


def _der_utf8(text: str) -> bytes:
    raw = text.encode()
    assert len(raw) < 128
    return bytes([0x0C, len(raw)]) + raw


def _cert(exts: dict[str, bytes], san: str = "https://github.com/o/r/.github/workflows/w.yml@refs/tags/v1.0.0") -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime(2025, 1, 1, tzinfo=datetime.timezone.utc)
    b = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "t")]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "t")]))
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(minutes=10))
        .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(san)]), critical=False)
    )
    for oid, value in exts.items():
        b = b.add_extension(x509.UnrecognizedExtension(x509.ObjectIdentifier(oid), value), critical=False)
    return b.sign(key, hashes.SHA256())


P = "1.3.6.1.4.1.57264.1."


def test_v2_extensions_are_decoded() -> None:
    cert = _cert({
        P + "8": _der_utf8("https://token.actions.githubusercontent.com"),
        P + "9": _der_utf8("https://github.com/b/b/.github/workflows/x.yml@refs/tags/v1.2.3"),
        P + "12": _der_utf8("https://github.com/o/r"),
        P + "13": _der_utf8("ab" * 20),
        P + "14": _der_utf8("refs/heads/main"),
    })
    ident = identity_from_certificate(cert)
    assert ident.issuer == "https://token.actions.githubusercontent.com"
    assert ident.build_signer_uri == "https://github.com/b/b/.github/workflows/x.yml@refs/tags/v1.2.3"
    assert ident.source_repository_uri == "https://github.com/o/r"
    assert ident.source_repository_digest == "ab" * 20
    assert ident.source_repository_ref == "refs/heads/main"


def test_v1_extensions_fill_gaps_and_san_is_the_fallback_signer() -> None:
    cert = _cert({P + "1": b"https://token.actions.githubusercontent.com", P + "5": b"o/r", P + "6": b"refs/tags/v1"})
    ident = identity_from_certificate(cert)
    assert ident.issuer == "https://token.actions.githubusercontent.com"
    assert ident.source_repository_uri == "https://github.com/o/r"
    assert ident.source_repository_ref == "refs/tags/v1"
    assert ident.build_signer_uri == ident.san_uri


@pytest.mark.parametrize("bad", [b"\x04\x03abc", b"\x0c\x05abc", b"\x0c\x81", b"\x0c\x02\xff\xfe"])
def test_malformed_v2_extension_is_refused(bad: bytes) -> None:
    with pytest.raises(VerificationError) as info:
        identity_from_certificate(_cert({P + "12": bad}))
    assert info.value.code == "certificate_malformed"


def test_vendored_root_matches_the_pin() -> None:
    data = trust.vendored_root_bytes()
    assert hashlib.sha256(data).hexdigest() == trust.PINNED_SHA256
    assert json.loads(data)["mediaType"].startswith("application/vnd.dev.sigstore.trustedroot")


def test_tampered_vendored_root_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(trust, "PINNED_SHA256", "00" * 32)
    with pytest.raises(VerificationError) as info:
        trust.load_trusted_root()
    assert info.value.code == "trusted_root_hash_mismatch"


def test_malformed_explicit_root_is_refused(tmp_path) -> None:  # type: ignore[no-untyped-def]
    p = tmp_path / "root.json"
    p.write_text('{"mediaType": "nope"}')
    with pytest.raises(VerificationError) as info:
        trust.load_trusted_root(p)
    assert info.value.code == "trusted_root_invalid"


def test_oversized_root_is_refused(tmp_path) -> None:  # type: ignore[no-untyped-def]
    p = tmp_path / "root.json"
    p.write_bytes(b" " * 2048)
    with pytest.raises(VerificationError) as info:
        trust.load_trusted_root(p, VerifyLimits(max_trusted_root_bytes=1024))
    assert info.value.code == "limit_exceeded"


def test_plain_dsse_without_key_is_unsupported() -> None:
    doc = {"payloadType": "application/vnd.in-toto+json", "payload": "e30=", "signatures": [{"sig": "AA=="}]}
    (cand,) = bundles.candidates([doc])
    with pytest.raises(UnsupportedFormat):
        bundles.refuse_unsupported(cand, have_key=False)
    bundles.refuse_unsupported(cand, have_key=True)


def test_rekor_intoto_entry_is_unsupported() -> None:
    doc = {"mediaType": "application/vnd.dev.sigstore.bundle+json;version=0.2",
           "verificationMaterial": {"tlogEntries": [{"kindVersion": {"kind": "intoto", "version": "0.0.2"}}]}}
    (cand,) = bundles.candidates([doc])
    with pytest.raises(UnsupportedFormat) as info:
        bundles.refuse_unsupported(cand, have_key=False)
    assert "unsupported format" in str(info.value)


PEP740 = Path(__file__).resolve().parents[2] / "interop" / "pep740"


def test_pep740_attestation_becomes_a_v03_bundle() -> None:
    att = json.loads((PEP740 / "pypi_attestations-0.0.19.tar.gz.slsa.attestation").read_bytes())
    (cand,) = bundles.candidates([att])
    assert cand.fmt == bundles.FORMAT_PEP740_ATTESTATION
    assert cand.doc["mediaType"] == "application/vnd.dev.sigstore.bundle.v0.3+json"
    assert bundles.is_dsse_bundle(cand.doc)
    assert cand.doc["dsseEnvelope"]["payload"] == att["envelope"]["statement"]
    assert cand.doc["dsseEnvelope"]["signatures"] == [{"sig": att["envelope"]["signature"]}]
    assert cand.doc["verificationMaterial"]["certificate"]["rawBytes"] == att["verification_material"]["certificate"]


def test_pep740_provenance_keeps_each_attestations_publisher() -> None:
    doc = json.loads((PEP740 / "pypi_attestations-0.0.19.tar.gz.provenance").read_bytes())
    cands = bundles.candidates([doc])
    assert cands and all(c.fmt == bundles.FORMAT_PEP740_PROVENANCE for c in cands)
    assert cands[0].publisher is not None
    assert cands[0].publisher["kind"] == "GitHub"
    assert cands[0].publisher["repository"] == "trailofbits/pypi-attestations"


@pytest.mark.parametrize("mutate", [
    lambda a: a["verification_material"].update(certificate="Y2VydA=="),  # not a certificate
    lambda a: a["verification_material"].update(transparency_entries=[]),
    lambda a: a.update(version=2),
    lambda a: a["envelope"].update(signature="%%%"),
])
def test_malformed_pep740_attestation_is_a_malformed_bundle(mutate) -> None:  # type: ignore[no-untyped-def]
    att = json.loads((PEP740 / "pypi_attestations-0.0.19.tar.gz.slsa.attestation").read_bytes())
    mutate(att)
    with pytest.raises(VerificationError) as info:
        bundles.candidates([att])
    assert info.value.code == "malformed_bundle"


@pytest.mark.parametrize("doc", [[], "x", {"hello": 1}, {"attestation_bundles": []},
                                 {"attestation_bundles": [{"attestations": [], "publisher": {}}]},
                                 {"attestation_bundles": [{"attestations": [{}], "publisher": {"kind": "x"}}]}])
def test_unrecognised_documents_are_refused(doc: object) -> None:
    with pytest.raises(VerificationError):
        bundles.candidates([doc])


def test_jsonl_lines_are_bounded() -> None:
    data = b"\n".join([b"{}"] * 5)
    assert len(bundles.load_documents(data)) == 5
    with pytest.raises(VerificationError) as info:
        bundles.load_documents(data, VerifyLimits(max_lines=4))
    assert info.value.code == "limit_exceeded"


def test_statement_requires_subjects_and_known_type() -> None:
    with pytest.raises(VerificationError):
        Statement.from_payload(b'{"_type": "https://in-toto.io/Statement/v1", "predicateType": "x", "subject": []}')
    with pytest.raises(VerificationError):
        Statement.from_payload(b'{"_type": "other", "predicateType": "x", "subject": [{"name": "a", "digest": {}}]}')
    with pytest.raises(VerificationError) as info:
        Statement.from_payload(
            json.dumps({"_type": "https://in-toto.io/Statement/v1", "predicateType": "x",
                        "subject": [{"name": "a", "digest": {"sha256": "00"}}] * 3}).encode(),
            VerifyLimits(max_subjects=2),
        )
    assert info.value.code == "limit_exceeded"



def test_bundle_whose_certificate_key_is_off_curve_is_refused_not_crashed() -> None:
    """Found by mutating the PEP 740 vector: a leaf whose EC point is not on the curve made
    the signature pre-check raise a bare ValueError."""
    from cryptography.hazmat.primitives import serialization

    from kedge.verify import api, policy

    att = json.loads((PEP740 / "pypi_attestations-0.0.19.tar.gz.slsa.attestation").read_bytes())
    der = bytearray(base64.b64decode(att["verification_material"]["certificate"]))
    cert = x509.load_der_x509_certificate(bytes(der))
    point = cert.public_key().public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    at = bytes(der).index(point)
    der[at + 10] ^= 0x01  # X changes, Y stays: the point leaves the curve
    att["verification_material"]["certificate"] = base64.b64encode(bytes(der)).decode()
    opts = policy.SlsaOptions(artifact_sha256="00" * 32, source_uri="github.com/trailofbits/pypi-attestations")
    with pytest.raises(VerificationError) as info:
        api.verify_provenance(json.dumps(att).encode(), opts)
    assert info.value.code == "certificate_malformed"
