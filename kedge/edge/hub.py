"""EdgeHub: keeps this node's tunnel to CloudHub up and its certificate fresh.

- Connects over mutual TLS with the node certificate, pinning the cluster CA.
- Reconnects with exponential backoff and full jitter (cap 30 s).
- Installs the cluster CA bundle the cloud offers during a CA rotation (``cabundle``; checked
  in a child, :mod:`kedge.edge.cabundle`) and renews at once when asked (``renewcert``,
  ``kedge ca rotate --renew-now``); both arrive over the mutually authenticated tunnel.
- Renews the certificate at a random point between 70 % and 90 % of its lifetime
  (measured from when this node received it), over mutual TLS with the current
  certificate, then reconnects with the new identity. A node that was offline past
  that point renews as soon as the cloud is reachable; an expired certificate cannot
  be renewed and the node must re-join with a new token. The renewal itself runs in a
  short-lived child process (:mod:`kedge.edge.renewal`) so that ``cryptography`` never
  becomes resident in edgecore.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import os
import random
import time
from typing import Any, Awaitable, Callable
from urllib.parse import urlsplit

from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus, WebSocketException

from kedge import tls
from kedge._internal import fsutil
from kedge.edge import cabundle, child, renewal
from kedge.edge.config import EdgeConfig, EdgeDir
from kedge.errors import KedgeError, LocalError, PeerError, StateError, VerificationError
from kedge.limits import Limits
from kedge.protocol import message as m
from kedge.protocol.session import (
    MessageReceived,
    ProtocolFailed,
    ResponseReceived,
    Session,
    State,
)

log = logging.getLogger(__name__)

Handler = Callable[[m.Message], Awaitable[Any]]

BACKOFF_BASE_S = 0.5
BACKOFF_CAP_S = 30.0
RENEW_FRACTION = (0.7, 0.9)
RENEWAL_TIMEOUT_S = 60.0  # the child's own HTTPS calls time out after 10 s each
BUNDLE_TIMEOUT_S = 30.0  # checking and installing a CA bundle in a child
CA_BUNDLE_KIND = "cabundle"  # cloud -> edge, group "hub" (kedge.cloud.hub sends both)
RENEW_NOW_KIND = "renewcert"


def backoff_delay(attempt: int, rng: random.Random, *, base: float = BACKOFF_BASE_S, cap: float = BACKOFF_CAP_S) -> float:
    """Full jitter: uniform in [0, min(cap, base * 2**attempt)]."""
    return rng.uniform(0.0, min(cap, base * (2 ** min(attempt, 30))))


def renewal_time(received_at: float, not_after: float, rng: random.Random) -> float:
    """A random point between 70 % and 90 % of the certificate's remaining lifetime at receipt."""
    lifetime = max(0.0, not_after - received_at)
    return received_at + lifetime * rng.uniform(*RENEW_FRACTION)


class CertificateExpired(StateError):
    code = "certificate_expired"


class EdgeHub:
    def __init__(
        self,
        edge_dir: str | os.PathLike[str],
        *,
        handler: Handler | None = None,
        limits: Limits | None = None,
        rng: random.Random | None = None,
        keepalive_interval: float | None = None,
        on_connect: Callable[["EdgeHub"], Awaitable[None]] | None = None,
    ) -> None:
        self.dir = EdgeDir(edge_dir)
        self.dir.recover_identity()
        self.cfg: EdgeConfig = self.dir.load_config()
        self.limits = limits or Limits(**self.cfg.limits)
        self.node = self.cfg.node_name
        self.handler = handler
        self.on_connect = on_connect
        self.rng = rng or random.SystemRandom()
        self.keepalive_interval = keepalive_interval or self.cfg.keepalive_interval_s
        self.session: Session | None = None
        self.conn = None
        self.connected = asyncio.Event()
        self.waiters: dict[str, asyncio.Future[m.Message]] = {}
        self.rotations = 0
        self.connects = 0
        self.last_close: tuple[int | None, str] | None = None
        self._renew_at: float | None = None
        self._renewal: asyncio.Future[None] | None = None
        self._renew_wakeup = asyncio.Event()
        self.ca_updates = 0  # CA bundles installed from the cloud (CA rotation)

    # -- certificate ------------------------------------------------------------

    def _cert_times(self) -> tuple[float, float]:
        # Only the validity is needed here: read without ``cryptography``, which edgecore
        # does not load (renewal runs in a child process, see _renew_in_child).
        validity = tls.load_cert_validity(self.dir.node_crt)
        received = self.dir.node_crt.stat().st_mtime
        return received, validity.not_valid_after_utc.timestamp()

    def check_not_expired(self) -> None:
        _, not_after = self._cert_times()
        if time.time() >= not_after:
            when = dt.datetime.fromtimestamp(not_after, dt.timezone.utc).isoformat()
            raise CertificateExpired(
                f"node certificate of {self.node} expired at {when}; it cannot be renewed. Re-join: on the "
                f"cloud run `kedge token create --node {self.node}`, then here `kedge join --node {self.node} ...`")

    def renew_at(self) -> float:
        if self._renew_at is None:
            received, not_after = self._cert_times()
            self._renew_at = renewal_time(received, not_after, self.rng)
        return self._renew_at

    async def _renew_in_child(self) -> None:
        """Run ``python -m kedge.edge.renewal EDGEDIR``; raise the error it reports.

        A cancelled caller does not stop the child (see :meth:`renew`): killing it could
        interrupt the identity swap. Only a child that outlives RENEWAL_TIMEOUT_S is
        killed, and then an interrupted swap is finished or dropped (``recover_identity``).
        """
        try:
            out, rc = await child.run_module("kedge.edge.renewal", str(self.dir.root),
                                             timeout_s=RENEWAL_TIMEOUT_S, code="renewal_failed")
        except TimeoutError:
            self.dir.recover_identity()
            raise LocalError("certificate renewal did not finish in time", code="renewal_timeout") from None
        try:
            renewal.raise_result(out, rc)
        except KedgeError:
            self.dir.recover_identity()  # the child failed: leave no half-installed pair behind
            raise

    async def renew(self) -> None:
        self.check_not_expired()
        # One renewal at a time; shielded so that a caller cancelled mid-renewal (the tunnel
        # closed) leaves the child to finish and the next caller waits for that one.
        if self._renewal is None or self._renewal.done():
            self._renewal = asyncio.ensure_future(self._renew_in_child())
            self._renewal.add_done_callback(lambda f: f.cancelled() or f.exception())
        await asyncio.shield(self._renewal)
        self._renew_at = None
        self.rotations += 1
        log.info("node certificate renewed (rotation %d)", self.rotations,
                 extra={"event": "renewal.done", "node": self.node})

    def request_renewal(self) -> None:
        """Renew as soon as possible (the cloud asked: CA rotation); the tunnel then reconnects once."""
        self._renew_at = time.time()
        self._renew_wakeup.set()

    async def install_ca_bundle(self, content: Any) -> bool:
        """Check and pin the CA bundle the cloud offered (in a child: ``cryptography``); False if it
        is the one pinned already. A refused bundle raises ``PeerError`` with the check's code."""
        bundle, _cross = cabundle.parse_offer(content)
        if bundle == self.dir.ca_crt.read_bytes():
            return False
        fsutil.write_private(cabundle.offer_path(self.dir.root), json.dumps(content).encode())
        try:
            out, rc = await child.run_module("kedge.edge.cabundle", str(self.dir.root),
                                             timeout_s=BUNDLE_TIMEOUT_S, code="bundle_install_failed")
            res = child.parse_report(out, rc, what="CA bundle check", code="bundle_install_failed")
        except TimeoutError:
            raise LocalError("CA bundle check did not finish in time", code="bundle_install_failed") from None
        except VerificationError as exc:
            log.warning("refused the CA bundle the cloud offered: %s", exc.code)
            raise PeerError("CA bundle refused", code=exc.code) from None
        finally:
            cabundle.offer_path(self.dir.root).unlink(missing_ok=True)
        installed = bool(res.get("installed"))
        if installed:
            self.ca_updates += 1
            log.info("pinned the cluster CA bundle the cloud offered (CA rotation)")
        return installed

    async def _hub_message(self, msg: m.Message) -> Any:
        """Messages for the hub itself: a CA bundle to pin, a request to renew now."""
        kind = msg.route.resource.split("/")[1] if msg.route.resource.count("/") == 2 else ""
        if msg.route.operation != m.UPDATE or msg.route.resource != f"{self.node}/{kind}/{self.node}":
            raise PeerError("no handler for this message", code="not_supported")
        if kind == CA_BUNDLE_KIND:
            return {"installed": await self.install_ca_bundle(msg.content)}
        if kind == RENEW_NOW_KIND:
            self.request_renewal()
            return {"renewing": True}
        raise PeerError("no handler for this message", code="not_supported")

    # -- tunnel -----------------------------------------------------------------

    async def request(self, msg: m.Message, *, timeout: float = 10.0) -> m.Message:
        if self.session is None or self.session.state is not State.CONNECTED:
            raise PeerError("tunnel not connected", code="not_connected")
        fut: asyncio.Future[m.Message] = asyncio.get_running_loop().create_future()
        self.waiters[msg.header.msg_id] = fut
        try:
            self.session.send_message(msg, expect_response=True)
            await self._flush()
            async with asyncio.timeout(timeout):
                return await fut
        finally:
            self.waiters.pop(msg.header.msg_id, None)
            if self.session is not None:
                self.session.cancel_request(msg.header.msg_id)  # no-op once answered

    def new_message(self, operation: str, resource: str, content: Any = None, group: str = "resource") -> m.Message:
        msg_id = self.session.new_msg_id() if self.session is not None else None
        return m.Message.new(source="edgehub", destination="cloudhub", group=group, operation=operation,
                             resource=resource, content=content, now_ms=int(time.time() * 1000), msg_id=msg_id)

    async def _flush(self) -> None:
        if self.session is None or self.conn is None:
            return
        for frame in self.session.data_to_send():
            await self.conn.send(frame, text=True)

    async def _dispatch(self) -> None:
        assert self.session is not None  # nosec B101 - set by connect_once before any dispatch
        now_ms = int(time.time() * 1000)
        for event in self.session.events_received():
            if isinstance(event, ResponseReceived):
                fut = self.waiters.get(event.request.header.msg_id)
                if fut is not None and not fut.done():
                    fut.set_result(event.message)
            elif isinstance(event, MessageReceived):
                msg = event.message
                handler = self._hub_message if msg.route.group == "hub" else self.handler
                if handler is None:
                    self.session.send_error(msg, "not_supported", now_ms=now_ms)
                    continue
                code = None
                try:
                    content = await handler(msg)
                except PeerError as exc:
                    content, code = None, exc.code
                except KedgeError as exc:
                    log.warning("handling %s failed: %s", msg.route.resource, exc.code)
                    content, code = None, "internal_error"
                if self.session.state is not State.CONNECTED:
                    break
                if code is not None:
                    self.session.send_error(msg, code, now_ms=now_ms)
                elif content is not None:
                    self.session.send_response(msg, content, now_ms=now_ms)
            elif isinstance(event, ProtocolFailed):
                log.warning("protocol error from cloud: %s", event.code)
        await self._flush()

    async def _keepalive(self) -> None:
        while True:
            await asyncio.sleep(self.keepalive_interval)
            try:
                await self.request(self.new_message(m.KEEPALIVE, f"{self.node}/keepalive/{self.node}", None, "hub"),
                                   timeout=self.keepalive_interval * 2)
            except (TimeoutError, PeerError, ConnectionError):
                log.warning("keepalive unanswered; reconnecting")
                if self.conn is not None:
                    await self.conn.close(1001, "keepalive_timeout")
                return

    async def _rotate_when_due(self) -> None:
        """Renew under the live connection when due, then reconnect with the new identity."""
        attempt = 0
        while True:
            delay = self.renew_at() - time.time()
            if delay > 0:
                self._renew_wakeup.clear()  # request_renewal() moves renew_at and wakes us
                try:
                    async with asyncio.timeout(delay):
                        await self._renew_wakeup.wait()
                except TimeoutError:
                    pass
                continue
            try:
                await self.renew()
            except CertificateExpired:
                raise
            except (KedgeError, OSError) as exc:
                code = getattr(exc, "code", type(exc).__name__)
                wait = backoff_delay(attempt, self.rng)
                attempt += 1
                log.warning("certificate renewal failed (%s); retrying in %.1fs", code, wait,
                            extra={"event": "renewal.failed", "node": self.node, "code": code})
                self._renew_at = time.time() + wait
                continue
            if self.conn is not None:
                await self.conn.close(1000, "rotating")
            return

    async def _run_on_connect(self) -> None:
        try:
            await self.on_connect(self)  # type: ignore[misc]
        except (KedgeError, ConnectionError, TimeoutError) as exc:
            log.warning("post-connect sync failed: %s", getattr(exc, "code", type(exc).__name__))

    async def connect_once(self) -> None:
        """One tunnel lifetime: connect, serve until closed."""
        self.check_not_expired()
        if time.time() >= self.renew_at():
            await self.renew()  # offline past the renewal point: renew before connecting
        ctx = tls.client_context(self.dir.ca_crt, self.dir.node_crt, self.dir.node_key)
        host = urlsplit(self.cfg.hub).hostname
        uri = f"{self.cfg.hub}/e632aba927ea4ac2b575ec1603d56f10/{self.node}/events"
        async with connect(
            uri, ssl=ctx, server_hostname=host, additional_headers={"node_id": self.node},
            max_size=self.limits.max_frame_bytes, max_queue=4, compression=None, proxy=None,
            open_timeout=self.limits.handshake_timeout_s, ping_interval=None, close_timeout=2,
            user_agent_header="kedge-edgehub",
        ) as conn:
            self.conn = conn
            self.session = Session(role="edge", local=self.node, peer="cloudhub", limits=self.limits)
            self.session.connection_made()
            self.connects += 1
            self.connected.set()
            log.info("tunnel connected to %s as %s", self.cfg.hub, self.node,
                     extra={"event": "tunnel.connected", "node": self.node, "peer": self.cfg.hub})
            tasks = [asyncio.create_task(self._keepalive()), asyncio.create_task(self._rotate_when_due())]
            if self.on_connect is not None:
                tasks.append(asyncio.create_task(self._run_on_connect()))
            try:
                async for frame in conn:
                    data = frame.encode() if isinstance(frame, str) else frame
                    self.session.receive_data(data, now_ms=int(time.time() * 1000))
                    await self._dispatch()
                    if self.session.state is State.FAILED:
                        await conn.close(1008, self.session.failure_code or "protocol_error")
                        break
            finally:
                self.connected.clear()
                for t in tasks:
                    t.cancel()
                for t in tasks:
                    if t.done() and not t.cancelled() and isinstance(t.exception(), CertificateExpired):
                        raise t.exception()  # type: ignore[misc]
                self.last_close = (conn.close_code, conn.close_reason or "")
                log.info("tunnel disconnected: %s %s", conn.close_code, conn.close_reason or "",
                         extra={"event": "tunnel.disconnected", "node": self.node,
                                "code": conn.close_reason or str(conn.close_code)})
                for fut in self.waiters.values():
                    if not fut.done():
                        fut.set_exception(ConnectionError("tunnel closed"))
                self.conn = None

    async def run(self) -> None:
        """Keep the tunnel up forever (until cancelled or the certificate expires)."""
        attempt = 0
        while True:
            started = time.monotonic()
            self.last_close = None
            try:
                await self.connect_once()
            except CertificateExpired:
                raise
            except (OSError, WebSocketException, KedgeError, TimeoutError) as exc:
                reason = exc.response.status_code if isinstance(exc, InvalidStatus) else getattr(exc, "code", type(exc).__name__)
                log.warning("tunnel to %s failed: %s", self.cfg.hub, reason,
                            extra={"event": "tunnel.failed", "node": self.node, "peer": self.cfg.hub,
                                   "code": str(reason)})
            if self.last_close and self.last_close[1] == "rotating":
                attempt = 0
                continue  # reconnect at once with the new identity
            if time.monotonic() - started > 10:
                attempt = 0
            delay = backoff_delay(attempt, self.rng)
            attempt += 1
            log.info("reconnecting in %.2fs", delay)
            await asyncio.sleep(delay)
