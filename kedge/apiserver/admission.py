"""Admission: NodeRestriction as Kubernetes', and ServiceAccount admission for mirror pods."""

from __future__ import annotations

from typing import Any

from kedge.apiserver.model import User, _meta
from kedge.apiserver.resources import ResourceType
from kedge.apiserver.status import ApiError, not_found
from kedge.authz import podrefs
from kedge.authz.node import admit_node_request, node_identity


def _admit_mirror_pod(pod: dict[str, Any]) -> None:
    """Kubernetes' ServiceAccount admission for mirror pods, whoever creates them.

    A mirror pod stands for a static pod the node runs from its own files: it gets no
    service account (none is defaulted) and may name none, nor any secret, nor a projected
    service-account token -- the API server would otherwise hand the node credentials
    through it.
    """
    refs = podrefs.pod_refs(pod)
    name = str(_meta(pod).get("name", ""))
    if podrefs.service_account_name(pod):
        raise ApiError(403, f'pods "{name}" is forbidden: a mirror pod may not reference service accounts',
                       details={"name": name, "kind": "pods"})
    if refs.secrets:
        raise ApiError(403, f'pods "{name}" is forbidden: a mirror pod may not reference secrets',
                       details={"name": name, "kind": "pods"})
    for volume in (pod.get("spec") or {}).get("volumes") or ():
        projected = volume.get("projected") if isinstance(volume, dict) else None
        sources = projected.get("sources") if isinstance(projected, dict) else None
        if isinstance(sources, list) and any(isinstance(s, dict) and "serviceAccountToken" in s for s in sources):
            raise ApiError(403, f'pods "{name}" is forbidden: a mirror pod may not use ServiceAccountToken '
                                "volume projections", details={"name": name, "kind": "pods"})


class Admission:
    """Admission plugins (a mixin of :class:`kedge.apiserver.api.API`)."""

    def _admit(self, user: User, op: str, rt: ResourceType, sub: str, name: str,
               new: dict[str, Any] | None, old: dict[str, Any] | None, *, namespace: str | None = None,
               bound_pod: dict[str, Any] | None = None) -> None:
        """NodeRestriction, fed what Kubernetes' plugin reads from its informers.

        ``old`` is the stored object (for an eviction, the pod evicted); ``bound_pod`` the
        pod a TokenRequest binds to. A mirror pod's creation needs the node's own Node
        (its uid must match the pod's owner reference).
        """
        is_node, node_name = node_identity(user.name, user.groups)
        if not is_node:
            self._admit_service_account(op, rt, sub, new)
            return
        if namespace is None:
            namespace = str(_meta(new if new is not None else (old or {})).get("namespace") or "")
        node = None
        if node_name and rt.storage_key == "/pods" and op == "CREATE" and not sub:
            node = self.store.get("/nodes", "", node_name)
        d = admit_node_request(user.name, user.groups, op, rt.storage_key, sub, name, new, old,
                               namespace=namespace, node=node, bound_pod=bound_pod)
        if not d.allowed and d.not_found is not None:
            raise not_found(d.not_found[0], d.not_found[1])
        if not d.allowed:
            raise ApiError(403, f'{rt.resource} "{name}" is forbidden: {d.reason}',
                           details={"name": name, "group": rt.group, "kind": rt.resource})
        self._admit_service_account(op, rt, sub, new)

    @staticmethod
    def _admit_service_account(op: str, rt: ResourceType, sub: str, new: dict[str, Any] | None) -> None:
        """Kubernetes' ServiceAccount admission (validating, after NodeRestriction): mirror pods."""
        if op == "CREATE" and rt.storage_key == "/pods" and not sub and new is not None and \
                podrefs.is_mirror_pod(new):
            _admit_mirror_pod(new)
