"""Cluster commands: init, cloudcore, token, join, edgecore, node, up."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import signal
import sys
from pathlib import Path

from kedge._internal import logfmt
from kedge.errors import ConfigError


def _port(value: str) -> int:
    try:
        port = int(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a port: {value!r}") from exc
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port out of range: {port}")
    return port


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("init", help="create a cloud data directory (CA, certificates, config)")
    p.add_argument("--data-dir", required=True)
    p.add_argument("--advertise-address", action="append", dest="advertise",
                   help="address edges use to reach the cloud (repeatable; default 127.0.0.1)")
    p.add_argument("--hub-port", type=_port, default=10000)
    p.add_argument("--cert-port", type=_port, default=10002)
    p.add_argument("--api-port", type=_port, default=6443)
    p.add_argument("--node-cert-validity", default=None, help="node certificate validity, e.g. 30d, 1h, 10s")
    p.add_argument("--mqtt-cert-validity", default=None,
                   help="validity of edge MQTT broker/client certificates (default 90d); edges renew them in time")
    p.add_argument("--pod-security", choices=("privileged", "baseline", "restricted"), default="baseline",
                   help="Pod Security Standards level enforced in namespaces without a "
                        "pod-security.kubernetes.io/enforce label (default: baseline)")
    p.set_defaults(func=cmd_init)

    p = sub.add_parser("cloudcore", help="run CloudHub, the certificate endpoint and the controllers")
    p.add_argument("--data-dir", required=True)
    p.add_argument("--kubeconfig", default=None, help="use this API server instead of the embedded one")
    p.add_argument("--metrics-address", metavar="HOST:PORT", default=None,
                   help="serve Prometheus metrics at http://HOST:PORT/metrics (default: off; port 0 = a free "
                        "port, written to DIR/endpoints.json as metrics). Off loopback: HTTPS, and only client "
                        "certificates of the cluster CA in system:masters or system:monitoring may read")
    logfmt.add_argument(p)
    p.set_defaults(func=cmd_cloudcore)

    p = sub.add_parser("token", help="bootstrap tokens")
    tsub = p.add_subparsers(dest="token_command", metavar="SUBCOMMAND")
    t = tsub.add_parser("create", help="print a single-use bootstrap token for one node")
    t.add_argument("--data-dir", required=True)
    t.add_argument("--node", required=True)
    t.add_argument("--ttl", default=None, help="lifetime, e.g. 15m (default from config: 15m)")
    t.set_defaults(func=cmd_token_create)
    t = tsub.add_parser("list", help="list bootstrap tokens (ids, nodes, expiry; never secrets)")
    t.add_argument("--data-dir", required=True)
    t.set_defaults(func=cmd_token_list)

    p = sub.add_parser("join", help="join this machine to a cluster as an edge node")
    p.add_argument("--cloud", required=True, help="HOST:CERTPORT of the certificate endpoint")
    p.add_argument("--token", required=True)
    p.add_argument("--node", required=True)
    p.add_argument("--data-dir", required=True)
    p.add_argument("--mqtt-broker", metavar="mqtts://HOST:PORT",
                   help="use this (operator's) MQTT broker instead of starting mosquitto; checked at every start "
                        "(TLS 1.3 only, client certificates required, clear text refused)")
    p.add_argument("--mqtt-ca", help="CA file that verifies --mqtt-broker")
    p.add_argument("--mqtt-cert", help="edgecore's client certificate for --mqtt-broker")
    p.add_argument("--mqtt-key", help="edgecore's client key for --mqtt-broker (mode 0600)")
    p.set_defaults(func=cmd_join)

    p = sub.add_parser("edgecore", help="run the edge node")
    p.add_argument("--data-dir", required=True)
    p.add_argument("--stop-pods-on-exit", action="store_true",
                   help="stop this node's pods when edgecore stops (default: they keep running, edge autonomy)")
    p.add_argument("--metrics-address", metavar="HOST:PORT", default=None,
                   help="serve Prometheus metrics at http://HOST:PORT/metrics, loopback only (default: off; "
                        "port 0 = a free port, written to EDGEDIR/endpoints.json as metrics)")
    logfmt.add_argument(p)
    p.set_defaults(func=cmd_edgecore)

    p = sub.add_parser("node", help="node administration")
    nsub = p.add_subparsers(dest="node_command", metavar="SUBCOMMAND")
    n = nsub.add_parser("revoke", help="revoke every certificate of a node and cut its tunnel")
    n.add_argument("--data-dir", required=True)
    n.add_argument("--node", required=True)
    n.set_defaults(func=cmd_node_revoke)

    p = sub.add_parser("up", help="all-in-one local cluster (cloud + edges) in the foreground")
    p.add_argument("--data-dir", default="./.kedge-up")
    p.add_argument("--edges", type=int, default=2)
    logfmt.add_argument(p)
    p.set_defaults(func=cmd_up)


def _duration_s(text: str) -> int:
    from kedge.pki.tokens import parse_duration

    return max(1, int(parse_duration(text).total_seconds()))


def cmd_init(args: argparse.Namespace) -> int:
    from kedge.cloud.init import init_cloud

    d = init_cloud(args.data_dir, advertise_addresses=args.advertise, api_port=args.api_port,
                   hub_port=args.hub_port, cert_port=args.cert_port,
                   node_cert_validity_s=_duration_s(args.node_cert_validity) if args.node_cert_validity else None,
                   mqtt_cert_validity_s=_duration_s(args.mqtt_cert_validity) if args.mqtt_cert_validity else None,
                   pod_security=args.pod_security)
    print(f"initialised kedge cluster in {d.root}")
    print(f"  CA:         {d.ca_crt}")
    print(f"  kubeconfig: {d.kubeconfig}")
    return 0


def _run_async(coro, *, fast_loop: bool = False) -> int:
    async def main() -> int:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, task.cancel)  # type: ignore[union-attr]
        try:
            await coro
        except asyncio.CancelledError:
            return 0
        return 0

    if fast_loop:
        try:
            import uvloop
        except ImportError:  # optional: the stdlib loop works, it just needs more memory per edge
            pass
        else:
            return uvloop.run(main())
    return asyncio.run(main())


def cmd_cloudcore(args: argparse.Namespace) -> int:
    from kedge.cloud.core import CloudCore

    logfmt.apply(args)
    core = CloudCore(args.data_dir, kubeconfig=args.kubeconfig, metrics_address=args.metrics_address)
    return _run_async(core.run_forever(), fast_loop=True)


def cmd_token_create(args: argparse.Namespace) -> int:
    from kedge._internal.auditlog import AuditLog
    from kedge.cloud.config import CloudDir
    from kedge.cloud.state import CloudState
    from kedge.pki import ca as pki
    from kedge.pki import tokens

    d = CloudDir(args.data_dir)
    cfg = d.load_config()
    node = pki.validate_node_name(args.node)
    ttl = _duration_s(args.ttl) if args.ttl else cfg.token_default_ttl_s
    if ttl > 24 * 3600:
        raise ConfigError("bootstrap tokens live at most 24h", code="ttl_too_long")
    tok = tokens.generate(pki.ca_fingerprint(pki.load_cert_file(d.ca_crt)))
    now = dt.datetime.now(dt.timezone.utc)
    state = CloudState(d.state_db)
    try:
        state.add_token(token_id=tok.token_id, node=node, secret_hash=tokens.hash_secret(tok.token_id, tok.secret),
                        expires_at=now + dt.timedelta(seconds=ttl), created_at=now)
    finally:
        state.close()
    audit = AuditLog(d.audit_log_path(cfg))
    audit.write("token_created", token_id=tok.token_id, node=node, ttl_s=ttl)
    audit.close()
    print(tokens.format_token(tok))
    return 0


def cmd_token_list(args: argparse.Namespace) -> int:
    from kedge.cloud.config import CloudDir
    from kedge.cloud.state import CloudState

    d = CloudDir(args.data_dir)
    d.load_config()
    state = CloudState(d.state_db)
    try:
        print(json.dumps(state.list_tokens(), indent=2, default=str))
    finally:
        state.close()
    return 0


def cmd_join(args: argparse.Namespace) -> int:
    from kedge.edge.join import join

    files = (args.mqtt_ca, args.mqtt_cert, args.mqtt_key)
    if args.mqtt_broker is None and any(files):
        raise ConfigError("--mqtt-ca/--mqtt-cert/--mqtt-key need --mqtt-broker", code="usage")
    broker = None
    if args.mqtt_broker is not None:
        if not all(files):
            raise ConfigError("--mqtt-broker needs --mqtt-ca, --mqtt-cert and --mqtt-key", code="usage")
        paths = {k: str(Path(v).resolve()) for k, v in zip(("ca", "cert", "key"), files, strict=True)}
        broker = {"url": args.mqtt_broker, **paths}
    cfg = join(cloud=args.cloud, token=args.token, node=args.node, edge_dir=args.data_dir, mqtt_broker=broker)
    print(f"joined as {cfg.node_name}; hub {cfg.hub}")
    return 0


def cmd_edgecore(args: argparse.Namespace) -> int:
    from kedge.edge.core import run_edgecore

    logfmt.apply(args)
    return _run_async(run_edgecore(args.data_dir, stop_pods_on_exit=args.stop_pods_on_exit,
                                   metrics_address=args.metrics_address))


def cmd_node_revoke(args: argparse.Namespace) -> int:
    from cryptography.hazmat.primitives import serialization

    from kedge._internal import fsutil
    from kedge._internal.auditlog import AuditLog
    from kedge.cloud.config import CloudDir
    from kedge.cloud.devicecontroller import pki as device_pki
    from kedge.cloud.state import CloudState
    from kedge.pki import ca as pki

    d = CloudDir(args.data_dir)
    cfg = d.load_config()
    node = pki.validate_node_name(args.node)
    now = dt.datetime.now(dt.timezone.utc)
    state = CloudState(d.state_db)
    try:
        count = state.revoke_node(node, now=now)
        crl = pki.build_crl(pki.load_key_file(d.ca_key), pki.load_cert_file(d.ca_crt), state.revoked_serials(), now=now)
    finally:
        state.close()
    fsutil.atomic_write(d.crl, crl.public_bytes(serialization.Encoding.PEM))
    # Then its MQTT (device CA) certificates: after the node itself, so a pair the device
    # controller records meanwhile is either revoked here or refused there (it checks the node).
    mqtt = device_pki.revoke_node_certs(d.root, node, now=now)
    audit = AuditLog(d.audit_log_path(cfg))
    audit.write("node_revoked", node=node, certificates=count, mqtt_certificates=len(mqtt),
                mqtt_serials=[format(s, "x") for s in mqtt])
    audit.close()
    print(f"revoked node {node}: {count} certificate(s), {len(mqtt)} MQTT certificate(s); live tunnels are "
          "closed by cloudcore, edges' brokers refuse the MQTT ones from their next device CRL refresh")
    return 0


def cmd_up(args: argparse.Namespace) -> int:
    from kedge.cli.up import run_up

    logfmt.apply(args)
    return run_up(Path(args.data_dir), edges=args.edges, out=sys.stdout, log_format=args.log_format)
