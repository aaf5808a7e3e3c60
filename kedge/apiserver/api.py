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

import base64
import collections
import copy
import dataclasses
import datetime as _dt
import json
import logging
import secrets
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any

import yaml
from cryptography.hazmat.primitives.asymmetric import ec

from kedge import __version__
from kedge.apiserver import openapi
from kedge.apiserver.protobuf import ProtobufError, decode_review
from kedge.apiserver.patch import PatchError, json_copy, json_patch, merge_patch, strategic_merge_patch
from kedge.apiserver.request import BadRequest, RequestInfo, parse_request
from kedge.apiserver import podlog, satoken, schema
from kedge.apiserver.resources import CRDError, Registry, ResourceType, from_crd
from kedge.apiserver.status import ApiError, already_exists, conflict, invalid, not_found, status_body
from kedge.authz.bootstrap import authorize_chain, bootstrap_cluster_role_bindings, bootstrap_cluster_roles
from kedge.authz.labels import (
    FieldRequirement, SelectorError, field_value, fields_match, parse_field_selector, parse_label_selector,
    selector_from_struct,
)
from kedge.authz import podrefs
from kedge.authz.node import NodeGraph, admit_node_request, node_identity
from kedge.authz.rbac import (
    AUTHENTICATED, FULL_AUTHORITY, RBAC_GROUP, Attributes, Decision, Policy, Rule, applicable_rules,
    binding_allowed, default_subject, escalate_allowed, has_aggregation_rule, only_gc_fields_change, repr_go,
    validate_rule, validate_subject,
)
from kedge.store.sqlite import (
    AlreadyExists, Conflict, Expired, NotFound, Store, StoreError, WatchEvent, parse_rv,
)

log = logging.getLogger(__name__)

MAX_JSON_DEPTH = 64
MAX_WATCH_BACKLOG = 10_000
MAX_WATCH_BACKLOG_BYTES = 64 * 1024 * 1024
DEFAULT_WATCH_TIMEOUT_S = 1800
MAX_WATCH_TIMEOUT_S = 3600
MAX_LIST_LIMIT = 10_000
BOOTSTRAP_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
JSON = "application/json"


@dataclasses.dataclass(frozen=True)
class User:
    name: str
    groups: tuple[str, ...]
    uid: str = ""


@dataclasses.dataclass
class Request:
    method: str
    target: str
    headers: dict[str, list[str]]  # lower-cased names
    body: bytes
    user: User

    def header(self, name: str) -> str | None:
        v = self.headers.get(name.lower())
        return v[-1] if v else None


@dataclasses.dataclass
class Response:
    status: int
    body: bytes
    content_type: str = JSON
    audit: dict[str, Any] = dataclasses.field(default_factory=dict)


class Watch:
    """A live watch: lines queue up here; the HTTP shell drains them.

    The backlog of live events is bounded: a consumer that falls ``MAX_WATCH_BACKLOG``
    lines (or ``MAX_WATCH_BACKLOG_BYTES``) behind is dropped (``overflowed``) and must
    re-watch -- a slow client can't make us buffer without bound. The initial state
    (synthetic ADDED events) is queued separately: it is one snapshot of the store, already
    bounded by what a LIST would return.
    """

    def __init__(self, api: "API", rt: ResourceType, namespace: str | None, name: str,
                 labels: Any, fields: tuple[FieldRequirement, ...], bookmarks: bool, timeout_s: float) -> None:
        self.api, self.rt, self.namespace, self.name = api, rt, namespace, name
        self.labels, self.fields, self.bookmarks, self.timeout_s = labels, fields, bookmarks, timeout_s
        self.lines: collections.deque[bytes] = collections.deque()
        self._live = 0  # live (non-initial) lines queued
        self._live_bytes = 0
        self.overflowed = False
        self.closed = False
        self.notify: Callable[[], None] = lambda: None
        self.audit: dict[str, Any] = {}
        self.table = False  # kubectl get -w asks for server-side printed rows
        # The watch already has (listed or replayed) every change up to here; live events at or
        # below it are not sent again.
        self.start_rv = 0
        # A watch whose only filter is "<indexed field>=<value>" (a node watching its pods) can be
        # skipped without decoding events that belong to other values.
        self.index_value: str | None = None
        if rt.field_index and labels.empty and len(fields) == 1 and fields[0].field == rt.field_index \
                and fields[0].op == "=":
            self.index_value = fields[0].value

    def push(self, line: bytes, *, initial: bool = False) -> None:
        if self.overflowed or self.closed:
            return
        if not initial and (self._live >= MAX_WATCH_BACKLOG or self._live_bytes + len(line) > MAX_WATCH_BACKLOG_BYTES):
            self.overflowed = True
            self.lines.clear()
        else:
            self.lines.append(line)
            if not initial:
                self._live += 1
                self._live_bytes += len(line)
        self.notify()

    def take(self, max_lines: int) -> list[bytes]:
        """Dequeue up to ``max_lines`` lines for sending."""
        out = []
        while self.lines and len(out) < max_lines:
            out.append(self.lines.popleft())
        # Accounting is approximate for mixed initial/live queues; reset when drained.
        if not self.lines:
            self._live = self._live_bytes = 0
        else:
            self._live = max(0, self._live - len(out))
            self._live_bytes = max(0, self._live_bytes - sum(len(x) for x in out))
        return out

    def bookmark_line(self) -> bytes:
        obj = {"kind": self.rt.kind, "apiVersion": self.rt.api_version,
               "metadata": {"resourceVersion": str(max(self.api.store.current_rv, self.start_rv))}}
        return _line("BOOKMARK", json.dumps(obj, separators=(",", ":")))

    def close(self) -> None:
        self.closed = True
        self.api._watchers.discard(self)


def _line(kind: str, data: str) -> bytes:
    return b'{"type":"' + kind.encode() + b'","object":' + data.encode() + b"}\n"


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


class _NoAliasLoader(yaml.SafeLoader):
    """Safe YAML without anchors/aliases: an alias graph would expand exponentially as JSON."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.events.AliasEvent):
            raise yaml.YAMLError("YAML aliases are not accepted")
        return super().compose_node(parent, index)


MAX_JSON_NODES = 1_000_000


def _depth_ok(value: Any, limit: int) -> bool:
    stack = [(value, 1)]
    seen = 0
    while stack:
        v, d = stack.pop()
        seen += 1
        if d > limit or seen > MAX_JSON_NODES:
            return False
        if isinstance(v, dict):
            stack.extend((x, d + 1) for x in v.values())
        elif isinstance(v, list):
            stack.extend((x, d + 1) for x in v)
    return True


def rfc3339(ts: float) -> str:
    return _dt.datetime.fromtimestamp(int(ts), tz=_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_rfc3339(s: str) -> float | None:
    try:
        return _dt.datetime.strptime(s, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=_dt.timezone.utc).timestamp()
    except (TypeError, ValueError):
        return None


def _age(created: str | None, now: float) -> str:
    ts = _parse_rfc3339(created or "")
    if ts is None:
        return "<unknown>"
    s = max(0, int(now - ts))
    if s < 120:
        return f"{s}s"
    if s < 7200:
        return f"{s // 60}m"
    if s < 172800:
        return f"{s // 3600}h"
    return f"{s // 86400}d"


def _meta(obj: dict[str, Any]) -> dict[str, Any]:
    m = obj.get("metadata")
    if not isinstance(m, dict):
        m = {}
        obj["metadata"] = m
    return m


def _without(obj: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if k not in keys}


@dataclasses.dataclass
class LogFetch:
    """``pods/NAME/log``, checked and authorized; the node is asked in :meth:`API.handle_async`."""

    request: podlog.LogRequest
    storage_key: str
    audit: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class LogStream:
    """``kubectl logs -f``: what the log held, then what is appended (the HTTP shell streams it)."""

    initial: bytes
    chunks: Any  # AsyncIterator[bytes]
    audit: dict[str, Any] = dataclasses.field(default_factory=dict)


class API:
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
        # node name -> its tunnel session (cloudcore sets it; a lone `kedge apiserver` has no tunnels).
        self.node_session: Callable[[str], Any] = lambda node: None
        self._bootstrap()
        self._load_indexes()
        store.subscribe(self._on_event)

    # -- start-up ----------------------------------------------------------------

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

    # -- entry point -------------------------------------------------------------

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

    # -- bodies ------------------------------------------------------------------

    def _body(self, req: Request, *, allow_yaml: bool = True) -> Any:
        if len(req.body) > self.max_body_bytes:
            raise ApiError(413, "the request body is too large")
        ctype = (req.header("content-type") or JSON).split(";")[0].strip().lower()
        try:
            if ctype in ("application/yaml", "application/apply-patch+yaml") and allow_yaml:
                value = yaml.load(req.body, Loader=_NoAliasLoader)  # nosec B506 - a SafeLoader subclass  # kedge-lint: allow KL004 - _NoAliasLoader subclasses SafeLoader and also refuses aliases
            elif ctype == "application/vnd.kubernetes.protobuf" and allow_yaml:
                try:
                    value = decode_review(req.body)
                except ProtobufError as exc:
                    raise ApiError(415, f"the body of the request was in an unknown format: {ctype}") from exc
            elif ctype in ("application/json", "application/merge-patch+json", "application/json-patch+json",
                           "application/strategic-merge-patch+json", "*/*", ""):
                value = json.loads(req.body)
            else:
                raise ApiError(415, f"the body of the request was in an unknown format: {ctype}")
        except (ValueError, yaml.YAMLError, RecursionError, UnicodeDecodeError) as exc:
            raise ApiError(400, "the request body could not be decoded") from exc
        if not _depth_ok(value, MAX_JSON_DEPTH):
            raise ApiError(400, "the request body is nested too deeply")
        return value

    def _object_body(self, req: Request, info: RequestInfo, rt: ResourceType) -> dict[str, Any]:
        obj = self._body(req)
        if not isinstance(obj, dict):
            raise ApiError(400, "the request body must be a JSON object")
        kind = obj.get("kind")
        if kind not in (None, rt.kind) and not (info.subresource and kind):
            raise ApiError(400, f"the object provided is unrecognized (must be of kind {rt.kind}, not {kind})")
        api_version = obj.get("apiVersion")
        if api_version not in (None, rt.api_version) and not info.subresource:
            raise ApiError(400, f"the API version in the data ({api_version}) does not match the expected "
                           f"API version ({rt.api_version})")
        check_shape(rt, obj)
        meta = obj.get("metadata", {})
        for key in ("labels", "annotations"):
            m = meta.get(key)
            if m is not None and (not isinstance(m, dict) or not all(
                    isinstance(k, str) and isinstance(v, str) for k, v in m.items())):
                raise invalid(rt.kind, str(meta.get("name", "")), f"metadata.{key} must map strings to strings")
        fin = meta.get("finalizers")
        if fin is not None and (not isinstance(fin, list) or not all(isinstance(f, str) for f in fin)):
            raise invalid(rt.kind, str(meta.get("name", "")), "metadata.finalizers must be a list of strings")
        if strict_fields(req) and not info.subresource:
            check_known_fields(rt, obj)
        meta.pop("managedFields", None)
        obj["kind"], obj["apiVersion"] = (rt.kind, rt.api_version) if not info.subresource else (
            obj.get("kind", rt.kind), obj.get("apiVersion", rt.api_version))
        if not rt.crd:
            schema.check_types(obj)
        return obj

    def _ok(self, status: int, obj: Any, rt: ResourceType | None = None) -> Response:
        if rt is not None and rt.crd and isinstance(obj, dict):
            obj["apiVersion"] = rt.api_version
        return Response(status, _dumps(obj))

    def _load(self, rt: ResourceType, namespace: str, name: str) -> dict[str, Any]:
        obj = self.store.get(rt.storage_key, namespace if rt.namespaced else "", name)
        if obj is None:
            raise not_found(rt.resource, name, rt.group)
        return obj

    # -- read ----------------------------------------------------------------

    def _log(self, info: RequestInfo, rt: ResourceType) -> LogFetch:
        raw = self.store.get_raw(rt.storage_key, info.namespace, info.name, committed=True)
        if raw is None:
            raise not_found(rt.resource, info.name, rt.group)
        return LogFetch(podlog.parse(info.query, json.loads(raw)), rt.storage_key)

    def _get(self, req: Request, info: RequestInfo, rt: ResourceType) -> Response:
        raw = self.store.get_raw(rt.storage_key, info.namespace, info.name, committed=True)
        if raw is None:
            raise not_found(rt.resource, info.name, rt.group)
        if _wants_table(req):
            return self._table(rt, [json.loads(raw)], str(self.store.current_rv), req)
        if rt.crd:
            return self._ok(200, json.loads(raw), rt)
        return Response(200, raw.encode())

    def _selectors(self, info: RequestInfo, rt: ResourceType) -> tuple[Any, tuple[FieldRequirement, ...]]:
        labels = parse_label_selector(info.query.get("labelSelector"))
        fields = info.field_selector
        allowed = ("metadata.name", "metadata.namespace") + rt.selectable_fields
        for r in fields:
            if r.field not in allowed:
                raise ApiError(400, f'field label not supported: {r.field}')
        return labels, fields

    def _list(self, req: Request, info: RequestInfo, rt: ResourceType) -> Response:
        labels, fields = self._selectors(info, rt)
        fields = _named(info, fields)
        namespace = info.namespace if rt.namespaced and info.namespace else None
        index = None
        if rt.field_index:
            for r in fields:
                if r.field == rt.field_index and r.op == "=":
                    index = r.value
        limit = _int_param(info.query.get("limit"), 0, MAX_LIST_LIMIT)
        after = None
        token = info.query.get("continue")
        if token:
            after = _decode_continue(token)
        list_rv, raws = self.store.list_raw(rt.storage_key, namespace, index=index, after=after,
                                            limit=(limit + 1) if limit else None)
        filtering = not labels.empty or bool(fields) or (rt.crd and not all(_served_as(r, rt.api_version)
                                                                          for r in raws))
        more = None
        if limit and len(raws) > limit:
            raws = raws[:limit]
            more = raws[-1]
        meta: dict[str, Any] = {"resourceVersion": str(list_rv)}
        if more is not None:
            last = json.loads(more)["metadata"]
            meta["continue"] = _encode_continue(last.get("namespace", ""), last["name"])
        if _wants_table(req) or filtering:
            objs = [json.loads(r) for r in raws]
            objs = [o for o in objs if labels.matches(_meta(o).get("labels")) and fields_match(o, fields)]
            if rt.crd:
                for o in objs:
                    o["apiVersion"] = rt.api_version
            if _wants_table(req):
                return self._table(rt, objs, str(list_rv), req, meta)
            return Response(200, _dumps({"kind": rt.list_kind, "apiVersion": rt.api_version,
                                         "metadata": meta, "items": objs}))
        head = _dumps({"kind": rt.list_kind, "apiVersion": rt.api_version, "metadata": meta})[:-1]
        return Response(200, head + b',"items":[' + ",".join(raws).encode() + b"]}")

    def _table(self, rt: ResourceType, objs: list[dict[str, Any]], rv: str, req: Request | None,
               meta: dict[str, Any] | None = None) -> Response:
        now = self.clock()
        columns = [{"name": "Name", "type": "string", "format": "name", "description": "Name", "priority": 0}]
        extra: list[tuple[str, Callable[[dict[str, Any]], Any]]] = []
        if rt.resource == "pods":
            def ready(o: dict[str, Any]) -> str:
                cs = (o.get("status") or {}).get("containerStatuses") or []
                total = len((o.get("spec") or {}).get("containers") or [])
                return f"{sum(1 for c in cs if c.get('ready'))}/{total}"
            extra = [("Ready", ready), ("Status", lambda o: (o.get("status") or {}).get("phase", "Unknown")),
                     ("Restarts", lambda o: sum(int(c.get("restartCount", 0)) for c in
                                                (o.get("status") or {}).get("containerStatuses") or [])),
                     ("Age", lambda o: _age(_meta(o).get("creationTimestamp"), now)),
                     ("Node", lambda o: (o.get("spec") or {}).get("nodeName") or "<none>")]
        elif rt.resource == "nodes":
            def node_status(o: dict[str, Any]) -> str:
                for c in (o.get("status") or {}).get("conditions") or []:
                    if c.get("type") == "Ready":
                        return "Ready" if c.get("status") == "True" else "NotReady"
                return "Unknown"
            extra = [("Status", node_status), ("Age", lambda o: _age(_meta(o).get("creationTimestamp"), now)),
                     ("Version", lambda o: ((o.get("status") or {}).get("nodeInfo") or {}).get("kubeletVersion", ""))]
        elif rt.resource == "configmaps" or rt.resource == "secrets":
            extra = [("Data", lambda o: len(o.get("data") or {})),
                     ("Age", lambda o: _age(_meta(o).get("creationTimestamp"), now))]
        elif rt.resource == "namespaces":
            extra = [("Status", lambda o: (o.get("status") or {}).get("phase", "")),
                     ("Age", lambda o: _age(_meta(o).get("creationTimestamp"), now))]
        else:
            extra = [("Age", lambda o: _age(_meta(o).get("creationTimestamp"), now))]
        for title, _ in extra:
            columns.append({"name": title, "type": "integer" if title in ("Restarts", "Data") else "string",
                            "format": "", "description": title, "priority": 1 if title == "Node" else 0})
        include = "Object" if req is not None and "includeObject=Object" in req.target else "Metadata"
        rows = []
        for o in objs:
            m = _meta(o)
            row_obj = o if include == "Object" else {
                "kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": m}
            rows.append({"cells": [m.get("name", "")] + [fn(o) for _, fn in extra], "object": row_obj})
        table = {"kind": "Table", "apiVersion": "meta.k8s.io/v1",
                 "metadata": meta or {"resourceVersion": rv}, "columnDefinitions": columns, "rows": rows}
        return Response(200, _dumps(table))

    def _watch(self, req: Request, info: RequestInfo, rt: ResourceType) -> Watch:
        labels, fields = self._selectors(info, rt)
        fields = _named(info, fields)
        timeout = _int_param(info.query.get("timeoutSeconds"), 0, MAX_WATCH_TIMEOUT_S) or DEFAULT_WATCH_TIMEOUT_S
        bookmarks = info.query.get("allowWatchBookmarks", "").lower() in ("1", "true")
        namespace = info.namespace if rt.namespaced and info.namespace else None
        w = Watch(self, rt, namespace, "", labels, fields, bookmarks, float(timeout))
        w.table = _wants_table(req)
        try:
            rv = parse_rv(info.query.get("resourceVersion"))
        except StoreError as exc:
            raise ApiError(400, "invalid resourceVersion") from exc
        if rv is None or rv == 0:
            w.start_rv, raws = self.store.list_raw(rt.storage_key, namespace)
            for raw in raws:
                self._offer(w, WatchEvent(0, "ADDED", rt.storage_key, "", "", raw), initial=True)
        else:
            try:
                for ev in self.store.events_since(rv, rt.storage_key):
                    if namespace is None or ev.namespace == namespace:
                        self._offer(w, ev)
            except Expired:
                msg = f"too old resource version: {rv} ({self.store.compacted_rv + 1})"
                w.push(_line("ERROR", json.dumps(status_body(410, "Expired", msg))))
                w.closed = True
                return w
            # A resourceVersion from the future (none was handed out) means "from now on".
            w.start_rv = rv if rv <= self.store.latest_rv else self.store.current_rv
        self._watchers.add(w)
        return w

    def _dispatch(self, ev: WatchEvent) -> None:
        cache: dict[str, Any] = {}
        for w in list(self._watchers):
            if w.rt.storage_key != ev.resource or ev.rv <= w.start_rv:
                continue
            if w.namespace is not None and ev.namespace != w.namespace:
                continue
            if w.index_value is not None and w.index_value != ev.index and w.index_value != ev.prev_index:
                continue
            try:
                self._offer(w, ev, cache=cache)
            except Exception:  # noqa: BLE001 - one watch's failure ends that watch, never the others' events
                log.exception("watch of %s failed on %s %s/%s; ending it", w.rt.resource, ev.type, ev.namespace,
                              ev.name)
                w.overflowed = True
                w.lines.clear()
                w.notify()

    def _offer(self, w: Watch, ev: WatchEvent, *, initial: bool = False,
               cache: dict[str, Any] | None = None) -> None:
        """Queue ``ev`` for ``w`` if it passes the watch's selectors (``cache`` shares decoding per event)."""
        cache = {} if cache is None else cache
        needs_filter = not w.labels.empty or bool(w.fields)
        data = ev.data
        if not needs_filter:
            if w.table:
                data = self._table(w.rt, [json.loads(data)], str(ev.rv), None).body.decode()
            elif w.rt.crd:
                data = _rewrite_api_version(data, w.rt.api_version)
            w.push(_line(ev.type, data), initial=initial)
            return
        if "obj" not in cache:
            cache["obj"] = ev.obj()
        obj = cache["obj"]
        now_match = w.labels.matches(_meta(obj).get("labels")) and fields_match(obj, w.fields)
        was_match = None
        if ev.prev is not None and ev.type == "MODIFIED":
            if "prev" not in cache:
                cache["prev"] = json.loads(ev.prev)
            prev = cache["prev"]
            was_match = w.labels.matches(_meta(prev).get("labels")) and fields_match(prev, w.fields)
        kind = ev.type
        if kind == "MODIFIED" and was_match is not None:
            if now_match and not was_match:
                kind = "ADDED"
            elif was_match and not now_match:
                kind, now_match = "DELETED", True
        if not now_match:
            return
        if w.table:
            data = self._table(w.rt, [obj], str(ev.rv), None).body.decode()
        elif w.rt.crd:
            data = _rewrite_api_version(data, w.rt.api_version)
        w.push(_line(kind, data), initial=initial)

    # -- write ---------------------------------------------------------------

    def _dry_run(self, info: RequestInfo) -> bool:
        dry = info.query.get("dryRun")
        if dry not in (None, "", "All"):
            raise ApiError(400, "dryRun must be All")
        return dry == "All"

    def _create(self, req: Request, info: RequestInfo, rt: ResourceType, user: User) -> Response:
        obj = self._object_body(req, info, rt)
        meta = _meta(obj)
        name = meta.get("name") or ""
        if not name and meta.get("generateName"):
            gen = str(meta["generateName"])[:58]
            name = gen + "".join(secrets.choice("bcdfghjklmnpqrstvwxz2456789") for _ in range(5))
        if not isinstance(name, str) or not rt.valid_name(name):
            raise invalid(rt.kind, str(name), rt.name_error(str(name)), rt.group)
        ns = ""
        if rt.namespaced:
            body_ns = meta.get("namespace")
            if body_ns and body_ns != info.namespace:
                raise ApiError(400, "the namespace of the provided object does not match the namespace sent "
                               "on the request")
            ns = info.namespace
            ns_raw = self.store.get_raw("/namespaces", "", ns)
            if ns_raw is None:
                raise ApiError(404, f'namespaces "{ns}" not found',
                               details={"name": ns, "kind": "namespaces"})
            if '"deletionTimestamp"' in ns_raw and _meta(json.loads(ns_raw)).get("deletionTimestamp"):
                raise ApiError(403, f"unable to create new content in namespace {ns} because it is being terminated")
        else:
            meta.pop("namespace", None)
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

    def _validate_rbac(self, rt: ResourceType, obj: dict[str, Any], old: dict[str, Any] | None, user: User,
                       info: RequestInfo, name: str, ns: str) -> None:
        """Kubernetes' RBAC validation, then its escalation checks (rbac policybased storage)."""
        def refuse(reason: str) -> ApiError:
            return ApiError(403, f'{rt.resource}.{rt.group} "{name}" is forbidden: {reason}',
                            details={"name": name, "group": rt.group, "kind": rt.resource})

        def grant_refused(d: Decision) -> ApiError:
            groups = " ".join(repr_go(g) for g in user.groups)
            return refuse(f"user {repr_go(user.name)} (groups=[{groups}]) is attempting to grant RBAC permissions "
                          f"not currently held: {d.reason}")

        gc_only = only_gc_fields_change(obj, old)
        if rt.resource in ("roles", "clusterroles"):
            rules_raw = obj.get("rules") or []
            if not isinstance(rules_raw, list):
                raise invalid(rt.kind, name, "rules must be a list", rt.group)
            for i, raw in enumerate(rules_raw):
                errs = validate_rule(raw, namespaced=rt.resource == "roles")
                if errs:
                    raise invalid(rt.kind, name, f"rules[{i}].{errs[0]}", rt.group)
            rules = [Rule.from_dict(r) for r in rules_raw]
            agg = obj.get("aggregationRule")
            if rt.resource == "clusterroles" and agg is not None:
                sels = agg.get("clusterRoleSelectors") if isinstance(agg, dict) else None
                if not isinstance(sels, list):
                    raise invalid(rt.kind, name, "aggregationRule.clusterRoleSelectors must be a list", rt.group)
                if not sels:
                    raise invalid(rt.kind, name, "aggregationRule.clusterRoleSelectors: Required value: at least "
                                  "one clusterRoleSelector required if aggregationRule is non-nil", rt.group)
                for sel in sels:
                    try:
                        selector_from_struct(sel)
                    except SelectorError as exc:
                        raise invalid(rt.kind, name, "aggregationRule.clusterRoleSelectors: invalid selector",
                                      rt.group) from exc
            if gc_only:
                return
            # The escalate verb is asked with the request's own name: none on a create.
            d = escalate_allowed(self.policy, user.name, user.groups, ns, rt.kind, info.name, rules)
            if not d.allowed:
                raise grant_refused(d)
            if rt.resource == "clusterroles" and (has_aggregation_rule(obj) or has_aggregation_rule(old)):
                # An aggregation rule can gather any role's rules (and, on an old role, keep
                # them from tightening): setting, changing or keeping one needs * on *.*
                d = escalate_allowed(self.policy, user.name, user.groups, ns, rt.kind, info.name, FULL_AUTHORITY)
                if not d.allowed:
                    raise refuse("must have cluster-admin privileges to use the aggregationRule")
            return
        ref = obj.get("roleRef")
        if isinstance(ref, dict) and not ref.get("apiGroup"):
            ref["apiGroup"] = RBAC_GROUP  # rbac/v1 defaulting, as for subjects below
        if not isinstance(ref, dict) or ref.get("kind") not in ("Role", "ClusterRole") or \
                ref.get("apiGroup") != RBAC_GROUP or not ref.get("name"):
            raise invalid(rt.kind, name, "roleRef: a Role or ClusterRole reference is required", rt.group)
        if rt.resource == "clusterrolebindings" and ref["kind"] != "ClusterRole":
            raise invalid(rt.kind, name, "roleRef.kind: Unsupported value", rt.group)
        if old is not None and old.get("roleRef") != ref:
            raise invalid(rt.kind, name, "roleRef: Invalid value: cannot change roleRef", rt.group)
        subjects = obj.get("subjects") or []
        if not isinstance(subjects, list) or not all(isinstance(s, dict) for s in subjects):
            raise invalid(rt.kind, name, "subjects must be a list of objects", rt.group)
        for i, subject in enumerate(subjects):
            default_subject(subject)
            errs = validate_subject(subject, namespaced=rt.resource == "rolebindings")
            if errs:
                raise invalid(rt.kind, name, f"subjects[{i}].{errs[0]}", rt.group)
        if gc_only:
            return
        d = binding_allowed(self.policy, user.name, user.groups, ns, ref)
        if d.not_found is not None:
            # Kubernetes: the role lookup's NotFound, as it is (a binding to a role that does
            # not exist yet needs bind on it, or system:masters).
            raise not_found(d.not_found[0], d.not_found[1], RBAC_GROUP)
        if not d.allowed:
            raise grant_refused(d)

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
        ns = ""
        if rt.namespaced:
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
        else:
            meta.pop("namespace", None)
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
            raise ApiError(415, f"the body of the request was in an unknown format - accepted media types "
                           f"include: application/json-patch+json, application/merge-patch+json, "
                           f"application/strategic-merge-patch+json")
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

    # -- service-account tokens ------------------------------------------------

    def _token_request(self, req: Request, info: RequestInfo, rt: ResourceType, user: User) -> Response:
        if rt.storage_key != "/serviceaccounts" or self.sa_key is None:
            raise ApiError(404, "the server could not find the requested resource")
        sa = self._load(rt, info.namespace, info.name)
        body = self._object_body(req, info, rt)
        spec = body.get("spec") if isinstance(body.get("spec"), dict) else {}
        ref = spec.get("boundObjectRef") if isinstance(spec.get("boundObjectRef"), dict) else None
        ref_name = ref.get("name") if ref is not None and isinstance(ref.get("name"), str) else ""
        pod = self.store.get("/pods", info.namespace, ref_name) if ref_name else None
        # NodeRestriction: a node's token must be bound to a pod on it (uid given and matching).
        self._admit(user, "CREATE", rt, "token", info.name, body, None, namespace=info.namespace, bound_pod=pod)
        audiences = spec.get("audiences") or [satoken.API_AUDIENCE]
        if not isinstance(audiences, list) or not all(isinstance(a, str) and 0 < len(a) <= 256 for a in audiences) \
                or len(audiences) > 16:
            raise invalid("TokenRequest", info.name, "spec.audiences: Invalid value", "authentication.k8s.io")
        expiry = spec.get("expirationSeconds", satoken.DEFAULT_EXPIRATION_S)
        if not isinstance(expiry, int) or isinstance(expiry, bool) or expiry < satoken.MIN_EXPIRATION_S:
            raise invalid("TokenRequest", info.name, "spec.expirationSeconds: may not specify a duration less "
                          "than 10 minutes", "authentication.k8s.io")
        expiry = min(expiry, satoken.MAX_EXPIRATION_S)
        pod_name = pod_uid = ""
        if ref is not None:
            if ref.get("kind") != "Pod":
                raise invalid("TokenRequest", info.name, "spec.boundObjectRef.kind: only Pod is supported",
                              "authentication.k8s.io")
            if pod is None or (ref.get("uid") and ref["uid"] != _meta(pod).get("uid")):
                raise ApiError(404, f'pods "{ref_name}" not found')
            pod_name, pod_uid = _meta(pod)["name"], _meta(pod)["uid"]
            # As Kubernetes' token REST: the pod must run as exactly this service account
            # (a pod naming none -- a mirror pod -- runs as none, never as "default").
            from kedge.authz.podrefs import service_account_name

            if service_account_name(pod) != info.name:
                raise ApiError(400, f"cannot bind token for serviceaccount {info.name!r} to pod running with "
                                    "different serviceaccount name.")
        now = int(self.clock())
        claims = satoken.TokenClaims(namespace=info.namespace, name=info.name, uid=_meta(sa).get("uid", ""),
                                     audiences=tuple(audiences), issued_at=now, expires_at=now + expiry,
                                     pod_name=pod_name, pod_uid=pod_uid)
        token = satoken.issue(self.sa_key, claims)
        body["kind"], body["apiVersion"] = "TokenRequest", "authentication.k8s.io/v1"
        body.setdefault("metadata", {}).update({"name": info.name, "namespace": info.namespace,
                                                "creationTimestamp": None})
        body["spec"] = dict(spec, audiences=audiences, expirationSeconds=expiry)
        body["status"] = {"token": token, "expirationTimestamp": rfc3339(now + expiry)}
        return Response(201, _dumps(body))

    def authenticate_bearer(self, token: str) -> User | None:
        """A service-account token, still backed by its service account (and pod): the user; else None."""
        if self.sa_key is None:
            return None
        try:
            claims = satoken.verify(token, self.sa_key.public_key(), now=self.clock())
        except satoken.TokenError:
            return None
        sa = self.store.get("/serviceaccounts", claims.namespace, claims.name)
        if sa is None or _meta(sa).get("uid") != claims.uid:
            return None
        if claims.pod_name:
            pod = self.store.get("/pods", claims.namespace, claims.pod_name)
            if pod is None or _meta(pod).get("uid") != claims.pod_uid or _meta(pod).get("deletionTimestamp"):
                return None
        return User(claims.username, claims.groups, claims.uid)

    # -- reviews -----------------------------------------------------------------

    def _review(self, req: Request, info: RequestInfo, rt: ResourceType, user: User) -> Response:
        if info.verb != "create":
            raise ApiError(405, "method not allowed")
        body = self._object_body(req, info, rt)
        spec = body.get("spec") if isinstance(body.get("spec"), dict) else {}
        if rt.resource == "selfsubjectreviews":
            body["status"] = {"userInfo": {"username": user.name, "groups": list(user.groups),
                                           **({"uid": user.uid} if user.uid else {})}}
            return self._ok(201, body)
        if rt.resource == "selfsubjectrulesreview" or rt.resource == "selfsubjectrulesreviews":
            ns = str(spec.get("namespace", ""))
            rules = applicable_rules(self.policy, user.name, user.groups, ns)
            res_rules = [{"verbs": list(r.verbs), "apiGroups": list(r.api_groups), "resources": list(r.resources),
                          **({"resourceNames": list(r.resource_names)} if r.resource_names else {})}
                         for r in rules if not r.non_resource_urls]
            nr_rules = [{"verbs": list(r.verbs), "nonResourceURLs": list(r.non_resource_urls)}
                        for r in rules if r.non_resource_urls]
            body["status"] = {"resourceRules": res_rules, "nonResourceRules": nr_rules, "incomplete": True}
            return self._ok(201, body)
        if rt.resource == "selfsubjectaccessreviews":
            subject = user
        else:
            sname = spec.get("user") or ""
            sgroups = spec.get("groups") or []
            if not isinstance(sname, str) or not isinstance(sgroups, list) or \
                    not all(isinstance(g, str) for g in sgroups):
                raise invalid(rt.kind, "", "spec.user/spec.groups are invalid", rt.group)
            if not sname and not sgroups:
                raise invalid(rt.kind, "", "spec.user or spec.groups: at least one is required", rt.group)
            subject = User(sname, tuple(sgroups))
        ra, nra = spec.get("resourceAttributes"), spec.get("nonResourceAttributes")
        if isinstance(ra, dict) == isinstance(nra, dict):
            raise invalid(rt.kind, "", "exactly one of resourceAttributes or nonResourceAttributes is required",
                          rt.group)
        if isinstance(ra, dict):
            ns = str(ra.get("namespace", ""))
            if rt.resource == "localsubjectaccessreviews" and ns != info.namespace:
                raise ApiError(400, "spec.resourceAttributes.namespace must match the request namespace")
            fsel: tuple[FieldRequirement, ...] = ()
            fs = ra.get("fieldSelector")
            if isinstance(fs, dict):
                if fs.get("rawSelector"):
                    fsel = parse_field_selector(str(fs["rawSelector"]))
                else:
                    reqs = []
                    for r in fs.get("requirements") or []:
                        if isinstance(r, dict) and r.get("operator") in ("In", "NotIn") and \
                                len(r.get("values") or []) == 1:
                            reqs.append(FieldRequirement(str(r.get("key")), "=" if r["operator"] == "In" else "!=",
                                                         str(r["values"][0])))
                    fsel = tuple(reqs)
            attrs = Attributes(user=subject.name, groups=subject.groups, verb=str(ra.get("verb", "")) or "get",
                               namespace=ns, api_group=str(ra.get("group", "")),
                               resource=str(ra.get("resource", "")), subresource=str(ra.get("subresource", "")),
                               name=str(ra.get("name", "")), field_selector=fsel)
        else:
            attrs = Attributes(user=subject.name, groups=subject.groups, verb=str(nra.get("verb", "")),
                               resource_request=False, path=str(nra.get("path", "")))
        decision = self.authorize(attrs)
        body["status"] = {"allowed": decision.allowed}
        if decision.reason:
            body["status"]["reason"] = decision.reason
        return self._ok(201, body)

    # -- non-resource ------------------------------------------------------------

    def _non_resource(self, req: Request, info: RequestInfo) -> Response:
        if info.verb not in ("get", "head"):
            raise ApiError(405, "method not allowed")
        path = info.path.rstrip("/") or "/"
        if path == "/version":
            return Response(200, _dumps(version_info()))
        if path in ("/healthz", "/livez", "/readyz"):
            return Response(200, b"ok", "text/plain; charset=utf-8")
        if path == "/api":
            return Response(200, _dumps({"kind": "APIVersions", "versions": ["v1"],
                                         "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0",
                                                                         "serverAddress": ""}]}))
        if path == "/api/v1":
            return Response(200, _dumps(self._resource_list("", "v1")))
        if path == "/apis":
            return Response(200, _dumps({"kind": "APIGroupList", "apiVersion": "v1",
                                         "groups": [self._group(g, vs) for g, vs in
                                                    sorted(self.registry.groups().items())]}))
        parts = path.strip("/").split("/")
        if parts[0] == "apis" and len(parts) in (2, 3):
            groups = self.registry.groups()
            if parts[1] in groups:
                if len(parts) == 2:
                    return Response(200, _dumps(dict(self._group(parts[1], groups[parts[1]]), kind="APIGroup",
                                                     apiVersion="v1")))
                if parts[2] in groups[parts[1]]:
                    return Response(200, _dumps(self._resource_list(parts[1], parts[2])))
        if path == "/openapi/v2":
            return Response(200, _dumps(openapi.v2_document(self.registry)))
        if path == "/openapi/v3":
            return Response(200, _dumps(openapi.v3_root(self.registry)))
        if path.startswith("/openapi/v3/"):
            doc = openapi.v3_group_document(self.registry, path[len("/openapi/v3/"):])
            if doc is not None:
                return Response(200, _dumps(doc))
        raise ApiError(404, "the server could not find the requested resource")

    def _group(self, group: str, versions: list[str]) -> dict[str, Any]:
        vs = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
        return {"name": group, "versions": vs, "preferredVersion": vs[0]}

    def _resource_list(self, group: str, version: str) -> dict[str, Any]:
        resources: list[dict[str, Any]] = []
        for t in self.registry.all():
            if t.group == group and t.version == version:
                resources.extend(t.discovery())
        return {"kind": "APIResourceList", "apiVersion": "v1",
                "groupVersion": f"{group}/{version}" if group else version, "resources": resources}


_SUBRESOURCE_VERBS = {"status": ("get", "update", "patch"), "scale": ("get", "update", "patch"),
                      "ephemeralcontainers": ("get", "update", "patch"), "eviction": ("create",),
                      "token": ("create",), "finalize": ("update",), "log": ("get",)}


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


def _named(info: RequestInfo, fields: tuple[FieldRequirement, ...]) -> tuple[FieldRequirement, ...]:
    """The field selector a list/watch is served with: it always selects the name it was authorized for.

    A watch of ``.../secrets/NAME?watch=true`` (or a list/watch whose ``metadata.name=`` field
    selector named the object) is authorized for NAME alone -- per-object rules (``resourceNames``,
    the Node authorizer) -- so it must stream NAME alone, initial state and replay included.
    As in Kubernetes, a field selector naming another object than the path is a bad request.
    """
    if not info.name:
        return fields
    for r in fields:
        if r.field == "metadata.name" and not (r.op == "=" and r.value == info.name):
            raise ApiError(400, "fieldSelector metadata.name doesn't match requested name")
    return fields + (FieldRequirement("metadata.name", "=", info.name),)


# Kinds whose Kubernetes strategy has AllowCreateOnUpdate: a PUT of a missing one creates it
# (and must be allowed to create). Every other kind answers such a PUT with 404 NotFound.
CREATE_ON_UPDATE = frozenset({
    "/events", "/services", "/endpoints", "coordination.k8s.io/leases",
    f"{RBAC_GROUP}/roles", f"{RBAC_GROUP}/rolebindings", f"{RBAC_GROUP}/clusterroles",
    f"{RBAC_GROUP}/clusterrolebindings",
})


def _verb_allowed(rt: ResourceType, verb: str, sub: str) -> bool:
    if sub:
        return verb in _SUBRESOURCE_VERBS.get(sub, ())
    return verb in rt.verbs


def _same_ignoring_rv(a: dict[str, Any], b: dict[str, Any]) -> bool:
    ma = {k: v for k, v in (a.get("metadata") or {}).items() if k != "resourceVersion"}
    mb = {k: v for k, v in (b.get("metadata") or {}).items() if k != "resourceVersion"}
    return ma == mb and _without(a, "metadata") == _without(b, "metadata")


_META_FIELDS = frozenset({
    "name", "generateName", "namespace", "selfLink", "uid", "resourceVersion", "generation", "creationTimestamp",
    "deletionTimestamp", "deletionGracePeriodSeconds", "labels", "annotations", "ownerReferences", "finalizers",
    "managedFields"})
_COMMON_FIELDS = ("apiVersion", "kind", "metadata")
_KIND_FIELDS: dict[str, tuple[str, ...]] = {
    "ConfigMap": ("data", "binaryData", "immutable"),
    "Secret": ("data", "stringData", "type", "immutable"),
    "ServiceAccount": ("secrets", "imagePullSecrets", "automountServiceAccountToken"),
    "Endpoints": ("subsets",),
    "Event": ("involvedObject", "reason", "message", "source", "firstTimestamp", "lastTimestamp", "count", "type",
              "eventTime", "series", "action", "related", "reportingComponent", "reportingInstance"),
    "Role": ("rules",), "ClusterRole": ("rules", "aggregationRule"),
    "RoleBinding": ("subjects", "roleRef"), "ClusterRoleBinding": ("subjects", "roleRef"),
}


_OBJECT_FIELDS = ("metadata", "spec", "status", "data", "stringData", "binaryData", "roleRef", "aggregationRule",
                  "involvedObject")
_LIST_FIELDS = ("rules", "subjects", "secrets", "imagePullSecrets", "subsets")


def check_shape(rt: ResourceType, obj: dict[str, Any]) -> None:
    """The JSON types of top-level fields, as Kubernetes' decoder enforces them (400 otherwise)."""
    for key in _OBJECT_FIELDS:
        if obj.get(key) is not None and not isinstance(obj[key], dict):
            raise ApiError(400, f"{key} must be an object")
    if not rt.crd:
        for key in _LIST_FIELDS:
            if obj.get(key) is not None and not isinstance(obj[key], list):
                raise ApiError(400, f"{key} must be a list")
    meta = obj.get("metadata") or {}
    for key in ("name", "generateName", "namespace", "resourceVersion", "uid"):
        if meta.get(key) is not None and not isinstance(meta[key], str):
            raise ApiError(400, f"metadata.{key} must be a string")


def check_known_fields(rt: ResourceType, obj: dict[str, Any]) -> None:
    """``fieldValidation=Strict``: refuse unknown top-level and metadata fields of built-in kinds.

    Nested fields are not checked (kedge carries no full schemas); custom resources accept
    any field, as a CRD with ``x-kubernetes-preserve-unknown-fields`` does.
    """
    if rt.crd:
        return
    allowed = set(_COMMON_FIELDS) | set(_KIND_FIELDS.get(rt.kind, ("spec", "status")))
    unknown = [f'unknown field "{k}"' for k in obj if k not in allowed]
    unknown += [f'unknown field "metadata.{k}"' for k in (obj.get("metadata") or {}) if k not in _META_FIELDS]
    if unknown:
        raise ApiError(400, "strict decoding error: " + ", ".join(sorted(unknown)[:10]))


def strict_fields(req: Request) -> bool:
    return "fieldValidation=Strict" in req.target


def version_info() -> dict[str, str]:
    return {"major": "1", "minor": "32", "gitVersion": f"v1.32.0-kedge.{__version__}",
            "gitCommit": "", "gitTreeState": "clean", "buildDate": "1970-01-01T00:00:00Z",
            "goVersion": "python", "compiler": "cpython", "platform": "linux/amd64"}


def _wants_table(req: Request) -> bool:
    accept = req.header("accept") or ""
    return "as=Table" in accept


def _int_param(value: str | None, lo: int, hi: int) -> int:
    if value is None or value == "":
        return 0
    # ASCII digits only: ``str.isdigit`` alone accepts "²" (which int() then refuses
    # with ValueError) and other scripts' digits; at most 12, so int() stays cheap.
    if not (value.isascii() and value.isdigit()) or len(value) > 12:
        raise ApiError(400, "invalid integer parameter")
    return max(lo, min(hi, int(value)))


def _encode_continue(namespace: str, name: str) -> str:
    return base64.urlsafe_b64encode(_dumps({"v": 1, "ns": namespace, "n": name})).decode()


def _decode_continue(token: str) -> tuple[str, str]:
    try:
        if len(token) > 2048:
            raise ValueError("too long")
        d = json.loads(base64.urlsafe_b64decode(token.encode()))
        if not isinstance(d, dict) or d.get("v") != 1 or not isinstance(d.get("ns"), str) or \
                not isinstance(d.get("n"), str):
            raise ValueError("bad token")
        return d["ns"], d["n"]
    except (ValueError, TypeError) as exc:
        raise ApiError(400, "invalid continue token") from exc


def _served_as(data: str, api_version: str) -> bool:
    """Whether stored JSON already starts with this ``apiVersion`` (its first top-level key, as
    objects are stored when created through this version): then it is served as it is."""
    return data.startswith('{"apiVersion":' + json.dumps(api_version, ensure_ascii=False) + ",")


def _rewrite_api_version(data: str, api_version: str) -> str:
    if _served_as(data, api_version):
        return data
    obj = json.loads(data)
    if obj.get("apiVersion") == api_version:
        return data  # stored as served (the usual case): no need to encode it again
    obj["apiVersion"] = api_version
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def _safe_message(exc: Exception) -> str:
    """Messages of our own peer errors are written by us and safe to return."""
    return str(exc)[:512]


def iter_lines(lines: Iterable[bytes]) -> bytes:
    return b"".join(lines)
