"""``kedge ca rotate [--renew-now] | finish | status --data-dir DIR``: rotate the cluster CA
without downtime (:mod:`kedge.cloud.carotation` explains the steps and the layout).

Exit codes: 0 ok; 1 the step cannot be taken now -- ``finish`` while nodes are still on the
previous CA (they are listed) or before the running endpoints switched, ``rotate`` during a
rotation, ``finish`` without one; 2 usage or input error.
"""

from __future__ import annotations

import argparse
import json
import sys

_REFUSALS = ("nodes_on_previous_ca", "rotation_in_progress", "not_rotating", "endpoint_not_switched")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ca", help="rotate the cluster CA")
    csub = p.add_subparsers(dest="ca_command", metavar="SUBCOMMAND")
    r = csub.add_parser("rotate", help="create the next CA; both are trusted until `kedge ca finish`")
    r.add_argument("--renew-now", action="store_true",
                   help="make connected edges renew onto the new CA at once (else at their next renewal)")
    r.set_defaults(func=cmd_rotate)
    f = csub.add_parser("finish", help="drop the previous CA once every node holds a new-CA certificate")
    f.set_defaults(func=cmd_finish)
    s = csub.add_parser("status", help="phase, both CAs, nodes still on the previous CA")
    s.add_argument("--format", choices=("text", "json"), default="text")
    s.set_defaults(func=cmd_status)
    for c in (r, f, s):
        c.add_argument("--data-dir", required=True, help="the cloud data dir")


def _now():
    import datetime as dt

    return dt.datetime.now(dt.timezone.utc)


def _refused(exc) -> int:
    print(f"kedge: {exc.code}: {exc}", file=sys.stderr)
    return 1


def cmd_rotate(args: argparse.Namespace) -> int:
    from kedge.cloud import carotation
    from kedge.cloud.config import CloudDir
    from kedge.errors import StateError

    try:
        rec = carotation.rotate(CloudDir(args.data_dir), now=_now(), renew_now=args.renew_now)
    except StateError as exc:
        if exc.code in _REFUSALS:
            return _refused(exc)
        raise
    print(f"rotating: new CA sha256:{rec.current} issues node certificates; previous CA sha256:{rec.previous} "
          f"is trusted until `kedge ca finish`")
    print("edges renew onto the new CA " + ("now (connected edges are asked to renew)" if rec.renew_now
                                            else "at their next renewal"))
    return 0


def cmd_finish(args: argparse.Namespace) -> int:
    from kedge.cloud import carotation
    from kedge.cloud.config import CloudDir
    from kedge.errors import StateError

    try:
        rec = carotation.finish(CloudDir(args.data_dir), now=_now())
    except carotation.NodesOnPreviousCA as exc:
        print("kedge: nodes_on_previous_ca: these nodes do not hold a certificate of the new CA yet:",
              file=sys.stderr)
        for node in exc.nodes:
            print(f"  {node}", file=sys.stderr)
        print("wait for their renewal, run `kedge ca rotate --renew-now --data-dir DIR`, "
              "or revoke nodes that are gone (`kedge node revoke`)", file=sys.stderr)
        return 1
    except StateError as exc:
        if exc.code in _REFUSALS:
            return _refused(exc)
        raise
    print(f"finished: only CA sha256:{rec.current} is trusted")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from kedge.cloud import carotation
    from kedge.cloud.config import CloudDir

    st = carotation.status(CloudDir(args.data_dir), now=_now())
    if args.format == "json":
        print(json.dumps(st, indent=2))
        return 0
    print(f"phase: {st['phase']}")
    for label in ("current", "previous"):
        ca = st[label]
        if ca:
            print(f"{label} CA: {ca['subject']} sha256:{ca['fingerprint']} expires {ca['not_after']}")
    if st["phase"] == "rotating":
        nodes = st["nodes_on_previous_ca"]
        print(f"nodes on the previous CA ({len(nodes)}): " + (", ".join(nodes) if nodes else "none"))
    return 0
