"""Node authorizer and NodeRestriction admission, as pure code.

Semantics follow Kubernetes 1.32 with ``AuthorizeNodeWithSelectors`` on: a node
(user ``system:node:<name>`` in group ``system:nodes``) may

* get/list/watch only its own Node (by name); create/update/patch Nodes and update/patch
  ``nodes/status`` of any node -- NodeRestriction admission then refuses writes to
  other nodes (the two layers are kept separate, as in Kubernetes, so a
  SubjectAccessReview answers exactly what Kubernetes' authorizer answers);
* get a pod bound to it, list/watch pods only with ``fieldSelector spec.nodeName=<self>``,
  create/delete (mirror) pods, update/patch ``pods/status``, create ``pods/eviction``;
* get/list/watch a secret or configmap, and get a PVC/PV/volumeattachment, only if a pod
  bound to it references it (``NodeGraph``); create ``serviceaccounts/token`` only for
  service accounts its pods run as;
* get/create/update/patch/delete its own Lease in ``kube-node-lease``;
* everything else only through the static :data:`NODE_RULES`.

:class:`NodeGraph` is the relationship index (pod -> node, secret/configmap/pvc/sa ->
pod), maintained incrementally from pod events by the API server.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from kedge.authz.rbac import ALLOW, NO_OPINION, Attributes, Decision, Rule, Verdict, rules_allow

NODES_GROUP = "system:nodes"
NODE_USER_PREFIX = "system:node:"
NODE_LEASE_NAMESPACE = "kube-node-lease"
RESTRICTED_LABEL_PREFIX = "node-restriction.kubernetes.io/"

# Static rules every node holds (a reduced form of Kubernetes' NodeRules()).
NODE_RULES: tuple[Rule, ...] = (
    Rule(("get", "list", "watch"), ("",), ("services",)),
    Rule(("create", "update", "patch"), ("", "events.k8s.io"), ("events",)),
    Rule(("create",), ("authentication.k8s.io",), ("tokenreviews",)),
    Rule(("create",), ("authorization.k8s.io",), ("subjectaccessreviews", "localsubjectaccessreviews")),
    Rule(("create", "get", "list", "watch"), ("certificates.k8s.io",), ("certificatesigningrequests",)),
    Rule(("get", "list", "watch"), ("storage.k8s.io",), ("csidrivers",)),
    Rule(("get", "list", "watch"), ("node.k8s.io",), ("runtimeclasses",)),
)


def node_identity(user: str, groups: tuple[str, ...]) -> tuple[bool, str]:
    """``(is_node, node_name)`` as Kubernetes' default node identifier decides it."""
    if NODES_GROUP not in groups or not user.startswith(NODE_USER_PREFIX):
        return False, ""
    return True, user[len(NODE_USER_PREFIX):]


def pod_references(pod: Mapping[str, Any]) -> set[tuple[str, str]]:
    """``{(kind, name)}`` of namespaced objects a pod spec references."""
    spec = pod.get("spec") or {}
    refs: set[tuple[str, str]] = set()
    if not isinstance(spec, Mapping):
        return refs
    sa = spec.get("serviceAccountName") or spec.get("serviceAccount")
    if isinstance(sa, str) and sa:
        refs.add(("serviceaccounts", sa))
    for ips in spec.get("imagePullSecrets") or ():
        if isinstance(ips, Mapping) and ips.get("name"):
            refs.add(("secrets", str(ips["name"])))
    containers = []
    for key in ("initContainers", "containers", "ephemeralContainers"):
        containers.extend(c for c in spec.get(key) or () if isinstance(c, Mapping))
    for c in containers:
        for env_from in c.get("envFrom") or ():
            if not isinstance(env_from, Mapping):
                continue
            if (env_from.get("secretRef") or {}).get("name"):
                refs.add(("secrets", str(env_from["secretRef"]["name"])))
            if (env_from.get("configMapRef") or {}).get("name"):
                refs.add(("configmaps", str(env_from["configMapRef"]["name"])))
        for env in c.get("env") or ():
            vf = env.get("valueFrom") if isinstance(env, Mapping) else None
            if not isinstance(vf, Mapping):
                continue
            if (vf.get("secretKeyRef") or {}).get("name"):
                refs.add(("secrets", str(vf["secretKeyRef"]["name"])))
            if (vf.get("configMapKeyRef") or {}).get("name"):
                refs.add(("configmaps", str(vf["configMapKeyRef"]["name"])))
    for vol in spec.get("volumes") or ():
        if not isinstance(vol, Mapping):
            continue
        if (vol.get("secret") or {}).get("secretName"):
            refs.add(("secrets", str(vol["secret"]["secretName"])))
        if (vol.get("configMap") or {}).get("name"):
            refs.add(("configmaps", str(vol["configMap"]["name"])))
        if (vol.get("persistentVolumeClaim") or {}).get("claimName"):
            refs.add(("persistentvolumeclaims", str(vol["persistentVolumeClaim"]["claimName"])))
        for src in (vol.get("projected") or {}).get("sources") or ():
            if not isinstance(src, Mapping):
                continue
            if (src.get("secret") or {}).get("name"):
                refs.add(("secrets", str(src["secret"]["name"])))
            if (src.get("configMap") or {}).get("name"):
                refs.add(("configmaps", str(src["configMap"]["name"])))
        for driver in ("azureFile", "cephfs", "cinder", "flexVolume", "rbd", "iscsi", "scaleIO",
                       "storageos", "csi"):
            ref = (vol.get(driver) or {})
            name = ref.get("secretName") or (ref.get("secretRef") or {}).get("name") or \
                (ref.get("nodePublishSecretRef") or {}).get("name")
            if name:
                refs.add(("secrets", str(name)))
    return refs


def pv_secret_references(pv: Mapping[str, Any]) -> frozenset[tuple[str, str]]:
    """``{(namespace, name)}`` of secrets a PersistentVolume's volume source references."""
    spec = pv.get("spec") or {}
    out: set[tuple[str, str]] = set()
    if not isinstance(spec, Mapping):
        return frozenset()
    csi = spec.get("csi") or {}
    if isinstance(csi, Mapping):
        for key in ("controllerPublishSecretRef", "nodePublishSecretRef", "nodeStageSecretRef",
                    "controllerExpandSecretRef", "nodeExpandSecretRef"):
            ref = csi.get(key)
            if isinstance(ref, Mapping) and ref.get("name"):
                out.add((str(ref.get("namespace", "")), str(ref["name"])))
    az = spec.get("azureFile") or {}
    if isinstance(az, Mapping) and az.get("secretName"):
        out.add((str(az.get("secretNamespace", "default")), str(az["secretName"])))
    for driver in ("cephfs", "cinder", "flexVolume", "iscsi", "rbd", "scaleIO", "storageos"):
        ref = (spec.get(driver) or {}).get("secretRef") if isinstance(spec.get(driver), Mapping) else None
        if isinstance(ref, Mapping) and ref.get("name"):
            out.add((str(ref.get("namespace", "")), str(ref["name"])))
    return frozenset(out)


@dataclasses.dataclass
class NodeGraph:
    """Which node may read which namespaced object, derived from bound pods."""

    _pods: dict[tuple[str, str], tuple[str, frozenset[tuple[str, str]]]] = dataclasses.field(default_factory=dict)
    # (kind, namespace, name) -> {node: count}
    _edges: dict[tuple[str, str, str], dict[str, int]] = dataclasses.field(default_factory=dict)

    def set_pod(self, pod: Mapping[str, Any]) -> None:
        meta = pod.get("metadata") or {}
        key = (str(meta.get("namespace", "")), str(meta.get("name", "")))
        self.remove_pod(*key)
        node = str((pod.get("spec") or {}).get("nodeName") or "")
        if not node:
            return
        refs = frozenset({("pods", key[1])} | pod_references(pod))
        self._pods[key] = (node, refs)
        for kind, name in refs:
            counts = self._edges.setdefault((kind, key[0], name), {})
            counts[node] = counts.get(node, 0) + 1

    def remove_pod(self, namespace: str, name: str) -> None:
        old = self._pods.pop((namespace, name), None)
        if old is None:
            return
        node, refs = old
        for kind, ref_name in refs:
            counts = self._edges.get((kind, namespace, ref_name))
            if counts is None:
                continue
            counts[node] -= 1
            if counts[node] <= 0:
                del counts[node]
            if not counts:
                del self._edges[(kind, namespace, ref_name)]

    # PVC -> bound PV name; volume attachment -> node
    _pvc_volume: dict[tuple[str, str], str] = dataclasses.field(default_factory=dict)
    _va_node: dict[str, str] = dataclasses.field(default_factory=dict)
    # PV name -> {(namespace, secret name)} it references (CSI/driver secret refs)
    _pv_secrets: dict[str, frozenset[tuple[str, str]]] = dataclasses.field(default_factory=dict)

    def set_pv(self, pv: Mapping[str, Any]) -> None:
        name = str((pv.get("metadata") or {}).get("name", ""))
        refs = pv_secret_references(pv)
        if refs:
            self._pv_secrets[name] = refs
        else:
            self._pv_secrets.pop(name, None)

    def remove_pv(self, name: str) -> None:
        self._pv_secrets.pop(name, None)

    def set_pvc(self, pvc: Mapping[str, Any]) -> None:
        meta = pvc.get("metadata") or {}
        key = (str(meta.get("namespace", "")), str(meta.get("name", "")))
        volume = str((pvc.get("spec") or {}).get("volumeName") or "")
        if volume:
            self._pvc_volume[key] = volume
        else:
            self._pvc_volume.pop(key, None)

    def remove_pvc(self, namespace: str, name: str) -> None:
        self._pvc_volume.pop((namespace, name), None)

    def set_volume_attachment(self, va: Mapping[str, Any]) -> None:
        name = str((va.get("metadata") or {}).get("name", ""))
        node = str((va.get("spec") or {}).get("nodeName") or "")
        if node:
            self._va_node[name] = node
        else:
            self._va_node.pop(name, None)

    def remove_volume_attachment(self, name: str) -> None:
        self._va_node.pop(name, None)

    def has_path(self, node: str, kind: str, namespace: str, name: str) -> bool:
        if kind == "persistentvolumes":
            # node <- pod <- pvc <- pv
            return any(pv == name and self.has_path(node, "persistentvolumeclaims", ns, pvc)
                       for (ns, pvc), pv in self._pvc_volume.items())
        if kind == "volumeattachments":
            return self._va_node.get(name) == node
        if node in self._edges.get((kind, namespace, name), {}):
            return True
        if kind == "secrets":
            # node <- pod <- pvc <- pv <- secret
            return any((namespace, name) in refs and self.has_path(node, "persistentvolumes", "", pv)
                       for pv, refs in self._pv_secrets.items())
        return False

    def node_of_pod(self, namespace: str, name: str) -> str | None:
        entry = self._pods.get((namespace, name))
        return entry[0] if entry else None


def _related(graph: NodeGraph, node: str, kind: str, attrs: Attributes) -> Decision:
    if not attrs.name:
        return Decision(Verdict.NO_OPINION, "no object name found")
    if graph.has_path(node, kind, attrs.namespace, attrs.name):
        return ALLOW
    return Decision(Verdict.NO_OPINION, f"no relationship found between node {node!r} and this object")


def _selects(attrs: Attributes, field: str, value: str) -> bool:
    return any(r.field == field and r.op == "=" and r.value == value for r in attrs.field_selector)


def authorize_node(attrs: Attributes, graph: NodeGraph) -> Decision:
    """The Node authorizer: ALLOW or NO_OPINION for nodes, NO_OPINION for everyone else."""
    is_node, node = node_identity(attrs.user, attrs.groups)
    if not is_node:
        return NO_OPINION
    if not node:
        return Decision(Verdict.NO_OPINION, "unknown node")
    if not attrs.resource_request:
        return ALLOW if rules_allow(attrs, NODE_RULES) else NO_OPINION
    group, res, sub, verb = attrs.api_group, attrs.resource, attrs.subresource, attrs.verb
    if group == "" and res in ("secrets", "configmaps"):
        if verb not in ("get", "list", "watch") or sub or not attrs.namespace:
            return Decision(Verdict.NO_OPINION, "can only read individual namespaced objects of this type")
        return _related(graph, node, res, attrs)
    if (group, res) in (("", "persistentvolumeclaims"), ("", "persistentvolumes"),
                        ("storage.k8s.io", "volumeattachments")):
        if res == "persistentvolumeclaims" and sub == "status":
            return _related(graph, node, res, attrs) if verb in ("update", "patch") else NO_OPINION
        if verb != "get" or sub:
            return Decision(Verdict.NO_OPINION, "can only get individual resources of this type")
        return _related(graph, node, res, attrs)
    if group == "" and res == "serviceaccounts":
        if verb != "create" or not attrs.name or sub != "token":
            return Decision(Verdict.NO_OPINION, "can only create tokens for individual service accounts")
        return _related(graph, node, res, attrs)
    if group == "coordination.k8s.io" and res == "leases":
        if verb not in ("get", "create", "update", "patch", "delete"):
            return Decision(Verdict.NO_OPINION, "can only get, create, update, patch, or delete a node lease")
        if attrs.namespace != NODE_LEASE_NAMESPACE:
            return Decision(Verdict.NO_OPINION, f"can only access leases in {NODE_LEASE_NAMESPACE!r}")
        if verb != "create" and attrs.name != node:
            return Decision(Verdict.NO_OPINION, "can only access the node's own lease")
        return ALLOW
    if group == "" and res == "nodes":
        if sub == "":
            if verb in ("create", "update", "patch"):
                return ALLOW  # NodeRestriction limits this to the node's own object
            if verb in ("get", "list", "watch"):
                name = attrs.name  # list/watch: the request layer fills it from metadata.name=
                if name == node:
                    return ALLOW
                return Decision(Verdict.NO_OPINION, f"node {node!r} can only read its own Node object")
        elif sub == "status" and verb in ("update", "patch"):
            return ALLOW  # NodeRestriction limits this to the node's own object
        return NO_OPINION
    if group == "" and res == "pods":
        if sub == "":
            if verb == "get":
                return _related(graph, node, "pods", attrs)
            if verb in ("list", "watch"):
                if _selects(attrs, "spec.nodeName", node):
                    return ALLOW
                if attrs.name:
                    return _related(graph, node, "pods", attrs)
                return Decision(Verdict.NO_OPINION, "can only list/watch pods with spec.nodeName field selector")
            if verb in ("create", "delete"):
                return ALLOW  # NodeRestriction: mirror pods bound to this node only
        elif sub == "status" and verb in ("update", "patch"):
            return ALLOW
        elif sub == "eviction" and verb == "create":
            return ALLOW
        return NO_OPINION
    return ALLOW if rules_allow(attrs, NODE_RULES) else NO_OPINION


# -- NodeRestriction admission --------------------------------------------------

_ALLOWED_K8S_LABELS = frozenset({
    "kubernetes.io/hostname", "kubernetes.io/arch", "kubernetes.io/os",
    "beta.kubernetes.io/arch", "beta.kubernetes.io/os", "beta.kubernetes.io/instance-type",
    "node.kubernetes.io/instance-type", "failure-domain.beta.kubernetes.io/region",
    "failure-domain.beta.kubernetes.io/zone", "topology.kubernetes.io/region", "topology.kubernetes.io/zone",
})
_ALLOWED_K8S_NAMESPACES = ("kubelet.kubernetes.io", "node.kubernetes.io")


def _label_namespace(key: str) -> str:
    return key.split("/", 1)[0] if "/" in key else ""


def label_forbidden_for_node(key: str) -> bool:
    """Kubernetes' NodeRestriction label policy for labels a node sets on itself."""
    ns = _label_namespace(key)
    if ns == "node-restriction.kubernetes.io" or ns.endswith(".node-restriction.kubernetes.io"):
        return True
    if key in _ALLOWED_K8S_LABELS:
        return False
    if ns in _ALLOWED_K8S_NAMESPACES or any(ns.endswith("." + a) for a in _ALLOWED_K8S_NAMESPACES):
        return False
    return ns in ("kubernetes.io", "k8s.io") or ns.endswith(".kubernetes.io") or ns.endswith(".k8s.io")


def _labels(obj: Mapping[str, Any] | None) -> dict[str, str]:
    return dict(((obj or {}).get("metadata") or {}).get("labels") or {})


def admit_node_request(user: str, groups: tuple[str, ...], operation: str, resource: str, subresource: str,
                       name: str, new: Mapping[str, Any] | None, old: Mapping[str, Any] | None) -> Decision:
    """NodeRestriction: ALLOW, or DENY with a reason. ``operation`` is CREATE/UPDATE/DELETE.

    ``resource`` is ``group/resource`` ('/nodes', '/pods', 'coordination.k8s.io/leases').
    """
    is_node, node = node_identity(user, groups)
    if not is_node:
        return ALLOW
    if not node:
        return Decision(Verdict.DENY, "could not determine node from user")
    if resource == "/nodes":
        if name != node:
            return Decision(Verdict.DENY, f"node {node!r} is not allowed to modify node {name!r}")
        new_labels, old_labels = _labels(new), _labels(old)
        if operation == "CREATE":
            bad = sorted(k for k in new_labels if label_forbidden_for_node(k))
            if bad:
                return Decision(Verdict.DENY, f"node {node!r} is not allowed to set the following labels: {', '.join(bad)}")
        elif operation == "UPDATE":
            changed = {k for k in set(new_labels) | set(old_labels) if new_labels.get(k) != old_labels.get(k)}
            bad = sorted(k for k in changed if label_forbidden_for_node(k))
            if bad:
                return Decision(Verdict.DENY, f"node {node!r} is not allowed to modify labels: {', '.join(bad)}")
            old_taints = ((old or {}).get("spec") or {}).get("taints")
            new_taints = ((new or {}).get("spec") or {}).get("taints")
            if subresource == "" and (old_taints or None) != (new_taints or None):
                return Decision(Verdict.DENY, f"node {node!r} is not allowed to modify taints")
        return ALLOW
    if resource == "/pods":
        target = new if operation == "CREATE" else old
        bound = str(((target or {}).get("spec") or {}).get("nodeName") or "")
        if operation == "CREATE":
            annotations = ((new or {}).get("metadata") or {}).get("annotations") or {}
            if subresource == "eviction":
                return ALLOW if bound == node else Decision(Verdict.DENY, "can only evict pods bound to itself")
            if "kubernetes.io/config.mirror" not in annotations:
                return Decision(Verdict.DENY, f"node {node!r} can only create mirror pods")
            if bound != node:
                return Decision(Verdict.DENY, f"node {node!r} can only create pods with spec.nodeName set to itself")
            return ALLOW
        if bound != node:
            return Decision(Verdict.DENY, f"node {node!r} can only modify pods bound to itself")
        if operation == "UPDATE" and subresource != "status":
            return Decision(Verdict.DENY, f"node {node!r} can only update pod status")
        return ALLOW
    if resource == "coordination.k8s.io/leases":
        if name != node:
            return Decision(Verdict.DENY, f"node {node!r} can only access its own lease")
        return ALLOW
    return ALLOW
