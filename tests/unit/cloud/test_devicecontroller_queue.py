"""devicecontroller status writes: per-device order across concurrent batches, one write per
device per turn, refusals per report, and a write failure answered for every queued report."""

from __future__ import annotations

import asyncio
import time

from kedge.cloud import hub
from kedge.cloud.devicecontroller import DeviceController
from kedge.errors import LocalError
from kedge.protocol import message as m

NODE = "edge-1"


class RecordingBackend:
    """A devicecontroller backend that records status patches in the order they land (the
    queue logic under test is the controller's; the real backends have their own tests)."""

    concurrency = 8

    def __init__(self, delay: float = 0.0, fail: set[str] | None = None) -> None:
        self.delay = delay
        self.fail = fail or set()
        self.patches: list[tuple[str, str, dict]] = []
        self.active: dict[str, int] = {}
        self.overlap = False

    async def get(self, plural, namespace, name):
        raise AssertionError(f"unexpected read of {plural} {namespace}/{name}")

    async def patch_status(self, ns, name, patch):
        self.active[name] = self.active.get(name, 0) + 1
        self.overlap = self.overlap or self.active[name] > 1
        try:
            await asyncio.sleep(self.delay)
            if name in self.fail:
                raise LocalError("API server answered 500", code="api_error")
            self.patches.append((ns, name, patch))
        finally:
            self.active[name] -= 1


def controller(api: RecordingBackend, names=("d0", "d1", "d2")) -> DeviceController:
    dc = DeviceController(api, None)
    dc.replace("devices", [{"metadata": {"namespace": "ns", "name": n, "resourceVersion": "1"},
                            "spec": {"nodeName": NODE}} for n in names])
    dc.replace("devicemodels", [])
    return dc


def message(op: str, resource: str, content) -> m.Message:
    return m.Message.new(source="edgehub", destination="cloudhub", group="resource", operation=op,
                         resource=resource, content=content, now_ms=0)


def batch(*entries) -> m.Message:
    return message(m.UPDATE, "default/devicestatus/batch", {"devices": list(entries)})


def report(name: str, state: str, ts: int = 1) -> dict:
    return {"namespace": "ns", "name": name, "state": state, "stateTimestamp": ts}


def test_a_device_keeps_its_order_across_concurrent_batches():
    api = RecordingBackend(delay=0.01)
    dc = controller(api)

    async def go():
        # Five batches for the same devices dispatched at once (as CloudHub may): each
        # device's states must reach the API server in batch order, never two at once.
        states = ["online", "offline", "online", "offline", "unknown"]
        tasks = [asyncio.create_task(dc.route_status(NODE, batch(*(report(n, s) for n in ("d0", "d1", "d2")))))
                 for s in states]
        return states, await asyncio.gather(*tasks)

    states, answers = asyncio.run(go())
    assert all(r["ok"] for a in answers for r in a["results"])
    assert not api.overlap
    for n in ("d0", "d1", "d2"):
        seen = [body["status"]["state"] for _, name, body in api.patches if name == n]
        # Reports queued together are written as one (the newest state); what is written is
        # in batch order and ends with the last batch's state.
        assert seen[-1] == "unknown"
        last = -1
        for x in seen:
            last = next(i for i in range(last + 1, len(states)) if states[i] == x)


def test_reports_queued_behind_a_busy_device_are_written_together():
    api = RecordingBackend(delay=0.05)
    dc = controller(api)

    async def go():
        first = asyncio.create_task(dc.route_status(NODE, batch(report("d0", "online"))))
        await asyncio.sleep(0.01)  # d0 is being written now
        rest = [asyncio.create_task(dc.route_status(NODE, batch(report("d0", s)))) for s in ("offline", "unknown")]
        return await asyncio.gather(first, *rest)

    answers = asyncio.run(go())
    assert [a["results"][0]["ok"] for a in answers] == [True, True, True]
    assert [body["status"]["state"] for _, _, body in api.patches] == ["online", "unknown"]


def test_refusals_are_per_report_and_foreign_devices_are_not_written():
    api = RecordingBackend()
    dc = controller(api)
    dc.apply("devices", {"type": "ADDED", "object": {"metadata": {"namespace": "ns", "name": "other",
                                                                  "resourceVersion": "2"},
                                                     "spec": {"nodeName": "edge-2"}}})
    dc._misses[("ns", "other")] = time.monotonic()  # no fresh read for this test (it has no API)

    async def go():
        return await dc.route_status(NODE, batch(report("d0", "online"), report("d0", "bogus"),
                                                 report("other", "online"), "junk"))

    results = asyncio.run(go())["results"]
    assert [r["ok"] for r in results] == [True, False, False, False]
    assert results[1]["code"] == "bad_state"
    assert results[2]["code"] == "forbidden"
    assert [(n, b["status"]["state"]) for _, n, b in api.patches] == [("d0", "online")]


def test_a_failed_write_is_answered_for_every_report_of_that_device():
    api = RecordingBackend(fail={"d1"})
    dc = controller(api)

    async def go():
        return await dc.route_status(NODE, batch(report("d0", "online"), report("d1", "online"),
                                                 report("d1", "offline")))

    results = asyncio.run(go())["results"]
    assert results[0]["ok"]
    assert [(r["ok"], r["code"], r["retry"]) for r in results[1:]] == [(False, "api_error", True)] * 2
    assert not dc._queued and not dc._busy and not dc._ready


def test_only_device_status_batches_run_concurrently_in_the_hub():
    assert hub._concurrent_ok(batch(report("d0", "online")))
    assert not hub._concurrent_ok(message(m.UPDATE, "ns/pod/p", {}))
    assert not hub._concurrent_ok(message(m.QUERY, "default/devicestatus/batch", {}))


def test_writes_in_flight_never_exceed_the_backends_concurrency():
    api = RecordingBackend(delay=0.01)
    api.concurrency = 3
    names = [f"d{i}" for i in range(12)]
    dc = controller(api, names)
    peak = 0
    patch = api.patch_status

    async def counting(ns, name, body):
        nonlocal peak
        peak = max(peak, sum(api.active.values()) + 1)
        await patch(ns, name, body)

    api.patch_status = counting

    async def go():
        return await asyncio.gather(*(dc.route_status(NODE, batch(*(report(n, "online") for n in names)))
                                      for _ in range(3)))

    answers = asyncio.run(go())
    assert all(r["ok"] for a in answers for r in a["results"])
    assert peak == 3
    assert {n for _, n, _ in api.patches} == set(names)
    assert dc._writers == 0 and not dc._queued and not dc._busy


def test_a_device_recreated_under_its_name_gets_its_first_report_written():
    api = RecordingBackend()
    dc = controller(api, names=("d0",))

    async def go():
        await dc.route_status(NODE, batch(report("d0", "offline")))
        # Deleted and created again (new uid, no status yet): the old device's last status must
        # not be the base that makes the same report look like "no change".
        dc.apply("devices", {"type": "DELETED", "object": {"metadata": {"namespace": "ns", "name": "d0",
                                                                        "resourceVersion": "5"}}})
        dc.apply("devices", {"type": "ADDED", "object": {"metadata": {"namespace": "ns", "name": "d0", "uid": "new",
                                                                      "resourceVersion": "6"},
                                                         "spec": {"nodeName": NODE}}})
        return await dc.route_status(NODE, batch(report("d0", "offline", ts=2)))

    assert asyncio.run(go())["results"][0]["ok"]
    assert [b["status"]["state"] for _, _, b in api.patches] == ["offline", "offline"]


def test_a_relist_without_a_device_forgets_what_was_written_for_it():
    api = RecordingBackend()
    dc = controller(api, names=("d0",))
    asyncio.run(dc.route_status(NODE, batch(report("d0", "online"))))
    assert ("ns", "d0") in dc._written
    dc.replace("devices", [])
    assert ("ns", "d0") not in dc._written
