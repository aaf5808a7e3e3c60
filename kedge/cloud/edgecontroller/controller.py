"""The edgecontroller's I/O shell: per-node sync tasks and the upstream message router.

Per connected node:
1. the edge sends its inventory (live keys and tombstones with resourceVersions) right
   after connecting -- see :mod:`kedge.edge.metamanager.handler` for the message shape;
2. the controller lists the node's pods and fetches what they reference *as the node*,
   and sends exactly the difference (:func:`.plan.resync`), each as an acked message;
3. then it follows changes informer-style: a pod watch (as the node, from the list's
   resourceVersion; a 410 Gone re-lists) feeds every event into the node's
   :class:`.cache.NodeCache`, which says which keys it touched; new references are read
   as the node, and just those keys go out at once (:func:`.plan.delta`), a pod only
   after the configmaps/secrets it needs were acked. A message counts as delivered only
   when the edge acked it after its durable write; one the edge refused is retried by
   the periodic pass. One the tunnel itself cannot carry (a name outside the resource
   grammar, a message over the frame limit) is skipped at that resourceVersion: logged
   with its code, counted and audited once, not retried until the object changes, and
   the rest of the node's objects still go out (:meth:`NodeSync._deliver`);
4. the periodic pass (every ``resync_interval_s``, off the event path) is the safety
   net: it re-lists the pods, re-reads the referenced configmaps/secrets not read in
   the last half interval (that is how their updates are noticed) and compares
   everything the node should hold with what it acked.

Because the edge states what it holds on every connect, any cloudcore replica can serve
any node, and a cloudcore restart resends only what the edge lacks.

Upstream (edge -> cloud): pod status (``<ns>/podstatus/<name>``, queued and written by
:class:`StatusWriter`), node status (``default/nodestatus/<node>``) and secret/configmap
queries are executed as the node.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import datetime as dt
import logging
import random
import threading
import time
from typing import Any, Awaitable, Callable, Iterable

from kedge.cloud.edgecontroller import plan
from kedge.cloud.edgecontroller.cache import GONE, NodeCache, Ref
from kedge.cloud.edgecontroller.kubeapi import ApiGone, KubeAPI
from kedge.errors import KedgeError, PeerError, ProtocolError
from kedge.protocol import message as m
from kedge.protocol.codec import EncodeError
from kedge.protocol.session import MessageTooLarge

log = logging.getLogger(__name__)

PUSH_WINDOW = 32
# Bounds on what an edge may report as its inventory (all pages of one snapshot together), and
# how long it may take to acknowledge: kedge.limits.
from kedge.limits import EDGE_ACK_TIMEOUT_S as ACK_TIMEOUT_S  # noqa: E402
from kedge.limits import EDGE_INVENTORY_MAX_ENTRIES as MAX_INVENTORY_ENTRIES  # noqa: E402
from kedge.limits import EDGE_INVENTORY_MAX_PAGES as MAX_INVENTORY_PAGES  # noqa: E402

WATCH_TIMEOUT_S = 60
# Threads reading newly referenced configmaps/secrets as the nodes (shared by all nodes).
REF_READERS = 4


def _now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class NodeSync:
    def __init__(self, ctrl: "EdgeController", session) -> None:
        self.ctrl = ctrl
        self.session = session
        self.node = session.node
        self.cache = NodeCache()
        self.held: dict[str, dict[str, Any]] = {}  # what the edge acked, by key
        self.provided: dict[str, dict[str, Any]] = {}  # what the desired_providers add, by key
        self.dirty = asyncio.Event()  # set by other controllers: the providers' answer changed
        self.stop = threading.Event()
        self.task: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending: set[str] = set()  # keys whose delta is still to be worked out and sent
        self._sweep: set[str] = set()  # pending keys the periodic pass touched (status echoes go out)
        self._inflight: set[str] = set()
        self._kick = asyncio.Event()
        self._fatal: BaseException | None = None
        self._fetching: set[Ref] = set()
        self._read_at: dict[Ref, float] = {}  # monotonic time each ref was last read as the node
        self._fetch_backoff = 0.2
        self._tasks: set[asyncio.Task] = set()
        self._window = asyncio.Semaphore(PUSH_WINDOW)
        self.refused: dict[str, str] = {}  # key -> resourceVersion the tunnel refused to carry

    # -- the cache, fed on the event loop ----------------------------------------------------

    def _touch(self, keys: Iterable[str]) -> None:
        keys = set(keys)
        if keys:
            self._pending |= keys
            self._kick.set()

    def _spawn(self, coro) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _on_event(self, event: dict[str, Any]) -> None:
        self._touch(self.cache.apply(event))
        self._fetch_missing()

    def _on_list(self, pods: list[dict[str, Any]], rv: str) -> None:
        self._touch(self.cache.replace(pods, rv))
        self._fetch_missing()

    def _fetch_missing(self) -> None:
        missing = self.cache.missing_refs() - self._fetching
        if missing:
            self._spawn(self._fetch(missing))

    async def _fetch(self, refs: set[Ref]) -> None:
        """Read ``refs`` as the node, in parallel on the controller's readers, into the cache."""
        loop = asyncio.get_running_loop()
        self._fetching |= refs
        ordered = sorted(refs)
        try:
            results = await asyncio.gather(
                *(loop.run_in_executor(self.ctrl.readers, self.ctrl.api.get, self.node, *ref) for ref in ordered),
                return_exceptions=True)
        finally:
            self._fetching -= refs
        failed = 0
        now = time.monotonic()
        for ref, result in zip(ordered, results, strict=True):
            if isinstance(result, BaseException):
                failed += 1
                continue
            self._read_at[ref] = now
            self._touch(self.cache.set_ref(ref, result))
        self._kick.set()  # pods waiting for these references may go now
        if failed:
            log.warning("node %s: %d referenced objects could not be read; retrying", self.node, failed)
            await asyncio.sleep(self._fetch_backoff)
            self._fetch_backoff = min(self._fetch_backoff * 2, 5.0)
            self._fetch_missing()
        else:
            self._fetch_backoff = 0.2

    def _want(self, key: str) -> dict[str, Any] | None:
        obj = self.cache.get(key)
        return obj if obj is not None else self.provided.get(key)

    # -- pushing -------------------------------------------------------------------------------

    def _skipped(self, p: plan.Push) -> bool:
        """True if the tunnel already refused ``p``'s key at this very resourceVersion."""
        return self.refused.get(p.key) == p.rv

    def _refuse(self, p: plan.Push, code: str) -> None:
        """The tunnel cannot carry ``p``: skip it until the object changes, and say so once."""
        if self._skipped(p):
            return
        self.refused[p.key] = p.rv
        self.ctrl.refused_total += 1
        # %r: the key may hold the very control characters that got it refused.
        log.warning("node %s: %s %r at rv %r not sent: %s (skipped until it changes)",
                    self.node, p.operation, p.key[:300], p.rv[:20], code)
        self.ctrl.audit("sync_refused", node=self.node, operation=p.operation, resource=p.key[:300], rv=p.rv[:20],
                        code=code)

    async def _deliver(self, p: plan.Push) -> None:
        """Send ``p`` and wait for the edge's ack. What the tunnel cannot carry is skipped, not raised:
        one such object must not stop the rest of the node's sync, nor be retried every pass."""
        if self._skipped(p):
            return
        try:
            m.Resource.parse(p.key)  # the edge's own grammar: refused here once, not there every pass
            msg = m.Message.new(
                source="edgecontroller", destination="metamanager", group="resource", operation=p.operation,
                resource=p.key, content=p.obj, now_ms=int(time.time() * 1000), resourceversion=p.rv,
                msg_id=self.session.session.new_msg_id())
            reply = await self.session.request(msg, timeout=ACK_TIMEOUT_S)
        except (ProtocolError, EncodeError, MessageTooLarge) as exc:
            self._refuse(p, exc.code)
            return
        self.refused.pop(p.key, None)
        if reply.route.operation == m.ERROR:
            log.warning("node %s refused %s %s: %s", self.node, p.operation, p.key, reply.content)
            return
        if p.operation == "delete":
            self.held.pop(p.key, None)
        elif p.obj is not None:
            self.held[p.key] = p.obj

    async def _push_all(self, pushes: list[plan.Push]) -> None:
        """Send ``pushes`` (at most PUSH_WINDOW unacked): configmaps/secrets first, then the pods using them."""
        async def one(p: plan.Push) -> None:
            async with self._window:
                await self._deliver(p)

        def is_pod(p: plan.Push) -> bool:
            return p.key.split("/", 2)[1:2] == [plan.POD]

        pushes = [p for p in pushes if not self._skipped(p)]
        await asyncio.gather(*(one(p) for p in pushes if not is_pod(p)))
        await asyncio.gather(*(one(p) for p in pushes if is_pod(p)))

    def _ready(self, key: str) -> bool:
        """A pod goes out only once the configmaps/secrets it references were read and acked."""
        for ref in self.cache.refs_of(key):
            if ref in self._fetching or not self.cache.fetched(ref):
                return False
            ref_key = plan.key(*ref)
            if ref_key in self._pending or ref_key in self._inflight:
                return False
        return True

    async def _send(self, p: plan.Push) -> None:
        try:
            async with self._window:
                await self._deliver(p)
        except (ConnectionError, TimeoutError) as exc:
            self._fatal = exc  # the tunnel is gone: the next connect starts a new sync
        except KedgeError as exc:
            log.warning("node %s: sending %s %s failed: %s", self.node, p.operation, p.key, exc.code)
        finally:
            self._inflight.discard(p.key)
            self._kick.set()

    async def _pusher(self) -> None:
        """Send the delta of every pending key as soon as it is known; one message per key in flight."""
        while True:
            await self._kick.wait()
            self._kick.clear()
            if self._fatal is not None:
                raise self._fatal
            # Pods last: a pod whose references are sent in this round waits for their acks.
            for key in sorted(self._pending - self._inflight, key=lambda k: (k.split("/", 2)[1:2] == [plan.POD], k)):
                if not self._ready(key):
                    continue
                self._pending.discard(key)
                sweep = key in self._sweep
                self._sweep.discard(key)
                push = plan.delta(key, self._want(key), self.held.get(key), self.cache.deleted_rv(key),
                                  defer_status=not sweep)
                if push is None or self._skipped(push):
                    continue
                self._inflight.add(key)
                self._spawn(self._send(push))

    # -- watching ------------------------------------------------------------------------------

    def _post(self, fn, *args) -> None:
        assert self._loop is not None  # nosec B101 - set before the watch thread starts
        try:
            self._loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:  # the loop is closed: cloudcore is stopping
            self.stop.set()

    def _watch_thread(self, rv: str) -> None:
        """List-then-watch, as the node: events go to the cache; a 410 Gone re-lists; errors back off."""
        backoff = 0.5
        relist = False
        while not self.stop.is_set():
            try:
                if relist:
                    pods, rv = self.ctrl.api.list_pods(self.node)
                    self._post(self._on_list, pods, rv)
                    relist = False
                for event in self.ctrl.api.watch_pods(self.node, rv, timeout_s=WATCH_TIMEOUT_S, stop=self.stop):
                    obj_rv = ((event.get("object") or {}).get("metadata") or {}).get("resourceVersion")
                    if obj_rv:
                        rv = obj_rv
                    self._post(self._on_event, event)
                backoff = 0.5
            except ApiGone:
                self._post(self._on_event, {"type": "ERROR", "object": {"code": GONE}})
                relist = True
            except Exception as exc:  # noqa: BLE001 - keep watching through API server restarts
                log.info("pod watch for %s: %s; retrying", self.node, getattr(exc, "code", type(exc).__name__))
                self.stop.wait(backoff * random.uniform(0.5, 1.0))  # nosec B311 - jitter, not a secret
                backoff = min(backoff * 2, 10.0)

    # -- the periodic safety net ------------------------------------------------------------------

    async def _refresh_provided(self) -> None:
        provided: dict[str, dict[str, Any]] = {}
        for provider in self.ctrl.desired_providers:
            # Other controllers (e.g. devices) add what this node should hold: key -> object.
            provided.update(await asyncio.to_thread(provider, self.node))
        before, self.provided = self.provided, provided
        self._touch(set(before) | set(provided))  # unchanged ones come out of plan.delta as nothing

    async def _full_pass(self) -> None:
        api, node = self.ctrl.api, self.node
        pods, rv = await asyncio.to_thread(api.list_pods, node)
        self._on_list(pods, rv)
        # Re-read the referenced configmaps/secrets (how their updates are noticed), except
        # those read less than half an interval ago (e.g. for a pod that just arrived).
        referenced = self.cache.referenced()
        self._read_at = {ref: at for ref, at in self._read_at.items() if ref in referenced}
        fresh_after = time.monotonic() - self.ctrl.resync_interval_s / 2
        refs = sorted(ref for ref in referenced if self._read_at.get(ref, -1.0) < fresh_after)

        def read_all() -> list[tuple[Ref, dict[str, Any] | None, float]]:
            return [(ref, api.get(node, *ref), time.monotonic()) for ref in refs]

        for ref, obj, at in await asyncio.to_thread(read_all):
            self._read_at[ref] = at
            self._touch(self.cache.set_ref(ref, obj))
        await self._refresh_provided()
        # Everything is compared again: what the edge refused is retried, anything missed is
        # caught, and pods whose status changed get their newest version (see plan.delta).
        every = set(self.cache.desired()) | set(self.provided) | set(self.held)
        self._sweep |= every
        self._touch(every)

    async def _periodic(self) -> None:
        interval = self.ctrl.resync_interval_s
        due = time.monotonic() + interval
        attempt = 0
        while True:
            woke = False
            try:
                async with asyncio.timeout(max(0.0, due - time.monotonic())):
                    await self.dirty.wait()
                woke = True
            except TimeoutError:
                pass
            try:
                if woke:
                    self.dirty.clear()
                    await self._refresh_provided()
                    continue
                await self._full_pass()
                self.ctrl.full_passes_total += 1
                attempt = 0
                due = time.monotonic() + interval
            except Exception as exc:  # noqa: BLE001 - API hiccups must not end the node's sync
                attempt += 1
                log.warning("sync pass for node %s failed (%s); retrying",
                            self.node, getattr(exc, "code", type(exc).__name__))
                due = time.monotonic() + min(0.2 * 2 ** attempt, interval)

    # -- the node's sync -----------------------------------------------------------------------------

    async def _initial(self, inventory: dict[str, str], tombstones: dict[str, str]) -> None:
        attempt = 0
        watching = False
        while True:
            try:
                t0 = time.monotonic()
                pods, rv = await asyncio.to_thread(self.ctrl.api.list_pods, self.node)
                self.cache.replace(pods, rv)
                if not watching:  # events from the list on are applied while the resync is sent
                    threading.Thread(target=self._watch_thread, args=(self.cache.rv,), daemon=True,
                                     name=f"watch-{self.node}").start()
                    watching = True
                await self._fetch(self.cache.missing_refs())
                if self.cache.missing_refs():
                    raise KedgeError("referenced objects could not be read", code="api_error")
                await self._refresh_provided()
                desired = self.cache.desired()
                desired.update(self.provided)
                t1 = time.monotonic()
                pushes = plan.resync(desired, inventory, tombstones)
                await self._push_all(pushes)
                log.info("node %s resynced: %d objects desired (%.2fs to read), %d sent (%.2fs)", self.node,
                         len(desired), t1 - t0, len(pushes), time.monotonic() - t1)
                return
            except (ConnectionError, TimeoutError):
                raise  # the tunnel is gone: the next connect starts a new sync
            except Exception as exc:  # noqa: BLE001 - API hiccups must not end the node's sync
                attempt += 1
                log.warning("sync pass for node %s failed (%s); retrying",
                            self.node, getattr(exc, "code", type(exc).__name__))
                await asyncio.sleep(min(0.2 * 2 ** attempt, 5.0))

    async def run(self, inventory: dict[str, str], tombstones: dict[str, str]) -> None:
        self._loop = asyncio.get_running_loop()
        # What the edge holds, as far as the deltas need to know (its own Node is not ours to delete).
        self.held = {k: {"metadata": {"resourceVersion": v}} for k, v in inventory.items()
                     if k.split("/")[1:2] != [plan.NODE]}
        await self._initial(inventory, tombstones)
        periodic = asyncio.create_task(self._periodic())
        self._kick.set()  # what changed while the resync was sent
        try:
            await self._pusher()
        finally:
            periodic.cancel()
            for task in list(self._tasks):
                task.cancel()

    def cancel(self) -> None:
        self.stop.set()
        if self.task is not None:
            self.task.cancel()


class StatusWriter:
    """Pod status reports of all nodes, written upstream as the node, off the tunnels' read loops.

    CloudHub handles one node's messages in order and waits for each; a status PATCH
    held there would hold up the acks of everything sent to that node meanwhile. So a
    report is queued and answered at once: per pod only the newest report is kept (an
    older one still waiting is dropped -- it says less than the newer), at most one
    write per pod is in flight (so they land in order) and at most ``writers`` per node.
    A node with ``max_pending`` reports waiting has its next ones written before the
    answer, as before (backpressure). A failed write is logged and dropped, as the edge
    did with a refused one; the edge re-reports every pod's status after each connect.
    """

    def __init__(self, api: KubeAPI, *, writers: int = 4, max_pending: int = 10_000) -> None:
        self.api = api
        self.writers = writers
        self.max_pending = max_pending
        self._pending: dict[str, dict[tuple[str, str], dict[str, Any]]] = {}
        self._busy: dict[str, set[tuple[str, str]]] = {}
        self._tasks: set[asyncio.Task] = set()

    async def report(self, node: str, namespace: str, name: str, status: dict[str, Any]) -> None:
        pending, pod = self._pending.setdefault(node, {}), (namespace, name)
        if len(pending) >= self.max_pending and pod not in pending and pod not in self._busy.get(node, ()):
            await asyncio.to_thread(self.api.patch_pod_status, node, namespace, name, status)
            return
        pending[pod] = status
        self._start(node)

    def _start(self, node: str) -> None:
        pending, busy = self._pending.get(node, {}), self._busy.setdefault(node, set())
        for pod in list(pending):
            if len(busy) >= self.writers:
                break
            if pod in busy:
                continue
            busy.add(pod)
            task = asyncio.ensure_future(self._write(node, pod, pending.pop(pod)))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        if not pending:
            self._pending.pop(node, None)
        if not busy:
            self._busy.pop(node, None)

    async def _write(self, node: str, pod: tuple[str, str], status: dict[str, Any]) -> None:
        try:
            await asyncio.to_thread(self.api.patch_pod_status, node, pod[0], pod[1], status)
        except KedgeError as exc:
            log.info("status of pod %s/%s from node %s not written: %s", pod[0], pod[1], node, exc.code)
        except Exception as exc:  # noqa: BLE001 - one failed write must not stop the others
            log.warning("status of pod %s/%s from node %s not written: %s", pod[0], pod[1], node,
                        type(exc).__name__)
        finally:
            self._busy.get(node, set()).discard(pod)
            self._start(node)


class EdgeController:
    """Plugged into CloudHub as its router."""

    def __init__(self, api: KubeAPI, *, resync_interval_s: float = 5.0, node_grace_s: float = 40.0,
                 audit: Callable[..., None] | None = None) -> None:
        self.api = api
        # cloudcore's audit log (event, **fields): what the tunnel refused to carry goes there.
        self.audit: Callable[..., None] = audit or (lambda event, **fields: None)
        self.refused_total = 0  # pushes skipped because the tunnel refused them
        self.resyncs_total = 0  # syncs started from an edge's inventory (cloudcore's metrics read it)
        self.full_passes_total = 0  # periodic full sync passes finished, all nodes (metrics read it)
        self.node_grace_s = node_grace_s
        self.resync_interval_s = resync_interval_s
        self.syncs: dict[str, NodeSync] = {}
        self._pages: dict[str, dict[str, Any]] = {}
        self.readers = concurrent.futures.ThreadPoolExecutor(max_workers=REF_READERS,
                                                             thread_name_prefix="edgecontroller-read")
        self.statuses = StatusWriter(api)
        # Extension points for other cloud controllers (devicecontroller):
        #   desired_providers: blocking callables node -> {key: object} merged into the node's desired state;
        #   upstream_routes: resource type -> async handler(node, msg) -> response content.
        self.desired_providers: list[Callable[[str], dict[str, dict[str, Any]]]] = []
        self.upstream_routes: dict[str, Callable[[str, m.Message], Awaitable[Any]]] = {}

    async def node_lifecycle(self, *, interval_s: float = 2.0) -> None:
        """Mark nodes whose heartbeat lapsed Ready=Unknown. Their pods are not evicted (edge autonomy)."""
        while True:
            await asyncio.sleep(interval_s)
            try:
                nodes = await asyncio.to_thread(self.api.list_nodes)
                for name in plan.lost_nodes(nodes, now=time.time(), grace_s=self.node_grace_s):
                    if name in self.syncs:
                        continue  # connected right now: its next heartbeat is on the way
                    log.info("node %s stopped posting status; marking Ready=Unknown", name)
                    await asyncio.to_thread(self.api.set_node_ready_condition, name, "Unknown",
                                            "NodeStatusUnknown", "kedge edgecore stopped posting node status",
                                            _now_iso())
            except KedgeError as exc:
                log.warning("node lifecycle pass failed: %s", exc.code)
            except Exception as exc:  # noqa: BLE001 - keep monitoring through API server hiccups
                log.warning("node lifecycle pass failed: %s", type(exc).__name__,
                            exc_info=log.isEnabledFor(logging.DEBUG))

    def session_closed(self, node: str, session) -> None:
        if self.syncs.get(node) is None or self.syncs[node].session is session:
            self._pages.pop(node, None)  # a half-sent inventory dies with its tunnel
        sync = self.syncs.get(node)
        if sync is not None and sync.session is session:
            sync.cancel()
            del self.syncs[node]

    def _start_sync(self, session, inventory: dict[str, str], tombstones: dict[str, str]) -> None:
        old = self.syncs.pop(session.node, None)
        if old is not None:
            old.cancel()
        sync = NodeSync(self, session)
        self.syncs[session.node] = sync
        self.resyncs_total += 1

        async def runner() -> None:
            try:
                await sync.run(inventory, tombstones)
            except (ConnectionError, TimeoutError, asyncio.CancelledError):
                pass
            except KedgeError as exc:
                log.warning("sync of node %s stopped: %s", session.node, exc.code)
            finally:
                sync.stop.set()

        sync.task = asyncio.create_task(runner())

    async def route(self, session, msg: m.Message) -> Any:
        node = session.node  # from the certificate, never from the message
        op, res = msg.route.operation, msg.route.resource
        parts = res.split("/")
        if op == m.QUERY and len(parts) == 3 and parts[1] == "inventory":
            return self._inventory_page(session, msg.content)
        if len(parts) != 3:
            raise PeerError("bad resource", code="bad_resource")
        ns, kind, name = parts
        if kind in self.upstream_routes:
            return await self.upstream_routes[kind](node, msg)
        if op == m.QUERY and kind in ("secret", "configmap"):
            obj = await asyncio.to_thread(self.api.get_strict, node, kind, ns, name)
            if obj is None:
                raise PeerError("not found", code="not_found")
            return {"object": obj}
        if op in (m.UPDATE, m.PATCH) and kind == "podstatus":
            if not isinstance(msg.content, dict):
                raise PeerError("status must be an object", code="invalid_object")
            await self.statuses.report(node, ns, name, msg.content)
            return {"ok": True}
        if op == m.DELETE and kind == "pod":
            uid = (msg.content or {}).get("uid") if isinstance(msg.content, dict) else None
            if not isinstance(uid, str) or not uid:
                raise PeerError("pod deletion needs the pod's uid", code="invalid_object")
            await asyncio.to_thread(self.api.delete_pod, node, ns, name, uid)
            return {"ok": True}
        if op in (m.UPDATE, m.INSERT) and kind == "nodestatus":
            if name != node:
                raise PeerError("a node reports only its own status", code="forbidden")
            status = msg.content if isinstance(msg.content, dict) else {}
            await asyncio.to_thread(self.api.ensure_node, node, status)
            await asyncio.to_thread(self.api.renew_lease, node, _now_iso())
            return {"ok": True}
        raise PeerError("no handler for this message", code="not_supported")

    def _inventory_page(self, session, content: Any) -> dict[str, Any]:
        if not isinstance(content, dict):
            raise PeerError("inventory must be an object", code="invalid_object")
        snap, page, pages = content.get("snapshot"), content.get("page"), content.get("pages")
        inv, tomb = content.get("inventory") or {}, content.get("tombstones") or {}
        if not (isinstance(snap, str) and isinstance(page, int) and isinstance(pages, int)
                and 1 <= page <= pages <= MAX_INVENTORY_PAGES and isinstance(inv, dict) and isinstance(tomb, dict)):
            raise PeerError("malformed inventory page", code="invalid_object")
        state = self._pages.get(session.node)
        if state is None or state["snapshot"] != snap:
            state = {"snapshot": snap, "seen": set(), "inventory": {}, "tombstones": {}}
            self._pages[session.node] = state
        state["seen"].add(page)
        state["inventory"].update({str(k): str(v) for k, v in inv.items()})
        state["tombstones"].update({str(k): str(v) for k, v in tomb.items()})
        if len(state["inventory"]) + len(state["tombstones"]) > MAX_INVENTORY_ENTRIES:
            del self._pages[session.node]
            raise PeerError("inventory too large", code="inventory_too_large")
        if len(state["seen"]) == pages:
            del self._pages[session.node]
            self._start_sync(session, state["inventory"], state["tombstones"])
        return {"received": page}
