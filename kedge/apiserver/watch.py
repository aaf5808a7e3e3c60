"""Watches: the bounded per-client event queue, starting one, and fanning store events out to them."""

from __future__ import annotations

import collections
import copy
import json
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from kedge.apiserver.model import (
    DEFAULT_WATCH_TIMEOUT_S,
    MAX_WATCH_BACKLOG,
    MAX_WATCH_BACKLOG_BYTES,
    MAX_WATCH_TIMEOUT_S,
    Request,
    _int_param,
    _meta,
    _wants_table,
)
from kedge.apiserver.request import RequestInfo
from kedge.apiserver.resources import ResourceType
from kedge.apiserver.status import ApiError, status_body
from kedge.authz.labels import (
    FieldRequirement,
    fields_match,
    parse_label_selector,
)
from kedge.store.sqlite import (
    Expired,
    StoreError,
    WatchEvent,
    parse_rv,
)

if TYPE_CHECKING:
    from kedge.apiserver.api import API

log = logging.getLogger("kedge.apiserver.api")  # one logger for the API server's handlers


class Watch:
    """A live watch: lines queue up here; the HTTP shell drains them.

    The backlog of live events is bounded: a consumer that falls ``MAX_WATCH_BACKLOG``
    lines (or ``MAX_WATCH_BACKLOG_BYTES``) behind is dropped (``overflowed``) and must
    re-watch -- a slow client can't make us buffer without bound. The initial state
    (synthetic ADDED events) is queued separately: it is one snapshot of the store, already
    bounded by what a LIST would return.
    """

    def __init__(self, api: "API", rt: ResourceType, namespace: str | None, name: str,
                 labels: Any, fields: tuple[FieldRequirement, ...], bookmarks: bool, timeout_s: float) -> None:
        self.api, self.rt, self.namespace, self.name = api, rt, namespace, name
        self.labels, self.fields, self.bookmarks, self.timeout_s = labels, fields, bookmarks, timeout_s
        self.lines: collections.deque[bytes] = collections.deque()
        self._live = 0  # live (non-initial) lines queued
        self._live_bytes = 0
        self.overflowed = False
        self.closed = False
        self.notify: Callable[[], None] = lambda: None
        self.audit: dict[str, Any] = {}
        self.table = False  # kubectl get -w asks for server-side printed rows
        # The watch already has (listed or replayed) every change up to here; live events at or
        # below it are not sent again.
        self.start_rv = 0
        # A watch whose only filter is "<indexed field>=<value>" (a node watching its pods) can be
        # skipped without decoding events that belong to other values.
        self.index_value: str | None = None
        if rt.field_index and labels.empty and len(fields) == 1 and fields[0].field == rt.field_index \
                and fields[0].op == "=":
            self.index_value = fields[0].value

    def push(self, line: bytes, *, initial: bool = False) -> None:
        if self.overflowed or self.closed:
            return
        if not initial and (self._live >= MAX_WATCH_BACKLOG or self._live_bytes + len(line) > MAX_WATCH_BACKLOG_BYTES):
            self.overflowed = True
            self.lines.clear()
        else:
            self.lines.append(line)
            if not initial:
                self._live += 1
                self._live_bytes += len(line)
        self.notify()

    def take(self, max_lines: int) -> list[bytes]:
        """Dequeue up to ``max_lines`` lines for sending."""
        out = []
        while self.lines and len(out) < max_lines:
            out.append(self.lines.popleft())
        # Accounting is approximate for mixed initial/live queues; reset when drained.
        if not self.lines:
            self._live = self._live_bytes = 0
        else:
            self._live = max(0, self._live - len(out))
            self._live_bytes = max(0, self._live_bytes - sum(len(x) for x in out))
        return out

    def bookmark_line(self) -> bytes:
        obj = {"kind": self.rt.kind, "apiVersion": self.rt.api_version,
               "metadata": {"resourceVersion": str(max(self.api.store.current_rv, self.start_rv))}}
        return _line("BOOKMARK", json.dumps(obj, separators=(",", ":")))

    def close(self) -> None:
        self.closed = True
        self.api._watchers.discard(self)


def _line(kind: str, data: str) -> bytes:
    return b'{"type":"' + kind.encode() + b'","object":' + data.encode() + b"}\n"


def _named(info: RequestInfo, fields: tuple[FieldRequirement, ...]) -> tuple[FieldRequirement, ...]:
    """The field selector a list/watch is served with: it always selects the name it was authorized for.

    A watch of ``.../secrets/NAME?watch=true`` (or a list/watch whose ``metadata.name=`` field
    selector named the object) is authorized for NAME alone -- per-object rules (``resourceNames``,
    the Node authorizer) -- so it must stream NAME alone, initial state and replay included.
    As in Kubernetes, a field selector naming another object than the path is a bad request.
    """
    if not info.name:
        return fields
    for r in fields:
        if r.field == "metadata.name" and not (r.op == "=" and r.value == info.name):
            raise ApiError(400, "fieldSelector metadata.name doesn't match requested name")
    return fields + (FieldRequirement("metadata.name", "=", info.name),)


def _served_as(data: str, api_version: str) -> bool:
    """Whether stored JSON already starts with this ``apiVersion`` (its first top-level key, as
    objects are stored when created through this version): then it is served as it is."""
    return data.startswith('{"apiVersion":' + json.dumps(api_version, ensure_ascii=False) + ",")


def _rewrite_api_version(data: str, api_version: str) -> str:
    if _served_as(data, api_version):
        return data
    obj = json.loads(data)
    if obj.get("apiVersion") == api_version:
        return data  # stored as served (the usual case): no need to encode it again
    obj["apiVersion"] = api_version
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


class WatchHandlers:
    """Starting watches and fanning events out (a mixin of :class:`kedge.apiserver.api.API`)."""

    def _selectors(self, info: RequestInfo, rt: ResourceType) -> tuple[Any, tuple[FieldRequirement, ...]]:
        labels = parse_label_selector(info.query.get("labelSelector"))
        fields = info.field_selector
        allowed = ("metadata.name", "metadata.namespace") + rt.selectable_fields
        for r in fields:
            if r.field not in allowed:
                raise ApiError(400, f'field label not supported: {r.field}')
        return labels, fields

    def _watch(self, req: Request, info: RequestInfo, rt: ResourceType) -> Watch:
        labels, fields = self._selectors(info, rt)
        fields = _named(info, fields)
        timeout = _int_param(info.query.get("timeoutSeconds"), 0, MAX_WATCH_TIMEOUT_S) or DEFAULT_WATCH_TIMEOUT_S
        bookmarks = info.query.get("allowWatchBookmarks", "").lower() in ("1", "true")
        namespace = info.namespace if rt.namespaced and info.namespace else None
        w = Watch(self, rt, namespace, "", labels, fields, bookmarks, float(timeout))
        w.table = _wants_table(req)
        try:
            rv = parse_rv(info.query.get("resourceVersion"))
        except StoreError as exc:
            raise ApiError(400, "invalid resourceVersion") from exc
        if rv is None or rv == 0:
            w.start_rv, raws = self.store.list_raw(rt.storage_key, namespace)
            for raw in raws:
                self._offer(w, WatchEvent(0, "ADDED", rt.storage_key, "", "", raw), initial=True)
        else:
            try:
                for ev in self.store.events_since(rv, rt.storage_key):
                    if namespace is None or ev.namespace == namespace:
                        self._offer(w, ev)
            except Expired:
                msg = f"too old resource version: {rv} ({self.store.compacted_rv + 1})"
                w.push(_line("ERROR", json.dumps(status_body(410, "Expired", msg))))
                w.closed = True
                return w
            # A resourceVersion from the future (none was handed out) means "from now on".
            w.start_rv = rv if rv <= self.store.latest_rv else self.store.current_rv
        self._watchers.add(w)
        return w

    def _dispatch(self, ev: WatchEvent) -> None:
        cache: dict[str, Any] = {}
        for w in list(self._watchers):
            if w.rt.storage_key != ev.resource or ev.rv <= w.start_rv:
                continue
            if w.namespace is not None and ev.namespace != w.namespace:
                continue
            if w.index_value is not None and w.index_value != ev.index and w.index_value != ev.prev_index:
                continue
            try:
                self._offer(w, ev, cache=cache)
            except Exception:  # noqa: BLE001 - one watch's failure ends that watch, never the others' events
                log.exception("watch of %s failed on %s %s/%s; ending it", w.rt.resource, ev.type, ev.namespace,
                              ev.name)
                w.overflowed = True
                w.lines.clear()
                w.notify()

    def _offer(self, w: Watch, ev: WatchEvent, *, initial: bool = False,
               cache: dict[str, Any] | None = None) -> None:
        """Queue ``ev`` for ``w`` if it passes the watch's selectors (``cache`` shares decoding per event)."""
        cache = {} if cache is None else cache
        needs_filter = not w.labels.empty or bool(w.fields)
        data = ev.data
        if not needs_filter:
            if w.table:
                data = self._table(w.rt, [json.loads(data)], str(ev.rv), None).body.decode()
            elif w.rt.crd:
                data = _rewrite_api_version(data, w.rt.api_version)
            w.push(_line(ev.type, data), initial=initial)
            return
        if "obj" not in cache:
            cache["obj"] = ev.obj()
        obj = cache["obj"]
        now_match = w.labels.matches(_meta(obj).get("labels")) and fields_match(obj, w.fields)
        was_match = None
        if ev.prev is not None and ev.type == "MODIFIED":
            if "prev" not in cache:
                cache["prev"] = json.loads(ev.prev)
            prev = cache["prev"]
            was_match = w.labels.matches(_meta(prev).get("labels")) and fields_match(prev, w.fields)
        kind = ev.type
        if kind == "MODIFIED" and was_match is not None:
            if now_match and not was_match:
                kind = "ADDED"
            elif was_match and not now_match:
                # As Kubernetes' watch cache: the object as it was (the last state the watcher was
                # entitled to see), at this event's resourceVersion.
                kind, now_match = "DELETED", True
                obj = copy.deepcopy(cache["prev"])
                _meta(obj)["resourceVersion"] = str(ev.rv)
                data = json.dumps(obj, separators=(",", ":"))
        if not now_match:
            return
        if w.table:
            data = self._table(w.rt, [obj], str(ev.rv), None).body.decode()
        elif w.rt.crd:
            data = _rewrite_api_version(data, w.rt.api_version)
        w.push(_line(kind, data), initial=initial)
