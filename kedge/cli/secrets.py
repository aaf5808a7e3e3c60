"""``kedge secrets rotate-key|status|prune-keys --data-dir DIR``: the key that seals Secrets in ``api.db``.

Rotation, as with kube-apiserver's EncryptionConfiguration: ``rotate-key`` puts a fresh key
first in ``DIR/pki/encryption.json``; the next API server start re-seals every Secret under it;
``status`` shows how many stored rows each key still seals; ``prune-keys`` then drops the keys
that seal nothing (never the current one).
"""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("secrets", help="encryption at rest of Secrets in the API server store")
    ssub = p.add_subparsers(dest="secrets_command", metavar="SUBCOMMAND")
    for name, fn, help_text in (
        ("rotate-key", cmd_rotate, "put a fresh key first (used from the next API server start)"),
        ("status", cmd_status, "stored Secret rows per key"),
        ("prune-keys", cmd_prune, "drop keys that seal no stored row"),
    ):
        c = ssub.add_parser(name, help=help_text)
        c.add_argument("--data-dir", required=True, help="the cloud data dir")
        c.set_defaults(func=fn)


def _paths(args: argparse.Namespace):
    from pathlib import Path

    from kedge.apiserver.server import API_DB, ENCRYPTION_CONFIG

    root = Path(args.data_dir)
    return root / "pki" / ENCRYPTION_CONFIG, root / API_DB


def cmd_rotate(args: argparse.Namespace) -> int:
    from kedge.store import sealing

    config, _ = _paths(args)
    name = sealing.rotate_key(config)
    print(f"{name} now seals new writes; restart the API server (kedge cloudcore / kedge apiserver) to re-seal "
          f"the stored Secrets, then run `kedge secrets prune-keys --data-dir {args.data_dir}`")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from kedge.store import sealing

    config, db = _paths(args)
    usage = sealing.key_usage(config, db)
    for name, count in usage.items():
        print(f"{name}\t{count}")
    return 1 if usage["plaintext"] or usage["unknown"] else 0


def cmd_prune(args: argparse.Namespace) -> int:
    from kedge.store import sealing

    config, db = _paths(args)
    dropped = sealing.prune_keys(config, db)
    print("dropped: " + (", ".join(dropped) if dropped else "nothing (every listed key still seals rows)"))
    return 0
