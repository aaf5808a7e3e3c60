"""Kubernetes API semantics over the store: one request in, one response (or a watch) out.

This is the part of the API server that knows Kubernetes: request routing, impersonation,
authorization (Node + RBAC), admission (NodeRestriction, RBAC escalation checks),
object lifecycle (uid, creationTimestamp, generation, resourceVersion preconditions,
finalizers, graceful pod deletion), list/watch with selectors, discovery, access
reviews and CRDs. It does no socket I/O: the HTTP shell (:mod:`kedge.apiserver.http`)
hands it an authenticated :class:`Request` and writes back the :class:`Response` or
streams the :class:`Watch`. The clock is injected (``clock``) so tests control time.
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from kedge.apiserver import decoding, podlog
from kedge.apiserver.admission import Admission, admission_notes
from kedge.apiserver.decoding import BodyDecoding
from kedge.apiserver.discovery import _SUBRESOURCE_VERBS, Discovery
from kedge.apiserver.model import (
    BOOTSTRAP_NAMESPACES,
    LogFetch,
    LogStream,
    Request,
    Response,
    User,
    _dumps,
    _meta,
    _safe_message,
    rfc3339,
)
from kedge.apiserver.patch import PatchError
from kedge.apiserver.rbac_admission import RbacAdmission
from kedge.apiserver.reads import ReadHandlers
from kedge.apiserver.request import BadRequest, RequestInfo, parse_request
from kedge.apiserver.resources import CRDError, Registry, ResourceType, from_crd
from kedge.apiserver.reviews import Reviews
from kedge.apiserver.status import ApiError, already_exists, conflict, not_found, status_body
from kedge.apiserver.tables import TableRendering
from kedge.apiserver.tokens import Tokens
from kedge.apiserver.validation import Validation
from kedge.apiserver.watch import Watch, WatchHandlers
from kedge.apiserver.writes import WriteHandlers
from kedge.authz.bootstrap import authorize_chain, bootstrap_cluster_role_bindings, bootstrap_cluster_roles
from kedge.authz.labels import (
    SelectorError,
)
from kedge.authz.node import NodeGraph
from kedge.authz.rbac import (
    AUTHENTICATED,
    RBAC_GROUP,
    Attributes,
    Decision,
    Policy,
)
from kedge.store.sqlite import (
    AlreadyExists,
    Conflict,
    NotFound,
    Store,
    StoreError,
    WatchEvent,
)

log = logging.getLogger(__name__)  # one logger for the API server's handlers


__all__ = ["API", "LogFetch", "LogStream", "Request", "Response", "User", "Watch"]


class API(BodyDecoding, ReadHandlers, TableRendering, WatchHandlers, WriteHandlers, Validation,
          RbacAdmission, Admission, Tokens, Reviews, Discovery):
    """The API server's request handler (synchronous; runs on the event-loop thread)."""

    def __init__(self, store: Store, *, clock: Callable[[], float] = time.time,
                 node_authorization: bool = True, max_body_bytes: int = 3 * 1024 * 1024,
                 sa_key: ec.EllipticCurvePrivateKey | None = None) -> None:
        self.store = store
        self.sa_key = sa_key
        self.clock = clock
        self.node_authorization = node_authorization
        self.max_body_bytes = max_body_bytes
        self.registry = Registry()
        self.graph = NodeGraph()
        self._policy: Policy | None = None
        self._watchers: set[Watch] = set()
        self._yaml_slot = asyncio.Semaphore(1)  # YAML bodies decoded off the loop, one at a time
        # node name -> its tunnel session (cloudcore sets it; a lone `kedge apiserver` has no tunnels).
        self.node_session: Callable[[str], Any] = lambda node: None
        self._bootstrap()
        self._load_indexes()
        store.subscribe(self._on_event)
    def _bootstrap(self) -> None:
        now = rfc3339(self.clock())
        for ns in BOOTSTRAP_NAMESPACES:
            if self.store.get_raw("/namespaces", "", ns) is None:
                self.store.create("/namespaces", "", ns, {
                    "apiVersion": "v1", "kind": "Namespace",
                    "metadata": {"name": ns, "uid": str(uuid.uuid4()), "creationTimestamp": now,
                                 "labels": {"kubernetes.io/metadata.name": ns}},
                    "spec": {}, "status": {"phase": "Active"}})
        for key, objs in (("rbac.authorization.k8s.io/clusterroles", bootstrap_cluster_roles()),
                          ("rbac.authorization.k8s.io/clusterrolebindings", bootstrap_cluster_role_bindings())):
            for obj in objs:
                name = obj["metadata"]["name"]
                if self.store.get_raw(key, "", name) is None:
                    obj["metadata"].update({"uid": str(uuid.uuid4()), "creationTimestamp": now})
                    self.store.create(key, "", name, obj)
        # KubeEdge's device CRDs are part of the cluster from the start (as `kedge manifests` ships them).
        from kedge.cloud.devicecontroller.crds import CRDS

        crd_key = "apiextensions.k8s.io/customresourcedefinitions"
        for crd in CRDS:
            obj = copy.deepcopy(crd)
            name = obj["metadata"]["name"]
            if self.store.get_raw(crd_key, "", name) is None:
                obj["metadata"].update({"uid": str(uuid.uuid4()), "creationTimestamp": now, "generation": 1})
                self._crd_status(obj, now)
                self.store.create(crd_key, "", name, obj)
    def _load_indexes(self) -> None:
        for raw in self.store.list_raw("/pods")[1]:
            self.graph.set_pod(json.loads(raw))
        for raw in self.store.list_raw("/persistentvolumeclaims")[1]:
            self.graph.set_pvc(json.loads(raw))
        for raw in self.store.list_raw("/persistentvolumes")[1]:
            self.graph.set_pv(json.loads(raw))
        for raw in self.store.list_raw("storage.k8s.io/volumeattachments")[1]:
            self.graph.set_volume_attachment(json.loads(raw))
        for raw in self.store.list_raw("apiextensions.k8s.io/customresourcedefinitions")[1]:
            self._register_crd(json.loads(raw))
    def _register_crd(self, crd: dict[str, Any]) -> None:
        name = _meta(crd).get("name", "")
        try:
            self.registry.set_crd(name, from_crd(crd))
        except CRDError:
            self.registry.remove_crd(name)
    def _on_event(self, ev: WatchEvent) -> None:
        # Index maintenance first; whatever it does with one odd object, the event still
        # reaches every open watch (a listener's failure must never hide an event).
        try:
            self._index_event(ev)
        except Exception:  # noqa: BLE001 - logged with the object's key; the watches below still run
            log.exception("index update failed on %s %s %s/%s", ev.type, ev.resource, ev.namespace, ev.name)
        if self._watchers:
            self._dispatch(ev)
    def _index_event(self, ev: WatchEvent) -> None:
        """Keep the node graph, the RBAC policy cache and the CRD registry in step with ``ev``."""
        if ev.resource == "/pods":
            if ev.type == "DELETED":
                self.graph.remove_pod(ev.namespace, ev.name)
            else:
                self.graph.set_pod(ev.obj())
        elif ev.resource == "/persistentvolumeclaims":
            if ev.type == "DELETED":
                self.graph.remove_pvc(ev.namespace, ev.name)
            else:
                self.graph.set_pvc(ev.obj())
        elif ev.resource == "/persistentvolumes":
            if ev.type == "DELETED":
                self.graph.remove_pv(ev.name)
            else:
                self.graph.set_pv(ev.obj())
        elif ev.resource == "storage.k8s.io/volumeattachments":
            if ev.type == "DELETED":
                self.graph.remove_volume_attachment(ev.name)
            else:
                self.graph.set_volume_attachment(ev.obj())
        elif ev.resource.startswith(RBAC_GROUP + "/"):
            self._policy = None
        elif ev.resource == "apiextensions.k8s.io/customresourcedefinitions":
            if ev.type == "DELETED":
                self.registry.remove_crd(ev.name)
            else:
                self._register_crd(ev.obj())
    @property
    def policy(self) -> Policy:
        if self._policy is None:
            def load(res: str) -> list[dict[str, Any]]:
                return [json.loads(r) for r in self.store.list_raw(f"{RBAC_GROUP}/{res}")[1]]
            self._policy = Policy.build(cluster_roles=load("clusterroles"), roles=load("roles"),
                                        cluster_role_bindings=load("clusterrolebindings"),
                                        role_bindings=load("rolebindings"))
        return self._policy
    def authorize(self, attrs: Attributes) -> Decision:
        return authorize_chain(attrs, self.policy, self.graph, node_authorization=self.node_authorization)
    def handle(self, req: Request) -> Response | Watch:
        """Serve one request; its writes are durable when this returns (blocks on the disk)."""
        with self.store.deferred() as writes:
            result = self._handle(req)
        if writes:
            result = self._settle(result, self.store.wait(writes))
        if isinstance(result, LogFetch):  # needs the node's answer: only the async server can wait for it
            err = ApiError(503, "pod logs are served by the running API server only")
            out = Response(err.status, _dumps(err.body()))
            out.audit = dict(result.audit, responseStatus={"code": err.status})
            return out
        return result
    async def handle_async(self, req: Request) -> Response | Watch:
        """Serve one request; while its writes reach the disk (with others', in one commit) the loop runs on."""
        if req.body and decoding.content_type(req) in decoding.YAML_TYPES:
            # YAML is slow to decode: one body at a time, in a worker thread, so the loop serves others.
            async with self._yaml_slot:
                req.decoded_yaml = await asyncio.to_thread(decoding.decode_yaml_outcome, req.body)
        with self.store.deferred() as writes:
            result = self._handle(req)
        if writes:
            result = self._settle(result, await self.store.wait_async(writes))
        if isinstance(result, LogFetch):
            return await self._serve_log(result)
        return result

    async def _serve_log(self, fetch: LogFetch) -> Response | LogStream:
        lr = fetch.request
        try:
            data, end = await podlog.read(self.node_session, lr)
        except ApiError as exc:
            out = Response(exc.status, _dumps(exc.body()))
            out.audit = dict(fetch.audit, responseStatus={"code": exc.status})
            return out
        audit = dict(fetch.audit, responseStatus={"code": 200})
        if not lr.follow:
            out = Response(200, data, content_type="text/plain")
            out.audit = audit
            return out

        def pod_exists() -> bool:
            return self.store.get_raw(fetch.storage_key, lr.namespace, lr.pod, committed=True) is not None

        return LogStream(initial=data, chunks=podlog.follow(self.node_session, lr, end, pod_exists), audit=audit)
    def _settle(self, result: Response | Watch, failure: BaseException | None) -> Response | Watch:
        """The answer once the request's writes are published: as decided, or the write's failure."""
        if failure is None or isinstance(result, Watch):
            return result
        ref = result.audit.get("objectRef") or {}
        resource, name, group = str(ref.get("resource", "")), str(ref.get("name", "")), str(ref.get("apiGroup", ""))
        if isinstance(failure, Conflict):
            err = conflict(resource, name, group)
        elif isinstance(failure, AlreadyExists):
            err = already_exists(resource, name, group)
        elif isinstance(failure, NotFound):
            err = not_found(resource, name, group)
        elif isinstance(failure, StoreError):
            err = ApiError(400, "the object cannot be stored")
        else:
            log.error("write failed for %s %s: %s", result.audit.get("verb"), str(result.audit.get("requestURI"))[:200],
                      getattr(failure, "code", type(failure).__name__))
            err = ApiError(500, "an internal error occurred")
        out = Response(err.status, _dumps(err.body()))
        out.audit = dict(result.audit, responseStatus={"code": err.status})
        return out
    def _handle(self, req: Request) -> Response | Watch:
        audit: dict[str, Any] = {"requestURI": req.target[:2048], "verb": req.method.lower(),
                                 "user": {"username": req.user.name, "groups": list(req.user.groups)}}
        with admission_notes() as notes:
            result = self._handle_noted(req, audit)
        if notes.annotations:  # admission's audit annotations (PodSecurity), allowed or refused
            audit.setdefault("annotations", {}).update(notes.annotations)
        if notes.warnings and isinstance(result, Response):
            result.warnings = notes.warnings
        return result

    def _handle_noted(self, req: Request, audit: dict[str, Any]) -> Response | Watch:
        try:
            info = parse_request(req.method, req.target)
            audit["verb"] = info.verb
            if info.resource_request:
                audit["objectRef"] = {k: v for k, v in (
                    ("resource", info.resource), ("namespace", info.namespace), ("name", info.name),
                    ("apiGroup", info.api_group), ("apiVersion", info.api_version),
                    ("subresource", info.subresource)) if v}
            user = self._impersonate(req, audit)
            result = self._route(req, info, user, audit)
        except ApiError as exc:
            result = Response(exc.status, _dumps(exc.body()))
        except (BadRequest, SelectorError, PatchError) as exc:
            result = Response(400, _dumps(status_body(400, "BadRequest", _safe_message(exc))))
        except (AttributeError, TypeError, KeyError, IndexError, ValueError) as exc:
            # A body whose shape a handler did not expect: the client's object is malformed.
            # Logged for us; the client gets a generic 400, never the exception text.
            log.warning("malformed object in %s %s: %s", req.method, req.target[:200], type(exc).__name__,
                        exc_info=log.isEnabledFor(logging.DEBUG))
            result = Response(400, _dumps(status_body(400, "BadRequest", "the object is malformed")))
        if isinstance(result, (Watch, LogFetch)):
            result.audit = audit
        else:
            audit.setdefault("responseStatus", {"code": result.status})
            result.audit = audit
        return result
    def _impersonate(self, req: Request, audit: dict[str, Any]) -> User:
        imp_user = req.header("impersonate-user")
        imp_groups = req.headers.get("impersonate-group", [])
        imp_uid = req.header("impersonate-uid")
        extras = [k for k in req.headers if k.startswith("impersonate-extra-")]
        if imp_user is None and not imp_groups and imp_uid is None and not extras:
            return req.user
        if imp_user is None:
            raise ApiError(400, "impersonating groups, uid or extra requires impersonating a user")
        if len(imp_groups) > 64 or extras:
            raise ApiError(400, "unsupported impersonation request")
        checks = [("users", imp_user)] + [("groups", g) for g in imp_groups]
        if imp_uid is not None:
            checks.append(("uids", imp_uid))
        for resource, name in checks:
            group = "authentication.k8s.io" if resource == "uids" else ""
            attrs = Attributes(user=req.user.name, groups=req.user.groups, verb="impersonate",
                               api_group=group, resource=resource, name=name)
            if not self.authorize(attrs).allowed:
                audit["annotations"] = {"authorization.k8s.io/decision": "forbid"}
                raise ApiError(403, f'{resource} "{name}" is forbidden: User "{req.user.name}" cannot impersonate '
                               f'resource "{resource}" in API group "{group}" at the cluster scope',
                               details={"name": name, "kind": resource})
        groups = list(imp_groups)
        if AUTHENTICATED not in groups and imp_user != "system:anonymous":
            groups.append(AUTHENTICATED)
        audit["impersonatedUser"] = {"username": imp_user, "groups": groups}
        return User(imp_user, tuple(groups), imp_uid or "")
    def _attrs(self, info: RequestInfo, user: User) -> Attributes:
        if info.resource_request:
            return Attributes(user=user.name, groups=user.groups, verb=info.verb, namespace=info.namespace,
                              api_group=info.api_group, resource=info.resource, subresource=info.subresource,
                              name=info.name, path=info.path, field_selector=info.field_selector)
        return Attributes(user=user.name, groups=user.groups, verb=info.verb, resource_request=False,
                          path=info.path)
    def _route(self, req: Request, info: RequestInfo, user: User, audit: dict[str, Any]) -> Response | Watch:
        decision = self.authorize(self._attrs(info, user))
        audit["annotations"] = {"authorization.k8s.io/decision": "allow" if decision.allowed else "forbid",
                                "authorization.k8s.io/reason": decision.reason[:512]}
        if not decision.allowed:
            raise self._forbidden(info, user, decision)
        if not info.resource_request:
            return self._non_resource(req, info)
        rt = self.registry.lookup(info.api_group, info.api_version, info.resource)
        if rt is None or info.extra_parts:
            raise ApiError(404, "the server could not find the requested resource")
        if info.subresource and info.subresource not in rt.subresources:
            raise ApiError(404, "the server could not find the requested resource")
        if not _verb_allowed(rt, info.verb, info.subresource):
            raise ApiError(405, f"{info.verb} is not supported on {rt.resource}")
        if rt.namespaced and info.verb in ("create",) and not info.namespace:
            raise ApiError(404, "the server could not find the requested resource")
        if not rt.namespaced and info.namespace:
            raise ApiError(404, "the server could not find the requested resource")
        if info.name and not rt.valid_name(info.name) and info.verb != "list" and info.verb != "watch":
            raise not_found(rt.resource, info.name, rt.group)
        if rt.virtual:
            return self._review(req, info, rt, user)
        verb = info.verb
        if verb == "get":
            if info.subresource == "log" and rt.storage_key == "/pods":
                return self._log(info, rt)
            if info.subresource not in ("", "status", "ephemeralcontainers"):
                raise ApiError(405, "method not allowed")
            return self._get(req, info, rt)
        if verb == "list":
            return self._list(req, info, rt)
        if verb == "watch":
            return self._watch(req, info, rt)
        if verb == "create":
            if info.subresource == "eviction":
                return self._evict(req, info, rt, user)
            if info.subresource == "token":
                return self._token_request(req, info, rt, user)
            if info.subresource:
                raise ApiError(405, "method not allowed")
            return self._create(req, info, rt, user)
        if verb == "update":
            return self._update(req, info, rt, user)
        if verb == "patch":
            return self._patch(req, info, rt, user)
        if verb == "delete":
            if info.subresource:
                raise ApiError(405, "method not allowed")
            return self._delete(req, info, rt, user)
        if verb == "deletecollection":
            return self._delete_collection(req, info, rt, user)
        raise ApiError(405, "method not allowed")
    def _forbidden(self, info: RequestInfo, user: User, decision: Decision) -> ApiError:
        if not info.resource_request:
            return ApiError(403, f'forbidden: User "{user.name}" cannot {info.verb} path "{info.path}"')
        res = f"{info.resource}/{info.subresource}" if info.subresource else info.resource
        qual = f"{info.resource}.{info.api_group}" if info.api_group else info.resource
        what = f'{qual} "{info.name}"' if info.name else qual
        scope = f'in the namespace "{info.namespace}"' if info.namespace else "at the cluster scope"
        msg = (f'{what} is forbidden: User "{user.name}" cannot {info.verb} resource "{res}" '
               f'in API group "{info.api_group}" {scope}')
        if decision.reason:
            msg += f": {decision.reason}"
        return ApiError(403, msg, details={"name": info.name, "group": info.api_group, "kind": info.resource})


def _verb_allowed(rt: ResourceType, verb: str, sub: str) -> bool:
    if sub:
        return verb in _SUBRESOURCE_VERBS.get(sub, ())
    return verb in rt.verbs
