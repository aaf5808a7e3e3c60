"""Merge patch, JSON patch and strategic merge patch (the subset kubectl produces)."""

from __future__ import annotations

import pytest

from kedge.apiserver.patch import PatchError, json_patch, merge_patch, strategic_merge_patch


def test_merge_patch_rfc7386_examples():
    assert merge_patch({"a": "b"}, {"a": "c"}) == {"a": "c"}
    assert merge_patch({"a": "b"}, {"b": "c"}) == {"a": "b", "b": "c"}
    assert merge_patch({"a": "b"}, {"a": None}) == {}
    assert merge_patch({"a": ["b"]}, {"a": "c"}) == {"a": "c"}
    assert merge_patch({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}) == {"a": {"b": "d"}}
    assert merge_patch({"e": None}, {"a": 1}) == {"e": None, "a": 1}
    original = {"a": {"b": 1}}
    merge_patch(original, {"a": {"b": 2}})
    assert original == {"a": {"b": 1}}  # input untouched


def test_json_patch_operations():
    doc = {"a": [1, 2], "b": {"c": 1}}
    out = json_patch(doc, [{"op": "add", "path": "/a/-", "value": 3},
                           {"op": "replace", "path": "/b/c", "value": 2},
                           {"op": "move", "from": "/b/c", "path": "/d"},
                           {"op": "copy", "from": "/d", "path": "/e"},
                           {"op": "remove", "path": "/a/0"},
                           {"op": "test", "path": "/e", "value": 2},
                           {"op": "add", "path": "/x~1y", "value": True}])
    assert out == {"a": [2, 3], "b": {}, "d": 2, "e": 2, "x/y": True}
    assert doc == {"a": [1, 2], "b": {"c": 1}}


@pytest.mark.parametrize("ops", [
    [{"op": "test", "path": "/a", "value": 2}],
    [{"op": "remove", "path": "/missing"}],
    [{"op": "add", "path": "/a/b/c", "value": 1}],
    [{"op": "replace", "path": "/nope", "value": 1}],
    [{"op": "bogus", "path": "/a"}],
    [{"op": "add", "path": "a", "value": 1}],
    [{"op": "move", "from": "/o", "path": "/o/x"}],
    {"op": "add"},
    [{"op": "add", "path": "/l/01", "value": 1}],
])
def test_json_patch_refuses_bad_operations(ops):
    with pytest.raises(PatchError):
        json_patch({"a": 1, "o": {}, "l": [0, 1]}, ops)


def _pod(*containers):
    return {"spec": {"containers": [dict(c) for c in containers]}}


def test_strategic_merge_containers_by_name():
    orig = _pod({"name": "a", "image": "a:1", "env": [{"name": "X", "value": "1"}]}, {"name": "b", "image": "b:1"})
    patch = {"spec": {"containers": [{"name": "a", "image": "a:2", "env": [{"name": "Y", "value": "2"}]}]}}
    out = strategic_merge_patch(orig, patch)
    assert out["spec"]["containers"] == [
        {"name": "a", "image": "a:2", "env": [{"name": "X", "value": "1"}, {"name": "Y", "value": "2"}]},
        {"name": "b", "image": "b:1"}]


def test_strategic_merge_directives():
    orig = _pod({"name": "a", "image": "a"}, {"name": "b", "image": "b"})
    orig["metadata"] = {"finalizers": ["x", "y"], "labels": {"k": "v"}}
    out = strategic_merge_patch(orig, {
        "spec": {"containers": [{"name": "a", "$patch": "delete"}, {"name": "c", "image": "c"}],
                 "$setElementOrder/containers": [{"name": "c"}, {"name": "b"}]},
        "metadata": {"$deleteFromPrimitiveList/finalizers": ["x"], "labels": {"k": None, "n": "m"}}})
    assert [c["name"] for c in out["spec"]["containers"]] == ["c", "b"]
    assert out["metadata"] == {"finalizers": ["y"], "labels": {"n": "m"}}
    replaced = strategic_merge_patch(orig, {"spec": {"$patch": "replace", "containers": []}})
    assert replaced["spec"] == {"containers": []}
    retained = strategic_merge_patch({"s": {"a": 1, "b": 2}}, {"s": {"$retainKeys": ["a", "c"], "c": 3}})
    assert retained == {"s": {"a": 1, "c": 3}}


def test_strategic_merge_lists_without_strategy_are_replaced():
    out = strategic_merge_patch({"spec": {"args": ["a", "b"]}}, {"spec": {"args": ["c"]}})
    assert out == {"spec": {"args": ["c"]}}
    out = strategic_merge_patch({"metadata": {"finalizers": ["a"]}}, {"metadata": {"finalizers": ["b"]}})
    assert out == {"metadata": {"finalizers": ["a", "b"]}}


def test_strategic_merge_ports_keys_depend_on_context():
    svc = {"spec": {"ports": [{"port": 80, "name": "http"}]}}
    assert strategic_merge_patch(svc, {"spec": {"ports": [{"port": 443, "name": "https"}]}})["spec"]["ports"] == [
        {"port": 80, "name": "http"}, {"port": 443, "name": "https"}]
    pod = _pod({"name": "a", "ports": [{"containerPort": 80}]})
    out = strategic_merge_patch(pod, {"spec": {"containers": [{"name": "a", "ports": [{"containerPort": 80,
                                                                                          "protocol": "TCP"}]}]}})
    assert out["spec"]["containers"][0]["ports"] == [{"containerPort": 80, "protocol": "TCP"}]


def test_strategic_merge_rejects_bad_input():
    with pytest.raises(PatchError):
        strategic_merge_patch({}, [1])
    with pytest.raises(PatchError):
        strategic_merge_patch({}, {"$patch": "explode"})
    with pytest.raises(PatchError):
        strategic_merge_patch(_pod({"name": "a"}), {"spec": {"containers": [{"image": "no-name"}]}})


# -- fuzzing regressions: array indexes are ASCII digits (RFC 6901), bounded ------------

@pytest.mark.parametrize("token", [
    "\u00b2",            # superscript two: str.isdigit() says yes, int() raises ValueError
    "\u0661",            # Arabic-Indic one: int() would read it as 1
    "\uff11",            # fullwidth one
    "1" * 5000,          # int() refuses more than 4300 digits with ValueError
    "1" * 19,            # beyond the bound
    "01", "-1", "+1", " 1", "1 ", "",
])
def test_non_ascii_or_unbounded_array_index_is_a_patch_error_not_a_crash(token):
    doc = {"a": ["x", "y"]}
    for op in ({"op": "remove", "path": f"/a/{token}"}, {"op": "add", "path": f"/a/{token}", "value": 1},
               {"op": "replace", "path": f"/a/{token}", "value": 1}, {"op": "test", "path": f"/a/{token}"}):
        with pytest.raises(PatchError) as err:
            json_patch(doc, [op])
        assert err.value.code == "invalid_patch"


def test_eighteen_digit_index_is_parsed_then_out_of_range():
    with pytest.raises(PatchError, match="out of range"):
        json_patch({"a": []}, [{"op": "add", "path": "/a/" + "9" * 18, "value": 1}])
    assert json_patch({"a": ["x"]}, [{"op": "add", "path": "/a/0", "value": 1}]) == {"a": [1, "x"]}
