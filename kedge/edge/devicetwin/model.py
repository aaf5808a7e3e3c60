"""Device twins, the pure core: Device/DeviceModel parsing, MQTT topic and payload checks.

Everything here is bytes/objects in, objects/bytes out: no sockets, no SQLite, no
clock (``now_ms`` is a parameter). The edge (devicetwin) and the cloud
(devicecontroller) validate with the same functions, so a report the edge accepted is
judged by the same rules in the cloud.

Field names follow KubeEdge ``devices.kubeedge.io/v1beta1``: DeviceModel
``spec.properties[{name, type, accessMode, minimum, maximum, unit}]``; Device
``spec.deviceModelRef.name``, ``spec.nodeName``, ``spec.properties[{name,
desired{value, metadata}}]``. Twin values are strings, as in KubeEdge.

MQTT topics (KubeEdge's ``$hw/events/device/{id}/...`` family, with ``{id}`` =
``{namespace}/{name}`` so two namespaces can hold devices of the same name):

- ``$hw/events/device/{ns}/{name}/twin/update``        mapper -> edge: reported values
- ``$hw/events/device/{ns}/{name}/state/update``       mapper -> edge: device state
- ``$hw/events/device/{ns}/{name}/twin/get``           mapper -> edge: ask for the twin
- ``$hw/events/device/{ns}/{name}/twin/get/result``    edge -> mapper: the twin
- ``$hw/events/device/{ns}/{name}/twin/update/delta``  edge -> mapper: desired != reported
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from typing import Any, Mapping

from kedge._internal import jsonutil
from kedge.errors import KedgeError, PeerError
from kedge.limits import TWIN_MAX_JSON_DEPTH

TOPIC_PREFIX = "$hw/events/device/"
ACTIONS_IN = ("twin/update", "state/update", "twin/get")  # what a mapper may send us
DELTA = "twin/update/delta"
GET_RESULT = "twin/get/result"

# Bounds on mapper input (the numbers; keep in step with kedge.limits if moved there).
MAX_KEY_BYTES = 128
MAX_VALUE_BYTES = 512
MAX_PAYLOAD_BYTES = 16 * 1024
MAX_TOPIC_BYTES = 512
MAX_TWINS_PER_REPORT = 64
MAX_PROPERTIES_PER_MODEL = 256

PROPERTY_TYPES = frozenset({"INT", "FLOAT", "DOUBLE", "STRING", "BOOLEAN", "BYTES", "STREAM"})
DEVICE_STATES = frozenset({"online", "offline", "unknown", "ok", "unhealthy"})

_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")
_PROP_NAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,126}[A-Za-z0-9])?")


class TwinRejected(PeerError):
    """A mapper's (or edge's) twin input was refused; ``code`` says why (stable, countable)."""

    code = "twin_rejected"


def _reject(code: str, msg: str = "") -> TwinRejected:
    return TwinRejected(msg or code, code=code)


def check_namespace(ns: Any) -> str:
    if not isinstance(ns, str) or not _DNS_LABEL.fullmatch(ns):
        raise _reject("bad_namespace")
    return ns


def check_name(name: Any) -> str:
    if not isinstance(name, str) or not _DNS_SUBDOMAIN.fullmatch(name) or ".." in name:
        raise _reject("bad_name")
    return name


def check_property_name(name: Any) -> str:
    if not isinstance(name, str):
        raise _reject("bad_property_name")
    if len(name.encode()) > MAX_KEY_BYTES:
        raise _reject("key_too_long")
    if not _PROP_NAME.fullmatch(name):
        raise _reject("bad_property_name")
    return name


def parse_device_id(text: str) -> tuple[str, str]:
    """``NS/NAME`` -> (ns, name), both validated."""
    if not isinstance(text, str) or text.count("/") != 1:
        raise _reject("bad_device_id", "a device is named NAMESPACE/NAME")
    ns, name = text.split("/")
    return check_namespace(ns), check_name(name)


# --------------------------------------------------------------------------- models


@dataclasses.dataclass(frozen=True)
class PropertySpec:
    """One DeviceModel property: its value type, access mode and optional numeric range."""

    name: str
    type: str
    access_mode: str = "ReadWrite"
    minimum: float | None = None
    maximum: float | None = None
    unit: str = ""

    def __post_init__(self) -> None:
        check_property_name(self.name)
        if self.type not in PROPERTY_TYPES:
            raise _reject("bad_model", f"property {self.name}: unknown type")
        if self.access_mode not in ("ReadWrite", "ReadOnly"):
            raise _reject("bad_model", f"property {self.name}: accessMode must be ReadWrite or ReadOnly")
        for bound in (self.minimum, self.maximum):
            if bound is not None and not math.isfinite(bound):
                raise _reject("bad_model", f"property {self.name}: bounds must be finite")
        if self.minimum is not None and self.maximum is not None and self.minimum > self.maximum:
            raise _reject("bad_model", f"property {self.name}: minimum > maximum")

    def check_value(self, value: Any) -> str:
        """Return ``value`` if it is a valid string value of this property, else raise."""
        if not isinstance(value, str):
            raise _reject("bad_type", "twin values are strings")
        if len(value.encode("utf-8", "surrogatepass")) > MAX_VALUE_BYTES:
            raise _reject("value_too_long")
        if not value.isprintable():
            raise _reject("bad_value")
        if self.type == "BOOLEAN":
            if value not in ("true", "false"):
                raise _reject("bad_type")
            return value
        if self.type == "INT":
            if not re.fullmatch(r"[-+]?[0-9]{1,19}", value):
                raise _reject("bad_type")
            number: float = int(value)
        elif self.type in ("FLOAT", "DOUBLE"):
            if not re.fullmatch(r"[-+]?([0-9]{1,30}(\.[0-9]{0,30})?|\.[0-9]{1,30})([eE][-+]?[0-9]{1,3})?", value):
                raise _reject("bad_type")
            number = float(value)
            if not math.isfinite(number):
                raise _reject("bad_type")
        else:
            return value
        if self.minimum is not None and number < self.minimum:
            raise _reject("out_of_range")
        if self.maximum is not None and number > self.maximum:
            raise _reject("out_of_range")
        return value


def _bound(raw: Any, what: str) -> float | None:
    if raw is None or raw == "":
        return None
    if isinstance(raw, bool):
        raise _reject("bad_model", f"{what} must be a number")
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise _reject("bad_model", f"{what} must be a number") from None
    return value


def _meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    meta = obj.get("metadata")
    return meta if isinstance(meta, Mapping) else {}


@dataclasses.dataclass(frozen=True)
class DeviceModel:
    namespace: str
    name: str
    properties: Mapping[str, PropertySpec]

    @classmethod
    def from_object(cls, obj: Any) -> "DeviceModel":
        """Parse a ``DeviceModel`` object as served by the API server (raises TwinRejected)."""
        if not isinstance(obj, Mapping):
            raise _reject("bad_model")
        meta, spec = _meta(obj), obj.get("spec")
        if not isinstance(spec, Mapping):
            raise _reject("bad_model", "spec is required")
        props = spec.get("properties") or []
        if not isinstance(props, list) or len(props) > MAX_PROPERTIES_PER_MODEL:
            raise _reject("bad_model", "spec.properties must be a bounded list")
        out: dict[str, PropertySpec] = {}
        for p in props:
            if not isinstance(p, Mapping):
                raise _reject("bad_model")
            ptype = p.get("type")
            ps = PropertySpec(
                name=check_property_name(p.get("name")),
                type=ptype.upper() if isinstance(ptype, str) else "",
                access_mode=str(p.get("accessMode") or "ReadWrite"),
                minimum=_bound(p.get("minimum"), "minimum"),
                maximum=_bound(p.get("maximum"), "maximum"),
                unit=str(p.get("unit") or "")[:64],
            )
            out[ps.name] = ps
        return cls(check_namespace(meta.get("namespace", "default")), check_name(meta.get("name")), out)


@dataclasses.dataclass(frozen=True)
class Device:
    """The parts of a Device the twin needs: where it runs, its model and desired values."""

    namespace: str
    name: str
    node: str
    model: str
    desired: Mapping[str, str]
    resource_version: str = ""

    @property
    def id(self) -> str:
        return f"{self.namespace}/{self.name}"

    @classmethod
    def from_object(cls, obj: Any) -> "Device":
        if not isinstance(obj, Mapping):
            raise _reject("bad_device")
        meta, spec = _meta(obj), obj.get("spec")
        if not isinstance(spec, Mapping):
            raise _reject("bad_device", "spec is required")
        ref = spec.get("deviceModelRef")
        model = ref.get("name") if isinstance(ref, Mapping) else None
        props = spec.get("properties") or []
        if not isinstance(props, list) or len(props) > MAX_PROPERTIES_PER_MODEL:
            raise _reject("bad_device", "spec.properties must be a bounded list")
        desired: dict[str, str] = {}
        for p in props:
            if not isinstance(p, Mapping):
                raise _reject("bad_device")
            name = check_property_name(p.get("name"))
            want = p.get("desired")
            if isinstance(want, Mapping) and isinstance(want.get("value"), str):
                desired[name] = want["value"]
        return cls(
            namespace=check_namespace(meta.get("namespace", "default")),
            name=check_name(meta.get("name")),
            node=str(spec.get("nodeName") or ""),
            model=check_name(model),
            desired=desired,
            resource_version=str(meta.get("resourceVersion") or ""),
        )

    def valid_desired(self, model: DeviceModel) -> dict[str, str]:
        """Desired values that fit the model (unknown or ill-typed ones are left out)."""
        out = {}
        for prop, value in self.desired.items():
            spec = model.properties.get(prop)
            if spec is None or spec.access_mode != "ReadWrite":
                continue
            try:
                out[prop] = spec.check_value(value)
            except TwinRejected:
                continue
        return out


# --------------------------------------------------------------------------- topics and payloads


@dataclasses.dataclass(frozen=True)
class Topic:
    namespace: str
    name: str
    action: str

    @property
    def device_id(self) -> str:
        return f"{self.namespace}/{self.name}"


def device_topic(ns: str, name: str, action: str) -> str:
    return f"{TOPIC_PREFIX}{ns}/{name}/{action}"


def parse_topic(topic: Any) -> Topic:
    """A topic a mapper published on -> (ns, name, action). Wildcards, traversal,
    empty levels and unknown actions are refused."""
    if isinstance(topic, bytes):
        try:
            topic = topic.decode("utf-8")
        except UnicodeDecodeError:
            raise _reject("bad_topic") from None
    if not isinstance(topic, str) or len(topic.encode()) > MAX_TOPIC_BYTES:
        raise _reject("bad_topic")
    if any(c in topic for c in "+#\x00") or not topic.isprintable():
        raise _reject("bad_topic")
    if not topic.startswith(TOPIC_PREFIX):
        raise _reject("bad_topic")
    parts = topic[len(TOPIC_PREFIX):].split("/")
    if len(parts) < 4 or any(p in ("", ".", "..") for p in parts):
        raise _reject("bad_topic")
    action = "/".join(parts[2:])
    if action not in ACTIONS_IN:
        raise _reject("bad_topic")
    try:
        ns, name = check_namespace(parts[0]), check_name(parts[1])
    except TwinRejected:
        raise _reject("bad_topic") from None
    return Topic(ns, name, action)


def load_json(payload: Any) -> Any:
    """An MQTT twin payload (either direction) as JSON values: at most ``MAX_PAYLOAD_BYTES``
    (``payload_too_large``), nesting at most ``TWIN_MAX_JSON_DEPTH``, strict UTF-8 and strict
    JSON -- no NaN/Infinity (``bad_json``); anything but bytes is ``bad_payload``."""
    if not isinstance(payload, (bytes, bytearray)):
        raise _reject("bad_payload")
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise _reject("payload_too_large")
    try:
        return jsonutil.loads(bytes(payload), max_bytes=MAX_PAYLOAD_BYTES, max_depth=TWIN_MAX_JSON_DEPTH)
    except KedgeError:
        raise _reject("bad_json") from None



def parse_twin_update(payload: bytes, model: DeviceModel) -> dict[str, str]:
    """A mapper's ``twin/update`` (KubeEdge shape) -> {property: reported value}.

    ``{"event_id": "...", "timestamp": 0, "twin": {"<prop>": {"actual": {"value": "<v>"}}}}``.
    Every property must be in the model and its value must fit type and range; one bad
    entry refuses the whole report (a mapper sending garbage gets nothing applied).
    """
    doc = load_json(payload)
    if not isinstance(doc, dict) or not isinstance(doc.get("twin"), dict):
        raise _reject("bad_payload", "a twin update carries a 'twin' object")
    twin = doc["twin"]
    if not twin:
        raise _reject("bad_payload", "empty twin update")
    if len(twin) > MAX_TWINS_PER_REPORT:
        raise _reject("too_many_properties")
    out: dict[str, str] = {}
    for prop, entry in twin.items():
        check_property_name(prop)
        spec = model.properties.get(prop)
        if spec is None:
            raise _reject("unknown_property")
        actual = entry.get("actual") if isinstance(entry, dict) else None
        if not isinstance(actual, dict) or "value" not in actual:
            raise _reject("bad_payload", "each twin entry carries actual.value")
        out[prop] = spec.check_value(actual["value"])
    return out


def parse_state_update(payload: bytes) -> str:
    """``{"state": "online"}`` -> ``"online"`` (a small fixed vocabulary)."""
    doc = load_json(payload)
    state = doc.get("state") if isinstance(doc, dict) else None
    if state not in DEVICE_STATES:
        raise _reject("bad_state")
    return state


def _dumps(doc: Any) -> bytes:
    return json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()


def twin_document(desired: Mapping[str, str], reported: Mapping[str, str], model: DeviceModel,
                  now_ms: int) -> dict[str, Any]:
    """The ``twin`` object edge -> mapper: expected (desired) and actual (reported) per property."""
    twin: dict[str, Any] = {}
    for prop, spec in sorted(model.properties.items()):
        entry: dict[str, Any] = {"metadata": {"type": spec.type.lower()}}
        if prop in desired:
            entry["expected"] = {"value": desired[prop], "metadata": {"timestamp": now_ms}}
        if prop in reported:
            entry["actual"] = {"value": reported[prop]}
        twin[prop] = entry
    return twin


def delta_payload(desired: Mapping[str, str], reported: Mapping[str, str], model: DeviceModel,
                  now_ms: int, event_id: str = "") -> bytes:
    """``.../twin/update/delta``: the full twin plus ``delta`` = desired values not yet reported."""
    delta = {p: v for p, v in sorted(desired.items()) if reported.get(p) != v}
    return _dumps({"event_id": event_id, "timestamp": now_ms,
                   "twin": twin_document(desired, reported, model, now_ms), "delta": delta})


def get_result_payload(desired: Mapping[str, str], reported: Mapping[str, str], model: DeviceModel,
                       now_ms: int, event_id: str = "") -> bytes:
    return _dumps({"event_id": event_id, "timestamp": now_ms,
                   "twin": twin_document(desired, reported, model, now_ms)})


def event_id_of(payload: bytes) -> str:
    """The request's ``event_id`` (echoed in get results), or "" if absent/invalid."""
    try:
        doc = load_json(payload)
    except TwinRejected:
        return ""
    eid = doc.get("event_id") if isinstance(doc, dict) else None
    return eid if isinstance(eid, str) and len(eid) <= 64 and eid.isprintable() else ""


# --------------------------------------------------------------------------- edge -> cloud reports


def check_status_report(entry: Any, model: DeviceModel | None) -> dict[str, Any]:
    """One device's entry in a ``devicestatus`` batch (edge -> cloud), validated.

    ``{"namespace", "name", "state"?, "twins": {prop: {"value", "timestamp", "observedDesired"?}}}``;
    timestamps are integer milliseconds (they order reports: newest wins).
    """
    if not isinstance(entry, dict):
        raise _reject("bad_report")
    ns, name = check_namespace(entry.get("namespace")), check_name(entry.get("name"))
    state = entry.get("state")
    if state is not None and state not in DEVICE_STATES:
        raise _reject("bad_state")
    state_ts = entry.get("stateTimestamp", 0)
    if not isinstance(state_ts, int) or isinstance(state_ts, bool) or state_ts < 0:
        raise _reject("bad_report")
    twins = entry.get("twins") or {}
    if not isinstance(twins, dict) or len(twins) > MAX_TWINS_PER_REPORT:
        raise _reject("bad_report")
    out: dict[str, dict[str, Any]] = {}
    for prop, t in twins.items():
        check_property_name(prop)
        spec = model.properties.get(prop) if model is not None else None
        if spec is None:
            raise _reject("unknown_property")
        if not isinstance(t, dict):
            raise _reject("bad_report")
        ts = t.get("timestamp")
        if not isinstance(ts, int) or isinstance(ts, bool) or ts < 0:
            raise _reject("bad_report")
        value = spec.check_value(t.get("value"))
        observed = t.get("observedDesired")
        if observed is not None and (not isinstance(observed, str) or len(observed.encode()) > MAX_VALUE_BYTES):
            raise _reject("bad_report")
        out[prop] = {"value": value, "timestamp": ts, "observedDesired": observed}
    return {"namespace": ns, "name": name, "state": state, "stateTimestamp": state_ts, "twins": out}


def merge_status(current: Any, report: Mapping[str, Any], now_iso: str) -> dict[str, Any] | None:
    """New ``status`` for a Device given its current status and a checked report; None if
    nothing changes. Newest wins per twin by ``reported.metadata.timestamp`` (ms), so a
    stale report buffered at the edge never overwrites a newer one."""
    cur = current if isinstance(current, dict) else {}
    twins = {t.get("propertyName"): dict(t) for t in cur.get("twins") or [] if isinstance(t, dict)}
    changed = False
    for prop, t in report["twins"].items():
        old = twins.get(prop) or {}
        old_ts = ((old.get("reported") or {}).get("metadata") or {}).get("timestamp", "0")
        try:
            old_ms = int(old_ts)
        except (TypeError, ValueError):
            old_ms = 0
        if t["timestamp"] <= old_ms and old:
            continue
        new = {"propertyName": prop,
               "reported": {"value": t["value"], "metadata": {"timestamp": str(t["timestamp"])}}}
        if t.get("observedDesired") is not None:
            new["observedDesired"] = {"value": t["observedDesired"], "metadata": {"timestamp": str(t["timestamp"])}}
        elif "observedDesired" in old:
            new["observedDesired"] = old["observedDesired"]
        twins[prop] = new
        changed = True
    status: dict[str, Any] = {"twins": [twins[k] for k in sorted(twins, key=str)]}
    state = report.get("state")
    if state is not None:
        status["state"] = state
        changed = changed or state != cur.get("state")
        if state == "online":
            status["lastOnlineTime"] = now_iso
            changed = True
    if not changed:
        return None
    return status
