"""Fuzz the node CSR path: ``kedge.pki.ca.sign_node_csr`` on peer-supplied bytes.

Invariant: sign_node_csr returns a node cert with the server-chosen subject, or raises
a PeerError. "Server-chosen" means exactly CN=system:node:<node>, O=system:nodes,
clientAuth only, digitalSignature only, not a CA, no SANs, issued by the cluster CA,
validity from the server's clock -- whatever the CSR asked for. A PeerError must carry
one of the documented codes. Any other exception, or a certificate that says anything
else, is a finding.

Input layout: a first byte of 0x00 means "the rest is DER; wrap it in PEM armour" so
the fuzzer reaches the ASN.1 parser instead of spending its time on the armour;
any other input is passed as-is (raw PEM and garbage).

Run: ``python fuzz/targets/fuzz_csr.py fuzz/corpus/csr -max_total_time=60``
"""

from __future__ import annotations

import base64
import datetime as dt
import sys
from pathlib import Path

try:
    import kedge  # noqa: F401
except ImportError:  # running as a script from a checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from kedge.errors import PeerError
from kedge.pki import ca

NODE = "edge-fuzz"
NOW = dt.datetime(2026, 6, 1, 12, 0, 0, tzinfo=dt.timezone.utc)
VALIDITY = dt.timedelta(days=30)
CODES = {"csr_too_large", "csr_malformed", "csr_bad_signature", "csr_weak_key"}
CA_KEY, CA_CERT = ca.create_ca("kedge-fuzz-ca", now=NOW)
EXPECTED_SUBJECT = x509.Name(
    [
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "system:nodes"),
        x509.NameAttribute(NameOID.COMMON_NAME, "system:node:" + NODE),
    ]
)


def _input(data: bytes) -> bytes:
    if data[:1] == b"\x00":
        body = base64.encodebytes(data[1:])
        return b"-----BEGIN CERTIFICATE REQUEST-----\n" + body + b"-----END CERTIFICATE REQUEST-----\n"
    return data


def _require(ok: bool, what: str) -> None:
    """Like assert, but survives ``python -O``: a violated invariant is a crash."""
    if not ok:
        raise AssertionError(what)


def _check(cert: x509.Certificate) -> None:
    _require(cert.subject == EXPECTED_SUBJECT, f"subject {cert.subject.rfc4514_string()}")
    _require(cert.issuer == CA_CERT.subject, "issuer")
    cert.verify_directly_issued_by(CA_CERT)
    _require(cert.not_valid_before_utc == NOW - ca.SKEW, "notBefore")
    _require(cert.not_valid_after_utc == NOW + VALIDITY, "notAfter")
    oids = {ext.oid for ext in cert.extensions}
    _require(
        oids
        == {
            x509.BasicConstraints.oid,
            x509.KeyUsage.oid,
            x509.ExtendedKeyUsage.oid,
            x509.SubjectKeyIdentifier.oid,
            x509.AuthorityKeyIdentifier.oid,
        },
        f"extensions {oids}",
    )
    _require(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False, "CA:true")
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    _require(ku.digital_signature and not (ku.key_cert_sign or ku.crl_sign or ku.key_encipherment), "keyUsage")
    eku = list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    _require(eku == [ExtendedKeyUsageOID.CLIENT_AUTH], f"EKU {eku}")
    _require(ca.node_name_from_cert(cert) == NODE, "node name")


def test_one_input(data: bytes) -> None:
    try:
        cert = ca.sign_node_csr(CA_KEY, CA_CERT, _input(data), node_name=NODE, now=NOW, validity=VALIDITY)
    except PeerError as exc:
        _require(exc.code in CODES, f"undocumented code {exc.code}")
        return
    _check(cert)


def main() -> None:
    import atheris  # lazily: replaying the corpus in the test suite must not need it

    # Coverage feedback for the Python side (kedge.pki.ca and cryptography's Python
    # layer); the ASN.1 parsing itself is Rust and runs uninstrumented.
    atheris.instrument_all()
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
