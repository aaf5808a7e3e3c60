"""The broker's ACL follows the node's devices through bursts of changes: reloads are coalesced
and confirmed once changes settle, so the last device added in a burst can publish (mosquitto
drops a SIGHUP that arrives while it is still reloading; before this, one device in a burst of
a thousand could stay denied for good). Real mosquitto, real TLS clients."""

from __future__ import annotations

import datetime as dt
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from kedge import tls
from kedge._internal import fsutil
from kedge.cloud.devicecontroller import pki as device_pki
from kedge.edge import broker as broker_mod
from kedge.edge.broker import Broker, find_mosquitto
from support.cluster import wait_until
from support.mqttcerts import broker_bundle

pytestmark = pytest.mark.timeout(120)


def client(name: str, ca: Path, crt: Path, key: Path, port: int) -> mqtt.Client:
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=name, protocol=mqtt.MQTTv311)
    c.tls_set_context(tls.client_context(ca, crt, key))
    c.connect("127.0.0.1", port)
    c.loop_start()
    return c


def test_the_last_device_of_a_burst_of_acl_changes_can_publish(tmp_path):
    if find_mosquitto() is None:
        pytest.fail("mosquitto is required (tests/install-system-deps.sh installs it)")
    cloud = tmp_path / "cloud"
    fsutil.make_private_dir(cloud / "pki")
    bundle = broker_bundle(cloud, tmp_path / "keys", "edge-1")
    files = {}
    for key in bundle:
        files[key] = tmp_path / key
        fsutil.write_private(files[key], bundle[key].encode())
    b = Broker(tmp_path / "mqtt", "edge-1", cafile=files["ca"], certfile=files["serverCert"],
               keyfile=files["serverKey"])
    b.start([])
    received = threading.Event()
    edgecore = client("edgecore", files["ca"], files["clientCert"], files["clientKey"], b.port)
    try:
        edgecore.on_message = lambda c, u, msg: received.set()
        edgecore.subscribe("$hw/events/device/+/+/twin/update", qos=1)
        names = [f"d{i:03d}" for i in range(400)]
        for i in range(1, len(names) + 1):  # devices arrive one by one, as a node's sync delivers them
            b.set_devices([("bench", n) for n in names[:i]])
        # Reloads are coalesced: far fewer than one per change (how few depends on how fast this
        # machine rewrites the file; 400 changes gave 2-20 on a quiet machine, 34 on a busy one).
        wait_until(lambda: b.reloads >= 2, 10, what="the burst's reload and its confirmation")
        assert b.reloads <= len(names) // 8, b.reloads

        crt, key, ca = device_pki.issue_device_credentials(cloud, "bench", names[-1],
                                                           now=dt.datetime.now(dt.timezone.utc))
        d = fsutil.make_private_dir(tmp_path / "last")
        for name, data in (("ca.crt", ca), ("device.crt", crt), ("device.key", key)):
            fsutil.write_private(d / name, data)
        last = client("last", d / "ca.crt", d / "device.crt", d / "device.key", b.port)
        try:
            wait_until(last.is_connected, 10, what="last device connected")
            # Until the burst's confirming reload (CONFIRM_AFTER_S after the last change) the broker
            # may still hold an ACL from mid-burst; after it, the last device must get through. A
            # broker that never loads the final ACL (the bug this guards) denies every attempt.
            deadline = time.monotonic() + broker_mod.RELOAD_DELAY_S + broker_mod.CONFIRM_AFTER_S + 5
            while not received.is_set() and time.monotonic() < deadline:
                last.publish(f"$hw/events/device/bench/{names[-1]}/twin/update", b"{}",
                             qos=1).wait_for_publish(5)
                received.wait(0.5)
            assert received.is_set(), "the last device's publishes were denied after the burst settled"
        finally:
            last.disconnect()
            last.loop_stop()
    finally:
        edgecore.disconnect()
        edgecore.loop_stop()
        b.stop()
