"""Threat: a watch authorized for one named object streams every object of its type.

Red-team finding: ``GET .../secrets/NAME?watch=true`` was authorized for NAME (a node's
graph edge, a user's ``resourceNames``) and then served every secret of the namespace,
initial state and replay included. Driven here against a real cloudcore over HTTPS with a
joined node's own certificate and a namespace-scoped user's certificate.
"""

from __future__ import annotations

import base64

import pytest

from support.api import Api, admin_api, create_namespace, grant, node_api, user_api
from support.cluster import Cloud
from support.fixtures import cloud  # noqa: F401 - pytest fixture


def _secret(name: str) -> dict:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name},
            "data": {"k": base64.b64encode(name.encode()).decode()}}


def _patch_secret(admin: Api, ns: str, name: str, value: str) -> None:
    s, body = admin.request("PATCH", f"/api/v1/namespaces/{ns}/secrets/{name}",
                            {"data": {"k": base64.b64encode(value.encode()).decode()}},
                            ctype="application/merge-patch+json")
    assert s == 200, body


@pytest.fixture(scope="module")
def apis(cloud: Cloud, tmp_path_factory):
    root = tmp_path_factory.mktemp("watchscope")
    admin = admin_api(cloud)
    user = user_api(cloud, "dana", out_dir=root)
    assert cloud.join("watcher", root / "edge").returncode == 0
    node = node_api(cloud, root / "edge")
    return admin, user, node


@pytest.mark.threat("K-WATCH-SCOPE")
def test_node_watch_of_its_pods_secret_does_not_stream_other_secrets(apis):
    admin, _, node = apis
    ns = "wscope-node"
    create_namespace(admin, ns)
    for name in ("referenced", "victim"):
        assert admin.request("POST", f"/api/v1/namespaces/{ns}/secrets", _secret(name))[0] == 201
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "uses-secret"},
           "spec": {"nodeName": "watcher", "containers": [{"name": "c", "image": "i", "envFrom": [
               {"secretRef": {"name": "referenced"}}]}]}}
    assert admin.request("POST", f"/api/v1/namespaces/{ns}/pods", pod)[0] == 201
    # The node may read the secret its pod references, and not the other one.
    assert node.request("GET", f"/api/v1/namespaces/{ns}/secrets/referenced")[0] == 200
    assert node.request("GET", f"/api/v1/namespaces/{ns}/secrets/victim")[0] == 403
    status, lines = node.watch(f"/api/v1/namespaces/{ns}/secrets/referenced?watch=true")
    assert status == 200
    try:
        assert lines.next() == ("ADDED", "referenced")  # initial state: the named secret only
        _patch_secret(admin, ns, "victim", "changed")  # earlier in resourceVersion order...
        _patch_secret(admin, ns, "referenced", "changed")
        assert lines.next() == ("MODIFIED", "referenced")  # ...so a leak would have come first
    finally:
        lines.close()
    # The same watch by field selector is scoped the same way; naming another object is refused.
    status, lines = node.watch(f"/api/v1/namespaces/{ns}/secrets?watch=true"
                               "&fieldSelector=metadata.name%3Dreferenced")
    assert status == 200
    try:
        assert lines.next() == ("ADDED", "referenced")
    finally:
        lines.close()
    assert node.request("GET", f"/api/v1/namespaces/{ns}/secrets/referenced?watch=true"
                               "&fieldSelector=metadata.name%3Dvictim")[0] == 400


@pytest.mark.threat("K-WATCH-SCOPE")
def test_resource_names_user_watch_streams_only_the_named_secret(apis):
    admin, user, _ = apis
    ns = "wscope-user"
    create_namespace(admin, ns)
    for name in ("granted", "other"):
        assert admin.request("POST", f"/api/v1/namespaces/{ns}/secrets", _secret(name))[0] == 201
    grant(admin, ns, "one", "dana", [{"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["granted"],
                                      "verbs": ["get", "list", "watch"]}])
    assert user.request("GET", f"/api/v1/namespaces/{ns}/secrets")[0] == 403
    status, body = user.request("GET", f"/api/v1/namespaces/{ns}/secrets?fieldSelector=metadata.name%3Dgranted")
    assert status == 200 and [i["metadata"]["name"] for i in body["items"]] == ["granted"]
    status, lines = user.watch(f"/api/v1/namespaces/{ns}/secrets/granted?watch=true")
    assert status == 200
    try:
        assert lines.next() == ("ADDED", "granted")
        _patch_secret(admin, ns, "other", "changed")
        admin.request("DELETE", f"/api/v1/namespaces/{ns}/secrets/other")
        _patch_secret(admin, ns, "granted", "changed")
        assert lines.next() == ("MODIFIED", "granted")
    finally:
        lines.close()
    # A replay from an old resourceVersion is scoped too.
    status, got = admin.request("GET", f"/api/v1/namespaces/{ns}/secrets/granted")
    rv = got["metadata"]["resourceVersion"]
    assert admin.request("POST", f"/api/v1/namespaces/{ns}/secrets", _secret("late"))[0] == 201
    _patch_secret(admin, ns, "granted", "again")
    status, lines = user.watch(f"/api/v1/namespaces/{ns}/secrets/granted?watch=true&resourceVersion={rv}")
    assert status == 200
    try:
        assert lines.next() == ("MODIFIED", "granted")
    finally:
        lines.close()
