"""``kedge release build|sign|keygen`` -- also runnable as ``python -m kedge.release``.

The standalone entry point (:func:`main`) builds only the release commands, so
``make release`` does not depend on every other CLI module importing cleanly.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path

from kedge.errors import ConfigError, KedgeError, PeerError, StateError, VerificationError


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "release", help="reproducible release build, provenance and offline signing",
        description="Build, describe and sign a kedge release.")
    add_commands(parser)


def add_commands(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="release_command", metavar="SUBCOMMAND", required=True)

    build = sub.add_parser("build", help="sdist + wheel + SBOM + SHA256SUMS + provenance + in-toto links",
                           description="Build the release of one commit from a clean clone.")
    build.add_argument("--out", required=True, type=Path, help="output directory (replaced if it holds a release)")
    build.add_argument("--source", type=Path, default=Path("."), help="git repository to build (default: .)")
    build.add_argument("--commit", default="HEAD", help="commit to build (default: HEAD)")
    build.add_argument("--repository", help="source repository URI recorded in the provenance "
                       "(default: from GitHub Actions, else origin remote, else file:// of the source)")
    build.add_argument("--ref", help="git ref recorded in the provenance (default: GITHUB_REF or the branch)")
    build.add_argument("--workflow-path", help="entry point recorded in the provenance (default: Makefile)")
    build.add_argument("--builder-id", help="builder id URI recorded in the provenance")
    build.add_argument("--invocation-id", help="invocation id recorded in the provenance")
    build.add_argument("--link-key", type=Path, help="P-256 key to sign in-toto links (default: ephemeral key)")
    build.add_argument("--extra", action="append", dest="extras", metavar="EXTRA",
                       help="optional extra whose dependencies the SBOM lists as optional (default: cloud)")
    build.add_argument("--no-image", dest="with_image", action="store_false",
                       help="leave out the cloudcore OCI image (it needs its pinned inputs, fetched or cached)")
    build.add_argument("--cache-dir", type=Path,
                       help="content-addressed cache of the image's pinned inputs (default: ~/.cache/kedge-release)")
    build.set_defaults(func=_cmd_build)

    lock = sub.add_parser("image-lock", help="pin the image's Debian packages and wheels (apt-get, PyPI)",
                          description="Write provenance/image.lock.json for the installed kedge[cloud].")
    lock.add_argument("--out", type=Path, default=Path("provenance/image.lock.json"), help="lock file to write")
    lock.set_defaults(func=_cmd_image_lock)

    sign = sub.add_parser("sign", help="DSSE-sign the provenance and sign the in-toto root layout",
                          description="Verify a release directory, then sign it with a local key.")
    sign.add_argument("--key", required=True, type=Path, help="ECDSA P-256 private key (PEM)")
    sign.add_argument("--in", dest="directory", required=True, type=Path, help="release directory")
    sign.add_argument("--layout-expires-days", type=int, default=365, help="root layout validity (days)")
    sign.add_argument("--functionary-key", type=Path,
                      help="public key the build signed its in-toto links with (pins it; default: trust in-toto/functionary.pub)")
    sign.set_defaults(func=_cmd_sign)

    check = sub.add_parser("verify-layout", help="in-toto verification of a signed release directory",
                           description="Verify the root layout, step links and final artifacts with in-toto.")
    check.add_argument("--in", dest="directory", required=True, type=Path, help="release directory")
    check.add_argument("--key", required=True, type=Path, help="release public key (PEM) that signed the layout")
    check.set_defaults(func=_cmd_verify_layout)

    keygen = sub.add_parser("keygen", help="create an ECDSA P-256 release key (0600) and KEY.pub")
    keygen.add_argument("--out", required=True, type=Path, help="private key path, e.g. release.pem")
    keygen.set_defaults(func=_cmd_keygen)


def _cmd_build(args: argparse.Namespace) -> int:
    from kedge.release.build import build_release

    result = build_release(
        args.out, source=args.source, commit=args.commit, repository=args.repository, ref=args.ref,
        workflow_path=args.workflow_path, builder_id=args.builder_id, invocation_id=args.invocation_id,
        link_key=args.link_key, extras=tuple(args.extras) if args.extras else ("cloud",),
        with_image=args.with_image, cache_dir=args.cache_dir,
    )
    for warning in result.warnings:
        print(f"kedge: warning: {warning}", file=sys.stderr)
    for name, digest in sorted(result.digests.items()):
        print(f"{digest}  {result.out_dir / name}")
    if result.manifest_digest:
        print(f"{result.out_dir / (result.image or '')}: image manifest {result.manifest_digest}", file=sys.stderr)
    print(f"commit {result.facts.commit} SOURCE_DATE_EPOCH={result.facts.source_date_epoch} "
          f"repository {result.facts.repository} ref {result.facts.ref}", file=sys.stderr)
    return 0


def _cmd_sign(args: argparse.Namespace) -> int:
    from kedge.release.sign import load_private_key, load_public_key, sign_release

    key = load_private_key(args.key)
    expected = load_public_key(args.functionary_key) if args.functionary_key else None
    result = sign_release(args.directory, key, now=dt.datetime.now(dt.timezone.utc),
                          layout_days=args.layout_expires_days, expected_functionary=expected)
    for path in result.envelopes:
        print(path)
    print(result.layout)
    return 0


def _cmd_verify_layout(args: argparse.Namespace) -> int:
    import os

    from kedge.release import intoto
    from kedge.release.sign import load_public_key

    key = load_public_key(args.key)
    directory = args.directory.resolve()
    if not directory.is_dir():
        raise ConfigError(f"{directory} is not a directory", code="bad_in_dir")
    previous = os.getcwd()
    os.chdir(directory)  # in-toto inspects the current directory; this process owns its cwd
    try:
        intoto.verify_in_cwd(Path(intoto.LAYOUT_NAME), key, Path(intoto.LINK_DIR))
    finally:
        os.chdir(previous)
    print(f"PASSED: in-toto layout, links and artifacts in {directory}")
    return 0


def _cmd_image_lock(args: argparse.Namespace) -> int:
    from kedge._internal.fsutil import atomic_write
    from kedge.release.image import make_lock

    lock = make_lock()
    atomic_write(args.out, lock.to_bytes())
    print(f"{args.out}: {len(lock.debs)} Debian packages, {len(lock.wheels)} wheels")
    return 0


def _cmd_keygen(args: argparse.Namespace) -> int:
    from kedge.release.sign import keygen

    pub = keygen(args.out)
    print(pub)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m kedge.release``; same exit codes as ``kedge``."""
    parser = argparse.ArgumentParser(prog="python -m kedge.release",
                                     description="Build, describe and sign a kedge release.")
    add_commands(parser)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except VerificationError as exc:
        print(f"kedge: {exc.code}: {exc}", file=sys.stderr)
        return 1
    except (ConfigError, StateError, PeerError) as exc:
        print(f"kedge: {exc.code}: {exc}", file=sys.stderr)
        return 2
    except KedgeError as exc:
        print(f"kedge: {exc.code}: {exc}", file=sys.stderr)
        return 1
