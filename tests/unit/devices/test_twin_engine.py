"""The twin table and engine without a broker: reports, desired changes, offline buffering."""

from __future__ import annotations

import json
import os
import random

from kedge.edge.devicetwin import model as tm
from kedge.edge.devicetwin.engine import TwinEngine
from kedge.edge.devicetwin.table import TwinTable

NOW = 1_700_000_000_000
MODEL = {"metadata": {"name": "thermostat", "namespace": "default", "resourceVersion": "1"},
         "spec": {"properties": [
             {"name": "target", "type": "INT", "accessMode": "ReadWrite", "minimum": "5", "maximum": "35"},
             {"name": "temp", "type": "FLOAT", "accessMode": "ReadOnly"}]}}


def device(name: str, target: str, rv: str = "10", node: str = "edge-1") -> dict:
    return {"metadata": {"name": name, "namespace": "default", "resourceVersion": rv},
            "spec": {"deviceModelRef": {"name": "thermostat"}, "nodeName": node,
                     "properties": [{"name": "target", "desired": {"value": target}}]}}


def update(**values) -> bytes:
    return json.dumps({"twin": {k: {"actual": {"value": v}} for k, v in values.items()}}).encode()


def topic(name: str, action: str) -> str:
    return tm.device_topic("default", name, action)


def make(table=None):
    published: list[tuple[str, bytes]] = []
    acl: list[set] = []
    table = table or TwinTable(":memory:")
    engine = TwinEngine(table, "edge-1", lambda t, p: published.append((t, p)), on_devices_changed=acl.append)
    engine.load([("default/device/a", device("a", "20")), ("default/devicemodel/thermostat", MODEL)], NOW)
    return engine, table, published, acl


def test_desired_value_is_published_as_delta_and_acl_follows_devices():
    engine, table, published, acl = make()
    assert published and published[-1][0] == topic("a", "twin/update/delta")
    assert json.loads(published[-1][1])["delta"] == {"target": "20"}
    assert acl[-1] == {("default", "a")}
    engine.object_changed("default/device/b", device("b", "21", node="edge-2"), NOW)
    assert acl[-1] == {("default", "a")}  # bound to another node: not ours
    engine.object_changed("default/device/a", None, NOW)
    assert acl[-1] == set() and table.twin("default", "a") == ({}, {})


def test_reports_are_buffered_until_acked_and_new_reports_survive_an_upload_in_flight():
    engine, table, _, _ = make()
    engine.handle_batch([(topic("a", "twin/update"), update(temp="21.5", target="20")),
                         (topic("a", "state/update"), b'{"state":"online"}')], NOW)
    sent = table.pending(10)
    assert len(sent) == 1 and sent[0]["state"] == "online"
    assert sent[0]["twins"]["target"] == {"value": "20", "timestamp": NOW, "observedDesired": "20"}
    engine.handle_batch([(topic("a", "twin/update"), update(temp="22.0"))], NOW + 1)  # arrives while in flight
    table.mark_sent(sent)
    left = table.pending(10)
    assert [set(e["twins"]) for e in left] == [{"temp"}] and left[0]["twins"]["temp"]["value"] == "22.0"
    table.mark_sent(left)
    assert table.pending(10) == [] and table.dirty_count() == 0


def test_reports_never_change_desired_and_a_newer_cloud_desired_wins():
    engine, table, published, _ = make()
    engine.handle_batch([(topic("a", "twin/update"), update(target="25"))], NOW)  # stale device-side state
    assert table.twin("default", "a") == ({"target": "20"}, {"target": "25"})
    engine.object_changed("default/device/a", device("a", "30", rv="11"), NOW)
    assert table.twin("default", "a")[0] == {"target": "30"}
    assert json.loads(published[-1][1])["delta"] == {"target": "30"}


def test_twin_get_is_answered_on_the_result_topic_only_for_known_devices():
    engine, _, published, _ = make()
    published.clear()
    engine.handle_batch([(topic("a", "twin/get"), b'{"event_id":"q1"}'), (topic("zz", "twin/get"), b"{}")], NOW)
    assert [t for t, _ in published] == [topic("a", "twin/get/result")]
    doc = json.loads(published[0][1])
    assert doc["event_id"] == "q1" and doc["twin"]["target"]["expected"]["value"] == "20"
    assert engine.rejects == {"unknown_device": 1}


def test_random_garbage_is_counted_and_the_engine_keeps_serving():
    engine, table, published, _ = make()
    rng = random.Random(5)
    actions = ["twin/update", "state/update", "twin/get", "twin/update/delta"]
    batch = []
    for i in range(400):
        payload = os.urandom(rng.randrange(0, 64)) if i % 2 else json.dumps(
            {"twin": {rng.choice(["target", "temp", "x"]): {"actual": {"value": rng.choice(["1", "99", "a", 3])}}}}
        ).encode()
        t = topic(rng.choice(["a", "b", "..", "+"]), rng.choice(actions))
        batch.append((t, payload))
    engine.handle_batch(batch, NOW)
    assert sum(engine.rejects.values()) > 100
    for prop, value in table.twin("default", "a")[1].items():
        assert engine.models[("default", "thermostat")].properties[prop].check_value(value) == value
    published.clear()
    engine.handle_batch([(topic("a", "twin/update"), update(temp="19.5"))], NOW)
    assert table.twin("default", "a")[1]["temp"] == "19.5"


def test_twin_table_is_private_and_durable(tmp_path):
    path = tmp_path / "twins.db"
    table = TwinTable(path)
    table.set_desired("default", "a", {"target": "20"}, "10")
    table.apply([("default", "a", {"temp": "1.5"}, NOW)])
    table.close()
    assert os.stat(path).st_mode & 0o777 == 0o600
    again = TwinTable(path)
    try:
        assert again.twin("default", "a") == ({"target": "20"}, {"temp": "1.5"})
        assert again.dirty_count() == 1  # still to upload after a restart
    finally:
        again.close()


def test_upload_order_is_oldest_unsent_first_and_busy_devices_do_not_hog_it():
    table = TwinTable(":memory:")
    try:
        for i, name in enumerate(["a", "b", "c"]):
            table.apply([("default", name, {"temp": "1"}, NOW + 10 * i)])
        first = table.pending(1)
        assert [e["name"] for e in first] == ["a"]
        table.apply([("default", "a", {"temp": "2"}, NOW + 100)])  # "a" reports again while in flight
        table.apply([("default", "b", {"temp": "2"}, NOW + 110)])  # "b" is superseded while waiting: keeps its place
        table.mark_sent(first)
        assert [e["name"] for e in table.pending(3)] == ["b", "c", "a"]
        assert [e["name"] for e in table.pending(3, exclude={("default", "b"), ("default", "c")})] == ["a"]
    finally:
        table.close()
