"""Pure decisions of the edgecontroller: what a node should hold, and what to send it.

No I/O, no clock. The I/O shell (:mod:`.controller`) lists objects *as the node*
(impersonation, so the Node authorizer decides), feeds them here, and sends the
resulting pushes as ordinary acked messages.

Keys are KubeEdge resource strings ``<namespace>/<type>/<name>``; cluster-scoped
objects (the Node) use namespace ``default``, as the edge's metamanager expects.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterable, Mapping

from kedge.authz import podrefs
from kedge.store import rv as rv_text

POD, CONFIGMAP, SECRET, NODE = "pod", "configmap", "secret", "node"


@dataclasses.dataclass(frozen=True)
class Push:
    """One message to the edge: ``operation`` on ``key`` at ``rv`` (``obj`` None for deletes)."""

    operation: str  # "insert" | "update" | "delete"
    key: str
    rv: str
    obj: dict[str, Any] | None = None


def key(kind: str, namespace: str | None, name: str) -> str:
    return f"{namespace or 'default'}/{kind}/{name}"


def object_key(kind: str, obj: Mapping[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    return key(kind, meta.get("namespace"), str(meta.get("name", "")))


def object_rv(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("resourceVersion", ""))


def _rv_int(rv: str | None) -> int:
    """An rv as an int (-1 when absent or not a decimal: such a version never wins)."""
    number = rv_text.parse(rv)
    return -1 if number is None else number


def referenced(pod: Mapping[str, Any]) -> set[tuple[str, str, str]]:
    """The (type, namespace, name) of every configmap and secret a pod's containers consume.

    Found by :func:`kedge.authz.podrefs.graph_refs`, the walker the Node authorizer's graph
    uses: volumes (configMap, secret, projected sources), env ``valueFrom`` and ``envFrom``
    of every container kind, and imagePullSecrets -- nothing for a mirror pod, whose
    references the authorizer never follows. Secrets only a volume plugin reads (CSI
    node-publish, flexVolume, ...) stay in the cloud: no edge runtime mounts those.
    """
    meta = pod.get("metadata")
    ns = meta.get("namespace") if isinstance(meta, Mapping) else None
    ns = ns if isinstance(ns, str) and ns else "default"
    refs = podrefs.graph_refs(pod)
    return {(CONFIGMAP, ns, n) for n in refs.configmaps} | {(SECRET, ns, n) for n in refs.secrets}


def desired_state(pods: Iterable[Mapping[str, Any]],
                  objects: Mapping[tuple[str, str, str], Mapping[str, Any] | None]) -> dict[str, dict[str, Any]]:
    """key -> object for everything the node should hold: its pods and what they reference.

    ``objects`` maps references to the object fetched as the node (None: missing or
    refused -- then the node simply does not get it).
    """
    out: dict[str, dict[str, Any]] = {}
    for pod in pods:
        out[object_key(POD, pod)] = dict(pod)
        for ref in referenced(pod):
            obj = objects.get(ref)
            if obj is not None:
                out[key(*ref)] = dict(obj)
    return out


def resync(desired: Mapping[str, Mapping[str, Any]], inventory: Mapping[str, str],
           tombstones: Mapping[str, str]) -> list[Push]:
    """What to send a node that reported ``inventory`` (live) and ``tombstones`` (deleted).

    - key unknown to the edge, or the cloud's rv is newer than the edge's (live or
      tombstone) -> insert/update with the cloud's object;
    - the edge holds a key the node should no longer have -> delete at the rv the edge
      reported (if something newer reached it meanwhile, the edge ignores it as stale).
    """
    pushes: list[Push] = []
    for k in sorted(desired):
        obj = desired[k]
        rv = object_rv(obj)
        have = inventory.get(k)
        gone = tombstones.get(k)
        if have is None and gone is None:
            pushes.append(Push("insert", k, rv, dict(obj)))
        elif _rv_int(rv) > max(_rv_int(have), _rv_int(gone)):
            pushes.append(Push("update" if have is not None else "insert", k, rv, dict(obj)))
        elif have is None and gone == rv and k.split("/", 2)[1:2] in ([CONFIGMAP], [SECRET]):
            # Released earlier at this very version and needed again: the edge lets it back in.
            pushes.append(Push("insert", k, rv, dict(obj)))
    for k in sorted(set(inventory) - set(desired)):
        if k.split("/", 2)[1:2] == [NODE]:
            continue  # the node's own object is managed by the node, never deleted by resync
        pushes.append(Push("delete", k, inventory[k], None))
    return pushes


def changes(before: Mapping[str, Mapping[str, Any]], after: Mapping[str, Mapping[str, Any]]) -> list[Push]:
    """What to send when the node's desired state moves from ``before`` to ``after``."""
    pushes: list[Push] = []
    for k in sorted(after):
        new = after[k]
        old = before.get(k)
        if old is None:
            pushes.append(Push("insert", k, object_rv(new), dict(new)))
        elif _rv_int(object_rv(new)) > _rv_int(object_rv(old)):
            pushes.append(Push("update", k, object_rv(new), dict(new)))
    for k in sorted(set(before) - set(after)):
        pushes.append(Push("delete", k, object_rv(before[k]), None))
    return pushes


# What a status write changes besides ``status`` (a real API server records its manager and time).
_STATUS_NOISE = ("resourceVersion", "managedFields")


def _for_node(pod: Mapping[str, Any]) -> dict[str, Any]:
    """A pod as far as its node acts on it: everything but the status the node reports itself."""
    out = {k: v for k, v in pod.items() if k != "status"}
    meta = out.get("metadata")
    if isinstance(meta, dict):
        out["metadata"] = {k: v for k, v in meta.items() if k not in _STATUS_NOISE}
    return out


def delta(key: str, want: Mapping[str, Any] | None, held: Mapping[str, Any] | None,
          deleted_rv: str | None = None, *, defer_status: bool = False) -> Push | None:
    """What to send for one key, given what the node should hold (``want``) and what it acked (``held``).

    The per-key form of :func:`changes`, for a desired state kept current event by event.
    With ``defer_status``, a pod update that changes nothing but its status (the node's
    own report coming back, with the resourceVersion that write produced) is not sent:
    the edge acts on the spec and metadata only, and each echo costs it a durable write
    and a pod sync, so the event path leaves it to the periodic pass (after which the
    edge holds the newest rv again and a reconnect has nothing to resend).
    A deletion goes out at the rv the object was deleted at when that is known and newer
    (the edge then keeps a tombstone no older version can pass), else at the rv the edge
    holds (delete-what-you-hold, as in :func:`resync`).
    """
    if want is not None:
        rv = object_rv(want)
        if held is None:
            return Push("insert", key, rv, dict(want))
        if _rv_int(rv) > _rv_int(object_rv(held)):
            if (defer_status and key.split("/", 2)[1:2] == [POD] and "spec" in held
                    and _for_node(want) == _for_node(held)):
                return None  # only the status the node itself reported changed: nothing for it to act on
            return Push("update", key, rv, dict(want))
        return None
    if held is None:
        return None
    rv = object_rv(held)
    if deleted_rv is not None and _rv_int(deleted_rv) > _rv_int(rv):
        rv = deleted_rv
    return Push("delete", key, rv, None)


def lost_nodes(nodes: Iterable[Mapping[str, Any]], *, now: float, grace_s: float) -> list[str]:
    """kedge edge nodes that claim Ready=True but whose heartbeat is older than ``grace_s``.

    Only nodes run by kedge (``nodeInfo.kubeletVersion`` ``kedge-*``) are judged: next to a
    real cluster's kubelets, their own node lifecycle controller is in charge.
    """
    import datetime as _dt

    out = []
    for node in nodes:
        status = node.get("status") or {}
        if not str((status.get("nodeInfo") or {}).get("kubeletVersion", "")).startswith("kedge-"):
            continue
        ready = next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), None)
        if not ready or ready.get("status") != "True":
            continue
        try:
            beat = _dt.datetime.strptime(ready.get("lastHeartbeatTime", ""), "%Y-%m-%dT%H:%M:%SZ")
        except ValueError:
            continue
        if now - beat.replace(tzinfo=_dt.timezone.utc).timestamp() > grace_s:
            out.append(str((node.get("metadata") or {}).get("name", "")))
    return sorted(n for n in out if n)
