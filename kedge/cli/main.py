"""``kedge`` command line. Only this package calls ``sys.exit``.

Exit codes: 0 ok, 1 a check or verification failed, 2 usage or input error
(3 is used by ``kedge verify`` for an unsupported format).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from kedge import __version__
from kedge.errors import ConfigError, KedgeError, PeerError, StateError, VerificationError

# Each module defines ``register(subparsers)``; a parser sets ``func(args) -> int``.
COMMAND_MODULES = (
    "kedge.cli.cluster",
    "kedge.cli.audit",
    "kedge.cli.release",
    "kedge.cli.verify",
    "kedge.cli.apiserver",
    "kedge.cli.device",
    "kedge.cli.manifests",
    "kedge.cli.secrets",
    "kedge.cli.systemd",
    "kedge.cli.ca",
    "kedge.cli.backup",
)

# Which module registers which top-level command: running one command imports only its
# module, so ``kedge edgecore`` never loads the cloud-side or supply-chain libraries.
COMMAND_OWNERS = {
    "init": "kedge.cli.cluster", "cloudcore": "kedge.cli.cluster", "token": "kedge.cli.cluster",
    "join": "kedge.cli.cluster", "edgecore": "kedge.cli.cluster", "node": "kedge.cli.cluster",
    "up": "kedge.cli.cluster", "audit": "kedge.cli.audit", "release": "kedge.cli.release",
    "verify": "kedge.cli.verify", "conformance": "kedge.cli.verify", "apiserver": "kedge.cli.apiserver",
    "device": "kedge.cli.device",
    "manifests": "kedge.cli.manifests",
    "secrets": "kedge.cli.secrets",
    "systemd": "kedge.cli.systemd",
    "ca": "kedge.cli.ca",
    "backup": "kedge.cli.backup", "restore": "kedge.cli.backup",
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kedge", description="security-hardened KubeEdge")
    parser.add_argument("--version", action="version", version=f"kedge {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    owner = COMMAND_OWNERS.get(command or "")
    for name in (owner,) if owner else COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def _command_of(argv: list[str]) -> str | None:
    for arg in argv:
        if not arg.startswith("-"):
            return arg
    return None


def main(argv: list[str] | None = None) -> None:
    sys.exit(run(argv))


def run(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(_command_of(argv))
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: usage error (2) or --help (0)
        return int(exc.code or 0)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except VerificationError as exc:
        print(f"kedge: {exc.code}: {exc}", file=sys.stderr)
        return 3 if exc.code == "unsupported_format" else 1
    except (ConfigError, StateError, PeerError) as exc:
        print(f"kedge: {exc.code}: {exc}", file=sys.stderr)
        return 2
    except KedgeError as exc:
        print(f"kedge: {exc.code}: {exc}", file=sys.stderr)
        return 1
