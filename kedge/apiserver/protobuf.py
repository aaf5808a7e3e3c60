"""Decode the few Kubernetes protobuf request bodies kubectl sends, into JSON dicts.

Covered: access/subject reviews, and the ConfigMap/Secret/Namespace/ServiceAccount
objects ``kubectl create <kind>`` posts.

kubectl's typed clients (``auth can-i``, ``auth whoami``) POST access reviews as
``application/vnd.kubernetes.protobuf`` and accept JSON back. kedge answers in JSON and
decodes only these review kinds -- a tiny, bounded protobuf reader, pure function
(bytes in, dict out, or :class:`ProtobufError`). Every other protobuf body is refused
with 415, after which client-go falls back to JSON.
"""

from __future__ import annotations

import base64
from typing import Any

from kedge.errors import PeerError
from kedge.limits import PROTOBUF_MAX_DEPTH as MAX_DEPTH
from kedge.limits import PROTOBUF_MAX_FIELDS as MAX_FIELDS

MAGIC = b"k8s\x00"


class ProtobufError(PeerError):
    code = "invalid_protobuf"


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    """A base-128 varint of at most 64 bits, as Go's ``protowire.ConsumeVarint`` reads it.

    At most ten bytes, and the tenth may only carry bit 63 (value 0 or 1): anything
    more would be a value of up to 2**70, which no uint64 field can hold.
    """
    result = 0
    for i in range(10):
        if pos >= len(buf):
            raise ProtobufError("truncated varint")
        b = buf[pos]
        pos += 1
        if i == 9 and b > 1:
            raise ProtobufError("varint overflows 64 bits")
        result |= (b & 0x7F) << (7 * i)
        if not b & 0x80:
            return result, pos
    raise ProtobufError("varint overflows 64 bits")  # unreachable: byte ten is 0 or 1


def fields(buf: bytes) -> list[tuple[int, int, Any]]:
    """``[(field_number, wire_type, value)]``; length-delimited values are bytes."""
    out: list[tuple[int, int, Any]] = []
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        num, wt = key >> 3, key & 7
        if num == 0:
            raise ProtobufError("field number 0")
        if wt == 0:
            val, pos = _varint(buf, pos)
        elif wt == 2:
            ln, pos = _varint(buf, pos)
            if pos + ln > len(buf):
                raise ProtobufError("truncated field")
            val, pos = buf[pos:pos + ln], pos + ln
        elif wt == 1:
            if pos + 8 > len(buf):
                raise ProtobufError("truncated field")
            val, pos = buf[pos:pos + 8], pos + 8
        elif wt == 5:
            if pos + 4 > len(buf):
                raise ProtobufError("truncated field")
            val, pos = buf[pos:pos + 4], pos + 4
        else:
            raise ProtobufError("unsupported wire type")
        out.append((num, wt, val))
        if len(out) > MAX_FIELDS:
            raise ProtobufError("too many fields")
    return out


def _str(v: Any) -> str:
    if not isinstance(v, bytes):
        raise ProtobufError("expected a string")
    try:
        return v.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProtobufError("invalid UTF-8") from exc


# schema: field number -> (json name, kind) with kind "str", "strs", or a nested schema dict
Schema = dict[int, tuple[str, Any]]

_FIELD_REQ: Schema = {1: ("key", "str"), 2: ("operator", "str"), 3: ("values", "strs")}
_LABEL_REQ: Schema = {1: ("key", "str"), 2: ("operator", "str"), 3: ("values", "strs")}
_RESOURCE_ATTRS: Schema = {
    1: ("namespace", "str"), 2: ("verb", "str"), 3: ("group", "str"), 4: ("version", "str"),
    5: ("resource", "str"), 6: ("subresource", "str"), 7: ("name", "str"),
    8: ("fieldSelector", {1: ("rawSelector", "str"), 2: ("requirements", ("list", _FIELD_REQ))}),
    9: ("labelSelector", {1: ("rawSelector", "str"), 2: ("requirements", ("list", _LABEL_REQ))}),
}
_NON_RESOURCE_ATTRS: Schema = {1: ("path", "str"), 2: ("verb", "str")}
_OWNER_REF: Schema = {5: ("apiVersion", "str"), 1: ("kind", "str"), 3: ("name", "str"), 4: ("uid", "str")}
_OBJECT_META: Schema = {1: ("name", "str"), 2: ("generateName", "str"), 3: ("namespace", "str"),
                        6: ("resourceVersion", "str"), 11: ("labels", "map"), 12: ("annotations", "map"),
                        13: ("ownerReferences", ("list", _OWNER_REF)), 14: ("finalizers", "strs")}
_SAR_SPEC: Schema = {1: ("resourceAttributes", _RESOURCE_ATTRS), 2: ("nonResourceAttributes", _NON_RESOURCE_ATTRS),
                     3: ("user", "str"), 4: ("groups", "strs"), 6: ("uid", "str")}
_SSAR_SPEC: Schema = {1: ("resourceAttributes", _RESOURCE_ATTRS), 2: ("nonResourceAttributes", _NON_RESOURCE_ATTRS)}

KIND_SCHEMAS: dict[str, Schema] = {
    "SelfSubjectAccessReview": {1: ("metadata", _OBJECT_META), 2: ("spec", _SSAR_SPEC)},
    "SubjectAccessReview": {1: ("metadata", _OBJECT_META), 2: ("spec", _SAR_SPEC)},
    "LocalSubjectAccessReview": {1: ("metadata", _OBJECT_META), 2: ("spec", _SAR_SPEC)},
    "SelfSubjectRulesReview": {1: ("metadata", _OBJECT_META), 2: ("spec", {1: ("namespace", "str")})},
    "SelfSubjectReview": {1: ("metadata", _OBJECT_META)},
    # what `kubectl create configmap|secret|namespace|serviceaccount` send
    "ConfigMap": {1: ("metadata", _OBJECT_META), 2: ("data", "map"), 3: ("binaryData", "bmap"),
                  4: ("immutable", "bool")},
    "Secret": {1: ("metadata", _OBJECT_META), 2: ("data", "bmap"), 3: ("type", "str"), 4: ("stringData", "map"),
               5: ("immutable", "bool")},
    "Namespace": {1: ("metadata", _OBJECT_META)},
    "ServiceAccount": {1: ("metadata", _OBJECT_META), 4: ("automountServiceAccountToken", "bool")},
    # `kubectl create token`
    "TokenRequest": {1: ("metadata", _OBJECT_META), 2: ("spec", {
        1: ("audiences", "strs"), 4: ("expirationSeconds", "int"),
        3: ("boundObjectRef", {1: ("kind", "str"), 2: ("apiVersion", "str"), 3: ("name", "str"), 4: ("uid", "str")})})},
}


def _decode(buf: bytes, schema: Schema, depth: int) -> dict[str, Any]:
    if depth > MAX_DEPTH:
        raise ProtobufError("nested too deeply")
    out: dict[str, Any] = {}
    for num, wt, val in fields(buf):
        if num not in schema:
            continue  # unknown or unneeded field
        name, kind = schema[num]
        if kind in ("bool", "int"):
            if wt != 0:
                raise ProtobufError("unexpected wire type")
            out[name] = bool(val) if kind == "bool" else int(val)
            continue
        if wt != 2:
            raise ProtobufError("unexpected wire type")
        if kind in ("map", "bmap"):
            key, value = "", b""
            for n2, w2, v2 in fields(val):
                if n2 == 1 and w2 == 2:
                    key = _str(v2)
                elif n2 == 2 and w2 == 2:
                    value = v2
            out.setdefault(name, {})[key] = (
                base64.b64encode(value).decode() if kind == "bmap" else _str(value))
        elif kind == "str":
            out[name] = _str(val)
        elif kind == "strs":
            out.setdefault(name, []).append(_str(val))
        elif isinstance(kind, tuple) and kind[0] == "list":
            out.setdefault(name, []).append(_decode(val, kind[1], depth + 1))
        else:
            out[name] = _decode(val, kind, depth + 1)
    return out


def decode_review(body: bytes) -> dict[str, Any]:
    """Decode a protobuf-encoded review object into its JSON form."""
    if not body.startswith(MAGIC):
        raise ProtobufError("missing protobuf envelope")
    api_version = kind = ""
    raw = b""
    for num, wt, val in fields(body[len(MAGIC):]):
        if num == 1 and wt == 2:
            for n2, w2, v2 in fields(val):
                if n2 == 1 and w2 == 2:
                    api_version = _str(v2)
                elif n2 == 2 and w2 == 2:
                    kind = _str(v2)
        elif num == 2 and wt == 2:
            raw = val
    schema = KIND_SCHEMAS.get(kind)
    if schema is None:
        raise ProtobufError("unsupported protobuf kind")
    obj = _decode(raw, schema, 0)
    obj["apiVersion"], obj["kind"] = api_version, kind
    return obj
