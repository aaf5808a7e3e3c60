"""Default policy objects and the authorizer chain (Node, RBAC, kedge node impersonation).

Decision on cloudcore impersonation: Kubernetes RBAC cannot express "impersonate any
user named ``system:node:*``" -- ``resourceNames`` are exact. Granting ``impersonate`` on
all users would let cloudcore act as any user name, so kedge instead ships a narrow,
built-in rule (:func:`authorize_node_impersonation`): members of the
``system:kedge-cloudcore`` group may impersonate a user ``system:node:<dns-name>`` and
the groups ``system:nodes`` / ``system:authenticated`` -- nothing else. Against a real
Kubernetes API server (``kedge manifests``) that rule has to be approximated with RBAC.
The ``system:kedge-cloudcore`` ClusterRole itself grants no secrets or configmaps:
cloudcore reads those only while impersonating the node that needs them.
"""

from __future__ import annotations

import re
from typing import Any

from kedge.authz.node import NODE_USER_PREFIX, NODES_GROUP, NodeGraph, authorize_node
from kedge.authz.rbac import (
    ALLOW, AUTHENTICATED, NO_OPINION, RBAC_GROUP, SYSTEM_MASTERS, Attributes, Decision, Policy,
    Verdict, authorize,
)

CLOUDCORE_GROUP = "system:kedge-cloudcore"
CLOUDCORE_ROLE = "system:kedge-cloudcore"
BOOTSTRAP_LABEL = {"kubernetes.io/bootstrapping": "rbac-defaults"}

_DNS1123 = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?(\.[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)*")


def _cluster_role(name: str, rules: list[dict[str, Any]], labels: dict[str, str] | None = None,
                  aggregation: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": f"{RBAC_GROUP}/v1", "kind": "ClusterRole",
        "metadata": {"name": name, "labels": {**BOOTSTRAP_LABEL, **(labels or {})},
                     "annotations": {"rbac.authorization.kubernetes.io/autoupdate": "true"}},
        "rules": rules,
    }
    if aggregation is not None:
        obj["aggregationRule"] = {"clusterRoleSelectors": aggregation}
    return obj


def _binding(name: str, role: str, subjects: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "apiVersion": f"{RBAC_GROUP}/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": name, "labels": dict(BOOTSTRAP_LABEL),
                     "annotations": {"rbac.authorization.kubernetes.io/autoupdate": "true"}},
        "roleRef": {"apiGroup": RBAC_GROUP, "kind": "ClusterRole", "name": role},
        "subjects": subjects,
    }


def _group(name: str) -> dict[str, Any]:
    return {"apiGroup": RBAC_GROUP, "kind": "Group", "name": name}


_RW = ["get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"]
_RO = ["get", "list", "watch"]


def bootstrap_cluster_roles() -> list[dict[str, Any]]:
    """ClusterRoles created on first start (never overwritten once they exist)."""
    return [
        _cluster_role("cluster-admin", [
            {"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]},
            {"nonResourceURLs": ["*"], "verbs": ["*"]},
        ]),
        _cluster_role("system:discovery", [{"nonResourceURLs": [
            "/api", "/api/*", "/apis", "/apis/*", "/healthz", "/livez", "/readyz", "/openapi",
            "/openapi/*", "/version", "/version/"], "verbs": ["get"]}]),
        _cluster_role("system:public-info-viewer", [{"nonResourceURLs": [
            "/healthz", "/livez", "/readyz", "/version", "/version/"], "verbs": ["get"]}]),
        _cluster_role("system:basic-user", [
            {"apiGroups": ["authorization.k8s.io"], "resources": ["selfsubjectaccessreviews",
                                                                 "selfsubjectrulesreviews"], "verbs": ["create"]},
            {"apiGroups": ["authentication.k8s.io"], "resources": ["selfsubjectreviews"], "verbs": ["create"]},
        ]),
        # User-facing roles, aggregated from labelled pieces like Kubernetes' admin/edit/view.
        _cluster_role("view", [], aggregation=[{"matchLabels": {"rbac.authorization.k8s.io/aggregate-to-view": "true"}}]),
        _cluster_role("edit", [], labels={"rbac.authorization.k8s.io/aggregate-to-admin": "true"},
                      aggregation=[{"matchLabels": {"rbac.authorization.k8s.io/aggregate-to-edit": "true"}}]),
        _cluster_role("admin", [], aggregation=[{"matchLabels": {"rbac.authorization.k8s.io/aggregate-to-admin": "true"}}]),
        _cluster_role("system:aggregate-to-view", [
            {"apiGroups": [""], "resources": ["pods", "pods/status", "pods/log", "configmaps", "services", "endpoints",
                                              "persistentvolumeclaims", "serviceaccounts", "events",
                                              "namespaces", "namespaces/status"], "verbs": _RO},
            {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": _RO},
        ], labels={"rbac.authorization.k8s.io/aggregate-to-view": "true"}),
        _cluster_role("system:aggregate-to-edit", [
            {"apiGroups": [""], "resources": ["pods", "configmaps", "secrets", "services", "endpoints",
                                              "persistentvolumeclaims", "serviceaccounts"], "verbs": _RW},
            {"apiGroups": [""], "resources": ["pods/eviction", "serviceaccounts/token"], "verbs": ["create"]},
            {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": _RW},
        ], labels={"rbac.authorization.k8s.io/aggregate-to-edit": "true"}),
        _cluster_role("system:aggregate-to-admin", [
            {"apiGroups": [RBAC_GROUP], "resources": ["roles", "rolebindings"], "verbs": _RW},
            {"apiGroups": ["authorization.k8s.io"], "resources": ["localsubjectaccessreviews"], "verbs": ["create"]},
        ], labels={"rbac.authorization.k8s.io/aggregate-to-admin": "true"}),
        _cluster_role(CLOUDCORE_ROLE, [
            {"apiGroups": [""], "resources": ["nodes", "pods", "namespaces"], "verbs": _RO},
            {"apiGroups": [""], "resources": ["events"], "verbs": ["create", "patch", "update"]},
            {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get", "create", "update"]},
            {"apiGroups": ["devices.kubeedge.io"], "resources": ["devices", "devicemodels"], "verbs": _RO},
            {"apiGroups": ["devices.kubeedge.io"], "resources": ["devices/status"], "verbs": ["update", "patch"]},
        ]),
    ]


def bootstrap_cluster_role_bindings() -> list[dict[str, Any]]:
    return [
        _binding("cluster-admin", "cluster-admin", [_group(SYSTEM_MASTERS)]),
        _binding("system:discovery", "system:discovery", [_group(AUTHENTICATED)]),
        _binding("system:public-info-viewer", "system:public-info-viewer", [_group(AUTHENTICATED)]),
        _binding("system:basic-user", "system:basic-user", [_group(AUTHENTICATED)]),
        _binding(CLOUDCORE_ROLE, CLOUDCORE_ROLE, [_group(CLOUDCORE_GROUP)]),
    ]


def authorize_node_impersonation(attrs: Attributes) -> Decision:
    """kedge's narrow rule: cloudcore may impersonate nodes and the node group, nothing else."""
    if CLOUDCORE_GROUP not in attrs.groups or attrs.verb != "impersonate" or not attrs.resource_request:
        return NO_OPINION
    if attrs.api_group != "" or attrs.subresource:
        return NO_OPINION
    if attrs.resource == "users" and attrs.name.startswith(NODE_USER_PREFIX):
        node = attrs.name[len(NODE_USER_PREFIX):]
        if _DNS1123.fullmatch(node) and len(node) <= 253:
            return Decision(Verdict.ALLOW, "cloudcore may impersonate nodes")
    if attrs.resource == "groups" and attrs.name in (NODES_GROUP, AUTHENTICATED):
        return Decision(Verdict.ALLOW, "cloudcore may impersonate the node group")
    return NO_OPINION


def authorize_chain(attrs: Attributes, policy: Policy, graph: NodeGraph, *, node_authorization: bool = True) -> Decision:
    """Node authorizer, then RBAC, then the node-impersonation rule; first ALLOW wins.

    With ``node_authorization`` off (a loud, non-default configuration), node identities
    fall through to RBAC only -- where no default binding grants them anything.
    """
    if node_authorization:
        d = authorize_node(attrs, graph)
        if d.allowed:
            return d
        node_reason = d.reason
    else:
        node_reason = ""
    d = authorize(attrs, policy)
    if d.allowed:
        return d
    d = authorize_node_impersonation(attrs)
    if d.allowed:
        return d
    return Decision(Verdict.NO_OPINION, node_reason)


__all__ = [
    "ALLOW", "CLOUDCORE_GROUP", "authorize_chain", "authorize_node_impersonation",
    "bootstrap_cluster_roles", "bootstrap_cluster_role_bindings",
]
