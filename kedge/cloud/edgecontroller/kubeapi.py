"""Blocking Kubernetes API calls made *as an edge node* (impersonation).

cloudcore authenticates with its own client certificate and impersonates
``system:node:<name>`` / ``system:nodes`` on every node-scoped call, so the API
server's Node authorizer and NodeRestriction admission decide what the node may see
and write -- the same code path against the embedded API server and a real one.
Results are plain JSON dicts (no model classes): what goes down the tunnel is the
object exactly as the API server serves it. Call from a worker thread.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any, Iterator

from kedge._internal import jsonutil
from kedge.errors import AuthorizationError, KedgeError, LimitExceeded, LocalError, PeerError

log = logging.getLogger(__name__)

from kedge.limits import KUBEAPI_MAX_JSON_DEPTH as MAX_JSON_DEPTH  # noqa: E402
from kedge.limits import KUBEAPI_MAX_RESPONSE_BYTES as MAX_RESPONSE_BYTES  # noqa: E402
from kedge.limits import KUBEAPI_MAX_WATCH_LINE as MAX_WATCH_LINE  # noqa: E402
NODES_GROUP = "system:nodes"


class ApiGone(LocalError):
    code = "gone"


def status_error(status: int) -> Exception:
    """The error for an API server answer that is neither a success nor a 404."""
    if status == 403:
        return AuthorizationError("forbidden by the API server", code="forbidden")
    if status == 409:
        return PeerError("conflict", code="conflict")
    if status == 410:
        return ApiGone("resourceVersion too old")
    if status in (400, 422):
        return PeerError("invalid", code="invalid")
    return LocalError(f"API server answered {status}", code="api_error")


def decode_response(data: bytes, *, max_bytes: int = MAX_RESPONSE_BYTES) -> Any:
    """The JSON of an API server's answer (a response body or one watch line), bounded by the
    one loader (:mod:`kedge._internal.jsonutil`): :class:`PeerError` ``response_too_large``
    over ``max_bytes``, ``response_too_deep`` past ``KUBEAPI_MAX_JSON_DEPTH``, ``bad_response``
    for anything but strict JSON (NaN and Infinity included)."""
    try:
        return jsonutil.loads(data, max_bytes=max_bytes, max_depth=MAX_JSON_DEPTH)
    except LimitExceeded as exc:
        code = "response_too_large" if exc.code == "too_large" else "response_too_deep"
        raise PeerError("API server answer out of bounds", code=code) from exc
    except KedgeError as exc:
        raise PeerError("API server answered malformed JSON", code="bad_response") from exc


def node_headers(node: str) -> dict[str, str]:
    return {"Impersonate-User": f"system:node:{node}", "Impersonate-Group": NODES_GROUP}


class KubeAPI:
    def __init__(self, *, host: str | None = None, ca: Path | None = None, cert: Path | None = None,
                 key: Path | None = None, kubeconfig: str | None = None) -> None:
        from kubernetes import client, config

        cfg = client.Configuration()
        if kubeconfig:
            config.load_kube_config(config_file=kubeconfig, client_configuration=cfg)
        else:
            cfg.host = host
            cfg.ssl_ca_cert = str(ca)
            cfg.cert_file = str(cert)
            cfg.key_file = str(key)
        cfg.verify_ssl = True
        self._client = client
        self.api = client.ApiClient(cfg)
        self.core = client.CoreV1Api(self.api)
        self.coord = client.CoordinationV1Api(self.api)
        self._lock = threading.Lock()

    def _call(self, fn, *args, **kw) -> dict[str, Any] | None:
        from kubernetes.client.exceptions import ApiException

        try:
            resp = fn(*args, _preload_content=False, _request_timeout=30, **kw)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise status_error(exc.status) from exc
        try:
            data = resp.read(MAX_RESPONSE_BYTES + 1)  # not resp.data: that reads without a bound
        finally:
            resp.release_conn()
        obj = decode_response(data)
        if not isinstance(obj, dict):
            raise PeerError("API server answered a JSON non-object", code="bad_response")
        return obj

    # -- reads as the node -------------------------------------------------------

    def list_pods(self, node: str) -> tuple[list[dict[str, Any]], str]:
        data = self._call(self.core.list_pod_for_all_namespaces, field_selector=f"spec.nodeName={node}",
                          _headers=node_headers(node)) or {}
        return list(data.get("items") or []), str((data.get("metadata") or {}).get("resourceVersion", ""))

    def get(self, node: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        """Read one object as the node; None when missing or refused to the node."""
        fn = {"configmap": self.core.read_namespaced_config_map, "secret": self.core.read_namespaced_secret,
              "pod": self.core.read_namespaced_pod}.get(kind)
        if fn is None:
            raise PeerError(f"unsupported type {kind}", code="unsupported_resource_type")
        try:
            obj = self._call(fn, name, namespace, _headers=node_headers(node))
        except AuthorizationError:
            return None
        if obj is not None:
            obj.setdefault("kind", {"configmap": "ConfigMap", "secret": "Secret", "pod": "Pod"}[kind])
            obj.setdefault("apiVersion", "v1")
        return obj

    def get_strict(self, node: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        """Like :meth:`get` but a refusal raises (for queries the edge makes)."""
        fn = {"configmap": self.core.read_namespaced_config_map, "secret": self.core.read_namespaced_secret,
              "pod": self.core.read_namespaced_pod}.get(kind)
        if fn is None:
            raise PeerError(f"unsupported type {kind}", code="unsupported_resource_type")
        return self._call(fn, name, namespace, _headers=node_headers(node))

    def watch_pods(self, node: str, rv: str, *, timeout_s: int, stop: threading.Event) -> Iterator[dict[str, Any]]:
        """The node's pod events from ``rv`` on; ApiGone when ``rv`` is too old (410), as an answer or an event."""
        return self._watch(self.core.list_pod_for_all_namespaces, field_selector=f"spec.nodeName={node}",
                           resource_version=rv, timeout_s=timeout_s, stop=stop, _headers=node_headers(node))

    def watch_custom(self, group: str, version: str, plural: str, rv: str, *, timeout_s: int,
                     stop: threading.Event) -> Iterator[dict[str, Any]]:
        """Cluster-wide events of a custom resource from ``rv`` on, read as cloudcore itself."""
        custom = self._client.CustomObjectsApi(self.api)
        return self._watch(custom.list_cluster_custom_object, group, version, plural, resource_version=rv,
                           timeout_s=timeout_s, stop=stop)

    def _watch(self, fn, *args, resource_version: str, timeout_s: int, stop: threading.Event,
               **kw) -> Iterator[dict[str, Any]]:
        from kubernetes.client.exceptions import ApiException

        try:
            resp = fn(*args, watch=True, resource_version=resource_version, timeout_seconds=timeout_s,
                      allow_watch_bookmarks=True, _preload_content=False, _request_timeout=timeout_s + 10, **kw)
        except ApiException as exc:
            if exc.status == 410:
                raise ApiGone("resourceVersion too old") from exc
            raise
        return _events(resp, stop)

    # -- writes as the node ----------------------------------------------------------

    def patch_pod_status(self, node: str, namespace: str, name: str, status: dict[str, Any]) -> None:
        self._call(self.core.patch_namespaced_pod_status, name, namespace, {"status": status},
                   _content_type="application/merge-patch+json", _headers=node_headers(node))

    def delete_pod(self, node: str, namespace: str, name: str, uid: str) -> None:
        """Finish a graceful pod deletion (grace 0, like a kubelet), only for the pod with ``uid``."""
        body = {"apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": 0,
                "preconditions": {"uid": uid}}
        try:
            self._call(self.core.delete_namespaced_pod, name, namespace, body=body, _headers=node_headers(node))
        except PeerError as exc:
            if exc.code != "conflict":  # conflict: a new pod of that name already replaced it
                raise

    def list_nodes(self) -> list[dict[str, Any]]:
        """All Node objects, read as cloudcore itself (its role may list nodes)."""
        data = self._call(self.core.list_node) or {}
        return list(data.get("items") or [])

    def set_node_ready_condition(self, node: str, status: str, reason: str, message: str, now_iso: str) -> None:
        """Patch the node's Ready condition, speaking for the node (cloudcore needs no nodes/status write)."""
        current = self._call(self.core.read_node, node, _headers=node_headers(node)) or {}
        conditions = [c for c in (current.get("status") or {}).get("conditions") or [] if c.get("type") != "Ready"]
        old = next((c for c in (current.get("status") or {}).get("conditions") or [] if c.get("type") == "Ready"), {})
        conditions.append({"type": "Ready", "status": status, "reason": reason, "message": message,
                           "lastHeartbeatTime": old.get("lastHeartbeatTime", now_iso),
                           "lastTransitionTime": now_iso})
        self._call(self.core.patch_node_status, node, {"status": {"conditions": conditions}},
                   _content_type="application/merge-patch+json", _headers=node_headers(node))

    def ensure_node(self, node: str, status: dict[str, Any]) -> None:
        """Create the node's own Node object if missing (as the node, like a kubelet), else patch status."""
        existing = self._call(self.core.read_node, node, _headers=node_headers(node))
        if existing is None:
            body = {"apiVersion": "v1", "kind": "Node",
                    "metadata": {"name": node, "labels": {"kubernetes.io/hostname": node, "kubernetes.io/os": "linux"}}}
            try:
                self._call(self.core.create_node, body, _headers=node_headers(node))
            except PeerError as exc:
                if exc.code != "conflict":
                    raise
        self._call(self.core.patch_node_status, node, {"status": status},
                   _content_type="application/merge-patch+json", _headers=node_headers(node))

    def renew_lease(self, node: str, now_iso: str, duration_s: int = 40) -> None:
        ns = "kube-node-lease"
        spec = {"holderIdentity": node, "leaseDurationSeconds": duration_s, "renewTime": now_iso}
        try:
            lease = self._call(self.coord.read_namespaced_lease, node, ns, _headers=node_headers(node))
        except AuthorizationError:
            lease = None
        if lease is None:
            body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                    "metadata": {"name": node, "namespace": ns}, "spec": spec}
            try:
                self._call(self.coord.create_namespaced_lease, ns, body, _headers=node_headers(node))
            except PeerError:
                pass
            return
        self._call(self.coord.patch_namespaced_lease, node, ns, {"spec": spec},
                   _content_type="application/merge-patch+json", _headers=node_headers(node))


def _events(resp, stop: threading.Event) -> Iterator[dict[str, Any]]:
    """The events of a watch answer, one JSON object per line (each bounded); ApiGone on 410."""
    buf = b""
    try:
        for chunk in resp.stream(None, decode_content=False):
            if stop.is_set():
                return
            buf += chunk
            if len(buf) > MAX_WATCH_LINE:
                raise LocalError("watch event too large", code="watch_line_too_long")
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                if not line.strip():
                    continue
                event = decode_response(line, max_bytes=MAX_WATCH_LINE)
                if not isinstance(event, dict):
                    raise PeerError("watch event is not a JSON object", code="bad_response")
                if event.get("type") == "ERROR":
                    code = (event.get("object") or {}).get("code")
                    if code == 410:
                        raise ApiGone("watch expired")
                    raise LocalError(f"watch error {code}", code="watch_error")
                yield event
    finally:
        resp.release_conn()
