"""Admission: NodeRestriction as Kubernetes', ServiceAccount admission for mirror pods, PodSecurity."""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import json
from collections.abc import Iterator
from typing import Any

from kedge.apiserver import podsecurity
from kedge.apiserver.model import User, _meta
from kedge.apiserver.resources import ResourceType
from kedge.apiserver.status import ApiError, invalid, not_found
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


@dataclasses.dataclass
class AdmissionNotes:
    """What admission adds to a request's answer: warnings for the client, audit annotations."""

    warnings: list[str] = dataclasses.field(default_factory=list)
    annotations: dict[str, str] = dataclasses.field(default_factory=dict)


_NOTES: contextvars.ContextVar[AdmissionNotes | None] = contextvars.ContextVar("kedge_admission_notes",
                                                                              default=None)


@contextlib.contextmanager
def admission_notes() -> Iterator[AdmissionNotes]:
    """Collect the notes admission takes while one request is served (the API's ``_handle``)."""
    notes = AdmissionNotes()
    token = _NOTES.set(notes)
    try:
        yield notes
    finally:
        _NOTES.reset(token)


def _note(decision: podsecurity.Decision) -> None:
    notes = _NOTES.get()
    if notes is not None:
        notes.warnings.extend(decision.warnings)
        notes.annotations.update(decision.audit_annotations)


class Admission:
    """Admission plugins (a mixin of :class:`kedge.apiserver.api.API`)."""

    # The cluster's default Pod Security policy, for namespaces without pod-security labels
    # (`kedge init --pod-security`; the API server sets it from the cloud config).
    pod_security_defaults: podsecurity.Policy = podsecurity.default_policy(podsecurity.BASELINE)

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
            self._admit_pod_security(op, rt, sub, name, new, old)
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
        self._admit_pod_security(op, rt, sub, name, new, old)

    def _admit_pod_security(self, op: str, rt: ResourceType, sub: str, name: str, new: dict[str, Any] | None,
                            old: dict[str, Any] | None) -> None:
        """Kubernetes' PodSecurity (validating, after NodeRestriction and ServiceAccount).

        Pods, mirror pods included, on create and on updates that change what runs; the
        namespace's labels (or the cluster default) say the levels. Namespaces: their
        pod-security labels must be readable, and a stricter enforce level warns about the
        pods already there. No user, namespace or runtime class is exempt.
        """
        if new is None or op not in ("CREATE", "UPDATE"):
            return
        if rt.storage_key == "/pods" and sub not in podsecurity.IGNORED_POD_SUBRESOURCES:
            if op == "UPDATE" and old is not None and not podsecurity.is_significant_pod_update(new, old):
                return
            namespace = str(_meta(new).get("namespace") or "")
            ns = self.store.get("/namespaces", "", namespace) if namespace else None
            policy, errors = podsecurity.policy_to_evaluate(_labels(ns), self.pod_security_defaults)
            decision = podsecurity.decide_pod(policy, errors, new.get("metadata"), new.get("spec"), name=name)
            _note(decision)
            if not decision.allowed:
                raise ApiError(403, decision.message, details={"name": name, "kind": "pods"})
        elif rt.storage_key == "/namespaces" and not sub:
            def pods() -> list[dict[str, Any]]:
                return [json.loads(raw) for raw in self.store.list_raw("/pods", name)[1]]

            decision = podsecurity.decide_namespace(op, name, _labels(new), _labels(old), self.pod_security_defaults,
                                                    pods)
            _note(decision)
            if not decision.allowed:
                raise invalid("Namespace", name, decision.message)

    @staticmethod
    def _admit_service_account(op: str, rt: ResourceType, sub: str, new: dict[str, Any] | None) -> None:
        """Kubernetes' ServiceAccount admission (validating, after NodeRestriction): mirror pods."""
        if op == "CREATE" and rt.storage_key == "/pods" and not sub and new is not None and \
                podrefs.is_mirror_pod(new):
            _admit_mirror_pod(new)


def _labels(obj: dict[str, Any] | None) -> dict[str, Any] | None:
    meta = (obj or {}).get("metadata")
    labels = meta.get("labels") if isinstance(meta, dict) else None
    return labels if isinstance(labels, dict) else None
