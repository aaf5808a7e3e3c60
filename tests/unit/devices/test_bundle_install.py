"""The edge's MQTT keys are made on the edge; the certificates the cloud issues for their CSRs
are loaded by OpenSSL with those keys before anything is installed."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import pytest

from kedge._internal import fsutil
from kedge.cloud.devicecontroller import pki as device_pki
from kedge.edge import devicetwin, mqttkeys
from kedge.errors import PeerError
from kedge.pki import ca as pki

NOW = dt.datetime.now(dt.timezone.utc)


@pytest.fixture
def dirs(tmp_path: Path):
    cloud = tmp_path / "cloud"
    fsutil.make_private_dir(cloud / "pki")
    edge_pki = fsutil.make_private_dir(tmp_path / "edge" / "pki")
    return cloud, edge_pki


def certify(cloud: Path, csrs: dict[str, str], node: str = "edge-1") -> dict[str, str]:
    return device_pki.issue_broker_certs(cloud, node, csrs["serverCsr"].encode(), csrs["clientCsr"].encode(), now=NOW)


def test_keys_made_on_the_edge_and_certified_are_installed_private_and_usable(dirs):
    cloud, pki_dir = dirs
    csrs = mqttkeys.stage_keys(pki_dir, "edge-1")
    for staged in (mqttkeys.SERVER_KEY_STAGED, mqttkeys.CLIENT_KEY_STAGED):
        assert (pki_dir / staged).stat().st_mode & 0o777 == 0o600
    staged_keys = {n: (pki_dir / f"{n}.next").read_bytes() for n in ("mqtt-broker.key", "mqtt-client.key")}
    certs = certify(cloud, csrs)
    assert set(certs) == {"ca", "serverCert", "clientCert", "crl"}  # no private key comes from the cloud
    devicetwin._install_bundle(pki_dir, certs)
    for name in devicetwin.CERT_FILES:
        assert (pki_dir / name).stat().st_mode & 0o777 == 0o600, name
    assert {n: (pki_dir / n).read_bytes() for n in staged_keys} == staged_keys
    assert devicetwin._certs_usable(pki_dir)
    assert not list(pki_dir.glob("*.next"))
    broker = pki.load_cert_pem(certs["serverCert"].encode())
    assert broker.subject.rfc4514_string() == "CN=mqtt-broker:edge-1"


@pytest.mark.parametrize("swap", ["serverCert", "clientCert", "ca"])
def test_certificates_that_do_not_match_the_staged_keys_are_refused_and_change_nothing(dirs, swap):
    cloud, pki_dir = dirs
    devicetwin._install_bundle(pki_dir, certify(cloud, mqttkeys.stage_keys(pki_dir, "edge-1")))
    before = {n: (pki_dir / n).read_bytes() for n in devicetwin.CERT_FILES}
    other = certify(cloud, mqttkeys.stage_keys(pki_dir.parent, "edge-1"))  # for keys we do not hold
    bad = certify(cloud, mqttkeys.stage_keys(pki_dir, "edge-1"))
    if swap == "ca":
        bad[swap] = "-----BEGIN CERTIFICATE-----\nnot a certificate\n-----END CERTIFICATE-----\n"
    else:
        bad[swap] = other[swap]
    with pytest.raises(PeerError) as exc:
        devicetwin._install_bundle(pki_dir, bad)
    assert exc.value.code == "bad_bundle"
    assert {n: (pki_dir / n).read_bytes() for n in devicetwin.CERT_FILES} == before
    assert not list(pki_dir.glob("*.next"))


def test_the_cloud_refuses_csrs_without_proof_of_possession_or_with_one_key_for_both(dirs):
    cloud, pki_dir = dirs
    good = mqttkeys.stage_keys(pki_dir, "edge-1")
    with pytest.raises(pki.CsrError) as exc:
        certify(cloud, {"serverCsr": good["serverCsr"], "clientCsr": good["serverCsr"]})
    assert exc.value.code == "csr_key_reused"
    tampered = good["clientCsr"].replace(good["clientCsr"].splitlines()[3], "A" * 64)
    with pytest.raises(pki.CsrError) as exc:
        certify(cloud, {"serverCsr": good["serverCsr"], "clientCsr": tampered})
    assert exc.value.code in ("csr_malformed", "csr_bad_signature")


def test_the_key_process_reports_csrs_and_errors_as_data(dirs, tmp_path):
    _, pki_dir = dirs
    ok = subprocess.run([sys.executable, "-m", "kedge.edge.mqttkeys", str(pki_dir), "edge-1"],
                        capture_output=True, timeout=120)
    csrs = mqttkeys.parse_result(ok.stdout, ok.returncode)
    assert csrs["serverCsr"].startswith("-----BEGIN CERTIFICATE REQUEST-----")
    assert b"PRIVATE KEY" not in ok.stdout
    bad = subprocess.run([sys.executable, "-m", "kedge.edge.mqttkeys", str(pki_dir), "Not_A_Node"],
                         capture_output=True, timeout=120)
    with pytest.raises(Exception) as exc:
        mqttkeys.parse_result(bad.stdout, bad.returncode)
    assert getattr(exc.value, "code", "") == "bad_node_name"


def test_installing_a_bundle_does_not_load_cryptography(dirs, tmp_path):
    cloud, pki_dir = dirs
    certs = certify(cloud, mqttkeys.stage_keys(pki_dir, "edge-1"))
    src = tmp_path / "certs.json"
    src.write_text(json.dumps(certs))
    code = ("import json, sys, pathlib\n"
            "from kedge.edge import devicetwin\n"
            f"devicetwin._install_bundle(pathlib.Path({str(pki_dir)!r}), json.loads(pathlib.Path({str(src)!r}).read_text()))\n"
            "print(sorted(m for m in sys.modules if m.startswith('cryptography')))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "[]", out.stdout


@pytest.mark.parametrize("validity_s, due_s", [(90 * 86400, 83 * 86400), (45, 10)])
def test_renewal_is_due_a_third_of_the_lifetime_before_expiry_at_most_seven_days(dirs, validity_s, due_s):
    cloud, pki_dir = dirs
    csrs = mqttkeys.stage_keys(pki_dir, "edge-1")
    certs = device_pki.issue_broker_certs(cloud, "edge-1", csrs["serverCsr"].encode(), csrs["clientCsr"].encode(),
                                          now=dt.datetime.now(dt.timezone.utc),
                                          validity=dt.timedelta(seconds=validity_s))
    devicetwin._install_bundle(pki_dir, certs)
    # Certificates are back-dated a minute for clock skew: the lifetime counts it.
    assert abs(devicetwin._renew_in(pki_dir) - due_s) < 5
    (pki_dir / "mqtt-client.crt").write_text("garbage")
    assert devicetwin._renew_in(pki_dir) < 0 and not devicetwin._certs_usable(pki_dir)


def test_a_cloud_refuses_mqtt_certificates_too_short_to_renew_in_time():
    from kedge.cloud.config import CloudConfig
    from kedge.errors import ConfigError

    assert CloudConfig(mqtt_cert_validity_s=45).mqtt_cert_validity_s == 45
    with pytest.raises(ConfigError):
        CloudConfig(mqtt_cert_validity_s=44)
