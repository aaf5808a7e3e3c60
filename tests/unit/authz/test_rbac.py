"""RBAC semantics, re-expressing the cases of Kubernetes' rbac_test.go and rule_test.go."""

from __future__ import annotations

import logging

import pytest

from kedge.authz import rbac
from kedge.authz.rbac import (
    Attributes, Policy, Rule, authorize, binding_allowed, escalate_allowed, rule_allows, uncovered,
)

RBAC = "rbac.authorization.k8s.io"


def role(name, rules, ns=None, kind="Role", labels=None, aggregation=None):
    meta = {"name": name}
    if ns:
        meta["namespace"] = ns
    if labels:
        meta["labels"] = labels
    obj = {"kind": kind, "metadata": meta, "rules": rules}
    if aggregation:
        obj["aggregationRule"] = {"clusterRoleSelectors": aggregation}
    return obj


def binding(name, ref_kind, ref_name, subjects, ns=None):
    meta = {"name": name}
    if ns:
        meta["namespace"] = ns
    return {"metadata": meta, "roleRef": {"apiGroup": RBAC, "kind": ref_kind, "name": ref_name},
            "subjects": subjects}


def user(name):
    return {"kind": "User", "apiGroup": RBAC, "name": name}


def group(name):
    return {"kind": "Group", "apiGroup": RBAC, "name": name}


def attrs(u="alice", groups=(), verb="get", ns="", group="", resource="pods", sub="", name="", **kw):
    return Attributes(user=u, groups=tuple(groups), verb=verb, namespace=ns, api_group=group,
                      resource=resource, subresource=sub, name=name, **kw)


@pytest.mark.parametrize("rule,request_attrs,allowed", [
    ({"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]}, attrs(), True),
    ({"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]}, attrs(verb="list"), False),
    ({"verbs": ["*"], "apiGroups": [""], "resources": ["pods"]}, attrs(verb="delete"), True),
    ({"verbs": ["get"], "apiGroups": ["apps"], "resources": ["pods"]}, attrs(), False),
    ({"verbs": ["get"], "apiGroups": ["*"], "resources": ["pods"]}, attrs(group="apps"), True),
    # subresources are separate resources
    ({"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]}, attrs(sub="status"), False),
    ({"verbs": ["get"], "apiGroups": [""], "resources": ["pods/status"]}, attrs(sub="status"), True),
    ({"verbs": ["get"], "apiGroups": [""], "resources": ["pods/status"]}, attrs(), False),
    ({"verbs": ["get"], "apiGroups": ["*"], "resources": ["*/scale"]}, attrs(group="apps", resource="deployments", sub="scale"), True),
    ({"verbs": ["get"], "apiGroups": ["*"], "resources": ["*/scale"]}, attrs(resource="deployments"), False),
    ({"verbs": ["get"], "apiGroups": [""], "resources": ["*"]}, attrs(sub="log"), True),
    # resourceNames
    ({"verbs": ["get"], "apiGroups": [""], "resources": ["pods"], "resourceNames": ["a"]}, attrs(name="a"), True),
    ({"verbs": ["get"], "apiGroups": [""], "resources": ["pods"], "resourceNames": ["a"]}, attrs(name="b"), False),
    ({"verbs": ["list"], "apiGroups": [""], "resources": ["pods"], "resourceNames": ["a"]}, attrs(verb="list"), False),
    # non-resource URLs
    ({"verbs": ["get"], "nonResourceURLs": ["/apis/*"]},
     Attributes(user="a", verb="get", resource_request=False, path="/apis/foo"), True),
    ({"verbs": ["get"], "nonResourceURLs": ["/apis"]},
     Attributes(user="a", verb="get", resource_request=False, path="/apis/foo"), False),
    ({"verbs": ["get"], "nonResourceURLs": ["*"]},
     Attributes(user="a", verb="get", resource_request=False, path="/anything"), True),
    ({"verbs": ["post"], "nonResourceURLs": ["*"]},
     Attributes(user="a", verb="get", resource_request=False, path="/x"), False),
    # a resource rule never matches a non-resource request and vice versa
    ({"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]},
     Attributes(user="a", verb="get", resource_request=False, path="/x"), False),
    ({"verbs": ["*"], "nonResourceURLs": ["*"]}, attrs(), False),
])
def test_rule_matching(rule, request_attrs, allowed):
    assert rule_allows(request_attrs, Rule.from_dict(rule)) is allowed


def _policy():
    return Policy.build(
        cluster_roles=[role("pod-reader", [{"verbs": ["get", "list"], "apiGroups": [""], "resources": ["pods"]}],
                            kind="ClusterRole"),
                       role("agg", [], kind="ClusterRole",
                            aggregation=[{"matchLabels": {"agg": "yes"}}]),
                       role("piece", [{"verbs": ["get"], "apiGroups": [""], "resources": ["secrets"]}],
                            kind="ClusterRole", labels={"agg": "yes"})],
        roles=[role("cm-writer", [{"verbs": ["*"], "apiGroups": [""], "resources": ["configmaps"]}], ns="a")],
        cluster_role_bindings=[binding("readers", "ClusterRole", "pod-reader", [group("readers")]),
                               binding("agg", "ClusterRole", "agg", [user("agg-user")])],
        role_bindings=[binding("w", "Role", "cm-writer", [user("bob")], ns="a"),
                       binding("r", "ClusterRole", "pod-reader", [user("carol")], ns="a"),
                       binding("sa", "ClusterRole", "pod-reader",
                               [{"kind": "ServiceAccount", "name": "robot"}], ns="a")],
    )


def test_unbound_user_is_denied():
    assert not authorize(attrs(u="nobody", ns="a"), _policy()).allowed


def test_group_binding_grants_cluster_wide():
    assert authorize(attrs(u="x", groups=["readers"], ns="zzz"), _policy()).allowed


def test_role_in_one_namespace_grants_nothing_in_another():
    p = _policy()
    assert authorize(attrs(u="bob", ns="a", resource="configmaps", verb="create"), p).allowed
    assert not authorize(attrs(u="bob", ns="b", resource="configmaps", verb="create"), p).allowed
    assert not authorize(attrs(u="bob", resource="configmaps", verb="list"), p).allowed  # all namespaces


def test_rolebinding_to_clusterrole_is_namespace_scoped():
    p = _policy()
    assert authorize(attrs(u="carol", ns="a"), p).allowed
    assert not authorize(attrs(u="carol", ns="b"), p).allowed


def test_service_account_subject_defaults_to_binding_namespace():
    p = _policy()
    assert authorize(attrs(u="system:serviceaccount:a:robot", ns="a"), p).allowed
    assert not authorize(attrs(u="system:serviceaccount:b:robot", ns="a"), p).allowed


def test_aggregation_rule_collects_labelled_roles():
    p = _policy()
    assert authorize(attrs(u="agg-user", resource="secrets"), p).allowed
    assert not authorize(attrs(u="agg-user", resource="pods"), p).allowed


def test_binding_to_a_missing_role_grants_nothing():
    p = Policy.build(role_bindings=[binding("x", "Role", "missing", [user("dan")], ns="a")])
    assert not authorize(attrs(u="dan", ns="a"), p).allowed


@pytest.mark.parametrize("owner,servant,covered", [
    ([{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}],
     [{"verbs": ["get"], "apiGroups": ["x"], "resources": ["y"]}], True),
    ([{"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]}],
     [{"verbs": ["get", "list"], "apiGroups": [""], "resources": ["pods"]}], False),
    ([{"verbs": ["get"], "apiGroups": [""], "resources": ["pods"], "resourceNames": ["a"]}],
     [{"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]}], False),
    ([{"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]}],
     [{"verbs": ["get"], "apiGroups": [""], "resources": ["pods"], "resourceNames": ["a"]}], True),
    ([{"verbs": ["get"], "apiGroups": [""], "resources": ["*/status"]}],
     [{"verbs": ["get"], "apiGroups": [""], "resources": ["pods/status"]}], True),
    ([{"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]}],
     [{"verbs": ["get"], "apiGroups": [""], "resources": ["*"]}], False),
    ([{"verbs": ["get"], "nonResourceURLs": ["/api/*"]}], [{"verbs": ["get"], "nonResourceURLs": ["/api/v1"]}], True),
    ([{"verbs": ["get"], "nonResourceURLs": ["/api"]}], [{"verbs": ["get"], "nonResourceURLs": ["/api/*"]}], False),
    # split across two owner rules still covers
    ([{"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]},
      {"verbs": ["list"], "apiGroups": [""], "resources": ["pods"]}],
     [{"verbs": ["get", "list"], "apiGroups": [""], "resources": ["pods"]}], True),
])
def test_covers(owner, servant, covered):
    missing = uncovered([Rule.from_dict(r) for r in owner], [Rule.from_dict(r) for r in servant])
    assert (not missing) is covered


def test_escalation_refused_for_role_with_more_than_user_holds():
    p = _policy()
    wider = [Rule.from_dict({"verbs": ["*"], "apiGroups": [""], "resources": ["secrets"]})]
    narrow = [Rule.from_dict({"verbs": ["get"], "apiGroups": [""], "resources": ["configmaps"]})]
    assert not escalate_allowed(p, "bob", (), "a", "Role", "x", wider).allowed
    assert escalate_allowed(p, "bob", (), "a", "Role", "x", narrow).allowed
    # bob's namespace rights do not count in another namespace
    assert not escalate_allowed(p, "bob", (), "b", "Role", "x", narrow).allowed
    assert escalate_allowed(p, "root", ("system:masters",), "b", "Role", "x", wider).allowed


def test_escalate_verb_allows_writing_wider_roles():
    p = Policy.build(
        cluster_roles=[role("esc", [{"verbs": ["escalate"], "apiGroups": [RBAC], "resources": ["roles"]}],
                            kind="ClusterRole")],
        role_bindings=[binding("e", "ClusterRole", "esc", [user("eve")], ns="a")])
    wider = [Rule.from_dict({"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]})]
    assert escalate_allowed(p, "eve", (), "a", "Role", "x", wider).allowed
    assert not escalate_allowed(p, "eve", (), "b", "Role", "x", wider).allowed


def test_binding_requires_holding_the_roles_permissions_or_bind():
    p = _policy()
    ref_reader = {"apiGroup": RBAC, "kind": "ClusterRole", "name": "pod-reader"}
    ref_writer = {"apiGroup": RBAC, "kind": "Role", "name": "cm-writer"}
    assert binding_allowed(p, "carol", (), "a", ref_reader).allowed
    assert not binding_allowed(p, "carol", (), "a", ref_writer).allowed
    assert not binding_allowed(p, "carol", (), "", ref_reader).allowed  # cluster binding needs cluster rights
    p2 = Policy.build(
        cluster_roles=list(p.cluster_roles.values()) + [role(
            "binder", [{"verbs": ["bind"], "apiGroups": [RBAC], "resources": ["roles"],
                        "resourceNames": ["cm-writer"]}], kind="ClusterRole")],
        roles=list(p.roles.values()),
        role_bindings=[binding("b", "ClusterRole", "binder", [user("frank")], ns="a")])
    assert binding_allowed(p2, "frank", (), "a", ref_writer).allowed
    assert not binding_allowed(p2, "frank", (), "a", ref_reader).allowed


# -- fuzzing regression: a malformed aggregationRule grants nothing and breaks nothing -----

_SECRETS = [{"verbs": ["get"], "apiGroups": [""], "resources": ["secrets"]}]


@pytest.mark.parametrize("agg_rule", [
    {"clusterRoleSelectors": [{"matchLabels": [1]}]},
    {"clusterRoleSelectors": [{"matchExpressions": 5}]},
    {"clusterRoleSelectors": [{"matchExpressions": [{"operator": []}]}]},
    {"clusterRoleSelectors": [{"matchLabels": {"agg": "yes"}}, {"matchExpressions": [{"key": "a", "values": 1}]}]},
    {"clusterRoleSelectors": 5},
    {"clusterRoleSelectors": {"matchLabels": {"agg": "yes"}}},
    ["not", "an", "object"],
])
def test_malformed_aggregation_rule_grants_nothing_and_does_not_break_authorization(agg_rule):
    bad = role("bad-agg", [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}], kind="ClusterRole")
    bad["aggregationRule"] = agg_rule
    p = Policy.build(
        cluster_roles=[bad, role("piece", _SECRETS, kind="ClusterRole", labels={"agg": "yes"}),
                       role("pod-reader", [{"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]}],
                            kind="ClusterRole")],
        cluster_role_bindings=[binding("b1", "ClusterRole", "bad-agg", [user("alice")]),
                               binding("b2", "ClusterRole", "pod-reader", [user("alice")])])
    assert authorize(attrs(resource="pods"), p).allowed          # her other binding still works
    assert not authorize(attrs(resource="secrets"), p).allowed   # nothing aggregated, fail closed
    assert not authorize(attrs(resource="nodes"), p).allowed     # nor the role's own rules
    assert p.cluster_role_rules("bad-agg") == ()


def test_malformed_aggregation_rule_is_logged_once_not_per_authorization(caplog):
    bad = role("bad-agg-logged", [], kind="ClusterRole")
    bad["metadata"]["resourceVersion"] = "41"
    bad["aggregationRule"] = {"clusterRoleSelectors": [{"matchLabels": [1]}]}
    with caplog.at_level(logging.WARNING, logger=rbac.__name__):
        for _ in range(3):  # the API server rebuilds its Policy after every RBAC write
            p = Policy.build(cluster_roles=[bad],
                             cluster_role_bindings=[binding("b", "ClusterRole", "bad-agg-logged", [user("alice")])])
            for _ in range(3):
                assert not authorize(attrs(), p).allowed
    warnings = [r for r in caplog.records if "bad-agg-logged" in r.getMessage()]
    assert len(warnings) == 1


def test_roles_with_malformed_labels_are_never_aggregated():
    agg = role("agg2", [], kind="ClusterRole", aggregation=[{"matchExpressions": [{"key": "x", "operator": "DoesNotExist"}]}])
    odd_labels = role("odd", _SECRETS, kind="ClusterRole")
    odd_labels["metadata"]["labels"] = ["x"]
    odd_meta = role("odd-meta", [{"verbs": ["get"], "apiGroups": [""], "resources": ["nodes"]}], kind="ClusterRole")
    odd_meta["metadata"] = {"name": "odd-meta", "labels": {"y": 1}}
    plain = role("plain", [{"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]}], kind="ClusterRole")
    p = Policy.build(cluster_roles=[agg, odd_labels, odd_meta, plain],
                     cluster_role_bindings=[binding("b", "ClusterRole", "agg2", [user("alice")])])
    assert authorize(attrs(resource="pods"), p).allowed       # no label x: selected
    assert not authorize(attrs(resource="secrets"), p).allowed
    assert not authorize(attrs(resource="nodes"), p).allowed


# -- review findings: Kubernetes' order and lookups in the escalation checks -------------

def test_binding_to_a_missing_role_is_not_found_unless_bind_is_held():
    p = Policy.build(role_bindings=[binding("w", "ClusterRole", "writer", [user("mal")], ns="a")],
                     cluster_roles=[role("writer", [{"verbs": ["create"], "apiGroups": [RBAC],
                                                      "resources": ["rolebindings"]}], kind="ClusterRole")])
    d = binding_allowed(p, "mal", (), "a", {"apiGroup": RBAC, "kind": "Role", "name": "later"})
    assert not d.allowed and d.not_found == ("roles", "later")
    d = binding_allowed(p, "mal", (), "", {"apiGroup": RBAC, "kind": "ClusterRole", "name": "later"})
    assert not d.allowed and d.not_found == ("clusterroles", "later")
    assert binding_allowed(p, "root", ("system:masters",), "a", {"apiGroup": RBAC, "kind": "Role",
                                                                  "name": "later"}).allowed
    binder = Policy.build(
        cluster_roles=[role("b", [{"verbs": ["bind"], "apiGroups": [RBAC], "resources": ["roles"],
                                   "resourceNames": ["later"]}], kind="ClusterRole")],
        role_bindings=[binding("b", "ClusterRole", "b", [user("mal")], ns="a")])
    assert binding_allowed(binder, "mal", (), "a", {"apiGroup": RBAC, "kind": "Role", "name": "later"}).allowed


def test_escalate_narrowed_by_name_does_not_apply_to_a_create():
    p = Policy.build(
        cluster_roles=[role("esc", [{"verbs": ["escalate"], "apiGroups": [RBAC], "resources": ["roles"],
                                     "resourceNames": ["x"]}], kind="ClusterRole")],
        role_bindings=[binding("e", "ClusterRole", "esc", [user("eve")], ns="a")])
    wide = [Rule.from_dict({"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]})]
    assert not escalate_allowed(p, "eve", (), "a", "Role", "", wide).allowed  # a create names nothing
    assert escalate_allowed(p, "eve", (), "a", "Role", "x", wide).allowed     # an update of x


def test_aggregation_gathers_aggregated_roles_until_nothing_changes():
    pods = [{"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]}]
    p = Policy.build(cluster_roles=[
        role("top", [], kind="ClusterRole", aggregation=[{"matchLabels": {"to-top": "y"}}]),
        role("mid", [], kind="ClusterRole", labels={"to-top": "y"}, aggregation=[{"matchLabels": {"to-mid": "y"}}]),
        role("leaf", pods, kind="ClusterRole", labels={"to-mid": "y"}),
        role("loop", [], kind="ClusterRole", labels={"to-mid": "y"}, aggregation=[{"matchLabels": {"to-top": "y"}}]),
    ], cluster_role_bindings=[binding("t", "ClusterRole", "top", [user("alice")])])
    assert authorize(attrs(), p).allowed
    assert p.cluster_role_rules("loop") == p.cluster_role_rules("top") == (Rule.from_dict(pods[0]),)


def test_rule_and_subject_validation_follow_kubernetes():
    assert rbac.validate_rule({"verbs": ["get"], "nonResourceURLs": ["/x"], "resources": ["pods"]},
                              namespaced=False)
    assert rbac.validate_rule({"verbs": ["get"], "nonResourceURLs": ["/x"]}, namespaced=True)
    assert rbac.validate_rule({"verbs": ["get"], "resources": ["pods"]}, namespaced=True)  # no apiGroups
    assert not rbac.validate_rule({"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]}, namespaced=True)
    s = {"kind": "User", "name": "u"}
    rbac.default_subject(s)
    assert s["apiGroup"] == RBAC and not rbac.validate_subject(s, namespaced=True)
    assert rbac.validate_subject({"kind": "User", "name": "u", "apiGroup": "x"}, namespaced=True)
    assert rbac.validate_subject({"kind": "ServiceAccount", "name": "sa"}, namespaced=False)  # needs namespace
    assert rbac.validate_subject({"kind": "Robot", "name": "r"}, namespaced=True)


def test_only_gc_field_updates_are_recognised():
    old = {"metadata": {"name": "r", "resourceVersion": "3"}, "rules": []}
    assert rbac.only_gc_fields_change({"metadata": {"name": "r", "finalizers": ["f"]}, "rules": []}, old)
    assert not rbac.only_gc_fields_change({"metadata": {"name": "r", "labels": {"a": "b"}}, "rules": []}, old)
    assert not rbac.only_gc_fields_change(old, None)


def test_a_subject_whose_name_is_not_a_string_names_nobody():
    """A stored subject name that is not a string matches no one, not even the service
    account its formatted value spells (``5`` -> ``system:serviceaccount:ns:5``)."""
    sa_user = "system:serviceaccount:ns:5"
    assert rbac.subject_applies({"kind": "ServiceAccount", "name": "5", "namespace": "ns"}, sa_user, (), "ns")
    assert not rbac.subject_applies({"kind": "ServiceAccount", "name": 5, "namespace": "ns"}, sa_user, (), "ns")
    assert not rbac.subject_applies({"kind": "ServiceAccount", "name": 5}, sa_user, (), "ns")
