"""PodSecurity admission through ``API.handle``: a real SQLite store, Kubernetes' messages."""

from __future__ import annotations

import json

import pytest

from kedge.apiserver import podsecurity as ps
from kedge.apiserver.api import API, Request, User
from kedge.apiserver.model import warning_header_values
from kedge.store.sqlite import Store

ADMIN = User("admin", ("system:masters", "system:authenticated"))
NODE_A = User("system:node:node-a", ("system:nodes", "system:authenticated"))

RESTRICTED_MESSAGE = (
    'pods "p" is forbidden: violates PodSecurity "restricted:latest": allowPrivilegeEscalation != false '
    '(container "c" must set securityContext.allowPrivilegeEscalation=false), unrestricted capabilities '
    '(container "c" must set securityContext.capabilities.drop=["ALL"]), runAsNonRoot != true (pod or container '
    '"c" must set securityContext.runAsNonRoot=true), seccompProfile (pod or container "c" must set '
    'securityContext.seccompProfile.type to "RuntimeDefault" or "Localhost")')
RESTRICTED_DETAIL = RESTRICTED_MESSAGE.split('violates PodSecurity "restricted:latest": ', 1)[1]


@pytest.fixture()
def api(tmp_path):
    store = Store(tmp_path / "api.db", window=50, synchronous="NORMAL")
    yield API(store, clock=lambda: 1_700_000_000.0)
    store.close()


def send(api, method, path, body=None, user=ADMIN, ctype="application/json"):
    raw = json.dumps(body).encode() if body is not None else b""
    return api.handle(Request(method, path, {"content-type": [ctype]}, raw, user))


def call(api, method, path, body=None, user=ADMIN, ctype="application/json"):
    resp = send(api, method, path, body, user, ctype)
    return resp.status, json.loads(resp.body)


def pod(name="p", *, container=None, **spec):
    c = {"name": "c", "image": "registry.k8s.io/pause"}
    c.update(container or {})
    return {"metadata": {"name": name}, "spec": {"containers": [c], **spec}}


def restricted_pod(name="p", **spec):
    return pod(name, container={"securityContext": {"allowPrivilegeEscalation": False,
                                                    "capabilities": {"drop": ["ALL"]}}},
               securityContext={"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}, **spec)


def namespace(api, name, **labels):
    s, _ = call(api, "POST", "/api/v1/namespaces",
                {"metadata": {"name": name, "labels": {f"pod-security.kubernetes.io/{k.replace('_', '-')}": v
                                                       for k, v in labels.items()}}})
    assert s == 201


def annotations(resp):
    return {k: v for k, v in (resp.audit.get("annotations") or {}).items() if k.startswith(ps.LABEL_PREFIX)}


# -- the cluster default ------------------------------------------------------------------------


def test_default_is_baseline_a_host_network_pod_is_refused_with_kubernetes_message(api):
    resp = send(api, "POST", "/api/v1/namespaces/default/pods", pod(hostNetwork=True))
    body = json.loads(resp.body)
    assert resp.status == 403 and body["reason"] == "Forbidden"
    assert body["message"] == ('pods "p" is forbidden: violates PodSecurity "baseline:latest": '
                               "host namespaces (hostNetwork=true)")
    assert body["details"] == {"name": "p", "kind": "pods"}
    assert annotations(resp) == {ps.ENFORCE_POLICY_ANNOTATION: "baseline:latest"}


def test_default_baseline_admits_an_ordinary_pod_without_warnings(api):
    resp = send(api, "POST", "/api/v1/namespaces/default/pods", pod())
    assert resp.status == 201 and resp.warnings == []
    assert annotations(resp) == {ps.ENFORCE_POLICY_ANNOTATION: "baseline:latest"}


def test_cluster_default_restricted_applies_to_unlabelled_namespaces(api):
    api.pod_security_defaults = ps.default_policy("restricted")
    s, err = call(api, "POST", "/api/v1/namespaces/default/pods", pod())
    assert s == 403 and err["message"] == RESTRICTED_MESSAGE
    assert call(api, "POST", "/api/v1/namespaces/default/pods", restricted_pod("ok"))[0] == 201
    namespace(api, "open", enforce="privileged")  # a namespace label overrides the default
    assert call(api, "POST", "/api/v1/namespaces/open/pods", pod(hostPID=True))[0] == 201


def test_cluster_default_privileged_admits_everything(api):
    api.pod_security_defaults = ps.default_policy("privileged")
    resp = send(api, "POST", "/api/v1/namespaces/default/pods",
                pod(hostNetwork=True, container={"securityContext": {"privileged": True}}))
    assert resp.status == 201 and annotations(resp) == {ps.ENFORCE_POLICY_ANNOTATION: "privileged:latest"}


# -- enforce / warn / audit ---------------------------------------------------------------------


def test_enforce_restricted_refuses_with_every_reason_in_kubernetes_order(api):
    namespace(api, "r", enforce="restricted")
    s, err = call(api, "POST", "/api/v1/namespaces/r/pods", pod())
    assert s == 403 and err["message"] == RESTRICTED_MESSAGE.replace('"p"', '"p"')
    s, err = call(api, "POST", "/api/v1/namespaces/r/pods",
                  pod(volumes=[{"name": "root", "hostPath": {"path": "/"}}],
                      container={"securityContext": {"privileged": True}}))
    assert s == 403 and err["message"].startswith(
        'pods "p" is forbidden: violates PodSecurity "restricted:latest": privileged (container "c" must not set '
        'securityContext.privileged=true), allowPrivilegeEscalation != false')
    assert 'restricted volume types (volume "root" uses restricted volume type "hostPath")' in err["message"]
    assert call(api, "POST", "/api/v1/namespaces/r/pods", restricted_pod())[0] == 201


def test_enforce_applies_to_dry_run_and_generated_names(api):
    namespace(api, "r", enforce="restricted")
    s, err = call(api, "POST", "/api/v1/namespaces/r/pods?dryRun=All", pod())
    assert s == 403
    body = pod()
    body["metadata"] = {"generateName": "web-"}
    s, err = call(api, "POST", "/api/v1/namespaces/r/pods", body)
    assert s == 403 and err["message"].startswith('pods "web-') and err["details"]["name"].startswith("web-")


def test_warn_admits_and_returns_the_warning_kubectl_prints(api):
    namespace(api, "w", warn="restricted")
    resp = send(api, "POST", "/api/v1/namespaces/w/pods", pod())
    assert resp.status == 201
    assert resp.warnings == [f'would violate PodSecurity "restricted:latest": {RESTRICTED_DETAIL}']
    header = warning_header_values(resp.warnings)
    assert header == [('299 - "would violate PodSecurity \\"restricted:latest\\": '
                       + RESTRICTED_DETAIL.replace('"', '\\"') + '"').encode()]
    assert send(api, "POST", "/api/v1/namespaces/w/pods", restricted_pod("ok")).warnings == []


def test_audit_annotates_the_audit_record_and_admits(api):
    namespace(api, "a", audit="restricted", audit_version="v1.30")
    resp = send(api, "POST", "/api/v1/namespaces/a/pods", pod())
    assert resp.status == 201 and resp.warnings == []
    assert annotations(resp) == {
        ps.ENFORCE_POLICY_ANNOTATION: "baseline:latest",
        ps.AUDIT_VIOLATIONS_ANNOTATION: f'would violate PodSecurity "restricted:v1.30": {RESTRICTED_DETAIL}'}
    assert resp.audit["annotations"]["authorization.k8s.io/decision"] == "allow"


def test_refused_requests_are_annotated_too(api):
    namespace(api, "r", enforce="restricted", audit="restricted")
    resp = send(api, "POST", "/api/v1/namespaces/r/pods", pod())
    assert resp.status == 403 and resp.warnings == []  # no warnings on a refused request
    assert annotations(resp)[ps.AUDIT_VIOLATIONS_ANNOTATION].startswith('would violate PodSecurity "restricted')


def test_enforce_sets_warn_when_warn_is_not_labelled(api):
    namespace(api, "b", enforce="baseline")
    resp = send(api, "POST", "/api/v1/namespaces/b/pods", pod(hostIPC=True))
    assert resp.status == 403  # enforce refuses first; warn=baseline is implied for what enforce lets through


def test_pinned_version_uses_the_checks_of_that_version(api):
    namespace(api, "old", enforce="restricted", enforce_version="v1.21")
    s, err = call(api, "POST", "/api/v1/namespaces/old/pods", pod())
    assert s == 403 and 'violates PodSecurity "restricted:v1.21"' in err["message"]
    assert "unrestricted capabilities" not in err["message"]  # the restricted capabilities check is v1.22+
    namespace(api, "new", enforce="restricted", enforce_version="v1.22")
    s, err = call(api, "POST", "/api/v1/namespaces/new/pods", pod())
    assert "unrestricted capabilities" in err["message"]


# -- updates ---------------------------------------------------------------------------------


def test_updates_are_evaluated_only_when_what_runs_changes(api):
    namespace(api, "u", enforce="privileged")
    assert call(api, "POST", "/api/v1/namespaces/u/pods", pod())[0] == 201
    s, _ = call(api, "PATCH", "/api/v1/namespaces/u", {"metadata": {"labels": {ps.ENFORCE_LABEL: "restricted"}}},
                ctype="application/merge-patch+json")
    assert s == 200
    # metadata only: not evaluated (Kubernetes' isSignificantPodUpdate)
    s, _ = call(api, "PATCH", "/api/v1/namespaces/u/pods/p", {"metadata": {"labels": {"a": "b"}}},
                ctype="application/merge-patch+json")
    assert s == 200
    s, err = call(api, "PATCH", "/api/v1/namespaces/u/pods/p",
                  {"spec": {"containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10"}]}},
                  ctype="application/strategic-merge-patch+json")
    assert s == 403 and err["message"].startswith('pods "p" is forbidden: violates PodSecurity "restricted:latest"')


def test_an_ephemeral_container_is_evaluated(api):
    assert call(api, "POST", "/api/v1/namespaces/default/pods", pod())[0] == 201
    s, cur = call(api, "GET", "/api/v1/namespaces/default/pods/p")
    cur["spec"]["ephemeralContainers"] = [{"name": "debug", "image": "busybox",
                                           "securityContext": {"privileged": True}}]
    s, err = call(api, "PUT", "/api/v1/namespaces/default/pods/p/ephemeralcontainers", cur)
    assert s == 403 and err["message"] == ('pods "p" is forbidden: violates PodSecurity "baseline:latest": privileged '
                                           '(container "debug" must not set securityContext.privileged=true)')
    cur["spec"]["ephemeralContainers"][0].pop("securityContext")
    assert call(api, "PUT", "/api/v1/namespaces/default/pods/p/ephemeralcontainers", cur)[0] == 200


def test_status_updates_are_not_evaluated(api):
    namespace(api, "s", enforce="privileged")
    assert call(api, "POST", "/api/v1/namespaces/s/pods", pod(hostNetwork=True))[0] == 201
    call(api, "PATCH", "/api/v1/namespaces/s", {"metadata": {"labels": {ps.ENFORCE_LABEL: "baseline"}}},
         ctype="application/merge-patch+json")
    s, _ = call(api, "PATCH", "/api/v1/namespaces/s/pods/p/status", {"status": {"phase": "Running"}},
                ctype="application/merge-patch+json")
    assert s == 200


# -- mirror pods -----------------------------------------------------------------------------


def test_mirror_pods_from_nodes_are_evaluated_too(api):
    s, node = call(api, "POST", "/api/v1/nodes", {"metadata": {"name": "node-a"}})
    assert s == 201

    def mirror(name, **spec):
        body = pod(name, nodeName="node-a", **spec)
        body["metadata"]["annotations"] = {"kubernetes.io/config.mirror": "hash"}
        body["metadata"]["ownerReferences"] = [{"apiVersion": "v1", "kind": "Node", "name": "node-a",
                                                "uid": node["metadata"]["uid"], "controller": True}]
        return body

    s, err = call(api, "POST", "/api/v1/namespaces/default/pods", mirror("static-net", hostNetwork=True), user=NODE_A)
    assert s == 403 and "violates PodSecurity \"baseline:latest\": host namespaces" in err["message"]
    assert call(api, "POST", "/api/v1/namespaces/default/pods", mirror("static"), user=NODE_A)[0] == 201


# -- namespaces ------------------------------------------------------------------------------


def test_invalid_labels_are_refused_on_create_as_kubernetes_does(api):
    s, err = call(api, "POST", "/api/v1/namespaces",
                  {"metadata": {"name": "bad", "labels": {ps.ENFORCE_LABEL: "strict"}}})
    assert s == 422 and err["reason"] == "Invalid"
    assert err["message"] == ('Namespace "bad" is invalid: metadata.labels[pod-security.kubernetes.io/enforce]: '
                              'Invalid value: "strict": must be one of privileged, baseline, restricted')
    s, err = call(api, "POST", "/api/v1/namespaces",
                  {"metadata": {"name": "bad", "labels": {ps.WARN_VERSION_LABEL: "1.30", ps.AUDIT_LABEL: "x"}}})
    assert s == 422 and err["message"].startswith('Namespace "bad" is invalid: [metadata.labels[')
    assert 'must be "latest" or "v1.x"' in err["message"]


def test_invalid_labels_are_refused_on_update_when_changed(api):
    namespace(api, "n")
    s, err = call(api, "PATCH", "/api/v1/namespaces/n", {"metadata": {"labels": {ps.ENFORCE_VERSION_LABEL: "v2.0"}}},
                  ctype="application/merge-patch+json")
    assert s == 422 and "pod-security.kubernetes.io/enforce-version" in err["message"]


def test_a_stricter_enforce_level_warns_about_existing_pods(api):
    namespace(api, "n")
    for name in ("b", "a"):
        assert call(api, "POST", "/api/v1/namespaces/n/pods", pod(name))[0] == 201
    assert call(api, "POST", "/api/v1/namespaces/n/pods", restricted_pod("fine"))[0] == 201
    resp = send(api, "PATCH", "/api/v1/namespaces/n", {"metadata": {"labels": {ps.ENFORCE_LABEL: "restricted"}}},
                ctype="application/merge-patch+json")
    assert resp.status == 200
    assert resp.warnings == [
        'existing pods in namespace "n" violate the new PodSecurity enforce level "restricted:latest"',
        "a (and 1 other pod): allowPrivilegeEscalation != false, unrestricted capabilities, runAsNonRoot != true, "
        "seccompProfile"]
    # relaxing, or relabelling to the same policy, evaluates nothing
    resp = send(api, "PATCH", "/api/v1/namespaces/n", {"metadata": {"labels": {ps.ENFORCE_LABEL: "baseline"}}},
                ctype="application/merge-patch+json")
    assert resp.status == 200 and resp.warnings == []


def test_a_pod_in_a_namespace_with_unreadable_labels_is_judged_restricted(api):
    # Labels written before the check existed (straight into the store) still fail closed.
    ns = api.store.get("/namespaces", "", "default")
    ns["metadata"]["labels"][ps.ENFORCE_LABEL] = "nonsense"
    api.store.update("/namespaces", "", "default", ns)
    resp = send(api, "POST", "/api/v1/namespaces/default/pods", pod())
    assert resp.status == 403 and 'violates PodSecurity "restricted:latest"' in json.loads(resp.body)["message"]
    assert annotations(resp)[ps.ERROR_ANNOTATION].startswith(
        "Failed to parse policy: metadata.labels[pod-security.kubernetes.io/enforce]: Invalid value: \"nonsense\"")
