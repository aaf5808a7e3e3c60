"""Threat: a small PATCH body that makes the API server do unbounded work (CVE-2019-1002100 class).

Red-team finding 4: forty JSON patch ``copy`` operations, each copying a list into itself,
double it forty times; the size was checked only after the patch ran, on the API server's
event loop, so one user allowed to patch one configmap stopped the API server answering
anyone. Driven here against a real cloudcore over HTTPS, as a user whose only right is to
get and patch configmaps in one namespace.
"""

from __future__ import annotations

import datetime as dt
import http.client
import json
import time

import pytest
from support.cluster import Cloud
from support.fixtures import cloud  # noqa: F401 - pytest fixture

from kedge import tls
from kedge.pki import ca as pki

RBAC = "rbac.authorization.k8s.io"
NS = "patchbomb"


class Api:
    def __init__(self, url: str, ctx) -> None:
        host, port = url.removeprefix("https://").rsplit(":", 1)
        self.host, self.port, self.ctx = host, int(port), ctx

    def request(self, method: str, path: str, body=None, ctype: str = "application/json", timeout: float = 10):
        conn = http.client.HTTPSConnection(self.host, self.port, context=self.ctx, timeout=timeout)
        try:
            conn.request(method, path, body=json.dumps(body).encode() if body is not None else None,
                         headers={"Content-Type": ctype})
            resp = conn.getresponse()
            data = resp.read()
            return resp.status, json.loads(data) if data else None
        finally:
            conn.close()


@pytest.fixture(scope="module")
def apis(cloud: Cloud, tmp_path_factory):
    root = tmp_path_factory.mktemp("patchbomb")
    pki_dir = cloud.dir / "pki"
    url = cloud.endpoints()["api"]
    admin = Api(url, tls.client_context(pki_dir / "ca.crt", pki_dir / "admin.crt", pki_dir / "admin.key"))
    ca_key, ca_cert = pki.load_key_file(pki_dir / "ca.key"), pki.load_cert_file(pki_dir / "ca.crt")
    key, cert = pki.issue_client_cert(ca_key, ca_cert, common_name="patcher", organizations=[],
                                      now=dt.datetime.now(dt.UTC))
    (root / "patcher.key").write_bytes(pki.key_to_pem(key))
    (root / "patcher.crt").write_bytes(pki.cert_to_pem(cert))
    user = Api(url, tls.client_context(pki_dir / "ca.crt", root / "patcher.crt", root / "patcher.key"))
    assert admin.request("POST", "/api/v1/namespaces", {"metadata": {"name": NS}})[0] == 201
    assert admin.request("POST", f"/apis/{RBAC}/v1/namespaces/{NS}/roles", {
        "metadata": {"name": "cm-patch"},
        "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "patch"]}]})[0] == 201
    assert admin.request("POST", f"/apis/{RBAC}/v1/namespaces/{NS}/rolebindings", {
        "metadata": {"name": "cm-patch"}, "roleRef": {"apiGroup": RBAC, "kind": "Role", "name": "cm-patch"},
        "subjects": [{"kind": "User", "apiGroup": RBAC, "name": "patcher"}]})[0] == 201
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
