"""A real `kedge apiserver` over TLS: authentication, RBAC, Node authorizer, NodeRestriction,
impersonation, bad input, audit, and the `kubernetes` Python client across a 410 gap."""

from __future__ import annotations

import datetime as dt
import http.client
import json
import sys
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from kedge import tls
from kedge.pki import ca as pki

sys.path.insert(0, str(Path(__file__).parent))
from test_kubectl import _kedge, start_apiserver  # noqa: E402
from support.cluster import stop_process as stop  # noqa: E402

RBAC = "rbac.authorization.k8s.io"


class Client:
    """A tiny HTTPS JSON client presenting one client certificate."""

    def __init__(self, url: str, ctx) -> None:
        host, port = url.removeprefix("https://").rsplit(":", 1)
        self.host, self.port, self.ctx = host, int(port), ctx

    def request(self, method: str, path: str, body=None, *, ctype: str = "application/json",
                headers: dict | None = None, raw: bytes | None = None):
        conn = http.client.HTTPSConnection(self.host, self.port, context=self.ctx, timeout=10)
        try:
            data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
            hdrs = {"Content-Type": ctype, **(headers or {})}
            conn.request(method, path, body=data, headers=hdrs)
            resp = conn.getresponse()
            payload = resp.read()
            try:
                parsed = json.loads(payload) if payload else None
            except ValueError:
                parsed = payload
            return resp.status, parsed
        finally:
            conn.close()

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def post(self, path, body, **kw):
        return self.request("POST", path, body, **kw)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("authz")
    data = root / "cloud"
    r = _kedge("init", "--data-dir", str(data), "--api-port", "0")
    assert r.returncode == 0, r.stderr
    proc, url = start_apiserver(data, "--watch-history", "30")
    ca_key = pki.load_key_file(data / "pki" / "ca.key")
    ca_cert = pki.load_cert_file(data / "pki" / "ca.crt")
    serials = {}

    def client(cn: str | None, orgs=()) -> Client:
        if cn is None:
            return Client(url, tls.client_context(data / "pki" / "ca.crt"))
        key, cert = pki.issue_client_cert(ca_key, ca_cert, common_name=cn, organizations=list(orgs),
                                          now=dt.datetime.now(dt.timezone.utc))
        safe = cn.replace(":", "_")
        (root / f"{safe}.key").write_bytes(pki.key_to_pem(key))
        (root / f"{safe}.crt").write_bytes(pki.cert_to_pem(cert))
        serials[cn] = cert.serial_number
        return Client(url, tls.client_context(data / "pki" / "ca.crt", root / f"{safe}.crt", root / f"{safe}.key"))

    admin = Client(url, tls.client_context(data / "pki" / "ca.crt", data / "pki" / "admin.crt",
                                           data / "pki" / "admin.key"))
    yield {"data": data, "url": url, "admin": admin, "client": client, "ca": (ca_key, ca_cert),
           "serials": serials, "root": root}
    stop(proc)


def _ok(result, code=(200, 201)):
    status, body = result
    assert status in ((code,) if isinstance(code, int) else code), body
    return body


def _ns(admin, name):
    s, _ = admin.post("/api/v1/namespaces", {"metadata": {"name": name}})
    assert s in (201, 409)


def _cm(name, **data):
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data}


def test_anonymous_requests_get_401(env):
    status, body = env["client"](None).get("/api/v1/namespaces")
    assert status == 401 and body["kind"] == "Status" and body["reason"] == "Unauthorized"
    assert env["client"](None).get("/version")[0] == 401


def test_unbound_user_is_denied(env):
    bob = env["client"]("nobody")
    status, body = bob.get("/api/v1/namespaces/default/pods")
    assert status == 403 and body["reason"] == "Forbidden"
    assert 'User "nobody" cannot list resource "pods"' in body["message"]
    assert bob.get("/version")[0] == 200  # discovery is open to authenticated users


def test_role_in_one_namespace_grants_nothing_in_another(env):
    admin = env["admin"]
    for ns in ("team-a", "team-b"):
        _ns(admin, ns)
    _ok(admin.post("/apis/rbac.authorization.k8s.io/v1/namespaces/team-a/roles", {
        "metadata": {"name": "cm-reader"},
        "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]}]}))
    _ok(admin.post("/apis/rbac.authorization.k8s.io/v1/namespaces/team-a/rolebindings", {
        "metadata": {"name": "alice-reads"}, "roleRef": {"apiGroup": RBAC, "kind": "Role", "name": "cm-reader"},
        "subjects": [{"apiGroup": RBAC, "kind": "User", "name": "alice"}]}))
    alice = env["client"]("alice")
    assert alice.get("/api/v1/namespaces/team-a/configmaps")[0] == 200
    assert alice.get("/api/v1/namespaces/team-b/configmaps")[0] == 403
    assert alice.get("/api/v1/configmaps")[0] == 403  # all namespaces
    assert alice.post("/api/v1/namespaces/team-a/configmaps", _cm("x"))[0] == 403


def test_resource_names_and_subresources_are_honoured(env):
    admin = env["admin"]
    _ns(admin, "rn")
    for n in ("allowed", "other"):
        _ok(admin.post("/api/v1/namespaces/rn/configmaps", _cm(n, k="v")))
    _ok(admin.post("/api/v1/namespaces/rn/pods", {"metadata": {"name": "p"},
                                                  "spec": {"containers": [{"name": "c", "image": "i"}]}}))
    _ok(admin.post("/apis/rbac.authorization.k8s.io/v1/namespaces/rn/roles", {
        "metadata": {"name": "narrow"},
        "rules": [{"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["allowed"], "verbs": ["get"]},
                  {"apiGroups": [""], "resources": ["pods/status"], "verbs": ["get", "patch"]}]}))
    _ok(admin.post("/apis/rbac.authorization.k8s.io/v1/namespaces/rn/rolebindings", {
        "metadata": {"name": "carol"}, "roleRef": {"apiGroup": RBAC, "kind": "Role", "name": "narrow"},
        "subjects": [{"apiGroup": RBAC, "kind": "User", "name": "carol"}]}))
    carol = env["client"]("carol")
    assert carol.get("/api/v1/namespaces/rn/configmaps/allowed")[0] == 200
    assert carol.get("/api/v1/namespaces/rn/configmaps/other")[0] == 403
    assert carol.get("/api/v1/namespaces/rn/configmaps")[0] == 403  # resourceNames never grant list
    assert carol.get("/api/v1/namespaces/rn/pods/p/status")[0] == 200
    assert carol.get("/api/v1/namespaces/rn/pods/p")[0] == 403
    status, pod = carol.request("PATCH", "/api/v1/namespaces/rn/pods/p/status",
                                {"status": {"phase": "Running"}}, ctype="application/merge-patch+json")
    assert status == 200 and pod["status"]["phase"] == "Running"


def test_escalation_through_roles_and_bindings_is_refused(env):
    admin = env["admin"]
    _ns(admin, "esc")
    _ok(admin.post("/apis/rbac.authorization.k8s.io/v1/namespaces/esc/roles", {
        "metadata": {"name": "role-admin"},
        "rules": [{"apiGroups": [RBAC], "resources": ["roles", "rolebindings"], "verbs": ["create", "get"]},
                  {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}]}))
    _ok(admin.post("/apis/rbac.authorization.k8s.io/v1/namespaces/esc/rolebindings", {
        "metadata": {"name": "dave"}, "roleRef": {"apiGroup": RBAC, "kind": "Role", "name": "role-admin"},
        "subjects": [{"apiGroup": RBAC, "kind": "User", "name": "dave"}]}))
    dave = env["client"]("dave")
    # a role within what dave holds: allowed
    _ok(dave.post("/apis/rbac.authorization.k8s.io/v1/namespaces/esc/roles", {
        "metadata": {"name": "cm-get"}, "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}]}))
    # a role granting secrets: refused
    status, body = dave.post("/apis/rbac.authorization.k8s.io/v1/namespaces/esc/roles", {
        "metadata": {"name": "secrets"}, "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}]})
    assert status == 403 and "attempting to grant RBAC permissions not currently held" in body["message"]
    # binding himself to cluster-admin: refused
    status, _ = dave.post("/apis/rbac.authorization.k8s.io/v1/namespaces/esc/rolebindings", {
        "metadata": {"name": "root"}, "roleRef": {"apiGroup": RBAC, "kind": "ClusterRole", "name": "cluster-admin"},
        "subjects": [{"apiGroup": RBAC, "kind": "User", "name": "dave"}]})
    assert status == 403
    # binding someone to a role he fully holds: allowed
    _ok(dave.post("/apis/rbac.authorization.k8s.io/v1/namespaces/esc/rolebindings", {
        "metadata": {"name": "erin"}, "roleRef": {"apiGroup": RBAC, "kind": "Role", "name": "cm-get"},
        "subjects": [{"apiGroup": RBAC, "kind": "User", "name": "erin"}]}))


@pytest.fixture(scope="module")
def nodes(env):
    admin = env["admin"]
    _ns(admin, "apps")
    for n in ("node-a", "node-b"):
        _ok(admin.post("/api/v1/nodes", {"metadata": {"name": n, "labels": {"kubernetes.io/hostname": n}}}))
    for s in ("a-secret", "b-secret", "unreferenced"):
        _ok(admin.post("/api/v1/namespaces/apps/secrets", {"metadata": {"name": s}, "data": {"k": "dg=="}}))
    for pod, node, secret in (("pa", "node-a", "a-secret"), ("pb", "node-b", "b-secret")):
        _ok(admin.post("/api/v1/namespaces/apps/pods", {"metadata": {"name": pod}, "spec": {
            "nodeName": node, "containers": [{"name": "c", "image": "i"}],
            "volumes": [{"name": "s", "secret": {"secretName": secret}}]}}))
    return {"a": env["client"]("system:node:node-a", ["system:nodes"]),
            "b": env["client"]("system:node:node-b", ["system:nodes"])}


@pytest.mark.threat("K-LATERAL")
def test_node_reads_its_pods_secret_but_not_others(env, nodes):
    a = nodes["a"]
    assert a.get("/api/v1/namespaces/apps/secrets/a-secret")[0] == 200
    assert a.get("/api/v1/namespaces/apps/secrets/unreferenced")[0] == 403
    assert a.get("/api/v1/namespaces/apps/secrets/b-secret")[0] == 403
    assert a.get("/api/v1/namespaces/apps/secrets")[0] == 403


@pytest.mark.threat("K-LATERAL")
def test_node_sees_only_its_own_pods(env, nodes):
    a = nodes["a"]
    status, lst = a.get("/api/v1/pods?fieldSelector=spec.nodeName%3Dnode-a")
    assert status == 200 and [p["metadata"]["name"] for p in lst["items"]] == ["pa"]
    assert a.get("/api/v1/pods?fieldSelector=spec.nodeName%3Dnode-b")[0] == 403
    assert a.get("/api/v1/pods")[0] == 403
    assert a.get("/api/v1/namespaces/apps/pods/pb")[0] == 403
    assert a.get("/api/v1/namespaces/apps/pods/pa")[0] == 200
    assert a.get("/api/v1/nodes/node-b")[0] == 403


@pytest.mark.threat("K-LATERAL")
def test_node_cannot_patch_another_nodes_status(env, nodes):
    a = nodes["a"]
    patch = {"status": {"conditions": [{"type": "Ready", "status": "False"}]}}
    status, body = a.request("PATCH", "/api/v1/nodes/node-b/status", patch, ctype="application/merge-patch+json")
    assert status == 403 and "not allowed to modify node" in body["message"]
    assert a.request("PATCH", "/api/v1/nodes/node-a/status", patch, ctype="application/merge-patch+json")[0] == 200
    # the status update of another node's pod is refused by NodeRestriction too
    assert a.request("PATCH", "/api/v1/namespaces/apps/pods/pb/status", {"status": {"phase": "Failed"}},
                     ctype="application/merge-patch+json")[0] == 403
    assert a.request("PATCH", "/api/v1/namespaces/apps/pods/pa/status", {"status": {"phase": "Running"}},
                     ctype="application/merge-patch+json")[0] == 200


@pytest.mark.threat("K-LATERAL")
def test_node_cannot_set_restricted_labels(env, nodes):
    a = nodes["a"]
    status, body = a.request("PATCH", "/api/v1/nodes/node-a",
                             {"metadata": {"labels": {"node-restriction.kubernetes.io/trusted": "yes"}}},
                             ctype="application/merge-patch+json")
    assert status == 403 and "node-restriction.kubernetes.io/trusted" in body["message"]
    assert a.request("PATCH", "/api/v1/nodes/node-a", {"metadata": {"labels": {"example.com/ok": "1"}}},
                     ctype="application/merge-patch+json")[0] == 200


@pytest.mark.threat("K-LATERAL")
def test_node_lease_only_its_own(env, nodes):
    lease = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "node-a"},
             "spec": {"holderIdentity": "node-a"}}
    path = "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases"
    assert nodes["a"].post(path, lease)[0] == 201
    assert nodes["b"].post(path, dict(lease, metadata={"name": "node-a-2"}))[0] == 403
    assert nodes["b"].get(path + "/node-a")[0] == 403


@pytest.mark.threat("K-LATERAL")
def test_cloudcore_impersonates_nodes_only(env, nodes):
    data = env["data"]
    cc = Client(env["url"], tls.client_context(data / "pki" / "ca.crt", data / "pki" / "cloudcore.crt",
                                               data / "pki" / "cloudcore.key"))
    assert cc.get("/api/v1/namespaces/apps/secrets/a-secret")[0] == 403  # not as itself
    as_a = {"Impersonate-User": "system:node:node-a", "Impersonate-Group": "system:nodes"}
    assert cc.get("/api/v1/namespaces/apps/secrets/a-secret", headers=as_a)[0] == 200
    assert cc.get("/api/v1/namespaces/apps/secrets/b-secret", headers=as_a)[0] == 403
    status, body = cc.get("/api/v1/namespaces/apps/secrets/a-secret", headers={"Impersonate-User": "kedge-admin"})
    assert status == 403 and "impersonate" in body["message"]
    assert cc.get("/api/v1/nodes", headers={"Impersonate-User": "system:node:node-a",
                                            "Impersonate-Group": "system:masters"})[0] == 403
    # an unbound user cannot impersonate at all
    assert env["client"]("mallory").get("/api/v1/nodes", headers=as_a)[0] == 403


def test_subject_access_review_matches_enforcement(env, nodes):
    sar = {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview", "spec": {
        "user": "system:node:node-a", "groups": ["system:nodes"],
        "resourceAttributes": {"verb": "get", "resource": "secrets", "namespace": "apps", "name": "a-secret"}}}
    body = _ok(env["admin"].post("/apis/authorization.k8s.io/v1/subjectaccessreviews", sar))
    assert body["status"]["allowed"] is True
    sar["spec"]["resourceAttributes"]["name"] = "unreferenced"
    assert _ok(env["admin"].post("/apis/authorization.k8s.io/v1/subjectaccessreviews", sar))["status"]["allowed"] is False
    sar["spec"]["resourceAttributes"] = {"verb": "list", "resource": "pods",
                                         "fieldSelector": {"rawSelector": "spec.nodeName=node-a"}}
    assert _ok(env["admin"].post("/apis/authorization.k8s.io/v1/subjectaccessreviews", sar))["status"]["allowed"] is True
    # SubjectAccessReview itself needs permission
    assert env["client"]("nobody").post("/apis/authorization.k8s.io/v1/subjectaccessreviews", sar)[0] == 403


@pytest.mark.threat("K-REVOKED-NODE")
def test_revoked_client_certificate_is_refused(env):
    ca_key, ca_cert = env["ca"]
    frank = env["client"]("frank", ["system:masters"])
    assert frank.get("/api/v1/namespaces")[0] == 200
    now = dt.datetime.now(dt.timezone.utc)
    crl = pki.build_crl(ca_key, ca_cert, [(env["serials"]["frank"], now)], now=now)
    path = env["data"] / "pki" / "crl.pem"
    old = path.read_bytes()
    path.write_bytes(crl.public_bytes(serialization.Encoding.PEM))
    try:
        assert frank.get("/api/v1/namespaces")[0] == 401
        assert env["admin"].get("/api/v1/namespaces")[0] == 200
    finally:
        path.write_bytes(old)


@pytest.mark.threat("K-MALFORMED-INPUT")
def test_bad_input_is_answered_with_status(env):
    admin = env["admin"]
    status, body = admin.request("POST", "/api/v1/namespaces/default/configmaps", raw=b"{not json")
    assert status == 400 and body["kind"] == "Status"
    status, _ = admin.request("POST", "/api/v1/namespaces/default/configmaps", raw=b"[" * 100_000 + b"]" * 100_000)
    assert status == 400
    status, body = admin.request("POST", "/api/v1/namespaces/default/configmaps", raw=b" " * (3 * 1024 * 1024 + 10))
    assert status == 413
    assert admin.get("/api/v1/namespaces/default/configmaps?labelSelector=a%20in%20(")[0] == 400
    assert admin.get("/api/v1/namespaces/default/pods?fieldSelector=spec.unknown%3Dx")[0] == 400
    assert admin.get("/api/v1/namespaces/default/widgets")[0] == 404
    status, body = admin.request("PATCH", "/api/v1/namespaces/default/configmaps/x", {}, ctype="text/plain")
    assert status == 415


@pytest.mark.threat("K-STALE-OVERWRITE")
def test_optimistic_concurrency_conflict(env):
    admin = env["admin"]
    cm = _ok(admin.post("/api/v1/namespaces/default/configmaps", _cm("occ", a="1")))
    cm["data"]["a"] = "2"
    updated = _ok(admin.request("PUT", "/api/v1/namespaces/default/configmaps/occ", cm))
    assert int(updated["metadata"]["resourceVersion"]) > int(cm["metadata"]["resourceVersion"])
    status, body = admin.request("PUT", "/api/v1/namespaces/default/configmaps/occ", cm)
    assert status == 409 and body["reason"] == "Conflict"


@pytest.mark.threat("K-REPUDIATION")
def test_audit_log_records_decisions(env):
    lines = [json.loads(x) for x in (env["data"] / "apiserver-audit.log").read_text().splitlines()]
    denied = [x for x in lines if x["user"]["username"] == "nobody"
              and x["annotations"]["authorization.k8s.io/decision"] == "forbid"]
    assert denied and denied[0]["responseStatus"]["code"] == 403 and denied[0]["verb"] == "list"
    assert oct((env["data"] / "apiserver-audit.log").stat().st_mode & 0o777) == "0o600"


def test_python_client_relists_after_410(env):
    from kubernetes import client, config, watch
    from kubernetes.client.rest import ApiException

    cfg = client.Configuration()
    config.load_kube_config(config_file=str(env["data"] / "admin.kubeconfig"), client_configuration=cfg)
    v1 = client.CoreV1Api(client.ApiClient(cfg))
    v1.create_namespace({"metadata": {"name": "gap"}})
    v1.create_namespaced_pod("gap", {"metadata": {"name": "p0"}, "spec": {"containers": [{"name": "c", "image": "i"}]}})
    listed = v1.list_namespaced_pod("gap")
    rv = listed.metadata.resource_version
    assert [p.metadata.name for p in listed.items] == ["p0"]
    # more writes than the server's watch history (30) -> the old resourceVersion is gone
    for i in range(1, 41):
        v1.create_namespaced_pod("gap", {"metadata": {"name": f"p{i}"},
                                         "spec": {"containers": [{"name": "c", "image": "i"}]}})
    with pytest.raises(ApiException) as exc:
        for _ in watch.Watch().stream(v1.list_namespaced_pod, "gap", resource_version=rv, timeout_seconds=5):
            pass
    assert exc.value.status == 410
    relisted = v1.list_namespaced_pod("gap")
    assert len(relisted.items) == 41
    # watch from the fresh list sees the next change, and nothing older
    seen = []
    w = watch.Watch()
    v1.create_namespaced_pod("gap", {"metadata": {"name": "late"}, "spec": {"containers": [{"name": "c", "image": "i"}]}})
    deadline = time.monotonic() + 10
    for ev in w.stream(v1.list_namespaced_pod, "gap", resource_version=relisted.metadata.resource_version,
                       timeout_seconds=5):
        seen.append((ev["type"], ev["object"].metadata.name))
        if ev["object"].metadata.name == "late" or time.monotonic() > deadline:
            w.stop()
    assert seen == [("ADDED", "late")]
