"""Threat: one edge node turns itself into cluster-admin through mirror pods.

Red-team findings, driven against a real cloudcore over HTTPS with a joined node's own
client certificate (``system:node:<name>``, group ``system:nodes``):

* a node created a mirror pod of itself whose ``envFrom`` named any Secret; the Node
  authorizer's graph then linked that Secret to the node, which read it;
* the same with a secret, configmap, projected or PVC volume, a service account, or an
  owner reference that is not its own Node;
* a mirror pod naming a service account gave the node tokens for that account (a
  TokenRequest bound to the mirror pod).

Kubernetes refuses all of it twice: NodeRestriction admits a node's mirror pod only with
one controller owner reference to the node's own Node and no reference to any API object,
and the node authorizer's graph never follows a mirror pod's references.
"""

from __future__ import annotations

import pytest

from support.api import Api, create_namespace, node_api, user_api
from support.cluster import Cloud
from support.fixtures import cloud  # noqa: F401 - pytest fixture

NS = "node-esc"
NODE = "esc-node"
MIRROR = {"kubernetes.io/config.mirror": "static-hash"}


@pytest.fixture(scope="module")
def apis(cloud: Cloud, tmp_path_factory):
    """(admin, node, node's uid): the admin is system:masters, the node a real joined node."""
    root = tmp_path_factory.mktemp("node-esc")
    admin = user_api(cloud, "esc-admin", ["system:masters"], out_dir=root)
    edge = root / NODE
    assert cloud.join(NODE, edge).returncode == 0
    node = node_api(cloud, edge)

    create_namespace(admin, NS)
    for sa in ("admin-sa", "app-sa", "other-sa"):
        assert admin.request("POST", f"/api/v1/namespaces/{NS}/serviceaccounts", {"metadata": {"name": sa}})[0] == 201
    for secret in ("crown-jewels", "app-secret"):
        assert admin.request("POST", f"/api/v1/namespaces/{NS}/secrets",
                             {"metadata": {"name": secret}, "stringData": {"k": "v"}})[0] == 201
    status, me = node.request("POST", "/api/v1/nodes", {"metadata": {"name": NODE}})
    assert status == 201, me
    return admin, node, me["metadata"]["uid"]


def _mirror_pod(name: str, uid: str, **spec) -> dict:
    """A mirror pod as a kubelet makes one: annotated, bound to the node, owned by its Node."""
    return {"metadata": {"name": name, "namespace": NS, "annotations": dict(MIRROR),
                         "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": NODE, "uid": uid,
                                              "controller": True}]},
            "spec": dict({"nodeName": NODE, "serviceAccountName": "", "containers": [{"name": "c", "image": "i"}]},
                         **spec)}


def _create_pod(api: Api, pod: dict):
    return api.request("POST", f"/api/v1/namespaces/{NS}/pods", pod)


@pytest.mark.threat("K-NODE-MIRROR-POD-ESCALATION")
def test_mirror_pod_referencing_a_secret_via_envfrom_is_refused(apis):
    _, node, uid = apis
    pod = _mirror_pod("envfrom", uid, containers=[{"name": "c", "image": "i",
                                                   "envFrom": [{"secretRef": {"name": "crown-jewels"}}]}])
    status, body = _create_pod(node, pod)
    assert status == 403, body
    assert "can not create pods that reference secrets" in body["message"]
    # ... and the secret it named stays out of the node's reach.
    assert node.request("GET", f"/api/v1/namespaces/{NS}/secrets/crown-jewels")[0] == 403


@pytest.mark.threat("K-NODE-MIRROR-POD-ESCALATION")
@pytest.mark.parametrize("what,spec,meta", [
    ("secret volume", {"volumes": [{"name": "v", "secret": {"secretName": "crown-jewels"}}]}, None),
    ("configmap volume", {"volumes": [{"name": "v", "configMap": {"name": "kube-root-ca.crt"}}]}, None),
    ("projected token", {"volumes": [{"name": "v", "projected": {"sources": [
        {"serviceAccountToken": {"path": "token", "audience": "api"}}]}}]}, None),
    ("projected secret", {"volumes": [{"name": "v", "projected": {"sources": [
        {"secret": {"name": "crown-jewels"}}]}}]}, None),
    ("persistent volume claim", {"volumes": [{"name": "v", "persistentVolumeClaim": {"claimName": "data"}}]}, None),
    ("ephemeral volume", {"volumes": [{"name": "v", "ephemeral": {"volumeClaimTemplate": {"spec": {}}}}]}, None),
    ("service account", {"serviceAccountName": "admin-sa"}, None),
    ("image pull secret", {"imagePullSecrets": [{"name": "crown-jewels"}]}, None),
    ("foreign owner", {}, {"ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs",
                                                "uid": "u", "controller": True}]}),
    ("no owner", {}, {"ownerReferences": []}),
])
def test_mirror_pod_referencing_api_objects_is_refused(apis, what, spec, meta):
    _, node, uid = apis
    pod = _mirror_pod(f"m-{what.replace(' ', '-')}", uid, **spec)
    pod["metadata"].update(meta or {})
    status, body = _create_pod(node, pod)
    assert status == 403, (what, body)


@pytest.mark.threat("K-NODE-MIRROR-POD-ESCALATION")
def test_node_cannot_read_secrets_or_get_tokens_through_a_mirror_pod(apis):
    """Nobody can plant a mirror pod that names credentials (Kubernetes' ServiceAccount admission),
    and a mirror pod that exists grants its node nothing (the graph follows none of its references:
    tests/unit/authz/test_node.py::test_mirror_pods_link_only_to_their_node)."""
    admin, node, uid = apis
    for extra, what in (({"serviceAccountName": "admin-sa"}, "service accounts"),
                        ({"volumes": [{"name": "v", "secret": {"secretName": "crown-jewels"}}]}, "secrets"),
                        ({"volumes": [{"name": "v", "projected": {"sources": [{"serviceAccountToken": {
                            "path": "t"}}]}}]}, "ServiceAccountToken")):
        status, body = _create_pod(admin, _mirror_pod("planted", uid, **extra))
        assert status == 403 and what in body["message"], body
    status, body = _create_pod(admin, _mirror_pod("planted", uid))
    assert status == 201, body
    assert body["spec"].get("serviceAccountName", "") == ""  # no service account defaulted into a mirror pod
    assert node.request("GET", f"/api/v1/namespaces/{NS}/pods/planted")[0] == 200  # its own mirror pod: yes
    assert node.request("GET", f"/api/v1/namespaces/{NS}/secrets/crown-jewels")[0] == 403
    status, body = node.request("POST", f"/api/v1/namespaces/{NS}/serviceaccounts/admin-sa/token", {
        "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
        "spec": {"boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": "planted",
                                    "uid": body["metadata"]["uid"]}}})
    assert status == 403, body


@pytest.mark.threat("K-NODE-MIRROR-POD-ESCALATION")
def test_node_cannot_get_a_token_for_a_pod_on_another_node(apis):
    admin, node, _ = apis
    # The node legitimately runs a pod as app-sa, so the authorizer lets it ask for app-sa tokens ...
    for name, on in (("mine-shared", NODE), ("theirs-shared", "other-node")):
        status, body = _create_pod(admin, {"metadata": {"name": name, "namespace": NS},
                                           "spec": {"nodeName": on, "serviceAccountName": "app-sa",
                                                    "containers": [{"name": "c", "image": "i"}]}})
        assert status == 201, body
    theirs = admin.request("GET", f"/api/v1/namespaces/{NS}/pods/theirs-shared")[1]
    # ... but never one bound to another node's pod, nor one without a pod binding.
    for spec in ({"boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": "theirs-shared",
                                     "uid": theirs["metadata"]["uid"]}}, {}):
        status, body = node.request("POST", f"/api/v1/namespaces/{NS}/serviceaccounts/app-sa/token",
                                    {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec})
        assert status == 403, body
    # A service account only another node's pod runs as: refused by the authorizer already.
    status, _ = _create_pod(admin, {"metadata": {"name": "theirs-other", "namespace": NS},
                                    "spec": {"nodeName": "other-node", "serviceAccountName": "other-sa",
                                             "containers": [{"name": "c", "image": "i"}]}})
    assert status == 201
    other = admin.request("GET", f"/api/v1/namespaces/{NS}/pods/theirs-other")[1]
    status, body = node.request("POST", f"/api/v1/namespaces/{NS}/serviceaccounts/other-sa/token", {
        "spec": {"boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": "theirs-other",
                                    "uid": other["metadata"]["uid"]}}})
    assert status == 403, body


@pytest.mark.threat("K-NODE-MIRROR-POD-ESCALATION")
def test_legitimate_pod_still_gets_its_secret_and_token(apis):
    admin, node, uid = apis
    status, pod = _create_pod(admin, {"metadata": {"name": "app", "namespace": NS},
                                      "spec": {"nodeName": NODE, "serviceAccountName": "app-sa",
                                               "containers": [{"name": "c", "image": "i", "envFrom": [
                                                   {"secretRef": {"name": "app-secret"}}]}]}})
    assert status == 201, pod
    assert node.request("GET", f"/api/v1/namespaces/{NS}/secrets/app-secret")[0] == 200
    assert node.request("GET", f"/api/v1/namespaces/{NS}/secrets/crown-jewels")[0] == 403
    status, body = node.request("POST", f"/api/v1/namespaces/{NS}/serviceaccounts/app-sa/token", {
        "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
        "spec": {"boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": "app",
                                    "uid": pod["metadata"]["uid"]}}})
    assert status == 201, body
    assert body["status"]["token"]
    # A mirror pod that references nothing is still the node's to create and delete.
    status, body = _create_pod(node, _mirror_pod("static-web", uid))
    assert status == 201, body
    assert node.request("DELETE", f"/api/v1/namespaces/{NS}/pods/static-web")[0] == 200
