"""Non-resource endpoints: /version, /healthz, discovery documents and OpenAPI."""

from __future__ import annotations

from typing import Any

from kedge import __version__
from kedge.apiserver import openapi
from kedge.apiserver.model import Request, Response, _dumps
from kedge.apiserver.request import RequestInfo
from kedge.apiserver.status import ApiError

_SUBRESOURCE_VERBS = {"status": ("get", "update", "patch"), "scale": ("get", "update", "patch"),
                      "ephemeralcontainers": ("get", "update", "patch"), "eviction": ("create",),
                      "token": ("create",), "finalize": ("update",), "log": ("get",)}


def version_info() -> dict[str, str]:
    return {"major": "1", "minor": "32", "gitVersion": f"v1.32.0-kedge.{__version__}",
            "gitCommit": "", "gitTreeState": "clean", "buildDate": "1970-01-01T00:00:00Z",
            "goVersion": "python", "compiler": "cpython", "platform": "linux/amd64"}


class Discovery:
    """Non-resource endpoints (a mixin of :class:`kedge.apiserver.api.API`)."""

    def _non_resource(self, req: Request, info: RequestInfo) -> Response:
        if info.verb not in ("get", "head"):
            raise ApiError(405, "method not allowed")
        path = info.path.rstrip("/") or "/"
        if path == "/version":
            return Response(200, _dumps(version_info()))
        if path in ("/healthz", "/livez", "/readyz"):
            return Response(200, b"ok", "text/plain; charset=utf-8")
        if path == "/api":
            return Response(200, _dumps({"kind": "APIVersions", "versions": ["v1"],
                                         "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0",
                                                                         "serverAddress": ""}]}))
        if path == "/api/v1":
            return Response(200, _dumps(self._resource_list("", "v1")))
        if path == "/apis":
            return Response(200, _dumps({"kind": "APIGroupList", "apiVersion": "v1",
                                         "groups": [self._group(g, vs) for g, vs in
                                                    sorted(self.registry.groups().items())]}))
        parts = path.strip("/").split("/")
        if parts[0] == "apis" and len(parts) in (2, 3):
            groups = self.registry.groups()
            if parts[1] in groups:
                if len(parts) == 2:
                    return Response(200, _dumps(dict(self._group(parts[1], groups[parts[1]]), kind="APIGroup",
                                                     apiVersion="v1")))
                if parts[2] in groups[parts[1]]:
                    return Response(200, _dumps(self._resource_list(parts[1], parts[2])))
        if path == "/openapi/v2":
            return Response(200, _dumps(openapi.v2_document(self.registry)))
        if path == "/openapi/v3":
            return Response(200, _dumps(openapi.v3_root(self.registry)))
        if path.startswith("/openapi/v3/"):
            doc = openapi.v3_group_document(self.registry, path[len("/openapi/v3/"):])
            if doc is not None:
                return Response(200, _dumps(doc))
        raise ApiError(404, "the server could not find the requested resource")

    def _group(self, group: str, versions: list[str]) -> dict[str, Any]:
        vs = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
        return {"name": group, "versions": vs, "preferredVersion": vs[0]}

    def _resource_list(self, group: str, version: str) -> dict[str, Any]:
        resources: list[dict[str, Any]] = []
        for t in self.registry.all():
            if t.group == group and t.version == version:
                resources.extend(t.discovery())
        return {"kind": "APIResourceList", "apiVersion": "v1",
                "groupVersion": f"{group}/{version}" if group else version, "resources": resources}
