"""PATCH work is bounded while it is applied (CVE-2019-1002100 class), bytes in and out.

Each attack here used to run for minutes (or until memory ran out) on the API server's
event loop before a size check after the fact; now it fails at once, answered as
kube-apiserver answers it: 413 for too many JSON patch operations, 422 ``Invalid`` for a
copy, depth or work bound.
"""

from __future__ import annotations

import json
import time

import pytest

from kedge.apiserver.api import API, Request, User
from kedge.apiserver.patch import (
    PatchError,
    PatchTooLarge,
    json_patch,
    merge_patch,
    strategic_merge_patch,
)
from kedge.limits import DEFAULT, Limits
from kedge.store.sqlite import Store

ADMIN = User("admin", ("system:masters", "system:authenticated"))


def copy_bomb(copies: int = 40) -> list[dict]:
    """The CVE-2019-1002100 shape: a list copied into itself doubles at every operation."""
    return ([{"op": "add", "path": "/bomb", "value": ["x" * 1024]}]
            + [{"op": "copy", "from": "/bomb", "path": "/bomb/-"} for _ in range(copies)])


def fast(fn, *args, budget_s: float = 2.0):
    t0 = time.monotonic()
    try:
        return fn(*args)
    finally:
        assert time.monotonic() - t0 < budget_s, f"{fn.__name__} took {time.monotonic() - t0:.1f}s"


def test_copy_bomb_fails_fast_with_422():
    with pytest.raises(PatchTooLarge) as exc:
        fast(json_patch, {"metadata": {"name": "c"}}, copy_bomb())
    err = exc.value
    assert err.status == 422 and err.reason == "Invalid" and err.code == "patch_too_large"
    assert err.message.startswith("the server rejected our request due to an error in our request")
    assert str(DEFAULT.max_patch_copy_bytes) in err.message
    assert isinstance(err, PatchError)  # still a patch error for callers that only know those


def test_copies_within_the_budget_apply():
    out = json_patch({"a": {"b": "x" * 1000}}, [{"op": "copy", "from": "/a", "path": f"/c{i}"} for i in range(100)])
    assert len(out) == 101 and out["c99"] == {"b": "x" * 1000}


def test_copy_budget_is_accumulated_over_the_patch_not_per_operation():
    limits = Limits(max_patch_copy_bytes=10_000)
    ops = [{"op": "copy", "from": "/a", "path": f"/c{i}"} for i in range(20)]
    json_patch({"a": "x" * 400}, ops, limits)  # 20 x ~400 bytes: fits
    with pytest.raises(PatchTooLarge):
        json_patch({"a": "x" * 600}, ops, limits)  # 20 x ~600 bytes: does not


def test_too_many_operations_is_413_like_kube_apiserver():
    ops = [{"op": "test", "path": "/a", "value": 1}] * (DEFAULT.max_patch_ops + 1)
    with pytest.raises(PatchTooLarge) as exc:
        json_patch({"a": 1}, ops)
    assert exc.value.status == 413 and exc.value.reason == "RequestEntityTooLarge"
    assert exc.value.message == ("Request entity too large: The allowed maximum operations in a JSON patch "
                                 f"is {DEFAULT.max_patch_ops}, got {DEFAULT.max_patch_ops + 1}")
    assert json_patch({"a": 1}, ops[:DEFAULT.max_patch_ops]) == {"a": 1}


def test_copy_nesting_past_the_depth_bound_is_refused():
    ops = [{"op": "add", "path": "/n", "value": {}}]
    ops += [{"op": "copy", "from": "/n", "path": "/n/n"} for _ in range(70)]
    with pytest.raises(PatchTooLarge) as exc:
        fast(json_patch, {}, ops)
    assert "nest deeper than 64" in exc.value.message


def chain(key: str, n: int) -> dict:
    out: dict = {}
    for _ in range(n):
        out = {key: out}
    return out


def test_move_under_a_deep_path_is_refused_by_depth():
    """Moving a subtree under a deep path nests it deeper; done over and over it would nest
    without bound (and then blow the recursion limit of whatever walks the object next)."""
    doc = {"a": chain("a", 40), "b": chain("b", 40)}
    deep = "/b" * 40
    with pytest.raises(PatchTooLarge):
        json_patch(doc, [{"op": "move", "from": "/a", "path": deep + "/a"}])
    assert json_patch(doc, [{"op": "move", "from": "/a/a/a/a/a/a/a/a/a/a/a/a/a/a/a/a/a/a/a/a",
                             "path": "/b" * 20 + "/x"}])  # as deep as before: fine


def test_add_value_that_would_nest_too_deep_is_refused():
    value: dict = {}
    for _ in range(30):
        value = {"v": value}
    path = "/" + "/".join(["a"] * 40)
    doc: dict = {}
    cur = doc
    for _ in range(39):
        cur["a"] = {}
        cur = cur["a"]
    with pytest.raises(PatchTooLarge):
        json_patch(doc, [{"op": "add", "path": path, "value": value}])


def test_inserts_at_the_head_of_a_huge_list_are_bounded():
    """10,000 inserts at index 0 of a million-element list shift ~10^10 pointers (seconds)."""
    doc = {"l": [0] * 1_000_000}
    ops = [{"op": "add", "path": "/l/0", "value": 1}] * DEFAULT.max_patch_ops
    with pytest.raises(PatchTooLarge) as exc:
        fast(json_patch, doc, ops)
    assert exc.value.status == 422
    # Appending costs nothing to shift: the same number of operations applies.
    out = fast(json_patch, doc, [{"op": "add", "path": "/l/-", "value": 1}] * DEFAULT.max_patch_ops)
    assert len(out["l"]) == 1_010_000


def test_move_does_not_copy_its_value():
    big = {f"k{i}": "v" * 100 for i in range(20_000)}  # ~2.4 MB
    ops = [{"op": "move", "from": "/a", "path": "/b"}, {"op": "move", "from": "/b", "path": "/a"}] * 2_000
    out = fast(json_patch, {"a": big}, ops)
    assert out == {"a": big}


def test_strategic_merge_of_big_keyed_lists_is_linear():
    """Merging n patch items into n items by merge key was n*n comparisons (minutes at 50k)."""
    n = 50_000
    target = {"spec": {"containers": [{"name": f"c{i}", "image": "a"} for i in range(n)]}}
    patch = {"spec": {"containers": [{"name": f"n{i}", "image": "b"} for i in range(n)]
                      + [{"name": "c7", "image": "z"}, {"name": "c9", "$patch": "delete"}]}}
    out = fast(strategic_merge_patch, target, patch)
    names = [c["name"] for c in out["spec"]["containers"]]
    assert len(names) == 2 * n - 1 and "c9" not in names and names[n - 1] == "n0"
    assert out["spec"]["containers"][7] == {"name": "c7", "image": "z"}
    assert target["spec"]["containers"][7] == {"name": "c7", "image": "a"}  # target untouched


def test_strategic_merge_of_big_primitive_sets_is_linear():
    n = 100_000
    target = {"metadata": {"finalizers": [f"f{i}" for i in range(n)]}}
    patch = {"metadata": {"finalizers": [f"g{i}" for i in range(n)],
                          "$deleteFromPrimitiveList/finalizers": [f"f{i}" for i in range(0, n, 2)]}}
    out = fast(strategic_merge_patch, target, patch)
    assert len(out["metadata"]["finalizers"]) == n + n // 2


def test_strategic_merge_of_unhashable_set_items_is_charged():
    limits = Limits(max_patch_work=10_000)
    target = {"metadata": {"finalizers": [{"i": i} for i in range(1_000)]}}
    patch = {"metadata": {"finalizers": [{"j": i} for i in range(1_000)]}}
    with pytest.raises(PatchTooLarge):
        strategic_merge_patch(target, patch, limits)
    assert len(strategic_merge_patch(target, {"metadata": {"finalizers": [{"j": 1}]}}, limits)
               ["metadata"]["finalizers"]) == 1_001


def test_strategic_merge_does_not_recopy_each_level():
    """Every nesting level used to copy its whole subtree again: depth x size."""
    leaf = {f"k{i}": "v" for i in range(200_000)}
    target: dict = {"x": leaf}
    for _ in range(60):
        target = {"x": target}
    patch: dict = {"y": 1}
    for _ in range(61):
        patch = {"x": patch}
    out = fast(strategic_merge_patch, target, patch, budget_s=3.0)
    cur = out
    for _ in range(61):
        cur = cur["x"]
    assert cur["y"] == 1 and len(cur) == 200_001


def test_merge_patch_is_unchanged_and_linear():
    target = {"data": {f"k{i}": "v" for i in range(100_000)}}
    out = fast(merge_patch, target, {"data": {f"k{i}": None for i in range(0, 100_000, 2)}})
    assert len(out["data"]) == 50_000


# -- through the API handler: the Status a client sees ---------------------------------------


@pytest.fixture()
def api(tmp_path):
    store = Store(tmp_path / "api.db", window=50, synchronous="NORMAL")
    yield API(store, clock=lambda: 1_700_000_000.0)
    store.close()


def call(api, method, path, body, ctype="application/json"):
    resp = api.handle(Request(method, path, {"content-type": [ctype]}, json.dumps(body).encode(), ADMIN))
    return resp.status, json.loads(resp.body)


def test_api_answers_copy_bomb_with_422_status(api):
    assert call(api, "POST", "/api/v1/namespaces/default/configmaps",
                {"metadata": {"name": "c"}, "data": {"a": "b"}})[0] == 201
    t0 = time.monotonic()
    status, body = call(api, "PATCH", "/api/v1/namespaces/default/configmaps/c", copy_bomb(),
                        "application/json-patch+json")
    assert time.monotonic() - t0 < 2.0
    assert status == 422 and body["kind"] == "Status" and body["reason"] == "Invalid" and body["code"] == 422
    assert "accumulated size increase of copy" in body["message"]
    assert call(api, "GET", "/api/v1/namespaces/default/configmaps/c", None)[1]["data"] == {"a": "b"}


def test_api_answers_too_many_operations_with_413_status(api):
    assert call(api, "POST", "/api/v1/namespaces/default/configmaps", {"metadata": {"name": "c"}})[0] == 201
    ops = [{"op": "test", "path": "/metadata/name", "value": "c"}] * (DEFAULT.max_patch_ops + 1)
    status, body = call(api, "PATCH", "/api/v1/namespaces/default/configmaps/c", ops, "application/json-patch+json")
    assert status == 413 and body["reason"] == "RequestEntityTooLarge"
    assert body["message"].startswith("Request entity too large: The allowed maximum operations")
