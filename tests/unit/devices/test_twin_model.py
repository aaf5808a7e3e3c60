"""The twin core: Device/DeviceModel parsing, value checks, topics, payload bounds, status merge."""

from __future__ import annotations

import json

import pytest

from kedge.edge.devicetwin import model as tm

MODEL = {"metadata": {"name": "thermostat", "namespace": "default"},
         "spec": {"properties": [
             {"name": "target", "type": "INT", "accessMode": "ReadWrite", "minimum": "5", "maximum": "35"},
             {"name": "temp", "type": "FLOAT", "accessMode": "ReadOnly"},
             {"name": "on", "type": "boolean"},
             {"name": "label", "type": "STRING"}]}}


def model() -> tm.DeviceModel:
    return tm.DeviceModel.from_object(MODEL)


def update(**values) -> bytes:
    return json.dumps({"event_id": "x", "twin": {k: {"actual": {"value": v}} for k, v in values.items()}}).encode()


def code_of(fn, *args) -> str:
    with pytest.raises(tm.TwinRejected) as info:
        fn(*args)
    return info.value.code


def test_model_parses_kubeedge_v1beta1_fields():
    m = model()
    assert m.properties["target"] == tm.PropertySpec("target", "INT", "ReadWrite", 5.0, 35.0, "")
    assert m.properties["on"].type == "BOOLEAN"


@pytest.mark.parametrize("bad", [
    {"metadata": {"name": "m"}, "spec": {"properties": [{"name": "p", "type": "COMPLEX"}]}},
    {"metadata": {"name": "m"}, "spec": {"properties": [{"name": "p", "type": "INT", "minimum": "9", "maximum": "1"}]}},
    {"metadata": {"name": "m"}, "spec": {"properties": [{"name": "p", "type": "INT", "minimum": "inf"}]}},
    {"metadata": {"name": "m"}, "spec": {"properties": [{"name": "p", "type": "INT", "accessMode": "Write"}]}},
    {"metadata": {"name": "../m"}, "spec": {}},
    {"metadata": {"name": "m"}},
])
def test_malformed_models_are_refused(bad):
    with pytest.raises(tm.TwinRejected):
        tm.DeviceModel.from_object(bad)


def test_report_within_model_is_accepted():
    assert tm.parse_twin_update(update(target="22", temp="-3.5e1", on="true", label="kitchen"), model()) == {
        "target": "22", "temp": "-3.5e1", "on": "true", "label": "kitchen"}


@pytest.mark.parametrize("payload,code", [
    (update(target="36"), "out_of_range"),
    (update(target="4"), "out_of_range"),
    (update(target="2.5"), "bad_type"),
    (update(temp="NaN"), "bad_type"),
    (update(temp="1e999"), "bad_type"),
    (update(on="yes"), "bad_type"),
    (update(nope="1"), "unknown_property"),
    (update(label="x" * 513), "value_too_long"),
    (json.dumps({"twin": {"k" * 129: {"actual": {"value": "1"}}}}).encode(), "key_too_long"),
    (json.dumps({"twin": {"target": {"actual": {"value": 22}}}}).encode(), "bad_type"),
    (json.dumps({"twin": {"target": {"expected": {"value": "22"}}}}).encode(), "bad_payload"),
    (json.dumps({"twin": {}}).encode(), "bad_payload"),
    (b"[" * 10000 + b"]" * 10000, "payload_too_large"),
    (b"[" * 4000 + b"]" * 4000, "bad_json"),  # nesting deeper than the JSON parser allows
    (b'{"twin": ' + b" " * tm.MAX_PAYLOAD_BYTES + b"{}}", "payload_too_large"),
    (b"\xff\xfe", "bad_json"),
    (b"{", "bad_json"),
])
def test_bad_reports_are_refused_with_a_stable_code(payload, code):
    assert code_of(tm.parse_twin_update, payload, model()) == code


def test_one_bad_entry_refuses_the_whole_report():
    assert code_of(tm.parse_twin_update, update(target="22", temp="hot"), model()) == "bad_type"


@pytest.mark.parametrize("topic", [
    "$hw/events/device/default/a/twin/update", "$hw/events/device/ns-1/a.b/state/update",
    "$hw/events/device/default/a/twin/get"])
def test_device_topics_parse(topic):
    t = tm.parse_topic(topic)
    assert topic.endswith(t.action) and t.device_id in topic


@pytest.mark.parametrize("topic", [
    "$hw/events/device/default/+/twin/update", "$hw/events/device/default/#",
    "$hw/events/device/../a/twin/update", "$hw/events/device/default/../twin/update",
    "$hw/events/device/default//twin/update", "$hw/events/device/default/a/twin/update/delta",
    "$hw/events/device/default/a/twin/get/result", "$hw/events/device/Default/a/twin/update",
    "$hw/events/device/default/a\x00/twin/update", "hw/events/device/default/a/twin/update",
    "$hw/events/device/default/a/other", "$hw/events/device/" + "a/" * 300 + "twin/update",
    b"\xff", None,
])
def test_topics_with_wildcards_traversal_or_unknown_actions_are_refused(topic):
    assert code_of(tm.parse_topic, topic) == "bad_topic"


def test_state_updates_use_a_fixed_vocabulary():
    assert tm.parse_state_update(b'{"state": "online"}') == "online"
    assert code_of(tm.parse_state_update, b'{"state": "<script>"}') == "bad_state"


def test_device_desired_values_outside_the_model_are_not_sent_to_mappers():
    dev = tm.Device.from_object({"metadata": {"name": "d", "namespace": "default", "resourceVersion": "5"},
                                 "spec": {"deviceModelRef": {"name": "thermostat"}, "nodeName": "n",
                                          "properties": [{"name": "target", "desired": {"value": "99"}},
                                                         {"name": "temp", "desired": {"value": "1"}},
                                                         {"name": "label", "desired": {"value": "x"}}]}})
    assert dev.valid_desired(model()) == {"label": "x"}  # out of range; ReadOnly


def test_delta_carries_only_values_not_yet_reported():
    doc = json.loads(tm.delta_payload({"target": "22", "label": "a"}, {"target": "22"}, model(), 5))
    assert doc["delta"] == {"label": "a"}
    assert doc["twin"]["target"]["expected"]["value"] == "22" and doc["twin"]["target"]["actual"]["value"] == "22"


def _report(ts: int, value: str = "22", observed: str | None = None) -> dict:
    entry = {"namespace": "default", "name": "d", "twins": {"target": {"value": value, "timestamp": ts}}}
    if observed is not None:
        entry["twins"]["target"]["observedDesired"] = observed
    return tm.check_status_report(entry, model())


def test_status_merge_newest_wins():
    s1 = tm.merge_status({}, _report(100, "22", "22"), "T1")
    assert s1["twins"] == [{"propertyName": "target", "reported": {"value": "22", "metadata": {"timestamp": "100"}},
                            "observedDesired": {"value": "22", "metadata": {"timestamp": "100"}}}]
    assert tm.merge_status(s1, _report(50, "7"), "T2") is None  # a stale buffered report changes nothing
    s3 = tm.merge_status(s1, _report(200, "30"), "T3")
    assert s3["twins"][0]["reported"]["value"] == "30"
    assert s3["twins"][0]["observedDesired"]["value"] == "22"  # kept until a report says otherwise


def test_status_report_from_edge_is_checked_against_the_model():
    with pytest.raises(tm.TwinRejected):
        tm.check_status_report({"namespace": "default", "name": "d",
                                "twins": {"target": {"value": "99", "timestamp": 1}}}, model())
    with pytest.raises(tm.TwinRejected):
        tm.check_status_report({"namespace": "default", "name": "d",
                                "twins": {"target": {"value": "9", "timestamp": 1}}}, None)
    with pytest.raises(tm.TwinRejected):
        tm.check_status_report({"namespace": "default", "name": "d", "state": "exploded"}, model())
    assert tm.merge_status({}, tm.check_status_report({"namespace": "default", "name": "d", "state": "online"},
                                                      model()), "T")["lastOnlineTime"] == "T"


def test_device_ids():
    assert tm.parse_device_id("default/thermo-1") == ("default", "thermo-1")
    for bad in ("thermo", "a/b/c", "../x", "Default/x", "ns/", "/x"):
        with pytest.raises(tm.TwinRejected):
            tm.parse_device_id(bad)
