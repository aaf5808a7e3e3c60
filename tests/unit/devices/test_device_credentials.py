"""``kedge device credentials``: files, modes, identity, and the device CA kept apart."""

from __future__ import annotations

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from kedge._internal import fsutil
from kedge.cli.main import run
from kedge.pki import ca as pki


def test_credentials_are_written_private_and_name_the_device(tmp_path):
    cloud = tmp_path / "cloud"
    fsutil.make_private_dir(cloud / "pki")
    out = tmp_path / "out"
    assert run(["device", "credentials", "--data-dir", str(cloud), "--device", "default/thermo-1",
                "--out", str(out)]) == 0
    assert (out / "device.key").stat().st_mode & 0o777 == 0o600
    assert (cloud / "pki" / "device-ca.key").stat().st_mode & 0o777 == 0o600
    cert = pki.load_cert_file(out / "device.crt")
    ca = pki.load_cert_file(out / "ca.crt")
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "device:default/thermo-1"
    assert cert.issuer == ca.subject
    assert list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    ca.public_key().verify(cert.signature, cert.tbs_certificate_bytes,
                           __import__("cryptography.hazmat.primitives.asymmetric.ec", fromlist=["ECDSA"]).ECDSA(
                               cert.signature_hash_algorithm))
    # The same CA on the next call (never re-created).
    assert run(["device", "credentials", "--data-dir", str(cloud), "--device", "default/other",
                "--out", str(tmp_path / "o2")]) == 0
    assert (tmp_path / "o2" / "ca.crt").read_bytes() == (out / "ca.crt").read_bytes()


def test_bad_device_names_are_usage_errors(tmp_path):
    cloud = tmp_path / "cloud"
    fsutil.make_private_dir(cloud / "pki")
    for bad in ("thermo", "../x/y", "default/../x", "Default/x"):
        assert run(["device", "credentials", "--data-dir", str(cloud), "--device", bad,
                    "--out", str(tmp_path / "o")]) == 2
    assert not (tmp_path / "o").exists()


def test_not_a_cloud_dir_is_refused(tmp_path):
    assert run(["device", "credentials", "--data-dir", str(tmp_path / "nope"), "--device", "default/x",
                "--out", str(tmp_path / "o")]) == 2
