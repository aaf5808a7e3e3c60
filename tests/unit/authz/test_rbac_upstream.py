"""Kubernetes' own RBAC test tables, kept as data under data/rbac_*.yaml, run against kedge.

Each file's header names the upstream file and commit its cases come from. Every case
runs; a case kedge cannot express carries ``not_applicable: <reason>`` and is counted,
never silently dropped. ``test_every_upstream_case_is_accounted_for`` prints the totals
(ran / matched / not applicable) and fails if any applicable case is missing a result.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml

from kedge.apiserver.api import API, Request, User
from kedge.authz.rbac import (
    RBAC_GROUP,
    Attributes,
    Policy,
    Rule,
    applicable_rules,
    authorize,
    non_resource_url_matches,
    rule_allows,
    subject_applies,
    uncovered,
)
from kedge.store.sqlite import Store

DATA = Path(__file__).parent / "data"
TALLY: Counter[str] = Counter()


def _load(name: str) -> dict[str, Any]:
    return yaml.safe_load((DATA / name).read_text())


COMPARATOR = _load("rbac_policy_comparator.yaml")
AUTHORIZER = _load("rbac_authorizer.yaml")
RESOLUTION = _load("rbac_rule_resolution.yaml")
INTEGRATION = _load("rbac_integration.yaml")


def _rule(d: dict[str, Any]) -> Rule:
    return Rule.from_dict(d)


def _piece(r: Rule) -> tuple[tuple[str, ...], ...]:
    return (r.verbs, r.api_groups, r.resources, r.resource_names, r.non_resource_urls)


def _record(matched: bool) -> None:
    TALLY["ran"] += 1
    TALLY["matched" if matched else "mismatched"] += 1


# -- policy_comparator_test.go ----------------------------------------------------------

@pytest.mark.parametrize("case", COMPARATOR["covers"], ids=lambda c: c["name"])
def test_covers(case):
    missing = uncovered([_rule(r) for r in case["owner"]], [_rule(r) for r in case["servant"]])
    got = (not missing, sorted(_piece(m) for m in missing))
    want = (case["covered"], sorted(_piece(_rule(r)) for r in case["uncovered"]))
    _record(got == want)
    assert got == want


@pytest.mark.parametrize("owner,path,covered", COMPARATOR["url_covers"], ids=lambda v: str(v))
def test_non_resource_url_covers(owner, path, covered):
    owner_rule = Rule(("get",), non_resource_urls=(owner,))
    got = not uncovered([owner_rule], [Rule(("get",), non_resource_urls=(path,))])
    # the authorizer reads a rule's URL the same way the comparator does
    matches = non_resource_url_matches(owner_rule, path)
    _record(got is covered and matches is covered)
    assert got is covered and matches is covered


# -- rbac_test.go: RuleAllows ------------------------------------------------------------

def _rule_match_cases():
    for case in AUTHORIZER["rule_matches"]:
        for verb, group, resource, sub, allowed in case.get("resource_requests", ()):
            attrs = Attributes(user="u", verb=verb, api_group=group, resource=resource, subresource=sub)
            yield pytest.param(case["rule"], attrs, allowed, id=f"{case['name']}:{verb}:{group}:{resource}/{sub}")
        for verb, path, allowed in case.get("nonresource_requests", ()):
            attrs = Attributes(user="u", verb=verb, resource_request=False, path=path)
            yield pytest.param(case["rule"], attrs, allowed, id=f"{case['name']}:{verb}:{path}")


@pytest.mark.parametrize("rule,attrs,allowed", list(_rule_match_cases()))
def test_rule_allows(rule, attrs, allowed):
    got = rule_allows(attrs, _rule(rule))
    _record(got is allowed)
    assert got is allowed


# -- rbac_test.go: TestAuthorizer -------------------------------------------------------

def _subject(text: str) -> dict[str, str]:
    kind, name = text.split(":", 1)
    return {"kind": kind, "name": name, **({"apiGroup": RBAC_GROUP} if kind in ("User", "Group") else {})}


def _object(d: dict[str, Any], kind: str) -> dict[str, Any]:
    meta = {"name": d.get("name", "")}
    if d.get("namespace"):
        meta["namespace"] = d["namespace"]
    obj: dict[str, Any] = {"kind": kind, "metadata": meta}
    if "rules" in d:
        obj["rules"] = d["rules"]
    if "roleRef" in d:
        obj["roleRef"] = {"apiGroup": RBAC_GROUP, **d["roleRef"]}
        obj["subjects"] = [_subject(s) if isinstance(s, str) else s for s in d.get("subjects", ())]
    return obj


def _policy(spec: dict[str, Any]) -> Policy:
    return Policy.build(
        cluster_roles=[_object(r, "ClusterRole") for r in spec.get("clusterRoles", ())],
        roles=[_object(r, "Role") for r in spec.get("roles", ())],
        cluster_role_bindings=[_object(b, "ClusterRoleBinding") for b in spec.get("clusterRoleBindings", ())],
        role_bindings=[_object(b, "RoleBinding") for b in spec.get("roleBindings", ())])


def _attrs(r: dict[str, Any]) -> Attributes:
    common = {"user": r.get("user", ""), "groups": tuple(r.get("groups", ())), "verb": r["verb"]}
    if "path" in r:
        return Attributes(resource_request=False, path=r["path"], **common)
    return Attributes(namespace=r.get("namespace", ""), api_group=r.get("apiGroup", ""), resource=r["resource"],
                      subresource=r.get("subresource", ""), **common)


def _authorizer_cases():
    for case in AUTHORIZER["authorizer"]:
        for want, key in ((True, "allow"), (False, "deny")):
            for i, r in enumerate(case[key]):
                yield pytest.param(case, r, want, id=f"{case['name']}:{key}{i}")


@pytest.mark.parametrize("case,request_,allowed", list(_authorizer_cases()))
def test_authorizer(case, request_, allowed):
    got = authorize(_attrs(request_), _policy(case)).allowed
    _record(got is allowed)
    assert got is allowed


# -- rule_test.go ---------------------------------------------------------------------

@pytest.mark.parametrize("case", RESOLUTION["rules_for"], ids=lambda c: f"{c['user']}@{c['namespace']}")
def test_rules_for(case):
    policy = _policy(RESOLUTION["policies"][case["policy"]])
    got = sorted(_piece(r) for r in applicable_rules(policy, case["user"], tuple(case.get("groups", ())),
                                                      case["namespace"]))
    want = sorted(_piece(_rule(r)) for r in case["rules"])
    _record(got == want)
    assert got == want


@pytest.mark.parametrize("case", RESOLUTION["applies_to"], ids=lambda c: c["name"])
def test_applies_to(case):
    groups, ns = tuple(case.get("groups", ())), case.get("namespace", "")
    hits = [i for i, s in enumerate(case["subjects"]) if subject_applies(s, case["user"], groups, ns)]
    got = (bool(hits), hits[0] if hits else None)
    want = (case["applies"], case.get("index"))
    _record(got == want)
    assert got == want


# -- test/integration/auth/rbac_test.go -------------------------------------------------

def _user(token: str) -> User:
    if token == "admin/system:masters":
        return User("admin", ("system:masters", "system:authenticated"))
    return User(token, ("system:authenticated",))


def _path(group: str, resource: str, namespace: str, name: str) -> str:
    path = "/api/v1" if not group else f"/apis/{group}/v1"
    if namespace:
        path += f"/namespaces/{namespace}"
    path += f"/{resource}"
    return path + (f"/{name}" if name else "")


def _send(api: API, user: User, method: str, path: str, body: Any) -> tuple[int, Any]:
    ctype = "application/json"
    if method == "APPLY":
        method, ctype = "PATCH", "application/apply-patch+yaml"
    raw = json.dumps(body).encode() if body is not None else b""
    resp = api.handle(Request(method, path, {"content-type": [ctype]}, raw, user))
    return resp.status, resp.body


def _bootstrap(api: API, case: dict[str, Any]) -> None:
    admin = _user("admin/system:masters")
    rbac = f"/apis/{RBAC_GROUP}/v1"
    writes = [("/api/v1/namespaces", {"metadata": {"name": ns}}) for ns in case.get("namespaces", ())]
    writes += [(f"{rbac}/clusterroles", {"metadata": {"name": r["name"]}, "rules": r["rules"]})
               for r in case.get("clusterRoles", ())]
    writes += [(f"{rbac}/clusterrolebindings", {"metadata": {"name": b["name"]}, "roleRef": b["roleRef"],
                                                "subjects": b["subjects"]})
               for b in case.get("clusterRoleBindings", ())]
    writes += [(f"{rbac}/namespaces/{b['namespace']}/rolebindings",
                {"metadata": {"name": b["name"]}, "roleRef": b["roleRef"], "subjects": b["subjects"]})
               for b in case.get("roleBindings", ())]
    for path, body in writes:
        status, text = _send(api, admin, "POST", path, body)
        assert status == 201, (path, status, text)


@pytest.mark.parametrize("case", INTEGRATION["cases"], ids=lambda c: c["name"])
def test_integration_sequence(case, tmp_path):
    store = Store(tmp_path / "api.db", synchronous="NORMAL")
    try:
        api = API(store, clock=lambda: 1_700_000_000.0)
        _bootstrap(api, case)
        failures = []
        for j, step in enumerate(case["requests"]):
            if step.get("not_applicable"):
                TALLY["not_applicable"] += 1
                TALLY["na: " + step["not_applicable"]] += 1
                continue
            token, method, group, resource, ns, name, body_key, want = step["request"]
            body = json.loads(json.dumps(INTEGRATION["bodies"][body_key])) if body_key else None
            status, text = _send(api, _user(token), method, _path(group, resource, ns, name), body)
            _record(status == want)
            if status != want:
                failures.append((j, token, method, resource, ns, name, want, status, text[:300]))
        assert not failures, failures
    finally:
        store.close()


def test_every_upstream_case_is_accounted_for(capsys):
    """Runs last in this module: the totals over every case above."""
    expected_na = sum(1 for c in INTEGRATION["cases"] for s in c["requests"] if s.get("not_applicable"))
    if TALLY["ran"] == 0:
        pytest.skip("run together with the table tests to count them")
    with capsys.disabled():
        reasons = {k[4:]: v for k, v in TALLY.items() if k.startswith("na: ")}
        print(f"\nupstream RBAC cases: ran {TALLY['ran']}, matched {TALLY['matched']}, "
              f"not applicable {TALLY['not_applicable']} {reasons}")
    assert TALLY["mismatched"] == 0
    assert TALLY["not_applicable"] == expected_na
