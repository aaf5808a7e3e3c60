"""Fuzz devicetwin: mapper MQTT messages (topic + payload) into the twin engine.

Invariant: ``TwinEngine.handle_batch`` never raises on any (topic, payload) -- every bad
input is refused with a stable ``[a-z][a-z0-9_]*`` code and counted -- and:

1. only valid reports are applied: every reported value in the twin table is a string
   that its property's type and range accept, for a property the model declares;
2. mapper input never changes desired state (the cloud's desired wins);
3. the engine keeps serving another device: a well-formed ``twin/get`` for it after
   the fuzzed input is answered with a ``twin/get/result`` holding its desired value;
4. ``parse_topic`` accepts only ``$hw/events/device/<ns>/<name>/<action>`` with no
   wildcards, empty levels or traversal.

Input: the first line is a topic (raw bytes) when the input starts with ``$``; otherwise
the first byte picks one of a few well-formed topics (device, action). The rest is the
payload. No clock, network or disk: SQLite ``:memory:``, fixed ``now``.

Run: ``.venv/bin/python fuzz/targets/fuzz_twin.py -max_total_time=60 /tmp/fuzz-twin fuzz/corpus/twin``
"""

from __future__ import annotations

import re
import sys

from kedge.edge.devicetwin import model as tm
from kedge.edge.devicetwin.engine import TwinEngine
from kedge.edge.devicetwin.table import TwinTable

NOW = 1_700_000_000_000
NODE = "edge-1"
CODE = re.compile(r"^[a-z][a-z0-9_]*$")
MODEL = {"apiVersion": "devices.kubeedge.io/v1beta1", "kind": "DeviceModel",
         "metadata": {"name": "thermostat", "namespace": "default"},
         "spec": {"properties": [
             {"name": "target-temperature", "type": "INT", "accessMode": "ReadWrite", "minimum": "5", "maximum": "35"},
             {"name": "temperature", "type": "FLOAT", "accessMode": "ReadOnly"},
             {"name": "enabled", "type": "BOOLEAN", "accessMode": "ReadWrite"},
             {"name": "label", "type": "STRING", "accessMode": "ReadWrite"}]}}


def _device(name: str, target: str) -> dict:
    return {"apiVersion": "devices.kubeedge.io/v1beta1", "kind": "Device",
            "metadata": {"name": name, "namespace": "default", "resourceVersion": "7"},
            "spec": {"deviceModelRef": {"name": "thermostat"}, "nodeName": NODE,
                     "properties": [{"name": "target-temperature", "desired": {"value": target}}]}}


DEVICES = ("fuzzed", "other")
ACTIONS = ("twin/update", "state/update", "twin/get", "twin/update/delta", "twin/get/result")


def _split(data: bytes) -> tuple[object, bytes]:
    if data[:1] == b"$":
        topic, _, payload = data.partition(b"\n")
        return topic, payload
    if not data:
        return "", b""
    sel = data[0]
    dev = DEVICES[sel % 2] if sel < 0xF0 else "unbound"
    return tm.device_topic("default", dev, ACTIONS[(sel >> 1) % len(ACTIONS)]), data[1:]


def test_one_input(data: bytes) -> None:
    published: list[tuple[str, bytes]] = []
    table = TwinTable(":memory:")
    try:
        engine = TwinEngine(table, NODE, lambda t, p: published.append((t, p)))
        engine.load([("default/devicemodel/thermostat", MODEL), ("default/device/fuzzed", _device("fuzzed", "20")),
                     ("default/device/other", _device("other", "21"))], NOW)
        model = engine.models[("default", "thermostat")]
        topic, payload = _split(data)
        try:
            t = tm.parse_topic(topic)
        except tm.TwinRejected as exc:
            assert CODE.match(exc.code), exc.code
        else:
            assert t.action in tm.ACTIONS_IN and ".." not in t.device_id
            assert not any(c in t.device_id for c in "+#")
        engine.handle_batch([(topic, payload)] * 2, NOW)
        assert all(CODE.match(code) for code in engine.rejects), engine.rejects
        for dev in DEVICES:
            desired, reported = table.twin("default", dev)
            assert desired == {"target-temperature": "20" if dev == "fuzzed" else "21"}, desired
            for prop, value in reported.items():
                assert model.properties[prop].check_value(value) == value
        published.clear()
        engine.handle_batch([(tm.device_topic("default", "other", "twin/get"), b'{"event_id":"e"}')], NOW)
        assert len(published) == 1 and published[0][0].endswith("/other/twin/get/result"), published
        assert b'"value":"21"' in published[0][1]
    finally:
        table.close()


def main() -> None:
    import atheris  # only the fuzzing run needs it; the replay test does not

    atheris.instrument_all()
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
