"""Threat: a small PATCH body that makes the API server do unbounded work (CVE-2019-1002100 class).

Red-team finding 4: forty JSON patch ``copy`` operations, each copying a list into itself,
double it forty times; the size was checked only after the patch ran, on the API server's
event loop, so one user allowed to patch one configmap stopped the API server answering
anyone. Driven here against a real cloudcore over HTTPS, as a user whose only right is to
get and patch configmaps in one namespace.
"""

from __future__ import annotations

import json
import time

import pytest
from support.api import admin_api, create_namespace, grant, user_api
from support.cluster import Cloud
from support.fixtures import cloud  # noqa: F401 - pytest fixture

NS = "patchbomb"


@pytest.fixture(scope="module")
def apis(cloud: Cloud, tmp_path_factory):
    root = tmp_path_factory.mktemp("patchbomb")
    admin = admin_api(cloud)
    user = user_api(cloud, "patcher", out_dir=root)
    create_namespace(admin, NS)
    grant(admin, NS, "cm-patch", "patcher", [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "patch"]}])
    assert admin.request("POST", f"/api/v1/namespaces/{NS}/configmaps",
                         {"metadata": {"name": "target"}, "data": {"k": "v"}})[0] == 201
    return admin, user


def copy_bomb(copies: int = 40) -> list[dict]:
    return ([{"op": "add", "path": "/bomb", "value": ["x" * 1024]}]
            + [{"op": "copy", "from": "/bomb", "path": "/bomb/-"} for _ in range(copies)])


@pytest.mark.threat("K-PATCH-AMPLIFICATION")
def test_json_patch_copy_bomb_is_refused_fast_and_the_server_keeps_answering(apis):
    admin, user = apis
    body = copy_bomb()
    assert len(json.dumps(body)) < 4096  # a tiny request...
    t0 = time.monotonic()
    status, err = user.request("PATCH", f"/api/v1/namespaces/{NS}/configmaps/target", body,
                               ctype="application/json-patch+json", timeout=15)
    elapsed = time.monotonic() - t0
    # ...refused while it is applied, as kube-apiserver refuses it (JSONPatchMaxCopyBytes).
    assert status == 422, err
    assert err["kind"] == "Status" and err["reason"] == "Invalid" and err["code"] == 422
    assert "accumulated size increase of copy" in err["message"]
    assert elapsed < 3.0, f"the refusal took {elapsed:.1f}s"
    # The server answers others at once, and the object is untouched.
    t1 = time.monotonic()
    status, cm = admin.request("GET", f"/api/v1/namespaces/{NS}/configmaps/target", timeout=5)
    assert status == 200 and cm["data"] == {"k": "v"} and "bomb" not in cm
    assert time.monotonic() - t1 < 2.0
    assert user.request("GET", f"/api/v1/namespaces/{NS}/configmaps/target", timeout=5)[0] == 200


@pytest.mark.threat("K-PATCH-AMPLIFICATION")
def test_json_patch_with_too_many_operations_is_413(apis):
    _, user = apis
    ops = [{"op": "test", "path": "/metadata/name", "value": "target"}] * 10_001
    status, err = user.request("PATCH", f"/api/v1/namespaces/{NS}/configmaps/target", ops,
                               ctype="application/json-patch+json")
    assert status == 413 and err["reason"] == "RequestEntityTooLarge"
    assert err["message"] == ("Request entity too large: The allowed maximum operations in a JSON patch "
                              "is 10000, got 10001")


@pytest.mark.threat("K-PATCH-AMPLIFICATION")
def test_quadratic_strategic_merge_is_linear_and_the_server_keeps_answering(apis):
    """A pod's env merged by name with as many new names: n*n comparisons before."""
    admin, _ = apis
    n = 20_000
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "envy"},
           "spec": {"containers": [{"name": "c", "image": "i",
                                    "env": [{"name": f"A{i}", "value": "1"} for i in range(n)]}]}}
    assert admin.request("POST", f"/api/v1/namespaces/{NS}/pods", pod)[0] == 201
    patch = {"spec": {"containers": [{"name": "c", "env": [{"name": f"B{i}", "value": "2"} for i in range(n)]}]}}
    t0 = time.monotonic()
    status, out = admin.request("PATCH", f"/api/v1/namespaces/{NS}/pods/envy", patch,
                                ctype="application/strategic-merge-patch+json", timeout=30)
    elapsed = time.monotonic() - t0
    assert status in (200, 422), out  # merged, or refused as too large: either way promptly
    assert elapsed < 5.0, f"the strategic merge took {elapsed:.1f}s"
    assert admin.request("GET", f"/api/v1/namespaces/{NS}/configmaps/target", timeout=5)[0] == 200
