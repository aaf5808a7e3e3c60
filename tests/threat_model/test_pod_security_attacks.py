"""Threat: a user who may create pods in a namespace runs one that owns the node.

A pod that shares the host's namespaces, mounts the host's file system, runs privileged or
with extra capabilities, or as root, escapes to the node it runs on. Kubernetes' Pod
Security admission refuses such pods by namespace level; kedge enforces it in its embedded
API server (baseline by default). Driven against a real cloudcore over HTTPS with a client
certificate the cluster CA minted for a user the admin gave ``edit`` in a namespace
labelled ``pod-security.kubernetes.io/enforce=restricted``: every escape-shaped pod is
refused with Kubernetes' message, and the user cannot lower the namespace's level
(``edit`` does not include updating namespaces).
"""

from __future__ import annotations

import datetime as dt
import http.client
import json
from pathlib import Path

import pytest
from support.cluster import Cloud
from support.fixtures import cloud  # noqa: F401 - pytest fixture

from kedge import tls
from kedge.pki import ca as pki

NS = "psa-locked"
RBAC = "rbac.authorization.k8s.io"


class Api:
    def __init__(self, url: str, ctx) -> None:
        host, port = url.removeprefix("https://").rsplit(":", 1)
        self.host, self.port, self.ctx = host, int(port), ctx

    def request(self, method: str, path: str, body=None, ctype: str = "application/json"):
        conn = http.client.HTTPSConnection(self.host, self.port, context=self.ctx, timeout=10)
        try:
            conn.request(method, path, body=json.dumps(body).encode() if body is not None else None,
                         headers={"Content-Type": ctype})
            resp = conn.getresponse()
            data = resp.read()
            return resp.status, json.loads(data) if data else None
        finally:
            conn.close()


@pytest.fixture(scope="module")
def env(cloud: Cloud, tmp_path_factory):  # noqa: F811 - the imported fixture
    root: Path = tmp_path_factory.mktemp("psaattack")
    pki_dir = cloud.dir / "pki"
    url = cloud.endpoints()["api"]
    admin = Api(url, tls.client_context(pki_dir / "ca.crt", pki_dir / "admin.crt", pki_dir / "admin.key"))
    assert admin.request("POST", "/api/v1/namespaces", {"metadata": {
        "name": NS, "labels": {"pod-security.kubernetes.io/enforce": "restricted"}}})[0] == 201
    assert admin.request("POST", f"/apis/{RBAC}/v1/namespaces/{NS}/rolebindings", {
        "metadata": {"name": "eve-edit"}, "roleRef": {"apiGroup": RBAC, "kind": "ClusterRole", "name": "edit"},
        "subjects": [{"apiGroup": RBAC, "kind": "User", "name": "eve"}]})[0] == 201
    ca_key, ca_cert = pki.load_key_file(pki_dir / "ca.key"), pki.load_cert_file(pki_dir / "ca.crt")
    key, cert = pki.issue_client_cert(ca_key, ca_cert, common_name="eve", organizations=[],
                                      now=dt.datetime.now(dt.UTC))
    (root / "eve.key").write_bytes(pki.key_to_pem(key))
    (root / "eve.crt").write_bytes(pki.cert_to_pem(cert))
    eve = Api(url, tls.client_context(pki_dir / "ca.crt", root / "eve.crt", root / "eve.key"))
    return admin, eve


def _restricted_container(**security) -> dict:
    return {"name": "c", "image": "registry.k8s.io/pause",
            "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}, **security}}


def _pod(name: str, container: dict | None = None, **spec) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"containers": [container or _restricted_container()],
                     "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
                     **spec}}


ESCAPES = {
    "privileged": (_pod("privileged", _restricted_container(privileged=True)),
                   'privileged (container "c" must not set securityContext.privileged=true)'),
    "hostpath": (_pod("hostpath", volumes=[{"name": "root", "hostPath": {"path": "/"}}]),
                 'restricted volume types (volume "root" uses restricted volume type "hostPath")'),
    "hostnetwork": (_pod("hostnetwork", hostNetwork=True), "host namespaces (hostNetwork=true)"),
    "hostpid": (_pod("hostpid", hostPID=True), "host namespaces (hostPID=true)"),
    "sysadmin": (_pod("sysadmin", _restricted_container(capabilities={"drop": ["ALL"], "add": ["SYS_ADMIN"]})),
                 'unrestricted capabilities (container "c" must not include "SYS_ADMIN" in '
                 "securityContext.capabilities.add)"),
    "root": (_pod("root", _restricted_container(runAsUser=0, runAsNonRoot=False)),
             'runAsNonRoot != true (container "c" must not set securityContext.runAsNonRoot=false), '
             'runAsUser=0 (container "c" must not set runAsUser=0)'),
}


@pytest.mark.threat("K-POD-SECURITY")
@pytest.mark.parametrize("name", sorted(ESCAPES))
def test_namespace_editor_cannot_create_an_escape_pod_in_a_restricted_namespace(env, name):
    _, eve = env
    body, reason = ESCAPES[name]
    s, err = eve.request("POST", f"/api/v1/namespaces/{NS}/pods", body)
    assert s == 403 and err["reason"] == "Forbidden", err
    assert err["message"].startswith(f'pods "{name}" is forbidden: violates PodSecurity "restricted:latest": '), err
    assert reason in err["message"], err
    assert eve.request("GET", f"/api/v1/namespaces/{NS}/pods/{name}")[0] == 404


@pytest.mark.threat("K-POD-SECURITY")
def test_no_one_is_exempt_not_even_an_admin_adding_a_privileged_ephemeral_container(env):
    admin, eve = env
    assert eve.request("POST", f"/api/v1/namespaces/{NS}/pods", _pod("fine"))[0] == 201
    # A pod's spec is immutable but for images; an ephemeral container added later is evaluated
    # like any other container, and no user (cluster-admin included) is exempt.
    s, cur = eve.request("GET", f"/api/v1/namespaces/{NS}/pods/fine")
    cur["spec"]["ephemeralContainers"] = [{"name": "debug", "image": "busybox", "securityContext": {
        "privileged": True}}]
    s, err = admin.request("PUT", f"/api/v1/namespaces/{NS}/pods/fine/ephemeralcontainers", cur)
    assert s == 403 and 'container "debug" must not set securityContext.privileged=true' in err["message"], err


@pytest.mark.threat("K-POD-SECURITY")
def test_namespace_editor_cannot_relabel_the_namespace_to_lower_its_level(env):
    admin, eve = env
    patch = {"metadata": {"labels": {"pod-security.kubernetes.io/enforce": "privileged"}}}
    for method, body, ctype in (("PATCH", patch, "application/merge-patch+json"),
                                ("PUT", {"metadata": {"name": NS, "labels": patch["metadata"]["labels"]}},
                                 "application/json")):
        s, err = eve.request(method, f"/api/v1/namespaces/{NS}", body, ctype)
        assert s == 403 and 'cannot ' in err["message"] and 'resource "namespaces"' in err["message"], err
    s, ns = admin.request("GET", f"/api/v1/namespaces/{NS}")
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    # ...nor move the pod to a namespace of her own making.
    assert eve.request("POST", "/api/v1/namespaces", {"metadata": {"name": "eve-free"}})[0] == 403
    s, _ = eve.request("POST", f"/api/v1/namespaces/{NS}/pods", _pod("privileged", _restricted_container(
        privileged=True)))
    assert s == 403
