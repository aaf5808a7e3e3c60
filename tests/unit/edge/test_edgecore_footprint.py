"""An idle edgecore stays small: its entry point and idle paths must not load heavy modules.

Each check runs in a fresh interpreter and fails if someone re-adds an eager import. What an
idle edge must not carry, and why:

- ``cryptography`` (~8 MiB of native code resident): join and certificate renewal run in
  their own processes (``kedge join``, ``python -m kedge.edge.renewal``); the one-time MQTT
  bundle check and sealed (secret) rows import it when they happen;
- ``kedge.pki`` (imports cryptography), ``kedge.edge.join`` (join/renewal only);
- ``paho`` (the devicetwin MQTT client starts only once a device is bound to the node);
- ``yaml``, ``kubernetes``, ``kedge.cloud``, ``kedge.apiserver``: cloud-side or CLI-only.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

from kedge.edge.config import EdgeConfig
from kedge.pki import ca as pki

FORBIDDEN = ("cryptography", "kedge.pki", "kedge.edge.join", "paho", "yaml", "kubernetes", "kedge.cloud",
             "kedge.apiserver")

REPORT = """
import json, sys
heavy = [m for m in sys.modules if any(m == f or m.startswith(f + ".") for f in {forbidden!r})]
print("HEAVY", json.dumps(sorted(heavy)))
"""


def _run(code: str) -> list[str]:
    out = subprocess.run([sys.executable, "-c", code + REPORT.format(forbidden=FORBIDDEN)], capture_output=True,
                         text=True, timeout=60, check=True)
    line = next(line for line in out.stdout.splitlines() if line.startswith("HEAVY"))
    return json.loads(line.removeprefix("HEAVY "))


def test_edgecore_entry_imports_nothing_heavy():
    heavy = _run(
        "from kedge.cli.main import build_parser\n"
        "build_parser('edgecore')\n"
        "import kedge.cli.cluster, kedge.edge.core, kedge.edge.hub, kedge.edge.devicetwin, kedge.edge.broker\n"
        "import kedge.edge.metamanager, kedge.edge.edged\n"
    )
    assert heavy == []


def test_idle_paths_load_nothing_heavy(tmp_path: Path):
    """The work an idle edge does at start and on every connect: read its certificates' expiry
    (node and MQTT broker), open its store (key check) and read it."""
    now = dt.datetime.now(dt.timezone.utc)
    ca_key, ca_cert = pki.create_ca("kedge-ca", now=now)
    key, cert = pki.issue_client_cert(ca_key, ca_cert, common_name="system:node:e1", organizations=["system:nodes"],
                                      now=now, validity=dt.timedelta(days=30))
    edge = tmp_path / "edge"
    (edge / "pki").mkdir(parents=True)
    (edge / "pki" / "ca.crt").write_bytes(pki.cert_to_pem(ca_cert))
    (edge / "pki" / "node.crt").write_bytes(pki.cert_to_pem(cert))
    (edge / "pki" / "node.key").write_bytes(pki.key_to_pem(key))
    for name in ("mqtt-ca.crt", "mqtt-broker.crt", "mqtt-client.crt"):
        (edge / "pki" / name).write_bytes(pki.cert_to_pem(cert))
    for name in ("mqtt-broker.key", "mqtt-client.key"):
        (edge / "pki" / name).write_bytes(pki.key_to_pem(key))
    (edge / "pki" / "mqtt-crl.pem").write_bytes(b"")  # the idle path only checks the CRL is there
    (edge / "config.json").write_text(json.dumps(
        EdgeConfig(node_name="e1", certs="https://127.0.0.1:1", hub="wss://127.0.0.1:2").to_dict()))
    heavy = _run(
        "import time\n"
        "from kedge.edge.hub import EdgeHub\n"
        "from kedge.edge.devicetwin import _certs_usable\n"
        "from kedge.edge.metamanager.store import MetaStore\n"
        f"d = {str(edge)!r}\n"
        "hub = EdgeHub(d)\n"
        "hub.check_not_expired()\n"
        "assert time.time() < hub.renew_at() < time.time() + 30 * 86400, hub.renew_at()\n"
        "assert _certs_usable(hub.dir.pki)\n"
        "for _ in range(2):\n"  # create, then reopen with the key check
        "    s = MetaStore(d + '/edge.db', d + '/edge.key')\n"
        "    s.apply('default/configmap/c', 'insert', '1', {'metadata': {'name': 'c', 'namespace': 'default'}},"
        " now=1.0)\n"
        "    assert [o['metadata']['name'] for o in s.list('configmap')] == ['c']\n"
        "    s.close()\n"
    )
    assert heavy == []
