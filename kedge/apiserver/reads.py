"""get and list, with selectors, paging (continue tokens) and pod logs."""

from __future__ import annotations

import base64
import json
from typing import Any

from kedge._internal import jsonutil
from kedge.apiserver import podlog
from kedge.apiserver.model import MAX_LIST_LIMIT, LogFetch, Request, Response, _dumps, _int_param, _meta, _wants_table
from kedge.apiserver.request import RequestInfo
from kedge.apiserver.resources import ResourceType
from kedge.apiserver.status import ApiError, not_found
from kedge.apiserver.watch import _named, _served_as
from kedge.authz.labels import (
    fields_match,
)
from kedge.errors import KedgeError
from kedge.limits import API_CONTINUE_MAX_CHARS as CONTINUE_MAX_CHARS
from kedge.limits import API_CONTINUE_MAX_JSON_DEPTH as CONTINUE_MAX_JSON_DEPTH


def _encode_continue(namespace: str, name: str) -> str:
    return base64.urlsafe_b64encode(_dumps({"v": 1, "ns": namespace, "n": name})).decode()


def _decode_continue(token: str) -> tuple[str, str]:
    """A client's ``?continue=`` token -> (namespace, name) to list after; anything but a token
    :func:`_encode_continue` could have made is a 400 ``invalid continue token``."""
    try:
        if len(token) > CONTINUE_MAX_CHARS:
            raise ValueError("too long")
        raw = base64.urlsafe_b64decode(token.encode())
        d = jsonutil.loads(raw, max_bytes=CONTINUE_MAX_CHARS, max_depth=CONTINUE_MAX_JSON_DEPTH)
        if not isinstance(d, dict) or d.get("v") != 1 or not isinstance(d.get("ns"), str) or \
                not isinstance(d.get("n"), str):
            raise ValueError("bad token")
        return d["ns"], d["n"]
    except (ValueError, TypeError, KedgeError) as exc:
        raise ApiError(400, "invalid continue token") from exc


class ReadHandlers:
    """get and list (a mixin of :class:`kedge.apiserver.api.API`)."""

    def _load(self, rt: ResourceType, namespace: str, name: str) -> dict[str, Any]:
        obj = self.store.get(rt.storage_key, namespace if rt.namespaced else "", name)
        if obj is None:
            raise not_found(rt.resource, name, rt.group)
        return obj

    def _log(self, info: RequestInfo, rt: ResourceType) -> LogFetch:
        raw = self.store.get_raw(rt.storage_key, info.namespace, info.name, committed=True)
        if raw is None:
            raise not_found(rt.resource, info.name, rt.group)
        return LogFetch(podlog.parse(info.query, json.loads(raw)), rt.storage_key)

    def _get(self, req: Request, info: RequestInfo, rt: ResourceType) -> Response:
        raw = self.store.get_raw(rt.storage_key, info.namespace, info.name, committed=True)
        if raw is None:
            raise not_found(rt.resource, info.name, rt.group)
        if _wants_table(req):
            return self._table(rt, [json.loads(raw)], str(self.store.current_rv), req)
        if rt.crd:
            return self._ok(200, json.loads(raw), rt)
        return Response(200, raw.encode())

    def _list(self, req: Request, info: RequestInfo, rt: ResourceType) -> Response:
        labels, fields = self._selectors(info, rt)
        fields = _named(info, fields)
        namespace = info.namespace if rt.namespaced and info.namespace else None
        index = None
        if rt.field_index:
            for r in fields:
                if r.field == rt.field_index and r.op == "=":
                    index = r.value
        limit = _int_param(info.query.get("limit"), 0, MAX_LIST_LIMIT)
        after = None
        token = info.query.get("continue")
        if token:
            after = _decode_continue(token)
        list_rv, raws = self.store.list_raw(rt.storage_key, namespace, index=index, after=after,
                                            limit=(limit + 1) if limit else None)
        filtering = not labels.empty or bool(fields) or (rt.crd and not all(_served_as(r, rt.api_version)
                                                                          for r in raws))
        more = None
        if limit and len(raws) > limit:
            raws = raws[:limit]
            more = raws[-1]
        meta: dict[str, Any] = {"resourceVersion": str(list_rv)}
        if more is not None:
            last = json.loads(more)["metadata"]
            meta["continue"] = _encode_continue(last.get("namespace", ""), last["name"])
        if _wants_table(req) or filtering:
            objs = [json.loads(r) for r in raws]
            objs = [o for o in objs if labels.matches(_meta(o).get("labels")) and fields_match(o, fields)]
            if rt.crd:
                for o in objs:
                    o["apiVersion"] = rt.api_version
            if _wants_table(req):
                return self._table(rt, objs, str(list_rv), req, meta)
            return Response(200, _dumps({"kind": rt.list_kind, "apiVersion": rt.api_version,
                                         "metadata": meta, "items": objs}))
        head = _dumps({"kind": rt.list_kind, "apiVersion": rt.api_version, "metadata": meta})[:-1]
        return Response(200, head + b',"items":[' + ",".join(raws).encode() + b"]}")
