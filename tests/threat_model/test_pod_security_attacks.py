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

import pytest
from support.api import admin_api, bind, create_namespace, user_api
from support.cluster import Cloud
from support.fixtures import cloud  # noqa: F401 - pytest fixture

NS = "psa-locked"


@pytest.fixture(scope="module")
def env(cloud: Cloud, tmp_path_factory):  # noqa: F811 - the imported fixture
    root = tmp_path_factory.mktemp("psaattack")
    admin = admin_api(cloud)
    create_namespace(admin, NS, {"pod-security.kubernetes.io/enforce": "restricted"})
    bind(admin, NS, "eve-edit", "eve", kind="ClusterRole", role="edit")
    eve = user_api(cloud, "eve", out_dir=root)
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
