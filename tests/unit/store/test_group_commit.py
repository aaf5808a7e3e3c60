"""Group commit: concurrent writes share one transaction and one fsync, yet each keeps its own
outcome, its place in resourceVersion order and its durability before acknowledgement.

The writer thread takes whatever is queued when it wakes; to put several writes in one
transaction deterministically, a test holds the store's hand-over lock while it submits
them (the writer cannot take the queue meanwhile), then lets go.
"""

from __future__ import annotations

import asyncio
import json

import pytest

from kedge.apiserver.api import API, Request, User, Watch
from kedge.store.sqlite import AlreadyExists, Conflict, NotFound, Store, StoreError

ADMIN = User("admin", ("system:masters", "system:authenticated"))
CM = "/configmaps"


def _cm(name: str, value: str = "v") -> dict:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": "ns"},
            "data": {"k": value}}


def _rv(obj: dict) -> int:
    return int(obj["metadata"]["resourceVersion"])


def test_writes_held_back_together_commit_in_one_transaction_in_order(tmp_path):
    s = Store(tmp_path / "api.db")
    seen: list[int] = []
    s.subscribe(lambda ev: seen.append(ev.rv))
    before = s.transactions
    with s._cv, s.deferred() as c:  # the writer cannot take the queue until both are released
        objs = [s.create(CM, "ns", f"c{i}", _cm(f"c{i}")) for i in range(50)]
        assert s.current_rv < _rv(objs[-1])  # decided and stamped, not yet published
        assert s.get(CM, "ns", "c7", committed=True) is None  # nor visible to committed reads
    assert s.wait(c) is None
    assert s.transactions == before + 1
    rvs = [_rv(o) for o in objs]
    assert rvs == list(range(rvs[0], rvs[0] + 50)) and seen == rvs
    assert s.current_rv == rvs[-1]
    s.close()
    again = Store(tmp_path / "api.db")
    assert sorted(_rv(json.loads(r)) for r in again.list_raw(CM, "ns")[1]) == rvs
    assert [e.rv for e in again.events_since(rvs[0] - 1)] == rvs
    again.close()


def test_concurrent_writers_on_the_loop_are_all_durable_in_rv_order(tmp_path):
    """Many asyncio "requests" write at once; fewer transactions than writes; every
    acknowledged object is on disk after reopening, and listeners saw rv order."""
    s = Store(tmp_path / "api.db")
    seen: list[int] = []
    s.subscribe(lambda ev: seen.append(ev.rv))
    acked: dict[str, int] = {}

    async def writer(w: int) -> None:
        for i in range(40):
            with s.deferred() as c:
                obj = s.create(CM, "ns", f"w{w}-{i}", _cm(f"w{w}-{i}"))
            assert await asyncio.wait_for(s.wait_async(c), 30) is None
            assert s.current_rv >= _rv(obj)  # acknowledged only once published
            acked[f"w{w}-{i}"] = _rv(obj)

    async def main() -> None:
        s.attach(asyncio.get_running_loop())
        await asyncio.gather(*(writer(w) for w in range(16)))

    before = s.transactions
    asyncio.run(main())
    assert len(acked) == 16 * 40
    assert s.transactions - before < len(acked)  # grouped
    assert seen == sorted(seen) and len(seen) == len(acked)
    s.close()
    again = Store(tmp_path / "api.db")
    stored = {json.loads(r)["metadata"]["name"]: _rv(json.loads(r)) for r in again.list_raw(CM, "ns")[1]}
    assert stored == acked
    again.close()


def test_a_failing_write_in_a_batch_fails_alone(tmp_path):
    """A write SQLite refuses (a lone surrogate cannot be stored as UTF-8) fails with a store
    error; the writes before and after it in the same transaction commit; a write decided on
    the failed one's state is refused too, instead of resurrecting it."""
    s = Store(tmp_path / "api.db")
    seen: list[str] = []
    s.subscribe(lambda ev: seen.append(ev.name))
    before = s.transactions
    with s._cv, s.deferred() as c:
        s.create(CM, "ns", "a", _cm("a"))
        s.create(CM, "ns", "bad", _cm("bad", "\ud800"))
        s.update(CM, "ns", "bad", _cm("bad", "fixed"))  # decided on the (not yet failed) create
        s.create(CM, "ns", "b", _cm("b"))
    failure = s.wait(c)
    assert s.transactions == before + 1
    assert isinstance(failure, StoreError) and failure.code == "invalid"
    errors = [w.error for w in c.writes]
    assert errors[0] is None and errors[3] is None
    assert isinstance(errors[1], StoreError) and isinstance(errors[2], NotFound)
    assert seen == ["a", "b"]
    assert s.get(CM, "ns", "bad") is None  # the pending state was dropped with the failure
    s.close()
    again = Store(tmp_path / "api.db")
    assert sorted(json.loads(r)["metadata"]["name"] for r in again.list_raw(CM, "ns")[1]) == ["a", "b"]
    again.close()


def test_preconditions_see_writes_not_yet_committed(tmp_path):
    s = Store(tmp_path / "api.db")
    first = s.create(CM, "ns", "a", _cm("a"))
    with s._cv, s.deferred() as c:
        s.update(CM, "ns", "a", _cm("a", "1"), expected_rv=_rv(first))
        with pytest.raises(Conflict):
            s.update(CM, "ns", "a", _cm("a", "2"), expected_rv=_rv(first))
        with pytest.raises(AlreadyExists):
            s.create(CM, "ns", "a", _cm("a"))
        s.delete(CM, "ns", "a")
        with pytest.raises(NotFound):
            s.update(CM, "ns", "a", _cm("a", "3"))
    assert s.wait(c) is None
    assert s.get(CM, "ns", "a") is None and s.count(CM) == 0
    s.close()


def _req(method: str, path: str, body: dict | None = None, ctype: str = "application/json") -> Request:
    raw = json.dumps(body).encode() if body is not None else b""
    return Request(method, path, {"content-type": [ctype]}, raw, ADMIN)


def test_a_409_conflict_inside_a_batch_is_still_a_409(tmp_path):
    """Two updates carrying the same resourceVersion arrive together: one wins, the other is
    409 Conflict -- even though neither is on disk when the second is decided."""
    s = Store(tmp_path / "api.db")
    api = API(s, clock=lambda: 1_700_000_000.0)
    path = "/api/v1/namespaces/default/configmaps"
    created = api.handle(_req("POST", path, {"metadata": {"name": "c"}, "data": {"v": "0"}}))
    assert created.status == 201
    rv = json.loads(created.body)["metadata"]["resourceVersion"]

    async def main() -> list:
        s.attach(asyncio.get_running_loop())
        with s._cv:  # both requests are decided before the writer may take either
            tasks = [asyncio.ensure_future(api.handle_async(_req(
                "PUT", f"{path}/c", {"metadata": {"name": "c", "resourceVersion": rv}, "data": {"v": str(i)}})))
                for i in (1, 2)]
            await asyncio.sleep(0)  # both run up to their wait for the disk
        return await asyncio.wait_for(asyncio.gather(*tasks), 30)

    before = s.transactions
    first, second = asyncio.run(main())
    assert s.transactions == before + 1
    assert first.status == 200 and second.status == 409
    assert json.loads(second.body)["reason"] == "Conflict"
    assert s.get(CM, "default", "c", committed=True)["data"] == {"v": "1"}
    s.close()


def test_a_write_refused_in_the_batch_answers_its_own_error_and_others_succeed(tmp_path):
    s = Store(tmp_path / "api.db")
    api = API(s, clock=lambda: 1_700_000_000.0)
    path = "/api/v1/namespaces/default/configmaps"
    bodies = [{"metadata": {"name": "good-1"}}, {"metadata": {"name": "bad"}, "data": {"v": "\ud800"}},
              {"metadata": {"name": "good-2"}}]

    async def main() -> list:
        s.attach(asyncio.get_running_loop())
        with s._cv:
            tasks = [asyncio.ensure_future(api.handle_async(_req("POST", path, b))) for b in bodies]
            await asyncio.sleep(0)
        return await asyncio.wait_for(asyncio.gather(*tasks), 30)

    before = s.transactions
    statuses = [r.status for r in asyncio.run(main())]
    assert s.transactions == before + 1
    assert statuses == [201, 400, 201]
    names = sorted(json.loads(r)["metadata"]["name"] for r in s.list_raw(CM, "default")[1])
    assert names == ["good-1", "good-2"]
    s.close()


def test_watch_sees_every_batched_write_once_in_order(tmp_path):
    """A watch from a list's resourceVersion, while writes are committed in groups: each
    event once, rvs strictly increasing, nothing the list already had sent again."""
    s = Store(tmp_path / "api.db")
    api = API(s, clock=lambda: 1_700_000_000.0)
    path = "/api/v1/namespaces/default/configmaps"
    for i in range(5):
        assert api.handle(_req("POST", path, {"metadata": {"name": f"pre-{i}"}})).status == 201

    async def main() -> tuple[Watch, int, list]:
        s.attach(asyncio.get_running_loop())
        with s._cv:  # writes decided but not committed when the list is taken
            early = [asyncio.ensure_future(api.handle_async(_req("POST", path, {"metadata": {"name": f"e-{i}"}})))
                     for i in range(10)]
            await asyncio.sleep(0)
        listing = await api.handle_async(_req("GET", path))
        list_rv = int(json.loads(listing.body)["metadata"]["resourceVersion"])
        w = await api.handle_async(_req("GET", f"{path}?watch=1&resourceVersion={list_rv}"))
        assert isinstance(w, Watch)
        later = [asyncio.ensure_future(api.handle_async(_req("POST", path, {"metadata": {"name": f"l-{i}"}})))
                 for i in range(30)]
        results = await asyncio.wait_for(asyncio.gather(*early, *later), 30)
        return w, list_rv, [json.loads(listing.body)] + [json.loads(r.body) for r in results]

    w, list_rv, (listing, *written) = asyncio.run(main())
    events = [json.loads(x) for x in w.lines]
    listed = {o["metadata"]["name"] for o in listing["items"]}
    rvs = [int(e["object"]["metadata"]["resourceVersion"]) for e in events]
    assert rvs == sorted(set(rvs)) and all(rv > list_rv for rv in rvs)
    got = {e["object"]["metadata"]["name"] for e in events}
    assert got | listed == {o["metadata"]["name"] for o in written} | {f"pre-{i}" for i in range(5)}
    assert not got & listed
    s.close()
