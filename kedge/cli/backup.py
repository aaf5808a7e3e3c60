"""``kedge backup`` / ``kedge restore``: encrypted backups of a cloud data dir.

    kedge backup --new-key F                                   a new 32-byte key file (0600)
    kedge backup --data-dir DIR --out FILE [--key-file F | --passphrase-file F]
    kedge restore --data-dir NEWDIR --from FILE [--key-file F | --passphrase-file F]

Without ``--key-file`` or ``--passphrase-file`` the key is ``$KEDGE_BACKUP_KEY_FILE`` or
``~/.config/kedge/backup.key``; ``kedge backup`` creates it there (0600) the first time and says
so -- keep a copy off this host: without the key the backup cannot be restored.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kedge.backup.archive import KeySource


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    b = sub.add_parser("backup", help="encrypted snapshot of a cloud data dir (safe while cloudcore runs)")
    b.add_argument("--data-dir", help="the cloud data dir to back up")
    b.add_argument("--out", help="the backup file to create (never overwritten)")
    b.add_argument("--new-key", metavar="F", help="create a new key file F (0600); alone, or to use at once")
    _key_options(b)
    b.set_defaults(func=cmd_backup)
    r = sub.add_parser("restore", help="restore a backup into a new or empty cloud data dir")
    r.add_argument("--data-dir", required=True, help="where to restore (must not exist, or be empty)")
    r.add_argument("--from", dest="src", required=True, metavar="FILE", help="the backup file")
    _key_options(r)
    r.set_defaults(func=cmd_restore)


def _key_options(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("--key-file", metavar="F", help="32-byte key, 64 hex digits, mode 0600 (default: "
                   "$KEDGE_BACKUP_KEY_FILE or ~/.config/kedge/backup.key)")
    g.add_argument("--passphrase-file", metavar="F", help="a passphrase (first line, 12+ bytes, mode 0600), "
                   "stretched with scrypt")


def _key(args: argparse.Namespace, *, create: bool) -> KeySource:
    from kedge.backup import archive

    if args.passphrase_file:
        return archive.read_passphrase_file(args.passphrase_file)
    path = args.key_file
    if path is None:
        path = archive.default_key_file()
        if create and not path.exists():
            archive.create_key_file(path)
            print(f"kedge: created the backup key {path} (0600); keep a copy off this host -- "
                  "without it this backup cannot be restored", file=sys.stderr)
    return archive.read_key_file(path)


def cmd_backup(args: argparse.Namespace) -> int:
    from kedge.backup import archive
    from kedge.errors import ConfigError

    if args.new_key:
        if args.key_file or args.passphrase_file:
            raise ConfigError("--new-key creates the key to use: give it without --key-file/--passphrase-file")
        archive.create_key_file(args.new_key)
        print(f"created {args.new_key} (0600); keep a copy off this host")
        args.key_file = args.new_key
        if not args.data_dir and not args.out:
            return 0
    if not args.data_dir or not args.out:
        raise ConfigError("kedge backup needs --data-dir DIR and --out FILE")
    summary = archive.create_backup(args.data_dir, args.out, _key(args, create=True))
    for item in summary["skipped"]:
        print(f"kedge: not backed up: {item}", file=sys.stderr)
    print(f"backed up {summary['files']} files ({summary['bytes']} bytes) to {args.out}; sha256 {summary['sha256']}")
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    from kedge.backup import archive

    summary = archive.restore_backup(args.src, args.data_dir, _key(args, create=False))
    print(f"restored {summary['files']} files ({summary['bytes']} bytes, backed up {summary['created']} by kedge "
          f"{summary['kedge']}) into {args.data_dir}")
    return 0
