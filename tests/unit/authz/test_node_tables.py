"""Kubernetes' own node-authorizer and NodeRestriction test tables, replayed against kedge.

The cases live in ``data/*.yaml`` (facts and expected outcomes restated from the upstream
tests named in each file's header). Every case that applies to kedge must come out as it
does in Kubernetes; a case that cannot apply stays in the data with ``not_applicable`` and
is counted. :func:`test_table_counts` prints and pins the totals.
"""

from __future__ import annotations

import copy
import pathlib
from typing import Any

import pytest
import yaml

from kedge.authz.labels import parse_field_selector
from kedge.authz.node import NodeGraph, admit_node_request, authorize_node
from kedge.authz.rbac import Attributes

DATA = pathlib.Path(__file__).parent / "data"
ADMISSION = yaml.safe_load((DATA / "noderestriction_cases.yaml").read_text())
AUTHORIZER = yaml.safe_load((DATA / "node_authorizer_cases.yaml").read_text())

NODE_GROUPS = ("system:nodes", "system:authenticated")


# -- NodeRestriction -------------------------------------------------------------

def _user(name: str) -> tuple[str, tuple[str, ...]]:
    if name == "bob":
        return "bob", ()
    return f"system:node:{name}", NODE_GROUPS


def _build_pod(key: str, spec: dict[str, Any]) -> dict[str, Any]:
    """A pod as upstream's makeTestPod makes it (mirror pods with their owner reference)."""
    node = spec.get("node", "")
    meta: dict[str, Any] = {"name": spec.get("name", key), "namespace": "ns", "uid": "pod-uid"}
    if spec.get("labels"):
        meta["labels"] = dict(spec["labels"])
    if spec.get("mirror"):
        meta["annotations"] = {"kubernetes.io/config.mirror": "true"}
        meta["ownerReferences"] = [{"apiVersion": "v1", "kind": "Node", "name": node, "uid": f"{node}-uid",
                                    "controller": True}]
    if "ownerReferences" in spec:
        meta["ownerReferences"] = copy.deepcopy(spec["ownerReferences"])
    return {"metadata": meta, "spec": dict({"nodeName": node}, **copy.deepcopy(spec.get("spec", {})))}


def _build_node(key: str, value: str = "value", labels: tuple[str, ...] = ()) -> dict[str, Any]:
    fx = ADMISSION["fixtures"]["nodes"][key]
    meta: dict[str, Any] = {"name": fx["name"]}
    if "uid" in fx:
        meta["uid"] = fx["uid"]
    if labels:
        meta["labels"] = {k: value for s in labels for k in ADMISSION["fixtures"]["label_sets"][s]}
    spec = {k: copy.deepcopy(fx[k]) for k in ("configSource", "taints") if k in fx}
    return {"metadata": meta, "spec": spec}


def _pod_fixture(key: str) -> dict[str, Any]:
    return _build_pod(key, ADMISSION["fixtures"]["pods"][key])


def _token_request(spec: dict[str, Any]) -> dict[str, Any]:
    tr: dict[str, Any] = {"metadata": {"namespace": "ns"}, "spec": {"audiences": list(spec["audiences"])}}
    if spec["pod"]:
        tr["spec"]["boundObjectRef"] = {"kind": "Pod", "apiVersion": "v1", "name": spec["pod"], "uid": spec["uid"]}
    return tr


def _resolve(ref: Any, resource: str) -> Any:
    if ref is None:
        return None
    if isinstance(ref, str):
        return _build_node(ref) if resource == "/nodes" else _pod_fixture(ref)
    if "raw" in ref:
        return copy.deepcopy(ref["raw"])
    if "node" in ref:
        return _build_node(ref["node"], ref.get("value", "value"), tuple(ref.get("labels", ())))
    if "pod" in ref:
        return _build_pod(ref["pod"]["name"], ref["pod"])
    if "tokenRequest" in ref:
        return _token_request(ref["tokenRequest"])
    raise AssertionError(f"unknown object reference {ref!r}")


def _stored_pod(case: dict[str, Any], name: str) -> dict[str, Any] | None:
    """What upstream's pod lister returns for ``name`` in this case."""
    if case.get("pods") != "existing" or name not in ADMISSION["existing_pods"]:
        return None
    return _pod_fixture(name)


def run_admission(case: dict[str, Any]) -> tuple[bool, str]:
    user, groups = _user(case["user"])
    resource, sub, op = case["resource"], case.get("subresource", ""), case["op"]
    name = case.get("objectName", "")
    new, old = _resolve(case.get("new"), resource), _resolve(case.get("old"), resource)
    bound_pod = None
    if resource == "/pods" and old is None and (op == "DELETE" or sub == "eviction"):
        old = _stored_pod(case, name)
    if resource == "/serviceaccounts" and new is not None:
        ref = new["spec"].get("boundObjectRef")
        bound_pod = _stored_pod(case, ref["name"]) if ref else None
    node_key = case.get("node", "mynode")
    node = _build_node(node_key) if node_key else None
    d = admit_node_request(user, groups, op, resource, sub, name, new, old, namespace=case.get("namespace", ""),
                           node=node, bound_pod=bound_pod)
    return d.allowed, d.reason


def _expected_fragment(err: str) -> str:
    """The part of Kubernetes' error text kedge's reason must contain (its 'forbidden: ' wrapper dropped)."""
    if "forbidden: " in err:
        err = err.split("forbidden: ", 1)[1]
    return err


def _admission_matches(case: dict[str, Any]) -> bool:
    allowed, reason = run_admission(case)
    if not case["err"]:
        return allowed
    return not allowed and _expected_fragment(case["err"]) in reason


ADMISSION_CASES = [c for c in ADMISSION["cases"] if "not_applicable" not in c]


@pytest.mark.parametrize("case", ADMISSION_CASES, ids=[c["name"] for c in ADMISSION_CASES])
def test_noderestriction_matches_kubernetes(case):
    allowed, reason = run_admission(case)
    if not case["err"]:
        assert allowed, reason
    else:
        assert not allowed
        assert _expected_fragment(case["err"]) in reason


# -- Node authorizer --------------------------------------------------------------

def _graph(spec: dict[str, Any]) -> NodeGraph:
    g = NodeGraph()
    for pod in spec.get("pods", ()):
        g.set_pod(pod)
    for pv in spec.get("persistentvolumes", ()):
        g.set_pv(pv)
    for va in spec.get("volumeattachments", ()):
        g.set_volume_attachment(va)
    for rs in spec.get("resourceslices", ()):
        g.set_resource_slice(rs)
    return g


def _attrs(case: dict[str, Any]) -> Attributes:
    return Attributes(user=f"system:node:{case['user']}", groups=NODE_GROUPS, verb=case["verb"],
                      namespace=case.get("namespace", ""), api_group=case.get("apiGroup", ""),
                      resource=case["resource"], subresource=case.get("subresource", ""),
                      name=case.get("objectName", ""),
                      field_selector=parse_field_selector(case["fieldSelector"]) if case.get("fieldSelector") else ())


def _authorizer_runs() -> list[tuple[str, dict[str, Any], dict[str, Any], dict[str, Any] | None]]:
    """(id, suite, case, then-block or None) for every case in the authorizer data."""
    out = []
    for suite in AUTHORIZER["suites"]:
        for case in suite["cases"]:
            out.append((f"{suite['source'].split()[-1]}: {case['name']}", suite, case, None))
        then = suite.get("then")
        for case in (then or {}).get("cases", ()):
            out.append((f"{suite['source'].split()[-1]} (then): {case['name']}", suite, case, then))
    return out


def run_authorizer(suite: dict[str, Any], case: dict[str, Any], then: dict[str, Any] | None) -> bool:
    g = _graph(suite["graph"])
    for pod in (then or {}).get("set_pods", ()):
        g.set_pod(pod)
    return authorize_node(_attrs(case), g).allowed


AUTHORIZER_RUNS = [r for r in _authorizer_runs() if "not_applicable" not in r[2]]


@pytest.mark.parametrize("suite,case,then", [r[1:] for r in AUTHORIZER_RUNS], ids=[r[0] for r in AUTHORIZER_RUNS])
def test_node_authorizer_matches_kubernetes(suite, case, then):
    assert run_authorizer(suite, case, then) is (case["expect"] == "allow")


# -- counts ----------------------------------------------------------------------

def _count(cases: list[tuple[dict[str, Any], Any]]) -> dict[str, Any]:
    ran = matched = 0
    na: dict[str, int] = {}
    stricter = 0
    for case, run in cases:
        if "not_applicable" in case:
            na[case["not_applicable"]] = na.get(case["not_applicable"], 0) + 1
            continue
        ran += 1
        matched += bool(run())
        stricter += "stricter" in case
    return {"ran": ran, "matched": matched, "not_applicable": sum(na.values()), "stricter": stricter,
            "reasons": na}


def table_counts() -> dict[str, dict[str, Any]]:
    adm = [(c, lambda c=c: _admission_matches(c)) for c in ADMISSION["cases"]]
    authz = [(case, lambda s=suite, c=case, t=then: run_authorizer(s, c, t) is (c["expect"] == "allow"))
             for _, suite, case, then in _authorizer_runs()]
    return {"noderestriction": _count(adm), "node_authorizer": _count(authz)}


def test_table_counts(capsys):
    counts = table_counts()
    with capsys.disabled():
        for table, c in counts.items():
            print(f"\n{table}: ran {c['ran']}, matched {c['matched']}, not applicable {c['not_applicable']}, "
                  f"stricter {c['stricter']}")
            for reason, n in c["reasons"].items():
                print(f"  not applicable ({n}): {reason}")
    for c in counts.values():
        assert c["matched"] == c["ran"]
    assert (counts["noderestriction"]["ran"], counts["noderestriction"]["not_applicable"]) == (167, 29)
    assert (counts["node_authorizer"]["ran"], counts["node_authorizer"]["not_applicable"]) == (157, 10)
