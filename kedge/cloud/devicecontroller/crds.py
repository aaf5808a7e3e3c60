"""The ``devices.kubeedge.io/v1beta1`` CRDs (Device, DeviceModel) as data.

Field names follow KubeEdge v1beta1. Shipped for ``kedge manifests`` and for the
embedded API server to pre-install; ``status`` is a subresource so the edge-reported
state is written separately from the operator's spec.
"""

from __future__ import annotations

from typing import Any

_STR = {"type": "string"}
_STRMAP = {"type": "object", "additionalProperties": {"type": "string"}}
_TWIN_VALUE = {"type": "object", "properties": {"value": _STR, "metadata": _STRMAP}}
_ANY = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}


def _crd(plural: str, kind: str, short: list[str], spec: dict[str, Any], status: dict[str, Any] | None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": {
        "apiVersion": _STR, "kind": _STR, "metadata": {"type": "object"}, "spec": spec}}
    version: dict[str, Any] = {"name": "v1beta1", "served": True, "storage": True,
                               "schema": {"openAPIV3Schema": schema}}
    if status is not None:
        schema["properties"]["status"] = status
        version["subresources"] = {"status": {}}
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.devices.kubeedge.io"},
        "spec": {
            "group": "devices.kubeedge.io",
            "scope": "Namespaced",
            "names": {"plural": plural, "singular": kind.lower(), "kind": kind, "listKind": f"{kind}List",
                      "shortNames": short},
            "versions": [version],
        },
    }


DEVICEMODEL_CRD: dict[str, Any] = _crd("devicemodels", "DeviceModel", [], {
    "type": "object",
    "properties": {
        "protocol": _STR,
        "properties": {"type": "array", "items": {"type": "object", "required": ["name", "type"], "properties": {
            "name": _STR, "description": _STR,
            "type": {"type": "string", "enum": ["INT", "FLOAT", "DOUBLE", "STRING", "BOOLEAN", "BYTES", "STREAM"]},
            "accessMode": {"type": "string", "enum": ["ReadWrite", "ReadOnly"]},
            "minimum": _STR, "maximum": _STR, "unit": _STR}}},
    },
}, None)

DEVICE_CRD: dict[str, Any] = _crd("devices", "Device", [], {
    "type": "object",
    "properties": {
        "deviceModelRef": {"type": "object", "properties": {"name": _STR}},
        "nodeName": _STR,
        "protocol": {"type": "object", "properties": {"protocolName": _STR, "configData": _ANY}},
        "properties": {"type": "array", "items": {"type": "object", "required": ["name"], "properties": {
            "name": _STR,
            "desired": _TWIN_VALUE,
            "visitors": {"type": "object", "properties": {"protocolName": _STR, "configData": _ANY}},
            "reportCycle": {"type": "integer", "format": "int64"},
            "collectCycle": {"type": "integer", "format": "int64"},
            "reportToCloud": {"type": "boolean"},
            "pushMethod": _ANY}}},
    },
}, {
    "type": "object",
    "properties": {
        "twins": {"type": "array", "items": {"type": "object", "properties": {
            "propertyName": _STR, "reported": _TWIN_VALUE, "observedDesired": _TWIN_VALUE}}},
        "state": _STR,
        "lastOnlineTime": _STR,
    },
})

CRDS = (DEVICEMODEL_CRD, DEVICE_CRD)
