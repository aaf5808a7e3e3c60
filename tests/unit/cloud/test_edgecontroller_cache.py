"""The edgecontroller's informer cache: watch events applied to one node's desired state (pure)."""

import random

import pytest

from kedge.cloud.edgecontroller import plan
from kedge.cloud.edgecontroller.cache import NodeCache


def pod(name, rv, *, cms=(), secrets=(), ns="default", uid=None, **meta):
    env = [{"name": f"C{i}", "valueFrom": {"configMapKeyRef": {"name": c, "key": "k"}}} for i, c in enumerate(cms)]
    env += [{"name": f"S{i}", "valueFrom": {"secretKeyRef": {"name": s, "key": "k"}}} for i, s in enumerate(secrets)]
    return {"metadata": {"name": name, "namespace": ns, "uid": uid or f"uid-{name}", "resourceVersion": str(rv),
                         **meta},
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "i", "env": env}]}}


def cm(name, rv, ns="default"):
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": ns, "resourceVersion": str(rv)}, "data": {"k": str(rv)}}


def ev(kind, obj):
    return {"type": kind, "object": obj}


def rv_of(cache, key):
    obj = cache.get(key)
    return obj["metadata"]["resourceVersion"] if obj else None


def test_list_then_added_pod_is_desired_with_its_configmap_once_read():
    c = NodeCache()
    assert c.needs_list
    assert c.replace([pod("a", 5, cms=["x"])], "10") == {"default/pod/a"}
    assert not c.needs_list and c.rv == "10"
    assert c.missing_refs() == {("configmap", "default", "x")}
    assert c.get("default/configmap/x") is None  # not read yet: nothing to send
    assert c.set_ref(("configmap", "default", "x"), cm("x", 3)) == {"default/configmap/x"}
    touched = c.apply(ev("ADDED", pod("b", 11, cms=["x", "y"])))
    assert touched == {"default/pod/b"}  # x is desired already; y still has to be read
    assert c.missing_refs() == {("configmap", "default", "y")}
    assert c.rv == "11"
    assert set(c.desired()) == {"default/pod/a", "default/pod/b", "default/configmap/x"}
    assert c.desired()["default/pod/b"]["kind"] == "Pod"  # list items come without kind; the edge needs it


def test_newer_version_replaces_older_and_replayed_versions_change_nothing():
    c = NodeCache()
    c.replace([pod("a", 5)], "5")
    assert c.apply(ev("MODIFIED", pod("a", 7, labels={"v": "7"}))) == {"default/pod/a"}
    assert c.apply(ev("MODIFIED", pod("a", 6, labels={"v": "6"}))) == set()
    assert c.apply(ev("ADDED", pod("a", 7, labels={"v": "other"}))) == set()
    assert c.get("default/pod/a")["metadata"]["labels"] == {"v": "7"}


def test_deleted_pod_leaves_a_tombstone_that_older_versions_cannot_pass():
    c = NodeCache()
    c.replace([pod("a", 5, cms=["x"])], "5")
    c.set_ref(("configmap", "default", "x"), cm("x", 2))
    touched = c.apply(ev("DELETED", pod("a", 9, cms=["x"])))
    assert touched == {"default/pod/a", "default/configmap/x"}  # its configmap follows it out
    assert c.get("default/pod/a") is None and c.get("default/configmap/x") is None
    assert c.deleted_rv("default/pod/a") == "9"
    # A replayed, older version (e.g. a watch restarted from an old rv) does not resurrect it.
    assert c.apply(ev("MODIFIED", pod("a", 8, cms=["x"]))) == set()
    assert c.apply(ev("ADDED", pod("a", 9))) == set()
    assert c.desired() == {}
    # A pod re-created under the same name has a higher rv: it is taken.
    assert c.apply(ev("ADDED", pod("a", 12, uid="uid-2"))) == {"default/pod/a"}
    assert c.get("default/pod/a")["metadata"]["uid"] == "uid-2"
    assert c.deleted_rv("default/pod/a") is None


def test_delete_event_older_than_the_held_version_is_ignored():
    c = NodeCache()
    c.replace([pod("a", 20, uid="new")], "20")
    assert c.apply(ev("DELETED", pod("a", 15, uid="old"))) == set()
    assert c.get("default/pod/a")["metadata"]["uid"] == "new"


def test_shared_configmap_stays_while_any_pod_uses_it():
    c = NodeCache()
    c.replace([pod("a", 5, cms=["x"]), pod("b", 6, cms=["x"])], "6")
    c.set_ref(("configmap", "default", "x"), cm("x", 1))
    assert c.apply(ev("DELETED", pod("a", 7, cms=["x"]))) == {"default/pod/a"}
    assert c.get("default/configmap/x") is not None
    assert c.apply(ev("DELETED", pod("b", 8, cms=["x"]))) == {"default/pod/b", "default/configmap/x"}
    assert c.referenced() == set()
    # A read that finishes after the last user left is dropped.
    assert c.set_ref(("configmap", "default", "x"), cm("x", 2)) == set()
    assert c.desired() == {}


def test_pod_update_that_drops_a_reference_drops_the_object():
    c = NodeCache()
    c.replace([pod("a", 5, cms=["x", "y"])], "5")
    for name in ("x", "y"):
        c.set_ref(("configmap", "default", name), cm(name, 1))
    assert c.apply(ev("MODIFIED", pod("a", 6, cms=["x"]))) == {"default/pod/a", "default/configmap/y"}
    assert set(c.desired()) == {"default/pod/a", "default/configmap/x"}


def test_refused_or_missing_reference_is_not_desired_until_readable():
    c = NodeCache()
    c.replace([pod("a", 5, secrets=["s"])], "5")
    ref = ("secret", "default", "s")
    assert c.set_ref(ref, None) == {"default/secret/s"}
    assert c.fetched(ref) and c.missing_refs() == set()
    assert c.get("default/secret/s") is None
    assert c.set_ref(ref, None) == set()  # still missing: nothing changed
    assert c.set_ref(ref, {"metadata": {"name": "s", "namespace": "default", "resourceVersion": "4"}}) \
        == {"default/secret/s"}
    # An older read racing a newer one loses; a newer one wins.
    assert c.set_ref(ref, {"metadata": {"name": "s", "namespace": "default", "resourceVersion": "3"}}) == set()
    assert rv_of(c, "default/secret/s") == "4"
    assert c.set_ref(ref, {"metadata": {"name": "s", "namespace": "default", "resourceVersion": "8"}}) \
        == {"default/secret/s"}
    assert rv_of(c, "default/secret/s") == "8"


def test_410_gone_asks_for_a_list_and_the_list_settles_what_the_watch_missed():
    c = NodeCache()
    c.replace([pod("a", 5), pod("b", 6), pod("c", 7)], "7")
    c.apply(ev("DELETED", pod("c", 8)))
    assert c.apply(ev("ERROR", {"kind": "Status", "code": 410, "reason": "Expired"})) == set()
    assert c.needs_list
    # Meanwhile (events lost): a deleted, b modified, d added. The re-list at rv 20 says so.
    touched = c.replace([pod("b", 15), pod("d", 18)], "20")
    assert touched == {"default/pod/a", "default/pod/b", "default/pod/d"}
    assert set(c.desired()) == {"default/pod/b", "default/pod/d"}
    assert rv_of(c, "default/pod/b") == "15"
    assert c.deleted_rv("default/pod/a") is None  # deleted at some rv <= 20: the edge's held rv is used
    assert c.deleted_rv("default/pod/c") is None  # the list superseded that tombstone
    assert not c.needs_list and c.rv == "20"


def test_relist_keeps_what_the_watch_saw_after_the_list_was_taken():
    c = NodeCache()
    c.replace([pod("a", 5)], "5")
    c.apply(ev("ADDED", pod("late", 30)))  # the watch ran ahead of a slower safety-net list
    c.apply(ev("DELETED", pod("a", 31)))
    touched = c.replace([pod("a", 5)], "25")  # taken at 25: before "late" existed, before a was deleted
    assert touched == set()
    assert set(c.desired()) == {"default/pod/late"}
    assert c.deleted_rv("default/pod/a") == "31"
    assert c.rv == "31"  # never goes back


def test_events_and_lists_older_than_the_last_list_change_nothing():
    c = NodeCache()
    c.replace([pod("a", 5)], "5")
    c.apply(ev("ADDED", pod("y", 7)))
    c.replace([pod("a", 5)], "10")  # y was deleted again by rv 10
    assert set(c.desired()) == {"default/pod/a"}
    # A watch that lagged behind that list delivers y's ADDED late: the list already settled it.
    assert c.apply(ev("ADDED", pod("y", 7))) == set()
    assert c.replace([pod("a", 5), pod("y", 7)], "8") == set()
    assert set(c.desired()) == {"default/pod/a"}


def test_bookmark_moves_the_resume_point_only():
    c = NodeCache()
    c.replace([], "5")
    assert c.apply(ev("BOOKMARK", {"kind": "Pod", "metadata": {"resourceVersion": "42"}})) == set()
    assert c.rv == "42" and c.desired() == {}


def test_malformed_events_change_nothing():
    c = NodeCache()
    c.replace([pod("a", 5)], "5")
    for bad in ({"type": "ADDED"}, {"type": "ADDED", "object": []}, {"type": "MODIFIED", "object": {"metadata": {}}},
                {"type": "WHAT", "object": pod("z", 9)}):
        assert c.apply(bad) == set()
    assert set(c.desired()) == {"default/pod/a"}


def test_tombstones_are_bounded():
    c = NodeCache(max_tombstones=3)
    c.replace([pod(f"p{i}", i + 1) for i in range(5)], "5")
    for i in range(5):
        c.apply(ev("DELETED", pod(f"p{i}", 10 + i)))
    assert [c.deleted_rv(f"default/pod/p{i}") for i in range(5)] == [None, None, "12", "13", "14"]


@pytest.mark.parametrize("seed", range(25))
def test_random_event_streams_with_replays_match_a_fresh_build(seed):
    """Whatever order of adds, updates, deletes, replays and re-lists: the cache equals plan.desired_state."""
    rnd = random.Random(seed)
    rv = 0
    truth: dict[str, dict] = {}  # what the API server holds: pod name -> pod
    history: list[dict] = []  # every event ever emitted, for replays
    snapshots: dict[int, dict[str, dict]] = {}  # rv -> what a list taken then would have returned
    configmaps = {f"cm{i}": cm(f"cm{i}", i + 1) for i in range(6)}
    c = NodeCache()
    c.replace([], "0")

    def emit(kind, obj):
        history.append(ev(kind, obj))
        return c.apply(history[-1])

    for _ in range(150):
        rv += 1
        roll = rnd.random()
        name = f"p{rnd.randrange(8)}"
        if roll < 0.45:
            obj = pod(name, rv, cms=rnd.sample(sorted(configmaps), rnd.randrange(3)), uid=f"u{rv}")
            kind = "MODIFIED" if name in truth else "ADDED"
            if kind == "MODIFIED":
                obj["metadata"]["uid"] = truth[name]["metadata"]["uid"]
            truth[name] = obj
            emit(kind, obj)
        elif roll < 0.7 and truth:
            name = rnd.choice(sorted(truth))
            gone = dict(truth.pop(name))
            gone["metadata"] = dict(gone["metadata"], resourceVersion=str(rv))
            emit("DELETED", gone)
        elif roll < 0.85 and history:
            c.apply(rnd.choice(history))  # a replayed (old or current) event
        elif roll < 0.92:
            c.apply(ev("ERROR", {"code": 410}))
            c.replace(list(truth.values()), str(rv))
        elif snapshots:
            # A safety-net list taken a while ago, applied late (after newer events, maybe after newer lists).
            at = rnd.choice(sorted(snapshots))
            c.replace(list(snapshots[at].values()), str(at))
        snapshots[rv] = dict(truth)
        for ref in c.missing_refs():
            c.set_ref(ref, configmaps[ref[2]])
        want = plan.desired_state([dict(p, kind="Pod", apiVersion="v1") for p in truth.values()],
                                  {("configmap", "default", n): o for n, o in configmaps.items()})
        assert c.desired() == want


# -- plan.delta: what one touched key sends ---------------------------------------------------


def test_delta_inserts_updates_and_deletes_one_key():
    k = "default/configmap/x"
    assert plan.delta(k, cm("x", 3), None) == plan.Push("insert", k, "3", cm("x", 3))
    assert plan.delta(k, cm("x", 4), cm("x", 3)) == plan.Push("update", k, "4", cm("x", 4))
    assert plan.delta(k, cm("x", 3), cm("x", 3)) is None
    assert plan.delta(k, cm("x", 3), cm("x", 5)) is None  # the edge holds something newer
    assert plan.delta(k, None, None) is None
    # Dropped while still existing: delete what the edge holds.
    assert plan.delta(k, None, cm("x", 3)) == plan.Push("delete", k, "3", None)


def test_delta_deletes_a_deleted_pod_at_its_deletion_rv():
    k = "default/pod/a"
    assert plan.delta(k, None, pod("a", 5), deleted_rv="9") == plan.Push("delete", k, "9", None)
    assert plan.delta(k, None, pod("a", 12), deleted_rv="9") == plan.Push("delete", k, "12", None)
    # Only an rv the edge reported on connect: still deleted at that rv.
    assert plan.delta(k, None, {"metadata": {"resourceVersion": "5"}}) == plan.Push("delete", k, "5", None)


def test_delta_can_defer_a_status_only_pod_update():
    k = "default/pod/a"
    held = pod("a", 5)
    echoed = pod("a", 6, managedFields=[{"manager": "kedge", "subresource": "status"}])
    echoed["status"] = {"phase": "Running"}
    assert plan.delta(k, echoed, held, defer_status=True) is None
    assert plan.delta(k, echoed, held) == plan.Push("update", k, "6", echoed)  # the periodic pass sends it
    deleting = dict(echoed, metadata=dict(echoed["metadata"], deletionTimestamp="2026-01-01T00:00:00Z"))
    assert plan.delta(k, deleting, held, defer_status=True) == plan.Push("update", k, "6", deleting)
    relabelled = pod("a", 7, labels={"tier": "x"})
    assert plan.delta(k, relabelled, held, defer_status=True).operation == "update"
    # After a reconnect the cloud knows only the rv the edge holds: the newest goes out.
    assert plan.delta(k, echoed, {"metadata": {"resourceVersion": "5"}}, defer_status=True).operation == "update"
    # Not a pod: always sent.
    assert plan.delta("default/configmap/x", cm("x", 4), cm("x", 3), defer_status=True).operation == "update"
