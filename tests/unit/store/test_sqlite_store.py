"""Store semantics: global resourceVersion, preconditions, event window, restart."""

from __future__ import annotations

import os
import stat

import pytest

from kedge.errors import StateError
from kedge.store.sqlite import AlreadyExists, Conflict, Expired, NotFound, Store, parse_rv, StoreError


def _cm(name: str, value: str = "v") -> dict:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": "ns"},
            "data": {"k": value}}


def test_resource_version_is_global_and_increasing(tmp_path):
    s = Store(tmp_path / "api.db")
    a = s.create("/configmaps", "ns", "a", _cm("a"))
    b = s.create("/secrets", "ns", "b", _cm("b"))
    c = s.update("/configmaps", "ns", "a", _cm("a", "w"))
    rvs = [int(x["metadata"]["resourceVersion"]) for x in (a, b, c)]
    assert rvs == sorted(rvs) and len(set(rvs)) == 3
    assert s.current_rv == rvs[-1]
    assert s.get("/configmaps", "ns", "a")["data"] == {"k": "w"}


def test_file_is_private_and_single_writer(tmp_path):
    s = Store(tmp_path / "api.db")
    assert stat.S_IMODE(os.stat(tmp_path / "api.db").st_mode) == 0o600
    with pytest.raises(StateError):
        Store(tmp_path / "api.db")
    s.close()
    Store(tmp_path / "api.db").close()


def test_create_twice_is_refused(tmp_path):
    s = Store(tmp_path / "api.db")
    s.create("/configmaps", "ns", "a", _cm("a"))
    with pytest.raises(AlreadyExists):
        s.create("/configmaps", "ns", "a", _cm("a"))


def test_stale_resource_version_conflicts(tmp_path):
    s = Store(tmp_path / "api.db")
    first = s.create("/configmaps", "ns", "a", _cm("a"))
    rv = int(first["metadata"]["resourceVersion"])
    s.update("/configmaps", "ns", "a", _cm("a", "2"), expected_rv=rv)
    with pytest.raises(Conflict):
        s.update("/configmaps", "ns", "a", _cm("a", "3"), expected_rv=rv)
    with pytest.raises(Conflict):
        s.delete("/configmaps", "ns", "a", expected_rv=rv)
    with pytest.raises(NotFound):
        s.update("/configmaps", "ns", "zz", _cm("zz"))


def test_delete_records_event_with_new_rv(tmp_path):
    s = Store(tmp_path / "api.db")
    s.create("/configmaps", "ns", "a", _cm("a"))
    start = s.current_rv
    gone = s.delete("/configmaps", "ns", "a")
    assert s.get("/configmaps", "ns", "a") is None
    events = list(s.events_since(start))
    assert [e.type for e in events] == ["DELETED"]
    assert events[0].rv == int(gone["metadata"]["resourceVersion"]) == s.current_rv


def test_list_filters_namespace_index_and_pages(tmp_path):
    s = Store(tmp_path / "api.db")
    for i in range(5):
        s.create("/pods", "ns" if i % 2 else "other", f"p{i}", _cm(f"p{i}"), index="node-a" if i < 3 else "node-b")
    _, all_pods = s.list_raw("/pods")
    assert len(all_pods) == 5
    assert len(s.list_raw("/pods", "ns")[1]) == 2
    assert len(s.list_raw("/pods", index="node-a")[1]) == 3
    _, page = s.list_raw("/pods", limit=2)
    _, rest = s.list_raw("/pods", after=("ns", "p3"), limit=10)
    assert len(page) == 2 and len(rest) == 3


def test_watch_window_compacts_and_expires(tmp_path):
    s = Store(tmp_path / "api.db", window=10)
    s.create("/configmaps", "ns", "a", _cm("a"))
    old = s.current_rv
    for i in range(30):
        s.update("/configmaps", "ns", "a", _cm("a", str(i)))
    with pytest.raises(Expired):
        list(s.events_since(old))
    recent = list(s.events_since(s.current_rv - 5))
    assert [e.rv for e in recent] == list(range(s.current_rv - 4, s.current_rv + 1))


def test_restart_keeps_objects_and_rv_and_window(tmp_path):
    s = Store(tmp_path / "api.db", window=10)
    for i in range(25):
        s.create("/configmaps", "ns", f"c{i}", _cm(f"c{i}"))
    rv, compacted = s.current_rv, s.compacted_rv
    s.close()
    s2 = Store(tmp_path / "api.db", window=10)
    assert s2.current_rv == rv and s2.compacted_rv == compacted
    assert s2.count("/configmaps") == 25
    nxt = s2.create("/configmaps", "ns", "new", _cm("new"))
    assert int(nxt["metadata"]["resourceVersion"]) == rv + 1


def test_rv_survives_deleting_everything(tmp_path):
    s = Store(tmp_path / "api.db", window=2)
    s.create("/configmaps", "ns", "a", _cm("a"))
    for _ in range(5):
        s.update("/configmaps", "ns", "a", _cm("a"))
    s.delete("/configmaps", "ns", "a")
    s.compact()
    rv = s.current_rv
    s.close()
    assert Store(tmp_path / "api.db", window=2).current_rv == rv


def test_listener_sees_each_commit(tmp_path):
    s = Store(tmp_path / "api.db")
    seen = []
    unsubscribe = s.subscribe(seen.append)
    s.create("/configmaps", "ns", "a", _cm("a"))
    unsubscribe()
    s.update("/configmaps", "ns", "a", _cm("a", "x"))
    assert [e.type for e in seen] == ["ADDED"]


@pytest.mark.parametrize("bad", ["abc", "-1", "1" * 25, "1.5"])
def test_bad_resource_versions_are_refused(bad):
    with pytest.raises(StoreError):
        parse_rv(bad)
    assert parse_rv("") is None and parse_rv("42") == 42


def test_wal_and_shm_files_are_private(tmp_path):
    s = Store(tmp_path / "api.db")
    s.create("/secrets", "ns", "s", _cm("s"))
    for suffix in ("-wal", "-shm"):
        p = tmp_path / f"api.db{suffix}"
        assert p.exists() and stat.S_IMODE(os.stat(p).st_mode) == 0o600
