"""Start-up check of an operator's MQTT broker (edge config ``mqtt_broker``).

edgecore uses a broker it does not run only if that broker gives the guarantees of the one
it would run, probed live on every start (the probes of ``kedge audit``'s KEDGE-EDGE-010):

- TLS 1.3 only: a ServerHello for TLS 1.0, 1.1 or 1.2 is a failure;
- a clear-text MQTT CONNECT gets no CONNACK;
- a TLS client without a certificate gets no CONNACK;
- edgecore's own identity (the configured CA, certificate and key) is verified by the
  broker and verifies it (CA and host name), and its CONNECT is accepted (return code 0);
- the key file is edgecore's alone (mode 0600, not a symlink).

What cannot be probed from here is the broker's ACL: that each device may use only its own
topics is the operator's configuration (say so in the note; ``kedge audit`` reads the
configuration of a mosquitto it can see).

The probes need ``cryptography`` (kept out of edgecore), so edgecore runs ``python -m
kedge.edge.brokercheck EDGEDIR``, which prints one JSON line ``{"ok": true, "problems":
[...]}`` (exit 0; "ok" means the check ran) or an error report (exit 1).
"""

from __future__ import annotations

import json
import os
import socket
import stat
import sys
from typing import Any

TIMEOUT_S = 5.0


def _connect_as_edgecore(cfg: dict[str, str], host: str, port: int, node: str) -> str | None:
    """None if edgecore's identity gets a CONNACK with return code 0, else what went wrong."""
    import ssl

    from kedge import tls
    from kedge.audit.probe import MQTT_DISCONNECT, mqtt_connect_packet, read_connack

    try:
        ctx = tls.client_context(cfg["ca"], cfg["cert"], cfg["key"])
    except (OSError, ssl.SSLError, ValueError) as exc:
        return f"edgecore's MQTT credentials do not load ({type(exc).__name__})"
    try:
        with socket.create_connection((host, port), TIMEOUT_S) as raw, \
                ctx.wrap_socket(raw, server_hostname=host) as s:
            s.sendall(mqtt_connect_packet(f"kedge-check-{node}".encode()))
            if read_connack(s) == 0:
                s.sendall(MQTT_DISCONNECT)
                return None
            return "the broker did not accept edgecore's identity"
    except ssl.SSLCertVerificationError:
        return "the broker's certificate does not verify against the configured CA and host name"
    except (OSError, ssl.SSLError) as exc:
        return f"edgecore's identity could not connect ({type(exc).__name__})"


def check(edge_dir: str) -> list[str]:
    """Everything the configured broker gets wrong (empty: usable)."""
    from kedge.audit.checks import mqtt_probe_problems
    from kedge.audit.probe import Target, probe
    from kedge.edge.config import EdgeDir
    from kedge.errors import ConfigError

    d = EdgeDir(edge_dir)
    cfg = d.load_config()
    broker: dict[str, Any] | None = cfg.mqtt_broker
    if broker is None:
        raise ConfigError("no mqtt_broker in the edge config", code="no_external_broker")
    problems = []
    try:
        st = os.lstat(broker["key"])
        if not stat.S_ISREG(st.st_mode) or stat.S_IMODE(st.st_mode) & 0o077 or st.st_uid != os.geteuid():
            problems.append(f"{broker['key']} must be a regular file of ours with mode 0600")
    except OSError:
        problems.append(f"{broker['key']} cannot be read")
    target = Target.parse(broker["url"], "mqtt")
    facts = probe(target, ca=None, timeout=TIMEOUT_S)
    if facts.error:
        return problems + [f"the broker cannot be reached: {facts.error}"]
    problems += mqtt_probe_problems(facts)
    own = _connect_as_edgecore(broker, target.host, target.port, cfg.node_name)
    if own:
        problems.append(own)
    return problems


def parse_result(data: bytes, returncode: int | None) -> list[str]:
    """In the parent: the problems the child found, or the error it reported, raised."""
    from kedge.edge.child import parse_report
    from kedge.errors import LocalError

    problems = parse_report(data, returncode, what="broker check", code="broker_check_failed").get("problems")
    if not isinstance(problems, list) or not all(isinstance(p, str) for p in problems):
        raise LocalError("broker check gave a malformed result", code="broker_check_failed")
    return [p[:300] for p in problems[:20]]


def main(argv: list[str] | None = None) -> int:
    from kedge.edge.renewal import result_of

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m kedge.edge.brokercheck EDGEDIR", file=sys.stderr)
        return 2
    try:
        problems = check(args[0])
    except Exception as exc:  # noqa: BLE001 - every failure is reported to the parent as data
        print(json.dumps(result_of(exc)), flush=True)
        return 1
    print(json.dumps({"ok": True, "problems": problems}), flush=True)  # ok: the check ran
    return 0


if __name__ == "__main__":
    sys.exit(main())
