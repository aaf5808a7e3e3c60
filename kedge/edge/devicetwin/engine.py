"""The devicetwin engine: applies cloud objects and mapper messages to the twin table.

Synchronous and transport-free: it gets Device/DeviceModel objects (from the edge
store) and MQTT (topic, payload) pairs, and calls ``publish(topic, payload)`` for what
goes back to mappers. The MQTT client thread and the asyncio shell in
:mod:`kedge.edge.devicetwin` only feed it. Every refusal is counted by code in
``rejects`` and logged (rate-limited); nothing a mapper sends can raise out of
:meth:`TwinEngine.handle_batch`.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable, Iterable

from kedge.edge.devicetwin import model as tm
from kedge.edge.devicetwin.table import TwinTable

log = logging.getLogger(__name__)

Publish = Callable[[str, bytes], None]


class TwinEngine:
    def __init__(self, table: TwinTable, node: str, publish: Publish, *,
                 on_devices_changed: Callable[[set[tuple[str, str]]], None] | None = None) -> None:
        self.table = table
        self.node = node
        self.publish = publish
        self.on_devices_changed = on_devices_changed
        self.devices: dict[tuple[str, str], tm.Device] = {}
        self.models: dict[tuple[str, str], tm.DeviceModel] = {}
        self.rejects: dict[str, int] = {}
        self.accepted = 0
        self._lock = threading.RLock()
        self._last_log = 0.0

    # -- counting -------------------------------------------------------------------

    def reject(self, code: str, where: str) -> None:
        self.rejects[code] = self.rejects.get(code, 0) + 1
        now = time.monotonic()
        if now - self._last_log > 1.0:  # a flood of garbage must not flood the log
            self._last_log = now
            log.warning("devicetwin refused input on %s: %s (refused so far: %s)", where[:200], code, self.rejects)

    # -- cloud side -----------------------------------------------------------------

    def _model_of(self, dev: tm.Device) -> tm.DeviceModel | None:
        return self.models.get((dev.namespace, dev.model))

    def _send_delta(self, dev: tm.Device, now_ms: int) -> None:
        model = self._model_of(dev)
        if model is None:
            return
        desired, reported = self.table.twin(dev.namespace, dev.name)
        self.publish(tm.device_topic(dev.namespace, dev.name, tm.DELTA),
                     tm.delta_payload(desired, reported, model, now_ms))

    def _apply_desired(self, dev: tm.Device, now_ms: int, *, force_delta: bool = False) -> None:
        model = self._model_of(dev)
        if model is None:
            return  # the model arrives later and re-applies
        changed = self.table.set_desired(dev.namespace, dev.name, dev.valid_desired(model), dev.resource_version)
        if changed or force_delta:
            self._send_delta(dev, now_ms)

    def object_changed(self, key: str, obj: Any, now_ms: int) -> None:
        """A ``<ns>/device/<name>`` or ``<ns>/devicemodel/<name>`` changed in the edge store."""
        parts = key.split("/")
        if len(parts) != 3 or parts[1] not in ("device", "devicemodel"):
            return
        ns, kind, name = parts
        with self._lock:
            before = set(self.devices)
            try:
                if kind == "devicemodel":
                    if obj is None:
                        self.models.pop((ns, name), None)
                        return
                    self.models[(ns, name)] = tm.DeviceModel.from_object(obj)
                    for dev in self.devices.values():
                        if dev.namespace == ns and dev.model == name:
                            self._apply_desired(dev, now_ms)
                    return
                if obj is None:
                    self.devices.pop((ns, name), None)
                    self.table.remove_device(ns, name)
                else:
                    dev = tm.Device.from_object(obj)
                    if dev.node != self.node or (dev.namespace, dev.name) != (ns, name):
                        self.devices.pop((ns, name), None)
                    else:
                        self.devices[(ns, name)] = dev
                        self._apply_desired(dev, now_ms)
            except tm.TwinRejected as exc:
                self.reject(exc.code, key)
            finally:
                if set(self.devices) != before and self.on_devices_changed is not None:
                    self.on_devices_changed(set(self.devices))

    def load(self, objects: Iterable[tuple[str, Any]], now_ms: int) -> None:
        """Initial state from the edge store: models first, then devices."""
        objs = sorted(objects, key=lambda kv: 0 if kv[0].split("/")[1:2] == ["devicemodel"] else 1)
        for key, obj in objs:
            self.object_changed(key, obj, now_ms)

    # -- mapper side ------------------------------------------------------------------

    def handle_batch(self, messages: Iterable[tuple[Any, Any]], now_ms: int) -> None:
        """Apply a batch of (topic, payload) from the broker: reports in one transaction."""
        twin_reports: list[tuple[str, str, dict[str, str], int]] = []
        state_reports: list[tuple[str, str, str, int]] = []
        gets: list[tuple[tm.Device, str]] = []
        with self._lock:
            for topic, payload in messages:
                try:
                    t = tm.parse_topic(topic)
                    dev = self.devices.get((t.namespace, t.name))
                    if dev is None:
                        raise tm.TwinRejected("unknown device", code="unknown_device")
                    if t.action == "twin/update":
                        model = self._model_of(dev)
                        if model is None:
                            raise tm.TwinRejected("model not synced", code="unknown_model")
                        twin_reports.append((t.namespace, t.name, tm.parse_twin_update(payload, model), now_ms))
                    elif t.action == "state/update":
                        state_reports.append((t.namespace, t.name, tm.parse_state_update(payload), now_ms))
                    elif t.action == "twin/get":
                        if isinstance(payload, (bytes, bytearray)) and len(payload) > tm.MAX_PAYLOAD_BYTES:
                            raise tm.TwinRejected("too large", code="payload_too_large")
                        gets.append((dev, tm.event_id_of(bytes(payload or b""))))
                except tm.TwinRejected as exc:
                    self.reject(exc.code, str(topic)[:200] if isinstance(topic, str) else "?")
        if twin_reports or state_reports:
            self.table.apply(twin_reports, state_reports)
            self.accepted += len(twin_reports) + len(state_reports)
        for dev, event_id in gets:
            model = self._model_of(dev)
            if model is None:
                continue
            desired, reported = self.table.twin(dev.namespace, dev.name)
            self.publish(tm.device_topic(dev.namespace, dev.name, tm.GET_RESULT),
                         tm.get_result_payload(desired, reported, model, now_ms, event_id))
