"""CloudHub: the WSS endpoint edge nodes keep a tunnel to (mutual TLS required).

The node's identity comes from its client certificate (CN=system:node:<name>,
O=system:nodes); a ``node_id`` header that disagrees is refused. The newest session
of a node replaces the older one. Each session gets an upstream token bucket (a
flooding node is slowed by TCP backpressure, nobody else is), a bounded outbound
queue, and an idle timeout. The wire protocol itself lives in the sans-I/O
:class:`kedge.protocol.session.Session`; this module only feeds and drains it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import http
import logging
import time
from typing import Any, Awaitable, Callable

from cryptography import x509
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request

from kedge._internal.auditlog import AuditLog
from kedge._internal.metrics import Tally
from kedge._internal.ratelimit import TokenBucket
from kedge.cloud.metrics import message_labels
from kedge.cloud.state import CloudState
from kedge.cloud.trust import ClusterTrust
from kedge.errors import KedgeError, PeerError
from kedge.limits import Limits
from kedge.pki import ca as pki
from kedge.protocol import message as m
from kedge.protocol.session import (
    ConnectionClosed as SessionClosed,
    MessageReceived,
    ProtocolFailed,
    ResponseReceived,
    Session,
    State,
)

log = logging.getLogger(__name__)

# Application close codes (4000-4999 are free for applications in RFC 6455).
CLOSE_PROTOCOL = 1008
CLOSE_SUPERSEDED = 4001
CLOSE_REVOKED = 4003
CLOSE_IDLE = 4008
CLOSE_QUEUE_FULL = 4009
CLOSE_CERT_EXPIRED = 4010
CLOSE_CA_RETIRED = 4011

# CA rotation over the tunnel (group "hub"): the trust bundle an edge pins (kedge.edge.cabundle
# checks it) and the request to renew the node certificate now (kedge ca rotate --renew-now).
CA_BUNDLE_KIND = "cabundle"
RENEW_NOW_KIND = "renewcert"

HUB_NAME = "cloudhub"

Router = Callable[["NodeSession", m.Message], Awaitable[Any]]

# A node's upstream requests are handled one at a time, in order -- except device status
# batches, of which up to MAX_CONCURRENT_REQUESTS run concurrently with each other and with
# the node's other traffic. That is safe because the devicecontroller keeps the order per
# device itself: it queues each batch's reports per device in the order the batches reach
# it (the order of the frames, as the tasks start in frame order and enqueue before their
# first await) and one writer at a time applies a device's queue front to back; twin values
# are also newest-wins by their report timestamp. Nothing else relies on a batch's position
# relative to other messages: a batch carries only twin/state reports, never spec changes.
from kedge.limits import HUB_MAX_CONCURRENT_REQUESTS as MAX_CONCURRENT_REQUESTS  # noqa: E402
CONCURRENT_KINDS = frozenset({"devicestatus"})


def _concurrent_ok(msg: m.Message) -> bool:
    parts = msg.route.resource.split("/")
    return msg.route.operation == m.UPDATE and len(parts) == 3 and parts[1] in CONCURRENT_KINDS


@dataclasses.dataclass
class Identity:
    node: str
    serial: int
    not_after: dt.datetime
    peer: str
    issuer: str | None = None  # fingerprint of the cluster CA that issued the certificate


class NodeSession:
    """The I/O side of one edge's tunnel."""

    def __init__(self, hub: "CloudHub", conn: ServerConnection, ident: Identity) -> None:
        self.hub = hub
        self.conn = conn
        self.ident = ident
        self.node = ident.node
        self.session = Session(role="cloud", local=HUB_NAME, peer=ident.node, limits=hub.limits)
        self.session.connection_made()
        self.bucket = TokenBucket(hub.limits.upstream_qps, hub.limits.upstream_burst, now=time.monotonic())
        self.outbox: asyncio.Queue[bytes] = asyncio.Queue(maxsize=hub.limits.outbound_queue_items)
        self.waiters: dict[str, asyncio.Future[m.Message]] = {}
        self.connected_at = time.time()
        self.close_code: tuple[int, str] | None = None
        self._closer: asyncio.Future | None = None
        self._held_events: list = []
        self._sender_task: asyncio.Task | None = None
        self._slots = asyncio.Semaphore(MAX_CONCURRENT_REQUESTS)
        self._tasks: set[asyncio.Task] = set()
        self.trust_offered = 0  # the ClusterTrust version last offered to this edge

    def _count(self, direction: str, operation: str, resource: str) -> None:
        self.hub.messages.inc((direction, *message_labels(operation, resource)))

    def _flush(self) -> None:
        for frame in self.session.data_to_send():
            try:
                self.outbox.put_nowait(frame)
            except asyncio.QueueFull:
                self.close(CLOSE_QUEUE_FULL, "queue_full")
                return

    def close(self, code: int, reason: str) -> None:
        """Close this tunnel with ``code``/``reason`` (idempotent; safe from any task)."""
        if self.close_code is None:
            self.close_code = (code, reason)
            self.hub.audit.write("disconnect", node=self.node, peer=self.ident.peer, code=reason)
            self._closer = asyncio.ensure_future(self._do_close(code, reason))

    async def _do_close(self, code: int, reason: str) -> None:
        # Stop the sender, flush what is queued (e.g. the error frame carrying the code), then close.
        if self._sender_task is not None:
            self._sender_task.cancel()
        try:
            async with asyncio.timeout(1.0):
                while not self.outbox.empty():
                    await self.conn.send(self.outbox.get_nowait(), text=True)
        except (ConnectionClosed, TimeoutError):
            pass
        await self.conn.close(code, reason)

    async def request(self, msg: m.Message, *, timeout: float = 30.0) -> m.Message:
        """Send ``msg`` and wait for the edge's response (its ack)."""
        fut: asyncio.Future[m.Message] = asyncio.get_running_loop().create_future()
        self.waiters[msg.header.msg_id] = fut
        try:
            self.session.send_message(msg, expect_response=True)
            self._count("out", msg.route.operation, msg.route.resource)
            self._flush()
            async with asyncio.timeout(timeout):
                return await fut
        finally:
            self.waiters.pop(msg.header.msg_id, None)
            if self.session is not None:
                self.session.cancel_request(msg.header.msg_id)  # no-op once answered

    def push(self, msg: m.Message) -> None:
        """Send ``msg`` without waiting for a response."""
        self.session.send_message(msg)
        self._count("out", msg.route.operation, msg.route.resource)
        self._flush()

    async def _sender(self) -> None:
        try:
            while True:
                frame = await self.outbox.get()
                await self.conn.send(frame, text=True)
        except ConnectionClosed:
            pass

    async def _throttle(self, late_before: int) -> None:
        """Charge the node's upstream budget for what it sent, before acting on it.

        Responses to requests the cloud is waiting for (acks) are free: their number is
        bounded by what the cloud itself sends. Everything else -- requests, late or
        duplicate responses, errors -- costs a token; without one we stop reading this
        connection (TCP backpressure slows the flooder, nobody else).
        """
        self._held_events = self.session.events_received()
        cost = sum(0 if isinstance(ev, ResponseReceived) else 1 for ev in self._held_events)
        cost += self.session.late_responses - late_before
        now = time.monotonic()
        for _ in range(cost):
            while not self.bucket.take(now):
                await asyncio.sleep(max(self.bucket.wait_time(now), 0.001))
                now = time.monotonic()

    async def _answer(self, msg: m.Message, now_ms: int) -> bool:
        """Route one request and send its response or error; False once the session is no longer up."""
        try:
            content = await self.hub.route(self, msg)
        except PeerError as exc:
            content, code = None, exc.code
        except KedgeError as exc:
            log.warning("handling %s from %s failed: %s", msg.route.operation, self.node, exc.code)
            content, code = None, "internal_error"
        else:
            code = None
        if self.session.state is not State.CONNECTED:
            return False  # closing or failed meanwhile: nothing more goes out
        if code is not None:
            self.session.send_error(msg, code, now_ms=now_ms)
            self._count("out", m.ERROR, msg.route.resource)
        elif content is not None:
            self.session.send_response(msg, content, now_ms=now_ms)
            self._count("out", m.RESPONSE, msg.route.resource)
        return True

    async def _answer_concurrently(self, msg: m.Message) -> None:
        try:
            if await self._answer(msg, int(time.time() * 1000)):
                self._flush()
        except Exception:  # noqa: BLE001 - our bug or a client failure: the edge gets a code, not silence
            log.exception("handling %s from %s failed", msg.route.operation, self.node)
            if self.session.state is State.CONNECTED:
                self.session.send_error(msg, "internal_error", now_ms=int(time.time() * 1000))
                self._flush()
        finally:
            self._slots.release()

    async def _dispatch(self, now_ms: int) -> None:
        events, self._held_events = self._held_events + self.session.events_received(), []
        for event in events:
            if isinstance(event, ResponseReceived):
                self._count("in", event.message.route.operation, event.request.route.resource)
                fut = self.waiters.get(event.request.header.msg_id)
                if fut is not None and not fut.done():
                    fut.set_result(event.message)
            elif isinstance(event, MessageReceived):
                msg = event.message
                self._count("in", msg.route.operation, msg.route.resource)
                if msg.route.operation == m.KEEPALIVE:
                    self.session.send_response(msg, {"ts": now_ms}, now_ms=now_ms)
                    self._count("out", m.RESPONSE, msg.route.resource)
                    continue
                if _concurrent_ok(msg):
                    # Bounded: with every slot taken we stop reading this tunnel (backpressure).
                    await self._slots.acquire()
                    task = asyncio.create_task(self._answer_concurrently(msg))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
                    continue
                if not await self._answer(msg, now_ms):
                    return
            elif isinstance(event, ProtocolFailed):
                self.hub.audit.write("protocol_error", node=self.node, peer=self.ident.peer, code=event.code)
                self._flush()  # the error frame carrying the code goes out first
                self.close(CLOSE_PROTOCOL, event.code)
                return
            elif isinstance(event, SessionClosed):
                return
        self._flush()

    async def run(self) -> None:
        limits = self.hub.limits
        self._sender_task = sender = asyncio.create_task(self._sender())
        try:
            while self.close_code is None:
                try:
                    async with asyncio.timeout(limits.idle_timeout_s):
                        frame = await self.conn.recv(decode=False)
                except TimeoutError:
                    self.close(CLOSE_IDLE, "idle_timeout")
                    break
                if isinstance(frame, str):  # pragma: no cover - decode=False yields bytes
                    frame = frame.encode()
                now_ms = int(time.time() * 1000)
                late_before = self.session.late_responses
                self.session.receive_data(frame, now_ms=now_ms)
                await self._throttle(late_before)
                await self._dispatch(now_ms)
        except ConnectionClosed:
            pass
        finally:
            if self._closer is not None:
                try:
                    await self._closer
                except ConnectionClosed:
                    pass
            sender.cancel()
            for task in list(self._tasks):
                task.cancel()
            for fut in self.waiters.values():
                if not fut.done():
                    fut.set_exception(ConnectionError("tunnel closed"))


class CloudHub:
    def __init__(
        self,
        *,
        ssl_ctx,
        limits: Limits,
        state: CloudState,
        audit: AuditLog,
        router: Router | None = None,
        on_change: Callable[[], None] | None = None,
        on_session_closed: Callable[[str, "NodeSession"], None] | None = None,
        trust: ClusterTrust | None = None,
    ) -> None:
        self.ssl_ctx = ssl_ctx
        self.trust = trust
        self.limits = limits
        self.state = state
        self.audit = audit
        self._router = router
        self.on_change = on_change
        self.on_session_closed = on_session_closed
        self.sessions: dict[str, NodeSession] = {}
        # Tunnel messages by (direction, type, resource type), label values from fixed sets
        # (kedge.cloud.metrics); read by the metrics collector at scrape time.
        self.messages = Tally()
        self.server = None
        self.port: int | None = None
        self._watch_task: asyncio.Task | None = None
        self._generation = -1
        self._trust_seen = trust.version if trust is not None else 0

    async def route(self, ns: NodeSession, msg: m.Message) -> Any:
        if msg.route.operation == m.QUERY and msg.route.resource == f"{ns.node}/hubinfo/{ns.node}":
            return {"node": ns.node, "not_after": ns.ident.not_after.isoformat()}
        if self._router is not None:
            return await self._router(ns, msg)
        raise PeerError("no handler for this message", code="not_supported")

    # -- connection admission -------------------------------------------------

    def _refuse(self, conn: ServerConnection, status: http.HTTPStatus, code: str, peer: str, node: str | None):
        self.audit.write("connect", peer=peer, node=node, result="refused", code=code)
        return conn.respond(status, code + "\n")

    async def _process_request(self, conn: ServerConnection, request: Request):
        remote = conn.remote_address or ("?", 0)
        peer = f"{remote[0]}:{remote[1]}"
        ssl_obj = conn.transport.get_extra_info("ssl_object") if conn.transport else None
        der = ssl_obj.getpeercert(binary_form=True) if ssl_obj is not None else None
        if not der:
            return self._refuse(conn, http.HTTPStatus.UNAUTHORIZED, "no_client_cert", peer, None)
        cert = x509.load_der_x509_certificate(der)
        try:
            node = pki.node_name_from_cert(cert)
        except KedgeError as exc:
            return self._refuse(conn, http.HTTPStatus.FORBIDDEN, exc.code, peer, None)
        claimed = request.headers.get("node_id")
        if claimed is not None and claimed != node:
            return self._refuse(conn, http.HTTPStatus.FORBIDDEN, "node_id_mismatch", peer, node)
        parts = [p for p in request.path.split("?", 1)[0].split("/") if p]
        if not (parts == ["tunnel"] or (len(parts) == 3 and parts[2] == "events" and parts[1] == node)):
            return self._refuse(conn, http.HTTPStatus.NOT_FOUND, "bad_path", peer, node)
        # A local indexed SQLite read (~10 us): cheaper inline than a thread hop per handshake.
        if self.state.is_cert_revoked(node=node, serial=cert.serial_number):
            return self._refuse(conn, http.HTTPStatus.FORBIDDEN, "revoked", peer, node)
        issuer = None
        if self.trust is not None:
            # TLS verified the chain against the bundle of this handshake; name which CA, and
            # refuse one retired since (a resumed session skips verification).
            self.trust.refresh()
            issuer = self.trust.issuer_fp(cert)
            if issuer is None:
                return self._refuse(conn, http.HTTPStatus.FORBIDDEN, "untrusted_issuer", peer, node)
        if node not in self.sessions and len(self.sessions) >= self.limits.max_nodes:
            return self._refuse(conn, http.HTTPStatus.SERVICE_UNAVAILABLE, "too_many_nodes", peer, node)
        conn.kedge_identity = Identity(node, cert.serial_number, cert.not_valid_after_utc, peer,  # type: ignore[attr-defined]
                                       issuer)
        return None

    async def _handler(self, conn: ServerConnection) -> None:
        ident: Identity = conn.kedge_identity  # type: ignore[attr-defined]
        ns = NodeSession(self, conn, ident)
        old = self.sessions.get(ident.node)
        self.sessions[ident.node] = ns
        self.audit.write("connect", peer=ident.peer, node=ident.node, result="accepted",
                         serial=format(ident.serial, "x"))
        if old is not None:
            old.close(CLOSE_SUPERSEDED, "superseded")
        self._changed()
        self._offer_trust_soon(ns)
        try:
            await ns.run()
        finally:
            if self.sessions.get(ident.node) is ns:
                del self.sessions[ident.node]
                self._changed()
            if self.on_session_closed is not None:
                self.on_session_closed(ident.node, ns)
            if ns.close_code is None:
                self.audit.write("disconnect", node=ident.node, peer=ident.peer, code="peer_closed")

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()

    # -- lifecycle ------------------------------------------------------------

    async def start(self, host: str, port: int) -> int:
        self.server = await serve(
            self._handler, host, port,
            ssl=self.ssl_ctx,
            process_request=self._process_request,
            max_size=self.limits.max_frame_bytes,
            max_queue=4,
            compression=None,  # no permessage-deflate: no decompression bombs, less memory per edge
            open_timeout=self.limits.handshake_timeout_s,
            ssl_handshake_timeout=self.limits.handshake_timeout_s,
            ping_interval=None,  # edges send keepalives; silence is caught by the idle timeout
            close_timeout=2,
            server_header=None,
        )
        self.port = self.server.sockets[0].getsockname()[1]
        self._watch_task = asyncio.create_task(self._watch_revocations())
        return self.port

    async def stop(self) -> None:
        if self._watch_task:
            self._watch_task.cancel()
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    async def check_revocations(self, *, full: bool = True) -> int:
        """Close every live session whose certificate is now revoked (``full``) or expired."""
        closed = 0
        now = dt.datetime.now(dt.timezone.utc)
        sessions = list(self.sessions.values())
        if full:
            def revoked_nodes() -> set[str]:
                return {ns.node for ns in sessions
                        if self.state.is_cert_revoked(node=ns.node, serial=ns.ident.serial)}
            revoked = await asyncio.to_thread(revoked_nodes)
        else:
            revoked = set()
        for ns in sessions:
            if ns.node in revoked:
                self.audit.write("revoked_session_closed", node=ns.node, peer=ns.ident.peer)
                ns.close(CLOSE_REVOKED, "revoked")
                closed += 1
            elif ns.ident.not_after <= now:
                ns.close(CLOSE_CERT_EXPIRED, "cert_expired")
                closed += 1
        return closed

    # -- CA rotation --------------------------------------------------------------

    def _offer_trust_soon(self, ns: NodeSession) -> None:
        """Offer ``ns`` the current trust bundle (and, if asked, an immediate renewal) unless it
        had this version already. Nothing to offer for a cluster that never rotated its CA."""
        trust = self.trust
        if trust is None or trust.record.phase == "none" or ns.trust_offered == trust.version:
            return
        ns.trust_offered = trust.version
        task = asyncio.create_task(self._offer_trust(ns))
        ns._tasks.add(task)
        task.add_done_callback(ns._tasks.discard)

    async def _offer_trust(self, ns: NodeSession) -> None:
        trust = self.trust
        assert trust is not None  # nosec B101 - checked by _offer_trust_soon
        renew = trust.record.phase == "rotating" and trust.record.renew_now and ns.ident.issuer != trust.issuing_fp
        for kind, content in ((CA_BUNDLE_KIND, trust.bundle_message()), (RENEW_NOW_KIND, {"reason": "ca_rotation"})):
            if kind == RENEW_NOW_KIND and not renew:
                break
            msg = m.Message.new(source=HUB_NAME, destination="edgehub", group="hub", operation=m.UPDATE,
                                resource=f"{ns.node}/{kind}/{ns.node}", content=content,
                                now_ms=int(time.time() * 1000), msg_id=ns.session.new_msg_id())
            try:
                reply = await ns.request(msg, timeout=60.0)
            except (TimeoutError, ConnectionError, KedgeError) as exc:
                self.audit.write(f"{kind}_offer", node=ns.node, result="failed",
                                 code=getattr(exc, "code", type(exc).__name__))
                return
            if reply.route.operation == m.ERROR:
                code = reply.content.get("code") if isinstance(reply.content, dict) else None
                self.audit.write(f"{kind}_offer", node=ns.node, result="refused", code=str(code)[:64])
                return
            self.audit.write(f"{kind}_offer", node=ns.node, result="accepted")

    def check_trust(self) -> None:
        """After the cluster trust changed: close tunnels whose certificate's CA was retired,
        offer the new bundle to the others."""
        trust = self.trust
        if trust is None:
            return
        for ns in list(self.sessions.values()):
            if ns.ident.issuer is not None and ns.ident.issuer not in trust.fingerprints:
                self.audit.write("ca_retired_session_closed", node=ns.node, peer=ns.ident.peer)
                ns.close(CLOSE_CA_RETIRED, "ca_retired")
            else:
                self._offer_trust_soon(ns)

    async def _watch_revocations(self, interval: float = 0.5) -> None:
        ticks = 0
        while True:
            await asyncio.sleep(interval)
            ticks += 1
            if self.trust is not None:
                try:
                    self.trust.refresh()  # may have been reloaded elsewhere (a handshake, the cert endpoint)
                    if self.trust.version != self._trust_seen:
                        self._trust_seen = self.trust.version
                        self.check_trust()
                except Exception:  # noqa: BLE001 - the watcher must survive a bad rotation file
                    log.exception("cluster trust watcher")
            try:
                gen = await asyncio.to_thread(self.state.generation)
                changed = gen != self._generation
                self._generation = gen
                await self.check_revocations(full=changed)
            except Exception:  # noqa: BLE001 - the watcher must survive a transient DB error
                log.exception("revocation watcher")
