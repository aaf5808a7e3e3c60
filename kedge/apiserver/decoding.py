"""Request bodies into objects: bounded JSON/YAML decoding and the decoder's type checks."""

from __future__ import annotations

import math
from typing import Any

import yaml

from kedge._internal import jsonutil
from kedge.apiserver import schema
from kedge.apiserver.model import JSON, MAX_JSON_DEPTH, MAX_JSON_NODES, Request, Response, _dumps
from kedge.limits import API_MAX_YAML_BODY_BYTES as MAX_YAML_BODY_BYTES
from kedge.apiserver.protobuf import ProtobufError, decode_review
from kedge.apiserver.request import RequestInfo
from kedge.apiserver.resources import ResourceType
from kedge.apiserver.status import ApiError, invalid
from kedge.errors import KedgeError, LimitExceeded


class _NoAliasLoader(yaml.SafeLoader):
    """Safe YAML without anchors/aliases: an alias graph would expand exponentially as JSON."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.events.AliasEvent):
            raise yaml.YAMLError("YAML aliases are not accepted")
        return super().compose_node(parent, index)


YAML_TYPES = ("application/yaml", "application/apply-patch+yaml")


def content_type(req: Request) -> str:
    return (req.header("content-type") or JSON).split(";")[0].strip().lower()


def _refuse_aliases(body: bytes) -> None:
    """Refuse anchors and aliases, scanning the event stream (libyaml's parser when it is there)."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    for event in yaml.parse(body, Loader=loader):
        if isinstance(event, yaml.events.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise yaml.YAMLError("YAML anchors and aliases are not accepted")


def decode_yaml(body: bytes) -> Any:
    """A YAML request body as JSON values: bounded, no aliases, safe constructors only.

    YAML is decoded at a fraction of JSON's speed (pure Python constructors even with libyaml):
    bodies are limited to ``API_MAX_YAML_BODY_BYTES`` -- kubectl and the client libraries send
    JSON -- and :meth:`kedge.apiserver.api.API.handle_async` decodes them off the event loop.
    """
    if len(body) > MAX_YAML_BODY_BYTES:
        raise ApiError(413, f"YAML request bodies are limited to {MAX_YAML_BODY_BYTES} bytes; send JSON")
    try:
        if hasattr(yaml, "CSafeLoader"):
            _refuse_aliases(body)
            value = yaml.load(body, Loader=yaml.CSafeLoader)  # nosec B506 - libyaml's SafeLoader; aliases refused above  # kedge-lint: allow KL004 - CSafeLoader is the safe loader, aliases were refused by _refuse_aliases
        else:
            value = yaml.load(body, Loader=_NoAliasLoader)  # nosec B506 - a SafeLoader subclass  # kedge-lint: allow KL004 - _NoAliasLoader subclasses SafeLoader and also refuses aliases
    except (ValueError, yaml.YAMLError, RecursionError, UnicodeDecodeError) as exc:
        raise ApiError(400, "the request body could not be decoded") from exc
    if not _depth_ok(value, MAX_JSON_DEPTH):
        raise ApiError(400, "the request body is nested too deeply")
    if not _all_finite(value):
        raise ApiError(400, "the request body could not be decoded: .nan and .inf are not JSON numbers")
    return value


def _all_finite(value: Any) -> bool:
    """No float in ``value`` is NaN or infinite (YAML's ``.nan``/``.inf``; JSON has none)."""
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, float) and not math.isfinite(v):
            return False
        if isinstance(v, dict):
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)
    return True


def decode_yaml_outcome(body: bytes) -> tuple[str, Any]:
    """:func:`decode_yaml` for a worker thread: its value or its error, as data."""
    try:
        return "ok", decode_yaml(body)
    except ApiError as exc:
        return "error", exc


def _depth_ok(value: Any, limit: int) -> bool:
    """A decoded body nests at most ``limit`` deep and has at most MAX_JSON_NODES values."""
    return jsonutil.within_bounds(value, limit, MAX_JSON_NODES)


_META_FIELDS = frozenset({
    "name", "generateName", "namespace", "selfLink", "uid", "resourceVersion", "generation", "creationTimestamp",
    "deletionTimestamp", "deletionGracePeriodSeconds", "labels", "annotations", "ownerReferences", "finalizers",
    "managedFields"})


_COMMON_FIELDS = ("apiVersion", "kind", "metadata")


_KIND_FIELDS: dict[str, tuple[str, ...]] = {
    "ConfigMap": ("data", "binaryData", "immutable"),
    "Secret": ("data", "stringData", "type", "immutable"),
    "ServiceAccount": ("secrets", "imagePullSecrets", "automountServiceAccountToken"),
    "Endpoints": ("subsets",),
    "Event": ("involvedObject", "reason", "message", "source", "firstTimestamp", "lastTimestamp", "count", "type",
              "eventTime", "series", "action", "related", "reportingComponent", "reportingInstance"),
    "Role": ("rules",), "ClusterRole": ("rules", "aggregationRule"),
    "RoleBinding": ("subjects", "roleRef"), "ClusterRoleBinding": ("subjects", "roleRef"),
}


_OBJECT_FIELDS = ("metadata", "spec", "status", "data", "stringData", "binaryData", "roleRef", "aggregationRule",
                  "involvedObject")


_LIST_FIELDS = ("rules", "subjects", "secrets", "imagePullSecrets", "subsets")


def check_shape(rt: ResourceType, obj: dict[str, Any]) -> None:
    """The JSON types of top-level fields, as Kubernetes' decoder enforces them (400 otherwise)."""
    for key in _OBJECT_FIELDS:
        if obj.get(key) is not None and not isinstance(obj[key], dict):
            raise ApiError(400, f"{key} must be an object")
    if not rt.crd:
        for key in _LIST_FIELDS:
            if obj.get(key) is not None and not isinstance(obj[key], list):
                raise ApiError(400, f"{key} must be a list")
    meta = obj.get("metadata") or {}
    for key in ("name", "generateName", "namespace", "resourceVersion", "uid"):
        if meta.get(key) is not None and not isinstance(meta[key], str):
            raise ApiError(400, f"metadata.{key} must be a string")


def check_known_fields(rt: ResourceType, obj: dict[str, Any]) -> None:
    """``fieldValidation=Strict``: refuse unknown top-level and metadata fields of built-in kinds.

    Nested fields are not checked (kedge carries no full schemas); custom resources accept
    any field, as a CRD with ``x-kubernetes-preserve-unknown-fields`` does.
    """
    if rt.crd:
        return
    allowed = set(_COMMON_FIELDS) | set(_KIND_FIELDS.get(rt.kind, ("spec", "status")))
    unknown = [f'unknown field "{k}"' for k in obj if k not in allowed]
    unknown += [f'unknown field "metadata.{k}"' for k in (obj.get("metadata") or {}) if k not in _META_FIELDS]
    if unknown:
        raise ApiError(400, "strict decoding error: " + ", ".join(sorted(unknown)[:10]))


def strict_fields(req: Request) -> bool:
    return "fieldValidation=Strict" in req.target


def decode_json(body: bytes, *, max_bytes: int, strict: bool = False) -> Any:
    """A JSON request body, decoded as Kubernetes' decoder does it, through the one bounded loader.

    Over ``max_bytes``: 413. Nesting deeper than ``API_MAX_JSON_DEPTH``: 400 ``the request body
    is nested too deeply``. Not strict UTF-8 JSON -- ``NaN`` and ``Infinity`` included, which
    Go's decoder refuses too: 400 ``the request body could not be decoded``. A key repeated in
    one object keeps its last value, as in Go; with ``strict`` (``fieldValidation=Strict``) it is
    a 400 ``strict decoding error: duplicate field "<key>"``, as Kubernetes' strict decoding says.
    """
    duplicates: list[str] = []

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        obj = dict(items)
        if len(obj) != len(items):
            seen: set[str] = set()
            for key, _ in items:
                if key in seen:
                    duplicates.append(key)
                seen.add(key)
        return obj

    try:
        value = jsonutil.loads(body, max_bytes=max_bytes, max_depth=MAX_JSON_DEPTH,
                               object_pairs_hook=pairs if strict else None)
    except LimitExceeded as exc:
        if exc.code == "too_large":
            raise ApiError(413, "the request body is too large") from exc
        raise ApiError(400, "the request body is nested too deeply") from exc
    except KedgeError as exc:  # ProtocolError malformed_json
        raise ApiError(400, "the request body could not be decoded") from exc
    if duplicates:
        names = sorted(set(duplicates))
        raise ApiError(400, "strict decoding error: " + ", ".join(f'duplicate field "{k}"' for k in names[:10]))
    return value


class BodyDecoding:
    """Decoding of request bodies (a mixin of :class:`kedge.apiserver.api.API`)."""

    def _body(self, req: Request, *, allow_yaml: bool = True) -> Any:
        if len(req.body) > self.max_body_bytes:
            raise ApiError(413, "the request body is too large")
        ctype = content_type(req)
        if ctype in YAML_TYPES and allow_yaml:
            if req.decoded_yaml is None:
                return decode_yaml(req.body)  # the synchronous path (API.handle): tests, tools
            outcome, value = req.decoded_yaml
            if outcome == "error":
                raise value
            return value
        try:
            if ctype == "application/vnd.kubernetes.protobuf" and allow_yaml:
                try:
                    value = decode_review(req.body)
                except ProtobufError as exc:
                    raise ApiError(415, f"the body of the request was in an unknown format: {ctype}") from exc
            elif ctype in ("application/json", "application/merge-patch+json", "application/json-patch+json",
                           "application/strategic-merge-patch+json", "*/*", ""):
                value = decode_json(req.body, max_bytes=self.max_body_bytes, strict=strict_fields(req))
            else:
                raise ApiError(415, f"the body of the request was in an unknown format: {ctype}")
        except (ValueError, yaml.YAMLError, RecursionError, UnicodeDecodeError) as exc:
            raise ApiError(400, "the request body could not be decoded") from exc
        if not _depth_ok(value, MAX_JSON_DEPTH):
            raise ApiError(400, "the request body is nested too deeply")
        return value

    def _object_body(self, req: Request, info: RequestInfo, rt: ResourceType) -> dict[str, Any]:
        obj = self._body(req)
        if not isinstance(obj, dict):
            raise ApiError(400, "the request body must be a JSON object")
        kind = obj.get("kind")
        if kind not in (None, rt.kind) and not (info.subresource and kind):
            raise ApiError(400, f"the object provided is unrecognized (must be of kind {rt.kind}, not {kind})")
        api_version = obj.get("apiVersion")
        if api_version not in (None, rt.api_version) and not info.subresource:
            raise ApiError(400, f"the API version in the data ({api_version}) does not match the expected "
                           f"API version ({rt.api_version})")
        check_shape(rt, obj)
        meta = obj.get("metadata", {})
        for key in ("labels", "annotations"):
            m = meta.get(key)
            if m is not None and (not isinstance(m, dict) or not all(
                    isinstance(k, str) and isinstance(v, str) for k, v in m.items())):
                raise invalid(rt.kind, str(meta.get("name", "")), f"metadata.{key} must map strings to strings")
        fin = meta.get("finalizers")
        if fin is not None and (not isinstance(fin, list) or not all(isinstance(f, str) for f in fin)):
            raise invalid(rt.kind, str(meta.get("name", "")), "metadata.finalizers must be a list of strings")
        if strict_fields(req) and not info.subresource:
            check_known_fields(rt, obj)
        meta.pop("managedFields", None)
        obj["kind"], obj["apiVersion"] = (rt.kind, rt.api_version) if not info.subresource else (
            obj.get("kind", rt.kind), obj.get("apiVersion", rt.api_version))
        if not rt.crd:
            schema.check_types(obj)
        return obj

    def _ok(self, status: int, obj: Any, rt: ResourceType | None = None) -> Response:
        if rt is not None and rt.crd and isinstance(obj, dict):
            obj["apiVersion"] = rt.api_version
        return Response(status, _dumps(obj))
