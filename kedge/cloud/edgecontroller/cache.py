"""One node's desired state, kept current by watch events (informer style). Pure: no I/O, no clock.

The I/O shell (:mod:`.controller`) lists the node's pods once *as the node*, then feeds
every watch event to :meth:`NodeCache.apply`; the configmaps and secrets the pods
reference are fetched one by one as the node and handed in with :meth:`NodeCache.set_ref`.
Each call returns the keys (``<namespace>/<type>/<name>``) whose desired object may have
changed, so the shell sends just those -- no re-list per event.

Rules:

* **newest resourceVersion wins** per pod: an event or list item whose rv is not newer
  than what the cache holds changes nothing (a watch re-started from an older rv, or a
  safety-net re-list racing the watch, replays old versions);
* **tombstones**: a deleted pod leaves its deletion rv behind, so a late ADDED/MODIFIED
  of an older version cannot bring it back; a re-created pod (higher rv) is taken;
* **410 Gone**: an ``ERROR`` event with code 410 (or any ERROR) means the watch cannot
  resume from :attr:`NodeCache.rv`: :attr:`NodeCache.needs_list` is set and the shell
  re-lists; :meth:`NodeCache.replace` then drops every cached pod that the list (taken at
  rv ``R``) no longer has, unless the cache saw a version newer than ``R``;
* **a list settles everything up to its rv**: once a list taken at ``R`` is applied,
  events at or below ``R`` (a watch lagging behind a safety-net list) and lists taken
  before ``R`` change nothing -- they could only bring back what ``R`` already settled;
* **references follow pods**: a configmap/secret is desired while at least one cached pod
  references it and it was readable by the node (:meth:`set_ref` with an object; ``None``
  means missing or refused to the node, so the node does not get it).
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

from kedge.cloud.edgecontroller import plan
from kedge.store import rv as rv_text

Ref = tuple[str, str, str]  # (type, namespace, name), as plan.referenced() returns
GONE = 410


def _rv(value: Any) -> int:
    """An rv as an int (-1 when absent or not a decimal: such a version never wins)."""
    number = rv_text.parse(value)
    return -1 if number is None else number


def _meta_rv(obj: Mapping[str, Any]) -> int:
    meta = obj.get("metadata")
    return _rv(meta.get("resourceVersion")) if isinstance(meta, dict) else -1


def _is_pod(obj: Any) -> bool:
    if not isinstance(obj, dict):
        return False
    meta = obj.get("metadata")
    return isinstance(meta, dict) and isinstance(meta.get("name"), str) and bool(meta["name"])


class NodeCache:
    """The pods bound to one node and the configmaps/secrets they reference."""

    def __init__(self, *, max_tombstones: int = 10_000) -> None:
        self.rv = ""  # where a watch resumes; "" until a list was applied
        self.needs_list = True
        self.max_tombstones = max_tombstones
        self._pods: dict[str, dict[str, Any]] = {}
        self._pod_refs: dict[str, frozenset[Ref]] = {}
        self._users: dict[Ref, set[str]] = {}  # ref -> pod keys referencing it
        self._refs: dict[Ref, dict[str, Any] | None] = {}  # fetched refs; absent: not fetched yet
        self._gone: dict[str, int] = {}  # pod key -> rv of its deletion
        self._listed = -1  # rv of the newest list applied

    # -- pods ---------------------------------------------------------------------------

    def replace(self, pods: Iterable[Mapping[str, Any]], rv: str) -> set[str]:
        """Apply a list of the node's pods taken at ``rv``; return the touched keys."""
        list_rv = _rv(rv)
        if list_rv < self._listed:
            return set()  # taken before a list already applied: it could only undo what that one settled
        self._listed = list_rv
        touched: set[str] = set()
        listed: set[str] = set()
        for pod in pods:
            if not _is_pod(pod):
                continue
            listed.add(plan.object_key(plan.POD, pod))
            touched |= self._upsert(pod)
        for key in [k for k in self._pods if k not in listed]:
            if _meta_rv(self._pods[key]) <= list_rv:  # newer than the list: seen by the watch since
                touched |= self._remove(key, list_rv)
        # A tombstone at or below the list rv guards against nothing the list did not settle.
        self._gone = {k: v for k, v in self._gone.items() if v > list_rv}
        if list_rv > _rv(self.rv):
            self.rv = str(list_rv)
        self.needs_list = False
        return touched

    def apply(self, event: Mapping[str, Any]) -> set[str]:
        """Apply one watch event (``{"type": ..., "object": ...}``); return the touched keys."""
        kind = event.get("type")
        obj = event.get("object")
        if kind == "ERROR":
            # 410 Gone (the rv fell out of the API server's window) or any other watch
            # error: the stream cannot be resumed where it stopped -- list again.
            self.needs_list = True
            return set()
        if not isinstance(obj, dict):
            return set()
        obj_rv = _meta_rv(obj)
        if obj_rv > _rv(self.rv):
            self.rv = str(obj_rv)
        if kind == "BOOKMARK" or not _is_pod(obj) or obj_rv <= self._listed:
            return set()
        if kind in ("ADDED", "MODIFIED"):
            return self._upsert(obj)
        if kind == "DELETED":
            key = plan.object_key(plan.POD, obj)
            held = self._pods.get(key)
            if held is not None and _meta_rv(held) > obj_rv:
                return set()  # the cache already has a newer version (a re-created pod)
            return self._remove(key, obj_rv)
        return set()

    def _upsert(self, pod: Mapping[str, Any]) -> set[str]:
        key = plan.object_key(plan.POD, pod)
        rv = _meta_rv(pod)
        held = self._pods.get(key)
        if held is not None and _meta_rv(held) >= rv:
            return set()
        if key in self._gone:
            if self._gone[key] >= rv:
                return set()  # an older version of a deleted pod: no resurrection
            del self._gone[key]
        obj = dict(pod)
        obj.setdefault("kind", "Pod")
        obj.setdefault("apiVersion", "v1")
        self._pods[key] = obj
        return {key} | self._set_refs(key, frozenset(plan.referenced(obj)))

    def _remove(self, key: str, rv: int) -> set[str]:
        touched = {key} if self._pods.pop(key, None) is not None else set()
        if rv > self._gone.get(key, -1):
            self._gone[key] = rv
            if len(self._gone) > self.max_tombstones:
                del self._gone[min(self._gone, key=lambda k: self._gone[k])]
        return touched | self._set_refs(key, frozenset())

    def _set_refs(self, key: str, refs: frozenset[Ref]) -> set[str]:
        """Record that pod ``key`` references ``refs``; return the ref keys whose desiredness changed."""
        before = self._pod_refs.get(key, frozenset())
        if refs == before:
            return set()
        touched: set[str] = set()
        for ref in before - refs:
            users = self._users.get(ref)
            if users is None:
                continue
            users.discard(key)
            if not users:
                del self._users[ref]
                if self._refs.pop(ref, None) is not None:
                    touched.add(plan.key(*ref))
        for ref in refs - before:
            users = self._users.setdefault(ref, set())
            if not users and self._refs.get(ref) is not None:
                touched.add(plan.key(*ref))
            users.add(key)
        if refs:
            self._pod_refs[key] = refs
        else:
            self._pod_refs.pop(key, None)
        return touched

    # -- referenced configmaps and secrets ------------------------------------------------------

    def referenced(self) -> set[Ref]:
        """Every ref some cached pod uses."""
        return set(self._users)

    def fetched(self, ref: Ref) -> bool:
        """Whether ``ref`` was read since some cached pod started using it."""
        return ref in self._refs

    def missing_refs(self) -> set[Ref]:
        """Refs some cached pod uses that were not fetched yet."""
        return {ref for ref in self._users if ref not in self._refs}

    def set_ref(self, ref: Ref, obj: Mapping[str, Any] | None) -> set[str]:
        """The ref as the node may read it now (``None``: missing or refused); return touched keys.

        Ignored when no cached pod uses ``ref`` any more, or when ``obj`` is older than
        what the cache holds (two reads raced).
        """
        if ref not in self._users:
            return set()
        old = self._refs.get(ref)
        if obj is not None and old is not None and _meta_rv(old) >= _meta_rv(obj):
            return set()
        fetched_before = ref in self._refs
        self._refs[ref] = dict(obj) if obj is not None else None
        if old is None and obj is None and fetched_before:
            return set()
        return {plan.key(*ref)}

    # -- reading ------------------------------------------------------------------------------

    def get(self, key: str) -> dict[str, Any] | None:
        """The object the node should hold under ``key`` (None: it should hold nothing)."""
        pod = self._pods.get(key)
        if pod is not None:
            return pod
        parts = key.split("/", 2)
        if len(parts) != 3 or parts[1] == plan.POD:
            return None
        ref = (parts[1], parts[0], parts[2])
        return self._refs.get(ref) if ref in self._users else None

    def refs_of(self, key: str) -> frozenset[Ref]:
        """The refs of cached pod ``key``."""
        return self._pod_refs.get(key, frozenset())

    def deleted_rv(self, key: str) -> str | None:
        """The rv at which pod ``key`` was seen deleted, if the cache remembers it."""
        rv = self._gone.get(key)
        return str(rv) if rv is not None and rv > 0 else None

    def desired(self) -> dict[str, dict[str, Any]]:
        """key -> object for everything the node should hold (same as plan.desired_state)."""
        out = dict(self._pods)
        for ref, users in self._users.items():
            obj = self._refs.get(ref)
            if users and obj is not None:
                out[plan.key(*ref)] = obj
        return out

    def pod_count(self) -> int:
        return len(self._pods)
