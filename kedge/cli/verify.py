"""``kedge verify`` (slsa-verifier-compatible) and ``kedge conformance verify-bundle``.

Thin shell: parse flags, call :mod:`kedge.verify.api`, print. Exit codes follow
slsa-verifier: 0 verified, 1 failed, 2 usage/input error, 3 unsupported format
(``kedge.cli.main`` maps the raised error's code to the exit status).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from typing import Any

from kedge.errors import ConfigError, KedgeError, VerificationError

_log = logging.getLogger(__name__)


def _input_pair(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError("expected KEY=VALUE")
    return key, value


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "verify",
        help="verify an artifact's SLSA provenance offline",
        description="Verify SLSA provenance (Sigstore bundle, GitHub attestation, PEP 740 or "
        "key-signed DSSE envelope) for ARTIFACT, offline, against a pinned Sigstore trust root.",
    )
    p.add_argument("artifact", metavar="ARTIFACT|sha256:HEX")
    p.add_argument("--provenance-path", required=True, metavar="FILE")
    p.add_argument("--source-uri", required=True, metavar="URI", help="e.g. github.com/OWNER/REPO")
    ref = p.add_mutually_exclusive_group()
    ref.add_argument("--source-branch", metavar="B")
    ref.add_argument("--source-tag", metavar="T")
    ref.add_argument("--source-versioned-tag", metavar="V", help="semver: v1, v1.2 or v1.2.3")
    p.add_argument("--builder-id", metavar="ID", help="builder workflow, optionally @version")
    p.add_argument(
        "--build-workflow-input", action="append", type=_input_pair, default=[], metavar="K=V"
    )
    p.add_argument("--print-provenance", action="store_true", help="print the verified statement")
    p.add_argument("--key", metavar="PEM", help="verify a DSSE envelope with this ECDSA P-256 public key")
    p.add_argument("--trusted-root", metavar="FILE", help="replace the vendored Sigstore trust root")
    p.add_argument("--json", action="store_true", help="machine-readable result on stdout")
    p.set_defaults(func=_cmd_verify)

    conf = subparsers.add_parser("conformance", help="sigstore-conformance client protocol")
    csub = conf.add_subparsers(dest="conformance_command", metavar="COMMAND")
    vb = csub.add_parser("verify-bundle", help="verify a Sigstore bundle")
    vb.add_argument("--bundle", required=True, metavar="FILE")
    vb.add_argument("--certificate-identity", metavar="ID")
    vb.add_argument("--certificate-oidc-issuer", metavar="URL")
    vb.add_argument("--key", metavar="PEM")
    vb.add_argument("--trusted-root", metavar="FILE")
    vb.add_argument("artifact", metavar="FILE|sha256:HEX")
    vb.set_defaults(func=_cmd_verify_bundle)


def _guard(fn: Any) -> Any:
    """Turn unexpected exceptions into a verification failure: never pass, never trace to users."""
    try:
        return fn()
    except KedgeError:
        raise
    except Exception as exc:  # noqa: BLE001 - fail closed on anything unforeseen
        _log.debug("unexpected error during verification", exc_info=True)
        raise VerificationError(f"verification aborted ({type(exc).__name__})", code="verification_error") from exc


def _cmd_verify(args: argparse.Namespace) -> int:
    from kedge.verify import api, policy

    try:
        try:
            opts = policy.SlsaOptions(
                artifact_sha256=api.artifact_digest(args.artifact),
                source_uri=args.source_uri,
                source_branch=args.source_branch,
                source_tag=args.source_tag,
                source_versioned_tag=args.source_versioned_tag,
                builder_id=args.builder_id,
                workflow_inputs=tuple(args.build_workflow_input),
            )
        except ValueError as exc:
            raise ConfigError(str(exc), code="usage") from exc
        key = api.load_public_key(args.key) if args.key else None
        outcome = _guard(
            lambda: api.verify_provenance_file(
                args.provenance_path, opts, trusted_root=args.trusted_root, key=key
            )
        )
    except VerificationError as exc:
        print(f"FAILED: SLSA verification failed: {exc.code}", file=sys.stderr)
        if args.json:
            print(json.dumps({"result": "FAILED", "code": exc.code, "message": str(exc)}))
        raise
    res = outcome.result
    print(f"Verified build using builder {res.builder_id} at commit {res.source_commit}", file=sys.stderr)
    if args.print_provenance:
        sys.stdout.write(outcome.statement.decode("utf-8", "replace") + "\n")
    if args.json:
        doc = {"result": "PASSED", "format": outcome.fmt, **dataclasses.asdict(res)}
        print(json.dumps(doc, sort_keys=True))
    print("PASSED: SLSA verification passed", file=sys.stderr)
    return 0


def _cmd_verify_bundle(args: argparse.Namespace) -> int:
    from kedge.verify import api
    from kedge.verify._limits import DEFAULT
    from kedge.verify.trust import read_bounded

    if args.key and (args.certificate_identity or args.certificate_oidc_issuer):
        raise ConfigError("use --key or --certificate-identity/--certificate-oidc-issuer, not both", code="usage")
    if not args.key and not (args.certificate_identity and args.certificate_oidc_issuer):
        raise ConfigError("need --certificate-identity and --certificate-oidc-issuer, or --key", code="usage")
    digest = api.artifact_digest(args.artifact)
    key = api.load_public_key(args.key) if args.key else None
    data = read_bounded(args.bundle, DEFAULT.max_file_bytes, "bundle")
    kind = _guard(
        lambda: api.conformance_verify(
            data,
            digest,
            identity=args.certificate_identity,
            issuer=args.certificate_oidc_issuer,
            key=key,
            trusted_root=args.trusted_root,
        )
    )
    print(f"OK: {args.artifact} ({kind})", file=sys.stderr)
    return 0
