"""Mapper SDK: talk to a kedge edge broker as one device, over MQTT with mutual TLS.

A mapper holds a device credential (``kedge device credentials`` -> ``device.crt``,
``device.key``, ``ca.crt``). It connects to ``mqtts://127.0.0.1:P`` (the edge's
``endpoints.json`` says P), verifies the broker against ``ca.crt`` (hostname/IP
checked), and may only use its own ``$hw/events/device/<ns>/<name>/#`` topics -- the
broker's ACL enforces that, whatever the mapper code does.

    mapper = Mapper("default/thermostat-1", "/path/to/creds", "mqtts://127.0.0.1:8883",
                    on_desired=lambda values: ...)
    mapper.start()
    mapper.report({"temperature": "21.5"})
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from pathlib import Path
from typing import Callable, Mapping
from urllib.parse import urlsplit

from kedge.edge.devicetwin import model as tm
from kedge.errors import ConfigError

log = logging.getLogger(__name__)

DesiredCallback = Callable[[dict[str, str]], None]
TWIN_RETRY_S = 2.0  # how often a mapper asks again while the edge does not know its device yet


def parse_broker_url(url: str) -> tuple[str, int]:
    """``mqtts://HOST:PORT`` -> (host, port); plaintext ``mqtt://`` is refused."""
    parts = urlsplit(url)
    if parts.scheme != "mqtts" or not parts.hostname or not parts.port:
        raise ConfigError("broker must be mqtts://HOST:PORT (TLS only)", code="bad_broker_url")
    return parts.hostname, parts.port


class Mapper:
    def __init__(self, device: str, credentials: str | Path, broker: str, *,
                 on_desired: DesiredCallback | None = None) -> None:
        import paho.mqtt.client as mqtt

        from kedge import tls

        self.ns, self.name = tm.parse_device_id(device)
        self.host, self.port = parse_broker_url(broker)
        creds = Path(credentials)
        self.on_desired = on_desired
        self.desired: dict[str, str] = {}
        self.connected = threading.Event()
        self.twin_received = threading.Event()
        self._stopped = threading.Event()
        self.state: str | None = None  # the last state reported (re-sent once the edge knows the device)
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                                  client_id=f"mapper-{self.ns}-{self.name}"[:64], protocol=mqtt.MQTTv311)
        self.client.tls_set_context(tls.client_context(creds / "ca.crt", creds / "device.crt", creds / "device.key"))
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = lambda *a: self.connected.clear()
        self.client.on_message = self._on_message

    def topic(self, action: str) -> str:
        return tm.device_topic(self.ns, self.name, action)

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            log.warning("broker refused the mapper: %s", reason_code)
            return
        self._ask_for_twin()
        self.connected.set()

    def _ask_for_twin(self) -> None:
        self.client.subscribe(self.topic(tm.DELTA), qos=1)
        self.client.subscribe(self.topic(tm.GET_RESULT), qos=1)
        self.client.publish(self.topic("twin/get"), json.dumps({"event_id": uuid.uuid4().hex}), qos=1)

    def _until_twin(self) -> None:
        # Until the edge knows this device its broker ACL refuses our subscriptions and the edge
        # drops our reports; ask again every few seconds until the first twin arrives.
        while not self._stopped.wait(TWIN_RETRY_S) and not self.twin_received.is_set():
            if self.connected.is_set():
                self._ask_for_twin()

    def _on_message(self, client, userdata, msg) -> None:
        try:
            doc = tm.load_json(msg.payload)  # bounded: size, nesting, strict JSON
        except tm.TwinRejected as exc:
            log.debug("dropped a message from the edge: %s", exc.code)
            return
        twin = doc.get("twin") if isinstance(doc, dict) else None
        if not isinstance(twin, dict):
            return
        desired = {}
        for prop, entry in twin.items():
            exp = entry.get("expected") if isinstance(entry, dict) else None
            if isinstance(exp, dict) and isinstance(exp.get("value"), str):
                desired[str(prop)] = exp["value"]
        changed = desired != self.desired
        self.desired = desired
        if not self.twin_received.is_set() and self.state is not None:
            # The edge drops reports for a device it does not know yet, and the binding may have
            # reached the node after we connected: the first twin says it knows us now.
            self.report_state(self.state)
        self.twin_received.set()
        if changed and self.on_desired is not None:
            try:
                self.on_desired(dict(desired))
            except Exception:  # noqa: BLE001 - a mapper callback bug must not kill the MQTT thread
                log.exception("on_desired callback failed")

    def start(self) -> "Mapper":
        self.client.connect_async(self.host, self.port, keepalive=30)
        self.client.loop_start()
        threading.Thread(target=self._until_twin, name="mapper-twin-retry", daemon=True).start()
        return self

    def stop(self) -> None:
        self._stopped.set()
        self.client.disconnect()
        self.client.loop_stop()

    def report(self, values: Mapping[str, str]) -> None:
        """Publish reported values (``twin/update``, KubeEdge shape); strings only."""
        twin = {p: {"actual": {"value": str(v)}, "metadata": {"type": "Updated"}} for p, v in values.items()}
        body = {"event_id": uuid.uuid4().hex, "timestamp": int(time.time() * 1000), "twin": twin}
        self.client.publish(self.topic("twin/update"), json.dumps(body, separators=(",", ":")), qos=1)

    def report_state(self, state: str = "online") -> None:
        self.state = state
        self.client.publish(self.topic("state/update"), json.dumps({"state": state}), qos=1)
