"""devicecontroller (cloud): Devices bound to a node (and their DeviceModels) go down the
tunnel; device status reported by the node comes back into ``Device.status``.

Plugged into the edgecontroller through its extension points (``install``):

- a desired-state provider ``node -> {"<ns>/device/<name>": Device, "<ns>/devicemodel/<name>":
  DeviceModel}``, answered from a cache of all Devices and DeviceModels kept current by a
  list and then a watch of each (informer style; a watch that expires or falls behind is
  followed by a fresh list). A change to a Device's spec, labels or annotations -- or to a
  DeviceModel it uses -- wakes that node's sync at once. Devices are read as cloudcore (its
  role may get/list/watch devices and devicemodels); CRDs have no field selectors, so the
  cache is filtered by ``spec.nodeName``;
- upstream route ``devicestatus``: a batch of reports from a node. The node is the one in
  the tunnel certificate, never one named in the message; a report is written only for a
  Device whose ``spec.nodeName`` is that node, and only after it passed the same checks
  the edge applies (known properties, type and range per the DeviceModel). Newest wins
  per twin by the report timestamp, so stale buffered reports never overwrite newer ones;
- upstream route ``devicecerts``: the node's broker server certificate and edgecore's
  MQTT client certificate, issued by the device CA for the keys in the node's two CSRs
  (see :mod:`.pki`: a bounded number of pairs per node, each superseding the pair before the
  previous one; refusals are audited and answered with a code). A pair recorded for a node
  whose revocation commits meanwhile is revoked with it and not handed out.

Status writes go to the ``status`` subresource as cloudcore (``devices/status`` merge patch).
Reports wait in one round-robin queue of devices (the device that waited longest first);
a device's queued reports are merged into one write, and a device is written by one writer
at a time, so its reports land in order. How the API server is reached is a backend:
:class:`LocalDevices` calls the embedded API server in-process (cloudcore's identity, the
same authorization and audit, no TLS round trip); :class:`ClientDevices` uses the
``kubernetes`` client against a real cluster (``cloudcore --kubeconfig``).

A Device's status changes bump its resourceVersion; the copy sent to the edge keeps the
resourceVersion at which its spec (or labels/annotations) last changed, so status
traffic does not echo back down the tunnel.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import datetime as dt
import logging
import threading
import time
import urllib.parse
from collections import deque
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Protocol

from kedge.edge.devicetwin import model as tm
from kedge.errors import KedgeError, LocalError, PeerError
from kedge.limits import DEVICE_MAX_MISSES as MAX_MISSES
from kedge.limits import MAX_CSR_BYTES
from kedge.store import rv as rv_text

log = logging.getLogger(__name__)

GROUP, VERSION = "devices.kubeedge.io", "v1beta1"
API_VERSION = f"{GROUP}/{VERSION}"
BASE_PATH = f"/apis/{GROUP}/{VERSION}"
PLURALS = ("devices", "devicemodels")
MAX_REPORTS_PER_BATCH = 1000
MISS_TTL_S = 2.0
WATCH_TIMEOUT_S = 300
FIRST_LOAD_WAIT_S = 10.0
RETRY_MAX_S = 10.0


def _now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _spec_fingerprint(obj: dict[str, Any]) -> tuple[Any, Any, Any, Any]:
    """What the edge cares about (which object, spec, labels, annotations), compared with ``==``:
    status writes change a Device's resourceVersion every second, this stays equal; an object
    re-created under its name (new uid) differs even with the same spec."""
    meta = obj.get("metadata") or {}
    return (meta.get("uid"), obj.get("spec"), meta.get("labels"), meta.get("annotations"))


def _ident(obj: dict[str, Any]) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return str(meta.get("namespace", "")), str(meta.get("name", ""))


def _rv(obj: dict[str, Any] | None) -> int:
    number = rv_text.parse(((obj or {}).get("metadata") or {}).get("resourceVersion"))
    return -1 if number is None else number


def _node_of(obj: dict[str, Any] | None) -> str:
    return str(((obj or {}).get("spec") or {}).get("nodeName") or "")


def _model_of(obj: dict[str, Any]) -> Any:
    return ((obj.get("spec") or {}).get("deviceModelRef") or {}).get("name")


class WatchRestart(LocalError):
    """The watch cannot resume from its resourceVersion: list again."""

    code = "watch_restart"


class Backend(Protocol):
    """How the devicecontroller reaches the API server (as cloudcore)."""

    concurrency: int  # status writes in flight at once

    async def list(self, plural: str) -> tuple[list[dict[str, Any]], str]: ...

    def watch(self, plural: str, rv: str) -> AsyncIterator[dict[str, Any]]: ...

    async def get(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None: ...

    async def patch_status(self, namespace: str, name: str, patch: dict[str, Any]) -> None: ...


def _path(plural: str, namespace: str | None = None, name: str | None = None, sub: str | None = None) -> str:
    parts = [BASE_PATH]
    if namespace is not None:
        parts += ["namespaces", urllib.parse.quote(namespace, safe="")]
    parts.append(plural)
    if name is not None:
        parts.append(urllib.parse.quote(name, safe=""))
    if sub is not None:
        parts.append(sub)
    return "/".join(parts)


class LocalDevices:
    """The embedded API server, called in-process (:class:`kedge.apiserver.local.LocalClient`).
    Writes wait on the disk, not on the GIL, so many may be in flight: the API server commits
    the ones that arrive together in one transaction."""

    concurrency = 64

    def __init__(self, client) -> None:
        self.client = client

    async def _get_json(self, path: str) -> dict[str, Any] | None:
        from kedge.cloud.edgecontroller.kubeapi import decode_response, status_error

        status, body = await self.client.request("GET", path)
        if status == 404:
            return None
        if status != 200:
            raise status_error(status)
        data = decode_response(body)  # bounded, as an answer of a remote API server is
        return data if isinstance(data, dict) else None

    async def list(self, plural: str) -> tuple[list[dict[str, Any]], str]:
        data = await self._get_json(_path(plural)) or {}
        items = [o for o in data.get("items") or [] if isinstance(o, dict)]
        return items, str((data.get("metadata") or {}).get("resourceVersion", ""))

    async def watch(self, plural: str, rv: str) -> AsyncIterator[dict[str, Any]]:
        from kedge.apiserver.local import WatchEnded

        query = urllib.parse.urlencode({"watch": "1", "resourceVersion": rv, "allowWatchBookmarks": "true",
                                        "timeoutSeconds": str(WATCH_TIMEOUT_S)})
        try:
            async for event in self.client.watch(f"{_path(plural)}?{query}"):
                yield event
        except WatchEnded as exc:
            raise WatchRestart(str(exc)) from exc

    async def get(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        return await self._get_json(_path(plural, namespace, name))

    async def patch_status(self, namespace: str, name: str, patch: dict[str, Any]) -> None:
        from kedge.cloud.edgecontroller.kubeapi import status_error

        status, _ = await self.client.request("PATCH", _path("devices", namespace, name, "status"), patch,
                                              content_type="application/merge-patch+json")
        if status == 404:
            raise PeerError("no such device", code="unknown_device")
        if status != 200:
            raise status_error(status)


class ClientDevices:
    """A real cluster through the ``kubernetes`` client (blocking calls, run in own threads)."""

    # Each write holds a thread and a kept-alive connection for a round trip to another
    # process; throughput is bound by round trips in flight (8 gave p99 1.6 s, 32 gave 1.1 s
    # in device_twin_bench.py --real-cluster).
    concurrency = 32

    def __init__(self, kube) -> None:
        from kubernetes import client

        self.kube = kube
        self.custom = client.CustomObjectsApi(kube.api)
        self.status_custom = client.CustomObjectsApi(_client_with_pool(kube.api, self.concurrency))
        self._pool = concurrent.futures.ThreadPoolExecutor(self.concurrency, thread_name_prefix="devices")

    async def _run(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    async def list(self, plural: str) -> tuple[list[dict[str, Any]], str]:
        data = await self._run(lambda: self.kube._call(self.custom.list_cluster_custom_object, GROUP, VERSION,
                                                       plural)) or {}
        items = [o for o in data.get("items") or [] if isinstance(o, dict)]
        return items, str((data.get("metadata") or {}).get("resourceVersion", ""))

    async def watch(self, plural: str, rv: str) -> AsyncIterator[dict[str, Any]]:
        """Events read by a daemon thread (it may block in the socket until the watch's
        timeout) and handed to the loop, at most ``room`` ahead of the consumer."""
        from kedge.cloud.edgecontroller.kubeapi import ApiGone

        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()
        room = threading.Semaphore(1000)
        stop = threading.Event()

        def hand(item: Any) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # the loop is gone: nobody is listening
                stop.set()

        def reader() -> None:
            try:
                for event in self.kube.watch_custom(GROUP, VERSION, plural, rv, timeout_s=WATCH_TIMEOUT_S, stop=stop):
                    while not room.acquire(timeout=1.0):
                        if stop.is_set():
                            return
                    hand(event)
                hand(None)
            except BaseException as exc:  # noqa: BLE001 - handed to the consumer, which decides
                hand(exc)

        threading.Thread(target=reader, daemon=True, name=f"devicecontroller-watch-{plural}").start()
        try:
            while True:
                item = await queue.get()
                if item is None:
                    return
                if isinstance(item, ApiGone):
                    raise WatchRestart(str(item)) from item
                if isinstance(item, BaseException):
                    raise item
                room.release()
                yield item
        finally:
            stop.set()

    async def get(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        return await self._run(lambda: self.kube._call(self.custom.get_namespaced_custom_object, GROUP, VERSION,
                                                       namespace, plural, name))

    async def patch_status(self, namespace: str, name: str, patch: dict[str, Any]) -> None:
        found = await self._run(lambda: self.kube._call(
            self.status_custom.patch_namespaced_custom_object_status, GROUP, VERSION, namespace, "devices", name,
            patch, _content_type="application/merge-patch+json"))
        if found is None:
            raise PeerError("no such device", code="unknown_device")


class DeviceController:
    def __init__(self, backend: Backend, data_dir: str | Path | None) -> None:
        self.backend = backend
        self.data_dir = Path(data_dir) if data_dir is not None else None
        self._lock = threading.Lock()  # the caches are read by the edgecontroller's threads
        self.devices: dict[tuple[str, str], dict[str, Any]] = {}
        self.models: dict[tuple[str, str], dict[str, Any]] = {}
        self._loaded: set[str] = set()  # plurals listed at least once
        self.loaded = threading.Event()  # both listed
        self._parsed_models: dict[tuple[str, str], tuple[str, tm.DeviceModel]] = {}  # by rv
        self._spec_rv: dict[tuple[str, str, str], tuple[Any, str]] = {}  # key -> (fingerprint, rv)
        # Status we wrote last, by device, with that Device's uid: the base for merging the next
        # reports until the watch shows our write (a Device re-created under the name starts afresh).
        self._written: dict[tuple[str, str], tuple[str, dict[str, Any]]] = {}
        self._misses: dict[tuple[str, str], float] = {}
        # Reports waiting to be written, per (node, namespace, name), in arrival order; devices
        # with reports and no writer, oldest first; devices a writer holds right now.
        self._queued: dict[tuple[str, str, str], list[tuple[Any, asyncio.Future]]] = {}
        self._ready: deque[tuple[str, str, str]] = deque()
        self._busy: set[tuple[str, str, str]] = set()
        self._writers = 0
        self._tasks: set[asyncio.Task] = set()
        self.followers: list[asyncio.Task] = []
        self.on_nodes_changed: Callable[[set[str]], None] = lambda nodes: None
        self.audit: Callable[..., None] = lambda event, **fields: None  # cloudcore's audit log
        self.rejects: dict[str, int] = {}
        self.writes = 0
        self._last_stats = (time.monotonic(), 0)
        self._state: Any = None  # kedge.cloud.state.CloudState, opened by the first devicecerts request
        self._state_lock = threading.Lock()

    # -- the cache of Devices and DeviceModels -----------------------------------------

    def _table(self, plural: str) -> dict[tuple[str, str], dict[str, Any]]:
        return self.devices if plural == "devices" else self.models

    def _nodes_using(self, model: tuple[str, str]) -> set[str]:
        return {_node_of(d) for (ns, _), d in self.devices.items() if ns == model[0] and _model_of(d) == model[1]}

    def _changed(self, plural: str, ident: tuple[str, str], before: dict[str, Any] | None,
                 after: dict[str, Any] | None) -> set[str]:
        """Nodes whose desired state a change of one object touches (its spec/labels/annotations)."""
        if before is not None and after is not None and _spec_fingerprint(before) == _spec_fingerprint(after):
            return set()
        if plural == "devices":
            return {_node_of(before), _node_of(after)}
        return self._nodes_using(ident)

    def _forget(self, plural: str, ident: tuple[str, str]) -> None:
        """Drop what was kept about an object that is gone (under the lock)."""
        kind = "Device" if plural == "devices" else "DeviceModel"
        self._spec_rv.pop((kind, *ident), None)
        if plural == "devices":
            self._written.pop(ident, None)
        else:
            self._parsed_models.pop(ident, None)

    def replace(self, plural: str, items: list[dict[str, Any]]) -> set[str]:
        """A full list: the cache becomes exactly it. Returns the nodes touched."""
        new = {_ident(o): o for o in items}
        touched: set[str] = set()
        with self._lock:
            old = self._table(plural)
            for ident in old.keys() | new.keys():
                touched |= self._changed(plural, ident, old.get(ident), new.get(ident))
            for ident in old.keys() - new.keys():
                self._forget(plural, ident)
            if plural == "devices":
                self.devices = new
            else:
                self.models = new
            self._loaded.add(plural)
            if self._loaded.issuperset(PLURALS):
                self.loaded.set()
        touched.discard("")
        return touched

    def apply(self, plural: str, event: dict[str, Any]) -> set[str]:
        """One watch event (ADDED/MODIFIED/DELETED): newest resourceVersion wins. Returns the nodes touched."""
        obj = event.get("object")
        kind = event.get("type")
        if not isinstance(obj, dict) or kind not in ("ADDED", "MODIFIED", "DELETED"):
            return set()
        ident = _ident(obj)
        with self._lock:
            table = self._table(plural)
            before = table.get(ident)
            if before is not None and _rv(before) > _rv(obj):
                return set()
            if kind == "DELETED":
                table.pop(ident, None)
                self._forget(plural, ident)
                after = None
            else:
                table[ident] = after = obj
            touched = self._changed(plural, ident, before, after)
        touched.discard("")
        return touched

    async def follow(self, plural: str) -> None:
        """List, then watch from the list's resourceVersion, for as long as cloudcore runs."""
        backoff = 0.5
        while True:
            try:
                items, rv = await self.backend.list(plural)
                self.on_nodes_changed(self.replace(plural, items))
                backoff = 0.5
                while True:  # a watch ended by its timeout resumes where it stopped
                    async for event in self.backend.watch(plural, rv):
                        if event.get("type") == "ERROR":
                            raise WatchRestart(f"watch error {(event.get('object') or {}).get('code')}")
                        obj = event.get("object")
                        if isinstance(obj, dict) and _rv(obj) >= 0:
                            rv = str(_rv(obj))
                        if event.get("type") != "BOOKMARK":
                            self.on_nodes_changed(self.apply(plural, event))
            except WatchRestart as exc:
                log.info("%s watch restarts with a list: %s", plural, exc)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - keep following through API server restarts
                log.info("%s list/watch failed: %s; retrying", plural, getattr(exc, "code", type(exc).__name__))
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, RETRY_MAX_S)

    def _stable(self, kind: str, obj: dict[str, Any]) -> dict[str, Any]:
        """A copy for the edge: kind/apiVersion set, no status, rv of the last spec change."""
        meta = dict(obj.get("metadata") or {})
        key = (kind, meta.get("namespace", ""), meta.get("name", ""))
        fp, rv = _spec_fingerprint(obj), str(meta.get("resourceVersion", ""))
        old = self._spec_rv.get(key)
        if old is not None and old[0] == fp:
            rv = old[1]
        else:
            self._spec_rv[key] = (fp, rv)
        meta["resourceVersion"] = rv
        out = {k: v for k, v in obj.items() if k != "status"}
        out.update(apiVersion=API_VERSION, kind=kind, metadata=meta)
        return out

    def desired_for(self, node: str) -> dict[str, dict[str, Any]]:
        """The edgecontroller's provider (called in a thread): this node's Devices and the
        DeviceModels they use. Until both are listed once there is no answer (the sync retries)."""
        if not self.loaded.wait(FIRST_LOAD_WAIT_S):
            raise LocalError("devices are not listed yet", code="api_error")
        out: dict[str, dict[str, Any]] = {}
        with self._lock:
            for (ns, name), obj in self.devices.items():
                if _node_of(obj) != node:
                    continue
                out[f"{ns}/device/{name}"] = self._stable("Device", obj)
                model_name = _model_of(obj)
                model = self.models.get((ns, model_name)) if isinstance(model_name, str) else None
                if model is not None:
                    out[f"{ns}/devicemodel/{model_name}"] = self._stable("DeviceModel", model)
        return out

    async def _device_for(self, node: str, ns: str, name: str) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """The Device (bound to ``node``) and its model; refuses devices of other nodes."""
        with self._lock:
            obj = self.devices.get((ns, name))
        if obj is None or _node_of(obj) != node:
            # Not (yet) known as this node's: read it fresh, at most every MISS_TTL_S per device,
            # so a node naming foreign devices cannot turn reports into a flood of API reads.
            now = time.monotonic()
            with self._lock:
                if now - self._misses.get((ns, name), -MISS_TTL_S) < MISS_TTL_S:
                    raise tm.TwinRejected("device is not bound to this node", code="forbidden")
                self._misses[(ns, name)] = now
                if len(self._misses) > MAX_MISSES:
                    self._misses.clear()
            fresh = await self.backend.get("devices", ns, name)
            if fresh is not None:
                self.on_nodes_changed(self.apply("devices", {"type": "MODIFIED", "object": fresh}))
            obj = fresh
        if obj is None:
            raise tm.TwinRejected("no such device", code="unknown_device")
        if _node_of(obj) != node:
            raise tm.TwinRejected("device is not bound to this node", code="forbidden")
        model_name = _model_of(obj)
        with self._lock:
            model = self.models.get((ns, model_name)) if isinstance(model_name, str) else None
        if model is None and isinstance(model_name, str):
            model = await self.backend.get("devicemodels", ns, model_name)
            if model is not None:
                self.apply("devicemodels", {"type": "MODIFIED", "object": model})
        return obj, model

    # -- writing status --------------------------------------------------------------

    async def _apply_device(self, node: str, ns: str, name: str, items: list[tuple[Any, asyncio.Future]]) -> None:
        """Validate one device's queued reports in order, merge them and write the result once;
        each item's future gets that report's per-device result."""
        results: list[dict[str, Any]] = []
        try:
            tm.check_namespace(ns)
            tm.check_name(name)
            obj, model_obj = await self._device_for(node, ns, name)
            model = self._parse_model(model_obj) if model_obj is not None else None
            with self._lock:
                uid = str((obj.get("metadata") or {}).get("uid", ""))
                written = self._written.get((ns, name))
                current = written[1] if written is not None and written[0] == uid else obj.get("status") or {}
            merged: dict[str, Any] = dict(current)
            patch: dict[str, Any] = {}  # only what the reports changed
            for raw, _ in items:
                try:
                    report = tm.check_status_report(raw, model)
                except KedgeError as exc:
                    results.append(self._refused(node, ns, name, exc))
                    continue
                status = tm.merge_status(merged, report, _now_iso())
                if status is not None:
                    merged.update(status)
                    patch.update(status)
                results.append({"namespace": ns, "name": name, "ok": True})
            if patch:
                await self.backend.patch_status(ns, name, {"status": patch})
                with self._lock:
                    self._written[(ns, name)] = (uid, merged)
                    self.writes += 1
                    t0, w0 = self._last_stats
                    if time.monotonic() - t0 >= 10:
                        log.info("device status writes: %.0f/s", (self.writes - w0) / (time.monotonic() - t0))
                        self._last_stats = (time.monotonic(), self.writes)
        except KedgeError as exc:
            results = [self._refused(node, ns, name, exc) for _ in items]
        for (_, fut), result in zip(items, results, strict=True):
            if not fut.done():
                fut.set_result(result)

    def _refused(self, node: str, ns: str, name: str, exc: KedgeError) -> dict[str, Any]:
        with self._lock:
            self.rejects[exc.code] = self.rejects.get(exc.code, 0) + 1
        log.info("device report from node %s for %s/%s refused: %s", node, ns, name, exc.code)
        return {"namespace": ns, "name": name, "ok": False, "code": exc.code,
                "retry": not isinstance(exc, PeerError)}

    def _parse_model(self, obj: dict[str, Any]) -> tm.DeviceModel:
        """The checked DeviceModel, parsed once per resourceVersion."""
        key = _ident(obj)
        rv = str((obj.get("metadata") or {}).get("resourceVersion", ""))
        with self._lock:
            hit = self._parsed_models.get(key)
        if hit is not None and hit[0] == rv and rv:
            return hit[1]
        model = tm.DeviceModel.from_object(obj)
        with self._lock:
            if len(self._parsed_models) > 10_000:
                self._parsed_models.clear()
            self._parsed_models[key] = (rv, model)
        return model

    async def _drain(self) -> None:
        """One writer: take the device waiting longest, apply all its queued reports, put it at
        the back again if more arrived meanwhile; until no device waits. A device is held by
        one writer at a time, so its reports are applied in the order they were queued."""
        try:
            while True:
                with self._lock:
                    if not self._ready:
                        return
                    key = self._ready.popleft()
                    items = self._queued.pop(key, [])
                    self._busy.add(key)
                try:
                    if items:
                        await self._apply_device(*key, items)
                except BaseException as exc:  # noqa: BLE001 - never leave a report waiting forever
                    for _, fut in items:
                        if not fut.done():
                            fut.set_exception(exc if isinstance(exc, Exception) else LocalError("cancelled"))
                    if not isinstance(exc, Exception):
                        raise
                finally:
                    with self._lock:
                        self._busy.discard(key)
                        if key in self._queued:
                            self._ready.append(key)
        finally:
            with self._lock:
                self._writers -= 1

    def _enqueue(self, node: str, reports: list[Any]) -> list[asyncio.Future]:
        """Queue each report under its device (in order); returns a future per report."""
        loop = asyncio.get_running_loop()
        futs: list[asyncio.Future] = []
        with self._lock:
            for raw in reports:
                ident = (str(raw.get("namespace", ""))[:64], str(raw.get("name", ""))[:253]) \
                    if isinstance(raw, dict) else ("", "")
                key = (node, *ident)
                fut = loop.create_future()
                futs.append(fut)
                pending = self._queued.get(key)
                if pending is None:
                    pending = self._queued[key] = []
                    if key not in self._busy:
                        self._ready.append(key)
                pending.append((raw, fut))
            start = max(0, min(self.backend.concurrency - self._writers, len(self._ready)))
            self._writers += start
        for _ in range(start):
            task = loop.create_task(self._drain())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return futs

    async def route_status(self, node: str, msg) -> dict[str, Any]:
        content = msg.content
        reports = content.get("devices") if isinstance(content, dict) else None
        if not isinstance(reports, list) or len(reports) > MAX_REPORTS_PER_BATCH:
            raise PeerError("devicestatus carries a bounded 'devices' list", code="invalid_object")
        # Queued before the first await, so batches queue in the order CloudHub dispatched them
        # (it may run several of a node's batches at once); a device's reports stay in order.
        futs = self._enqueue(node, reports)
        return {"results": list(await asyncio.gather(*futs))}

    async def close(self) -> None:
        """Stop following and writing (before the API server's store closes)."""
        tasks = [*self.followers, *self._tasks]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        with self._state_lock:
            state, self._state = self._state, None
        if state is not None:
            state.close()

    async def route_certs(self, node: str, msg) -> dict[str, Any]:
        from kedge.cloud.devicecontroller import pki

        if self.data_dir is None:
            raise PeerError("device CA not configured", code="not_supported")
        content = msg.content
        csrs = [content.get(k) if isinstance(content, dict) else None for k in ("serverCsr", "clientCsr")]
        if not all(isinstance(c, str) and len(c) <= MAX_CSR_BYTES for c in csrs):
            # The node makes its keys; the cloud never makes (or sends) a private key.
            self.audit("mqtt_certs", node=node, result="refused", code="csr_required")
            raise PeerError("devicecerts carries the broker's and the client's CSRs", code="csr_required")
        def issue() -> dict[str, str]:
            from kedge.cloud.config import CloudDir
            from kedge.errors import AuthenticationError
            from kedge.pki import ca

            cfg = CloudDir(self.data_dir).load_config()
            now = dt.datetime.now(dt.timezone.utc)
            try:
                certs = pki.issue_broker_certs(self.data_dir, node, csrs[0].encode(), csrs[1].encode(), now=now,
                                               validity=dt.timedelta(seconds=cfg.mqtt_cert_validity_s),
                                               limits=cfg.build_limits())
                # Recorded first, then checked: a `kedge node revoke` committed before this check is
                # seen here; one committed after it revokes the recorded pair itself.
                if self._node_revoked(node, now):
                    pki.revoke_node_certs(self.data_dir, node, now=now)
                    raise AuthenticationError("node revoked", code="revoked")
            except KedgeError as exc:
                self.audit("mqtt_certs", node=node, result="refused", code=exc.code)
                raise
            server = ca.load_cert_pem(certs["serverCert"].encode())
            client = ca.load_cert_pem(certs["clientCert"].encode())
            self.audit("mqtt_certs", node=node, result="accepted", server_serial=format(server.serial_number, "x"),
                       client_serial=format(client.serial_number, "x"),
                       not_after=server.not_valid_after_utc.isoformat())
            return certs

        return await asyncio.to_thread(issue)

    def _node_revoked(self, node: str, now: dt.datetime) -> bool:
        """Whether ``node`` was revoked and holds no node certificate issued since (its tunnel is
        being closed). The cloud state is opened on first use and kept."""
        from kedge.cloud.config import CloudDir
        from kedge.cloud.state import CloudState

        with self._state_lock:
            if self._state is None:
                assert self.data_dir is not None  # nosec B101 - checked by the route
                self._state = CloudState(CloudDir(self.data_dir).state_db)
            state = self._state
        return state.is_node_revoked(node) is not None and not state.node_has_valid_cert(node, now=now)

    async def route_crl(self, node: str, msg) -> dict[str, Any]:
        """``devicecrl``: the device CA's current CRL (revoked device certificates), for the node's
        broker to refresh its ``crlfile`` between certificate renewals; valid as long as the MQTT
        certificates the cloud issues."""
        from kedge.cloud.devicecontroller import pki

        if self.data_dir is None:
            raise PeerError("device CA not configured", code="not_supported")

        def build() -> dict[str, Any]:
            from kedge.cloud.config import CloudDir

            validity = dt.timedelta(seconds=CloudDir(self.data_dir).load_config().mqtt_cert_validity_s)
            return {"crl": pki.device_crl_pem(self.data_dir, now=dt.datetime.now(dt.timezone.utc), lifetime=validity)}

        return await asyncio.to_thread(build)


def _client_with_pool(api_client, size: int):
    """An ApiClient like ``api_client`` (same host, CA, credentials) with a connection pool of
    ``size``: with fewer pooled connections than writers, every extra write pays a TLS handshake."""
    import copy

    from kubernetes import client

    cfg = copy.deepcopy(api_client.configuration)
    cfg.connection_pool_maxsize = max(size, getattr(cfg, "connection_pool_maxsize", 0) or 0)
    return client.ApiClient(cfg)


def install(controller, backend: Backend, data_dir: str | Path | None,
            audit: Callable[..., None] | None = None) -> DeviceController:
    """Register the devicecontroller with ``controller`` (an EdgeController) and start following
    Devices and DeviceModels. Call on cloudcore's event loop. Idempotent."""
    existing = getattr(controller, "devicecontroller", None)
    if existing is not None:
        return existing
    loop = asyncio.get_running_loop()
    dc = DeviceController(backend, data_dir)

    def wake(nodes: set[str]) -> None:
        for node in nodes:
            sync = controller.syncs.get(node)
            if sync is not None:
                sync.dirty.set()

    dc.on_nodes_changed = wake
    if audit is not None:
        dc.audit = audit
    controller.devicecontroller = dc
    controller.desired_providers.append(dc.desired_for)
    controller.upstream_routes["devicestatus"] = dc.route_status
    controller.upstream_routes["devicecerts"] = dc.route_certs
    controller.upstream_routes["devicecrl"] = dc.route_crl
    dc.followers = [loop.create_task(dc.follow(plural), name=f"devicecontroller-{plural}") for plural in PLURALS]
    return dc
