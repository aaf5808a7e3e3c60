"""kedge audit during a CA rotation: certificates from either CA of the trust bundle chain to it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def _kedge(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kedge", *args], capture_output=True, text=True, timeout=120)


def _status(report: dict, check_id: str) -> str:
    for r in report.get("results", report.get("checks", [])):
        if r.get("id") == check_id:
            return r["status"]
    raise AssertionError(f"{check_id} not in the report")


def test_certificates_chain_to_the_bundle_mid_rotation(tmp_path: Path):
    d = tmp_path / "cloud"
    assert _kedge("init", "--data-dir", str(d), "--api-port", "0", "--hub-port", "0", "--cert-port", "0").returncode == 0
    assert _kedge("ca", "rotate", "--data-dir", str(d)).returncode == 0
    # hub.crt is still from the previous CA (it switches at finish), admin.crt from the new one.
    done = _kedge("audit", "--data-dir", str(d), "--format", "json")
    assert _status(json.loads(done.stdout), "KEDGE-CLOUD-008") == "PASS", done.stdout[-2000:]
    # A certificate from a CA outside the bundle still fails.
    other = tmp_path / "other"
    assert _kedge("init", "--data-dir", str(other), "--api-port", "0", "--hub-port", "0", "--cert-port", "0").returncode == 0
    (d / "pki" / "hub.crt").write_bytes((other / "pki" / "hub.crt").read_bytes())
    done = _kedge("audit", "--data-dir", str(d), "--format", "json")
    assert _status(json.loads(done.stdout), "KEDGE-CLOUD-008") == "FAIL"
