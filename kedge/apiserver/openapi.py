"""The smallest OpenAPI documents kubectl needs.

kubectl reads ``/openapi/v3`` (an index of group-version documents) to decide whether
the server supports server-side field validation and to find strategic-merge patch
metadata. For built-in kinds kubectl falls back to its compiled-in types when a
schema is missing, so kedge publishes per group-version documents that list the
operations (with the ``fieldValidation`` parameter, so ``kubectl apply`` validates on
the server) but no detailed schemas.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from kedge.apiserver.resources import Registry, ResourceType


def _gv_path(group: str, version: str) -> str:
    return f"api/{version}" if not group else f"apis/{group}/{version}"


def _gvs(registry: Registry) -> dict[str, list[ResourceType]]:
    out: dict[str, list[ResourceType]] = {}
    for t in registry.all():
        out.setdefault(_gv_path(t.group, t.version), []).append(t)
    return out


def v3_group_document(registry: Registry, gv: str) -> dict[str, Any] | None:
    types = _gvs(registry).get(gv)
    if types is None:
        return None
    paths: dict[str, Any] = {}
    schemas: dict[str, Any] = {}
    params = [{"name": "fieldValidation", "in": "query", "schema": {"type": "string", "uniqueItems": True}},
              {"name": "dryRun", "in": "query", "schema": {"type": "string", "uniqueItems": True}}]
    for t in types:
        gvk = {"group": t.group, "version": t.version, "kind": t.kind}
        schema_name = f"{t.group or 'core'}.{t.version}.{t.kind}"
        schemas[schema_name] = {"type": "object", "x-kubernetes-group-version-kind": [gvk],
                                "x-kubernetes-preserve-unknown-fields": True}
        prefix = f"/{gv}/namespaces/{{namespace}}/{t.resource}" if t.namespaced else f"/{gv}/{t.resource}"
        op = {"x-kubernetes-group-version-kind": gvk, "parameters": params,
              "responses": {"200": {"description": "OK"}}}
        paths[prefix] = {"post": dict(op, **{"x-kubernetes-action": "post"})}
        paths[prefix + "/{name}"] = {"get": dict(op, **{"x-kubernetes-action": "get"}),
                                     "put": dict(op, **{"x-kubernetes-action": "put"}),
                                     "patch": dict(op, **{"x-kubernetes-action": "patch"}),
                                     "delete": dict(op, **{"x-kubernetes-action": "delete"})}
    return {"openapi": "3.0.0", "info": {"title": "Kubernetes (kedge)", "version": "v1.32.0"},
            "paths": paths, "components": {"schemas": schemas}}


def v3_root(registry: Registry) -> dict[str, Any]:
    out = {}
    for gv in sorted(_gvs(registry)):
        doc = v3_group_document(registry, gv)
        digest = hashlib.sha512(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:64].upper()
        out[gv] = {"serverRelativeURL": f"/openapi/v3/{gv}?hash={digest}"}
    return {"paths": out}


def v2_document(registry: Registry) -> dict[str, Any]:
    return {"swagger": "2.0", "info": {"title": "Kubernetes (kedge)", "version": "v1.32.0"},
            "paths": {}, "definitions": {}}
