"""The certificate endpoint (``https://H:10002``): CA discovery, bootstrap and renewal.

- ``GET /ca.crt``: the cluster CA bundle -- the issuing CA first, during a CA rotation
  followed by the previous one (joining edges pin one of them by the SHA-256 in the token).
- ``GET /ca-cross.crt``: during a rotation, the cross-certificates by which a joining edge
  checks the bundle's other CA against the one it pinned (:mod:`kedge.pki.rotation`).
- ``POST /edge.crt`` with ``Authorization: Bearer <token>`` and a PEM CSR: bootstrap.
  The token is single-use, bound to one node and short-lived; the server -- not the
  CSR -- decides subject, usages and validity.
- ``POST /edge.crt`` over mutual TLS with the node's current certificate: renewal for
  that same node (fresh key); refused once the node is revoked.

Issuance and revocation are serialised (:meth:`kedge.cloud.state.CloudState.record_cert`):
a certificate signed while its node is being revoked is recorded revoked and never handed
out. Successful renewals are rate-limited per node (``renewals_per_node_per_hour``, never
below four times what the node certificate validity needs: code ``renewal_rate_limited``,
429, audited); failed bootstrap attempts by :class:`BootstrapGate`; bodies are capped.

Failed attempts must not let anyone deny others (one source address is often many edges,
behind NAT or on one host), so a failure is charged to the credential the request proved, and
a request is refused (429 ``rate_limited``) only by the bucket it would be charged to
(:class:`BootstrapGate`):

- a **renewal** (a client certificate verified by TLS against the cluster CA) to that
  certificate: a revoked node retrying makes only itself wait, never another node or a
  joining edge; successful renewals have their own per-node rate limit;
- a bootstrap naming a **usable token** (well-formed, this cluster's CA hash, an id that
  exists, unused, unrevoked, unexpired: one primary-key read, no secret needed) to that
  token, across all sources: its wrong secrets, bad CSRs and node mismatches drain that
  token's bucket only. Guessing a token's 256-bit secret is bounded per token however many
  addresses guess; only someone who knows a token's id -- printed only with the token
  itself -- can make that one token wait;
- **anything else** (no token, malformed, another cluster's, unknown or spent id) to its
  source address and to one global bucket over all sources (so id guessing cannot scale
  with addresses either). A flood of these never delays a usable token or a renewal.

Whether an id is usable is observable (a usable id is never refused by its source's bucket);
ids are not secret (:mod:`kedge.pki.tokens`), the secret is.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import logging
import math
import time
from typing import Callable

from cryptography import x509

from kedge._internal.auditlog import AuditLog
from kedge._internal.http11 import Request, Response, serve_connection
from kedge._internal.ratelimit import KeyedLimiter, TokenBucket
from kedge.cloud.state import CloudState
from kedge.cloud.trust import ClusterTrust
from kedge.errors import ConfigError, KedgeError, PeerError
from kedge.limits import Limits
from kedge.pki import ca as pki
from kedge.pki import tokens

log = logging.getLogger(__name__)

RENEWAL_WINDOW = dt.timedelta(hours=1)  # the window renewals_per_node_per_hour counts in


class BootstrapGate:
    """Failed attempts at the endpoint, charged to what the request proved (module docstring).
    Pure: the caller passes ``now`` (seconds); nothing here reads a clock or does I/O.

    ``credential`` names what the request proved -- ``"token:<id>"`` for a usable token,
    ``"cert:<sha256 of its DER>"`` for a verified client certificate -- or is None."""

    def __init__(self, limits: Limits, *, now: float) -> None:
        self.per_source = KeyedLimiter(limits.bootstrap_fail_per_s, limits.bootstrap_fail_burst)
        self.per_credential = KeyedLimiter(limits.bootstrap_fail_per_s, limits.bootstrap_fail_burst)
        self.anonymous = TokenBucket(limits.bootstrap_fail_global_per_s, limits.bootstrap_fail_global_burst, now=now)

    def allowed(self, *, source: str, credential: str | None, now: float) -> bool:
        if credential is not None:
            return self.per_credential.allowed(credential, now)
        return self.per_source.allowed(source, now) and self.anonymous.wait_time(now) == 0.0

    def failed(self, *, source: str, credential: str | None, now: float) -> None:
        if credential is not None:
            self.per_credential.charge(credential, now)
        else:
            self.per_source.charge(source, now)
            self.anonymous.take(now)


class CertService:
    def __init__(
        self,
        *,
        ca_key=None,
        ca_cert: x509.Certificate | None = None,
        trust: ClusterTrust | None = None,
        state: CloudState,
        audit: AuditLog,
        limits: Limits,
        node_cert_validity: dt.timedelta,
        hub_url: Callable[[], str],
        clock: Callable[[], float] = time.time,
    ) -> None:
        if trust is None:
            if ca_key is None or ca_cert is None:
                raise ValueError("CertService needs a trust or a CA key and certificate")
            trust = ClusterTrust.fixed(ca_key, ca_cert)
        # Issues with the trust's issuing CA and trusts its bundle, both as they are now (CA
        # rotation changes them under a running endpoint).
        self.trust = trust
        self.state = state
        self.audit = audit
        self.limits = limits
        self.validity = node_cert_validity
        self.hub_url = hub_url
        self.clock = clock
        self.gate = BootstrapGate(limits, now=clock())

    @property
    def renewal_limit(self) -> int:
        """Certificates a node may be issued per hour: the configured limit, but never fewer than
        four times what a node renewing at 70 % of its certificate's lifetime needs."""
        needed = math.ceil(4 * RENEWAL_WINDOW.total_seconds() / max(self.validity.total_seconds() * 0.7, 1.0))
        return max(self.limits.renewals_per_node_per_hour, needed)

    @property
    def ca_cert(self) -> x509.Certificate:
        return self.trust.issuing_cert

    @property
    def ca_hash(self) -> str:
        return self.trust.issuing_fp

    def _now(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self.clock(), dt.timezone.utc)

    async def handle(self, req: Request) -> Response:
        path = req.target.split("?", 1)[0]
        self.trust.refresh()  # a few stats; reloads after `kedge ca rotate|finish`
        if path in ("/ca.crt", "/ca-cross.crt"):
            if req.method != "GET":
                return Response.error(405, "method_not_allowed")
            body = self.trust.bundle_pem if path == "/ca.crt" else self.trust.cross_pem
            if not body:
                return Response.error(404, "not_found")
            return Response(200, body, content_type="application/x-pem-file")
        if path == "/healthz":
            return Response(200, b"ok\n", content_type="text/plain")
        if path == "/edge.crt":
            if req.method != "POST":
                return Response.error(405, "method_not_allowed")
            return await self._edge_cert(req)
        return Response.error(404, "not_found")

    async def _edge_cert(self, req: Request) -> Response:
        renewal = req.peer_cert_der is not None
        event = "renewal" if renewal else "bootstrap"
        source = req.peer.rsplit(":", 1)[0]
        credential: str | None = None
        try:
            if req.peer_cert_der is not None:
                credential = "cert:" + hashlib.sha256(req.peer_cert_der).hexdigest()
                tok = None
            else:
                tok = self._bearer(req)
                token_id = await self._usable_token_id(tok)
                credential = None if token_id is None else "token:" + token_id
            if not self.gate.allowed(source=source, credential=credential, now=self.clock()):
                self.audit.write(event, peer=req.peer, result="refused", code="rate_limited")
                return Response.error(429, "rate_limited")
            if renewal:
                node, cert = await self._renew(req)
            elif isinstance(tok, tokens.BootstrapToken):
                node, cert = await self._bootstrap(req, tok)
            else:
                raise tok or PeerError("missing bearer token", code="token_missing")
        except PeerError as exc:
            self.gate.failed(source=source, credential=credential, now=self.clock())
            self.audit.write(event, peer=req.peer, result="refused", code=exc.code)
            if exc.code == "renewal_rate_limited":
                status = 429
            elif exc.code.startswith(("token_", "unauth", "not_a_node", "revoked", "cert_")):
                status = 401
            else:
                status = 400
            return Response.error(status, exc.code)
        serial = format(cert.serial_number, "x")
        self.audit.write(event, peer=req.peer, node=node, result="accepted",
                         serial=serial, not_after=cert.not_valid_after_utc.isoformat())
        return Response.json(200, {
            "node": node,
            "certificate": pki.cert_to_pem(cert).decode(),
            "ca": self.trust.bundle_pem.decode(),
            "cross": self.trust.cross_pem.decode(),
            "hub": self.hub_url(),
        })

    @staticmethod
    def _bearer(req: Request) -> tokens.BootstrapToken | PeerError | None:
        """The request's bootstrap token, the error parsing it gave, or None without one."""
        auth = req.headers.get("authorization", "")
        if not auth.startswith("Bearer "):
            return None
        try:
            return tokens.parse_token(auth[len("Bearer "):].strip())
        except PeerError as exc:
            return exc

    async def _usable_token_id(self, tok: tokens.BootstrapToken | PeerError | None) -> str | None:
        """``tok``'s id if it is a usable token of this cluster (no secret checked: that is
        :meth:`CloudState.consume_token`'s, under the write lock), else None."""
        if not isinstance(tok, tokens.BootstrapToken) or tok.ca_hash not in self.trust.fingerprints:
            return None
        usable = await asyncio.to_thread(self.state.token_usable, token_id=tok.token_id, now=self._now())
        return tok.token_id if usable else None

    def _precheck_csr(self, body: bytes) -> None:
        # Exactly the checks signing applies, run *before* a token is consumed, so a broken
        # request does not burn it. Raises CsrError (a PeerError) with a stable code.
        pki.check_node_csr(body, max_csr_bytes=self.limits.max_http_body_bytes)

    async def _issue(self, node: str, body: bytes, *, token_id: str | None = None,
                     renewed_from: int | None = None) -> x509.Certificate:
        """Sign, then record -- in the transaction that also checks the node was not revoked
        since its token or certificate was granted (and the renewal rate). Only a recorded
        certificate is handed out."""
        now = self._now()
        trust = self.trust
        ca_key, ca_cert, issuer = trust.issuing_key, trust.issuing_cert, trust.issuing_fp
        cert = pki.sign_node_csr(ca_key, ca_cert, body, node_name=node, now=now, validity=self.validity)
        limit = (self.renewal_limit, RENEWAL_WINDOW) if renewed_from is not None else None
        await asyncio.to_thread(
            self.state.record_cert, serial=cert.serial_number, node=node, not_before=cert.not_valid_before_utc,
            not_after=cert.not_valid_after_utc, issued_at=now, token_id=token_id, renewed_from=renewed_from,
            max_recent=limit, issuer=issuer)
        return cert

    async def _bootstrap(self, req: Request, tok: tokens.BootstrapToken) -> tuple[str, x509.Certificate]:
        if tok.ca_hash not in self.trust.fingerprints:  # during a CA rotation: either CA's pin
            raise PeerError("token belongs to another cluster", code="token_wrong_cluster")
        self._precheck_csr(req.body)
        expect = req.headers.get(tokens.NODE_HEADER)
        if expect is not None:
            try:
                expect = pki.validate_node_name(expect)
            except ConfigError as exc:
                raise PeerError("bad node name", code="bad_node_name") from exc
        node = await asyncio.to_thread(self.state.consume_token, token_id=tok.token_id, secret=tok.secret,
                                       now=self._now(), expect_node=expect)
        return node, await self._issue(node, req.body, token_id=tok.token_id)

    async def _renew(self, req: Request) -> tuple[str, x509.Certificate]:
        assert req.peer_cert_der is not None  # nosec B101 - guarded by caller
        current = x509.load_der_x509_certificate(req.peer_cert_der)  # already verified by TLS against the CA
        if self.trust.issuer_fp(current) is None:
            # TLS verified it against the bundle of its handshake; a CA retired since (kedge ca
            # finish) no longer vouches for it.
            raise PeerError("certificate of a retired CA", code="cert_untrusted_issuer")
        node = pki.node_name_from_cert(current)
        if await asyncio.to_thread(self.state.is_cert_revoked, node=node, serial=current.serial_number):
            raise PeerError("node certificate revoked", code="revoked")
        self._precheck_csr(req.body)
        return node, await self._issue(node, req.body, renewed_from=current.serial_number)


async def start_cert_server(service: CertService, ssl_ctx, host: str, port: int, limits: Limits) -> asyncio.Server:
    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await serve_connection(reader, writer, service.handle, limits)
        except asyncio.CancelledError:
            writer.close()  # server stopping
        except KedgeError:
            log.exception("cert endpoint: unexpected kedge error")
        except Exception:  # noqa: BLE001 - one bad connection must never take the endpoint down
            log.exception("cert endpoint: unexpected error")
            writer.close()

    return await asyncio.start_server(
        on_client, host, port, ssl=ssl_ctx, ssl_handshake_timeout=limits.handshake_timeout_s,
        limit=limits.max_http_header_bytes)
