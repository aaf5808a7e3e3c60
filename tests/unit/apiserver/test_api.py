"""API semantics without sockets: the request handler over a real SQLite store, fixed clock."""

from __future__ import annotations

import json

import pytest

from kedge.apiserver.api import API, Request, Response, User, Watch
from kedge.store.sqlite import Store

ADMIN = User("admin", ("system:masters", "system:authenticated"))
NODE_A = User("system:node:node-a", ("system:nodes", "system:authenticated"))


@pytest.fixture()
def api(tmp_path):
    store = Store(tmp_path / "api.db", window=50, synchronous="NORMAL")
    yield API(store, clock=lambda: 1_700_000_000.0)
    store.close()


def call(api, method, path, body=None, user=ADMIN, ctype="application/json", headers=None):
    hdrs = {"content-type": [ctype]}
    for k, v in (headers or {}).items():
        hdrs[k.lower()] = [v]
    raw = json.dumps(body).encode() if body is not None else b""
    resp = api.handle(Request(method, path, hdrs, raw, user))
    if isinstance(resp, Watch):
        return resp
    return resp.status, json.loads(resp.body) if resp.body[:1] in (b"{", b"[") else resp.body


def pod(name, node="", **spec):
    return {"metadata": {"name": name}, "spec": {"nodeName": node, "containers": [{"name": "c", "image": "i"}],
                                                  **spec}}


def lines(w: Watch):
    out = [json.loads(x) for x in w.lines]
    w.lines.clear()
    return [(e["type"], e["object"]["metadata"].get("name")) for e in out]


def test_create_sets_server_fields_and_rejects_duplicates(api):
    s, obj = call(api, "POST", "/api/v1/namespaces/default/configmaps",
                  {"metadata": {"name": "c", "uid": "forged", "resourceVersion": "999"}, "data": {}})
    assert s == 201 and obj["metadata"]["uid"] != "forged"
    assert obj["metadata"]["creationTimestamp"] == "2023-11-14T22:13:20Z"
    assert obj["kind"] == "ConfigMap" and obj["apiVersion"] == "v1"
    s, err = call(api, "POST", "/api/v1/namespaces/default/configmaps", {"metadata": {"name": "c"}})
    assert s == 409 and err["reason"] == "AlreadyExists"


def test_create_in_missing_namespace_is_404(api):
    s, err = call(api, "POST", "/api/v1/namespaces/nope/configmaps", {"metadata": {"name": "c"}})
    assert s == 404 and 'namespaces "nope" not found' in err["message"]


def test_generate_name_and_namespace_mismatch(api):
    s, obj = call(api, "POST", "/api/v1/namespaces/default/configmaps", {"metadata": {"generateName": "gen-"}})
    assert s == 201 and obj["metadata"]["name"].startswith("gen-") and len(obj["metadata"]["name"]) == 9
    s, _ = call(api, "POST", "/api/v1/namespaces/default/configmaps",
                {"metadata": {"name": "x", "namespace": "kube-system"}})
    assert s == 400


def test_status_subresource_separates_spec_and_status(api):
    call(api, "POST", "/api/v1/namespaces/default/pods", pod("p"))
    s, p = call(api, "PATCH", "/api/v1/namespaces/default/pods/p",
                {"status": {"phase": "Running"}, "metadata": {"labels": {"a": "b"}}},
                ctype="application/merge-patch+json")
    assert s == 200 and p["status"]["phase"] == "Pending" and p["metadata"]["labels"] == {"a": "b"}
    s, p = call(api, "PATCH", "/api/v1/namespaces/default/pods/p/status",
                {"status": {"phase": "Running"}, "metadata": {"labels": {"x": "y"}}},
                ctype="application/merge-patch+json")
    assert s == 200 and p["status"]["phase"] == "Running" and p["metadata"]["labels"] == {"a": "b"}
    assert p["metadata"]["generation"] == 1  # neither change touched the spec


def test_pod_spec_is_mostly_immutable(api):
    call(api, "POST", "/api/v1/namespaces/default/pods", pod("p"))
    s, err = call(api, "PATCH", "/api/v1/namespaces/default/pods/p", {"spec": {"nodeName": "elsewhere"}},
                  ctype="application/merge-patch+json")
    assert s == 422 and err["reason"] == "Invalid"


def test_noop_update_keeps_resource_version(api):
    _, c = call(api, "POST", "/api/v1/namespaces/default/configmaps", {"metadata": {"name": "c"}, "data": {"a": "1"}})
    s, again = call(api, "PATCH", "/api/v1/namespaces/default/configmaps/c", {"data": {"a": "1"}},
                    ctype="application/merge-patch+json")
    assert s == 200 and again["metadata"]["resourceVersion"] == c["metadata"]["resourceVersion"]


def test_finalizers_defer_deletion(api):
    call(api, "POST", "/api/v1/namespaces/default/configmaps", {"metadata": {"name": "f", "finalizers": ["x/y"]}})
    s, obj = call(api, "DELETE", "/api/v1/namespaces/default/configmaps/f")
    assert s == 200 and obj["metadata"]["deletionTimestamp"]
    assert call(api, "GET", "/api/v1/namespaces/default/configmaps/f")[0] == 200
    s, _ = call(api, "PATCH", "/api/v1/namespaces/default/configmaps/f", {"metadata": {"finalizers": None}},
                ctype="application/merge-patch+json")
    assert s == 200
    assert call(api, "GET", "/api/v1/namespaces/default/configmaps/f")[0] == 404


def test_bound_pods_terminate_gracefully(api):
    call(api, "POST", "/api/v1/namespaces/default/pods", pod("bound", "node-a"))
    call(api, "POST", "/api/v1/namespaces/default/pods", pod("free"))
    s, obj = call(api, "DELETE", "/api/v1/namespaces/default/pods/bound")
    assert s == 200 and obj["metadata"]["deletionGracePeriodSeconds"] == 30
    assert call(api, "GET", "/api/v1/namespaces/default/pods/bound")[0] == 200
    # the node confirms with grace 0
    s, _ = call(api, "DELETE", "/api/v1/namespaces/default/pods/bound", {"gracePeriodSeconds": 0}, user=NODE_A)
    assert s == 200 and call(api, "GET", "/api/v1/namespaces/default/pods/bound")[0] == 404
    call(api, "DELETE", "/api/v1/namespaces/default/pods/free")
    assert call(api, "GET", "/api/v1/namespaces/default/pods/free")[0] == 404


def test_namespace_deletion_removes_its_objects(api):
    call(api, "POST", "/api/v1/namespaces", {"metadata": {"name": "tmp"}})
    call(api, "POST", "/api/v1/namespaces/tmp/configmaps", {"metadata": {"name": "c"}})
    call(api, "DELETE", "/api/v1/namespaces/tmp")
    call(api, "POST", "/api/v1/namespaces", {"metadata": {"name": "tmp"}})
    assert call(api, "GET", "/api/v1/namespaces/tmp/configmaps/c")[0] == 404


def test_list_selectors_and_pagination(api):
    for i in range(5):
        call(api, "POST", "/api/v1/namespaces/default/pods",
             dict(pod(f"p{i}", "node-a" if i < 2 else "node-b"), metadata={"name": f"p{i}",
                                                                         "labels": {"even": str(i % 2 == 0)}}))
    _, lst = call(api, "GET", "/api/v1/pods?fieldSelector=spec.nodeName%3Dnode-a")
    assert [p["metadata"]["name"] for p in lst["items"]] == ["p0", "p1"]
    _, lst = call(api, "GET", "/api/v1/namespaces/default/pods?labelSelector=even%3DTrue")
    assert [p["metadata"]["name"] for p in lst["items"]] == ["p0", "p2", "p4"]
    _, page = call(api, "GET", "/api/v1/namespaces/default/pods?limit=2")
    names = [p["metadata"]["name"] for p in page["items"]]
    while page["metadata"].get("continue"):
        _, page = call(api, "GET", f"/api/v1/namespaces/default/pods?limit=2&continue={page['metadata']['continue']}")
        names += [p["metadata"]["name"] for p in page["items"]]
    assert names == [f"p{i}" for i in range(5)]
    assert call(api, "GET", "/api/v1/pods?continue=garbage")[0] == 400


def test_watch_turns_selector_transitions_into_added_and_deleted(api):
    call(api, "POST", "/api/v1/namespaces/default/configmaps", {"metadata": {"name": "c", "labels": {"x": "1"}}})
    w = call(api, "GET", "/api/v1/namespaces/default/configmaps?watch=1&labelSelector=x%3D2")
    assert lines(w) == []
    call(api, "PATCH", "/api/v1/namespaces/default/configmaps/c", {"metadata": {"labels": {"x": "2"}}},
         ctype="application/merge-patch+json")
    call(api, "PATCH", "/api/v1/namespaces/default/configmaps/c", {"data": {"a": "b"}},
         ctype="application/merge-patch+json")
    call(api, "PATCH", "/api/v1/namespaces/default/configmaps/c", {"metadata": {"labels": {"x": "3"}}},
         ctype="application/merge-patch+json")
    assert lines(w) == [("ADDED", "c"), ("MODIFIED", "c"), ("DELETED", "c")]
    w.close()


def test_watch_from_resource_version_and_expiry(api):
    _, lst = call(api, "GET", "/api/v1/namespaces/default/configmaps")
    rv = lst["metadata"]["resourceVersion"]
    call(api, "POST", "/api/v1/namespaces/default/configmaps", {"metadata": {"name": "a"}})
    w = call(api, "GET", f"/api/v1/namespaces/default/configmaps?watch=1&resourceVersion={rv}")
    assert lines(w) == [("ADDED", "a")]
    w.close()
    for i in range(60):
        call(api, "PATCH", "/api/v1/namespaces/default/configmaps/a", {"data": {"i": str(i)}},
             ctype="application/merge-patch+json")
    w = call(api, "GET", f"/api/v1/namespaces/default/configmaps?watch=1&resourceVersion={rv}")
    ev = json.loads(w.lines[0])
    assert ev["type"] == "ERROR" and ev["object"]["code"] == 410 and ev["object"]["reason"] == "Expired"
    assert w.closed


def test_watch_backlog_is_bounded(api, monkeypatch):
    import kedge.apiserver.watch as watch_mod
    monkeypatch.setattr(watch_mod, "MAX_WATCH_BACKLOG", 5)
    w = call(api, "GET", "/api/v1/namespaces/default/configmaps?watch=1&resourceVersion=0")
    for i in range(10):
        call(api, "POST", "/api/v1/namespaces/default/configmaps", {"metadata": {"name": f"c{i}"}})
    assert w.overflowed and not w.lines


def test_crd_lifecycle(api):
    crd = {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
           "metadata": {"name": "things.example.com"},
           "spec": {"group": "example.com", "scope": "Cluster", "names": {"plural": "things", "kind": "Thing"},
                    "versions": [{"name": "v1", "served": True, "storage": True},
                                 {"name": "v1beta1", "served": True, "storage": False}]}}
    s, created = call(api, "POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd)
    assert s == 201 and {c["type"] for c in created["status"]["conditions"]} == {"Established", "NamesAccepted"}
    _, groups = call(api, "GET", "/apis")
    eg = [g for g in groups["groups"] if g["name"] == "example.com"][0]
    assert eg["preferredVersion"]["version"] == "v1"
    s, t = call(api, "POST", "/apis/example.com/v1/things", {"metadata": {"name": "t"}, "spec": {"a": 1}})
    assert s == 201
    s, t2 = call(api, "GET", "/apis/example.com/v1beta1/things/t")
    assert s == 200 and t2["apiVersion"] == "example.com/v1beta1" and t2["spec"] == {"a": 1}
    s, _ = call(api, "PATCH", "/apis/example.com/v1/things/t", {"spec": {"a": 2}},
                ctype="application/strategic-merge-patch+json")
    assert s == 415
    call(api, "DELETE", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/things.example.com")
    assert call(api, "GET", "/apis/example.com/v1/things/t")[0] == 404


@pytest.mark.parametrize("bad", [
    {"metadata": {"name": "x.example.com"}, "spec": {"group": "example.com", "scope": "Cluster",
                                                    "names": {"plural": "x", "kind": "X"}, "versions": []}},
    {"metadata": {"name": "pods.core"}, "spec": {"group": "core", "scope": "Cluster",
                                                 "names": {"plural": "pods", "kind": "Pod"},
                                                 "versions": [{"name": "v1", "served": True, "storage": True}]}},
    {"metadata": {"name": "wrong.example.com"}, "spec": {"group": "example.com", "scope": "Cluster",
                                                         "names": {"plural": "x", "kind": "X"},
                                                         "versions": [{"name": "v1", "served": True, "storage": True}]}},
])
def test_invalid_crds_are_refused(api, bad):
    s, err = call(api, "POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", bad)
    assert s == 422, err


def test_table_output_for_kubectl(api):
    call(api, "POST", "/api/v1/namespaces/default/pods", pod("p", "node-a"))
    resp = api.handle(Request("GET", "/api/v1/namespaces/default/pods", {
        "accept": ["application/json;as=Table;v=v1;g=meta.k8s.io,application/json"]}, b"", ADMIN))
    assert isinstance(resp, Response)
    table = json.loads(resp.body)
    assert table["kind"] == "Table" and table["rows"][0]["cells"][:3] == ["p", "0/1", "Pending"]


def test_secret_string_data_is_encoded_and_validated(api):
    s, sec = call(api, "POST", "/api/v1/namespaces/default/secrets", {"metadata": {"name": "s"},
                                                                       "stringData": {"k": "v"}})
    assert s == 201 and sec["data"] == {"k": "dg=="} and "stringData" not in sec and sec["type"] == "Opaque"
    s, _ = call(api, "POST", "/api/v1/namespaces/default/secrets", {"metadata": {"name": "t"}, "data": {"k": "%%"}})
    assert s == 422


def test_node_cannot_create_non_mirror_pods(api):
    s, err = call(api, "POST", "/api/v1/namespaces/default/pods", pod("sneaky", "node-a"), user=NODE_A)
    assert s == 403 and "mirror" in err["message"]


def test_discovery_documents(api):
    _, core = call(api, "GET", "/api/v1")
    names = {r["name"] for r in core["resources"]}
    assert {"pods", "pods/status", "nodes", "secrets", "configmaps", "serviceaccounts/token"} <= names
    _, v3 = call(api, "GET", "/openapi/v3")
    assert "api/v1" in v3["paths"] and "apis/rbac.authorization.k8s.io/v1" in v3["paths"]
    assert call(api, "GET", "/apis/nope/v1")[0] == 404


def test_strict_field_validation_refuses_unknown_fields(api):
    body = {"metadata": {"name": "s", "nmae": "typo"}, "data": {}, "dta": {}}
    s, err = call(api, "POST", "/api/v1/namespaces/default/configmaps?fieldValidation=Strict", body)
    assert s == 400 and 'unknown field "dta"' in err["message"] and 'unknown field "metadata.nmae"' in err["message"]
    s, _ = call(api, "POST", "/api/v1/namespaces/default/configmaps?fieldValidation=Strict",
                {"metadata": {"name": "ok"}, "data": {}})
    assert s == 201
    s, err = call(api, "PATCH", "/api/v1/namespaces/default/configmaps/ok?fieldValidation=Strict",
                  {"spec": {}}, ctype="application/merge-patch+json")
    assert s == 400 and 'unknown field "spec"' in err["message"]


def test_token_request_and_bearer_authentication(tmp_path):
    from cryptography.hazmat.primitives.asymmetric import ec

    store = Store(tmp_path / "t.db", synchronous="NORMAL")
    now = [1_700_000_000.0]
    api = API(store, clock=lambda: now[0], sa_key=ec.generate_private_key(ec.SECP256R1()))
    call(api, "POST", "/api/v1/namespaces/default/serviceaccounts", {"metadata": {"name": "robot"}})
    _, runner = call(api, "POST", "/api/v1/namespaces/default/pods", pod("runner", "node-a", serviceAccountName="robot"))
    call(api, "POST", "/api/v1/namespaces/default/pods", pod("elsewhere", "node-b", serviceAccountName="robot"))
    s, tr = call(api, "POST", "/api/v1/namespaces/default/serviceaccounts/robot/token",
                 {"spec": {"expirationSeconds": 600}})
    assert s == 201
    user = api.authenticate_bearer(tr["status"]["token"])
    assert user is not None and user.name == "system:serviceaccount:default:robot"
    now[0] += 700  # expired
    assert api.authenticate_bearer(tr["status"]["token"]) is None
    now[0] -= 700
    # a node may only mint tokens bound to its own pods
    ref = {"spec": {"boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": "elsewhere"}}}
    s, _ = call(api, "POST", "/api/v1/namespaces/default/serviceaccounts/robot/token", ref, user=NODE_A)
    assert s == 403
    ref["spec"]["boundObjectRef"]["name"] = "runner"
    s, err = call(api, "POST", "/api/v1/namespaces/default/serviceaccounts/robot/token", ref, user=NODE_A)
    assert s == 403 and "without a uid" in err["message"]  # Kubernetes: a node's binding names the pod's uid
    ref["spec"]["boundObjectRef"]["uid"] = runner["metadata"]["uid"]
    s, bound = call(api, "POST", "/api/v1/namespaces/default/serviceaccounts/robot/token", ref, user=NODE_A)
    assert s == 201 and api.authenticate_bearer(bound["status"]["token"]) is not None
    # deleting the bound pod (unbound pods go at once; this one is bound so force grace 0) revokes the token
    call(api, "DELETE", "/api/v1/namespaces/default/pods/runner", {"gracePeriodSeconds": 0})
    assert api.authenticate_bearer(bound["status"]["token"]) is None
    # deleting the service account revokes every token it had
    call(api, "DELETE", "/api/v1/namespaces/default/serviceaccounts/robot")
    assert api.authenticate_bearer(tr["status"]["token"]) is None
    store.close()


def test_initial_state_does_not_count_against_the_live_backlog(api, monkeypatch):
    import kedge.apiserver.watch as watch_mod
    for i in range(8):
        call(api, "POST", "/api/v1/namespaces/default/configmaps", {"metadata": {"name": f"c{i}"}})
    monkeypatch.setattr(watch_mod, "MAX_WATCH_BACKLOG", 5)
    w = call(api, "GET", "/api/v1/namespaces/default/configmaps?watch=1")
    assert not w.overflowed and len(w.lines) == 8
    assert len(w.take(100)) == 8
    for i in range(4):
        call(api, "POST", "/api/v1/namespaces/default/configmaps", {"metadata": {"name": f"d{i}"}})
    assert not w.overflowed and len(w.take(100)) == 4
    w.close()


def test_aggregation_rules_need_escalate(api):
    rbac = "/apis/rbac.authorization.k8s.io/v1"
    call(api, "POST", f"{rbac}/clusterroles", {"metadata": {"name": "role-writer"}, "rules": [
        {"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["clusterroles"], "verbs": ["create"]}]})
    call(api, "POST", f"{rbac}/clusterrolebindings", {
        "metadata": {"name": "w"}, "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                                               "name": "role-writer"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "writer"}]})
    writer = User("writer", ("system:authenticated",))
    agg = {"metadata": {"name": "sneaky"}, "aggregationRule": {"clusterRoleSelectors": [
        {"matchLabels": {"kubernetes.io/bootstrapping": "rbac-defaults"}}]}, "rules": []}
    s, err = call(api, "POST", f"{rbac}/clusterroles", agg, user=writer)
    assert s == 403 and "aggregationRule" in err["message"]
    s, _ = call(api, "POST", f"{rbac}/clusterroles", {"metadata": {"name": "plain"}, "rules": [
        {"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["clusterroles"], "verbs": ["create"]}]},
        user=writer)
    assert s == 201
    assert call(api, "POST", f"{rbac}/clusterroles", agg)[0] == 201  # masters may


def test_yaml_bodies_are_accepted_but_alias_bombs_are_not(api):
    ok = b"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: from-yaml}\ndata: {k: v}\n"
    resp = api.handle(Request("POST", "/api/v1/namespaces/default/configmaps",
                              {"content-type": ["application/yaml"]}, ok, ADMIN))
    assert resp.status == 201
    bomb = b"a: &a [x, x]\nb: &b [*a, *a]\nc: &c [*b, *b]\nd: [*c, *c]\nmetadata: {name: bomb}\n"
    resp = api.handle(Request("POST", "/api/v1/namespaces/default/configmaps",
                              {"content-type": ["application/yaml"]}, bomb, ADMIN))
    assert resp.status == 400
    resp = api.handle(Request("POST", "/api/v1/namespaces/default/configmaps",
                              {"content-type": ["application/yaml"]}, b"!!python/object:os.system {}", ADMIN))
    assert resp.status == 400


def test_node_scoped_watches_get_only_their_pods(api):
    wa = call(api, "GET", "/api/v1/pods?watch=1&resourceVersion=0&fieldSelector=spec.nodeName%3Dnode-a")
    wb = call(api, "GET", "/api/v1/pods?watch=1&resourceVersion=0&fieldSelector=spec.nodeName%3Dnode-b")
    assert wa.index_value == "node-a"
    call(api, "POST", "/api/v1/namespaces/default/pods", pod("p", "node-a"))
    call(api, "DELETE", "/api/v1/namespaces/default/pods/p")  # graceful: MODIFIED with deletionTimestamp
    call(api, "DELETE", "/api/v1/namespaces/default/pods/p", {"gracePeriodSeconds": 0})
    assert lines(wa) == [("ADDED", "p"), ("MODIFIED", "p"), ("DELETED", "p")]
    assert lines(wb) == []


@pytest.mark.parametrize("value", ["\u00b2", "\u0661", "1" * 13, "-1", "1e3"])
def test_non_ascii_digit_limit_param_is_400_not_a_crash(api, value):
    """``?limit=²``: str.isdigit() accepted it and int() then raised ValueError (a 500)."""
    s, err = call(api, "GET", "/api/v1/namespaces/default/configmaps?limit=" + value)
    assert s == 400 and err["code"] == 400
    assert call(api, "GET", "/api/v1/namespaces/default/configmaps?limit=2")[0] == 200


def test_clusterrole_with_malformed_aggregation_selector_is_refused_at_write():
    """A malformed aggregationRule never reaches the store (where it would make the role inert)."""
    import json as _json

    from kedge.apiserver.api import API, Request, User
    from kedge.store.sqlite import Store
    import tempfile
    import pathlib
    from cryptography.hazmat.primitives.asymmetric import ec

    d = pathlib.Path(tempfile.mkdtemp())
    store = Store(d / "api.db")
    try:
        api = API(store, node_authorization=True, sa_key=ec.generate_private_key(ec.SECP256R1()))
        admin = User("admin", ("system:masters", "system:authenticated"))
        body = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                "metadata": {"name": "agg-bad"},
                "aggregationRule": {"clusterRoleSelectors": [{"matchLabels": [1]}]}, "rules": []}
        req = Request("POST", "/apis/rbac.authorization.k8s.io/v1/clusterroles",
                      {"content-type": ["application/json"]}, _json.dumps(body).encode(), admin)
        resp = api.handle(req)
        # matchLabels is a map: Kubernetes' decoder refuses a list there with 400.
        assert resp.status == 400, resp.status
    finally:
        store.close()
