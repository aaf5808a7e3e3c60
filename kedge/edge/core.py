"""``kedge edgecore``: the edge node process. Must never import the kubernetes client.

Wiring: EdgeHub (tunnel) -> MetaManager (durable, encrypted store: ``EDGEDIR/edge.db``,
key ``EDGEDIR/edge.key``) -> edged (pods as local processes, when available). After
every connect the node reports its inventory (so the cloud sends only the difference)
and its status; while connected it heartbeats its status every keepalive interval.
"""

from __future__ import annotations

import asyncio
import logging
import platform
import time
from pathlib import Path
from typing import Any, Awaitable, Callable

from kedge import __version__
from kedge.edge.config import EdgeDir
from kedge.edge.hub import EdgeHub
from kedge.edge.metamanager.handler import MetaManager
from kedge.edge.metamanager.store import MetaStore
from kedge.errors import KedgeError
from kedge.protocol import message as m

log = logging.getLogger(__name__)

EDGE_KEY = "edge.key"


def node_status(node: str) -> dict[str, Any]:
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return {
        "conditions": [{"type": "Ready", "status": "True", "reason": "EdgeReady",
                        "message": "edgecore is connected", "lastHeartbeatTime": now,
                        "lastTransitionTime": now}],
        "nodeInfo": {"kubeletVersion": f"kedge-{__version__}", "operatingSystem": "linux",
                     "architecture": platform.machine(), "kernelVersion": platform.release(),
                     "containerRuntimeVersion": "kedge-process://1", "osImage": platform.platform(),
                     "machineID": "", "systemUUID": "", "bootID": "", "kubeProxyVersion": ""},
        "addresses": [{"type": "Hostname", "address": node}],
    }


class EdgeCore:
    def __init__(self, data_dir: str | Path, *, keepalive_interval: float | None = None) -> None:
        self.dir = EdgeDir(data_dir)
        self.hub = EdgeHub(data_dir, handler=self._handle, on_connect=self._on_connect,
                           keepalive_interval=keepalive_interval)
        self.node = self.hub.node
        self.store = MetaStore(self.dir.db, self.dir.root / EDGE_KEY)
        self.meta = MetaManager(self.store, node=self.node, limits=self.hub.limits)
        self.synced = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.store.on_change(self._store_changed)
        # Long-running parts started with the node, each ``async fn(core)`` (edged, devicetwin).
        self.components: list[Callable[["EdgeCore"], Awaitable[None]]] = []

    def _store_changed(self, key: str, obj: dict[str, Any] | None) -> None:
        """Called in the writer's thread after a commit; hop to the event loop."""
        if self._loop is not None and obj is not None and key.split("/")[1:2] == ["pod"]:
            if (obj.get("metadata") or {}).get("deletionTimestamp"):
                self._loop.call_soon_threadsafe(lambda: asyncio.ensure_future(self.finish_pod_deletion(obj)))

    async def finish_pod_deletion(self, pod: dict[str, Any]) -> None:
        """The pod is being deleted: stop it locally, then tell the cloud to remove it (grace 0)."""
        meta = pod.get("metadata") or {}
        ns, name, uid = meta.get("namespace", "default"), meta.get("name", ""), meta.get("uid", "")
        try:
            reply = await self.hub.request(self.hub.new_message(m.DELETE, f"{ns}/pod/{name}", {"uid": uid}),
                                           timeout=15)
            if reply.route.operation == m.ERROR:
                log.warning("cloud refused to finish deletion of pod %s/%s: %s", ns, name, reply.content)
        except (KedgeError, TimeoutError, ConnectionError) as exc:
            # Offline: the next connect finishes it (see _on_connect).
            log.info("pod %s/%s deletion pending: %s", ns, name, getattr(exc, "code", type(exc).__name__))

    async def _handle(self, msg: m.Message) -> Any:
        return await self.meta.handle(msg)

    async def report_status(self) -> None:
        await self.hub.request(self.hub.new_message(
            m.UPDATE, f"default/nodestatus/{self.node}", node_status(self.node)), timeout=15)

    async def _on_connect(self, hub: EdgeHub) -> None:
        self.synced.clear()
        await self.report_status()
        await self.meta.send_inventory(hub)
        self.synced.set()
        pending = await asyncio.to_thread(self.store.list, "pod")
        for pod in pending:
            if (pod.get("metadata") or {}).get("deletionTimestamp"):
                await self.finish_pod_deletion(pod)
        while True:
            await asyncio.sleep(hub.keepalive_interval)
            try:
                await self.report_status()
            except (KedgeError, TimeoutError) as exc:
                log.warning("node status heartbeat failed: %s", getattr(exc, "code", type(exc).__name__))

    async def run(self) -> None:
        log.info("edgecore for node %s starting", self.node)
        self._loop = asyncio.get_running_loop()
        tasks = [asyncio.create_task(c(self)) for c in self.components]
        try:
            await self.hub.run()
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self.store.close()


async def run_edgecore(data_dir: str | Path) -> None:
    await EdgeCore(data_dir).run()
