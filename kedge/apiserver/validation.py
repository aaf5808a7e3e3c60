"""Object validation before a write, one validator per kind (a registry)."""

from __future__ import annotations

import base64
from typing import Any

from kedge.apiserver.model import User, _meta, _without
from kedge.apiserver.request import RequestInfo
from kedge.apiserver.resources import CRDError, ResourceType, from_crd
from kedge.apiserver.status import already_exists, invalid
from kedge.authz.rbac import (
    RBAC_GROUP,
)


class Validation:
    """Validation before a write (a mixin of :class:`kedge.apiserver.api.API`)."""

    def _validate(self, rt: ResourceType, obj: dict[str, Any], old: dict[str, Any] | None, user: User,
                  info: RequestInfo) -> None:
        name = _meta(obj).get("name", "")
        ns = _meta(obj).get("namespace", "")
        if rt.group == RBAC_GROUP:
            self._validate_rbac(rt, obj, old, user, info, name, ns)
        elif rt.storage_key == "apiextensions.k8s.io/customresourcedefinitions":
            try:
                types = from_crd(obj)
            except CRDError as exc:
                raise invalid(rt.kind, name, str(exc), rt.group) from exc
            for t in types:
                if self.registry.lookup(t.group, t.version, t.resource) is not None and not t.crd:
                    raise invalid(rt.kind, name, "spec.group: may not shadow a built-in resource", rt.group)
                existing = self.registry.lookup(t.group, t.version, t.resource)
                if existing is not None and old is None:
                    raise already_exists(rt.resource, name, rt.group)
        elif rt.storage_key == "/pods":
            spec = obj.get("spec")
            if not isinstance(spec, dict) or not isinstance(spec.get("containers"), list) or \
                    not spec["containers"]:
                raise invalid("Pod", name, "spec.containers: Required value")
            for c in spec["containers"]:
                if not isinstance(c, dict) or not c.get("name") or not c.get("image"):
                    raise invalid("Pod", name, "spec.containers[]: name and image are required")
            if old is not None and info.subresource == "":
                old_spec, new_spec = old.get("spec") or {}, spec
                mutable = ("activeDeadlineSeconds", "tolerations", "terminationGracePeriodSeconds")
                if _without(old_spec, *mutable, "containers") != _without(new_spec, *mutable, "containers") or \
                        [_without(c, "image") for c in old_spec.get("containers") or []] != \
                        [_without(c, "image") for c in new_spec.get("containers") or []]:
                    raise invalid("Pod", name, "spec: Forbidden: pod updates may not change fields other than "
                                  "`spec.containers[*].image`, `spec.activeDeadlineSeconds`, "
                                  "`spec.tolerations` (only additions to existing tolerations), "
                                  "`spec.terminationGracePeriodSeconds`")
        elif rt.storage_key in ("/configmaps", "/secrets"):
            if old is not None and old.get("immutable") and (
                    old.get("data") != obj.get("data") or old.get("binaryData") != obj.get("binaryData") or
                    not obj.get("immutable")):
                raise invalid(rt.kind, name, "field is immutable when `immutable` is set")
            data = obj.get("data")
            if data is not None and not isinstance(data, dict):
                raise invalid(rt.kind, name, "data must be a map")
            if rt.storage_key == "/secrets" and isinstance(data, dict):
                for k, v in data.items():
                    try:
                        base64.b64decode(str(v), validate=True)
                    except ValueError as exc:
                        raise invalid("Secret", name, f"data[{k}]: must be base64") from exc
