"""``kedge edgecore``: the edge node process. Must never import the kubernetes client.

Wiring: EdgeHub (tunnel) -> MetaManager (durable, encrypted store: ``EDGEDIR/edge.db``,
key ``EDGEDIR/edge.key``) -> edged (pods as local processes, when available). After
every connect the node reports its inventory (so the cloud sends only the difference)
and its status; while connected it heartbeats its status every keepalive interval.
"""

from __future__ import annotations

import asyncio
import logging
import os
import platform
import time
from pathlib import Path
from typing import Any, Awaitable, Callable

from kedge import __version__
from kedge.edge.config import EdgeDir
from kedge.edge.edged.manager import PodManager
from kedge.edge.edged.runtime import ProcessRuntime
from kedge.edge.hub import EdgeHub
from kedge.edge.metamanager.handler import MetaManager
from kedge.edge.metamanager.store import MetaStore
from kedge.errors import KedgeError, PeerError
from kedge.protocol import message as m

log = logging.getLogger(__name__)

EDGE_KEY = "edge.key"
SYSTEM_PODS_ROOT = Path("/var/lib/kedge/pods")


def default_pods_root(edge_dir: EdgeDir, node: str) -> Path:
    """Where pod directories live.

    Running as root, pods run as unprivileged users who must be able to traverse to their
    pod directory, which they cannot inside the 0700 data dir: use
    ``/var/lib/kedge/pods/<node>-<hash of the data dir>`` (0711 parents, pod dirs owned per
    pod). Unprivileged, pods run as edgecore's own user: ``EDGEDIR/pods``.
    """
    if os.geteuid() != 0:
        return edge_dir.root / "pods"
    import hashlib

    tag = hashlib.sha256(str(edge_dir.root.resolve()).encode()).hexdigest()[:12]
    return SYSTEM_PODS_ROOT / f"{node}-{tag}"


def _ensure_traversable(root: Path) -> None:
    """Create the system pods root's parents 0711 (traverse-only for others), as root."""
    if os.geteuid() != 0 or SYSTEM_PODS_ROOT not in (root, *root.parents):
        return
    for d in (SYSTEM_PODS_ROOT.parent, SYSTEM_PODS_ROOT):
        try:
            os.mkdir(d, 0o711)
        except FileExistsError:
            pass
        st = os.lstat(d)
        if st.st_uid == 0 and not (st.st_mode & 0o001):
            os.chmod(d, 0o711)  # nosec B103 - a directory holding no secrets: others may traverse (o+x) to their pod dir, not list or write


# Stable log event names (``--log-format json``) for pod phase changes.
_PHASE_EVENTS = {"Running": "pod.started", "Succeeded": "pod.exited", "Failed": "pod.exited"}


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
    def __init__(self, data_dir: str | Path, *, keepalive_interval: float | None = None,
                 metrics_address: str | None = None) -> None:
        if metrics_address is not None:
            from kedge.edge.metrics import check_address

            check_address(metrics_address)  # a usage error before anything starts
        self.metrics_address = metrics_address
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
        from kedge.edge.devicetwin import run_devicetwin

        self.components: list[Callable[["EdgeCore"], Awaitable[None]]] = [EdgeCore._run_pods, run_devicetwin]
        self.pods_root = default_pods_root(self.dir, self.node)
        _ensure_traversable(self.pods_root)
        self.pods: PodManager | None = None
        self._pods_dirty = asyncio.Event()
        self._pod_status: dict[tuple[str, str], dict[str, Any]] = {}
        self._deleting: set[str] = set()
        self.devicetwin: Any = None  # the running DeviceTwinService, once devices are bound (metrics)
        # Pods outlive edgecore (edge autonomy) unless asked otherwise (`kedge up`'s demo edges).
        self.stop_pods_on_exit = False

    def _store_changed(self, key: str, obj: dict[str, Any] | None) -> None:
        """Called in the writer's thread after a commit; hop to the event loop."""
        if self._loop is not None and key.split("/")[1:2] in (["pod"], ["configmap"], ["secret"]):
            self._loop.call_soon_threadsafe(self._pods_dirty.set)

    # -- edged ------------------------------------------------------------------------

    def _lookup(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        return self.store.get(f"{namespace}/{kind}/{name}")

    async def _on_pod_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        before = (self._pod_status.get((namespace, name)) or {}).get("phase")
        phase = status.get("phase")
        if phase != before and phase in _PHASE_EVENTS:
            log.info("pod %s/%s %s", namespace, name, phase,
                     extra={"event": _PHASE_EVENTS[phase], "node": self.node})
        self._pod_status[(namespace, name)] = status
        await self._send_pod_status(namespace, name, status)

    async def _send_pod_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        if not self.hub.connected.is_set():
            return  # sent again after the next connect
        try:
            reply = await self.hub.request(self.hub.new_message(m.UPDATE, f"{namespace}/podstatus/{name}", status),
                                           timeout=15)
            if reply.route.operation == m.ERROR:
                log.info("pod status of %s/%s refused: %s", namespace, name, reply.content)
        except (KedgeError, TimeoutError, ConnectionError) as exc:
            log.info("pod status of %s/%s not sent: %s", namespace, name, getattr(exc, "code", type(exc).__name__))

    async def _run_pods(self) -> None:
        """Keep the pod runtime in line with the store -- also while offline (edge autonomy)."""
        self.pods = PodManager(self.pods_root, runtime=ProcessRuntime(), lookup=self._lookup,
                               on_status=self._on_pod_status, uid_range=self.hub.cfg.pod_uid_range,
                               private_dirs=(self.dir.root,))
        supervisor = asyncio.create_task(self.pods.run())
        self._pods_dirty.set()  # start what the store holds, e.g. after a reboot
        try:
            while True:
                await self._pods_dirty.wait()
                await asyncio.sleep(0.02)  # coalesce bursts of changes
                self._pods_dirty.clear()
                pods = await asyncio.to_thread(self.store.list, "pod")
                live = [p for p in pods if not (p.get("metadata") or {}).get("deletionTimestamp")]
                await self.pods.sync(live)
                for pod in pods:
                    uid = (pod.get("metadata") or {}).get("uid", "")
                    if (pod.get("metadata") or {}).get("deletionTimestamp") and uid not in self._deleting:
                        self._deleting.add(uid)
                        asyncio.ensure_future(self._finish_when_stopped(pod))
        finally:
            supervisor.cancel()
            await self.pods.shutdown(stop_pods=self.stop_pods_on_exit)

    async def _finish_when_stopped(self, pod: dict[str, Any]) -> None:
        meta = pod.get("metadata") or {}
        uid = meta.get("uid", "")
        grace = float(meta.get("deletionGracePeriodSeconds") or 30)
        try:
            async with asyncio.timeout(grace + 10):
                while self.pods is not None and self.pods.pod_state(uid) is not None:
                    await asyncio.sleep(0.1)
        except TimeoutError:
            log.warning("pod %s/%s still stopping; finishing its deletion anyway", meta.get("namespace"), meta.get("name"))
        try:
            await self.finish_pod_deletion(pod)
        finally:
            self._deleting.discard(uid)
            self._pod_status.pop((meta.get("namespace", "default"), meta.get("name", "")), None)

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
        if msg.route.group == "edged":  # kubectl logs (kedge.edge.podlogs); the rest is metamanager's
            from kedge.edge import podlogs

            query = podlogs.parse_query(msg)
            pods = self.pods
            if pods is None:
                raise PeerError("pods are not running yet", code="not_found")
            return await asyncio.to_thread(podlogs.answer, query, pods.log_path)
        return await self.meta.handle(msg)

    async def report_status(self) -> None:
        await self.hub.request(self.hub.new_message(
            m.UPDATE, f"default/nodestatus/{self.node}", node_status(self.node)), timeout=15)

    async def _on_connect(self, hub: EdgeHub) -> None:
        self.synced.clear()
        await self.report_status()
        await self.meta.send_inventory(hub)
        self.synced.set()
        for (ns, name), status in list(self._pod_status.items()):
            await self._send_pod_status(ns, name, status)  # what changed while offline
        self._pods_dirty.set()  # deletions that waited for the link are finished now
        while True:
            await asyncio.sleep(hub.keepalive_interval)
            try:
                await self.report_status()
            except (KedgeError, TimeoutError) as exc:
                log.warning("node status heartbeat failed: %s", getattr(exc, "code", type(exc).__name__))

    async def run(self) -> None:
        log.info("edgecore for node %s starting", self.node, extra={"event": "edgecore.starting", "node": self.node})
        self._loop = asyncio.get_running_loop()
        metrics = None
        if self.metrics_address is not None:
            from kedge._internal import fsutil
            from kedge.edge.metrics import start as start_metrics

            metrics, url = await start_metrics(self, self.metrics_address)
            await asyncio.to_thread(fsutil.update_json, self.dir.endpoints, {"metrics": url})
        tasks = [asyncio.create_task(c(self)) for c in self.components]
        try:
            await self.hub.run()
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if metrics is not None:
                metrics.close()
            self.store.close()


async def run_edgecore(data_dir: str | Path, *, stop_pods_on_exit: bool = False,
                       metrics_address: str | None = None) -> None:
    core = EdgeCore(data_dir, metrics_address=metrics_address)
    core.stop_pods_on_exit = stop_pods_on_exit
    await core.run()
