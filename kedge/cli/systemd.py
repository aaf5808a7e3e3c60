"""``kedge systemd``: write a hardened systemd unit for cloudcore or edgecore.

Usage: ``kedge systemd --role cloud|edge --data-dir DIR --out OUTDIR`` writes
``OUTDIR/kedge-cloudcore.service`` or ``OUTDIR/kedge-edgecore.service`` (mode 0644; a
unit holds no secret). Nothing is installed or started: copy the unit to
``/etc/systemd/system``, then ``systemctl daemon-reload`` and ``systemctl enable --now``.
The unit's header says what the operator prepares (cloudcore's user and data dir
ownership); ``kedge audit`` checks installed units against the same policy.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    from kedge.systemd.policy import ROLES
    from kedge.systemd.units import DEFAULT_USER

    p = sub.add_parser("systemd", help="write a hardened systemd unit for cloudcore or edgecore",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--role", required=True, choices=ROLES)
    p.add_argument("--data-dir", required=True, help="the data dir the service runs on (need not exist yet)")
    p.add_argument("--out", required=True, help="directory to write the unit into (created if missing)")
    p.add_argument("--kedge-path", help="absolute path of the installed kedge executable "
                                        "(default: the kedge running this command)")
    p.add_argument("--user", default=DEFAULT_USER, help=f"cloudcore's system user (default {DEFAULT_USER})")
    p.add_argument("--group", default="", help="cloudcore's group (default: the user's name)")
    p.add_argument("--read-write-path", action="append", default=[], metavar="PATH",
                   help="another place the service writes (e.g. an audit log outside the data dir); repeatable")
    p.set_defaults(func=cmd_systemd)


def default_kedge_path() -> str | None:
    """The ``kedge`` executable running now, else the one on PATH, else the one beside Python."""
    argv0 = sys.argv[0] if sys.argv else ""
    if os.path.basename(argv0) == "kedge" and os.access(argv0, os.X_OK):
        return os.path.abspath(argv0)
    found = shutil.which("kedge")
    if found:
        return os.path.abspath(found)
    beside = Path(sys.executable).parent / "kedge"
    return str(beside.absolute()) if os.access(beside, os.X_OK) else None


def interpreter_of(script: str) -> str:
    """The Python a console script runs on (its ``#!`` line), symlinks resolved; "" if unknown."""
    try:
        with open(script, "rb") as fh:
            first = fh.readline(4096)
    except OSError:
        return ""
    if not first.startswith(b"#!"):
        return ""
    words = first[2:].decode("utf-8", "replace").split()
    return os.path.realpath(words[0]) if words and words[0].startswith("/") else ""


def cmd_systemd(args: argparse.Namespace) -> int:
    from kedge._internal import fsutil
    from kedge.systemd.units import UnitOptions, placement_notes, render, unit_name

    kedge_path = args.kedge_path or default_kedge_path()
    if not kedge_path:
        print("kedge systemd: cannot tell where kedge is installed; give --kedge-path", file=sys.stderr)
        return 2
    opts = UnitOptions(role=args.role, data_dir=os.path.abspath(args.data_dir),
                       kedge_path=os.path.abspath(kedge_path), user=args.user, group=args.group,
                       read_write_paths=tuple(os.path.abspath(p) for p in args.read_write_path),
                       interpreter=interpreter_of(os.path.abspath(kedge_path)))
    if not os.access(opts.kedge_path, os.X_OK):
        print(f"kedge systemd: warning: {opts.kedge_path} is not an executable here", file=sys.stderr)
    for note in placement_notes(opts):
        print(f"kedge systemd: note: {note}", file=sys.stderr)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    target = out / unit_name(opts.role)
    fsutil.atomic_write(target, render(opts).encode(), mode=fsutil.PUBLIC_FILE)
    print(target)
    return 0
