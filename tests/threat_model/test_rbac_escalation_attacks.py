"""Threat: a user allowed to write roles or bindings grants itself more than it holds.

Review findings, driven against a real cloudcore over HTTPS with a client certificate
minted by the cluster CA for a user the admin gives namespace-scoped rights:

* a RoleBinding to a role that does not exist yet was allowed without ``bind`` ("a
  missing role has no rules to hold"); once the role appeared, its rules were granted.
  Kubernetes looks the role up and answers NotFound;
* an ``escalate`` grant narrowed by ``resourceNames`` let its holder *create* a role of
  that name with any rules (Kubernetes asks ``escalate`` with the request's name, which a
  create does not have);
* a PUT that creates a missing object needs ``create`` as well as ``update``;
* the aggregated ``admin`` role lacked ``edit``'s rules (a legitimate grant that fell short).
"""

from __future__ import annotations

import pytest
from support.api import RBAC, Api, admin_api, create_namespace, user_api
from support.cluster import Cloud
from support.fixtures import cloud  # noqa: F401 - pytest fixture

NS = "rbac-esc"
R = f"/apis/{RBAC}/v1"


def _role(name: str, rules: list[dict], ns: str | None = NS) -> dict:
    meta = {"name": name, **({"namespace": ns} if ns else {})}
    return {"apiVersion": f"{RBAC}/v1", "kind": "Role" if ns else "ClusterRole", "metadata": meta, "rules": rules}


def _binding(name: str, kind: str, role: str, user: str, ns: str | None = NS) -> dict:
    meta = {"name": name, **({"namespace": ns} if ns else {})}
    return {"apiVersion": f"{RBAC}/v1", "kind": "RoleBinding" if ns else "ClusterRoleBinding", "metadata": meta,
            "roleRef": {"apiGroup": RBAC, "kind": kind, "name": role},
            "subjects": [{"apiGroup": RBAC, "kind": "User", "name": user}]}


def _grant(admin: Api, user: str, rules: list[dict], *, cluster: bool = False) -> None:
    name = f"{user}-grant"
    if cluster:
        assert admin.request("POST", f"{R}/clusterroles", _role(name, rules, None))[0] == 201
        assert admin.request("POST", f"{R}/clusterrolebindings",
                             _binding(name, "ClusterRole", name, user, None))[0] == 201
    else:
        assert admin.request("POST", f"{R}/namespaces/{NS}/roles", _role(name, rules))[0] == 201
        assert admin.request("POST", f"{R}/namespaces/{NS}/rolebindings",
                             _binding(name, "Role", name, user))[0] == 201


@pytest.fixture(scope="module")
def env(cloud: Cloud, tmp_path_factory):
    root = tmp_path_factory.mktemp("rbacesc")
    admin = admin_api(cloud)
    create_namespace(admin, NS)
    return cloud, root, admin


@pytest.mark.threat("K-RBAC-ESCALATION")
def test_binding_to_a_role_that_does_not_exist_yet_needs_bind(env):
    cloud, root, admin = env
    mallory = user_api(cloud, "mallory", out_dir=root)
    _grant(admin, "mallory", [{"apiGroups": [RBAC], "resources": ["rolebindings"], "verbs": ["create", "get"]}])
    # Binding herself to a Role nobody has created yet: refused as Kubernetes does (the
    # role's NotFound), and nothing is stored.
    s, err = mallory.request("POST", f"{R}/namespaces/{NS}/rolebindings",
                             _binding("pre-bound", "Role", "future-secrets-admin", "mallory"))
    assert s == 404 and err["details"]["kind"] == "roles", err
    s, err = mallory.request("POST", f"{R}/namespaces/{NS}/rolebindings",
                             _binding("pre-bound-c", "ClusterRole", "future-cluster-role", "mallory"))
    assert s == 404 and err["details"]["kind"] == "clusterroles", err
    assert admin.request("GET", f"{R}/namespaces/{NS}/rolebindings/pre-bound")[0] == 404
    # When the role appears, she has gained nothing.
    assert admin.request("POST", f"{R}/namespaces/{NS}/roles", _role("future-secrets-admin", [
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["*"]}]))[0] == 201
    assert mallory.request("GET", f"/api/v1/namespaces/{NS}/secrets")[0] == 403
    # Now that it exists she still may not bind it: she does not hold its rules.
    s, err = mallory.request("POST", f"{R}/namespaces/{NS}/rolebindings",
                             _binding("pre-bound", "Role", "future-secrets-admin", "mallory"))
    assert s == 403 and "not currently held" in err["message"], err
    # Legitimate: bind on that (not yet existing) role name lets a delegate pre-create the binding.
    trent = user_api(cloud, "trent", out_dir=root)
    _grant(admin, "trent", [{"apiGroups": [RBAC], "resources": ["rolebindings"], "verbs": ["create"]},
                            {"apiGroups": [RBAC], "resources": ["roles"], "verbs": ["bind"],
                             "resourceNames": ["planned-role"]}])
    assert trent.request("POST", f"{R}/namespaces/{NS}/rolebindings",
                         _binding("planned", "Role", "planned-role", "trent"))[0] == 201
    assert trent.request("POST", f"{R}/namespaces/{NS}/rolebindings",
                         _binding("unplanned", "Role", "other-role", "trent"))[0] == 404


@pytest.mark.threat("K-RBAC-ESCALATION")
def test_escalate_narrowed_by_resource_names_does_not_let_its_holder_create_wider_roles(env):
    cloud, root, admin = env
    erin = user_api(cloud, "erin", out_dir=root)
    _grant(admin, "erin", [{"apiGroups": [RBAC], "resources": ["roles"], "verbs": ["create", "update", "get"]},
                           {"apiGroups": [RBAC], "resources": ["roles"], "verbs": ["escalate"],
                            "resourceNames": ["tuned"]}])
    wide = [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["*"]}]
    # A create has no name in its request: the narrowed escalate does not apply (Kubernetes).
    s, err = erin.request("POST", f"{R}/namespaces/{NS}/roles", _role("tuned", wide))
    assert s == 403 and "not currently held" in err["message"], err
    # Escalation by a role holding rules she does not hold, under any name: refused.
    s, _ = erin.request("POST", f"{R}/namespaces/{NS}/roles", _role("sneaky", wide))
    assert s == 403
    # Legitimate: a role with what she holds; and widening the named role by update.
    s, role = erin.request("POST", f"{R}/namespaces/{NS}/roles", _role("tuned", [
        {"apiGroups": [RBAC], "resources": ["roles"], "verbs": ["get"]}]))
    assert s == 201, role
    role["rules"] = wide
    assert erin.request("PUT", f"{R}/namespaces/{NS}/roles/tuned", role)[0] == 200


@pytest.mark.threat("K-RBAC-ESCALATION")
def test_put_that_creates_needs_create(env):
    cloud, root, admin = env
    uma = user_api(cloud, "uma", out_dir=root)
    _grant(admin, "uma", [{"apiGroups": [""], "resources": ["endpoints", "configmaps"], "verbs": ["update", "get"]},
                          {"apiGroups": [RBAC], "resources": ["roles"], "verbs": ["update", "get"]}])
    ep = {"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "made-by-put"}}
    s, err = uma.request("PUT", f"/api/v1/namespaces/{NS}/endpoints/made-by-put", ep)
    assert s == 403 and "create" in err["message"], err
    assert admin.request("GET", f"/api/v1/namespaces/{NS}/endpoints/made-by-put")[0] == 404
    role = _role("made-by-put", [])
    assert uma.request("PUT", f"{R}/namespaces/{NS}/roles/made-by-put", role)[0] == 403
    assert admin.request("GET", f"{R}/namespaces/{NS}/roles/made-by-put")[0] == 404
    # ConfigMaps are never created by PUT (no AllowCreateOnUpdate): 404 whatever she holds.
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "made-by-put"}}
    assert uma.request("PUT", f"/api/v1/namespaces/{NS}/configmaps/made-by-put", cm)[0] == 404
    assert admin.request("PUT", f"/api/v1/namespaces/{NS}/configmaps/made-by-put", cm)[0] == 404
    # Legitimate: with create too, the PUT creates (201) and then updates (200).
    _grant(admin, "uma-create", [{"apiGroups": [""], "resources": ["endpoints"], "verbs": ["create"]}])
    assert admin.request("POST", f"{R}/namespaces/{NS}/rolebindings",
                         _binding("uma-create-too", "Role", "uma-create-grant", "uma"))[0] == 201
    assert uma.request("PUT", f"/api/v1/namespaces/{NS}/endpoints/made-by-put", ep)[0] == 201
    assert uma.request("PUT", f"/api/v1/namespaces/{NS}/endpoints/made-by-put", ep)[0] == 200


@pytest.mark.threat("K-RBAC-ESCALATION")
def test_prefix_url_grant_does_not_cover_the_bare_path(env):
    # /apis itself is every authenticated user's (system:discovery), so the check is
    # shown on a path nobody holds by default: /debug/* does not cover /debug.
    cloud, root, admin = env
    pat = user_api(cloud, "pat", out_dir=root)
    _grant(admin, "pat", [{"apiGroups": [RBAC], "resources": ["clusterroles"], "verbs": ["create"]},
                          {"nonResourceURLs": ["/debug/*"], "verbs": ["get"]},
                          {"nonResourceURLs": ["/logs/**"], "verbs": ["get"]}], cluster=True)
    s, err = pat.request("POST", f"{R}/clusterroles", _role("bare-debug", [
        {"nonResourceURLs": ["/debug"], "verbs": ["get"]}], None))
    assert s == 403 and "/debug" in err["message"], err
    assert pat.request("POST", f"{R}/clusterroles", _role("all-urls", [
        {"nonResourceURLs": ["*"], "verbs": ["get"]}], None))[0] == 403
    # The authorizer reads the grant the same way: /debug is not hers, /debug/pprof is.
    assert pat.request("GET", "/debug")[0] == 403
    assert pat.request("GET", "/debug/pprof")[0] != 403
    # Legitimate: a path under the prefix. Kubernetes trims every trailing "*", so
    # /logs/** is the prefix /logs/ as well (kedge read it as the literal prefix "/logs/*").
    assert pat.request("POST", f"{R}/clusterroles", _role("debug-pprof", [
        {"nonResourceURLs": ["/debug/pprof"], "verbs": ["get"]}], None))[0] == 201
    assert pat.request("POST", f"{R}/clusterroles", _role("logs-kedge", [
        {"nonResourceURLs": ["/logs/kedge"], "verbs": ["get"]}], None))[0] == 201
    assert pat.request("GET", "/logs/kedge")[0] != 403
    assert pat.request("GET", "/logs")[0] == 403


@pytest.mark.threat("K-RBAC-ESCALATION")
def test_namespace_admin_holds_edit_and_can_delegate_it(env):
    cloud, root, admin = env
    nora = user_api(cloud, "nora", out_dir=root)
    assert admin.request("POST", f"{R}/namespaces/{NS}/rolebindings",
                         _binding("nora-admin", "ClusterRole", "admin", "nora"))[0] == 201
    # admin aggregates edit (itself aggregated): its holder may write configmaps ...
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "by-nora"}}
    assert nora.request("POST", f"/api/v1/namespaces/{NS}/configmaps", cm)[0] == 201
    # ... and bind edit in her namespace, but not cluster-admin, nor anywhere else.
    assert nora.request("POST", f"{R}/namespaces/{NS}/rolebindings",
                        _binding("nora-edit", "ClusterRole", "edit", "nora-helper"))[0] == 201
    assert nora.request("POST", f"{R}/namespaces/{NS}/rolebindings",
                        _binding("nora-root", "ClusterRole", "cluster-admin", "nora"))[0] == 403
    assert nora.request("POST", f"{R}/clusterrolebindings",
                        _binding("nora-root", "ClusterRole", "edit", "nora", None))[0] == 403
