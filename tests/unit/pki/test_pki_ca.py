"""kedge.pki.ca: the CA, server/client certificates and server-decided node certificates.

Adversarial tests are named after the attack they stop. Chains are checked with
cryptography's RFC 5280 verifier and, for the TLS-facing certificates, with a real
OpenSSL handshake (in memory) through kedge.tls.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import ssl
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509 import verification
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from kedge import tls
from kedge.errors import AuthenticationError, ConfigError, PeerError, StateError
from kedge.pki import ca

NOW = dt.datetime(2026, 6, 1, 12, 0, 0, tzinfo=dt.timezone.utc)
DAY = dt.timedelta(days=1)


@pytest.fixture(scope="module")
def cluster() -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    return ca.create_ca("kedge-test-ca", now=NOW)


@pytest.fixture(scope="module")
def rsa2048() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _sign(cluster, csr_pem: bytes, node: str = "edge-1", **kw) -> x509.Certificate:
    key, cert = cluster
    kw.setdefault("validity", 30 * DAY)
    return ca.sign_node_csr(key, cert, csr_pem, node_name=node, now=kw.pop("now", NOW), **kw)


def _csr(key, subject: x509.Name, extensions=()) -> bytes:
    builder = x509.CertificateSigningRequestBuilder().subject_name(subject)
    for ext, critical in extensions:
        builder = builder.add_extension(ext, critical=critical)
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def _der_to_pem(der: bytes) -> bytes:
    import base64

    body = base64.encodebytes(der).replace(b"\n", b"")
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    return b"-----BEGIN CERTIFICATE REQUEST-----\n" + b"\n".join(lines) + b"\n-----END CERTIFICATE REQUEST-----\n"


def _verify_client(cluster, leaf: x509.Certificate, at: dt.datetime = NOW) -> None:
    """RFC 5280 path validation; node certs carry no SAN by design, so SAN is optional here."""
    store = verification.Store([cluster[1]])
    ee = verification.ExtensionPolicy.webpki_defaults_ee().may_be_present(
        x509.SubjectAlternativeName, verification.Criticality.AGNOSTIC, None
    )
    verifier = (
        verification.PolicyBuilder()
        .store(store)
        .time(at)
        .extension_policies(ca_policy=verification.ExtensionPolicy.webpki_defaults_ca(), ee_policy=ee)
        .build_client_verifier()
    )
    verifier.verify(leaf, [])


# ----------------------------------------------------------------------------- CA


def test_ca_is_a_pathlen0_self_signed_ca_for_cert_and_crl_signing_only(cluster) -> None:
    key, cert = cluster
    bc = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and bc.value.ca and bc.value.path_length == 0
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert ku.critical and ku.value.key_cert_sign and ku.value.crl_sign and not ku.value.digital_signature
    cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    assert cert.subject == cert.issuer
    cert.verify_directly_issued_by(cert)
    assert isinstance(key.curve, ec.SECP256R1)
    assert cert.not_valid_after_utc - NOW == dt.timedelta(days=3650)


def test_create_ca_refuses_naive_now() -> None:
    with pytest.raises(ValueError):
        ca.create_ca("x", now=dt.datetime(2026, 1, 1))


def test_ca_fingerprint_is_sha256_of_der(cluster) -> None:
    fp = ca.ca_fingerprint(cluster[1])
    assert fp == hashlib.sha256(cluster[1].public_bytes(serialization.Encoding.DER)).hexdigest()
    assert len(fp) == 64 and fp == fp.lower()


# ----------------------------------------------------------------------------- server / client certs


def test_server_cert_sans_split_ip_and_dns_and_only_server_auth(cluster) -> None:
    key, cert = ca.issue_server_cert(
        *cluster, common_name="kedge-hub", sans=["127.0.0.1", "::1", "[fe80::1]", "Hub.Example", "hub.example"], now=NOW
    )
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
        ipaddress.ip_address("fe80::1"),
    ]
    assert san.get_values_for_type(x509.DNSName) == ["hub.example"]
    assert list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.SERVER_AUTH
    ]
    assert cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier == (
        cluster[1].extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    )
    store = verification.Store([cluster[1]])
    verifier = verification.PolicyBuilder().store(store).time(NOW).build_server_verifier(
        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))
    )
    verifier.verify(cert, [])
    assert key.public_key().public_numbers() == cert.public_key().public_numbers()


@pytest.mark.parametrize("bad", [[], ["bad name"], ["a..b"], [""], ["-x"], "localhost"])
def test_server_cert_refuses_bad_or_missing_names(cluster, bad) -> None:
    with pytest.raises(ConfigError):
        ca.issue_server_cert(*cluster, common_name="hub", sans=bad, now=NOW)


def test_client_cert_for_admin_is_client_auth_only(cluster) -> None:
    key, cert = ca.issue_client_cert(
        *cluster, common_name="kubernetes-admin", organizations=["system:masters"], now=NOW, validity=DAY
    )
    assert key is not None
    assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "system:masters"
    assert list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.CLIENT_AUTH
    ]
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.digital_signature and not ku.key_cert_sign
    _verify_client(cluster, cert)


def test_client_cert_for_given_public_key_returns_no_key(cluster) -> None:
    mine = ca.generate_key()
    key, cert = ca.issue_client_cert(
        *cluster, common_name="device", organizations=[], now=NOW, public_key=mine.public_key()
    )
    assert key is None
    assert cert.public_key().public_numbers() == mine.public_key().public_numbers()


def test_signing_with_a_key_that_is_not_the_cas_is_refused(cluster) -> None:
    with pytest.raises(StateError) as err:
        ca.issue_server_cert(ca.generate_key(), cluster[1], common_name="hub", sans=["h"], now=NOW)
    assert err.value.code == "ca_key_mismatch"


def test_leaf_never_outlives_the_ca(cluster) -> None:
    _, cert = ca.issue_server_cert(*cluster, common_name="hub", sans=["h"], now=NOW, validity=100 * 365 * DAY)
    assert cert.not_valid_after_utc == cluster[1].not_valid_after_utc


def test_signing_with_an_expired_ca_is_refused(cluster) -> None:
    with pytest.raises(StateError) as err:
        ca.issue_server_cert(*cluster, common_name="hub", sans=["h"], now=NOW + 3651 * DAY)
    assert err.value.code == "ca_expired"


# ----------------------------------------------------------------------------- node CSRs


def test_node_csr_round_trip_gives_server_chosen_identity(cluster) -> None:
    edge = ca.generate_key()
    cert = _sign(cluster, ca.make_csr(edge, "edge-1"))
    assert cert.subject.rfc4514_string() == "CN=system:node:edge-1,O=system:nodes"
    assert ca.node_name_from_cert(cert) == "edge-1"
    assert cert.public_key().public_numbers() == edge.public_key().public_numbers()
    assert cert.not_valid_before_utc == NOW - dt.timedelta(seconds=60)
    assert cert.not_valid_after_utc == NOW + 30 * DAY
    _verify_client(cluster, cert)


def test_csr_asking_for_another_nodes_name_gets_the_token_node(cluster) -> None:
    evil = ca.generate_key()
    csr = ca.make_csr(evil, "edge-victim")
    cert = _sign(cluster, csr, node="edge-attacker")
    assert ca.node_name_from_cert(cert) == "edge-attacker"
    assert "edge-victim" not in cert.subject.rfc4514_string()


def test_csr_asking_for_system_masters_gets_only_system_nodes(cluster) -> None:
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "system:masters"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "system:nodes"),
            x509.NameAttribute(NameOID.COMMON_NAME, "kubernetes-admin"),
        ]
    )
    cert = _sign(cluster, _csr(ca.generate_key(), subject))
    orgs = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]
    assert orgs == ["system:nodes"]
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "system:node:edge-1"


def test_csr_requesting_server_auth_sans_and_ca_gets_none_of_it(cluster) -> None:
    requested = [
        (x509.SubjectAlternativeName([x509.DNSName("kubernetes.default"), x509.IPAddress(ipaddress.ip_address("10.0.0.1"))]), False),
        (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CODE_SIGNING]), False),
        (x509.BasicConstraints(ca=True, path_length=None), True),
        (
            x509.KeyUsage(
                digital_signature=True, content_commitment=True, key_encipherment=True, data_encipherment=True,
                key_agreement=False, key_cert_sign=True, crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            True,
        ),
    ]
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "system:node:edge-1")])
    cert = _sign(cluster, _csr(ca.generate_key(), subject, requested))
    with pytest.raises(x509.ExtensionNotFound):
        cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.CLIENT_AUTH
    ]
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.digital_signature
    assert not (ku.key_cert_sign or ku.crl_sign or ku.key_encipherment or ku.content_commitment)
    assert {e.oid for e in cert.extensions} == {
        x509.BasicConstraints.oid,
        x509.KeyUsage.oid,
        x509.ExtendedKeyUsage.oid,
        x509.SubjectKeyIdentifier.oid,
        x509.AuthorityKeyIdentifier.oid,
    }


def test_csr_with_forged_signature_is_refused(cluster) -> None:
    der = bytearray(
        x509.load_pem_x509_csr(ca.make_csr(ca.generate_key(), "edge-1")).public_bytes(serialization.Encoding.DER)
    )
    # The DER ECDSA signature ends with the s integer; flipping its last bit breaks it.
    der[-1] ^= 0x01
    with pytest.raises(PeerError) as err:
        _sign(cluster, _der_to_pem(bytes(der)))
    assert err.value.code == "csr_bad_signature"


def test_csr_claiming_someone_elses_public_key_is_refused(cluster) -> None:
    """Proof of possession: a CSR carrying the victim's key but signed by the attacker."""
    victim, attacker = ca.generate_key(), ca.generate_key()
    spki = lambda k: k.public_key().public_bytes(  # noqa: E731
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    der = x509.load_pem_x509_csr(ca.make_csr(attacker, "edge-1")).public_bytes(serialization.Encoding.DER)
    assert der.count(spki(attacker)) == 1 and len(spki(attacker)) == len(spki(victim))
    forged = der.replace(spki(attacker), spki(victim))
    assert x509.load_der_x509_csr(forged).public_key().public_numbers() == victim.public_key().public_numbers()
    with pytest.raises(PeerError) as err:
        _sign(cluster, _der_to_pem(forged))
    assert err.value.code == "csr_bad_signature"


def test_oversized_csr_is_refused_before_parsing(cluster) -> None:
    csr = ca.make_csr(ca.generate_key(), "edge-1")
    padded = csr + b"\n" * (16384 - len(csr))
    assert ca.node_name_from_cert(_sign(cluster, padded)) == "edge-1"  # at the bound: fine
    with pytest.raises(PeerError) as err:
        _sign(cluster, padded + b"\n")
    assert err.value.code == "csr_too_large"
    with pytest.raises(PeerError) as err:
        _sign(cluster, csr, max_csr_bytes=len(csr) - 1)
    assert err.value.code == "csr_too_large"


def test_rsa_1024_csr_is_refused(cluster) -> None:
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    with pytest.raises(PeerError) as err:
        _sign(cluster, ca.make_csr(weak, "edge-1"))
    assert err.value.code == "csr_weak_key"


def test_rsa_2048_csr_is_accepted(cluster, rsa2048) -> None:
    cert = _sign(cluster, ca.make_csr(rsa2048, "edge-1"))
    assert cert.public_key().key_size == 2048
    _verify_client(cluster, cert)


def test_p384_csr_is_accepted(cluster) -> None:
    cert = _sign(cluster, ca.make_csr(ec.generate_private_key(ec.SECP384R1()), "edge-1"))
    assert isinstance(cert.public_key().curve, ec.SECP384R1)


@pytest.mark.parametrize(
    "make_key",
    [
        lambda: ec.generate_private_key(ec.SECP521R1()),
        lambda: ec.generate_private_key(ec.SECP256K1()),
        lambda: ed25519.Ed25519PrivateKey.generate(),
        lambda: rsa.generate_private_key(public_exponent=3, key_size=2048),
    ],
    ids=["p521", "secp256k1", "ed25519", "rsa-e3"],
)
def test_csr_with_unaccepted_key_type_is_refused(cluster, make_key) -> None:
    key = make_key()
    algo = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "x")]))
        .sign(key, algo)
        .public_bytes(serialization.Encoding.PEM)
    )
    with pytest.raises(PeerError) as err:
        _sign(cluster, csr)
    assert err.value.code == "csr_weak_key"


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"hello",
        b"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
        b"-----BEGIN CERTIFICATE REQUEST-----\n",
        "-----BEGIN CERTIFICATE REQUEST-----",
    ],
)
def test_malformed_csr_is_refused_with_a_code(cluster, data) -> None:
    with pytest.raises(PeerError) as err:
        _sign(cluster, data)
    assert err.value.code == "csr_malformed"


def test_der_csr_is_refused_as_malformed(cluster) -> None:
    der = x509.load_pem_x509_csr(ca.make_csr(ca.generate_key(), "e")).public_bytes(serialization.Encoding.DER)
    with pytest.raises(PeerError) as err:
        _sign(cluster, der)
    assert err.value.code == "csr_malformed"


def test_certificate_pem_posing_as_csr_is_refused(cluster) -> None:
    pem = ca.cert_to_pem(cluster[1]).replace(b"CERTIFICATE", b"CERTIFICATE REQUEST")
    with pytest.raises(PeerError) as err:
        _sign(cluster, pem)
    assert err.value.code == "csr_malformed"


@pytest.mark.parametrize("node", ["", "Edge-1", "edge_1", "edge-1.", "-edge", "a" * 254, "system:node:x", "e/1"])
def test_node_cert_for_invalid_node_name_is_refused(cluster, node) -> None:
    with pytest.raises(ConfigError) as err:
        _sign(cluster, ca.make_csr(ca.generate_key(), "edge-1"), node=node)
    assert err.value.code == "bad_node_name"


def test_node_cert_validity_window_and_cap(cluster) -> None:
    csr = ca.make_csr(ca.generate_key(), "edge-1")
    short = _sign(cluster, csr, validity=dt.timedelta(seconds=5))
    assert short.not_valid_after_utc == NOW + dt.timedelta(seconds=5)
    with pytest.raises(ConfigError):
        _sign(cluster, csr, validity=dt.timedelta(0))
    # Not yet valid before the skew allowance, valid inside it.
    with pytest.raises(verification.VerificationError):
        _verify_client(cluster, short, at=NOW - dt.timedelta(seconds=61))
    _verify_client(cluster, short, at=NOW - dt.timedelta(seconds=59))


def test_each_node_cert_gets_a_fresh_large_serial(cluster) -> None:
    csr = ca.make_csr(ca.generate_key(), "edge-1")
    serials = {_sign(cluster, csr).serial_number for _ in range(5)}
    assert len(serials) == 5 and all(s.bit_length() > 64 for s in serials)


# ----------------------------------------------------------------------------- node identity from certs


def test_node_name_from_cert_refuses_admin_and_server_certs(cluster) -> None:
    _, admin = ca.issue_client_cert(*cluster, common_name="admin", organizations=["system:masters"], now=NOW)
    _, server = ca.issue_server_cert(*cluster, common_name="system:node:edge-1", sans=["h"], now=NOW)
    for cert in (admin, server, cluster[1]):
        with pytest.raises(AuthenticationError) as err:
            ca.node_name_from_cert(cert)
        assert err.value.code == "not_a_node_cert"


@pytest.mark.parametrize(
    "cn,orgs",
    [
        ("system:node:edge-1", ["system:nodes", "system:masters"]),
        ("system:node:edge-1", []),
        ("system:node:edge-1", ["system:masters"]),
        ("system:node:Edge-1", ["system:nodes"]),
        ("system:node:", ["system:nodes"]),
        ("edge-1", ["system:nodes"]),
    ],
)
def test_node_name_from_cert_refuses_wrong_subjects(cluster, cn, orgs) -> None:
    _, cert = ca.issue_client_cert(*cluster, common_name=cn, organizations=orgs, now=NOW)
    with pytest.raises(AuthenticationError) as err:
        ca.node_name_from_cert(cert)
    assert err.value.code == "not_a_node_cert"


@pytest.mark.parametrize("name", ["edge-1", "a", "node.example.com", "0", "a" * 253, "1-2.3-4"])
def test_validate_node_name_accepts_dns1123_subdomains(name) -> None:
    assert ca.validate_node_name(name) == name


@pytest.mark.parametrize(
    "name", ["", "A", "a" * 254, "a..b", ".a", "a.", "a_b", "a b", "a\n", "é", "a:b", "a/b", None, 7, "\uff41"]
)
def test_validate_node_name_refuses_everything_else(name) -> None:
    with pytest.raises(ConfigError) as err:
        ca.validate_node_name(name)
    assert err.value.code == "bad_node_name"


# ----------------------------------------------------------------------------- PEM and files


def test_pem_round_trips(cluster, tmp_path: Path) -> None:
    key, cert = cluster
    assert ca.load_cert_pem(ca.cert_to_pem(cert)) == cert
    pem = ca.key_to_pem(key)
    assert b"BEGIN PRIVATE KEY" in pem  # PKCS#8, unencrypted
    assert ca.load_key_pem(pem).private_numbers() == key.private_numbers()
    (tmp_path / "ca.crt").write_bytes(ca.cert_to_pem(cert))
    (tmp_path / "ca.key").write_bytes(pem)
    assert ca.load_cert_file(tmp_path / "ca.crt") == cert
    assert ca.load_key_file(tmp_path / "ca.key").private_numbers() == key.private_numbers()
    other = ca.create_ca("other", now=NOW)[1]
    assert ca.load_cert_bundle_pem(ca.cert_to_pem(cert) + ca.cert_to_pem(other)) == [cert, other]


def test_pem_loaders_raise_pem_errors(tmp_path: Path) -> None:
    for fn in (ca.load_cert_pem, ca.load_key_pem, ca.load_cert_bundle_pem):
        with pytest.raises(ca.PemError):
            fn(b"not pem")
    with pytest.raises(ca.PemError) as err:
        ca.load_cert_file(tmp_path / "absent.crt")
    assert err.value.code == "missing"
    big = tmp_path / "big.crt"
    big.write_bytes(b"A" * (ca.MAX_PEM_FILE_BYTES + 1))
    with pytest.raises(ca.PemError):
        ca.load_cert_file(big)
    enc = ca.generate_key().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"pw"),
    )
    with pytest.raises(ca.PemError):
        ca.load_key_pem(enc)


# ----------------------------------------------------------------------------- CRL


def test_crl_lists_revoked_serials_and_is_signed_by_the_ca(cluster) -> None:
    key, cert = cluster
    revoked = [(12345, NOW - DAY), (2**150 + 7, NOW - dt.timedelta(hours=1)), (12345, NOW)]
    crl = ca.build_crl(key, cert, revoked, now=NOW)
    assert crl.is_signature_valid(cert.public_key())
    assert crl.issuer == cert.subject
    assert crl.last_update_utc == NOW and crl.next_update_utc == NOW + 7 * DAY
    assert {r.serial_number for r in crl} == {12345, 2**150 + 7}
    assert crl.get_revoked_certificate_by_serial_number(2**150 + 7).revocation_date_utc == NOW - dt.timedelta(hours=1)
    assert crl.get_revoked_certificate_by_serial_number(999) is None
    other_key, other = ca.create_ca("other", now=NOW)
    assert not crl.is_signature_valid(other.public_key())
    later = ca.build_crl(key, cert, [], now=NOW + DAY)
    assert later.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number > (
        crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    )


# ----------------------------------------------------------------------------- real TLS


def _handshake(server: ssl.SSLContext, client: ssl.SSLContext, host: str) -> tuple[ssl.SSLObject, ssl.SSLObject]:
    s_in, s_out, c_in, c_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    s = server.wrap_bio(s_in, s_out, server_side=True)
    c = client.wrap_bio(c_in, c_out, server_hostname=host)
    done = {"s": False, "c": False}
    for _ in range(20):
        for name, obj in (("c", c), ("s", s)):
            if not done[name]:
                try:
                    obj.do_handshake()
                    done[name] = True
                except ssl.SSLWantReadError:
                    pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if all(done.values()):
            # TLS 1.3: the server verifies the client's certificate after its Finished.
            c.write(b"x")
            s_in.write(c_out.read())
            assert s.read(1) == b"x"
            return s, c
    raise AssertionError("handshake did not finish")


def test_hub_cert_and_node_cert_work_in_a_real_mtls_handshake(cluster, tmp_path: Path) -> None:
    key, cert = cluster
    hk, hc = ca.issue_server_cert(key, cert, common_name="hub", sans=["127.0.0.1"], now=dt.datetime.now(dt.timezone.utc))
    ek = ca.generate_key()
    nc = ca.sign_node_csr(
        key, cert, ca.make_csr(ek, "edge-1"), node_name="edge-1", now=dt.datetime.now(dt.timezone.utc), validity=DAY
    )
    files = {
        "ca.crt": ca.cert_to_pem(cert),
        "hub.crt": ca.cert_to_pem(hc),
        "hub.key": ca.key_to_pem(hk),
        "node.crt": ca.cert_to_pem(nc),
        "node.key": ca.key_to_pem(ek),
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    server = tls.server_context(tmp_path / "hub.crt", tmp_path / "hub.key", tmp_path / "ca.crt")
    client = tls.client_context(tmp_path / "ca.crt", tmp_path / "node.crt", tmp_path / "node.key")
    s, _ = _handshake(server, client, "127.0.0.1")
    peer = x509.load_der_x509_certificate(s.getpeercert(binary_form=True))
    assert ca.node_name_from_cert(peer) == "edge-1"


def test_hub_cert_cannot_be_used_as_a_client_cert(cluster, tmp_path: Path) -> None:
    """serverAuth-only EKU: a stolen hub key does not authenticate as a client."""
    key, cert = cluster
    now = dt.datetime.now(dt.timezone.utc)
    hk, hc = ca.issue_server_cert(key, cert, common_name="system:node:edge-1", sans=["127.0.0.1"], now=now)
    for name, data in {"ca.crt": ca.cert_to_pem(cert), "hub.crt": ca.cert_to_pem(hc), "hub.key": ca.key_to_pem(hk)}.items():
        (tmp_path / name).write_bytes(data)
    server = tls.server_context(tmp_path / "hub.crt", tmp_path / "hub.key", tmp_path / "ca.crt")
    client = tls.client_context(tmp_path / "ca.crt", tmp_path / "hub.crt", tmp_path / "hub.key")
    with pytest.raises(ssl.SSLError, match="certificate purpose"):
        _handshake(server, client, "127.0.0.1")


def test_check_node_csr_applies_the_same_checks_without_signing(cluster) -> None:
    """Servers run this before consuming a token, so a bad request cannot burn it."""
    edge = ca.generate_key()
    pub = ca.check_node_csr(ca.make_csr(edge, "edge-1"))
    assert pub.public_numbers() == edge.public_key().public_numbers()
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    for data, code in ((b"x" * 20000, "csr_too_large"), (b"junk", "csr_malformed"), (ca.make_csr(weak, "e"), "csr_weak_key")):
        with pytest.raises(ca.CsrError) as err:
            ca.check_node_csr(data)
        assert err.value.code == code


def test_csr_with_an_invalid_version_is_refused_as_malformed(cluster) -> None:
    """Regression from fuzz_csr: cryptography's InvalidVersion is not a ValueError."""
    der = bytearray(
        x509.load_pem_x509_csr(ca.make_csr(ca.generate_key(), "edge-1")).public_bytes(serialization.Encoding.DER)
    )
    # CertificationRequestInfo.version is the INTEGER right after the two SEQUENCE headers.
    idx = der.index(b"\x02\x01\x00")
    der[idx + 2] = 0x10
    with pytest.raises(PeerError) as err:
        _sign(cluster, _der_to_pem(bytes(der)))
    assert err.value.code == "csr_malformed"
    cert_der = bytearray(cluster[1].public_bytes(serialization.Encoding.DER))
    v = cert_der.index(b"\xa0\x03\x02\x01\x02")
    cert_der[v + 4] = 0x05
    import base64

    pem = b"-----BEGIN CERTIFICATE-----\n" + base64.encodebytes(bytes(cert_der)) + b"-----END CERTIFICATE-----\n"
    for loader in (ca.load_cert_pem, ca.load_cert_bundle_pem):
        with pytest.raises(ca.PemError):
            loader(pem)
