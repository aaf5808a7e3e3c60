"""Validation before a write: the per-kind registry, ConfigMap/Secret keys, CRDs shadowing built-ins."""

from __future__ import annotations

import json

import pytest

from kedge.apiserver import validation
from kedge.apiserver.api import API, Request, User
from kedge.store.sqlite import Store

ADMIN = User("admin", ("system:masters", "system:authenticated"))


@pytest.fixture()
def api(tmp_path):
    store = Store(tmp_path / "api.db", window=50, synchronous="NORMAL")
    yield API(store, clock=lambda: 1_700_000_000.0)
    store.close()


def call(api, method, path, body=None):
    resp = api.handle(Request(method, path, {"content-type": ["application/json"]},
                              json.dumps(body).encode() if body is not None else b"", ADMIN))
    return resp.status, json.loads(resp.body)


def test_every_validated_kind_has_exactly_one_validator():
    assert set(validation.VALIDATORS) >= {"/pods", "/configmaps", "/secrets",
                                          "apiextensions.k8s.io/customresourcedefinitions",
                                          "rbac.authorization.k8s.io/roles", "rbac.authorization.k8s.io/clusterroles",
                                          "rbac.authorization.k8s.io/rolebindings",
                                          "rbac.authorization.k8s.io/clusterrolebindings"}
    with pytest.raises(ValueError):
        validation.validates("/pods")(lambda api, w: None)


@pytest.mark.parametrize("key", ["..", ".", "..data", "../etc", "a/b", "a b", "a\n", "", "x" * 254, "é"])
@pytest.mark.parametrize("kind,path", [("ConfigMap", "configmaps"), ("Secret", "secrets")])
def test_data_keys_that_are_not_file_names_are_refused(api, key, kind, path):
    status, err = call(api, "POST", f"/api/v1/namespaces/default/{path}",
                       {"metadata": {"name": "k"}, "data": {key: "eA=="}})
    assert status == 422 and err["reason"] == "Invalid", (key, err)


@pytest.mark.parametrize("key", ["a", "a.b", ".hidden", "A-b_c.9", "x" * 253])
def test_config_keys_as_kubernetes_allows_them_are_accepted(api, key):
    assert call(api, "POST", "/api/v1/namespaces/default/configmaps",
                {"metadata": {"name": "ok"}, "data": {key: "v"}})[0] == 201
    call(api, "DELETE", "/api/v1/namespaces/default/configmaps/ok")


def test_a_key_in_both_data_and_binary_data_is_refused(api):
    status, err = call(api, "POST", "/api/v1/namespaces/default/configmaps",
                       {"metadata": {"name": "dup"}, "data": {"k": "v"}, "binaryData": {"k": "eA=="}})
    assert status == 422 and "duplicate" in err["message"]


def test_a_crd_may_not_shadow_a_built_in_resource_on_create_or_update(api):
    crd = {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
           "metadata": {"name": "pods.rbac.authorization.k8s.io"},
           "spec": {"group": "rbac.authorization.k8s.io", "scope": "Namespaced",
                    "names": {"plural": "roles", "singular": "role", "kind": "Role"},
                    "versions": [{"name": "v1", "served": True, "storage": True,
                                  "schema": {"openAPIV3Schema": {"type": "object"}}}]}}
    crd["metadata"]["name"] = "roles.rbac.authorization.k8s.io"
    status, err = call(api, "POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd)
    assert status == 422 and "shadow a built-in" in err["message"], err


@pytest.mark.parametrize("meta", [
    {"labels": {"NODE-RESTRICTION.KUBERNETES.IO/x": "y"}},
    {"labels": {"bad key!": "v"}},
    {"labels": {"k": "é"}},
    {"labels": {"k": "x" * 64}},
    {"annotations": {"bad key!": "v"}},
    {"annotations": {"big": "x" * (256 * 1024)}},
    {"finalizers": ["not-standard"]},
    {"finalizers": ["Bad/Name!"]},
    {"ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": "n"}]},
    {"ownerReferences": [{"apiVersion": "v1", "kind": "A", "name": "a", "uid": "1", "controller": True},
                         {"apiVersion": "v1", "kind": "B", "name": "b", "uid": "2", "controller": True}]},
])
def test_object_metadata_is_validated_as_kubernetes_does(api, meta):
    status, err = call(api, "POST", "/api/v1/namespaces/default/configmaps", {"metadata": {"name": "m", **meta}})
    assert status == 422 and err["reason"] == "Invalid", (meta, err)


def test_valid_metadata_is_accepted(api):
    meta = {"labels": {"example.com/tier": "web", "app": ""}, "annotations": {"Example.com/Note": "any text\n"},
            "finalizers": ["example.com/cleanup", "orphan"],
            "ownerReferences": [{"apiVersion": "v1", "kind": "A", "name": "a", "uid": "1", "controller": True}]}
    assert call(api, "POST", "/api/v1/namespaces/default/configmaps", {"metadata": {"name": "m", **meta}})[0] == 201


def test_the_mirror_pod_annotation_cannot_be_added_or_removed(api):
    pod = {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "i"}]}}
    assert call(api, "POST", "/api/v1/namespaces/default/pods", pod)[0] == 201
    resp = api.handle(Request("PATCH", "/api/v1/namespaces/default/pods/p",
                              {"content-type": ["application/merge-patch+json"]},
                              json.dumps({"metadata": {"annotations": {"kubernetes.io/config.mirror": "x"}}}).encode(),
                              ADMIN))
    assert resp.status == 422 and b"mirror pod annotation" in resp.body
