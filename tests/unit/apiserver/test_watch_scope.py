"""A list/watch authorized for one object streams that object alone; one odd object hides no event."""

from __future__ import annotations

import base64
import json

import pytest

from kedge.apiserver import schema
from kedge.apiserver.api import API, Request, User, Watch
from kedge.store.sqlite import Store

ADMIN = User("admin", ("system:masters", "system:authenticated"))
ALICE = User("alice", ("system:authenticated",))


@pytest.fixture()
def api(tmp_path):
    store = Store(tmp_path / "api.db", window=50, synchronous="NORMAL")
    yield API(store, clock=lambda: 1_700_000_000.0)
    store.close()


def call(api, method, path, body=None, user=ADMIN, ctype="application/json"):
    raw = json.dumps(body).encode() if body is not None else b""
    resp = api.handle(Request(method, path, {"content-type": [ctype]}, raw, user))
    if isinstance(resp, Watch):
        return resp
    return resp.status, json.loads(resp.body) if resp.body[:1] in (b"{", b"[") else resp.body


def names(w: Watch) -> list[tuple[str, str]]:
    out = [json.loads(x) for x in w.lines]
    w.lines.clear()
    return [(e["type"], e["object"]["metadata"].get("name")) for e in out]


def secret(name: str) -> dict:
    return {"metadata": {"name": name}, "data": {"k": base64.b64encode(name.encode()).decode()}}


def grant_alice_secret(api, name: str) -> None:
    assert call(api, "POST", "/apis/rbac.authorization.k8s.io/v1/namespaces/default/roles", {
        "metadata": {"name": "one-secret"},
        "rules": [{"apiGroups": [""], "resources": ["secrets"], "resourceNames": [name],
                   "verbs": ["get", "list", "watch"]}]})[0] == 201
    assert call(api, "POST", "/apis/rbac.authorization.k8s.io/v1/namespaces/default/rolebindings", {
        "metadata": {"name": "one-secret"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "one-secret"},
        "subjects": [{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "alice"}]})[0] == 201


def test_watch_of_a_named_secret_streams_only_that_secret(api):
    for n in ("mine", "other"):
        assert call(api, "POST", "/api/v1/namespaces/default/secrets", secret(n))[0] == 201
    grant_alice_secret(api, "mine")
    w = call(api, "GET", "/api/v1/namespaces/default/secrets/mine?watch=true", user=ALICE)
    assert isinstance(w, Watch)
    assert names(w) == [("ADDED", "mine")]  # the initial state: not "other"
    call(api, "PATCH", "/api/v1/namespaces/default/secrets/other", {"data": {"k": "eA=="}},
         ctype="application/merge-patch+json")
    call(api, "PATCH", "/api/v1/namespaces/default/secrets/mine", {"data": {"k": "eQ=="}},
         ctype="application/merge-patch+json")
    assert names(w) == [("MODIFIED", "mine")]
    w.close()


def test_replayed_watch_of_a_named_secret_skips_other_secrets(api):
    assert call(api, "POST", "/api/v1/namespaces/default/secrets", secret("mine"))[0] == 201
    grant_alice_secret(api, "mine")
    _, got = call(api, "GET", "/api/v1/namespaces/default/secrets/mine")
    rv = got["metadata"]["resourceVersion"]
    assert call(api, "POST", "/api/v1/namespaces/default/secrets", secret("later"))[0] == 201
    call(api, "DELETE", "/api/v1/namespaces/default/secrets/mine")
    w = call(api, "GET", f"/api/v1/namespaces/default/secrets/mine?watch=true&resourceVersion={rv}", user=ALICE)
    assert names(w) == [("DELETED", "mine")]
    w.close()


def test_named_watch_with_a_field_selector_naming_another_object_is_refused(api):
    for n in ("mine", "other"):
        assert call(api, "POST", "/api/v1/namespaces/default/secrets", secret(n))[0] == 201
    grant_alice_secret(api, "mine")
    status, err = call(api, "GET", "/api/v1/namespaces/default/secrets/mine?watch=true"
                                   "&fieldSelector=metadata.name%3Dother", user=ALICE)
    assert status == 400 and "doesn't match requested name" in err["message"]
    # Not a way around it either: != keeps the named object only.
    status, _ = call(api, "GET", "/api/v1/namespaces/default/secrets/mine?watch=true"
                                 "&fieldSelector=metadata.name!%3Dmine", user=ALICE)
    assert status == 400


def test_list_and_watch_by_name_field_selector_need_and_get_that_name(api):
    for n in ("mine", "other"):
        assert call(api, "POST", "/api/v1/namespaces/default/secrets", secret(n))[0] == 201
    grant_alice_secret(api, "mine")
    status, body = call(api, "GET", "/api/v1/namespaces/default/secrets?fieldSelector=metadata.name%3Dmine",
                        user=ALICE)
    assert status == 200 and [i["metadata"]["name"] for i in body["items"]] == ["mine"]
    assert call(api, "GET", "/api/v1/namespaces/default/secrets?fieldSelector=metadata.name%3Dother",
                user=ALICE)[0] == 403
    assert call(api, "GET", "/api/v1/namespaces/default/secrets", user=ALICE)[0] == 403


def test_pod_with_an_ill_typed_volume_is_refused_like_kubernetes_decoder(api):
    body = {"metadata": {"name": "bad"}, "spec": {"containers": [{"name": "c", "image": "i"}],
                                                   "volumes": [{"name": "v", "configMap": "oops"}]}}
    status, err = call(api, "POST", "/api/v1/namespaces/default/pods", body)
    assert status == 400 and "cannot be handled as a Pod" in err["message"]
    assert "spec.volumes[0].configMap" in err["message"]


@pytest.mark.parametrize("patch", [
    {"spec": {"volumes": [{"name": "v", "secret": ["x"]}]}},
    {"spec": {"containers": [{"name": "c", "image": "i", "env": {"A": "b"}}]}},
    {"metadata": {"ownerReferences": "me"}},
])
def test_patch_that_makes_nested_fields_ill_typed_is_refused(api, patch):
    assert call(api, "POST", "/api/v1/namespaces/default/pods",
                {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "i"}]}})[0] == 201
    status, _ = call(api, "PATCH", "/api/v1/namespaces/default/pods/p", patch,
                     ctype="application/merge-patch+json")
    assert status == 400


def test_type_check_accepts_valid_kubernetes_shapes():
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "labels": {"a": "b"}},
           "spec": {"containers": [{"name": "c", "image": "i", "ports": [{"containerPort": 80}],
                                    "resources": {"limits": {"cpu": 1, "memory": "64Mi"}},
                                    "livenessProbe": {"httpGet": {"port": "http", "path": "/"}},
                                    "env": [{"name": "A", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]}],
                    "volumes": [{"name": "v", "emptyDir": {"sizeLimit": "1Gi"}}, {"name": "w", "configMap": {"name": "c"}}],
                    "terminationGracePeriodSeconds": 30.0}}
    assert schema.type_error(pod) is None
    assert schema.type_error({"apiVersion": "example.com/v1", "kind": "Widget", "spec": "anything"}) is None


def test_a_failing_index_update_hides_no_event_from_open_watches(api, monkeypatch):
    w = call(api, "GET", "/api/v1/namespaces/default/pods?watch=true")
    assert names(w) == []

    def broken(_pod):
        raise TypeError("planted: the graph cannot read this pod")

    monkeypatch.setattr(api.graph, "set_pod", broken)
    assert call(api, "POST", "/api/v1/namespaces/default/pods",
                {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "i"}]}})[0] == 201
    assert names(w) == [("ADDED", "p")]
    w.close()


def test_one_failing_watch_does_not_stop_the_others(api, monkeypatch):
    first = call(api, "GET", "/api/v1/namespaces/default/configmaps?watch=true&labelSelector=a%3Db")
    second = call(api, "GET", "/api/v1/namespaces/default/configmaps?watch=true")
    original = api._offer

    def offer(w, ev, **kw):
        if w is first:
            raise ValueError("planted")
        return original(w, ev, **kw)

    monkeypatch.setattr(api, "_offer", offer)
    assert call(api, "POST", "/api/v1/namespaces/default/configmaps", {"metadata": {"name": "c"}})[0] == 201
    assert names(second) == [("ADDED", "c")]
    assert first.overflowed  # ended (the client re-lists), not silently stalled
    second.close()


def test_object_leaving_a_selector_is_deleted_as_it_was_at_the_new_resource_version(api):
    """Kubernetes' watch cache: the DELETED event of an object that stopped matching carries its
    previous state (what the watcher was entitled to see), at the event's resourceVersion."""
    call(api, "POST", "/api/v1/namespaces/default/configmaps",
         {"metadata": {"name": "c", "labels": {"x": "1"}}, "data": {"seen": "yes"}})
    w = call(api, "GET", "/api/v1/namespaces/default/configmaps?watch=1&labelSelector=x%3D1")
    names(w)
    status, new = call(api, "PATCH", "/api/v1/namespaces/default/configmaps/c",
                       {"metadata": {"labels": {"x": "2"}}, "data": {"seen": "no"}},
                       ctype="application/merge-patch+json")
    assert status == 200
    (event,) = [json.loads(x) for x in w.lines]
    assert event["type"] == "DELETED"
    assert event["object"]["metadata"]["labels"] == {"x": "1"} and event["object"]["data"] == {"seen": "yes"}
    assert event["object"]["metadata"]["resourceVersion"] == new["metadata"]["resourceVersion"]
    w.close()
