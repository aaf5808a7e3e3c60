"""The edge store behind the real tunnel: CloudHub pushes, EdgeHub + MetaManager ack after the write.

Real everything on 127.0.0.1: a cloud data dir made by ``kedge init``, a node joined
through the real ``kedge cloudcore`` certificate endpoint, then an in-process
:class:`~kedge.cloud.hub.CloudHub` (mutual TLS 1.3, the same class cloudcore runs)
so the test can push arbitrary messages -- the edgecontroller that will do it in
production does not exist yet -- to a real :class:`~kedge.edge.hub.EdgeHub` whose
handler is :meth:`MetaManager.handle` over a real ``EDGEDIR/edge.db``.

The resync test plays the cloud's side of the protocol documented in
``kedge/edge/metamanager/handler.py`` with a few lines of reference logic.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
from pathlib import Path
from typing import Any, AsyncIterator

import pytest

from kedge import tls
from kedge._internal.auditlog import AuditLog
from kedge.cloud.config import CloudDir
from kedge.cloud.hub import CloudHub, NodeSession
from kedge.cloud.state import CloudState
from kedge.edge.config import EdgeDir
from kedge.edge.metamanager import MetaManager, MetaStore
from kedge.protocol import message as m
from support.cluster import Cloud
from support.edge import edge_hub

NODE = "store-edge"
SECRET_VALUE = "tunnel-secret-Vb7q-never-on-disk"


@pytest.fixture(scope="module")
def joined(tmp_path_factory) -> tuple[Path, Path]:
    """A cloud dir and a joined edge dir; cloudcore is stopped again afterwards."""
    root = tmp_path_factory.mktemp("edgestore")
    cloud = Cloud(root).start()
    try:
        r = cloud.join(NODE, root / "edge")
        assert r.returncode == 0, r.stderr
    finally:
        cloud.stop()
    return cloud.dir, root / "edge"


@pytest.fixture()
def edge_dir(joined, tmp_path: Path) -> Path:
    """A fresh copy of the joined edge dir per test (its own edge.db)."""
    import shutil

    dst = tmp_path / "edge"
    shutil.copytree(joined[1], dst)
    return dst


class Pages:
    """The cloud's router: collects inventory pages and answers them."""

    def __init__(self) -> None:
        self.pages: list[dict[str, Any]] = []

    async def __call__(self, ns: NodeSession, msg: m.Message) -> Any:
        if msg.route.operation == m.QUERY and msg.route.resource == f"{ns.node}/inventory/{ns.node}":
            self.pages.append(msg.content)
            return {"ok": True}
        if msg.route.operation == m.KEEPALIVE:
            return {}
        return None


@contextlib.asynccontextmanager
async def cloud_hub(cloud_dir: Path, edge_dir: Path, router: Pages) -> AsyncIterator[CloudHub]:
    d = CloudDir(cloud_dir)
    cfg = d.load_config()
    ctx = tls.server_context(d.hub_crt, d.hub_key, d.ca_crt, client_cert="required")
    state = CloudState(d.state_db)
    audit = AuditLog(edge_dir.parent / "hub-audit.log")
    hub = CloudHub(ssl_ctx=ctx, limits=cfg.build_limits(), state=state, audit=audit, router=router)
    port = await hub.start("127.0.0.1", 0)
    ed = EdgeDir(edge_dir)
    ecfg = ed.load_config()
    ed.save_config(type(ecfg)(**{**ecfg.to_dict(), "hub": f"wss://127.0.0.1:{port}"}))
    try:
        yield hub
    finally:
        await hub.stop()
        state.close()
        audit.close()


async def session_of(hub: CloudHub) -> NodeSession:
    async with asyncio.timeout(10):
        while NODE not in hub.sessions:
            await asyncio.sleep(0.01)
    return hub.sessions[NODE]


def push(op: str, resource: str, content: Any, rv: str = "") -> m.Message:
    return m.Message.new(source="edgecontroller", destination="metamanager", group="resource", operation=op,
                         resource=resource, content=content, now_ms=int(time.time() * 1000), resourceversion=rv)


def meta(name: str, ns: str = "default", **extra) -> dict:
    return {"metadata": {"name": name, "namespace": ns}, **extra}


def open_store(edge_dir: Path) -> MetaStore:
    return MetaStore(edge_dir / "edge.db", edge_dir / "edge.key")


def test_pushed_changes_are_on_disk_when_acked_and_secrets_are_sealed(joined, edge_dir: Path):
    cloud_dir, _ = joined

    async def main() -> None:
        store = open_store(edge_dir)
        mm = MetaManager(store, node=NODE)
        pages = Pages()
        async with cloud_hub(cloud_dir, edge_dir, pages) as hub, edge_hub(edge_dir, handler=mm.handle):
            ns = await session_of(hub)
            b64 = base64.b64encode(SECRET_VALUE.encode()).decode()
            reply = await ns.request(push("insert", "default/secret/db", meta("db", data={"password": b64}), "10"),
                                     timeout=10)
            assert reply.route.operation == m.RESPONSE
            assert reply.content == {"ack": "10", "result": "applied", "stored": "10"}
            # Acked means durable: a separate connection to the file sees it at once.
            with open_store(edge_dir) as reader:
                assert reader.get("default/secret/db")["data"]["password"] == b64
            raw = b"".join(p.read_bytes() for p in edge_dir.iterdir() if p.name.startswith("edge.db"))
            for needle in (SECRET_VALUE.encode(), b64.encode()):
                assert needle not in raw

            reply = await ns.request(push("update", "default/pod/web", meta("web", spec={"v": 2}), "12"), timeout=10)
            assert reply.content["result"] == "applied"
            reply = await ns.request(push("update", "default/pod/web", meta("web", spec={"v": 1}), "11"), timeout=10)
            assert reply.content == {"ack": "11", "result": "stale", "stored": "12"}
            reply = await ns.request(push("update", "default/pod/web", meta("web", spec={"v": 2}), "12"), timeout=10)
            assert reply.content["result"] == "duplicate"
            reply = await ns.request(push("delete", "default/pod/web", None, "13"), timeout=10)
            assert reply.content["result"] == "applied"
            reply = await ns.request(push("insert", "default/pod/web", meta("web"), "12"), timeout=10)
            assert reply.content["result"] == "stale"  # no resurrection by a late resend

            # A lying message gets an error reply carrying only a code; the tunnel stays up.
            reply = await ns.request(push("insert", "default/secret/other-node", meta("db"), "14"), timeout=10)
            assert reply.route.operation == m.ERROR and reply.content == {"code": "resource_mismatch"}
            reply = await ns.request(push("update", "default/pod/web", meta("web"), "x1"), timeout=10)
            assert reply.content == {"code": "bad_resource_version"}
            reply = await ns.request(push("query", "default/secret/db", None), timeout=10)
            assert reply.content["rv"] == "10" and reply.content["object"]["data"]["password"] == b64
        store.close()

    asyncio.run(main())


def _cloud_diff(desired: dict[str, tuple[str, dict]], pages: list[dict]) -> list[m.Message]:
    """Reference cloud logic from the handler.py docstring: what to send after an inventory."""
    live: dict[str, str] = {}
    dead: dict[str, str] = {}
    for page in pages:
        live.update(page["inventory"])
        dead.update(page["tombstones"])
    out = []
    for key, (rv, obj) in sorted(desired.items()):
        held = live.get(key) or dead.get(key)
        if held is None or int(rv) > int(held):
            out.append(push("update" if key in live else "insert", key, obj, rv))
    for key, rv in sorted(live.items()):
        if key not in desired:
            out.append(push("delete", key, None, rv))
    return out


def test_resync_after_offline_restart_converges_including_deletions(joined, edge_dir: Path):
    cloud_dir, _ = joined

    async def main() -> None:
        # Before going offline the node held a, b, c, secret s, and had seen d deleted.
        with open_store(edge_dir) as s:
            for i, name in enumerate(["a", "b", "c"], start=1):
                s.apply(f"default/pod/{name}", "insert", str(i), meta(name, v=i), now=time.time())
            s.apply("default/secret/s", "insert", "4", meta("s", data={"k": "djE="}), now=time.time())
            s.apply("default/pod/d", "delete", "5", None, now=time.time())
        # Offline meanwhile in the cloud: a updated (rv 20), b deleted, e created (rv 21),
        # d stayed deleted; the secret is unchanged. edgecore restarts (new store object).
        desired = {
            "default/pod/a": ("20", meta("a", v="new")),
            "default/pod/c": ("3", meta("c", v=3)),
            "default/pod/e": ("21", meta("e", v=21)),
            "default/secret/s": ("4", meta("s", data={"k": "djE="})),
        }
        store = open_store(edge_dir)
        mm = MetaManager(store, node=NODE)
        changes: list[tuple[str, Any]] = []
        store.on_change(lambda k, o: changes.append((k, None if o is None else o["metadata"]["resourceVersion"])))
        pages = Pages()
        async with cloud_hub(cloud_dir, edge_dir, pages) as hub, edge_hub(edge_dir, handler=mm.handle) as ehub:
            ns = await session_of(hub)
            replies = await mm.send_inventory(ehub, timeout=10)
            assert [r.content for r in replies] == [{"ok": True}]
            assert len(pages.pages) == 1 and pages.pages[0]["pages"] == 1
            assert pages.pages[0]["inventory"] == {"default/pod/a": "1", "default/pod/b": "2", "default/pod/c": "3",
                                                   "default/secret/s": "4"}
            assert pages.pages[0]["tombstones"] == {"default/pod/d": "5"}
            diff = _cloud_diff(desired, pages.pages)
            assert sorted((x.route.operation, x.route.resource) for x in diff) == [
                ("delete", "default/pod/b"), ("insert", "default/pod/e"), ("update", "default/pod/a")]
            # The cloud sends the difference concurrently; every message is acked after its write.
            acks = await asyncio.gather(*(ns.request(x, timeout=10) for x in diff))
            assert all(a.route.operation == m.RESPONSE and a.content["result"] == "applied" for a in acks)
            # A resend of the whole resync (e.g. another replica) changes nothing.
            acks = await asyncio.gather(*(ns.request(
                push(x.route.operation, x.route.resource, x.content, x.header.resourceversion), timeout=10)
                for x in diff))
            assert {a.content["result"] for a in acks} == {"duplicate"}
        store.close()
        # Unchanged objects (c, the secret) were not touched: edged sees no event for them.
        assert sorted(changes) == [("default/pod/a", "20"), ("default/pod/b", None), ("default/pod/e", "21")]
        with open_store(edge_dir) as s:
            live, dead = s.snapshot()
            assert live == {k: rv for k, (rv, _) in desired.items()}
            assert dead == {"default/pod/b": "2", "default/pod/d": "5"}
            assert s.get("default/pod/a")["v"] == "new"

    asyncio.run(main())


def test_edge_restart_keeps_serving_from_the_store_while_offline(joined, edge_dir: Path):
    """No cloud at all: a restarted edge reads what it was given, secrets included."""
    with open_store(edge_dir) as s:
        s.apply("default/configmap/cfg", "insert", "7", meta("cfg", data={"mode": "edge"}), now=time.time())
        s.apply("default/secret/tls", "insert", "8", meta("tls", data={"key": "c2VjcmV0"}), now=time.time())
    edge_mode = (edge_dir / "edge.db").stat().st_mode & 0o777
    assert edge_mode == 0o600 and (edge_dir / "edge.key").stat().st_mode & 0o777 == 0o600
    with open_store(edge_dir) as s:
        mm = MetaManager(s, node=NODE)
        assert mm.process(push("query", "default/secret/tls", None))["object"]["data"] == {"key": "c2VjcmV0"}
        assert [o["metadata"]["name"] for o in s.list("configmap", "default")] == ["cfg"]
        assert json.loads(json.dumps(s.inventory())) == {"default/configmap/cfg": "7", "default/secret/tls": "8"}
