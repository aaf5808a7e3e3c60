"""``kedge audit``: audit a cloud data dir, an edge data dir and/or live endpoints.

Exit codes: 0 no FAIL at or above ``--fail-on``; 1 such findings; 2 usage or input
error (bad flags, unreadable waiver file, missing directory); 3 the audit could not
complete (a probe or check failed to run) -- never a silent pass.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from kedge._internal import fsutil
from kedge.audit import render
from kedge.audit.model import Severity
from kedge.audit.runner import run_audit


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("audit", help="audit a kedge deployment (kube-bench style)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", help="cloud data directory (from kedge init)")
    p.add_argument("--edge-data-dir", help="edge data directory (from kedge join)")
    p.add_argument("--endpoint", action="append", default=[], metavar="URL",
                   help="listener to probe (https:// or wss://; ROLE=URL with ROLE hub|certs|api); "
                        "repeatable; default: every URL in DIR/endpoints.json")
    p.add_argument("--format", choices=render.FORMATS, default="text")
    p.add_argument("--fail-on", default="high", choices=[s.value for s in Severity],
                   help="lowest severity of a FAIL that makes the exit code 1 (default high)")
    p.add_argument("--output", help="write the report to this file instead of stdout")
    p.add_argument("--waivers", help="YAML waiver file (see security/audit-waivers.example.yaml)")
    p.add_argument("--systemd-dir", action="append", default=[], metavar="DIR",
                   help="where the installed kedge-cloudcore.service/kedge-edgecore.service (and their .d/ "
                        "drop-ins) are; repeatable, highest precedence first; default: systemd's system unit "
                        "directories (/etc/systemd/system, /run/systemd/system, /usr/lib/systemd/system, ...)")
    p.add_argument("--probe-timeout", type=float, default=3.0, help=argparse.SUPPRESS)
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    if not (args.data_dir or args.edge_data_dir or args.endpoint):
        print("kedge audit: give --data-dir, --edge-data-dir and/or --endpoint", file=sys.stderr)
        return 2
    if not 0 < args.probe_timeout <= 60:
        print("kedge audit: --probe-timeout must be in (0, 60]", file=sys.stderr)
        return 2
    report = run_audit(data_dir=args.data_dir, edge_data_dir=args.edge_data_dir, endpoints=args.endpoint,
                       waiver_file=args.waivers, probe_timeout=args.probe_timeout,
                       systemd_dirs=args.systemd_dir)
    text = render.render(report, args.format)
    if args.output:
        fsutil.atomic_write(args.output, text.encode(), mode=fsutil.PRIVATE_FILE)
    else:
        sys.stdout.write(text)
    fail_on = Severity.parse(args.fail_on)
    code = report.exit_code(fail_on)
    if code == 3:
        print("kedge audit: incomplete -- some probes or checks could not run (see ERROR results)",
              file=sys.stderr)
    return code
