"""The kinds the API server serves, as data: adding a kind is one table row.

A :class:`ResourceType` names a (group, version, resource) with its kind, scope,
subresources and verbs. Built-in kinds are listed in :data:`BUILTIN`; a stored
CustomResourceDefinition turns into one ``ResourceType`` per served version
(:func:`from_crd`). Objects of every kind are stored under ``storage_key``
(``group/resource``), so all versions of a CRD share storage (no conversion: the
``None`` strategy just rewrites ``apiVersion``, as Kubernetes does).
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

ALL_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")

_DNS1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
# RBAC objects and a few others allow "path segment" names such as "system:node".
_PATH_SEGMENT_BAD = re.compile(r"[/%]")


@dataclasses.dataclass(frozen=True)
class ResourceType:
    group: str
    version: str
    resource: str
    kind: str
    namespaced: bool
    subresources: tuple[str, ...] = ()
    verbs: tuple[str, ...] = ALL_VERBS
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    singular: str = ""
    name_rule: str = "subdomain"  # subdomain | label | path
    virtual: bool = False  # create-only review objects, never stored
    field_index: str | None = None  # dotted field indexed in the store (spec.nodeName for pods)
    selectable_fields: tuple[str, ...] = ()
    crd: bool = False

    def __post_init__(self) -> None:
        if not self.resource or not self.kind or not self.version:
            raise ValueError("resource, kind and version are required")

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def storage_key(self) -> str:
        return f"{self.group}/{self.resource}"

    @property
    def list_kind(self) -> str:
        return self.kind + "List"

    def valid_name(self, name: str) -> bool:
        if not name or len(name) > 253:
            return False
        if self.name_rule == "label":
            return len(name) <= 63 and bool(_DNS1123_LABEL.fullmatch(name))
        if self.name_rule == "path":
            return name not in (".", "..") and not _PATH_SEGMENT_BAD.search(name)
        return bool(_DNS1123_SUBDOMAIN.fullmatch(name))

    def name_error(self, name: str) -> str:
        """Kubernetes' ``metadata.name`` error for an invalid ``name`` (quoted as JSON: no raw control
        characters in the message)."""
        quoted = json.dumps(name)[:300]
        if self.name_rule == "label":
            why = ("a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and "
                   "must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used "
                   "for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')")
        elif self.name_rule == "path":
            why = "may not be '.' or '..' and may not contain '/' or '%'"
        else:
            why = ("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or "
                   "'.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used "
                   "for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')")
        return f"metadata.name: Invalid value: {quoted}: {why}"

    def discovery(self) -> list[dict[str, Any]]:
        """``APIResource`` entries (the resource and its subresources) for ``/api/v1`` style lists."""
        main: dict[str, Any] = {
            "name": self.resource, "singularName": self.singular or self.kind.lower(),
            "namespaced": self.namespaced, "kind": self.kind, "verbs": list(self.verbs),
        }
        if self.short_names:
            main["shortNames"] = list(self.short_names)
        if self.categories:
            main["categories"] = list(self.categories)
        out = [main]
        for sub in self.subresources:
            verbs = ["get", "patch", "update"] if sub in ("status", "scale", "ephemeralcontainers") else ["create"]
            out.append({"name": f"{self.resource}/{sub}", "singularName": "", "namespaced": self.namespaced,
                        "kind": self.kind if sub in ("status", "ephemeralcontainers") else
                        {"eviction": "Eviction", "token": "TokenRequest", "scale": "Scale"}.get(sub, self.kind),
                        "verbs": verbs})
        return out


def _rt(group: str, version: str, resource: str, kind: str, namespaced: bool, **kw: Any) -> ResourceType:
    return ResourceType(group, version, resource, kind, namespaced, **kw)


_REVIEW = ("create",)

BUILTIN: tuple[ResourceType, ...] = (
    _rt("", "v1", "namespaces", "Namespace", False, subresources=("status", "finalize"), short_names=("ns",),
        name_rule="label", verbs=("create", "delete", "get", "list", "patch", "update", "watch")),
    _rt("", "v1", "nodes", "Node", False, subresources=("status",), short_names=("no",)),
    _rt("", "v1", "pods", "Pod", True, subresources=("status", "ephemeralcontainers", "eviction", "log"),
        short_names=("po",), categories=("all",), field_index="spec.nodeName",
        selectable_fields=("spec.nodeName", "spec.restartPolicy", "spec.schedulerName",
                           "spec.serviceAccountName", "spec.hostNetwork", "status.phase", "status.podIP",
                           "status.nominatedNodeName")),
    _rt("", "v1", "configmaps", "ConfigMap", True, short_names=("cm",)),
    _rt("", "v1", "secrets", "Secret", True, selectable_fields=("type",)),
    _rt("", "v1", "events", "Event", True, short_names=("ev",),
        selectable_fields=("involvedObject.kind", "involvedObject.namespace", "involvedObject.name",
                           "involvedObject.uid", "involvedObject.apiVersion", "involvedObject.resourceVersion",
                           "involvedObject.fieldPath", "reason", "reportingComponent", "source", "type")),
    _rt("", "v1", "serviceaccounts", "ServiceAccount", True, subresources=("token",), short_names=("sa",)),
    _rt("", "v1", "services", "Service", True, subresources=("status",), short_names=("svc",),
        categories=("all",), name_rule="label"),
    _rt("", "v1", "endpoints", "Endpoints", True, short_names=("ep",)),
    _rt("", "v1", "persistentvolumes", "PersistentVolume", False, subresources=("status",), short_names=("pv",)),
    _rt("", "v1", "persistentvolumeclaims", "PersistentVolumeClaim", True, subresources=("status",),
        short_names=("pvc",)),
    _rt("coordination.k8s.io", "v1", "leases", "Lease", True),
    _rt("storage.k8s.io", "v1", "volumeattachments", "VolumeAttachment", False, subresources=("status",)),
    _rt("rbac.authorization.k8s.io", "v1", "roles", "Role", True, name_rule="path"),
    _rt("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding", True, name_rule="path"),
    _rt("rbac.authorization.k8s.io", "v1", "clusterroles", "ClusterRole", False, name_rule="path"),
    _rt("rbac.authorization.k8s.io", "v1", "clusterrolebindings", "ClusterRoleBinding", False, name_rule="path"),
    _rt("apiextensions.k8s.io", "v1", "customresourcedefinitions", "CustomResourceDefinition", False,
        subresources=("status",), short_names=("crd", "crds"), categories=("api-extensions",)),
    _rt("authorization.k8s.io", "v1", "selfsubjectaccessreviews", "SelfSubjectAccessReview", False,
        verbs=_REVIEW, virtual=True),
    _rt("authorization.k8s.io", "v1", "subjectaccessreviews", "SubjectAccessReview", False,
        verbs=_REVIEW, virtual=True),
    _rt("authorization.k8s.io", "v1", "localsubjectaccessreviews", "LocalSubjectAccessReview", True,
        verbs=_REVIEW, virtual=True),
    _rt("authorization.k8s.io", "v1", "selfsubjectrulesreviews", "SelfSubjectRulesReview", False,
        verbs=_REVIEW, virtual=True),
    _rt("authentication.k8s.io", "v1", "selfsubjectreviews", "SelfSubjectReview", False,
        verbs=_REVIEW, virtual=True),
)


class CRDError(ValueError):
    """A CustomResourceDefinition that cannot be served."""


def from_crd(crd: Mapping[str, Any]) -> list[ResourceType]:
    """``ResourceType`` per served version of a stored CRD (raises CRDError if malformed)."""
    spec = crd.get("spec")
    if not isinstance(spec, Mapping):
        raise CRDError("spec is required")
    group, names, scope = spec.get("group"), spec.get("names") or {}, spec.get("scope")
    plural, kind = names.get("plural"), names.get("kind")
    if not isinstance(group, str) or not _DNS1123_SUBDOMAIN.fullmatch(group) or "." not in group:
        raise CRDError("spec.group must be a DNS subdomain with a dot")
    if not isinstance(plural, str) or not _DNS1123_LABEL.fullmatch(plural):
        raise CRDError("spec.names.plural must be a DNS label")
    if not isinstance(kind, str) or not re.fullmatch(r"[A-Z][A-Za-z0-9]{0,62}", kind):
        raise CRDError("spec.names.kind is invalid")
    if scope not in ("Namespaced", "Cluster"):
        raise CRDError("spec.scope must be Namespaced or Cluster")
    if (crd.get("metadata") or {}).get("name") != f"{plural}.{group}":
        raise CRDError("metadata.name must be <plural>.<group>")
    versions = spec.get("versions")
    if not isinstance(versions, list) or not versions:
        raise CRDError("spec.versions is required")
    out = []
    storage = [v for v in versions if isinstance(v, Mapping) and v.get("storage")]
    if len(storage) != 1:
        raise CRDError("exactly one version must be the storage version")
    for v in versions:
        if not isinstance(v, Mapping) or not isinstance(v.get("name"), str) or \
                not re.fullmatch(r"v[0-9]+((alpha|beta)[0-9]+)?", v["name"]):
            raise CRDError("invalid version")
        if not v.get("served", False):
            continue
        subs = []
        sr = v.get("subresources") or {}
        if isinstance(sr, Mapping):
            if "status" in sr:
                subs.append("status")
            if "scale" in sr:
                subs.append("scale")
        out.append(ResourceType(
            group, v["name"], plural, kind, scope == "Namespaced", subresources=tuple(subs),
            short_names=tuple(x for x in names.get("shortNames") or () if isinstance(x, str)),
            categories=tuple(x for x in names.get("categories") or () if isinstance(x, str)),
            singular=str(names.get("singular") or kind.lower()), crd=True,
        ))
    return out


def crd_is_established(crd: Mapping[str, Any]) -> bool:
    try:
        return bool(from_crd(crd))
    except CRDError:
        return False


class Registry:
    """Lookup of served resources by (group, version, resource)."""

    def __init__(self, builtin: Iterable[ResourceType] = BUILTIN) -> None:
        self._builtin = {(r.group, r.version, r.resource): r for r in builtin}
        self._crd: dict[tuple[str, str, str], ResourceType] = {}
        self._crd_by_name: dict[str, list[ResourceType]] = {}

    def lookup(self, group: str, version: str, resource: str) -> ResourceType | None:
        key = (group, version, resource)
        return self._builtin.get(key) or self._crd.get(key)

    def set_crd(self, name: str, types: list[ResourceType]) -> None:
        self.remove_crd(name)
        for t in types:
            if (t.group, t.version, t.resource) in self._builtin:
                continue  # a CRD may never shadow a built-in kind
            self._crd[(t.group, t.version, t.resource)] = t
        self._crd_by_name[name] = types

    def remove_crd(self, name: str) -> None:
        for t in self._crd_by_name.pop(name, []):
            self._crd.pop((t.group, t.version, t.resource), None)

    def all(self) -> list[ResourceType]:
        return list(self._builtin.values()) + list(self._crd.values())

    def groups(self) -> dict[str, list[str]]:
        """group -> versions (preferred first), excluding the legacy core group."""
        out: dict[str, list[str]] = {}
        for t in self.all():
            if t.group:
                versions = out.setdefault(t.group, [])
                if t.version not in versions:
                    versions.append(t.version)
        for vs in out.values():
            vs.sort(key=_version_priority)
        return out


def _version_priority(v: str) -> tuple[int, int, int]:
    m = re.fullmatch(r"v([0-9]+)(alpha|beta)?([0-9]*)", v)
    if not m:
        return (3, 0, 0)
    major = int(m.group(1))
    stage = {"": 0, "beta": 1, "alpha": 2}[m.group(2) or ""]
    minor = int(m.group(3) or 0)
    return (stage, -major, -minor)
