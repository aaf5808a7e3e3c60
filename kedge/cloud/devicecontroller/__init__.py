"""devicecontroller (cloud): Devices bound to a node (and their DeviceModels) go down the
tunnel; device status reported by the node comes back into ``Device.status``.

Plugged into the edgecontroller through its extension points (``install``):

- a desired-state provider ``node -> {"<ns>/device/<name>": Device, "<ns>/devicemodel/<name>":
  DeviceModel}``: devices are read as cloudcore (its role may get/list/watch devices and
  devicemodels; CRDs have no field selectors, so the list is filtered by ``spec.nodeName``);
- upstream route ``devicestatus``: a batch of reports from a node. The node is the one in
  the tunnel certificate, never one named in the message; a report is written only for a
  Device whose ``spec.nodeName`` is that node, and only after it passed the same checks
  the edge applies (known properties, type and range per the DeviceModel). Newest wins
  per twin by the report timestamp, so stale buffered reports never overwrite newer ones;
- upstream route ``devicecerts``: the node's broker server certificate and edgecore's
  MQTT client certificate, issued by the device CA (see :mod:`.pki`).

Status writes go to the ``status`` subresource as cloudcore (``devices/status`` patch).
A Device's status changes bump its resourceVersion; the copy sent to the edge keeps the
resourceVersion at which its spec (or labels/annotations) last changed, so status
traffic does not echo back down the tunnel.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import datetime as dt
import logging
import threading
import time
from pathlib import Path
from typing import Any

from kedge.edge.devicetwin import model as tm
from kedge.errors import KedgeError, PeerError

log = logging.getLogger(__name__)

GROUP, VERSION = "devices.kubeedge.io", "v1beta1"
API_VERSION = f"{GROUP}/{VERSION}"
MAX_REPORTS_PER_BATCH = 1000
# Status writes in flight at once (each a PATCH on its own kept-alive connection). The API
# server commits concurrent writes together, so a few suffice; more threads only fight over
# the GIL with the API server and CloudHub when they share cloudcore's process.
WRITE_CONCURRENCY = 8
POLL_INTERVAL_S = 1.0
MISS_TTL_S = 2.0


def _now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _spec_fingerprint(obj: dict[str, Any]) -> tuple[Any, Any, Any]:
    """What the edge cares about (spec, labels, annotations), compared with ``==``: status
    writes change a Device's resourceVersion every second, this stays equal."""
    meta = obj.get("metadata") or {}
    return (obj.get("spec"), meta.get("labels"), meta.get("annotations"))


class DeviceController:
    def __init__(self, api, data_dir: str | Path | None) -> None:
        from kubernetes import client

        self.api = api
        self.custom = client.CustomObjectsApi(api.api)
        self.status_custom = client.CustomObjectsApi(_client_with_pool(api.api, WRITE_CONCURRENCY))
        self.data_dir = Path(data_dir) if data_dir is not None else None
        self._lock = threading.Lock()
        self.devices: dict[tuple[str, str], dict[str, Any]] = {}
        self.models: dict[tuple[str, str], dict[str, Any]] = {}
        self._parsed_models: dict[tuple[str, str], tuple[str, tm.DeviceModel]] = {}  # by rv
        self._spec_rv: dict[tuple[str, str, str], tuple[Any, str]] = {}  # key -> (fingerprint, rv)
        self._written: dict[tuple[str, str], dict[str, Any]] = {}  # status we wrote last, by device
        self._loaded_at = 0.0
        self._misses: dict[tuple[str, str], float] = {}
        # Status writes get their own threads: the loop's default pool is small and shared.
        self._pool = concurrent.futures.ThreadPoolExecutor(WRITE_CONCURRENCY, thread_name_prefix="devstatus")
        # Reports waiting to be written, per (node, namespace, name), in arrival order; devices
        # with reports and no writer, oldest first; devices a writer holds right now.
        self._queued: dict[tuple[str, str, str], list[tuple[Any, concurrent.futures.Future]]] = {}
        self._ready: collections.deque[tuple[str, str, str]] = collections.deque()
        self._busy: set[tuple[str, str, str]] = set()
        self.rejects: dict[str, int] = {}
        self.writes = 0
        self._last_stats = (time.monotonic(), 0)

    # -- reading devices (as cloudcore) -----------------------------------------------

    def _list(self, plural: str) -> list[dict[str, Any]]:
        data = self.api._call(self.custom.list_cluster_custom_object, GROUP, VERSION, plural) or {}
        return [o for o in data.get("items") or [] if isinstance(o, dict)]

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

    def refresh(self) -> set[str]:
        """Re-list devices and models; return the nodes whose device set or specs changed."""
        devices, models = self._list("devices"), self._list("devicemodels")
        touched: set[str] = set()
        with self._lock:
            new_devices: dict[tuple[str, str], dict[str, Any]] = {}
            for obj in devices:
                meta = obj.get("metadata") or {}
                ident = (str(meta.get("namespace", "")), str(meta.get("name", "")))
                before = self.devices.get(ident)
                new_devices[ident] = obj
                node = str((obj.get("spec") or {}).get("nodeName") or "")
                if before is None or _spec_fingerprint(before) != _spec_fingerprint(obj):
                    touched.add(node)
                    if before is not None:
                        touched.add(str((before.get("spec") or {}).get("nodeName") or ""))
            for ident, obj in self.devices.items():
                if ident not in new_devices:
                    touched.add(str((obj.get("spec") or {}).get("nodeName") or ""))
            new_models = {(str((o.get("metadata") or {}).get("namespace", "")),
                           str((o.get("metadata") or {}).get("name", ""))): o for o in models}
            for ident, obj in new_models.items():
                before = self.models.get(ident)
                if before is None or _spec_fingerprint(before) != _spec_fingerprint(obj):
                    touched.update(str((d.get("spec") or {}).get("nodeName") or "")
                                   for (ns, _), d in new_devices.items()
                                   if ns == ident[0] and ((d.get("spec") or {}).get("deviceModelRef") or {}).get("name")
                                   == ident[1])
            self.devices, self.models = new_devices, new_models
            self._loaded_at = time.monotonic()
        touched.discard("")
        return touched

    def desired_for(self, node: str) -> dict[str, dict[str, Any]]:
        """The edgecontroller's provider: this node's Devices and the DeviceModels they use."""
        if time.monotonic() - self._loaded_at > 5 * POLL_INTERVAL_S:
            self.refresh()
        out: dict[str, dict[str, Any]] = {}
        with self._lock:
            for (ns, name), obj in self.devices.items():
                spec = obj.get("spec") or {}
                if spec.get("nodeName") != node:
                    continue
                out[f"{ns}/device/{name}"] = self._stable("Device", obj)
                model_name = (spec.get("deviceModelRef") or {}).get("name")
                model = self.models.get((ns, model_name)) if isinstance(model_name, str) else None
                if model is not None:
                    out[f"{ns}/devicemodel/{model_name}"] = self._stable("DeviceModel", model)
        return out

    def _device_for(self, node: str, ns: str, name: str) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """The Device (bound to ``node``) and its model; refuses devices of other nodes."""
        with self._lock:
            obj = self.devices.get((ns, name))
        if obj is None or (obj.get("spec") or {}).get("nodeName") != node:
            # Not (yet) known as this node's: read it fresh, at most every MISS_TTL_S per device,
            # so a node naming foreign devices cannot turn reports into a flood of API reads.
            now = time.monotonic()
            with self._lock:
                if now - self._misses.get((ns, name), -MISS_TTL_S) < MISS_TTL_S:
                    raise tm.TwinRejected("device is not bound to this node", code="forbidden")
                self._misses[(ns, name)] = now
                if len(self._misses) > 100_000:
                    self._misses.clear()
            fresh = self.api._call(self.custom.get_namespaced_custom_object, GROUP, VERSION, ns, "devices", name)
            if fresh is not None:
                with self._lock:
                    self.devices[(ns, name)] = fresh
            obj = fresh
        if obj is None:
            raise tm.TwinRejected("no such device", code="unknown_device")
        if (obj.get("spec") or {}).get("nodeName") != node:
            raise tm.TwinRejected("device is not bound to this node", code="forbidden")
        model_name = ((obj.get("spec") or {}).get("deviceModelRef") or {}).get("name")
        with self._lock:
            model = self.models.get((ns, model_name))
        if model is None and isinstance(model_name, str):
            model = self.api._call(self.custom.get_namespaced_custom_object, GROUP, VERSION, ns, "devicemodels",
                                   model_name)
            if model is not None:
                with self._lock:
                    self.models[(ns, model_name)] = model
        return obj, model

    # -- writing status --------------------------------------------------------------

    def _apply_device(self, node: str, ns: str, name: str, items: list[tuple[Any, Any]]) -> None:
        """Validate one device's queued reports in order, merge them and write the result once
        (blocking); each item's future gets that report's per-device result."""
        results: list[dict[str, Any]] = []
        try:
            tm.check_namespace(ns)
            tm.check_name(name)
            obj, model_obj = self._device_for(node, ns, name)
            model = self._parse_model(model_obj) if model_obj is not None else None
            with self._lock:
                current = self._written.get((ns, name)) or obj.get("status") or {}
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
                self.api._call(self.status_custom.patch_namespaced_custom_object_status, GROUP, VERSION, ns,
                               "devices", name, {"status": patch}, _content_type="application/merge-patch+json")
                with self._lock:
                    self._written[(ns, name)] = merged
                    self.writes += 1
                    t0, w0 = self._last_stats
                    if time.monotonic() - t0 >= 10:
                        log.info("device status writes: %.0f/s", (self.writes - w0) / (time.monotonic() - t0))
                        self._last_stats = (time.monotonic(), self.writes)
        except KedgeError as exc:
            results = [self._refused(node, ns, name, exc) for _ in items]
        for (_, fut), result in zip(items, results):
            fut.set_result(result)

    def _refused(self, node: str, ns: str, name: str, exc: KedgeError) -> dict[str, Any]:
        with self._lock:
            self.rejects[exc.code] = self.rejects.get(exc.code, 0) + 1
        log.info("device report from node %s for %s/%s refused: %s", node, ns, name, exc.code)
        return {"namespace": ns, "name": name, "ok": False, "code": exc.code,
                "retry": not isinstance(exc, PeerError)}

    def _parse_model(self, obj: dict[str, Any]) -> tm.DeviceModel:
        """The checked DeviceModel, parsed once per resourceVersion."""
        meta = obj.get("metadata") or {}
        key = (str(meta.get("namespace", "")), str(meta.get("name", "")))
        rv = str(meta.get("resourceVersion", ""))
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

    def _drain(self) -> None:
        """One writer: take the device waiting longest, apply all its queued reports, put it at
        the back again if more arrived meanwhile; until no device waits. A device is held by
        one writer at a time, so its reports are applied in the order they were queued."""
        while True:
            with self._lock:
                if not self._ready:
                    return
                key = self._ready.popleft()
                items = self._queued.pop(key, [])
                self._busy.add(key)
            try:
                if items:
                    self._apply_device(*key, items)
            except BaseException as exc:  # noqa: BLE001 - never leave a batch waiting forever
                for _, fut in items:
                    if not fut.done():
                        fut.set_exception(exc)
                if not isinstance(exc, Exception):
                    raise
            finally:
                with self._lock:
                    self._busy.discard(key)
                    if key in self._queued:
                        self._ready.append(key)

    def _enqueue(self, node: str, reports: list[Any]) -> list[concurrent.futures.Future]:
        """Queue each report under its device (in order); returns a future per report."""
        futs: list[concurrent.futures.Future] = []
        with self._lock:
            for raw in reports:
                ident = (str(raw.get("namespace", ""))[:64], str(raw.get("name", ""))[:253]) \
                    if isinstance(raw, dict) else ("", "")
                key = (node, *ident)
                fut: concurrent.futures.Future = concurrent.futures.Future()
                futs.append(fut)
                pending = self._queued.get(key)
                if pending is None:
                    pending = self._queued[key] = []
                    if key not in self._busy:
                        self._ready.append(key)
                pending.append((raw, fut))
            ready = len(self._ready)
        for _ in range(min(WRITE_CONCURRENCY, ready)):
            self._pool.submit(self._drain)
        return futs

    async def route_status(self, node: str, msg) -> dict[str, Any]:
        content = msg.content
        reports = content.get("devices") if isinstance(content, dict) else None
        if not isinstance(reports, list) or len(reports) > MAX_REPORTS_PER_BATCH:
            raise PeerError("devicestatus carries a bounded 'devices' list", code="invalid_object")
        # Queued before the first await, so batches queue in the order CloudHub dispatched them
        # (it may run several of a node's batches at once). Up to WRITE_CONCURRENCY writers share
        # one round-robin queue of devices across batches and nodes; a device's reports stay in order.
        futs = self._enqueue(node, reports)
        results = await asyncio.gather(*(asyncio.wrap_future(f) for f in futs))
        return {"results": list(results)}

    async def route_certs(self, node: str, msg) -> dict[str, Any]:
        from kedge.cloud.devicecontroller import pki

        if self.data_dir is None:
            raise PeerError("device CA not configured", code="not_supported")
        now = dt.datetime.now(dt.timezone.utc)
        return await asyncio.to_thread(pki.issue_broker_bundle, self.data_dir, node, now=now)

    # -- following changes -------------------------------------------------------------

    def poll_thread(self, controller, loop: asyncio.AbstractEventLoop, stop: threading.Event) -> None:
        """Re-list devices every second; wake the sync of each node whose devices changed."""
        backoff = POLL_INTERVAL_S
        while not stop.wait(backoff):
            try:
                touched = self.refresh()
                backoff = POLL_INTERVAL_S
            except Exception as exc:  # noqa: BLE001 - keep following through API server restarts
                log.info("device list failed: %s; retrying", getattr(exc, "code", type(exc).__name__))
                backoff = min(backoff * 2, 10.0)
                continue
            for node in touched:
                sync = controller.syncs.get(node)
                if sync is not None:
                    loop.call_soon_threadsafe(sync.dirty.set)


def _client_with_pool(api_client, size: int):
    """An ApiClient like ``api_client`` (same host, CA, credentials) with a connection pool of
    ``size``: with fewer pooled connections than writers, every extra write pays a TLS handshake."""
    import copy

    from kubernetes import client

    cfg = copy.deepcopy(api_client.configuration)
    cfg.connection_pool_maxsize = max(size, getattr(cfg, "connection_pool_maxsize", 0) or 0)
    return client.ApiClient(cfg)


def _guess_data_dir(api) -> Path | None:
    """The cloud data dir from cloudcore's client cert path (``DIR/pki/cloudcore.crt``)."""
    try:
        cert = Path(api.api.configuration.cert_file)
    except (AttributeError, TypeError):
        return None
    root = cert.parent.parent
    return root if cert.parent.name == "pki" and (root / "config.json").exists() else None


def install(controller, api, data_dir: str | Path | None = None) -> DeviceController:
    """Register the devicecontroller with ``controller`` (an EdgeController). Idempotent."""
    existing = getattr(controller, "devicecontroller", None)
    if existing is not None:
        return existing
    dc = DeviceController(api, data_dir if data_dir is not None else _guess_data_dir(api))
    controller.devicecontroller = dc
    controller.desired_providers.append(dc.desired_for)
    controller.upstream_routes["devicestatus"] = dc.route_status
    controller.upstream_routes["devicecerts"] = dc.route_certs
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        loop = None
    if loop is not None:
        stop = threading.Event()
        dc.stop = stop  # type: ignore[attr-defined]
        threading.Thread(target=dc.poll_thread, args=(controller, loop, stop), daemon=True,
                         name="devicecontroller-poll").start()
    return dc
