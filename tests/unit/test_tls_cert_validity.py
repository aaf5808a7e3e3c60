"""kedge.tls.load_cert_validity: the expiry of our own certificate files, read without cryptography.

Checked against cryptography's own parse of the same certificates; malformed input of
every kind is a BadCertificateFile (a StateError), never another exception.
"""

from __future__ import annotations

import datetime as dt
import random
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID

from kedge import tls
from kedge.errors import StateError
from kedge.pki import ca as pki

UTC = dt.timezone.utc
NOW = dt.datetime(2025, 3, 4, 5, 6, 7, tzinfo=UTC)


def _cert(key, not_before: dt.datetime, not_after: dt.datetime, cn: str = "n") -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    algo = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(not_before).not_valid_after(not_after)
            .sign(key, algo))


def _write(tmp_path: Path, cert: x509.Certificate, name: str = "c.crt") -> Path:
    p = tmp_path / name
    p.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return p


@pytest.mark.parametrize("key", [ec.generate_private_key(ec.SECP256R1()), ed25519.Ed25519PrivateKey.generate(),
                                 rsa.generate_private_key(public_exponent=65537, key_size=2048)],
                         ids=["ec", "ed25519", "rsa"])
@pytest.mark.parametrize("after", [NOW + dt.timedelta(seconds=10), NOW + dt.timedelta(days=365),
                                   dt.datetime(2049, 12, 31, 23, 59, 59, tzinfo=UTC),  # last UTCTime year
                                   dt.datetime(2050, 1, 1, tzinfo=UTC),  # GeneralizedTime from here on
                                   dt.datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)])
def test_validity_matches_cryptography(tmp_path: Path, key, after: dt.datetime):
    cert = _cert(key, NOW, after)
    got = tls.load_cert_validity(_write(tmp_path, cert))
    assert got == (cert.not_valid_before_utc, cert.not_valid_after_utc)
    assert got.not_valid_after_utc == after


def test_utctime_before_1950_window(tmp_path: Path):
    before = dt.datetime(1950, 1, 1, tzinfo=UTC)  # UTCTime "50..." is 1950, not 2050
    cert = _cert(ec.generate_private_key(ec.SECP256R1()), before, NOW)
    assert tls.load_cert_validity(_write(tmp_path, cert)).not_valid_before_utc == before


def test_kedge_issued_node_and_ca_certificates(tmp_path: Path):
    ca_key, ca_cert = pki.create_ca("kedge-ca", now=NOW)
    _, leaf = pki.issue_client_cert(ca_key, ca_cert, common_name="system:node:e1", organizations=["system:nodes"],
                                    now=NOW, validity=dt.timedelta(hours=1))
    for name, cert in (("ca.crt", ca_cert), ("node.crt", leaf)):
        got = tls.load_cert_validity(_write(tmp_path, cert, name))
        assert got == (cert.not_valid_before_utc, cert.not_valid_after_utc)


def test_first_certificate_of_a_bundle_counts(tmp_path: Path):
    key = ec.generate_private_key(ec.SECP256R1())
    a, b = _cert(key, NOW, NOW + dt.timedelta(days=1)), _cert(key, NOW, NOW + dt.timedelta(days=2))
    p = tmp_path / "bundle.crt"
    p.write_bytes(b"leading text\n" + a.public_bytes(serialization.Encoding.PEM) + b.public_bytes(serialization.Encoding.PEM))
    assert tls.load_cert_validity(p).not_valid_after_utc == a.not_valid_after_utc


def _der() -> bytes:
    return _cert(ec.generate_private_key(ec.SECP256R1()), NOW, NOW + dt.timedelta(days=1)).public_bytes(
        serialization.Encoding.DER)


def test_every_truncation_is_refused():
    der = _der()
    for n in range(len(der)):
        with pytest.raises(tls.BadCertificateFile):
            tls.cert_validity_der(der[:n])


def test_trailing_bytes_after_the_certificate_are_refused():
    with pytest.raises(tls.BadCertificateFile):
        tls.cert_validity_der(_der() + b"\x00")


def test_random_corruption_never_escapes_as_another_exception():
    der = _der()
    rng = random.Random(1234)
    outcomes = {"parsed": 0, "refused": 0}
    for _ in range(3000):
        buf = bytearray(der)
        for _ in range(rng.randint(1, 4)):
            buf[rng.randrange(min(len(buf), 200))] = rng.randrange(256)  # headers and validity live up front
        try:
            tls.cert_validity_der(bytes(buf))
            outcomes["parsed"] += 1
        except tls.BadCertificateFile:
            outcomes["refused"] += 1
    assert outcomes["refused"] > 0 and outcomes["parsed"] > 0


@pytest.mark.parametrize("der", [
    b"\x30\x80\x00\x00",  # indefinite length
    b"\x30\x81\x03\x30\x01\x00",  # long form for a length < 128
    b"\x30\x82\x00\x80" + b"\x00" * 128,  # leading zero length byte
    b"\x30\x85\x00\x00\x00\x00\x01\x00",  # 5 length bytes
    b"\x3f\x01\x00",  # high tag number form
    b"\x30\x00",  # empty certificate
], ids=["indefinite", "long-short", "leading-zero", "five-byte", "high-tag", "empty"])
def test_non_der_encodings_are_refused(der: bytes):
    with pytest.raises(tls.BadCertificateFile):
        tls.cert_validity_der(der)


def _validity_cert(nb: bytes, na: bytes) -> bytes:
    """A minimal TBSCertificate shape around a hand-made validity (no signature checks here)."""
    def item(tag: int, body: bytes) -> bytes:
        assert len(body) < 128
        return bytes([tag, len(body)]) + body
    validity = item(0x30, nb + na)
    tbs = item(0x30, item(0x02, b"\x01") + item(0x30, b"") + item(0x30, b"") + validity)
    return item(0x30, tbs)


@pytest.mark.parametrize("nb,na", [
    (b"\x17\x0d250304050607Z", b"\x17\x0d261304050607Z"),  # month 13
    (b"\x17\x0d250304050607Z", b"\x17\x0d2603040506+7Z"),  # not a digit
    (b"\x17\x0d250304050607Z", b"\x17\x0d26030405060700"),  # no Z
    (b"\x17\x0d250304050607Z", b"\x18\x0d260304050607Z"),  # GeneralizedTime of UTCTime length
    (b"\x17\x0d250304050607Z", b"\x13\x0d260304050607Z"),  # PrintableString
], ids=["month", "digit", "no-z", "gt-length", "wrong-type"])
def test_malformed_times_are_refused(nb: bytes, na: bytes):
    with pytest.raises(tls.BadCertificateFile):
        tls.cert_validity_der(_validity_cert(nb, na))


def test_v1_certificate_without_version_field():
    der = _validity_cert(b"\x17\x0d250304050607Z", b"\x18\x0f20510304050607Z")
    assert tls.cert_validity_der(der) == (dt.datetime(2025, 3, 4, 5, 6, 7, tzinfo=UTC),
                                          dt.datetime(2051, 3, 4, 5, 6, 7, tzinfo=UTC))


def test_file_errors_are_state_errors(tmp_path: Path):
    with pytest.raises(StateError) as info:
        tls.load_cert_validity(tmp_path / "absent.crt")
    assert info.value.code == "missing"
    cases = {"big.crt": b"-----BEGIN CERTIFICATE-----\n" + b"A" * (tls.MAX_CERT_FILE_BYTES + 1),
             "none.crt": b"no certificate here\n",
             "key.pem": b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
             "b64.crt": b"-----BEGIN CERTIFICATE-----\nnot*base64\n-----END CERTIFICATE-----\n",
             "open.crt": b"-----BEGIN CERTIFICATE-----\nMIIB\n"}
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(tls.BadCertificateFile) as info:
            tls.load_cert_validity(tmp_path / name)
        assert info.value.code == "bad_pem", name
