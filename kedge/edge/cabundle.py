"""The edge's pinned cluster CA bundle (``EDGEDIR/pki/ca.crt``) during a CA rotation.

The pinned CA is the edge's root of trust: it authenticates the hub and the certificate
endpoint, so whoever could replace it could impersonate the cloud to this node. A bundle is
therefore installed only when

1. it arrived over a channel the current pin authenticated (the tunnel, or the renewal
   response, both mutual TLS against ``ca.crt``; or the token's pin at join), and
2. :func:`kedge.pki.rotation.accept_bundle` accepts it against what the edge trusts now: every
   CA in it is already trusted or cross-certified by a trusted CA's key, and at least one
   trusted CA stays.

So a hub key alone (stolen, or a server certificate mis-issued) cannot plant a CA on edges;
only the holder of a trusted CA's key can vouch for a new one. Checking needs ``cryptography``,
which edgecore never loads: EdgeHub writes the offer to ``pki/ca-offer.json`` (0600) and runs
``python -m kedge.edge.cabundle EDGEDIR``, which checks it and replaces ``ca.crt`` atomically
(one JSON line reports the outcome, as :mod:`kedge.edge.renewal` does).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
from pathlib import Path
from typing import Any

from kedge.errors import PeerError
from kedge.limits import CA_BUNDLE_MAX_BYTES

OFFER_FILE = "ca-offer.json"


def offer_path(edge_dir: str | os.PathLike[str]) -> Path:
    return Path(edge_dir) / "pki" / OFFER_FILE


def parse_offer(content: Any) -> tuple[bytes, bytes]:
    """``(bundle_pem, cross_pem)`` from a ``cabundle`` message's content; bounded, no parsing of
    certificates here (edgecore never loads ``cryptography``)."""
    if not isinstance(content, dict) or set(content) != {"bundle", "cross"}:
        raise PeerError("malformed CA bundle offer", code="bundle_malformed")
    bundle, cross = content["bundle"], content["cross"]
    if not isinstance(bundle, str) or not isinstance(cross, str) or not bundle:
        raise PeerError("malformed CA bundle offer", code="bundle_malformed")
    if len(bundle) + len(cross) > CA_BUNDLE_MAX_BYTES or not (bundle + cross).isascii():
        raise PeerError("CA bundle offer too large", code="bundle_too_large")
    return bundle.encode("ascii"), cross.encode("ascii")


def checked_bundle(trusted_pem: bytes, bundle_pem: bytes, cross_pem: bytes, *, now: dt.datetime) -> bytes:
    """The PEM to pin instead of ``trusted_pem``, or ``BundleError`` (a VerificationError):
    :func:`kedge.pki.rotation.accept_bundle_pem`, imported only when called."""
    from kedge.pki.rotation import accept_bundle_pem

    return accept_bundle_pem(trusted_pem, bundle_pem, cross_pem, now=now)


def install(edge_dir: str | os.PathLike[str], bundle_pem: bytes, cross_pem: bytes, *,
            now: dt.datetime | None = None) -> bool:
    """Check ``bundle_pem`` against the pinned bundle and pin it instead; False if it is what is
    pinned already. Blocking; loads ``cryptography`` (children and ``kedge join`` only)."""
    from kedge._internal import fsutil
    from kedge.edge.config import EdgeDir

    d = EdgeDir(edge_dir)
    current = fsutil.read_bounded(d.ca_crt, CA_BUNDLE_MAX_BYTES)
    pem = checked_bundle(current, bundle_pem, cross_pem, now=now or dt.datetime.now(dt.timezone.utc))
    if pem == current:
        return False
    fsutil.atomic_write(d.ca_crt, pem)
    return True


def install_offer(edge_dir: str | os.PathLike[str]) -> bool:
    """The child's work: install the offer EdgeHub left in ``pki/ca-offer.json``, then remove it."""
    from kedge._internal import fsutil

    path = offer_path(edge_dir)
    try:
        data = json.loads(fsutil.read_bounded(path, 2 * CA_BUNDLE_MAX_BYTES))
        bundle, cross = parse_offer(data)
        return install(edge_dir, bundle, cross)
    finally:
        path.unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    from kedge.edge.renewal import result_of

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m kedge.edge.cabundle EDGEDIR", file=sys.stderr)
        return 2
    err: BaseException | None = None
    installed = False
    try:
        installed = install_offer(args[0])
    except Exception as exc:  # noqa: BLE001 - every failure is reported to the parent as data
        err = exc
    report = result_of(err)
    if err is None:
        report["installed"] = installed
    print(json.dumps(report), flush=True)
    return 0 if err is None else 1


if __name__ == "__main__":
    sys.exit(main())
