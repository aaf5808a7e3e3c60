"""Node authorizer and NodeRestriction admission, as pure code.

Semantics follow Kubernetes 1.32 with ``AuthorizeNodeWithSelectors`` on; the cases of
Kubernetes' own tests are replayed against this module from
``tests/unit/authz/data/`` (what does not apply to kedge is marked there, with why).
A node (user ``system:node:<name>`` in group ``system:nodes``) may

* get/list/watch only its own Node (by name); create/update/patch Nodes and update/patch
  ``nodes/status`` of any node -- NodeRestriction admission then refuses writes to
  other nodes (the two layers are kept separate, as in Kubernetes, so a
  SubjectAccessReview answers exactly what Kubernetes' authorizer answers);
* get a pod bound to it, list/watch pods only with ``fieldSelector spec.nodeName=<self>``,
  create/delete (mirror) pods, update/patch ``pods/status``, create ``pods/eviction``;
* get/list/watch a secret or configmap, and get a PVC/PV/volumeattachment/resourceclaim,
  only if a pod bound to it references it (``NodeGraph``); create ``serviceaccounts/token``
  only for service accounts its pods run as;
* get/create/update/patch/delete its own Lease in ``kube-node-lease`` and its own CSINode;
* everything else only through the static :data:`NODE_RULES`.

:class:`NodeGraph` is the relationship index, maintained incrementally from pod, PV,
volume-attachment and resource-slice events by the API server. As in Kubernetes, a
mirror pod links only to its node: a node can never widen what it may read by creating
a pod, and NodeRestriction refuses a mirror pod that references any API object at all.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any

from kedge.authz import podrefs
from kedge.authz.rbac import ALLOW, NO_OPINION, Attributes, Decision, Rule, Verdict, rules_allow

NODES_GROUP = "system:nodes"
NODE_USER_PREFIX = "system:node:"
NODE_LEASE_NAMESPACE = "kube-node-lease"
RESTRICTED_LABEL_PREFIX = "node-restriction.kubernetes.io/"

# Kubernetes' NodeRules() (bootstrappolicy), default feature gates of 1.32. The resources
# the authorizer below subdivides never reach these rules; they stand for SubjectAccessReview
# answers about everything else.
NODE_RULES: tuple[Rule, ...] = (
    Rule(("create",), ("authentication.k8s.io",), ("tokenreviews",)),
    Rule(("create",), ("authorization.k8s.io",), ("subjectaccessreviews", "localsubjectaccessreviews")),
    Rule(("get", "list", "watch"), ("",), ("services",)),
    Rule(("create", "get", "list", "watch"), ("",), ("nodes",)),
    Rule(("update", "patch"), ("",), ("nodes/status",)),
    Rule(("update", "patch"), ("",), ("nodes",)),
    Rule(("create", "update", "patch"), ("",), ("events",)),
    Rule(("get", "list", "watch"), ("",), ("pods",)),
    Rule(("create", "delete"), ("",), ("pods",)),
    Rule(("update", "patch"), ("",), ("pods/status",)),
    Rule(("create",), ("",), ("pods/eviction",)),
    Rule(("get", "list", "watch"), ("",), ("secrets", "configmaps")),
    Rule(("get",), ("",), ("persistentvolumeclaims", "persistentvolumes")),
    Rule(("get",), ("",), ("endpoints",)),
    Rule(("create", "get", "list", "watch"), ("certificates.k8s.io",), ("certificatesigningrequests",)),
    Rule(("get", "create", "update", "patch", "delete"), ("coordination.k8s.io",), ("leases",)),
    Rule(("get",), ("storage.k8s.io",), ("volumeattachments",)),
    Rule(("create",), ("",), ("serviceaccounts/token",)),
    Rule(("get", "update", "patch"), ("",), ("persistentvolumeclaims/status",)),
    Rule(("get", "watch", "list"), ("storage.k8s.io",), ("csidrivers",)),
    Rule(("get", "create", "update", "patch", "delete"), ("storage.k8s.io",), ("csinodes",)),
    Rule(("get", "list", "watch"), ("node.k8s.io",), ("runtimeclasses",)),
)


def node_identity(user: str, groups: tuple[str, ...]) -> tuple[bool, str]:
    """``(is_node, node_name)`` as Kubernetes' default node identifier decides it."""
    if NODES_GROUP not in groups or not user.startswith(NODE_USER_PREFIX):
        return False, ""
    return True, user[len(NODE_USER_PREFIX):]


def _meta(obj: Any) -> Mapping[str, Any]:
    meta = obj.get("metadata") if isinstance(obj, Mapping) else None
    return meta if isinstance(meta, Mapping) else {}


def _spec(obj: Any) -> Mapping[str, Any]:
    spec = obj.get("spec") if isinstance(obj, Mapping) else None
    return spec if isinstance(spec, Mapping) else {}


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


@dataclasses.dataclass
class NodeGraph:
    """Which node may read which object, as Kubernetes' node authorizer graph links them.

    pod -> node; secret/configmap/pvc/serviceaccount/resourceclaim -> pod (none for a
    mirror pod); pv -> pvc (the PV's ``spec.claimRef``, which only whoever may write PVs
    sets -- never the claim's own ``volumeName``); secret -> pv (the secrets the node
    side of the volume plugin reads); volumeattachment -> node; resourceslice -> node.
    Every ``set_*`` takes any JSON value and never raises.
    """

    _pods: dict[tuple[str, str], tuple[str, frozenset[tuple[str, str]]]] = dataclasses.field(default_factory=dict)
    # (resource, namespace, name) -> {node: number of its pods linking it}
    _edges: dict[tuple[str, str, str], dict[str, int]] = dataclasses.field(default_factory=dict)
    # PV name -> ((claim namespace, claim name), {(namespace, secret name)})
    _pvs: dict[str, tuple[tuple[str, str], frozenset[tuple[str, str]]]] = dataclasses.field(default_factory=dict)
    _va_node: dict[str, str] = dataclasses.field(default_factory=dict)
    _slice_node: dict[str, str] = dataclasses.field(default_factory=dict)

    def set_pod(self, pod: Any) -> None:
        meta = _meta(pod)
        key = (_str(meta.get("namespace")), _str(meta.get("name")))
        self.remove_pod(*key)
        node = _str(_spec(pod).get("nodeName"))
        if not node or not key[1]:
            return
        refs = frozenset({("pods", key[1])} | podrefs.graph_refs(pod).edges())
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

    def set_pv(self, pv: Any) -> None:
        name = _str(_meta(pv).get("name"))
        claim = podrefs.pv_claim(pv)
        if claim is None or not claim[1]:
            self._pvs.pop(name, None)
            return
        self._pvs[name] = (claim, podrefs.pv_secret_refs(pv))

    def remove_pv(self, name: str) -> None:
        self._pvs.pop(name, None)

    def set_pvc(self, pvc: Any) -> None:
        """Nothing to index: a claim's ``volumeName`` grants nothing (the PV's ``claimRef`` does)."""

    def remove_pvc(self, namespace: str, name: str) -> None:
        """Nothing to index (see :meth:`set_pvc`)."""

    def set_volume_attachment(self, va: Any) -> None:
        name = _str(_meta(va).get("name"))
        node = _str(_spec(va).get("nodeName"))
        if node:
            self._va_node[name] = node
        else:
            self._va_node.pop(name, None)

    def remove_volume_attachment(self, name: str) -> None:
        self._va_node.pop(name, None)

    def set_resource_slice(self, rs: Any) -> None:
        name = _str(_meta(rs).get("name"))
        node = _str(_spec(rs).get("nodeName")) or _str(rs.get("nodeName") if isinstance(rs, Mapping) else None)
        if node:
            self._slice_node[name] = node
        else:
            self._slice_node.pop(name, None)

    def remove_resource_slice(self, name: str) -> None:
        self._slice_node.pop(name, None)

    def has_path(self, node: str, kind: str, namespace: str, name: str) -> bool:
        if kind == "persistentvolumes":
            entry = self._pvs.get(name)
            return entry is not None and self.has_path(node, "persistentvolumeclaims", *entry[0])
        if kind == "volumeattachments":
            return self._va_node.get(name) == node
        if kind == "resourceslices":
            return self._slice_node.get(name) == node
        if node in self._edges.get((kind, namespace, name), {}):
            return True
        if kind == "secrets":
            return any((namespace, name) in secrets and self.has_path(node, "persistentvolumeclaims", *claim)
                       for claim, secrets in self._pvs.values())
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
    return any(r.field == field and r.op in ("=", "==") and r.value == value for r in attrs.field_selector)


def _get_only(graph: NodeGraph, node: str, kind: str, attrs: Attributes) -> Decision:
    if attrs.verb != "get":
        return Decision(Verdict.NO_OPINION, "can only get individual resources of this type")
    if attrs.subresource:
        return Decision(Verdict.NO_OPINION, "cannot get subresource")
    return _related(graph, node, kind, attrs)


def _own_named(attrs: Attributes, node: str, what: str, namespace: str | None = None) -> Decision:
    """Leases and CSINodes: the verbs Kubernetes lists, on the node's own object only."""
    if attrs.verb not in ("get", "create", "update", "patch", "delete"):
        return Decision(Verdict.NO_OPINION, f"can only get, create, update, patch, or delete a {what}")
    if namespace is None and attrs.subresource:
        return Decision(Verdict.NO_OPINION, f"cannot authorize {what} subresources")
    if namespace is not None and attrs.namespace != namespace:
        return Decision(Verdict.NO_OPINION, f"can only access leases in the {namespace!r} system namespace")
    if attrs.verb != "create" and attrs.name != node:  # create: NodeRestriction checks the object's name
        return Decision(Verdict.NO_OPINION, f"can only access {what} with the same name as the requesting node")
    return ALLOW


def _resource_slice(graph: NodeGraph, node: str, attrs: Attributes) -> Decision:
    if attrs.subresource:
        return Decision(Verdict.NO_OPINION, "cannot authorize ResourceSlice subresources")
    if attrs.verb == "create":
        return ALLOW  # NodeRestriction checks spec.nodeName
    if attrs.verb in ("get", "update", "patch", "delete"):
        return _related(graph, node, "resourceslices", attrs)
    if attrs.verb in ("watch", "list", "deletecollection"):
        if _selects(attrs, "nodeName", node):
            return ALLOW
        return Decision(Verdict.NO_OPINION, "can only list/watch/deletecollection resourceslices with nodeName "
                                            "field selector")
    return Decision(Verdict.NO_OPINION, "verb not allowed for a ResourceSlice")


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
        if verb not in ("get", "list", "watch"):
            return Decision(Verdict.NO_OPINION, "can only read resources of this type")
        if sub:
            return Decision(Verdict.NO_OPINION, "cannot read subresource")
        if not attrs.namespace:
            return Decision(Verdict.NO_OPINION, "can only read namespaced object of this type")
        return _related(graph, node, res, attrs)
    if group == "" and res == "persistentvolumeclaims":
        if sub == "status":
            if verb not in ("update", "patch"):
                return Decision(Verdict.NO_OPINION, "can only get/update/patch this type")
            return _related(graph, node, res, attrs)
        return _get_only(graph, node, res, attrs)
    if (group, res) in (("", "persistentvolumes"), ("storage.k8s.io", "volumeattachments"),
                        ("resource.k8s.io", "resourceclaims")):
        return _get_only(graph, node, res, attrs)
    if group == "" and res == "serviceaccounts":
        if verb != "create" or not attrs.name:
            return Decision(Verdict.NO_OPINION, "can only create tokens for individual service accounts")
        if sub != "token":
            return Decision(Verdict.NO_OPINION, "can only create token subresource of serviceaccount")
        return _related(graph, node, res, attrs)
    if group == "coordination.k8s.io" and res == "leases":
        return _own_named(attrs, node, "node lease", NODE_LEASE_NAMESPACE)
    if group == "storage.k8s.io" and res == "csinodes":
        return _own_named(attrs, node, "CSINode")
    if group == "resource.k8s.io" and res == "resourceslices":
        return _resource_slice(graph, node, attrs)
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
                return _get_only(graph, node, "pods", attrs)
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


def _labels(obj: Any) -> dict[str, Any]:
    labels = _meta(obj).get("labels")
    return dict(labels) if isinstance(labels, Mapping) else {}


def _q(value: str) -> str:
    """A name quoted as Go's %q quotes it, so refusals read as Kubernetes' do."""
    return json.dumps(value)


def _deny(reason: str) -> Decision:
    return Decision(Verdict.DENY, reason)


def _missing(resource: str, name: Any) -> Decision:
    """An object the check needs does not exist: Kubernetes answers with its lookup's NotFound (404)."""
    name = _str(name)
    return Decision(Verdict.DENY, f'{resource} {_q(name)} not found', not_found=(resource, name))


def _unexpected(operation: str, node: str = "") -> Decision:
    suffix = f", node {_q(node)} can only create and delete mirror pods" if node else ""
    return _deny(f"unexpected operation {_q(operation)}{suffix}")


def _owner_problem(pod: Any, node: str, node_obj: Any) -> Decision | None:
    """Why a mirror pod's ownerReferences are not exactly one controller reference to this Node, or None."""
    owners = _meta(pod).get("ownerReferences")
    owners = owners if isinstance(owners, list) else ([] if owners is None else [None, None])
    if len(owners) > 1:
        return _deny(f"node {_q(node)} can only create pods with a single owner reference set to itself")
    if not owners:
        return _deny(f"node {_q(node)} can only create pods with an owner reference set to itself")
    owner = owners[0] if isinstance(owners[0], Mapping) else {}
    if owner.get("apiVersion") != "v1" or owner.get("kind") != "Node" or owner.get("name") != node:
        return _deny(f"node {_q(node)} can only create pods with an owner reference set to itself")
    if owner.get("controller") is not True:
        return _deny(f"node {_q(node)} can only create pods with a controller owner reference set to itself")
    if owner.get("blockOwnerDeletion") is True:
        return _deny(f"node {_q(node)} must not set blockOwnerDeletion on an owner reference")
    if not isinstance(node_obj, Mapping):
        return _missing("nodes", node)
    uid = _str(_meta(node_obj).get("uid"))
    if not uid or owner.get("uid") != uid:
        return _deny(f"node {node} UID mismatch: expected {owner.get('uid')} got {uid}")
    return None


def _admit_pod(node: str, operation: str, subresource: str, name: str, new: Any, old: Any,
               node_obj: Any) -> Decision:
    if subresource == "":
        if operation == "CREATE":
            if not isinstance(new, Mapping):
                return _deny("unexpected type")
            if not podrefs.is_mirror_pod(new):
                return _deny(f"pod does not have {_q(podrefs.MIRROR_POD_ANNOTATION)} annotation, node {_q(node)} can "
                             "only create mirror pods")
            if _str(_spec(new).get("nodeName")) != node:
                return _deny(f"node {_q(node)} can only create pods with spec.nodeName set to itself")
            problem = _owner_problem(new, node, node_obj)
            if problem is not None:
                return problem
            resource = podrefs.api_reference(new)
            if resource:
                return _deny(f"node {_q(node)} can not create pods that reference {resource}")
            return ALLOW
        if operation == "DELETE":
            if not isinstance(old, Mapping):
                return _missing("pods", name)
            if _str(_spec(old).get("nodeName")) != node:
                return _deny(f"node {_q(node)} can only delete pods with spec.nodeName set to itself")
            return ALLOW
        return _unexpected(operation, node)
    if subresource == "status":
        if operation != "UPDATE":
            return _unexpected(operation)
        if _str(_spec(old).get("nodeName")) != node:
            return _deny(f"node {_q(node)} can only update pod status for pods with spec.nodeName set to itself")  # nosec B608 - an admission message (Kubernetes' wording), not SQL
        if _labels(old) != _labels(new):
            return _deny(f"node {_q(node)} cannot update labels through pod status")
        if _claim_statuses(old) != _claim_statuses(new):
            return _deny(f"node {_q(node)} cannot update resource claim statues")
        return ALLOW
    if subresource == "eviction":
        if operation != "CREATE":
            return _unexpected(operation)
        if not _str(name):
            return _deny("could not determine pod from request data")
        if not isinstance(old, Mapping):
            return _missing("pods", name)
        if _str(_spec(old).get("nodeName")) != node:
            return _deny(f"node {node} can only evict pods with spec.nodeName set to itself")
        return ALLOW
    return _deny(f"unexpected pod subresource {_q(subresource)}, only 'status' and 'eviction' are allowed")


def _claim_statuses(pod: Any) -> list[tuple[str, str | None]]:
    status = pod.get("status") if isinstance(pod, Mapping) else None
    entries = status.get("resourceClaimStatuses") if isinstance(status, Mapping) else None
    out: list[tuple[str, str | None]] = []
    for e in entries if isinstance(entries, list) else []:
        e = e if isinstance(e, Mapping) else {}
        claim = e.get("resourceClaimName")
        out.append((_str(e.get("name")), claim if isinstance(claim, str) else None))
    return out


def _admit_node(node: str, operation: str, subresource: str, name: str, new: Any, old: Any) -> Decision:
    if name != node:
        return _deny(f"node {_q(node)} is not allowed to modify node {_q(name)}")
    new_labels, old_labels = _labels(new), _labels(old)
    if operation == "CREATE":
        if _spec(new).get("configSource") is not None:
            return _deny(f"node {_q(node)} is not allowed to create pods with a non-nil configSource")
        bad = sorted(k for k in new_labels if label_forbidden_for_node(k))
        if bad:
            return _deny(f"node {_q(node)} is not allowed to set the following labels: {', '.join(bad)}")
    elif operation == "UPDATE":
        source = _spec(new).get("configSource")
        if source is not None and source != _spec(old).get("configSource"):
            return _deny(f"node {_q(node)} is not allowed to update configSource to a new non-nil configSource")
        if (_spec(old).get("taints") or None) != (_spec(new).get("taints") or None):
            return _deny(f"node {_q(node)} is not allowed to modify taints")
        changed = {k for k in set(new_labels) | set(old_labels) if new_labels.get(k) != old_labels.get(k)}
        bad = sorted(k for k in changed if label_forbidden_for_node(k))
        if bad:
            return _deny(f"node {_q(node)} is not allowed to modify labels: {', '.join(bad)}")
    return ALLOW


# PVC fields a node's status update may change (RecoverVolumeExpansionFailure on, as in 1.32).
_PVC_STATUS_FIELDS = ("capacity", "conditions", "allocatedResourceStatuses", "allocatedResources")


def _pvc_for_compare(pvc: Any) -> Any:
    if not isinstance(pvc, Mapping):
        return pvc
    out = dict(pvc)
    meta = dict(_meta(pvc))
    meta.pop("resourceVersion", None)
    meta.pop("managedFields", None)
    out["metadata"] = meta
    status = out.get("status")
    if isinstance(status, Mapping):
        out["status"] = {k: v for k, v in status.items() if k not in _PVC_STATUS_FIELDS}
    return out


def _admit_pvc(node: str, operation: str, subresource: str, new: Any, old: Any) -> Decision:
    if subresource != "status":
        return _deny("may only update PVC status")
    if operation != "UPDATE":
        return _unexpected(operation)
    if _pvc_for_compare(old) != _pvc_for_compare(new):
        return _deny(f"node {_q(node)} is not allowed to update fields other than status.quantity and "
                     "status.conditions")
    return ALLOW


def _admit_token_request(node: str, operation: str, subresource: str, namespace: str, new: Any,
                         bound_pod: Any) -> Decision:
    if operation != "CREATE" or subresource != "token":
        return ALLOW
    if not isinstance(new, Mapping):
        return _deny("unexpected type")
    ref = _spec(new).get("boundObjectRef")
    if not isinstance(ref, Mapping) or ref.get("apiVersion") != "v1" or ref.get("kind") != "Pod" \
            or not _str(ref.get("name")):
        return _deny("node requested token not bound to a pod")
    if not _str(ref.get("uid")):
        return _deny("node requested token with a pod binding without a uid")
    if not isinstance(bound_pod, Mapping) or _meta(bound_pod).get("name") != ref.get("name") \
            or _str(_meta(bound_pod).get("namespace")) not in ("", namespace):
        return _missing("pods", ref.get("name"))
    if ref.get("uid") != _meta(bound_pod).get("uid"):
        return _deny(f"the UID in the bound object reference ({ref.get('uid')}) does not match the UID in "
                     "record. The object might have been deleted and then recreated")
    if _str(_spec(bound_pod).get("nodeName")) != node:
        return _deny("node requested token bound to a pod scheduled on a different node")
    if podrefs.is_mirror_pod(bound_pod):
        # Stricter than the plugin, as strict as Kubernetes end to end: there a mirror pod
        # never runs as a service account (neither NodeRestriction nor the ServiceAccount
        # plugin lets one name it), so no token can be bound to it.
        return _deny("node requested token bound to a mirror pod")
    return ALLOW


def admit_node_request(user: str, groups: tuple[str, ...], operation: str, resource: str, subresource: str,
                       name: str, new: Any, old: Any, *, namespace: str = "", node: Any = None,
                       bound_pod: Any = None) -> Decision:
    """NodeRestriction: ALLOW, or DENY with a reason. ``operation`` is CREATE/UPDATE/DELETE.

    ``resource`` is ``group/resource`` ('/nodes', '/pods', 'coordination.k8s.io/leases').
    ``new`` is the object written (for a token request the TokenRequest), ``old`` the
    stored one (for an eviction, the pod being evicted). What the plugin looks up in
    Kubernetes comes in as data: ``node`` is the requesting node's own Node object (to
    check a mirror pod's owner reference), ``bound_pod`` the pod a TokenRequest's
    ``boundObjectRef`` names in ``namespace`` (None when there is none).
    """
    is_node, node_name = node_identity(user, groups)
    if not is_node:
        return ALLOW
    if not node_name:
        return _deny(f"could not determine node from user {user!r}")
    if resource == "/pods":
        return _admit_pod(node_name, operation, subresource, name, new, old, node)
    if resource == "/nodes":
        return _admit_node(node_name, operation, subresource, name, new, old)
    if resource == "/persistentvolumeclaims":
        return _admit_pvc(node_name, operation, subresource, new, old)
    if resource == "/serviceaccounts":
        return _admit_token_request(node_name, operation, subresource, namespace, new, bound_pod)
    if resource == "coordination.k8s.io/leases":
        if namespace != NODE_LEASE_NAMESPACE:
            return _deny(f'can only access leases in the "{NODE_LEASE_NAMESPACE}" system namespace')
        lease_name = _str(_meta(new).get("name")) if operation == "CREATE" else name
        if lease_name != node_name:
            return _deny("can only access node lease with the same name as the requesting node")
        return ALLOW
    if resource == "storage.k8s.io/csinodes":
        csinode_name = _str(_meta(new).get("name")) if operation == "CREATE" else name
        if csinode_name != node_name:
            return _deny("can only access CSINode with the same name as the requesting node")
        return ALLOW
    if resource == "resource.k8s.io/resourceslices":
        if operation == "CREATE" and _str(_spec(new).get("nodeName")) != node_name:
            return _deny("can only create ResourceSlice with the same NodeName as the requesting node")
        if operation == "DELETE" and _str(_spec(old).get("nodeName")) != node_name:
            return _deny("can only delete ResourceSlice with the same NodeName as the requesting node")
        return ALLOW
    return ALLOW


__all__ = [
    "NODE_RULES", "NodeGraph", "admit_node_request", "authorize_node", "label_forbidden_for_node",
    "node_identity",
]
