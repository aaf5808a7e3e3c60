"""The devicecontroller's cache of Devices and DeviceModels: which nodes a change wakes, newest
resourceVersion wins, and the list-then-watch loop re-lists when a watch cannot resume."""

from __future__ import annotations

import asyncio

import pytest

from kedge.cloud import devicecontroller as dcm
from kedge.cloud.devicecontroller import DeviceController
from kedge.errors import LocalError


def dev(name: str, node: str, rv: int, *, model: str = "m", ns: str = "ns", status=None, labels=None) -> dict:
    meta = {"namespace": ns, "name": name, "resourceVersion": str(rv)}
    if labels:
        meta["labels"] = labels
    obj = {"metadata": meta, "spec": {"nodeName": node, "deviceModelRef": {"name": model}}}
    if status is not None:
        obj["status"] = status
    return obj


def model(name: str, rv: int, ns: str = "ns", props=("t",)) -> dict:
    return {"metadata": {"namespace": ns, "name": name, "resourceVersion": str(rv)},
            "spec": {"properties": [{"name": p, "type": "INT"} for p in props]}}


def loaded(devices=(), models=()) -> DeviceController:
    dc = DeviceController(None, None)  # type: ignore[arg-type]
    dc.replace("devices", list(devices))
    dc.replace("devicemodels", list(models))
    return dc


def test_a_list_wakes_only_nodes_whose_devices_changed_in_what_the_edge_sees():
    dc = loaded([dev("a", "edge-1", 1), dev("b", "edge-2", 2)])
    # Status (and with it the resourceVersion) changes every second: nobody is woken.
    assert dc.replace("devices", [dev("a", "edge-1", 3, status={"state": "online"}), dev("b", "edge-2", 2)]) == set()
    assert dc.replace("devices", [dev("a", "edge-1", 4, labels={"x": "y"}), dev("b", "edge-2", 2)]) == {"edge-1"}
    # Moved from one node to another: both must re-sync; gone: its node.
    assert dc.replace("devices", [dev("a", "edge-3", 5, labels={"x": "y"}), dev("b", "edge-2", 2)]) == {"edge-1", "edge-3"}
    assert dc.replace("devices", [dev("a", "edge-3", 5, labels={"x": "y"})]) == {"edge-2"}


def test_events_older_than_the_cache_change_nothing_and_deletes_wake_the_node():
    dc = loaded([dev("a", "edge-1", 10)])
    assert dc.apply("devices", {"type": "MODIFIED", "object": dev("a", "edge-2", 9)}) == set()
    assert dc.devices[("ns", "a")]["spec"]["nodeName"] == "edge-1"
    assert dc.apply("devices", {"type": "MODIFIED", "object": dev("a", "edge-2", 11)}) == {"edge-1", "edge-2"}
    assert dc.apply("devices", {"type": "DELETED", "object": dev("a", "edge-2", 12)}) == {"edge-2"}
    assert dc.devices == {}
    assert dc.apply("devices", {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "13"}}}) == set()


def test_a_model_change_wakes_the_nodes_of_devices_that_use_it_in_its_namespace():
    dc = loaded([dev("a", "edge-1", 1, model="m"), dev("b", "edge-2", 2, model="other"),
                 dev("c", "edge-3", 3, model="m", ns="elsewhere")], [model("m", 4), model("other", 5)])
    assert dc.apply("devicemodels", {"type": "MODIFIED", "object": model("m", 6, props=("t", "h"))}) == {"edge-1"}
    assert dc.apply("devicemodels", {"type": "MODIFIED", "object": model("m", 7, props=("t", "h"))}) == set()
    desired = dc.desired_for("edge-1")
    assert set(desired) == {"ns/device/a", "ns/devicemodel/m"}
    assert desired["ns/devicemodel/m"]["spec"]["properties"][1]["name"] == "h"
    assert "status" not in desired["ns/device/a"]


def test_no_desired_state_before_the_first_list(monkeypatch):
    monkeypatch.setattr(dcm, "FIRST_LOAD_WAIT_S", 0.01)
    dc = DeviceController(None, None)  # type: ignore[arg-type]
    dc.replace("devices", [dev("a", "edge-1", 1)])  # models not listed yet
    with pytest.raises(LocalError):
        dc.desired_for("edge-1")
    dc.replace("devicemodels", [])
    assert set(dc.desired_for("edge-1")) == {"ns/device/a"}


class ScriptedBackend:
    """Lists return the next scripted list; each watch yields the next scripted events."""

    concurrency = 1

    def __init__(self, lists, watches) -> None:
        self.lists, self.watches = list(lists), list(watches)
        self.watched_from: list[str] = []
        self.exhausted = asyncio.Event()

    async def list(self, plural):
        if not self.lists:
            self.exhausted.set()
            await asyncio.Event().wait()
        return self.lists.pop(0)

    async def watch(self, plural, rv):
        self.watched_from.append(rv)
        if not self.watches:
            self.exhausted.set()
            await asyncio.Event().wait()
        for event in self.watches.pop(0):
            if isinstance(event, Exception):
                raise event
            yield event


def test_follow_resumes_after_a_timeout_and_relists_after_410_or_a_dropped_watch():
    backend = ScriptedBackend(
        lists=[([dev("a", "edge-1", 5)], "5"), ([dev("a", "edge-1", 9), dev("b", "edge-2", 9)], "9"),
               ([], "12")],
        watches=[
            [{"type": "MODIFIED", "object": dev("a", "edge-2", 6)}],  # ends (timeout): resume from 6
            [{"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "8"}}},
             {"type": "ERROR", "object": {"code": 410}}],  # too old: list again
            [dcm.WatchRestart("dropped")],  # fell behind: list again
        ])
    dc = DeviceController(backend, None)
    woken: list[set[str]] = []
    dc.on_nodes_changed = woken.append

    async def go():
        task = asyncio.create_task(dc.follow("devices"))
        await asyncio.wait_for(backend.exhausted.wait(), 5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(go())
    assert backend.watched_from == ["5", "6", "9", "12"]
    assert [w for w in woken if w] == [{"edge-1"}, {"edge-1", "edge-2"}, {"edge-1", "edge-2"}, {"edge-1", "edge-2"}]
    assert dc.devices == {}


def test_a_device_recreated_with_the_same_spec_goes_down_at_its_new_resource_version():
    """The edge keeps a deleted device's tombstone at the deletion's version: the new device must
    arrive newer than that, not at its predecessor's spec version."""
    old = dev("a", "edge-1", 5)
    old["metadata"]["uid"] = "u1"
    dc = loaded([old])
    assert dc.desired_for("edge-1")["ns/device/a"]["metadata"]["resourceVersion"] == "5"
    dc.apply("devices", {"type": "MODIFIED", "object": {**old, "metadata": {**old["metadata"], "resourceVersion": "6"},
                                                        "status": {"state": "online"}}})
    assert dc.desired_for("edge-1")["ns/device/a"]["metadata"]["resourceVersion"] == "5"  # status only
    dc.apply("devices", {"type": "DELETED", "object": {**old, "metadata": {**old["metadata"], "resourceVersion": "7"}}})
    new = dev("a", "edge-1", 9)
    new["metadata"]["uid"] = "u2"
    assert dc.apply("devices", {"type": "ADDED", "object": new}) == {"edge-1"}
    assert dc.desired_for("edge-1")["ns/device/a"]["metadata"]["resourceVersion"] == "9"
