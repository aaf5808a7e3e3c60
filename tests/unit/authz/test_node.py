"""Node authorizer + NodeRestriction, after Kubernetes' node_authorizer_test.go cases."""

from __future__ import annotations

import pytest

from kedge.authz.bootstrap import (
    CLOUDCORE_GROUP, authorize_chain, authorize_node_impersonation, bootstrap_cluster_role_bindings,
    bootstrap_cluster_roles,
)
from kedge.authz.labels import parse_field_selector
from kedge.authz.node import NodeGraph, admit_node_request, authorize_node, label_forbidden_for_node
from kedge.authz.rbac import Attributes, Policy


def pod(name, node, ns="ns", secret=None, cm=None, pvc=None, sa=None, env_secret=None):
    spec = {"nodeName": node, "containers": [{"name": "c", "image": "i"}], "volumes": []}
    if secret:
        spec["volumes"].append({"name": "s", "secret": {"secretName": secret}})
    if cm:
        spec["volumes"].append({"name": "c", "configMap": {"name": cm}})
    if pvc:
        spec["volumes"].append({"name": "p", "persistentVolumeClaim": {"claimName": pvc}})
    if sa:
        spec["serviceAccountName"] = sa
    if env_secret:
        spec["containers"][0]["env"] = [{"name": "X", "valueFrom": {"secretKeyRef": {"name": env_secret, "key": "k"}}}]
    return {"metadata": {"name": name, "namespace": ns}, "spec": spec}


@pytest.fixture()
def graph():
    g = NodeGraph()
    g.set_pod(pod("pa", "node-a", secret="sa-secret", cm="a-cm", pvc="a-pvc", sa="a-sa", env_secret="env-secret"))
    g.set_pod(pod("pb", "node-b", secret="sb-secret"))
    g.set_pod(pod("unbound", "", secret="floating"))
    return g


def node_attrs(node="node-a", **kw):
    kw.setdefault("verb", "get")
    return Attributes(user=f"system:node:{node}", groups=("system:nodes", "system:authenticated"), **kw)


@pytest.mark.parametrize("kw,allowed", [
    (dict(resource="secrets", namespace="ns", name="sa-secret"), True),
    (dict(resource="secrets", namespace="ns", name="env-secret"), True),
    (dict(resource="secrets", namespace="ns", name="sb-secret"), False),   # another node's pod's secret
    (dict(resource="secrets", namespace="ns", name="floating"), False),    # referenced by an unbound pod
    (dict(resource="secrets", namespace="ns", name="unreferenced"), False),
    (dict(resource="secrets", namespace="other", name="sa-secret"), False),  # same name, other namespace
    (dict(resource="secrets", namespace="ns", name="sa-secret", verb="update"), False),
    (dict(resource="secrets", namespace="ns", verb="list"), False),
    (dict(resource="secrets", namespace="ns", name="sa-secret", verb="watch"), True),
    (dict(resource="configmaps", namespace="ns", name="a-cm"), True),
    (dict(resource="persistentvolumeclaims", namespace="ns", name="a-pvc"), True),
    (dict(resource="persistentvolumeclaims", namespace="ns", name="a-pvc", verb="list"), False),
    (dict(resource="serviceaccounts", namespace="ns", name="a-sa", verb="create", subresource="token"), True),
    (dict(resource="serviceaccounts", namespace="ns", name="a-sa", verb="get"), False),
    (dict(resource="pods", namespace="ns", name="pa"), True),
    (dict(resource="pods", namespace="ns", name="pb"), False),
    (dict(resource="pods", verb="list"), False),
    (dict(resource="pods", verb="list", field_selector=parse_field_selector("spec.nodeName=node-a")), True),
    (dict(resource="pods", verb="watch", field_selector=parse_field_selector("spec.nodeName=node-b")), False),
    (dict(resource="pods", namespace="ns", name="pb", verb="update", subresource="status"), True),  # admission decides
    (dict(resource="pods", namespace="ns", name="pa", verb="update"), False),
    (dict(resource="nodes", name="node-a"), True),
    (dict(resource="nodes", name="node-b"), False),
    (dict(resource="nodes", verb="list"), False),
    (dict(resource="nodes", verb="list", name="node-a"), True),
    (dict(resource="nodes", name="node-b", verb="patch", subresource="status"), True),  # admission decides
    (dict(resource="nodes", name="node-b", verb="delete"), False),
    (dict(api_group="coordination.k8s.io", resource="leases", namespace="kube-node-lease", name="node-a", verb="update"), True),
    (dict(api_group="coordination.k8s.io", resource="leases", namespace="kube-node-lease", name="node-b", verb="update"), False),
    (dict(api_group="coordination.k8s.io", resource="leases", namespace="default", name="node-a"), False),
    (dict(resource="events", namespace="ns", verb="create"), True),
    (dict(resource="services", namespace="ns", verb="list"), True),
    (dict(resource="endpoints", namespace="ns", verb="list"), False),
])
def test_node_authorizer(graph, kw, allowed):
    assert authorize_node(node_attrs(**kw), graph).allowed is allowed


def test_non_nodes_get_no_opinion(graph):
    a = Attributes(user="system:node:node-a", groups=("system:authenticated",), verb="get", resource="secrets",
                   namespace="ns", name="sa-secret")
    assert not authorize_node(a, graph).allowed  # right user name but not in system:nodes


def test_graph_follows_pod_moves_and_deletes(graph):
    assert graph.has_path("node-a", "secrets", "ns", "sa-secret")
    graph.set_pod(pod("pa", "node-b", secret="sa-secret"))
    assert not graph.has_path("node-a", "secrets", "ns", "sa-secret")
    assert graph.has_path("node-b", "secrets", "ns", "sa-secret")
    graph.remove_pod("ns", "pa")
    assert not graph.has_path("node-b", "secrets", "ns", "sa-secret")
    # two pods sharing a secret: removing one keeps the edge
    graph.set_pod(pod("x1", "node-c", secret="shared"))
    graph.set_pod(pod("x2", "node-c", secret="shared"))
    graph.remove_pod("ns", "x1")
    assert graph.has_path("node-c", "secrets", "ns", "shared")


NODE_USER = "system:node:node-a"
NODE_GROUPS = ("system:nodes", "system:authenticated")


def _node(name, labels=None, taints=None):
    return {"metadata": {"name": name, "labels": labels or {}}, "spec": {"taints": taints} if taints else {}}


def test_node_cannot_modify_another_node():
    d = admit_node_request(NODE_USER, NODE_GROUPS, "UPDATE", "/nodes", "status", "node-b", _node("node-b"), _node("node-b"))
    assert not d.allowed
    assert admit_node_request(NODE_USER, NODE_GROUPS, "UPDATE", "/nodes", "status", "node-a",
                              _node("node-a"), _node("node-a")).allowed


@pytest.mark.parametrize("label,forbidden", [
    ("node-restriction.kubernetes.io/role", True),
    ("foo.node-restriction.kubernetes.io/x", True),
    ("kubernetes.io/hostname", False),
    ("topology.kubernetes.io/zone", False),
    ("node.kubernetes.io/whatever", False),
    ("kubernetes.io/role", True),
    ("node-role.kubernetes.io/master", True),
    ("example.com/x", False),
    ("plain", False),
])
def test_restricted_labels(label, forbidden):
    assert label_forbidden_for_node(label) is forbidden


def test_node_cannot_label_itself_with_restricted_label():
    old = _node("node-a", {"a": "b"})
    new = _node("node-a", {"a": "b", "node-restriction.kubernetes.io/trusted": "yes"})
    assert not admit_node_request(NODE_USER, NODE_GROUPS, "UPDATE", "/nodes", "", "node-a", new, old).allowed
    assert not admit_node_request(NODE_USER, NODE_GROUPS, "CREATE", "/nodes", "", "node-a", new, None).allowed
    # an existing restricted label the node leaves alone is fine
    assert admit_node_request(NODE_USER, NODE_GROUPS, "UPDATE", "/nodes", "", "node-a", new, new).allowed
    assert not admit_node_request(NODE_USER, NODE_GROUPS, "UPDATE", "/nodes", "", "node-a",
                                  _node("node-a", taints=[{"key": "x", "effect": "NoSchedule"}]), old).allowed


def test_node_pod_writes_limited_to_own_pods():
    mine, theirs = pod("pa", "node-a"), pod("pb", "node-b")
    assert admit_node_request(NODE_USER, NODE_GROUPS, "UPDATE", "/pods", "status", "pa", mine, mine).allowed
    assert not admit_node_request(NODE_USER, NODE_GROUPS, "UPDATE", "/pods", "status", "pb", theirs, theirs).allowed
    assert not admit_node_request(NODE_USER, NODE_GROUPS, "DELETE", "/pods", "", "pb", None, theirs).allowed
    assert not admit_node_request(NODE_USER, NODE_GROUPS, "CREATE", "/pods", "", "pa", mine, None).allowed  # not mirror
    mirror = pod("m", "node-a")
    mirror["metadata"]["annotations"] = {"kubernetes.io/config.mirror": "x"}
    mirror["metadata"]["ownerReferences"] = [{"apiVersion": "v1", "kind": "Node", "name": "node-a", "uid": "a-uid",
                                              "controller": True}]
    node_a = {"metadata": {"name": "node-a", "uid": "a-uid"}}
    assert admit_node_request(NODE_USER, NODE_GROUPS, "CREATE", "/pods", "", "m", mirror, None, node=node_a).allowed
    assert not admit_node_request(NODE_USER, NODE_GROUPS, "CREATE", "/pods", "", "m", mirror, None).allowed  # no Node


def test_admission_ignores_non_nodes():
    assert admit_node_request("alice", ("g",), "UPDATE", "/nodes", "", "node-b", _node("node-b"), None).allowed


def _bootstrap_policy():
    return Policy.build(cluster_roles=bootstrap_cluster_roles(), cluster_role_bindings=bootstrap_cluster_role_bindings())


def test_cloudcore_may_impersonate_nodes_only():
    cc = dict(user="system:kedge:cloudcore", groups=(CLOUDCORE_GROUP, "system:authenticated"), verb="impersonate")
    p, g = _bootstrap_policy(), NodeGraph()
    assert authorize_chain(Attributes(resource="users", name="system:node:edge-1", **cc), p, g).allowed
    assert authorize_chain(Attributes(resource="groups", name="system:nodes", **cc), p, g).allowed
    assert not authorize_chain(Attributes(resource="users", name="kedge-admin", **cc), p, g).allowed
    assert not authorize_chain(Attributes(resource="groups", name="system:masters", **cc), p, g).allowed
    assert not authorize_chain(Attributes(resource="users", name="system:node:../x", **cc), p, g).allowed
    assert not authorize_node_impersonation(Attributes(user="x", groups=("g",), verb="impersonate",
                                                       resource="users", name="system:node:a")).allowed
    # cloudcore's own identity reads no secrets
    assert not authorize_chain(Attributes(resource="secrets", verb="get", namespace="default", name="s", **{
        k: v for k, v in cc.items() if k != "verb"}), p, g).allowed


def test_masters_are_cluster_admin_and_authenticated_can_discover():
    p, g = _bootstrap_policy(), NodeGraph()
    assert authorize_chain(Attributes(user="kedge-admin", groups=("system:masters",), verb="delete",
                                      resource="secrets", namespace="x", name="y"), p, g).allowed
    assert authorize_chain(Attributes(user="u", groups=("system:authenticated",), verb="get",
                                      resource_request=False, path="/apis/apps/v1"), p, g).allowed
    assert not authorize_chain(Attributes(user="u", groups=("system:authenticated",), verb="get",
                                          resource="pods", namespace="x"), p, g).allowed


def _pv(name, claim, **source):
    return {"metadata": {"name": name}, "spec": dict({"claimRef": {"namespace": "ns", "name": claim}}, **source)}


def test_persistent_volumes_and_attachments_follow_the_graph(graph):
    # node <- pod <- pvc <- pv, the PV naming its claim (spec.claimRef), as Kubernetes' graph links them
    graph.set_pv(_pv("pv-1", "a-pvc"))
    graph.set_pv(_pv("pv-2", "other"))
    graph.set_volume_attachment({"metadata": {"name": "va-1"}, "spec": {"nodeName": "node-a"}})
    ok = lambda **kw: authorize_node(node_attrs(**kw), graph).allowed  # noqa: E731
    assert ok(resource="persistentvolumes", name="pv-1")
    assert not ok(resource="persistentvolumes", name="pv-2")  # its claim is used by no pod of node-a
    assert not authorize_node(node_attrs("node-b", resource="persistentvolumes", name="pv-1"), graph).allowed
    assert ok(api_group="storage.k8s.io", resource="volumeattachments", name="va-1")
    assert not authorize_node(node_attrs("node-b", api_group="storage.k8s.io", resource="volumeattachments",
                                         name="va-1"), graph).allowed
    graph.remove_pv("pv-1")
    assert not ok(resource="persistentvolumes", name="pv-1")


def test_a_claims_volume_name_grants_nothing(graph):
    """Whoever may write a PVC in a namespace must not be able to point a node at any PV.

    The claim's own ``spec.volumeName`` is the claimant's word; Kubernetes' graph follows
    the PV's ``spec.claimRef`` only.
    """
    graph.set_pv(_pv("victim-pv", "someone-elses-claim", csi={"driver": "d", "volumeHandle": "h",
                                                                "nodePublishSecretRef": {"namespace": "ns",
                                                                                         "name": "victim"}}))
    graph.set_pvc({"metadata": {"namespace": "ns", "name": "a-pvc"}, "spec": {"volumeName": "victim-pv"}})
    assert not authorize_node(node_attrs(resource="persistentvolumes", name="victim-pv"), graph).allowed
    assert not authorize_node(node_attrs(resource="secrets", namespace="ns", name="victim"), graph).allowed


def test_secret_reachable_through_a_persistent_volume(graph):
    # node <- pod <- pvc <- pv <- secret (Kubernetes: "allowed shared secret via pvc")
    graph.set_pv(_pv("pv-1", "a-pvc", csi={"driver": "d", "volumeHandle": "h",
                                          "nodePublishSecretRef": {"namespace": "ns", "name": "csi-secret"},
                                          "controllerPublishSecretRef": {"namespace": "ns", "name": "ctrl"},
                                          "controllerExpandSecretRef": {"namespace": "ns", "name": "ctrl-x"}}))
    assert authorize_node(node_attrs(resource="secrets", namespace="ns", name="csi-secret"), graph).allowed
    # the CSI controller's secrets are not the kubelet's to read
    assert not authorize_node(node_attrs(resource="secrets", namespace="ns", name="ctrl"), graph).allowed
    assert not authorize_node(node_attrs(resource="secrets", namespace="ns", name="ctrl-x"), graph).allowed
    assert not authorize_node(node_attrs("node-b", resource="secrets", namespace="ns", name="csi-secret"),
                              graph).allowed
    graph.remove_pv("pv-1")
    assert not authorize_node(node_attrs(resource="secrets", namespace="ns", name="csi-secret"), graph).allowed


@pytest.mark.parametrize("source,secret", [
    ({"flexVolume": {"driver": "d", "secretRef": {"name": "flex"}}}, ("ns", "flex")),  # claim's namespace
    ({"flexVolume": {"driver": "d", "secretRef": {"name": "flex", "namespace": "other"}}}, ("other", "flex")),
    ({"rbd": {"monitors": ["m"], "image": "i", "secretRef": {"name": "rbd"}}}, ("ns", "rbd")),
    ({"azureFile": {"shareName": "s", "secretName": "az"}}, ("ns", "az")),
    ({"azureFile": {"shareName": "s", "secretName": "az", "secretNamespace": "x"}}, ("x", "az")),
    ({"cinder": {"volumeID": "v", "secretRef": {"name": "cin"}}}, ("", "cin")),  # no claimRef fallback
])
def test_pv_driver_secret_namespaces(graph, source, secret):
    graph.set_pv(_pv("pv-1", "a-pvc", **source))
    ns, name = secret
    assert authorize_node(node_attrs(resource="secrets", namespace=ns, name=name), graph).allowed is bool(ns)
    if ns != "ns":
        assert not authorize_node(node_attrs(resource="secrets", namespace="ns", name=name), graph).allowed


def test_mirror_pods_link_only_to_their_node():
    """Kubernetes' graph adds no edge from a mirror pod's references (defence behind NodeRestriction)."""
    g = NodeGraph()
    m = pod("static-web", "node-a", secret="db-password", cm="c", pvc="p", sa="admin-sa", env_secret="e")
    m["metadata"]["annotations"] = {"kubernetes.io/config.mirror": "hash"}
    g.set_pod(m)
    ok = lambda **kw: authorize_node(node_attrs(**kw), g).allowed  # noqa: E731
    assert ok(resource="pods", namespace="ns", name="static-web")
    assert not ok(resource="secrets", namespace="ns", name="db-password")
    assert not ok(resource="secrets", namespace="ns", name="e")
    assert not ok(resource="configmaps", namespace="ns", name="c")
    assert not ok(resource="persistentvolumeclaims", namespace="ns", name="p")
    assert not ok(resource="serviceaccounts", namespace="ns", name="admin-sa", verb="create", subresource="token")
    # the same pod without the annotation links everything
    del m["metadata"]["annotations"]
    g.set_pod(m)
    assert ok(resource="secrets", namespace="ns", name="db-password")


def test_graph_survives_ill_typed_pods():
    g = NodeGraph()
    for bad in ({}, {"metadata": "x"}, {"metadata": {"name": 3, "namespace": []}, "spec": {"nodeName": "n"}},
                {"metadata": {"name": "p", "namespace": "ns"}, "spec": {"nodeName": ["n"]}},
                {"metadata": {"name": "p", "namespace": "ns"}, "spec": {"nodeName": "n", "volumes": [
                    {"name": "v", "configMap": "oops"}, {"secret": ["x"]}, 7]}}):
        g.set_pod(bad)
    g.set_pv({"metadata": {"name": "pv"}, "spec": {"claimRef": "x", "csi": 1}})
    g.set_volume_attachment({"metadata": None, "spec": {"nodeName": 5}})
    assert g.has_path("n", "pods", "ns", "p")
