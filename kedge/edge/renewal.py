"""Node certificate renewal, run by EdgeHub in a short-lived child process.

Renewing needs ``cryptography`` (a new key, the CSR, checking what the cloud issued).
Imported into edgecore it would stay resident -- some 8-10 MiB, about a quarter of an idle
edge -- for the rest of the process's life, and with 30-day certificates every edge renews
within its first month. So :class:`kedge.edge.hub.EdgeHub` runs
``python -m kedge.edge.renewal EDGEDIR`` and waits for it. The child does exactly what an
in-process renewal did:

1. connect to the certificate endpoint over mutual TLS with the node's current identity
   (pinned cluster CA, host name checked);
2. send a CSR for a fresh key; during a CA rotation the response carries the cloud's CA
   bundle, which is pinned first if :func:`kedge.pki.rotation.accept_bundle_pem` accepts it
   against the pinned one (a certificate of the new CA is only ever installed by a node that
   trusts the new CA); check the issued certificate (signed by a pinned CA, for our key, for
   our node -- :func:`kedge.edge.join.check_issued`);
3. install the new key and certificate as a pair, recoverably
   (:meth:`kedge.edge.config.EdgeDir.install_identity`).

It prints one JSON line: ``{"ok": true}`` or ``{"ok": false, "kind": ..., "code": ...,
"message": ...}`` (never key material), and exits 0 or 1.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from kedge.errors import KedgeError, PeerError, VerificationError

MAX_RESULT_BYTES = 4096


def renew_identity(edge_dir: str | os.PathLike[str]) -> None:
    """Renew this node's certificate over mutual TLS and install the new pair (blocking)."""
    import datetime as dt

    from kedge import tls
    from kedge._internal import fsutil, httpclient
    from kedge.pki.rotation import accept_bundle_pem
    from kedge.edge.config import EdgeDir
    from kedge.edge.join import check_issued
    from kedge.pki import ca as pki

    d = EdgeDir(edge_dir)
    cfg = d.load_config()
    ctx = tls.client_context(d.ca_crt, d.node_crt, d.node_key)
    key = pki.generate_key()
    resp = httpclient.request_json(cfg.certs + "/edge.crt", ctx, method="POST",
                                   body=pki.make_csr(key, cfg.node_name),
                                   headers={"Content-Type": "application/pkcs10"})
    pinned = d.ca_crt.read_bytes()
    trust = pinned
    offered, cross = (resp.get("ca"), resp.get("cross", "")) if isinstance(resp, dict) else (None, None)
    if isinstance(offered, str) and isinstance(cross, str) and offered.encode() != pinned:
        trust = accept_bundle_pem(pinned, offered.encode(), cross.encode(),
                                        now=dt.datetime.now(dt.timezone.utc))
    cert = check_issued(resp, trust, key, cfg.node_name)
    if trust != pinned:
        fsutil.atomic_write(d.ca_crt, trust)  # before the identity it vouches for
    d.install_identity(pki.key_to_pem(key), pki.cert_to_pem(cert))


def result_of(exc: BaseException | None) -> dict[str, Any]:
    """The child's report: which kind of error, its stable code and a short message."""
    if exc is None:
        return {"ok": True}
    if isinstance(exc, VerificationError):
        kind = "verification"
    elif isinstance(exc, PeerError):
        kind = "peer"
    elif isinstance(exc, KedgeError):
        kind = "local"
    else:
        kind = "os" if isinstance(exc, OSError) else "internal"
    code = exc.code if isinstance(exc, KedgeError) else type(exc).__name__
    return {"ok": False, "kind": kind, "code": str(code)[:64], "message": str(exc)[:512]}


def raise_result(data: bytes, returncode: int | None) -> None:
    """In the parent: return if the child renewed, else raise the error it reported."""
    from kedge.errors import LocalError

    try:
        res = json.loads(data[:MAX_RESULT_BYTES].decode("utf-8", "replace").strip().splitlines()[-1])
    except (ValueError, IndexError):
        res = None
    if not isinstance(res, dict):
        raise LocalError(f"renewal process gave no result (exit {returncode})", code="renewal_failed")
    if res.get("ok") is True and returncode == 0:
        return
    code = res.get("code") if isinstance(res.get("code"), str) else "renewal_failed"
    message = str(res.get("message", ""))[:512] or code
    cls = {"verification": VerificationError, "peer": PeerError}.get(res.get("kind"), LocalError)
    raise cls(message, code=code)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m kedge.edge.renewal EDGEDIR", file=sys.stderr)
        return 2
    err: BaseException | None = None
    try:
        renew_identity(args[0])
    except Exception as exc:  # noqa: BLE001 - every failure is reported to the parent as data
        err = exc
    print(json.dumps(result_of(err)), flush=True)
    return 0 if err is None else 1


if __name__ == "__main__":
    sys.exit(main())
