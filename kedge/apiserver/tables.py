"""Server-side printing: ``kubectl get`` asks for a ``Table`` instead of objects."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kedge.apiserver.model import Request, Response, _dumps, _meta, _parse_rfc3339
from kedge.apiserver.resources import ResourceType


def _age(created: str | None, now: float) -> str:
    ts = _parse_rfc3339(created or "")
    if ts is None:
        return "<unknown>"
    s = max(0, int(now - ts))
    if s < 120:
        return f"{s}s"
    if s < 7200:
        return f"{s // 60}m"
    if s < 172800:
        return f"{s // 3600}h"
    return f"{s // 86400}d"


class TableRendering:
    """Server-side printing (a mixin of :class:`kedge.apiserver.api.API`)."""

    def _table(self, rt: ResourceType, objs: list[dict[str, Any]], rv: str, req: Request | None,
               meta: dict[str, Any] | None = None) -> Response:
        now = self.clock()
        columns = [{"name": "Name", "type": "string", "format": "name", "description": "Name", "priority": 0}]
        extra: list[tuple[str, Callable[[dict[str, Any]], Any]]] = []
        if rt.resource == "pods":
            def ready(o: dict[str, Any]) -> str:
                cs = (o.get("status") or {}).get("containerStatuses") or []
                total = len((o.get("spec") or {}).get("containers") or [])
                return f"{sum(1 for c in cs if c.get('ready'))}/{total}"
            extra = [("Ready", ready), ("Status", lambda o: (o.get("status") or {}).get("phase", "Unknown")),
                     ("Restarts", lambda o: sum(int(c.get("restartCount", 0)) for c in
                                                (o.get("status") or {}).get("containerStatuses") or [])),
                     ("Age", lambda o: _age(_meta(o).get("creationTimestamp"), now)),
                     ("Node", lambda o: (o.get("spec") or {}).get("nodeName") or "<none>")]
        elif rt.resource == "nodes":
            def node_status(o: dict[str, Any]) -> str:
                for c in (o.get("status") or {}).get("conditions") or []:
                    if c.get("type") == "Ready":
                        return "Ready" if c.get("status") == "True" else "NotReady"
                return "Unknown"
            extra = [("Status", node_status), ("Age", lambda o: _age(_meta(o).get("creationTimestamp"), now)),
                     ("Version", lambda o: ((o.get("status") or {}).get("nodeInfo") or {}).get("kubeletVersion", ""))]
        elif rt.resource == "configmaps" or rt.resource == "secrets":
            extra = [("Data", lambda o: len(o.get("data") or {})),
                     ("Age", lambda o: _age(_meta(o).get("creationTimestamp"), now))]
        elif rt.resource == "namespaces":
            extra = [("Status", lambda o: (o.get("status") or {}).get("phase", "")),
                     ("Age", lambda o: _age(_meta(o).get("creationTimestamp"), now))]
        else:
            extra = [("Age", lambda o: _age(_meta(o).get("creationTimestamp"), now))]
        for title, _ in extra:
            columns.append({"name": title, "type": "integer" if title in ("Restarts", "Data") else "string",
                            "format": "", "description": title, "priority": 1 if title == "Node" else 0})
        include = "Object" if req is not None and "includeObject=Object" in req.target else "Metadata"
        rows = []
        for o in objs:
            m = _meta(o)
            row_obj = o if include == "Object" else {
                "kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": m}
            rows.append({"cells": [m.get("name", "")] + [fn(o) for _, fn in extra], "object": row_obj})
        table = {"kind": "Table", "apiVersion": "meta.k8s.io/v1",
                 "metadata": meta or {"resourceVersion": rv}, "columnDefinitions": columns, "rows": rows}
        return Response(200, _dumps(table))
