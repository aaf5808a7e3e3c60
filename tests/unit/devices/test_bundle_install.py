"""The MQTT certificate bundle an edge fetches is loaded by OpenSSL before it is installed."""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path

import pytest

from kedge._internal import fsutil
from kedge.cloud.devicecontroller import pki as device_pki
from kedge.edge import devicetwin
from kedge.errors import PeerError

NOW = dt.datetime.now(dt.timezone.utc)


@pytest.fixture
def dirs(tmp_path: Path):
    cloud = tmp_path / "cloud"
    fsutil.make_private_dir(cloud / "pki")
    edge_pki = fsutil.make_private_dir(tmp_path / "edge" / "pki")
    return cloud, edge_pki


def test_a_good_bundle_is_installed_private_and_usable(dirs):
    cloud, pki_dir = dirs
    devicetwin._install_bundle(pki_dir, device_pki.issue_broker_bundle(cloud, "edge-1", now=NOW))
    for name in devicetwin.CERT_FILES:
        assert (pki_dir / name).stat().st_mode & 0o777 == 0o600, name
    assert devicetwin._certs_usable(pki_dir)
    assert not list(pki_dir.glob("*.next"))


@pytest.mark.parametrize("swap", ["serverKey", "clientKey", "ca", "serverCert"])
def test_a_bundle_whose_parts_do_not_match_is_refused_and_changes_nothing(dirs, swap):
    cloud, pki_dir = dirs
    first = device_pki.issue_broker_bundle(cloud, "edge-1", now=NOW)
    devicetwin._install_bundle(pki_dir, first)
    before = {n: (pki_dir / n).read_bytes() for n in devicetwin.CERT_FILES}
    bad = dict(device_pki.issue_broker_bundle(cloud, "edge-1", now=NOW))
    if swap in ("serverKey", "clientKey"):
        bad[swap] = first[swap]  # a key that belongs to another certificate
    else:
        bad[swap] = "-----BEGIN CERTIFICATE-----\nnot a certificate\n-----END CERTIFICATE-----\n"
    with pytest.raises(PeerError) as exc:
        devicetwin._install_bundle(pki_dir, bad)
    assert exc.value.code == "bad_bundle"
    assert {n: (pki_dir / n).read_bytes() for n in devicetwin.CERT_FILES} == before
    assert not list(pki_dir.glob("*.next"))


def test_installing_a_bundle_does_not_load_cryptography(dirs, tmp_path):
    import subprocess

    cloud, pki_dir = dirs
    bundle = device_pki.issue_broker_bundle(cloud, "edge-1", now=NOW)
    src = tmp_path / "bundle.json"
    src.write_text(__import__("json").dumps(bundle))
    code = ("import json, sys, pathlib\n"
            "from kedge.edge import devicetwin\n"
            f"devicetwin._install_bundle(pathlib.Path({str(pki_dir)!r}), json.loads(pathlib.Path({str(src)!r}).read_text()))\n"
            "print(sorted(m for m in sys.modules if m.startswith('cryptography')))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "[]", out.stdout
