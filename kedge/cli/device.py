"""``kedge device credentials --data-dir DIR --device NS/NAME --out OUTDIR``;
``kedge device revoke --data-dir DIR --device NS/NAME``.

Issues a device client certificate from the cloud's device CA (``DIR/pki/device-ca.*``,
created on first use) and writes ``OUTDIR/device.crt``, ``device.key`` (0600) and
``ca.crt`` (the device CA: it signed the edge brokers' server certificates, so a mapper
verifies its broker with it). The certificate's CN ``device:NS/NAME`` is the device's
MQTT identity; an edge broker lets it use only ``$hw/events/device/NS/NAME/#``.
"""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("device", help="device management")
    dsub = p.add_subparsers(dest="device_command", metavar="SUBCOMMAND")
    c = dsub.add_parser("credentials", help="issue a device client certificate (for a mapper)")
    c.add_argument("--data-dir", required=True, help="the cloud data dir (holds the device CA)")
    c.add_argument("--device", required=True, help="NAMESPACE/NAME")
    c.add_argument("--out", required=True, help="directory to write device.crt, device.key, ca.crt into")
    c.set_defaults(func=cmd_credentials)
    r = dsub.add_parser("revoke", help="revoke every certificate issued to a device")
    r.add_argument("--data-dir", required=True, help="the cloud data dir (holds the device CA)")
    r.add_argument("--device", required=True, help="NAMESPACE/NAME")
    r.set_defaults(func=cmd_revoke)


def cmd_credentials(args: argparse.Namespace) -> int:
    import datetime as dt
    from pathlib import Path

    from kedge._internal import fsutil
    from kedge.cloud.devicecontroller import pki as device_pki
    from kedge.edge.devicetwin import model as tm
    from kedge.errors import ConfigError

    try:
        ns, name = tm.parse_device_id(args.device)
    except tm.TwinRejected as exc:
        raise ConfigError(f"--device must be NAMESPACE/NAME (DNS names): {args.device!r}", code=exc.code) from exc
    now = dt.datetime.now(dt.timezone.utc)
    cert, key, ca = device_pki.issue_device_credentials(args.data_dir, ns, name, now=now)
    out = fsutil.make_private_dir(Path(args.out))
    fsutil.write_private(out / "device.key", key)
    fsutil.atomic_write(out / "device.crt", cert)
    fsutil.atomic_write(out / "ca.crt", ca)
    print(f"device credentials for {ns}/{name} written to {out}")
    return 0


def cmd_revoke(args: argparse.Namespace) -> int:
    import datetime as dt

    from kedge.cloud.devicecontroller import pki as device_pki
    from kedge.edge.devicetwin import model as tm
    from kedge.errors import ConfigError

    try:
        ns, name = tm.parse_device_id(args.device)
    except tm.TwinRejected as exc:
        raise ConfigError(f"--device must be NAMESPACE/NAME (DNS names): {args.device!r}", code=exc.code) from exc
    count = device_pki.revoke_device(args.data_dir, ns, name, now=dt.datetime.now(dt.timezone.utc))
    print(f"revoked {count} certificate(s) of device {ns}/{name}; edge brokers refuse them once they hold the "
          "new device CRL (sent with MQTT certificates and on request)")
    return 0
