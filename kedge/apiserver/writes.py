"""create, update, patch, delete: object lifecycle, preconditions, graceful deletion, cascade, eviction."""

from __future__ import annotations

import base64
import json
import secrets
import uuid
from typing import Any

from kedge.apiserver import schema
from kedge.apiserver.decoding import _depth_ok, check_known_fields, check_shape, strict_fields
from kedge.apiserver.model import MAX_JSON_DEPTH, Request, Response, User, _dumps, _int_param, _meta, _without, rfc3339
from kedge.apiserver.patch import json_copy, json_patch, merge_patch, strategic_merge_patch
from kedge.apiserver.request import RequestInfo
from kedge.apiserver.resources import ResourceType
from kedge.apiserver.status import ApiError, already_exists, conflict, invalid, not_found, status_body
from kedge.authz import podrefs
from kedge.authz.labels import (
    field_value,
    fields_match,
)
from kedge.authz.rbac import (
    RBAC_GROUP,
    Attributes,
)
from kedge.store.sqlite import (
    AlreadyExists,
    Conflict,
    NotFound,
    StoreError,
    parse_rv,
)

# Kinds whose Kubernetes strategy has AllowCreateOnUpdate: a PUT of a missing one creates it
# (and must be allowed to create). Every other kind answers such a PUT with 404 NotFound.
CREATE_ON_UPDATE = frozenset({
    "/events", "/services", "/endpoints", "coordination.k8s.io/leases",
    f"{RBAC_GROUP}/roles", f"{RBAC_GROUP}/rolebindings", f"{RBAC_GROUP}/clusterroles",
    f"{RBAC_GROUP}/clusterrolebindings",
})


def _same_ignoring_rv(a: dict[str, Any], b: dict[str, Any]) -> bool:
    ma = {k: v for k, v in (a.get("metadata") or {}).items() if k != "resourceVersion"}
    mb = {k: v for k, v in (b.get("metadata") or {}).items() if k != "resourceVersion"}
    return ma == mb and _without(a, "metadata") == _without(b, "metadata")


class WriteHandlers:
    """create, update, patch, delete (a mixin of :class:`kedge.apiserver.api.API`)."""

    def _dry_run(self, info: RequestInfo) -> bool:
        dry = info.query.get("dryRun")
        if dry not in (None, "", "All"):
            raise ApiError(400, "dryRun must be All")
        return dry == "All"

    def _create_namespace(self, info: RequestInfo, rt: ResourceType, meta: dict[str, Any]) -> str:
        """The namespace a new object is created in ("" for a cluster-scoped kind, whose body's
        namespace is dropped): the request's, which the body may repeat but not contradict, and
        which must exist and not be terminating."""
        if not rt.namespaced:
            meta.pop("namespace", None)
            return ""
        body_ns = meta.get("namespace")
        if body_ns and body_ns != info.namespace:
            raise ApiError(400, "the namespace of the provided object does not match the namespace sent "
                           "on the request")
        ns = info.namespace
        ns_raw = self.store.get_raw("/namespaces", "", ns)
        if ns_raw is None:
            raise ApiError(404, f'namespaces "{ns}" not found', details={"name": ns, "kind": "namespaces"})
        if '"deletionTimestamp"' in ns_raw and _meta(json.loads(ns_raw)).get("deletionTimestamp"):
            raise ApiError(403, f"unable to create new content in namespace {ns} because it is being terminated")
        return ns

    def _create(self, req: Request, info: RequestInfo, rt: ResourceType, user: User) -> Response:
        obj = self._object_body(req, info, rt)
        meta = _meta(obj)
        name = meta.get("name") or ""
        if not name and meta.get("generateName"):
            gen = str(meta["generateName"])[:58]
            name = gen + "".join(secrets.choice("bcdfghjklmnpqrstvwxz2456789") for _ in range(5))
        if not isinstance(name, str) or not rt.valid_name(name):
            raise invalid(rt.kind, str(name), rt.name_error(str(name)), rt.group)
        ns = self._create_namespace(info, rt, meta)
        now = rfc3339(self.clock())
        meta.update({"name": name, "uid": str(uuid.uuid4()), "creationTimestamp": now})
        if rt.namespaced:
            meta["namespace"] = ns
        for k in ("resourceVersion", "deletionTimestamp", "deletionGracePeriodSeconds", "selfLink"):
            meta.pop(k, None)
        if "spec" in obj or rt.crd:
            meta["generation"] = 1
        else:
            meta.pop("generation", None)
        self._prepare_create(rt, obj, now)
        self._validate(rt, obj, None, user, info)
        self._admit(user, "CREATE", rt, "", name, obj, None)
        if self._dry_run(info):
            return self._ok(201, obj, rt)
        try:
            stored = self.store.create(rt.storage_key, ns, name, obj, index=self._index(rt, obj))
        except AlreadyExists as exc:
            raise already_exists(rt.resource, name, rt.group) from exc
        return self._ok(201, stored, rt)

    def _prepare_create(self, rt: ResourceType, obj: dict[str, Any], now: str) -> None:
        if rt.storage_key == "/pods":
            status = obj.get("status") if isinstance(obj.get("status"), dict) else {}
            status.setdefault("phase", "Pending")
            obj["status"] = status
            spec = obj.get("spec")
            if isinstance(spec, dict):
                if not podrefs.is_mirror_pod(obj):  # a mirror pod gets no service account
                    spec.setdefault("serviceAccountName", "default")
                spec.setdefault("restartPolicy", "Always")
                spec.setdefault("terminationGracePeriodSeconds", 30)
        elif rt.storage_key == "/namespaces":
            obj["status"] = {"phase": "Active"}
            _meta(obj).setdefault("labels", {})["kubernetes.io/metadata.name"] = _meta(obj)["name"]
        elif rt.storage_key == "/secrets":
            obj.setdefault("type", "Opaque")
            if "stringData" in obj:
                sd = obj.pop("stringData") or {}
                if not isinstance(sd, dict):
                    raise invalid("Secret", _meta(obj)["name"], "stringData must be a map")
                data = obj.setdefault("data", {}) or {}
                for k, v in sd.items():
                    data[k] = base64.b64encode(str(v).encode()).decode()
                obj["data"] = data
        elif rt.storage_key == "apiextensions.k8s.io/customresourcedefinitions":
            self._crd_status(obj, now)

    def _crd_status(self, obj: dict[str, Any], now: str) -> None:
        spec = obj.get("spec") or {}
        storage = [v.get("name") for v in spec.get("versions") or [] if isinstance(v, dict) and v.get("storage")]
        cond = {"lastTransitionTime": now, "status": "True"}
        obj["status"] = {
            "acceptedNames": spec.get("names") or {},
            "conditions": [dict(cond, type="NamesAccepted", reason="NoConflicts", message="no conflicts found"),
                           dict(cond, type="Established", reason="InitialNamesAccepted",
                                message="the initial names have been accepted")],
            "storedVersions": storage,
        }

    def _index(self, rt: ResourceType, obj: dict[str, Any]) -> str | None:
        if rt.field_index:
            v = field_value(obj, rt.field_index)
            return v or None
        return None

    def _update(self, req: Request, info: RequestInfo, rt: ResourceType, user: User) -> Response:
        body = self._object_body(req, info, rt)
        if info.subresource not in ("", "status", "ephemeralcontainers", "finalize"):
            raise ApiError(405, "method not allowed")
        bname = _meta(body).get("name")
        if bname and bname != info.name:
            raise ApiError(400, "the name of the object does not match the name on the URL")
        try:
            expected = parse_rv(_meta(body).get("resourceVersion"))
        except StoreError as exc:
            raise ApiError(400, "invalid resourceVersion") from exc
        if not info.subresource and rt.storage_key in CREATE_ON_UPDATE and \
                self.store.get_raw(rt.storage_key, info.namespace if rt.namespaced else "", info.name) is None:
            return self._create_on_update(info, rt, user, body)
        return self._apply_update(info, rt, user, body, expected)

    def _create_on_update(self, info: RequestInfo, rt: ResourceType, user: User, body: dict[str, Any]) -> Response:
        """PUT of a missing object of a kind Kubernetes lets PUT create (``AllowCreateOnUpdate``).

        As in Kubernetes' update handler, the request was authorized as ``update``; creating
        needs ``create`` as well, asked with the same attributes once the object is built
        and validated (escalation checks included), before admission. Any resourceVersion
        in the body is ignored, as on a create.
        """
        obj = body
        meta = _meta(obj)
        ns = self._create_namespace(info, rt, meta)
        now = rfc3339(self.clock())
        meta.update({"name": info.name, "uid": str(uuid.uuid4()), "creationTimestamp": now})
        if rt.namespaced:
            meta["namespace"] = ns
        for k in ("resourceVersion", "deletionTimestamp", "deletionGracePeriodSeconds", "selfLink", "generateName"):
            meta.pop(k, None)
        if "spec" in obj:
            meta["generation"] = 1
        else:
            meta.pop("generation", None)
        self._prepare_create(rt, obj, now)
        self._validate(rt, obj, None, user, info)
        create = Attributes(user=user.name, groups=user.groups, verb="create", namespace=ns,
                            api_group=rt.group, resource=rt.resource, name=info.name, path=info.path)
        decision = self.authorize(create)
        if not decision.allowed:
            qual = f"{rt.resource}.{rt.group}" if rt.group else rt.resource
            raise ApiError(403, f'{qual} "{info.name}" is forbidden: User "{user.name}" cannot create resource '
                           f'"{rt.resource}" in API group "{rt.group}" '
                           + (f'in the namespace "{ns}"' if ns else "at the cluster scope"),
                           details={"name": info.name, "group": rt.group, "kind": rt.resource})
        self._admit(user, "CREATE", rt, "", info.name, obj, None)
        if self._dry_run(info):
            return self._ok(201, obj, rt)
        try:
            stored = self.store.create(rt.storage_key, ns, info.name, obj, index=self._index(rt, obj))
        except AlreadyExists as exc:  # created meanwhile: Kubernetes would have retried as an update
            raise conflict(rt.resource, info.name, rt.group) from exc
        return self._ok(201, stored, rt)

    def _apply_update(self, info: RequestInfo, rt: ResourceType, user: User, body: dict[str, Any],
                      expected: int | None) -> Response:
        old = self._load(rt, info.namespace, info.name)
        if expected is not None and str(expected) != _meta(old).get("resourceVersion"):
            raise conflict(rt.resource, info.name, rt.group)
        new = self._merge_for_update(rt, info.subresource, old, body)
        self._validate(rt, new, old, user, info)
        self._admit(user, "UPDATE", rt, info.subresource, info.name, new, old)
        if self._dry_run(info):
            return self._ok(200, new, rt)
        ns = info.namespace if rt.namespaced else ""
        if _meta(new).get("deletionTimestamp") and not _meta(new).get("finalizers"):
            try:
                gone = self.store.delete(rt.storage_key, ns, info.name, expected_rv=expected)
            except Conflict as exc:
                raise conflict(rt.resource, info.name, rt.group) from exc
            self._cascade(rt, gone)
            return self._ok(200, gone, rt)
        if _same_ignoring_rv(new, old):
            return self._ok(200, old, rt)  # no-op updates do not bump the resourceVersion
        try:
            stored = self.store.update(rt.storage_key, ns, info.name, new, expected_rv=expected,
                                       index=self._index(rt, new))
        except Conflict as exc:
            raise conflict(rt.resource, info.name, rt.group) from exc
        except NotFound as exc:
            raise not_found(rt.resource, info.name, rt.group) from exc
        return self._ok(200, stored, rt)

    def _merge_for_update(self, rt: ResourceType, sub: str, old: dict[str, Any],
                          body: dict[str, Any]) -> dict[str, Any]:
        old_meta = _meta(old)
        if sub == "status":
            new = json_copy(old)
            if "status" in body:
                new["status"] = body["status"]
            else:
                new.pop("status", None)
            if rt.storage_key == "/nodes":
                # a node's status update may carry its labels/annotations (kubelet does so)
                bm = _meta(body)
                for k in ("labels", "annotations"):
                    if k in bm:
                        _meta(new)[k] = bm[k]
            return new
        if sub == "ephemeralcontainers":
            new = json_copy(old)
            new.setdefault("spec", {})["ephemeralContainers"] = (body.get("spec") or {}).get("ephemeralContainers", [])
            return new
        new = json_copy(body)
        meta = _meta(new)
        for k in ("uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "namespace",
                  "generation"):
            if k in old_meta:
                meta[k] = old_meta[k]
            else:
                meta.pop(k, None)
        meta["name"] = old_meta["name"]
        meta.pop("resourceVersion", None)
        if "status" in rt.subresources or rt.storage_key == "/namespaces":
            if "status" in old:
                new["status"] = old["status"]
            else:
                new.pop("status", None)
        if rt.storage_key == "/secrets" and "stringData" in new:
            sd = new.pop("stringData") or {}
            data = new.setdefault("data", {}) or {}
            if isinstance(sd, dict):
                for k, v in sd.items():
                    data[k] = base64.b64encode(str(v).encode()).decode()
            new["data"] = data
        if rt.storage_key == "apiextensions.k8s.io/customresourcedefinitions":
            self._crd_status(new, rfc3339(self.clock()))
        if "generation" in old_meta and _without(new, "metadata", "status") != _without(old, "metadata", "status"):
            meta["generation"] = int(old_meta.get("generation", 1)) + 1
        return new

    def _patch(self, req: Request, info: RequestInfo, rt: ResourceType, user: User) -> Response:
        ctype = (req.header("content-type") or "").split(";")[0].strip().lower()
        if ctype == "application/apply-patch+yaml":
            raise ApiError(415, "server-side apply is not supported; use client-side apply")
        if ctype not in ("application/merge-patch+json", "application/json-patch+json",
                         "application/strategic-merge-patch+json"):
            raise ApiError(415, "the body of the request was in an unknown format - accepted media types "
                           "include: application/json-patch+json, application/merge-patch+json, "
                           "application/strategic-merge-patch+json")
        if ctype == "application/strategic-merge-patch+json" and rt.crd:
            raise ApiError(415, "strategic merge patch is not supported for custom resources")
        patch = self._body(req, allow_yaml=False)
        old = self._load(rt, info.namespace, info.name)
        if ctype == "application/merge-patch+json":
            patched = merge_patch(old, patch)
        elif ctype == "application/json-patch+json":
            patched = json_patch(old, patch)
        else:
            patched = strategic_merge_patch(old, patch)
        if not isinstance(patched, dict):
            raise ApiError(422, "the patch produced something that is not an object")
        if not _depth_ok(patched, MAX_JSON_DEPTH) or len(_dumps(patched)) > self.max_body_bytes:
            raise ApiError(422, "the patched object is too large or too deep")
        patched["kind"], patched["apiVersion"] = old.get("kind", rt.kind), old.get("apiVersion", rt.api_version)
        check_shape(rt, patched)
        if not rt.crd:
            schema.check_types(patched)
        if strict_fields(req):
            check_known_fields(rt, patched)
        if _meta(patched).get("name") != info.name:
            raise ApiError(400, "the name of the object does not match the name on the URL")
        try:
            expected = parse_rv(_meta(patched).get("resourceVersion"))
        except StoreError as exc:
            raise ApiError(400, "invalid resourceVersion") from exc
        return self._apply_update(info, rt, user, patched, expected)

    def _delete_options(self, req: Request, info: RequestInfo) -> dict[str, Any]:
        opts: dict[str, Any] = {}
        if req.body.strip():
            body = self._body(req, allow_yaml=False)
            if isinstance(body, dict):
                opts = body
        if "gracePeriodSeconds" in info.query:
            opts["gracePeriodSeconds"] = _int_param(info.query["gracePeriodSeconds"], 0, 10 ** 9)
        return opts

    def _delete(self, req: Request, info: RequestInfo, rt: ResourceType, user: User) -> Response:
        opts = self._delete_options(req, info)
        old = self._load(rt, info.namespace, info.name)
        pre = opts.get("preconditions") or {}
        if pre.get("uid") and pre["uid"] != _meta(old).get("uid"):
            raise conflict(rt.resource, info.name, rt.group)
        try:
            expected = parse_rv(pre.get("resourceVersion"))
        except StoreError as exc:
            raise ApiError(400, "invalid resourceVersion") from exc
        self._admit(user, "DELETE", rt, "", info.name, None, old)
        if self._dry_run(info):
            return self._ok(200, old, rt)
        return self._do_delete(rt, info.namespace if rt.namespaced else "", info.name, old, expected,
                               opts.get("gracePeriodSeconds"))

    def _do_delete(self, rt: ResourceType, ns: str, name: str, old: dict[str, Any], expected: int | None,
                   grace: int | None) -> Response:
        meta = _meta(old)
        graceful = False
        if rt.storage_key == "/pods" and (old.get("spec") or {}).get("nodeName"):
            # bound pods terminate gracefully: the node finishes the deletion (grace 0)
            period = grace if grace is not None else int((old.get("spec") or {}).get(
                "terminationGracePeriodSeconds", 30) or 0)
            phase = (old.get("status") or {}).get("phase")
            graceful = period > 0 and phase not in ("Succeeded", "Failed")
        if meta.get("finalizers") or graceful:
            if meta.get("deletionTimestamp"):
                if not graceful or grace != 0:
                    return self._ok(200, old, rt)
            else:
                new = json_copy(old)
                _meta(new)["deletionTimestamp"] = rfc3339(self.clock())
                if graceful:
                    _meta(new)["deletionGracePeriodSeconds"] = grace if grace is not None else int(
                        (old.get("spec") or {}).get("terminationGracePeriodSeconds", 30) or 0)
                if "generation" in meta:
                    _meta(new)["generation"] = int(meta["generation"]) + 1
                try:
                    stored = self.store.update(rt.storage_key, ns, name, new, expected_rv=expected,
                                               index=self._index(rt, new))
                except Conflict as exc:
                    raise conflict(rt.resource, name, rt.group) from exc
                return self._ok(200, stored, rt)
        try:
            gone = self.store.delete(rt.storage_key, ns, name, expected_rv=expected)
        except Conflict as exc:
            raise conflict(rt.resource, name, rt.group) from exc
        except NotFound as exc:
            raise not_found(rt.resource, name, rt.group) from exc
        self._cascade(rt, gone)
        return self._ok(200, gone, rt)

    def _cascade(self, rt: ResourceType, gone: dict[str, Any]) -> None:
        """Remove what cannot outlive its owner: a namespace's objects, a CRD's instances."""
        name = _meta(gone).get("name", "")
        if rt.storage_key == "/namespaces":
            for t in self.registry.all():
                if not t.namespaced or t.virtual:
                    continue
                for obj_name in self.store.names(t.storage_key, name):
                    if self.store.get_raw(t.storage_key, name, obj_name) is not None:
                        self.store.delete(t.storage_key, name, obj_name)
        elif rt.storage_key == "apiextensions.k8s.io/customresourcedefinitions":
            spec = gone.get("spec") or {}
            key = f"{spec.get('group')}/{(spec.get('names') or {}).get('plural')}"
            for raw in self.store.list_raw(key)[1]:
                m = json.loads(raw)["metadata"]
                self.store.delete(key, m.get("namespace", ""), m["name"])

    def _delete_collection(self, req: Request, info: RequestInfo, rt: ResourceType, user: User) -> Response:
        labels, fields = self._selectors(info, rt)
        namespace = info.namespace if rt.namespaced and info.namespace else None
        _, raws = self.store.list_raw(rt.storage_key, namespace)
        deleted = []
        for raw in raws:
            listed = _meta(json.loads(raw))
            obj = self.store.get(rt.storage_key, listed.get("namespace", ""), listed["name"])  # newest state
            if obj is None:
                continue
            if not (labels.matches(_meta(obj).get("labels")) and fields_match(obj, fields)):
                continue
            m = _meta(obj)
            self._admit(user, "DELETE", rt, "", m["name"], None, obj)
            if self._dry_run(info):
                continue
            resp = self._do_delete(rt, m.get("namespace", ""), m["name"], obj, None, None)
            deleted.append(json.loads(resp.body))
        return Response(200, _dumps({"kind": rt.list_kind, "apiVersion": rt.api_version,
                                     "metadata": {"resourceVersion": str(self.store.current_rv)},
                                     "items": deleted}))

    def _evict(self, req: Request, info: RequestInfo, rt: ResourceType, user: User) -> Response:
        if rt.storage_key != "/pods":
            raise ApiError(405, "method not allowed")
        old = self._load(rt, info.namespace, info.name)
        self._admit(user, "CREATE", rt, "eviction", info.name, None, old)
        self._do_delete(rt, info.namespace, info.name, old, None, None)
        return Response(201, _dumps(status_body(201, "", "")))
