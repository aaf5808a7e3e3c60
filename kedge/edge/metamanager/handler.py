"""MetaManager: applies what the cloud pushes to the edge store, acks after the durable write.

Cloud -> edge: object changes
=============================

A message with ``route.group == "resource"`` and

* ``route.operation`` -- ``insert``, ``update``, ``patch`` or ``delete``;
* ``route.resource`` -- ``<namespace>/<type>/<name>`` (:class:`kedge.protocol.message.Resource`);
  ``type`` one of :data:`KNOWN_TYPES`. Cluster-scoped types (:data:`CLUSTER_SCOPED_TYPES`,
  i.e. ``node``) carry no ``metadata.namespace``; the cloud puts ``default`` in the
  resource string for them;
* ``header.resourceversion`` -- the object's resourceVersion, a canonical decimal
  (``1..2**63-1``). It may be omitted when ``content.metadata.resourceVersion`` holds
  it; when both are present they must be equal (``resource_version_mismatch``).
  A delete needs it in the header (or in the last object it carries);
* ``content`` -- the **full** Kubernetes object for insert/update/patch (``patch``
  means "this is the object after the patch": at-least-once, out-of-order delivery
  cannot safely apply a delta to an unknown base); for ``delete`` ``null`` or the
  last object. ``metadata.name`` (and ``metadata.namespace`` for namespaced types)
  must equal the resource string's, else ``resource_mismatch``.

The edge decides newest-resourceVersion-wins per key
(:mod:`kedge.edge.metamanager.decide`), writes durably (SQLite WAL,
``synchronous=FULL``, one transaction) and only then answers with a ``response``
whose ``parent_msg_id`` is the message's id and whose content is::

    {"ack": "<rv of the message>", "result": "applied" | "stale" | "duplicate",
     "stored": "<rv the edge now holds for the key>"}

All three results mean "delivered, stop resending". ``stale`` tells the cloud the edge
holds something newer (``stored``). A refused message gets an ``error`` reply with
``{"code": ...}`` only: ``bad_resource``, ``bad_resource_version``,
``resource_version_mismatch``, ``resource_mismatch``, ``invalid_object``,
``unsupported_resource_type``, ``unsupported_operation``, ``unsupported_group``;
local failures are ``internal_error`` (the cloud resends later).

A delete whose rv *equals* the rv of the live object the edge holds is applied (the
delete-what-you-reported rule used by resync below); a tombstone keeps its rv so a
stale insert can never resurrect a deleted object.

``query`` on ``<namespace>/<type>/<name>`` answers ``{"object": <obj or null>,
"rv": "<rv>" | null, "deleted": bool}`` from the store (edged reads the store
directly; this is for completeness and diagnosis). The list form ``<ns>/<type>`` is
``not_supported``: a list can exceed a frame.

Edge -> cloud: inventory on connect (resync)
============================================

Right after every (re)connect the edge sends its inventory so that any cloudcore
replica -- with no memory of this node -- can send exactly the difference. It is one
or more ``query`` messages (:meth:`MetaManager.inventory_messages`)::

    route:   {"source": "metamanager", "destination": "edgecontroller",
              "group": "resource", "operation": "query",
              "resource": "<node>/inventory/<node>"}
    content: {"snapshot": "<16 hex, same on every page>", "page": 1, "pages": N,
              "inventory":  {"<ns>/<type>/<name>": "<rv>", ...},   live objects
              "tombstones": {"<ns>/<type>/<name>": "<rv>", ...}}   deletions the edge remembers

The resource string is a label (a node name may not be a valid namespace); the cloud
takes the node from the tunnel's certificate, never from the message. Each page holds
at most :data:`INVENTORY_PAGE_ITEMS` entries (inventory + tombstones), far below the
frame and ``max_object_keys`` bounds. The pages come from one read of the store. The
cloud answers each page (any ``response``; the edge only waits for it to pace itself)
and, once it holds all pages of a snapshot, for every object the node should have:

* key absent from both maps, or cloud rv > the edge's rv (live or tombstone) ->
  send ``insert``/``update`` with the cloud's object (a tombstone with a higher rv
  means the object was re-created);
* otherwise nothing (the edge holds it, or holds a newer deletion);

and for every key in ``inventory`` that the node should no longer have -> send
``delete`` with ``header.resourceversion`` = the rv the edge reported. If a newer
version reached the edge in between, that delete is ``stale`` and ignored; keys in
``tombstones`` need nothing. Every one of these is an ordinary acked message, so
resends and a cloudcore crash mid-resync are covered by the normal at-least-once
rules. A snapshot whose pages do not all arrive (the tunnel dropped) is discarded;
the next connect sends a new one.

The store also offers :meth:`MetaStore.delete_missing` for a cloud that prefers to
answer with "the full key set of type T as of list rv R": live keys of T not in the
set with ``rv <= R`` are tombstoned locally.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable
from typing import Any, Protocol

from kedge.edge.metamanager.decide import WRITE_OPERATIONS, UnsupportedOperation
from kedge.edge.metamanager.store import ApplyResult, InvalidObject, MetaStore
from kedge.errors import PeerError, ProtocolError
from kedge.limits import DEFAULT, Limits
from kedge.protocol import message as m

__all__ = [
    "CLUSTER_SCOPED_TYPES",
    "GROUP",
    "INVENTORY_PAGE_ITEMS",
    "KNOWN_TYPES",
    "MetaManager",
    "ResourceMismatch",
    "inventory_pages",
]

GROUP = "resource"
KNOWN_TYPES: frozenset[str] = frozenset(
    {"pod", "configmap", "secret", "serviceaccounttoken", "node", "device", "devicemodel"}
)
CLUSTER_SCOPED_TYPES: frozenset[str] = frozenset({"node"})
INVENTORY_PAGE_ITEMS = 1000
INVENTORY_RESOURCE = "{node}/inventory/{node}"


class ResourceMismatch(ProtocolError):
    """The object's metadata names a different object than ``route.resource``."""

    code = "resource_mismatch"


class _Requester(Protocol):
    async def request(self, msg: m.Message, *, timeout: float = ...) -> m.Message: ...


def _refuse(detail: str, code: str) -> ProtocolError:
    return ProtocolError(detail, code=code)


def inventory_pages(
    node: str,
    live: dict[str, str],
    tombstones: dict[str, str],
    *,
    now_ms: int,
    snapshot: str,
    page_items: int = INVENTORY_PAGE_ITEMS,
) -> list[m.Message]:
    """The resync messages for one inventory snapshot (pure; see the module docstring)."""
    if page_items < 1:
        raise ValueError("page_items must be positive")
    entries = [(k, v, False) for k, v in sorted(live.items())] + [(k, v, True) for k, v in sorted(tombstones.items())]
    chunks = [entries[i:i + page_items] for i in range(0, len(entries), page_items)] or [[]]
    out = []
    for index, chunk in enumerate(chunks, start=1):
        content = {
            "snapshot": snapshot,
            "page": index,
            "pages": len(chunks),
            "inventory": {k: v for k, v, dead in chunk if not dead},
            "tombstones": {k: v for k, v, dead in chunk if dead},
        }
        out.append(m.Message.new(
            source="metamanager", destination="edgecontroller", group=GROUP, operation=m.QUERY,
            resource=INVENTORY_RESOURCE.format(node=node), content=content, now_ms=now_ms,
        ))
    return out


class MetaManager:
    """The EdgeHub handler for group ``resource``: validate, apply durably, ack."""

    def __init__(
        self,
        store: MetaStore,
        *,
        node: str,
        limits: Limits = DEFAULT,
        types: frozenset[str] = KNOWN_TYPES,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.node = node
        self.limits = limits
        self.types = types
        self.clock = clock

    # -- cloud -> edge -----------------------------------------------------------

    async def handle(self, msg: m.Message) -> dict[str, Any]:
        """EdgeHub handler: the returned dict is the response; a PeerError becomes its code."""
        op, key, rv, obj = self._validate(msg)
        return await asyncio.to_thread(self._execute, op, key, rv, obj)

    def process(self, msg: m.Message) -> dict[str, Any]:
        """:meth:`handle` without the thread hop (fuzzing, synchronous callers)."""
        return self._execute(*self._validate(msg))

    def _validate(self, msg: m.Message) -> tuple[str, str, str, dict[str, Any] | None]:
        if msg.route.group != GROUP:
            raise _refuse("metamanager serves group 'resource'", "unsupported_group")
        op = msg.route.operation
        if op not in WRITE_OPERATIONS and op != m.QUERY:
            raise UnsupportedOperation("metamanager takes insert/update/patch/delete/query")
        res = m.Resource.parse(msg.route.resource, self.limits)
        if res.type not in self.types:
            raise _refuse("resource type not kept on the edge", "unsupported_resource_type")
        if res.is_list:
            if op == m.QUERY:
                raise PeerError("list queries are not served", code="not_supported")
            raise _refuse("a change needs <namespace>/<type>/<name>", "bad_resource")
        key = str(res)
        if op == m.QUERY:
            return op, key, "", None
        content = msg.content
        if op == m.DELETE and content is None:
            meta: dict[str, Any] | None = None
        else:
            if not isinstance(content, dict):
                raise InvalidObject("content must be the object")
            meta = content.get("metadata")
            if not isinstance(meta, dict):
                raise InvalidObject("object needs metadata")
            self._check_names(res, meta)
        rv = msg.header.resourceversion
        obj_rv = meta.get("resourceVersion") if meta is not None else None
        if obj_rv is not None and obj_rv != "":
            if rv and obj_rv != rv:
                raise _refuse("header and object resourceVersion differ", "resource_version_mismatch")
            if not isinstance(obj_rv, str):
                raise _refuse("metadata.resourceVersion must be a string", "bad_resource_version")
            rv = obj_rv
        if not rv:
            raise _refuse("resourceversion missing", "bad_resource_version")
        return op, key, rv, (None if op == m.DELETE else content)

    def _check_names(self, res: m.Resource, meta: dict[str, Any]) -> None:
        if meta.get("name") != res.name:
            raise ResourceMismatch("metadata.name differs from the resource")
        namespace = meta.get("namespace")
        if res.type in CLUSTER_SCOPED_TYPES:
            if namespace not in (None, ""):
                raise ResourceMismatch("a cluster-scoped object has no namespace")
        elif namespace != res.namespace:
            raise ResourceMismatch("metadata.namespace differs from the resource")

    def _execute(self, op: str, key: str, rv: str, obj: dict[str, Any] | None) -> dict[str, Any]:
        if op == m.QUERY:
            record = self.store.record(key)
            return {
                "object": self.store.get(key) if record is not None else None,
                "rv": record[0] if record is not None else None,
                "deleted": bool(record[1]) if record is not None else False,
            }
        result: ApplyResult = self.store.apply(key, op, rv, obj, now=self.clock())
        return {"ack": rv, "result": result.result, "stored": result.stored_rv}

    # -- edge -> cloud -----------------------------------------------------------

    def inventory_messages(self, *, now_ms: int | None = None, page_items: int = INVENTORY_PAGE_ITEMS) -> list[m.Message]:
        """The resync query message(s) to send right after connecting (blocking: reads SQLite)."""
        live, dead = self.store.snapshot()
        return inventory_pages(
            self.node, live, dead,
            now_ms=int(self.clock() * 1000) if now_ms is None else now_ms,
            snapshot=secrets.token_hex(8), page_items=page_items,
        )

    async def send_inventory(self, hub: _Requester, *, timeout: float = 10.0) -> list[m.Message]:
        """Send every inventory page through ``hub`` (an EdgeHub), one at a time; return the replies."""
        pages = await asyncio.to_thread(self.inventory_messages)
        return [await hub.request(page, timeout=timeout) for page in pages]
