"""``kedge manifests``: golden structure checks of the generated CRDs and RBAC (pure core + CLI)."""

from __future__ import annotations

import json

import pytest
import yaml

from kedge.authz.bootstrap import CLOUDCORE_ROLE as EMBEDDED_ROLE
from kedge.authz.bootstrap import bootstrap_cluster_roles
from kedge.authz.rbac import Attributes, Policy, authorize
from kedge.cli.main import run
from kedge.errors import ConfigError
from kedge.manifests import (
    CLOUDCORE_ROLE, IMPERSONATE_ROLE, ManifestOptions, build_objects, render,
)

USER = "kedge-remote-cloudcore"


def objs(*nodes: str, **kw) -> list[dict]:
    return build_objects(ManifestOptions(nodes=nodes, **kw))


def by_kind_name(items: list[dict]) -> dict[tuple[str, str], dict]:
    return {(o["kind"], o["metadata"]["name"]): o for o in items}


def walk_strings(value):
    if isinstance(value, dict):
        for k, v in value.items():
            yield k
            yield from walk_strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from walk_strings(v)
    elif isinstance(value, str):
        yield value


class NoAliasLoader(yaml.SafeLoader):
    """Refuses YAML aliases, as kedge's API server does."""

    def compose_node(self, parent, index):  # type: ignore[override]
        if self.check_event(yaml.AliasEvent):
            raise AssertionError("YAML alias in generated manifests")
        return super().compose_node(parent, index)


def test_objects_come_in_apply_order():
    kinds = [(o["kind"], o["metadata"]["name"]) for o in objs("edge-1")]
    assert kinds == [
        ("Namespace", "kedge-system"),
        ("CustomResourceDefinition", "devicemodels.devices.kubeedge.io"),
        ("CustomResourceDefinition", "devices.devices.kubeedge.io"),
        ("ClusterRole", CLOUDCORE_ROLE),
        ("ClusterRole", IMPERSONATE_ROLE),
        ("ClusterRoleBinding", CLOUDCORE_ROLE),
        ("ClusterRoleBinding", IMPERSONATE_ROLE),
    ]


def test_crds_are_kubeedge_v1beta1_device_and_devicemodel():
    crds = {o["metadata"]["name"]: o for o in objs() if o["kind"] == "CustomResourceDefinition"}
    for name, kind, plural in (("devices.devices.kubeedge.io", "Device", "devices"),
                               ("devicemodels.devices.kubeedge.io", "DeviceModel", "devicemodels")):
        crd = crds[name]
        assert crd["apiVersion"] == "apiextensions.k8s.io/v1"
        spec = crd["spec"]
        assert (spec["group"], spec["scope"]) == ("devices.kubeedge.io", "Namespaced")
        assert (spec["names"]["kind"], spec["names"]["plural"], spec["names"]["listKind"]) == (kind, plural,
                                                                                              f"{kind}List")
        assert [(v["name"], v["served"], v["storage"]) for v in spec["versions"]] == [("v1beta1", True, True)]
        assert spec["versions"][0]["schema"]["openAPIV3Schema"]["type"] == "object"
    device_spec = crds["devices.devices.kubeedge.io"]["spec"]["versions"][0]
    assert device_spec["subresources"] == {"status": {}}
    props = device_spec["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    assert {"deviceModelRef", "nodeName", "protocol", "properties"} <= set(props)


def test_cloudcore_role_is_exactly_the_embedded_role():
    embedded = next(r for r in bootstrap_cluster_roles() if r["metadata"]["name"] == EMBEDDED_ROLE)
    role = by_kind_name(objs("edge-1"))[("ClusterRole", CLOUDCORE_ROLE)]
    assert role["rules"] == embedded["rules"]
    granted = {(g, r) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"]}
    assert not {("", "secrets"), ("", "configmaps"), ("", "serviceaccounts/token")} & granted
    assert not any("impersonate" in rule["verbs"] or "escalate" in rule["verbs"] or "bind" in rule["verbs"]
                   for rule in role["rules"])


def test_impersonation_role_names_each_node_exactly_and_only_node_groups():
    role = by_kind_name(objs("edge-b", "edge-a"))[("ClusterRole", IMPERSONATE_ROLE)]
    assert role["rules"] == [
        {"apiGroups": [""], "resources": ["groups"], "verbs": ["impersonate"],
         "resourceNames": ["system:authenticated", "system:nodes"]},
        {"apiGroups": [""], "resources": ["users"], "verbs": ["impersonate"],
         "resourceNames": ["system:node:edge-a", "system:node:edge-b"]},
    ]


def test_without_nodes_there_is_no_users_rule_and_the_output_says_so():
    role = by_kind_name(objs())[("ClusterRole", IMPERSONATE_ROLE)]
    assert [r["resources"] for r in role["rules"]] == [["groups"]]
    text = render(ManifestOptions())
    head = text.split("\n---\n", 1)[0]
    assert "WARNING" in head and "--node" in head
    assert "WARNING" not in render(ManifestOptions(nodes=("edge-1",))).split("\n---\n", 1)[0]


@pytest.mark.parametrize("nodes", [(), ("edge-1",), ("a", "b.c", "edge-3")])
def test_no_wildcard_anywhere_in_any_rule(nodes):
    for o in objs(*nodes):
        for rule in o.get("rules", []):
            for field in ("apiGroups", "resources", "verbs", "resourceNames", "nonResourceURLs"):
                assert not any("*" in v for v in rule.get(field, [])), (o["metadata"]["name"], rule)
    assert not any("*" in s for o in objs(*nodes) if o["kind"].startswith("ClusterRole") for s in walk_strings(o))


def test_bindings_bind_the_given_user_to_the_generated_roles():
    items = by_kind_name(objs("edge-1", cloudcore_user=USER))
    for role in (CLOUDCORE_ROLE, IMPERSONATE_ROLE):
        b = items[("ClusterRoleBinding", role)]
        assert b["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role}
        assert b["subjects"] == [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": USER}]


def test_service_account_user_becomes_a_service_account_subject():
    items = by_kind_name(objs("edge-1", cloudcore_user="system:serviceaccount:kedge-system:cloudcore"))
    assert items[("ServiceAccount", "cloudcore")]["metadata"]["namespace"] == "kedge-system"
    assert items[("ClusterRoleBinding", CLOUDCORE_ROLE)]["subjects"] == [
        {"kind": "ServiceAccount", "namespace": "kedge-system", "name": "cloudcore"}]


def test_service_account_outside_the_generated_namespace_is_refused():
    with pytest.raises(ConfigError) as exc:
        ManifestOptions(cloudcore_user="system:serviceaccount:default:cloudcore")
    assert exc.value.code == "bad_user"
    opts = ManifestOptions(namespace="edge-ops", cloudcore_user="system:serviceaccount:edge-ops:cc")
    assert opts.service_account == ("edge-ops", "cc")


def test_generated_rbac_grants_exactly_what_cloudcore_needs():
    """Evaluated by kedge's own RBAC authorizer (Kubernetes semantics)."""
    items = objs("edge-x", cloudcore_user=USER)
    policy = Policy.build(cluster_roles=[o for o in items if o["kind"] == "ClusterRole"],
                          cluster_role_bindings=[o for o in items if o["kind"] == "ClusterRoleBinding"])

    def allowed(verb, resource, name="", group="", namespace="", user=USER):
        return authorize(Attributes(user=user, groups=("some-group", "system:authenticated"), verb=verb,
                                    resource=resource, name=name, api_group=group, namespace=namespace),
                         policy).allowed

    assert allowed("impersonate", "users", "system:node:edge-x")
    assert allowed("impersonate", "groups", "system:nodes")
    assert allowed("impersonate", "groups", "system:authenticated")
    for name in ("system:node:edge-y", "system:node:edge-x2", "kedge-admin", "system:admin", "system:node:"):
        assert not allowed("impersonate", "users", name), name
    assert not allowed("impersonate", "groups", "system:masters")
    assert not allowed("impersonate", "serviceaccounts", "default")
    assert not allowed("impersonate", "uids", "x", group="authentication.k8s.io")
    assert allowed("list", "nodes") and allowed("watch", "pods")
    assert allowed("patch", "devices/status", "d", group="devices.kubeedge.io", namespace="default")
    for verb, res in (("get", "secrets"), ("list", "configmaps"), ("create", "pods"), ("update", "nodes"),
                      ("create", "clusterrolebindings")):
        assert not allowed(verb, res, namespace="default"), (verb, res)
    assert not allowed("impersonate", "users", "system:node:edge-x", user="someone-else")


def test_output_is_deterministic_and_independent_of_flag_order():
    a = render(ManifestOptions(nodes=("edge-2", "edge-1", "edge-2"), cloudcore_user=USER))
    b = render(ManifestOptions(nodes=("edge-1", "edge-2"), cloudcore_user=USER))
    assert a == b == render(ManifestOptions(nodes=("edge-1", "edge-2"), cloudcore_user=USER))
    j = render(ManifestOptions(nodes=("edge-1",)), "json")
    assert j == render(ManifestOptions(nodes=("edge-1",)), "json")


def test_yaml_and_json_carry_the_same_objects_and_yaml_has_no_aliases():
    opts = ManifestOptions(nodes=("edge-1",), cloudcore_user=USER)
    docs = [d for d in yaml.load_all(render(opts, "yaml"), Loader=NoAliasLoader) if d is not None]  # nosec B506 - SafeLoader subclass
    lst = json.loads(render(opts, "json"))
    assert (lst["apiVersion"], lst["kind"]) == ("v1", "List")
    assert docs == lst["items"] == json.loads(json.dumps(build_objects(opts)))


@pytest.mark.parametrize("node", ["", "Edge-1", "*", "edge_1", "a:b", "system:node:x", "-edge", "x" * 254,
                                  "edge-1\n", "a/b"])
def test_invalid_node_names_are_refused(node):
    with pytest.raises(ConfigError) as exc:
        ManifestOptions(nodes=(node,))
    assert exc.value.code == "bad_node_name"


def test_node_list_must_be_a_sequence_and_is_bounded():
    with pytest.raises(ConfigError):
        ManifestOptions(nodes="edge-1")  # type: ignore[arg-type]
    with pytest.raises(ConfigError) as exc:
        ManifestOptions(nodes=tuple(f"n{i}" for i in range(10_001)))
    assert exc.value.code == "too_many_nodes"


@pytest.mark.parametrize("ns", ["", "Kedge", "a.b", "x" * 64, "-a", "kedge_system"])
def test_invalid_namespace_is_refused(ns):
    with pytest.raises(ConfigError) as exc:
        ManifestOptions(namespace=ns)
    assert exc.value.code == "bad_namespace"


@pytest.mark.parametrize("user", ["", " x", "a\nb", "system:node:edge-1", "system:anonymous",
                                  "system:unauthenticated", "system:serviceaccount:ns", "system:serviceaccount:NS:a",
                                  "system:serviceaccount:ns:A", "x" * 254])
def test_cloudcore_user_that_would_hand_out_its_powers_is_refused(user):
    with pytest.raises(ConfigError) as exc:
        ManifestOptions(cloudcore_user=user)
    assert exc.value.code == "bad_user"


def test_unknown_format_is_refused():
    with pytest.raises(ConfigError):
        render(ManifestOptions(), "xml")


# -- the CLI shell -----------------------------------------------------------------------------


def test_cli_prints_yaml_and_notes_missing_nodes_on_stderr(capsys):
    assert run(["manifests"]) == 0
    out, err = capsys.readouterr()
    assert "no --node given" in err
    assert out == render(ManifestOptions())


def test_cli_json_with_nodes_has_no_note(capsys):
    assert run(["manifests", "--format", "json", "--node", "edge-1", "--cloudcore-user", USER,
                "--namespace", "edge-ops"]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    items = json.loads(out)["items"]
    assert items[0] == {"apiVersion": "v1", "kind": "Namespace",
                        "metadata": {"name": "edge-ops", "labels": items[0]["metadata"]["labels"]}}
    imp = by_kind_name(items)[("ClusterRole", IMPERSONATE_ROLE)]
    assert imp["rules"][1]["resourceNames"] == ["system:node:edge-1"]


@pytest.mark.parametrize("argv", [["manifests", "--node", "EDGE"], ["manifests", "--format", "toml"],
                                  ["manifests", "--cloudcore-user", "system:node:edge-1"]])
def test_cli_usage_errors_exit_2(argv, capsys):
    assert run(argv) == 2
    assert capsys.readouterr().out == ""
