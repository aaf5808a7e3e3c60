"""EdgeHub renews in a child process: the new identity is installed, edgecore never loads cryptography."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from kedge.pki import ca as pki
from support.cluster import REPO, running_cloud

RENEW = """
import asyncio, json, sys
from kedge.edge.hub import EdgeHub

hub = EdgeHub(sys.argv[1])
before = hub.renew_at()
err = None
try:
    asyncio.run(hub.renew())
except Exception as exc:
    err = [type(exc).__name__, getattr(exc, "code", "")]
print(json.dumps({"rotations": hub.rotations, "error": err, "renew_at_moved": hub.renew_at() != before,
                  "cryptography": sorted(m for m in sys.modules if m.split(".")[0] == "cryptography")}))
"""


def _renew(edge: Path) -> dict:
    out = subprocess.run([sys.executable, "-c", RENEW, str(edge)], capture_output=True, text=True, timeout=90,
                         cwd=REPO, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_renewal_installs_a_new_identity_without_loading_cryptography_into_the_edge(tmp_path: Path):
    with running_cloud(tmp_path, validity="1h") as cloud:
        edge = tmp_path / "e"
        assert cloud.join("renewer", edge).returncode == 0
        old = pki.load_cert_file(edge / "pki" / "node.crt")
        res = _renew(edge)
        assert res == {"rotations": 1, "error": None, "renew_at_moved": True, "cryptography": []}
        new = pki.load_cert_file(edge / "pki" / "node.crt")
        assert new.serial_number != old.serial_number
        assert pki.node_name_from_cert(new) == "renewer"
        key = pki.load_key_file(edge / "pki" / "node.key")
        assert key.public_key().public_numbers() == new.public_key().public_numbers()
        assert os.stat(edge / "pki" / "node.key").st_mode & 0o777 == 0o600
        assert not (edge / "pki" / "node.key.next").exists() and not (edge / "pki" / "node.crt.next").exists()
        renewals = [e for e in cloud.audit() if e["event"] == "renewal" and e.get("result") == "accepted"]
        assert len(renewals) == 1


def test_failed_renewal_reports_the_childs_error_and_keeps_the_identity(tmp_path: Path):
    with running_cloud(tmp_path, validity="1h") as cloud:
        edge = tmp_path / "e"
        assert cloud.join("unlucky", edge).returncode == 0
        cfg = json.loads((edge / "config.json").read_text())
        cfg["certs"] = "https://127.0.0.1:1"  # nothing listens there
        (edge / "config.json").write_text(json.dumps(cfg))
        crt, key = (edge / "pki" / "node.crt").read_bytes(), (edge / "pki" / "node.key").read_bytes()
        res = _renew(edge)
        assert res["error"] == ["LocalError", "ConnectionRefusedError"] and res["rotations"] == 0
        assert res["cryptography"] == []
        assert (edge / "pki" / "node.crt").read_bytes() == crt and (edge / "pki" / "node.key").read_bytes() == key
