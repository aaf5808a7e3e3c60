"""HTTPS shell of the API server: asyncio + h11 over TLS, x509 client-cert authentication.

The shell only feeds bytes to h11 (through kedge's one h11 shell,
:class:`kedge._internal.http11.ServerConnection`), enforces the bounds (header bytes, body bytes,
read timeouts, connection count, watch backlog), authenticates the client certificate
(already verified against the cluster CA by TLS; here: not revoked, CN/O -> user and
groups) and hands a :class:`kedge.apiserver.api.Request` to the API. Anonymous
requests are answered ``401`` -- there is no anonymous user.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as _dt
import json
import logging
import os
import ssl
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, AsyncIterator, Callable

import h11
from cryptography.x509.oid import NameOID

from kedge._internal.http11 import BodyTooLarge, ServerConnection
from kedge.apiserver.api import API
from kedge.apiserver.model import LogStream, Request, Response, User, _dumps, warning_header_values
from kedge.apiserver.watch import Watch
from kedge.apiserver.status import status_body
from kedge.authz.rbac import AUTHENTICATED
from kedge.errors import KedgeError
from kedge.limits import DEFAULT, Limits
from kedge.limits import (  # bounds on what a client sends, under this module's names
    API_BODY_TIMEOUT_S as BODY_TIMEOUT_S,
    API_IDLE_KEEPALIVE_S as IDLE_KEEPALIVE_S,
    API_LINGER_MAX_BYTES as LINGER_MAX_BYTES,
    API_LINGER_S as LINGER_S,
    API_MAX_BODY_BYTES as MAX_API_BODY_BYTES,
    API_MAX_CONNECTIONS as MAX_CONNECTIONS,
    API_MAX_HEADERS as MAX_HEADERS,
    API_WRITE_TIMEOUT_S as WRITE_TIMEOUT_S,
)
from kedge.pki import ca as pki
from kedge.pki import crl as crl_mod

if TYPE_CHECKING:
    from kedge.pki.crl import CrlKeeper

log = logging.getLogger(__name__)

BOOKMARK_INTERVAL_S = 60.0
READ_CHUNK = 64 * 1024
AUDIT_MAX_BYTES = 100 * 1024 * 1024
# Rotated generations kept: under device load (1,000 status writes/s, ~0.5 KB a record) one file
# fills in about 3.5 minutes, so one backup alone would keep only minutes of history.
AUDIT_KEEP_FILES = 5
# Open watches and log streams are re-authenticated this often: a revoked certificate (CRL) or
# a service-account token whose pod or account is gone ends its streams within about this long
# (the requirement is 2 s). Bearer tokens cost two store reads each, so they are re-checked less often.
REVOCATION_POLL_S = 0.25
BEARER_RECHECK_S = 1.0


class RevocationList:
    """The CA's CRL (``pki/crl.pem``), reloaded when the file changes; fails closed.

    A certificate is refused (:meth:`refuses`) if its serial is listed -- or if the CRL is
    missing, unreadable, not signed by the cluster CA or past its ``nextUpdate``: then
    nothing can be known about revocation and every client certificate is refused
    (:attr:`error` says why, logged once per cause). Every question costs one ``stat`` of
    the file (about a microsecond); it is parsed and verified again only when it changed.
    :attr:`generation` grows whenever what the list refuses may have changed; the server's
    revocation watcher follows it.
    """

    def __init__(self, crl_path: Path | None, ca_path: Path, *, clock: Callable[[], float] = time.time) -> None:
        self.crl_path, self.ca_path = crl_path, ca_path
        self.clock = clock
        self._stamp: Any = None  # (mtime_ns, size, inode) of the loaded CRL and CA bundle
        self._view: crl_mod.CrlView | None = None
        self._load_error: str | None = None
        self._logged: str | None = None
        self.generation = 0
        # Common names of the CAs in the trust bundle (``ca_path``) as last loaded: a CA rotation
        # gives every cluster CA its own (kedge.pki.rotation.ca_name).
        self._issuers: frozenset[str] | None = None

    # -- queries ---------------------------------------------------------------

    def refuses(self, serial: int | None, issuer: str | None = None) -> bool:
        """Whether a client certificate with ``serial`` must be refused now (fail closed).

        ``issuer``: the common name of the CA that issued it (TLS verified the chain when the
        connection was made); a CA no longer in the trust bundle (``kedge ca finish``) makes
        the certificate refused on connections that outlive its retirement."""
        if self.crl_path is None:
            return False  # no CRL configured at all (tests of the bare shell)
        if self.error is not None:  # refreshes the view
            return True
        if issuer is not None and self._issuers is not None and issuer not in self._issuers:
            return True
        return serial is None or (self._view is not None and serial in self._view.serials)

    def retired(self, issuer: str | None) -> bool:
        """Whether ``issuer`` (a CA's common name) has left the trust bundle (CA rotation)."""
        self._refresh()
        return issuer is not None and self._issuers is not None and issuer not in self._issuers

    def revoked(self, serial: int) -> bool:
        """Whether ``serial`` is listed (without the fail-closed part; see :meth:`refuses`)."""
        self._refresh()
        return self._view is not None and serial in self._view.serials

    @property
    def error(self) -> str | None:
        """Why no certificate can be trusted now (a :class:`kedge.pki.crl.CrlError` code), or None."""
        if self.crl_path is None:
            return None
        self._refresh()
        code = self._load_error
        if code is None and self._view is not None and self._view.expired(self._now()):
            code = "crl_expired"
        if code != self._logged:
            self._logged = code
            if code is not None:
                self.generation += 1
                log.error("CRL %s cannot be trusted (%s): refusing every client certificate", self.crl_path, code)
            else:
                log.info("CRL %s loaded: %d revoked serial(s)", self.crl_path, len(self._view.serials) if self._view else 0)
        return code

    @property
    def fail_closed(self) -> bool:
        return self.error is not None

    # -- loading ---------------------------------------------------------------

    def _now(self) -> _dt.datetime:
        return _dt.datetime.fromtimestamp(self.clock(), _dt.timezone.utc)

    def _refresh(self) -> None:
        if self.crl_path is None:
            return
        stamp: Any = []
        for path in (self.crl_path, self.ca_path):  # the CA bundle changes with a CA rotation
            try:
                st = os.stat(path)
            except FileNotFoundError:
                stamp.append(None)
            except OSError:
                stamp.append((-1, -1, -1))
            else:
                stamp.append((st.st_mtime_ns, st.st_size, st.st_ino))
        stamp = tuple(stamp)
        if stamp == self._stamp and (self._view is not None or self._load_error is not None):
            return
        self._stamp = stamp
        try:
            issuers = pki.load_cert_bundle_file(self.ca_path)
            self._issuers = frozenset(str(a.value) for c in issuers
                                      for a in c.subject.get_attributes_for_oid(NameOID.COMMON_NAME))
            view = crl_mod.load_crl_file(self.crl_path, issuers, now=self._now())
        except crl_mod.CrlError as exc:
            self._view, self._load_error = None, exc.code
        except pki.PemError:
            self._view, self._load_error = None, "crl_ca_unreadable"
        else:
            self._view, self._load_error = view, None
        self.generation += 1


def issuer_cn(peercert: dict[str, Any] | None) -> str | None:
    """The issuer's common name in a (verified) peer certificate, or None."""
    for rdn in (peercert or {}).get("issuer", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return None


def user_from_cert(peercert: dict[str, Any] | None) -> tuple[User | None, int | None]:
    """CN -> user name, every O -> a group (plus ``system:authenticated``)."""
    if not peercert:
        return None, None
    cn, orgs = None, []
    for rdn in peercert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                cn = value
            elif key == "organizationName":
                orgs.append(value)
    if not cn:
        return None, None
    try:
        serial = int(peercert.get("serialNumber", ""), 16)
    except ValueError:
        return None, None
    groups = tuple(dict.fromkeys(orgs + [AUTHENTICATED]))
    return User(cn, groups), serial


class ApiServer:
    """Listens on ``host:port`` (0 = any free port) and serves the API until stopped."""

    def __init__(self, api: API, ssl_context: ssl.SSLContext, *, host: str = "127.0.0.1", port: int = 0,
                 limits: Limits = DEFAULT, revocations: RevocationList | None = None,
                 audit_path: Path | None = None, crl_keeper: "CrlKeeper | None" = None) -> None:
        self.api = api
        self.ssl_context = ssl_context
        self.host, self.port = host, port
        self.limits = limits
        self.revocations = revocations
        self.crl_keeper = crl_keeper
        self._server: asyncio.AbstractServer | None = None
        self._conns: set[asyncio.Task[Any]] = set()
        self._certless: dict[str, int] = {}  # source address -> open connections without a client certificate
        self._streams: set[_Connection] = set()  # connections serving a watch or a log stream
        self._watcher: asyncio.Task[None] | None = None
        self._audit_fd: int | None = None
        self._audit_path = audit_path
        self._audit_bytes = 0
        if audit_path is not None:
            self._open_audit()
        # Metrics hook: called with (verb, HTTP status, seconds) once each request is answered
        # (a watch or log stream: once it is established). Set by cloudcore's metrics.
        self.on_request: Callable[[str, int, float], None] | None = None

    async def start(self) -> int:
        self._server = await asyncio.start_server(
            self._on_connect, self.host, self.port, ssl=self.ssl_context,
            ssl_handshake_timeout=self.limits.handshake_timeout_s, limit=READ_CHUNK, backlog=512)
        self.port = self._server.sockets[0].getsockname()[1]
        self._watcher = asyncio.create_task(self._watch_revocations(), name="apiserver-revocations")
        return self.port

    async def stop(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            await asyncio.gather(self._watcher, return_exceptions=True)
            self._watcher = None
        if self.crl_keeper is not None:
            self.crl_keeper.close()
        if self._server is not None:
            self._server.close()
        for t in list(self._conns):
            t.cancel()
        if self._conns:
            await asyncio.gather(*self._conns, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
        if self._audit_fd is not None:
            os.close(self._audit_fd)
            self._audit_fd = None

    def _admit_connection(self, writer: asyncio.StreamWriter) -> str | None:
        """Whether a new connection may stay: ``""`` (it holds a client certificate), its source
        address (counted among the certificate-less), or None (over a budget: close it).

        Connections without a client certificate -- bearer tokens, or anyone at all before a
        request -- share a smaller budget, per source address too, so idle anonymous sockets
        cannot take the slots that nodes, controllers and users with certificates need.
        """
        if len(self._conns) >= MAX_CONNECTIONS:
            return None
        sslobj = writer.get_extra_info("ssl_object")
        if sslobj is not None and sslobj.getpeercert():
            return ""
        peer = writer.get_extra_info("peername")
        source = str(peer[0]) if isinstance(peer, tuple) and peer else "?"
        if sum(self._certless.values()) >= self.limits.api_max_certless_connections or \
                self._certless.get(source, 0) >= self.limits.api_max_certless_per_source:
            return None
        self._certless[source] = self._certless.get(source, 0) + 1
        return source

    async def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        source = self._admit_connection(writer) if task is not None else None
        if task is None or source is None:
            writer.close()
            return
        self._conns.add(task)
        try:
            await _Connection(self, reader, writer).run()
        except (ConnectionError, asyncio.TimeoutError, ssl.SSLError, h11.ProtocolError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            pass  # server stopping: end this connection quietly (asyncio would log the cancellation)
        finally:
            self._conns.discard(task)
            if source:
                left = self._certless.get(source, 1) - 1
                if left > 0:
                    self._certless[source] = left
                else:
                    self._certless.pop(source, None)
            writer.close()
            try:
                await asyncio.wait_for(writer.wait_closed(), 2)
            except (ConnectionError, asyncio.TimeoutError, ssl.SSLError, OSError):
                pass

    def certificate_refused(self, serial: int | None, issuer: str | None = None) -> bool:
        """Whether a client certificate (by serial) must be refused now: revoked, or the CRL
        cannot be trusted (missing, unreadable, expired -- fail closed). Asked on every request,
        over HTTPS and in-process alike, and by the watcher of open streams."""
        return self.revocations is not None and self.revocations.refuses(serial, issuer)

    async def _watch_revocations(self) -> None:
        """End open watches and log streams whose identity is no longer valid, within
        ``REVOCATION_POLL_S`` (certificates) or ``BEARER_RECHECK_S`` (tokens); keep our own
        CRL fresh (:class:`CrlKeeper`)."""
        loop = asyncio.get_running_loop()
        next_bearer = loop.time()
        while True:
            await asyncio.sleep(REVOCATION_POLL_S)
            try:
                if self.crl_keeper is not None and self.crl_keeper.due(loop.time()):
                    try:
                        await asyncio.to_thread(self.crl_keeper.refresh)
                    except KedgeError as exc:  # the CRL is missing or untrustworthy: say so, stay closed
                        log.error("cannot keep %s current: %s", self.crl_keeper.path, exc.code)
                bearer = loop.time() >= next_bearer
                if bearer:
                    next_bearer = loop.time() + BEARER_RECHECK_S
                for conn in list(self._streams):
                    if not conn.still_authenticated(bearer=bearer):
                        conn.end_stream("revoked")
            except Exception:  # noqa: BLE001 - the watcher must outlive a transient failure
                log.exception("API server revocation watcher")

    def _open_audit(self) -> None:
        if self._audit_path is None:
            return
        self._audit_fd = os.open(self._audit_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o600)
        self._audit_bytes = os.fstat(self._audit_fd).st_size

    def audit(self, record: dict[str, Any]) -> None:
        """Append one JSON line; past ``AUDIT_MAX_BYTES`` the file rotates to ``<name>.1`` (older
        ones move up to ``<name>.AUDIT_KEEP_FILES``; the oldest beyond that is dropped)."""
        if self._audit_fd is None or self._audit_path is None:
            return
        line = json.dumps(record, separators=(",", ":")).encode() + b"\n"
        try:
            if self._audit_bytes + len(line) > AUDIT_MAX_BYTES:
                os.close(self._audit_fd)
                self._audit_fd = None
                name = self._audit_path.name
                for k in range(AUDIT_KEEP_FILES - 1, 0, -1):
                    older = self._audit_path.with_name(f"{name}.{k}")
                    if older.exists():
                        os.replace(older, self._audit_path.with_name(f"{name}.{k + 1}"))
                os.replace(self._audit_path, self._audit_path.with_name(f"{name}.1"))
                self._open_audit()
            if self._audit_fd is None:
                return
            os.write(self._audit_fd, line)
            self._audit_bytes += len(line)
        except OSError:
            log.exception("audit log write failed")


class _AuditIds:
    """Random (version 4) UUIDs for audit records, from 4 KiB of ``os.urandom`` at a time
    instead of one system call per request."""

    def __init__(self) -> None:
        self._buf = b""
        self._pos = 0

    def next(self) -> str:
        if self._pos + 16 > len(self._buf):
            self._buf, self._pos = os.urandom(4096), 0
        raw = self._buf[self._pos:self._pos + 16]
        self._pos += 16
        return str(uuid.UUID(bytes=raw, version=4))


_audit_ids = _AuditIds()


def _now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


async def _cancel_read(read: asyncio.Future) -> None:  # also any other helper future
    """Stop a pending read that watched for the client going away."""
    if not read.done():
        read.cancel()
        try:
            await read
        except (asyncio.CancelledError, ConnectionError, ssl.SSLError):
            pass


def audit_record_base(source_ips: list[str], user_agent: str) -> dict[str, Any]:
    """The request-independent part of an audit record, stamped when the request arrived."""
    return {"kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "Metadata", "auditID": _audit_ids.next(),
            "stage": "ResponseComplete", "sourceIPs": source_ips, "userAgent": user_agent[:256],
            "requestReceivedTimestamp": _now_iso()}


class _Connection:
    def __init__(self, server: ApiServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.server, self.reader, self.writer = server, reader, writer
        self.http = ServerConnection(reader, writer, max_header_bytes=server.limits.max_http_header_bytes,
                                     write_timeout_s=WRITE_TIMEOUT_S, read_chunk=READ_CHUNK)
        self.conn = self.http.h11
        peer = writer.get_extra_info("peername") or ("?", 0)
        self.peer = f"{peer[0]}:{peer[1]}"
        sslobj = writer.get_extra_info("ssl_object")
        peercert = sslobj.getpeercert() if sslobj else None
        self.cert_presented = bool(peercert)
        # The certificate's user; whether it is still good is asked per request (revocation).
        self.cert_user, self.serial = user_from_cert(peercert)
        self.cert_issuer = issuer_cn(peercert)
        self.stream_user: User | None = None  # who the open watch / log stream is for
        self.stream_token: str | None = None  # and the bearer token that authenticated it
        self.stream_ended: asyncio.Event | None = None
        self.stream_end_reason = ""

    async def _next_event(self, idle_timeout: float, total_timeout: float | None = None) -> Any:
        """Next h11 event. ``idle_timeout`` bounds the wait for the first byte; once bytes of
        the event have arrived the whole event must complete within ``total_timeout`` (slow-loris)."""
        return await self.http.next_event(idle_timeout, total_timeout)

    async def _send(self, *events: Any) -> None:
        # One write for all of them: one TLS record and one send() instead of one per event.
        await self.http.send(*events)

    async def run(self) -> None:
        limits = self.server.limits
        # The first request must start within the read timeout (a connection that never sends one
        # holds a slot for nothing); between requests a keep-alive connection may idle longer.
        idle = limits.http_read_timeout_s
        while True:
            try:
                event = await self._next_event(idle, limits.http_read_timeout_s)
                idle = IDLE_KEEPALIVE_S
            except h11.RemoteProtocolError:
                await self._error(400, "malformed HTTP request")
                return
            if isinstance(event, (h11.ConnectionClosed, h11.EndOfMessage)) or event is h11.PAUSED:
                return
            if not isinstance(event, h11.Request):
                return
            header_bytes = len(event.target) + sum(len(k) + len(v) + 4 for k, v in event.headers)
            if header_bytes > limits.max_http_header_bytes or len(event.headers) > MAX_HEADERS:
                await self._error(431, "request header fields too large")
                return
            headers: dict[str, list[str]] = {}
            for k, v in event.headers:
                headers.setdefault(k.decode("latin-1").lower(), []).append(v.decode("latin-1"))
            clen = headers.get("content-length", ["0"])[-1]
            if clen.isdigit() and int(clen) > MAX_API_BODY_BYTES:
                await self._error(413, "the request body is too large")
                await self._linger()
                return
            if self.conn.they_are_waiting_for_100_continue:
                await self._send(h11.InformationalResponse(status_code=100, headers=[]))
            try:
                body = await self.http.read_body(
                    MAX_API_BODY_BYTES, idle_timeout=limits.http_read_timeout_s,
                    deadline=asyncio.get_running_loop().time() + BODY_TIMEOUT_S)
            except BodyTooLarge:
                await self._error(413, "the request body is too large")
                await self._linger()
                return
            except h11.RemoteProtocolError:
                await self._error(400, "malformed HTTP request")
                return
            except TimeoutError:
                return  # a body slower than BODY_TIMEOUT_S: closed without an answer
            target = event.target.decode("latin-1")
            method = event.method.decode("ascii", "replace")
            started = time.monotonic()
            audit_base = audit_record_base([self.peer.rsplit(":", 1)[0]], headers.get("user-agent", [""])[-1])
            user, token = self._authenticate(headers)
            if user is None:
                resp: Response | Watch = Response(401, _dumps(status_body(401, "Unauthorized", "Unauthorized")))
                resp.audit = {"requestURI": target[:2048], "verb": method.lower(), "user": {"username": "system:anonymous"},
                              "responseStatus": {"code": 401}}
            else:
                try:
                    resp = await self.server.api.handle_async(Request(method, target, headers, bytes(body), user))
                except Exception:  # our bug or a storage failure: the client gets a code, the log gets details
                    log.exception("internal error serving %s %s", method, target[:200])
                    resp = Response(500, _dumps(status_body(500, "InternalError", "an internal error occurred")))
                    resp.audit = {"requestURI": target[:2048], "verb": method.lower(),
                                  "user": {"username": user.name, "groups": list(user.groups)},
                                  "responseStatus": {"code": 500}}
            self._observe(resp, started)
            if isinstance(resp, Watch):
                self.server.audit(dict(audit_base, **resp.audit, responseStatus={"code": 200},
                                       stageTimestamp=_now_iso()))
                async with self._streaming(user, token, "watch"):
                    await self._stream(resp)
            elif isinstance(resp, LogStream):
                self.server.audit(dict(audit_base, **resp.audit, stageTimestamp=_now_iso()))
                async with self._streaming(user, token, "log stream"):
                    await self._stream_log(resp)
            else:
                self.server.audit(dict(audit_base, **resp.audit, stageTimestamp=_now_iso()))
                hdrs: list[tuple[str, str | bytes]] = [
                    ("content-type", resp.content_type), ("content-length", str(len(resp.body))),
                    ("cache-control", "no-cache, private"), ("x-content-type-options", "nosniff")]
                hdrs += [("warning", w) for w in warning_header_values(resp.warnings)]  # kubectl prints them
                if user is None and self.cert_user is not None and self.server.revocations is not None \
                        and self.server.revocations.retired(self.cert_issuer):
                    # The connection's certificate is of a CA that `kedge ca finish` retired: close,
                    # so a client whose files were re-certified reconnects with them.
                    hdrs.append(("connection", "close"))
                await self.http.send_response(resp.status, hdrs, resp.body, head=method == "HEAD")
            if self.conn.our_state is h11.MUST_CLOSE or self.conn.their_state is h11.MUST_CLOSE:
                return
            try:
                self.conn.start_next_cycle()
            except h11.LocalProtocolError:
                return

    def _observe(self, resp: Any, started: float) -> None:
        hook = self.server.on_request
        if hook is None:
            return
        audit = getattr(resp, "audit", None) or {}
        status = 200 if isinstance(resp, Watch) else int(getattr(resp, "status", 200) or 200)
        try:
            hook(str(audit.get("verb", "")), status, time.monotonic() - started)
        except Exception:  # noqa: BLE001 - metrics must never fail a request
            log.exception("metrics hook failed")

    def _authenticate(self, headers: dict[str, list[str]]) -> tuple[User | None, str | None]:
        """This request's user (and bearer token, if that is what authenticated it), or None.

        Asked for every request on the connection, not once per connection: a certificate
        revoked while a keep-alive connection is open gets ``401`` on its next request."""
        if self.cert_user is not None:
            return (None if self.server.certificate_refused(self.serial, self.cert_issuer) else self.cert_user), None
        if self.cert_presented:
            return None, None  # a certificate without a usable identity is not a bearer fallback
        auth = headers.get("authorization", [""])[-1]
        if auth[:7].lower() != "bearer " or len(auth) > 8192:
            return None, None
        token = auth[7:].strip()
        try:
            return self.server.api.authenticate_bearer(token), token
        except Exception:  # any failure to authenticate is a 401, never a dropped connection
            log.exception("bearer token authentication failed unexpectedly")
            return None, None

    @contextlib.asynccontextmanager
    async def _streaming(self, user: User, token: str | None, kind: str) -> AsyncIterator[None]:
        """While a watch or log stream is open, the server's revocation watcher may end it."""
        self.stream_user, self.stream_token = user, token
        self.stream_kind = kind  # read by the metrics collector (open watches)
        self.stream_ended = asyncio.Event()
        self.server._streams.add(self)
        try:
            yield
        finally:
            self.server._streams.discard(self)
            if self.stream_end_reason:
                log.info("%s of %s ended: %s", kind, user.name, self.stream_end_reason)

    def still_authenticated(self, *, bearer: bool = True) -> bool:
        """Whether the identity of the open stream is still valid (certificate not revoked,
        CRL trustworthy; the bearer token still bound to a live pod / service account --
        checked only when ``bearer``)."""
        user = self.stream_user
        if user is None:
            return True
        if self.cert_user is not None:
            return not self.server.certificate_refused(self.serial, self.cert_issuer)
        if self.stream_token is None or not bearer:
            return True
        try:
            now = self.server.api.authenticate_bearer(self.stream_token)
        except Exception:  # noqa: BLE001 - cannot tell: fail closed, the client re-watches
            log.exception("bearer token re-check failed unexpectedly")
            return False
        return now is not None and now.name == user.name and now.uid == user.uid

    def end_stream(self, reason: str) -> None:
        if self.stream_ended is not None and not self.stream_ended.is_set():
            self.stream_end_reason = reason
            self.stream_ended.set()

    async def _linger(self) -> None:
        """Read and discard a bounded amount for a moment, so the client can read our error before we close."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + LINGER_S
        drained = 0
        try:
            while drained < LINGER_MAX_BYTES and loop.time() < deadline:
                chunk = await asyncio.wait_for(self.reader.read(READ_CHUNK), max(0.01, deadline - loop.time()))
                if not chunk:
                    return
                drained += len(chunk)
        except (asyncio.TimeoutError, ConnectionError, ssl.SSLError):
            return

    async def _error(self, status: int, message: str) -> None:
        reason = {400: "BadRequest", 413: "RequestEntityTooLarge", 431: "RequestHeaderFieldsTooLarge"}.get(status, "")
        body = _dumps(status_body(status, reason, message))
        try:
            if self.http.can_respond():
                await self.http.send_response(status, [
                    ("content-type", "application/json"), ("content-length", str(len(body))),
                    ("connection", "close")], body)
        except (h11.LocalProtocolError, ConnectionError, asyncio.TimeoutError):
            pass

    async def _stream_end(self) -> None:
        """Returns when the revocation watcher ends this connection's stream."""
        if self.stream_ended is None:
            await asyncio.Event().wait()  # not registered: never
        else:
            await self.stream_ended.wait()

    async def _stream_log(self, stream: LogStream) -> None:
        """``kubectl logs -f``: chunked text until the follow ends or the client goes away."""
        eof = asyncio.ensure_future(self.reader.read(1))
        ended = asyncio.ensure_future(self._stream_end())
        chunks = stream.chunks.__aiter__()
        try:
            await self._send(h11.Response(status_code=200, headers=[
                ("content-type", "text/plain"), ("transfer-encoding", "chunked"),
                ("cache-control", "no-cache, private"), ("x-content-type-options", "nosniff")]))
            if stream.initial:
                await self._send(h11.Data(data=stream.initial))
            while True:
                nxt = asyncio.ensure_future(chunks.__anext__())
                done, _ = await asyncio.wait({nxt, eof, ended}, return_when=asyncio.FIRST_COMPLETED)
                if nxt not in done:
                    nxt.cancel()
                    await asyncio.wait({nxt})  # let the follow finish before it is closed
                    if ended in done:
                        break  # the identity was revoked: end the stream cleanly
                    return  # the client went away
                try:
                    data = nxt.result()
                except StopAsyncIteration:
                    break
                await self._send(h11.Data(data=data))
            await self._send(h11.EndOfMessage())
        finally:
            await chunks.aclose()
            await _cancel_read(eof)
            await _cancel_read(ended)
        raise ConnectionResetError("log stream finished")  # the pending read may have consumed bytes

    async def _stream(self, watch: Watch) -> None:
        loop = asyncio.get_running_loop()
        wake = asyncio.Event()
        watch.notify = wake.set
        deadline = loop.time() + watch.timeout_s
        next_bookmark = loop.time() + BOOKMARK_INTERVAL_S
        # Watch for the client going away while we wait for events.
        eof = asyncio.ensure_future(self.reader.read(1))
        ended = asyncio.ensure_future(self._stream_end())
        try:
            await self._send(h11.Response(status_code=200, headers=[
                ("content-type", "application/json"), ("transfer-encoding", "chunked"),
                ("cache-control", "no-cache, private")]))
            while True:
                if watch.lines:
                    await self._send(h11.Data(data=b"".join(watch.take(256))))
                    continue
                if watch.overflowed or watch.closed or ended.done():
                    break
                now = loop.time()
                if now >= deadline:
                    break
                if watch.bookmarks and now >= next_bookmark:
                    await self._send(h11.Data(data=watch.bookmark_line()))
                    next_bookmark = now + BOOKMARK_INTERVAL_S
                    continue
                wake.clear()
                waiter = asyncio.ensure_future(wake.wait())
                timeout = min(deadline, next_bookmark if watch.bookmarks else deadline) - now
                done, _ = await asyncio.wait({waiter, eof, ended}, timeout=max(0.0, timeout),
                                             return_when=asyncio.FIRST_COMPLETED)
                if not waiter.done():
                    waiter.cancel()
                if eof in done:
                    return  # client went away (or sent bytes mid-watch, which we do not accept)
            await self._send(h11.EndOfMessage())
        finally:
            watch.close()
            await _cancel_read(eof)
            await _cancel_read(ended)
        # After a watch we do not reuse the connection: the pending read may have consumed bytes.
        raise ConnectionResetError("watch finished")


__all__ = ["ApiServer", "RevocationList", "audit_record_base", "user_from_cert", "MAX_API_BODY_BYTES",
           "REVOCATION_POLL_S"]

