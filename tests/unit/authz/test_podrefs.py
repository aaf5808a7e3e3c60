"""The one pod-reference walker: what it finds, and that no JSON value makes it raise."""

from __future__ import annotations

import copy
import json
import random

import pytest

from kedge.authz import podrefs
from kedge.cloud.edgecontroller.plan import referenced

FULL_POD = {
    "metadata": {"name": "web", "namespace": "shop"},
    "spec": {
        "nodeName": "edge-1",
        "serviceAccountName": "web-sa",
        "imagePullSecrets": [{"name": "pull"}],
        "initContainers": [{"name": "i", "envFrom": [{"secretRef": {"name": "init-env"}}]}],
        "containers": [{"name": "c", "env": [
            {"name": "A", "valueFrom": {"secretKeyRef": {"name": "env-secret", "key": "k"}}},
            {"name": "B", "valueFrom": {"configMapKeyRef": {"name": "env-cm", "key": "k"}}}],
            "envFrom": [{"configMapRef": {"name": "envfrom-cm"}}, {"secretRef": {"name": "envfrom-secret"}}]}],
        "ephemeralContainers": [{"name": "e", "envFrom": [{"secretRef": {"name": "debug-secret"}}]}],
        "volumes": [
            {"name": "s", "secret": {"secretName": "vol-secret"}},
            {"name": "c", "configMap": {"name": "vol-cm"}},
            {"name": "p", "projected": {"sources": [{"secret": {"name": "proj-secret"}},
                                                    {"configMap": {"name": "proj-cm"}},
                                                    {"serviceAccountToken": {"path": "t"}}]}},
            {"name": "pvc", "persistentVolumeClaim": {"claimName": "data"}},
            {"name": "scratch", "ephemeral": {"volumeClaimTemplate": {"spec": {}}}},
            {"name": "csi", "csi": {"driver": "d", "nodePublishSecretRef": {"name": "csi-secret"}}},
            {"name": "flex", "flexVolume": {"driver": "d", "secretRef": {"name": "flex-secret"}}},
            {"name": "az", "azureFile": {"secretName": "az-secret", "shareName": "s"}},
            {"name": "tmp", "emptyDir": {}},
        ],
        "resourceClaims": [{"name": "gpu", "resourceClaimName": "gpu-claim"},
                           {"name": "tpl", "resourceClaimTemplateName": "tpl"}],
    },
    "status": {"resourceClaimStatuses": [{"name": "tpl", "resourceClaimName": "web-tpl-abc"}]},
}


def test_walker_finds_every_reference_kubernetes_follows():
    refs = podrefs.pod_refs(FULL_POD)
    assert refs.service_account == "web-sa"
    assert refs.secrets == {"pull", "init-env", "env-secret", "envfrom-secret", "debug-secret", "vol-secret",
                            "proj-secret"}
    assert refs.driver_secrets == {"csi-secret", "flex-secret", "az-secret"}
    assert refs.configmaps == {"env-cm", "envfrom-cm", "vol-cm", "proj-cm"}
    assert refs.pvcs == {"data", "web-scratch"}
    assert refs.resource_claims == {"gpu-claim", "web-tpl-abc"}


def test_edgecontroller_sends_what_containers_consume():
    assert referenced(FULL_POD) == {("secret", "shop", n) for n in podrefs.pod_refs(FULL_POD).secrets} | {
        ("configmap", "shop", n) for n in podrefs.pod_refs(FULL_POD).configmaps}
    mirror = copy.deepcopy(FULL_POD)
    mirror["metadata"]["annotations"] = {podrefs.MIRROR_POD_ANNOTATION: "x"}
    assert referenced(mirror) == set()  # as the Node authorizer: a mirror pod reaches nothing


def test_deprecated_service_account_alias():
    assert podrefs.service_account_name({"spec": {"serviceAccount": "old"}}) == "old"
    assert podrefs.service_account_name({"spec": {"serviceAccountName": "new", "serviceAccount": "old"}}) == "new"


@pytest.mark.parametrize("spec,resource", [
    ({"serviceAccountName": "x"}, "serviceaccounts"),
    ({"serviceAccount": "x"}, "serviceaccounts"),
    ({"containers": [{"name": "c", "envFrom": [{"secretRef": {"name": "s"}}]}]}, "secrets"),
    ({"containers": [{"name": "c", "env": [{"name": "a", "valueFrom": {"secretKeyRef": {"name": "s"}}}]}]}, "secrets"),
    ({"imagePullSecrets": [{"name": "s"}]}, "secrets"),
    ({"volumes": [{"name": "v", "secret": {"secretName": "s"}}]}, "secrets"),
    ({"volumes": [{"name": "v", "secret": {}}]}, "secrets (via secret volumes)"),
    ({"volumes": [{"name": "v", "flexVolume": {"driver": "d", "secretRef": {"name": "s"}}}]}, "secrets"),
    ({"volumes": [{"name": "v", "configMap": {"name": "c"}}]}, "configmaps"),
    ({"volumes": [{"name": "v", "configMap": {}}]}, "configmaps (via configmap volumes)"),
    ({"containers": [{"name": "c", "envFrom": [{"configMapRef": {"name": "c"}}]}]}, "configmaps"),
    ({"resourceClaims": [{"name": "r", "resourceClaimName": "x"}]}, "resourceclaims"),
    ({"volumes": [{"name": "v", "persistentVolumeClaim": {"claimName": "p"}}]}, "persistentvolumeclaims"),
    ({"volumes": [{"name": "v", "ephemeral": {"volumeClaimTemplate": {}}}]},
     "persistentvolumeclaims (via ephemeral volumes)"),
    ({"volumes": [{"name": "v", "csi": {"driver": "d"}}]}, "csidrivers (via CSI volumes)"),
    ({"volumes": [{"name": "v", "glusterfs": {"endpoints": "e", "path": "p"}}]}, "endpoints (via glusterFS volumes)"),
    ({"volumes": [{"name": "v", "projected": {"sources": [{"serviceAccountToken": {"path": "t"}}]}}]},
     "serviceaccounts (via projected volumes)"),
    ({"volumes": [{"name": "v", "projected": {"sources": [{"clusterTrustBundle": {"name": "b"}}]}}]},
     "clustertrustbundles"),
    ({"volumes": [{"name": "v", "projected": {"sources": [{"podCertificate": {"signerName": "s"}}]}}]},
     "podcertificates"),
    ({"volumes": [{"name": "v", "projected": {"sources": [{"novel": {}}]}}]},
     "projected volume sources of an unknown type"),
    ({"volumes": [{"name": "v"}]}, "volumes of an unknown type"),
    ({"volumes": [{"name": "v", "somethingNew": {}}]}, "volumes of an unknown type"),
    ({"volumes": "oops"}, "volumes of an unknown type"),
    ({"volumes": [{"name": "v", "configMap": "oops"}]}, "configmaps (via configmap volumes)"),
    ({"volumes": [{"name": "v", "emptyDir": {}}, {"name": "h", "hostPath": {"path": "/x"}},
                  {"name": "d", "downwardAPI": {"items": []}},
                  {"name": "p", "projected": {"sources": [{"downwardAPI": {"items": []}}]}}]}, ""),
    ({"containers": [{"name": "c", "image": "nginx"}]}, ""),
])
def test_api_reference_names_what_a_mirror_pod_may_not_reference(spec, resource):
    assert podrefs.api_reference({"metadata": {"name": "m"}, "spec": spec}) == resource


def test_pv_secret_refs_are_the_kubelet_visible_ones():
    pv = {"spec": {"claimRef": {"namespace": "ns", "name": "c"}, "csi": {
        "controllerPublishSecretRef": {"namespace": "a", "name": "cp"},
        "controllerExpandSecretRef": {"namespace": "a", "name": "ce"},
        "nodePublishSecretRef": {"namespace": "a", "name": "np"},
        "nodeStageSecretRef": {"namespace": "a", "name": "ns"},
        "nodeExpandSecretRef": {"namespace": "a", "name": "ne"}}}}
    assert podrefs.pv_secret_refs(pv) == {("a", "np"), ("a", "ns"), ("a", "ne")}


# -- totality: any JSON value in, an answer out -----------------------------------

ODD_VALUES = [None, True, 0, -1, 1.5, "", "oops", [], [None], [1, "x"], {}, {"name": 5}, {"name": ["x"]},
              {"name": {"x": 1}}, {"secretName": None}, {"sources": "x"}, {"sources": [None, 3, {"secret": 1}]}]

SKELETON = copy.deepcopy(FULL_POD)


def _paths(value, prefix=()):
    yield prefix
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _paths(v, prefix + (i,))


def _replaced(path, new):
    if not path:
        return copy.deepcopy(new)
    pod = copy.deepcopy(SKELETON)
    node = pod
    for step in path[:-1]:
        node = node[step]
    node[path[-1]] = copy.deepcopy(new)
    return pod


def _all_walkers(pod):
    refs = podrefs.pod_refs(pod)
    assert all(isinstance(n, str) and n for n in refs.secrets | refs.configmaps | refs.pvcs | refs.driver_secrets)
    podrefs.graph_refs(pod).edges()
    assert isinstance(podrefs.api_reference(pod), str)
    podrefs.is_mirror_pod(pod)
    podrefs.pv_secret_refs(pod)
    podrefs.pv_claim(pod)
    referenced(pod) if isinstance(pod, dict) else None


@pytest.mark.parametrize("path", list(_paths(SKELETON)), ids=lambda p: "/".join(map(str, p)) or "root")
def test_walker_is_total_under_every_ill_typed_field(path):
    """Invariant: every walker returns (never raises) whatever sits at any place in a pod."""
    for odd in ODD_VALUES:
        _all_walkers(_replaced(path, odd))


def test_walker_is_total_on_random_json():
    rng = random.Random(20240611)  # fixed seed: a failure reproduces

    def value(depth):
        kind = rng.randrange(8 if depth < 5 else 5)
        keys = ["name", "secret", "secretName", "configMap", "volumes", "projected", "sources", "spec",
                "metadata", "containers", "env", "envFrom", "valueFrom", "secretRef", "claimRef", "csi",
                "annotations", "resourceClaims", "status", "ephemeral", "persistentVolumeClaim"]
        makers = [lambda: None, lambda: rng.random() < 0.5, lambda: rng.randrange(-3, 3),
                  lambda: rng.choice(["", "x", "kubernetes.io/config.mirror"]), lambda: 1.5,
                  lambda: [value(depth + 1) for _ in range(rng.randrange(3))],
                  lambda: {rng.choice(keys): value(depth + 1) for _ in range(rng.randrange(4))},
                  lambda: {"metadata": value(depth + 1), "spec": value(depth + 1)}]
        return makers[kind]()

    for _ in range(3000):
        pod = value(0)
        json.dumps(pod)  # a JSON value indeed
        _all_walkers(pod)
