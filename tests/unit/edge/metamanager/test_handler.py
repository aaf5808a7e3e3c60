"""MetaManager: validation of pushed messages, acks after the write, query, inventory pages."""

from __future__ import annotations

import asyncio
import pytest

from kedge.edge.metamanager.handler import INVENTORY_PAGE_ITEMS, MetaManager, inventory_pages
from kedge.edge.metamanager.store import KEY_BYTES, MetaStore
from kedge.errors import PeerError
from kedge.limits import DEFAULT
from kedge.protocol import message as m
from kedge.protocol.codec import decode_json

NOW_MS = 1_700_000_000_000


def msg(op: str, resource: str, content, rv: str = "", group: str = "resource") -> m.Message:
    return m.Message.new(source="edgecontroller", destination="metamanager", group=group, operation=op,
                         resource=resource, content=content, now_ms=NOW_MS, resourceversion=rv)


def pod(name: str, ns: str = "default", rv: str | None = None, **extra) -> dict:
    meta = {"name": name, "namespace": ns}
    if rv is not None:
        meta["resourceVersion"] = rv
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, **extra}


@pytest.fixture()
def mm():
    store = MetaStore.in_memory(bytes(range(KEY_BYTES)))
    yield MetaManager(store, node="edge-1", clock=lambda: 1_700_000_000.0)
    store.close()


def run(mm: MetaManager, message: m.Message) -> dict:
    return asyncio.run(mm.handle(message))


def test_insert_acks_after_the_write_and_is_readable(mm: MetaManager):
    reply = run(mm, msg("insert", "default/pod/web", pod("web"), rv="12"))
    assert reply == {"ack": "12", "result": "applied", "stored": "12"}
    assert mm.store.get("default/pod/web")["metadata"]["resourceVersion"] == "12"


def test_rv_may_come_from_the_object_alone(mm: MetaManager):
    assert run(mm, msg("update", "default/pod/web", pod("web", rv="7")))["ack"] == "7"
    assert mm.store.record("default/pod/web") == ("7", False)


def test_stale_and_duplicate_are_acked_with_what_the_edge_holds(mm: MetaManager):
    run(mm, msg("update", "default/pod/web", pod("web"), rv="20"))
    assert run(mm, msg("update", "default/pod/web", pod("web"), rv="19")) == \
        {"ack": "19", "result": "stale", "stored": "20"}
    assert run(mm, msg("update", "default/pod/web", pod("web"), rv="20")) == \
        {"ack": "20", "result": "duplicate", "stored": "20"}


def test_delete_with_null_or_last_object(mm: MetaManager):
    run(mm, msg("insert", "default/pod/a", pod("a"), rv="1"))
    run(mm, msg("insert", "default/pod/b", pod("b"), rv="2"))
    assert run(mm, msg("delete", "default/pod/a", None, rv="3"))["result"] == "applied"
    assert run(mm, msg("delete", "default/pod/b", pod("b", rv="4")))["result"] == "applied"
    assert mm.store.snapshot() == ({}, {"default/pod/a": "3", "default/pod/b": "4"})
    assert run(mm, msg("insert", "default/pod/a", pod("a"), rv="2"))["result"] == "stale"


def test_patch_carries_the_full_object(mm: MetaManager):
    run(mm, msg("insert", "default/configmap/c", {"metadata": {"name": "c", "namespace": "default"},
                                                   "data": {"a": "1"}}, rv="1"))
    run(mm, msg("patch", "default/configmap/c", {"metadata": {"name": "c", "namespace": "default"},
                                                  "data": {"b": "2"}}, rv="2"))
    assert mm.store.get("default/configmap/c")["data"] == {"b": "2"}


def test_cluster_scoped_node_object(mm: MetaManager):
    node = {"kind": "Node", "metadata": {"name": "edge-1"}}
    assert run(mm, msg("update", "default/node/edge-1", node, rv="3"))["result"] == "applied"
    with pytest.raises(PeerError) as info:
        run(mm, msg("update", "default/node/edge-1", {"metadata": {"name": "edge-1", "namespace": "default"}}, rv="4"))
    assert info.value.code == "resource_mismatch"


REFUSED = [
    # attack / mistake, message, code
    ("object named differently than the route", msg("insert", "default/pod/web", pod("other"), rv="1"),
     "resource_mismatch"),
    ("object in another namespace than the route", msg("insert", "default/secret/s", pod("s", "kube-system"), rv="1"),
     "resource_mismatch"),
    ("object without namespace for a namespaced type", msg("insert", "default/pod/web", {"metadata": {"name": "web"}},
                                                          rv="1"), "resource_mismatch"),
    ("delete carrying another object", msg("delete", "default/pod/web", pod("x"), rv="1"), "resource_mismatch"),
    ("header and object rv differ", msg("update", "default/pod/web", pod("web", rv="5"), rv="6"),
     "resource_version_mismatch"),
    ("no rv at all", msg("update", "default/pod/web", pod("web")), "bad_resource_version"),
    ("non-decimal rv", msg("update", "default/pod/web", pod("web"), rv="abc"), "bad_resource_version"),
    ("rv with leading zero", msg("update", "default/pod/web", pod("web"), rv="010"), "bad_resource_version"),
    ("numeric rv in the object", msg("update", "default/pod/web", pod("web", rv=5)), "bad_resource_version"),
    ("rv beyond int64", msg("update", "default/pod/web", pod("web"), rv="9" * 20), "bad_resource_version"),
    ("path traversal in the name", msg("insert", "default/pod/..", pod(".."), rv="1"), "bad_resource"),
    ("four segments", msg("insert", "default/pod/a/b", pod("a"), rv="1"), "bad_resource"),
    ("list form for a write", msg("insert", "default/pod", pod("a"), rv="1"), "bad_resource"),
    ("unknown type", msg("insert", "default/clusterrole/admin", pod("admin"), rv="1"), "unsupported_resource_type"),
    ("wrong group", msg("insert", "default/pod/a", pod("a"), rv="1", group="twin"), "unsupported_group"),
    ("keepalive is not a store operation", msg("keepalive", "default/pod/a", None), "unsupported_operation"),
    ("content not an object", msg("insert", "default/pod/a", ["x"], rv="1"), "invalid_object"),
    ("delete content neither null nor object", msg("delete", "default/pod/a", "x", rv="1"), "invalid_object"),
    ("metadata not an object", msg("insert", "default/pod/a", {"metadata": []}, rv="1"), "invalid_object"),
    ("list query", msg("query", "default/secret", None), "not_supported"),
]


@pytest.mark.parametrize(("what", "message", "code"), REFUSED, ids=[r[0] for r in REFUSED])
def test_refused_messages_get_a_code_and_write_nothing(mm: MetaManager, what, message, code):
    with pytest.raises(PeerError) as info:
        run(mm, message)
    assert info.value.code == code
    m.validate_error_code(info.value.code)
    assert mm.store.inventory() == {}


def test_query_answers_from_the_store(mm: MetaManager):
    assert run(mm, msg("query", "default/pod/web", None)) == {"object": None, "rv": None, "deleted": False}
    run(mm, msg("insert", "default/secret/s", {"metadata": {"name": "s", "namespace": "default"},
                                               "data": {"k": "dg=="}}, rv="4"))
    reply = run(mm, msg("query", "default/secret/s", None))
    assert reply["rv"] == "4" and reply["object"]["data"] == {"k": "dg=="} and reply["deleted"] is False
    run(mm, msg("delete", "default/secret/s", None, rv="5"))
    assert run(mm, msg("query", "default/secret/s", None)) == {"object": None, "rv": "5", "deleted": True}


def test_process_is_handle_without_the_thread(mm: MetaManager):
    assert mm.process(msg("insert", "default/pod/a", pod("a"), rv="1"))["result"] == "applied"
    assert mm.process(msg("insert", "default/pod/a", pod("a"), rv="1"))["result"] == "duplicate"


# -- inventory -------------------------------------------------------------------------


def test_inventory_message_shape(mm: MetaManager):
    run(mm, msg("insert", "default/pod/a", pod("a"), rv="3"))
    run(mm, msg("insert", "default/secret/s", {"metadata": {"name": "s", "namespace": "default"}}, rv="4"))
    run(mm, msg("delete", "default/pod/b", None, rv="5"))
    (page,) = mm.inventory_messages(now_ms=NOW_MS)
    assert page.route.to_dict() == {"source": "metamanager", "destination": "edgecontroller",
                                    "group": "resource", "operation": "query",
                                    "resource": "edge-1/inventory/edge-1"}
    c = page.content
    assert c["inventory"] == {"default/pod/a": "3", "default/secret/s": "4"}
    assert c["tombstones"] == {"default/pod/b": "5"}
    assert (c["page"], c["pages"]) == (1, 1) and len(c["snapshot"]) == 16
    # It survives the wire under the default limits.
    again = m.Message.from_bytes(page.to_bytes(), DEFAULT)
    assert again == page


def test_empty_inventory_is_one_empty_page(mm: MetaManager):
    (page,) = mm.inventory_messages(now_ms=NOW_MS)
    assert page.content["inventory"] == {} and page.content["tombstones"] == {} and page.content["pages"] == 1


def test_large_inventory_is_paged_within_frame_bounds():
    live = {f"ns-{i % 50:02d}/configmap/{'n' * 200}-{i:05d}": str(10**18 + i) for i in range(2 * INVENTORY_PAGE_ITEMS + 5)}
    dead = {f"default/pod/{'d' * 240}-{i}": str(i + 1) for i in range(700)}
    pages = inventory_pages("edge-1", live, dead, now_ms=NOW_MS, snapshot="0123456789abcdef")
    assert len(pages) == 3
    seen_live: dict[str, str] = {}
    seen_dead: dict[str, str] = {}
    for n, page in enumerate(pages, start=1):
        wire = page.to_bytes()
        assert len(wire) <= DEFAULT.max_frame_bytes
        c = decode_json(wire, DEFAULT)["content"]  # the cloud's bounded decoder accepts it
        assert (c["page"], c["pages"], c["snapshot"]) == (n, 3, "0123456789abcdef")
        assert len(c["inventory"]) + len(c["tombstones"]) <= INVENTORY_PAGE_ITEMS
        seen_live.update(c["inventory"])
        seen_dead.update(c["tombstones"])
    assert seen_live == live and seen_dead == dead


def test_inventory_snapshot_ids_differ_per_call(mm: MetaManager):
    a = mm.inventory_messages(now_ms=NOW_MS)[0].content["snapshot"]
    b = mm.inventory_messages(now_ms=NOW_MS)[0].content["snapshot"]
    assert a != b


def test_edge_store_does_not_import_the_kubernetes_client():
    import subprocess
    import sys

    code = ("import sys, kedge.edge.metamanager as mm, kedge.edge.metamanager.handler, "
            "kedge.edge.metamanager.store; print('kubernetes' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "False"
