"""Turn an HTTP request line into Kubernetes ``RequestInfo`` -- a pure function.

Mirrors ``k8s.io/apiserver/pkg/endpoints/request.RequestInfoFactory``: paths under
``/api/v1`` and ``/apis/<group>/<version>`` with a resource are resource requests;
everything else is a non-resource request authorized by URL. For list/watch a
``metadata.name=<x>`` field selector names the object, so per-object rules
(resourceNames, the Node authorizer) apply to single-object watches.
"""

from __future__ import annotations

import dataclasses
from urllib.parse import parse_qs, unquote, urlsplit

from kedge.authz.labels import FieldRequirement, parse_field_selector
from kedge.errors import PeerError
from kedge.limits import API_MAX_QUERY_PARAMS as MAX_QUERY_PARAMS

_NAMESPACE_SUBRESOURCES = ("status", "finalize")
_METHOD_VERBS = {"POST": "create", "GET": "get", "HEAD": "get", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}


class BadRequest(PeerError):
    code = "bad_request"


@dataclasses.dataclass(frozen=True)
class RequestInfo:
    path: str
    verb: str
    resource_request: bool
    query: dict[str, str]
    api_prefix: str = ""
    api_group: str = ""
    api_version: str = ""
    namespace: str = ""
    resource: str = ""
    subresource: str = ""
    name: str = ""
    field_selector: tuple[FieldRequirement, ...] = ()
    extra_parts: bool = False  # more path segments than a resource URL can have


def _truthy(v: str | None) -> bool:
    return v is not None and v.lower() in ("1", "true")


def parse_request(method: str, target: str) -> RequestInfo:
    """Parse ``method`` + request target (path and query)."""
    try:
        split = urlsplit(target)
    except ValueError as exc:  # e.g. "//x[/..." is an invalid IPv6 netloc to urlsplit
        raise BadRequest("invalid request target") from exc
    if split.scheme or split.netloc:
        raise BadRequest("absolute-form request targets are not accepted")
    try:
        raw_query = parse_qs(split.query, keep_blank_values=True, max_num_fields=MAX_QUERY_PARAMS)
    except ValueError as exc:  # "Max number of fields exceeded": parse_qs counts every '&' / ';'
        raise BadRequest("too many query parameters") from exc
    query = {k: v[-1] for k, v in raw_query.items()}
    path = split.path or "/"
    if "\x00" in unquote(path):
        raise BadRequest("invalid path")
    parts = [unquote(p) for p in path.strip("/").split("/")] if path.strip("/") else []
    if any(p in (".", "..") for p in parts):
        raise BadRequest("invalid path")
    method = method.upper()
    non_resource = RequestInfo(path=path, verb=method.lower(), resource_request=False, query=query)
    if not parts or parts[0] not in ("api", "apis"):
        return non_resource
    if parts[0] == "api":
        if len(parts) < 3:
            return non_resource
        group, version, rest = "", parts[1], parts[2:]
    else:
        if len(parts) < 4:
            return non_resource
        group, version, rest = parts[1], parts[2], parts[3:]
    verb = _METHOD_VERBS.get(method)
    if verb is None:
        return non_resource
    namespace = ""
    if rest[0] == "namespaces" and len(rest) > 2 and rest[2] not in _NAMESPACE_SUBRESOURCES:
        namespace, rest = rest[1], rest[2:]
    resource = rest[0]
    name = rest[1] if len(rest) > 1 else ""
    sub = rest[2] if len(rest) > 2 else ""
    extra = len(rest) > 3
    fsel = parse_field_selector(query.get("fieldSelector"))
    if verb == "get" and not name:
        verb = "watch" if _truthy(query.get("watch")) else "list"
    elif verb == "delete" and not name:
        verb = "deletecollection"
    if verb in ("list", "watch") and not name:
        for r in fsel:
            if r.field == "metadata.name" and r.op == "=":
                name = r.value
    if verb == "get" and _truthy(query.get("watch")):
        verb = "watch"
    return RequestInfo(path=path, verb=verb, resource_request=True, query=query, api_prefix=parts[0],
                       api_group=group, api_version=version, namespace=namespace, resource=resource,
                       subresource=sub, name=name, field_selector=fsel, extra_parts=extra)
