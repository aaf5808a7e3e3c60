"""The edgecontroller's I/O shell: per-node sync tasks and the upstream message router.

Per connected node:
1. the edge sends its inventory (live keys and tombstones with resourceVersions) right
   after connecting -- see :mod:`kedge.edge.metamanager.handler` for the message shape;
2. the controller lists the node's pods and fetches what they reference *as the node*,
   and sends exactly the difference (:func:`.plan.resync`), each as an acked message;
3. then it follows changes: a pod watch (as the node) plus a periodic re-read of the
   referenced configmaps/secrets trigger a rebuild of the desired state, and
   :func:`.plan.changes` says what to send. A message counts as delivered only when the
   edge acked it after its durable write; an unacked one is resent on the next pass.

Because the edge states what it holds on every connect, any cloudcore replica can serve
any node, and a cloudcore restart resends only what the edge lacks.

Upstream (edge -> cloud): pod status (``<ns>/podstatus/<name>``), node status
(``default/nodestatus/<node>``) and secret/configmap queries are executed as the node.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import threading
import time
from typing import Any, Awaitable, Callable

from kedge.cloud.edgecontroller import plan
from kedge.cloud.edgecontroller.kubeapi import ApiGone, KubeAPI
from kedge.errors import KedgeError, PeerError
from kedge.protocol import message as m

log = logging.getLogger(__name__)

PUSH_WINDOW = 32
# Bounds on what an edge may report as its inventory (all pages of one snapshot together).
MAX_INVENTORY_PAGES = 1_000
MAX_INVENTORY_ENTRIES = 200_000
ACK_TIMEOUT_S = 30.0


def _now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class NodeSync:
    def __init__(self, ctrl: "EdgeController", session) -> None:
        self.ctrl = ctrl
        self.session = session
        self.node = session.node
        self.held: dict[str, dict[str, Any]] = {}  # what the edge acked, by key
        self.ref_cache: dict[tuple[str, str, str], dict[str, Any] | None] = {}
        self.dirty = asyncio.Event()
        self.stop = threading.Event()
        self.task: asyncio.Task | None = None

    async def _push_all(self, pushes: list[plan.Push]) -> None:
        sem = asyncio.Semaphore(PUSH_WINDOW)

        async def one(p: plan.Push) -> None:
            async with sem:
                msg = m.Message.new(
                    source="edgecontroller", destination="metamanager", group="resource", operation=p.operation,
                    resource=p.key, content=p.obj, now_ms=int(time.time() * 1000), resourceversion=p.rv,
                    msg_id=self.session.session.new_msg_id())
                reply = await self.session.request(msg, timeout=ACK_TIMEOUT_S)
                if reply.route.operation == m.ERROR:
                    log.warning("node %s refused %s %s: %s", self.node, p.operation, p.key, reply.content)
                    return
                if p.operation == "delete":
                    self.held.pop(p.key, None)
                elif p.obj is not None:
                    self.held[p.key] = p.obj

        await asyncio.gather(*(one(p) for p in pushes))

    async def _desired(self, *, refresh: bool) -> dict[str, dict[str, Any]]:
        """The node's desired state: its pods (one list) and what they reference.

        Referenced configmaps/secrets are read one by one as the node (the Node authorizer
        allows exactly those), so they are cached between passes: a pod event fetches only
        references not seen before; a periodic ``refresh`` pass re-reads all of them (that is
        how configmap/secret updates are noticed).
        """
        api, node, cache = self.ctrl.api, self.node, self.ref_cache

        def build() -> tuple[dict[str, dict[str, Any]], str]:
            pods, rv = api.list_pods(node)
            needed: set[tuple[str, str, str]] = set()
            for pod in pods:
                pod.setdefault("kind", "Pod")
                pod.setdefault("apiVersion", "v1")
                needed |= plan.referenced(pod)
            for ref in needed:
                if refresh or ref not in cache:
                    cache[ref] = api.get(node, *ref)
            for ref in set(cache) - needed:
                del cache[ref]
            return plan.desired_state(pods, cache), rv

        desired, self.list_rv = await asyncio.to_thread(build)
        for provider in self.ctrl.desired_providers:
            # Other controllers (e.g. devices) add what this node should hold: key -> object.
            desired.update(await asyncio.to_thread(provider, node))
        return desired

    def _watch_thread(self, loop: asyncio.AbstractEventLoop) -> None:
        backoff = 0.5
        while not self.stop.is_set():
            rv = getattr(self, "list_rv", "")
            try:
                for event in self.ctrl.api.watch_pods(self.node, rv, timeout_s=60, stop=self.stop):
                    obj_rv = ((event.get("object") or {}).get("metadata") or {}).get("resourceVersion")
                    if obj_rv:
                        self.list_rv = obj_rv
                    if event.get("type") != "BOOKMARK":
                        loop.call_soon_threadsafe(self.dirty.set)
                backoff = 0.5
            except ApiGone:
                loop.call_soon_threadsafe(self.dirty.set)  # re-list, then watch from the new rv
                self.list_rv = ""
                self.stop.wait(0.2)
            except Exception as exc:  # noqa: BLE001 - keep watching through API server restarts
                log.info("pod watch for %s: %s; retrying", self.node, getattr(exc, "code", type(exc).__name__))
                self.stop.wait(backoff)
                backoff = min(backoff * 2, 10.0)

    async def run(self, inventory: dict[str, str], tombstones: dict[str, str]) -> None:
        # What the edge holds, as far as changes() needs to know (its own Node is not ours to delete).
        self.held = {k: {"metadata": {"resourceVersion": v}} for k, v in inventory.items()
                     if k.split("/")[1:2] != [plan.NODE]}
        first = True
        refresh = True
        loop = asyncio.get_running_loop()
        attempt = 0
        while True:
            try:
                t0 = time.monotonic()
                desired = await self._desired(refresh=refresh)
                t1 = time.monotonic()
                if first:
                    pushes = plan.resync(desired, inventory, tombstones)
                    await self._push_all(pushes)
                    log.info("node %s resynced: %d objects desired (%.2fs to read), %d sent (%.2fs)", self.node,
                             len(desired), t1 - t0, len(pushes), time.monotonic() - t1)
                    first = False
                    threading.Thread(target=self._watch_thread, args=(loop,), daemon=True,
                                     name=f"watch-{self.node}").start()
                else:
                    pushes = plan.changes(self.held, desired)
                    if pushes:
                        await self._push_all(pushes)
                attempt = 0
            except (ConnectionError, TimeoutError):
                raise  # the tunnel is gone: the next connect starts a new sync
            except Exception as exc:  # noqa: BLE001 - API hiccups must not end the node's sync
                attempt += 1
                log.warning("sync pass for node %s failed (%s); retrying",
                            self.node, getattr(exc, "code", type(exc).__name__))
                await asyncio.sleep(min(0.2 * 2 ** attempt, 5.0))
                continue
            refresh = False
            try:
                async with asyncio.timeout(self.ctrl.resync_interval_s):
                    await self.dirty.wait()
                await asyncio.sleep(0.02)  # coalesce bursts of events
            except TimeoutError:
                refresh = True  # periodic pass: re-read referenced configmaps and secrets
            self.dirty.clear()

    def cancel(self) -> None:
        self.stop.set()
        if self.task is not None:
            self.task.cancel()


class EdgeController:
    """Plugged into CloudHub as its router."""

    def __init__(self, api: KubeAPI, *, resync_interval_s: float = 5.0, node_grace_s: float = 40.0) -> None:
        self.api = api
        self.node_grace_s = node_grace_s
        self.resync_interval_s = resync_interval_s
        self.syncs: dict[str, NodeSync] = {}
        self._pages: dict[str, dict[str, Any]] = {}
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
            except Exception:  # noqa: BLE001 - keep monitoring through API server hiccups
                log.exception("node lifecycle pass failed")

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
            await asyncio.to_thread(self.api.patch_pod_status, node, ns, name, msg.content)
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
