"""The edge's MQTT keys: made on the edge, only their CSRs go to the cloud.

The broker's server key and edgecore's MQTT client key are generated here and staged
(0600 from creation) as ``EDGEDIR/pki/mqtt-broker.key.next`` and ``mqtt-client.key.next``;
the cloud's device CA certifies them from the CSRs (:func:`kedge.cloud.devicecontroller.pki.
issue_broker_certs`) and devicetwin installs keys and certificates together once OpenSSL
has checked that each key matches its certificate.

Key generation needs ``cryptography``, which an edge keeps out of its process (it would
stay resident, see :mod:`kedge.edge.renewal`), so edgecore runs ``python -m
kedge.edge.mqttkeys PKI_DIR NODE``. The child prints one JSON line:
``{"ok": true, "serverCsr": PEM, "clientCsr": PEM}`` or the error report of
:func:`kedge.edge.renewal.result_of` (never key material), and exits 0 or 1.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

SERVER_KEY_STAGED = "mqtt-broker.key.next"
CLIENT_KEY_STAGED = "mqtt-client.key.next"


def stage_keys(pki_dir: str | os.PathLike[str], node: str) -> dict[str, str]:
    """Generate and stage both keys; return their CSRs (PEM strings)."""
    from kedge._internal import fsutil
    from kedge.edge.broker import admin_username
    from kedge.pki import ca as pki

    d = Path(pki_dir)
    pki.validate_node_name(node)
    out: dict[str, str] = {}
    for staged, field, cn in ((SERVER_KEY_STAGED, "serverCsr", f"mqtt-broker:{node}"),
                              (CLIENT_KEY_STAGED, "clientCsr", admin_username(node))):
        key = pki.generate_key()
        fsutil.write_private(d / staged, pki.key_to_pem(key))
        out[field] = pki.make_csr_for(key, cn[:64]).decode()
    return out


def parse_result(data: bytes, returncode: int | None) -> dict[str, str]:
    """In the parent: the CSRs the child made, or the error it reported, raised."""
    from kedge.edge.child import parse_report
    from kedge.errors import LocalError

    res = parse_report(data, returncode, what="MQTT key process", code="mqtt_keys_failed")
    csrs = {k: res.get(k) for k in ("serverCsr", "clientCsr")}
    if not all(isinstance(v, str) and len(v) < 16384 for v in csrs.values()):
        raise LocalError("MQTT key process gave malformed CSRs", code="mqtt_keys_failed")
    return csrs  # type: ignore[return-value]


def main(argv: list[str] | None = None) -> int:
    from kedge.edge.renewal import result_of

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m kedge.edge.mqttkeys PKI_DIR NODE", file=sys.stderr)
        return 2
    try:
        csrs = stage_keys(args[0], args[1])
    except Exception as exc:  # noqa: BLE001 - every failure is reported to the parent as data
        print(json.dumps(result_of(exc)), flush=True)
        return 1
    print(json.dumps({"ok": True, **csrs}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
