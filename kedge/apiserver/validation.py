"""Object validation before a write: one validator per kind, looked up in a registry.

A validator takes the write (:class:`Write`: the kind, the new object, the stored one for an
update, who writes it and the request) and raises an :class:`ApiError` (422 ``Invalid``, as
Kubernetes' validation does) or returns. Kinds without a validator are accepted as decoded
(the decoder has already checked their JSON types, :mod:`kedge.apiserver.schema`).
"""

from __future__ import annotations

import base64
import dataclasses
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from kedge.apiserver.model import User, _meta, _without
from kedge.apiserver.request import RequestInfo
from kedge.apiserver.resources import CRDError, Registry, ResourceType, from_crd
from kedge.apiserver.status import already_exists, invalid
from kedge.authz import podrefs
from kedge.authz.labels import is_label_value, is_qualified_name
from kedge.authz.rbac import RBAC_GROUP

if TYPE_CHECKING:
    from kedge.apiserver.api import API


@dataclasses.dataclass(frozen=True)
class Write:
    """One object about to be stored."""

    rt: ResourceType
    obj: dict[str, Any]
    old: dict[str, Any] | None
    user: User
    info: RequestInfo

    @property
    def name(self) -> str:
        return str(_meta(self.obj).get("name", ""))

    @property
    def namespace(self) -> str:
        return str(_meta(self.obj).get("namespace", ""))


Validator = Callable[["API", Write], None]
VALIDATORS: dict[str, Validator] = {}


def validates(*storage_keys: str) -> Callable[[Validator], Validator]:
    """Register the decorated function as the validator of ``storage_keys``."""
    def register(fn: Validator) -> Validator:
        for key in storage_keys:
            if key in VALIDATORS:
                raise ValueError(f"two validators for {key}")
            VALIDATORS[key] = fn
        return fn
    return register


class Validation:
    """Validation before a write (a mixin of :class:`kedge.apiserver.api.API`)."""

    def _validate(self, rt: ResourceType, obj: dict[str, Any], old: dict[str, Any] | None, user: User,
                  info: RequestInfo) -> None:
        write = Write(rt, obj, old, user, info)
        check_metadata(write)
        validator = VALIDATORS.get(rt.storage_key)
        if validator is not None:
            validator(self, write)  # type: ignore[arg-type]  # the mixin is an API


# -- metadata, every kind (Kubernetes' ValidateObjectMeta) -----------------------------------------

MAX_ANNOTATIONS_BYTES = 256 * 1024  # Kubernetes' TotalAnnotationSizeLimitB
_STANDARD_FINALIZERS = frozenset({"kubernetes", "orphan", "foregroundDeletion"})


def metadata_error(meta: dict[str, Any]) -> str | None:
    """The first thing Kubernetes' object-metadata validation refuses in ``meta``, or None."""
    labels = meta.get("labels") or {}
    if isinstance(labels, dict):
        for k, v in labels.items():
            if not is_qualified_name(k):
                return f"metadata.labels: Invalid value: {k!r}: a valid label key must be a qualified name"
            if not is_label_value(v):
                return f"metadata.labels: Invalid value: {v!r}: a valid label value must be 63 characters or " \
                       "less and consist of alphanumerics, '-', '_' or '.', starting and ending alphanumerically"
    annotations = meta.get("annotations") or {}
    if isinstance(annotations, dict):
        size = 0
        for k, v in annotations.items():
            if not isinstance(k, str) or not is_qualified_name(k.lower()):
                return f"metadata.annotations: Invalid value: {k!r}: a valid annotation key must be a qualified name"
            size += len(str(k)) + len(str(v))
        if size > MAX_ANNOTATIONS_BYTES:
            return f"metadata.annotations: Too long: must have at most {MAX_ANNOTATIONS_BYTES} bytes"
    for f in meta.get("finalizers") or ():
        if not is_qualified_name(f):
            return f"metadata.finalizers: Invalid value: {f!r}: a finalizer must be a qualified name"
        if "/" not in str(f) and f not in _STANDARD_FINALIZERS:
            return f"metadata.finalizers: Invalid value: {f!r}: name is neither a standard finalizer name nor " \
                   "is it fully qualified"
    refs = meta.get("ownerReferences")
    if refs is not None:
        if not isinstance(refs, list):
            return "metadata.ownerReferences: Invalid value: must be a list"
        controllers = 0
        for i, ref in enumerate(refs):
            if not isinstance(ref, dict):
                return f"metadata.ownerReferences[{i}]: Invalid value: must be an object"
            for field in ("apiVersion", "kind", "name", "uid"):
                if not isinstance(ref.get(field), str) or not ref.get(field):
                    return f"metadata.ownerReferences[{i}].{field}: Invalid value: {field} must not be empty"
            if ref.get("controller") is True:
                controllers += 1
        if controllers > 1:
            return "metadata.ownerReferences: Invalid value: Only one reference can have Controller set to true"
    return None


def check_metadata(w: Write) -> None:
    err = metadata_error(_meta(w.obj))
    if err is not None:
        raise invalid(w.rt.kind, w.name, err, w.rt.group)


# -- RBAC: escalation checks need the policy (kedge.apiserver.rbac_admission) --------------------

@validates(*(f"{RBAC_GROUP}/{r}" for r in ("roles", "clusterroles", "rolebindings", "clusterrolebindings")))
def _rbac(api: API, w: Write) -> None:
    api._validate_rbac(w.rt, w.obj, w.old, w.user, w.info, w.name, w.namespace)


# -- CustomResourceDefinitions ----------------------------------------------------------------

def check_crd(registry: Registry, w: Write) -> None:
    try:
        types = from_crd(w.obj)
    except CRDError as exc:
        raise invalid(w.rt.kind, w.name, str(exc), w.rt.group) from exc
    for t in types:
        existing = registry.lookup(t.group, t.version, t.resource)
        if existing is not None and not existing.crd:
            raise invalid(w.rt.kind, w.name, "spec.group: may not shadow a built-in resource", w.rt.group)
        if existing is not None and w.old is None:
            raise already_exists(w.rt.resource, w.name, w.rt.group)


@validates("apiextensions.k8s.io/customresourcedefinitions")
def _crd(api: API, w: Write) -> None:
    check_crd(api.registry, w)


# -- Pods --------------------------------------------------------------------------------------

_POD_MUTABLE = ("activeDeadlineSeconds", "tolerations", "terminationGracePeriodSeconds")


@validates("/pods")
def check_pod(api: API | None, w: Write) -> None:
    name = w.name
    spec = w.obj.get("spec")
    if not isinstance(spec, dict) or not isinstance(spec.get("containers"), list) or not spec["containers"]:
        raise invalid("Pod", name, "spec.containers: Required value")
    for c in spec["containers"]:
        if not isinstance(c, dict) or not c.get("name") or not c.get("image"):
            raise invalid("Pod", name, "spec.containers[]: name and image are required")
    if w.old is not None:
        was, now = (_meta(o).get("annotations") or {} for o in (w.old, w.obj))
        if isinstance(was, dict) and isinstance(now, dict) and \
                was.get(podrefs.MIRROR_POD_ANNOTATION) != now.get(podrefs.MIRROR_POD_ANNOTATION):
            raise invalid("Pod", name, f"metadata.annotations[{podrefs.MIRROR_POD_ANNOTATION}]: Forbidden: "
                          "cannot change the mirror pod annotation")
    if w.old is not None and w.info.subresource == "":
        old_spec = w.old.get("spec") or {}
        if _without(old_spec, *_POD_MUTABLE, "containers") != _without(spec, *_POD_MUTABLE, "containers") or \
                [_without(c, "image") for c in old_spec.get("containers") or []] != \
                [_without(c, "image") for c in spec.get("containers") or []]:
            raise invalid("Pod", name, "spec: Forbidden: pod updates may not change fields other than "
                          "`spec.containers[*].image`, `spec.activeDeadlineSeconds`, "
                          "`spec.tolerations` (only additions to existing tolerations), "
                          "`spec.terminationGracePeriodSeconds`")


# -- ConfigMaps and Secrets --------------------------------------------------------------------

_DATA_KEY = re.compile(r"[-._a-zA-Z0-9]+")
MAX_DATA_KEY_LENGTH = 253


def data_key_error(key: object) -> str | None:
    """Kubernetes' ``IsConfigMapKey``: why ``key`` cannot name a ConfigMap/Secret entry, or None.

    These keys become file names in volumes on the edge: '.', '..' and a leading '..' would
    reach outside the volume's directory or its atomic-update links.
    """
    if not isinstance(key, str) or not key:
        return "a valid config key must be a non-empty string"
    if len(key) > MAX_DATA_KEY_LENGTH:
        return f"must be no more than {MAX_DATA_KEY_LENGTH} characters"
    if not _DATA_KEY.fullmatch(key):
        return "a valid config key must consist of alphanumeric characters, '-', '_' or '.'"
    if key in (".", ".."):
        return f"must not be '{key}'"
    if key.startswith(".."):
        return "must not start with '..'"
    return None


@validates("/configmaps", "/secrets")
def check_data(api: API | None, w: Write) -> None:
    name, old, obj, kind = w.name, w.old, w.obj, w.rt.kind
    if old is not None and old.get("immutable") and (
            old.get("data") != obj.get("data") or old.get("binaryData") != obj.get("binaryData") or
            not obj.get("immutable")):
        raise invalid(kind, name, "field is immutable when `immutable` is set")
    data = obj.get("data")
    if data is not None and not isinstance(data, dict):
        raise invalid(kind, name, "data must be a map")
    seen: set[str] = set()
    for field in ("data", "binaryData"):
        entries = obj.get(field)
        if not isinstance(entries, dict):
            continue
        for key in entries:
            err = data_key_error(key)
            if err is not None:
                raise invalid(kind, name, f"{field}[{key!r}]: Invalid value: {err}")
            if key in seen:
                raise invalid(kind, name, f"{field}[{key!r}]: Invalid value: duplicate of key present in data")
            seen.add(key)
    if w.rt.storage_key == "/secrets" and isinstance(data, dict):
        for k, v in data.items():
            try:
                base64.b64decode(str(v), validate=True)
            except ValueError as exc:
                raise invalid("Secret", name, f"data[{k}]: must be base64") from exc
