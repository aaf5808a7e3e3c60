"""Device management end to end: real cloudcore (embedded API server), real edgecore with a
real mosquitto, real kubectl, the example mapper as a real process.

- a Device's desired value reaches the thermostat mapper; its reports show in
  ``kubectl get device -o json`` status (and state online);
- reports made while the cloud is unreachable arrive once the link returns; a desired
  change made meanwhile reaches the mapper and is not overwritten by stale edge state;
- a flood of malformed payloads from one device leaves the twin serving other devices.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from support.cluster import REPO, Cloud, EdgeProcess, kedge, wait_until

pytestmark = pytest.mark.timeout(180)

# --------------------------------------------------------------------------- helpers
# (the benchmark imports these too)

# The real `kedge cloudcore` installs the devicecontroller and the real `kedge edgecore` runs
# devicetwin: the tests use exactly those processes.
DeviceCloud = Cloud


class DeviceEdge(EdgeProcess):
    """``kedge edgecore``, and where its broker listens."""

    def mqtt_url(self, timeout: float = 30) -> str:
        def read() -> str | None:
            try:
                return json.loads((self.dir / "endpoints.json").read_text()).get("mqtt")
            except (FileNotFoundError, ValueError):
                return None
        return wait_until(read, timeout, what="edge broker endpoint")


def kubectl(cloud: Cloud, *args: str, input: str | None = None, check: bool = True) -> str:
    env = dict(os.environ, KUBECONFIG=str(cloud.dir / "admin.kubeconfig"))
    r = subprocess.run(["kubectl", *args], input=input, capture_output=True, text=True, env=env, timeout=60)
    if check:
        assert r.returncode == 0, f"kubectl {' '.join(args)}: {r.stderr}"
    return r.stdout


def as_list(objs) -> str:
    import yaml

    return yaml.safe_dump_all(list(objs))


def apply_crds(cloud: Cloud) -> None:
    from kedge.cloud.devicecontroller.crds import CRDS

    kubectl(cloud, "apply", "-f", "-", input=as_list(CRDS))
    wait_until(lambda: "devicemodels" in kubectl(cloud, "api-resources", "--api-group=devices.kubeedge.io",
                                                 check=False), 20, what="device CRDs served")


def thermostat_model(ns: str = "default", name: str = "thermostat") -> dict:
    return {"apiVersion": "devices.kubeedge.io/v1beta1", "kind": "DeviceModel",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"protocol": "virtual", "properties": [
                {"name": "target-temperature", "type": "INT", "accessMode": "ReadWrite",
                 "minimum": "5", "maximum": "35", "unit": "C"},
                {"name": "temperature", "type": "FLOAT", "accessMode": "ReadOnly", "unit": "C"}]}}


def thermostat_device(node: str, name: str, target: str, ns: str = "default", model: str = "thermostat") -> dict:
    return {"apiVersion": "devices.kubeedge.io/v1beta1", "kind": "Device",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"deviceModelRef": {"name": model}, "nodeName": node,
                     "protocol": {"protocolName": "virtual"},
                     "properties": [{"name": "target-temperature", "desired": {"value": target}},
                                    {"name": "temperature"}]}}


def device_json(cloud: Cloud, name: str, ns: str = "default") -> dict:
    out = kubectl(cloud, "get", "device", name, "-n", ns, "-o", "json", check=False)
    try:
        return json.loads(out)
    except ValueError:
        return {}


def twin(obj: dict, prop: str, field: str = "reported") -> str | None:
    for t in (obj.get("status") or {}).get("twins") or []:
        if t.get("propertyName") == prop:
            return (t.get(field) or {}).get("value")
    return None


def credentials(cloud: Cloud, device: str, out: Path) -> Path:
    kedge("device", "credentials", "--data-dir", str(cloud.dir), "--device", device, "--out", str(out), check=True)
    return out


class MapperProcess:
    """``python -m kedge.mapper.examples.thermostat``; its JSON event lines are collected."""

    def __init__(self, device: str, creds: Path, broker: str, interval: float = 0.3) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "kedge.mapper.examples.thermostat", "--device", device, "--credentials",
             str(creds), "--broker", broker, "--interval", str(interval)],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=REPO)
        self.events: list[dict] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with contextlib.suppress(ValueError):
                self.events.append(json.loads(line))

    def saw(self, event: str, **fields) -> bool:
        return any(e.get("event") == event and all(e.get(k) == v for k, v in fields.items()) for e in self.events)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


# --------------------------------------------------------------------------- the cluster


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    root = tmp_path_factory.mktemp("devices")
    cloud = DeviceCloud(root).start()
    edge = mapper = None
    try:
        apply_crds(cloud)
        r = cloud.join("edge-1")
        assert r.returncode == 0, r.stderr
        edge = DeviceEdge(root / "edge-1", root / "edge-1.log")
        url = edge.mqtt_url()
        kubectl(cloud, "apply", "-f", "-", input=as_list([
            thermostat_model(), thermostat_device("edge-1", "thermo-1", "22"),
            thermostat_device("edge-1", "probe", "20")]))
        creds = credentials(cloud, "default/thermo-1", root / "creds-thermo-1")
        mapper = MapperProcess("default/thermo-1", creds, url)
        yield {"root": root, "cloud": cloud, "edge": edge, "url": url, "mapper": mapper, "creds": creds}
    finally:
        if mapper is not None:
            mapper.stop()
        if edge is not None:
            edge.stop()
        cloud.stop()


def test_broker_endpoint_is_tls_on_loopback(cluster):
    assert cluster["url"].startswith("mqtts://127.0.0.1:")
    # The twin table is created once the first device is bound to the node.
    twins = wait_until(lambda: (p := cluster["edge"].dir / "twins.db").exists() and p, 20, what="twins.db")
    assert twins.stat().st_mode & 0o777 == 0o600
    assert (cluster["edge"].dir / "pki" / "mqtt-broker.key").stat().st_mode & 0o777 == 0o600
    creds = cluster["creds"]
    assert (creds / "device.key").stat().st_mode & 0o777 == 0o600
    assert {p.name for p in creds.iterdir()} >= {"device.crt", "device.key", "ca.crt"}


def test_desired_value_reaches_mapper_and_report_reaches_device_status(cluster):
    cloud, mapper = cluster["cloud"], cluster["mapper"]
    wait_until(lambda: mapper.saw("desired", target="22"), 30, what="desired 22 at the mapper")
    wait_until(lambda: twin(device_json(cloud, "thermo-1"), "target-temperature") == "22", 20,
               what="reported target in Device status")
    # The twin report and the device's state report travel separately: wait for both.
    obj = wait_until(lambda: (o := device_json(cloud, "thermo-1")) and twin(o, "temperature")
                     and o["status"].get("state") == "online" and o, 20,
                     what="reported temperature and state online in Device status")
    assert float(twin(obj, "temperature")) > 18.0 - 0.01
    assert obj["status"].get("lastOnlineTime")
    assert twin(obj, "target-temperature", "observedDesired") in ("22", None)

    # A change made with kubectl reaches the mapper, and the mapper's confirmation comes back.
    kubectl(cloud, "patch", "device", "thermo-1", "--type=json", "-p",
            json.dumps([{"op": "replace", "path": "/spec/properties/0/desired/value", "value": "25"}]))
    wait_until(lambda: mapper.saw("desired", target="25"), 20, what="desired 25 at the mapper")
    wait_until(lambda: twin(device_json(cloud, "thermo-1"), "target-temperature") == "25", 20,
               what="reported 25 in Device status")


def test_offline_reports_arrive_and_cloud_desired_wins(cluster):
    from kedge.mapper import Mapper

    cloud, mapper, url, root = cluster["cloud"], cluster["mapper"], cluster["url"], cluster["root"]
    wait_until(lambda: mapper.saw("desired", target="25") or mapper.saw("desired", target="22"), 30,
               what="mapper running")
    probe_creds = credentials(cloud, "default/probe", root / "creds-probe")
    probe = Mapper("default/probe", probe_creds, url).start()
    stale = Mapper("default/thermo-1", cluster["creds"], url).start()
    try:
        assert probe.connected.wait(10) and stale.connected.wait(10)
        cloud.stop()  # the cloud (and its embedded API server) is gone
        time.sleep(0.3)
        probe.report({"temperature": "77.5"})  # made while the cloud is unreachable
        stale.report({"target-temperature": "24"})  # stale edge-side state for a property the cloud will change

        # Meanwhile an operator changes the desired value in the cloud (API server alone, no hub).
        api = subprocess.Popen([sys.executable, "-m", "kedge", "apiserver", "--data-dir", str(cloud.dir)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO)
        try:
            wait_until(lambda: kubectl(cloud, "get", "device", "thermo-1", check=False), 20, what="apiserver alone")
            kubectl(cloud, "patch", "device", "thermo-1", "--type=json", "-p",
                    json.dumps([{"op": "replace", "path": "/spec/properties/0/desired/value", "value": "30"}]))
        finally:
            api.terminate()
            api.wait(10)
        cloud.start()

        wait_until(lambda: twin(device_json(cloud, "probe"), "temperature") == "77.5", 40,
                   what="offline report in Device status after reconnect")
        wait_until(lambda: mapper.saw("desired", target="30"), 30, what="cloud's new desired at the mapper")
        final = wait_until(lambda: (o := device_json(cloud, "thermo-1")) and
                           twin(o, "target-temperature") == "30" and o, 20, what="reported 30")
        desired = [p["desired"]["value"] for p in final["spec"]["properties"] if p["name"] == "target-temperature"]
        assert desired == ["30"], "stale edge state must never overwrite the cloud's desired value"
        # A marker report from the same device after the stale one: reports of one device are applied
        # in order, so once the marker is in the status every earlier report has been applied too.
        # (A state report: the thermostat re-reports its state only every 30 s, its temperature every 0.3 s.)
        stale.report_state("unknown")
        marked = wait_until(lambda: (o := device_json(cloud, "thermo-1")) and
                            o.get("status", {}).get("state") == "unknown" and o, 25, what="marker report in status")
        assert twin(marked, "target-temperature") == "30"
    finally:
        probe.stop()
        stale.stop()


def test_malformed_payloads_do_not_stop_devicetwin(cluster):
    import paho.mqtt.client as mqtt

    from kedge import tls

    cloud, url, root, mapper = cluster["cloud"], cluster["url"], cluster["root"], cluster["mapper"]
    creds = root / "creds-probe"
    if not creds.exists():
        credentials(cloud, "default/probe", creds)
    host, port = url.removeprefix("mqtts://").rsplit(":", 1)
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="fuzzer", protocol=mqtt.MQTTv311)
    client.tls_set_context(tls.client_context(creds / "ca.crt", creds / "device.crt", creds / "device.key"))
    client.connect(host, int(port))
    client.loop_start()
    base = "$hw/events/device/default/probe/"
    bad = [
        b"", b"\x00\xff\xfe", b"{", b"[]", b"null", b'{"twin": []}', b'{"twin": {}}',
        b'{"twin": {"nope": {"actual": {"value": "1"}}}}',
        b'{"twin": {"target-temperature": {"actual": {"value": "999"}}}}',
        b'{"twin": {"target-temperature": {"actual": {"value": "warm"}}}}',
        b'{"twin": {"target-temperature": {"actual": {"value": 21}}}}',
        b'{"twin": {"temperature": {"actual": {"value": "' + b"9" * 600 + b'"}}}}',
        b'{"twin": {"' + b"k" * 200 + b'": {"actual": {"value": "1"}}}}',
        b"[" * 5000 + b"]" * 5000, b'{"twin": ' + b"x" * 20000 + b"}",
        b'{"state": "exploded"}',
    ]
    try:
        infos = []
        for _ in range(3):
            for payload in bad:
                for action in ("twin/update", "state/update", "twin/get"):
                    infos.append(client.publish(base + action, payload, qos=1))
        for info in infos:
            info.wait_for_publish(10)
        # The twin still serves the other device: a new desired value and its report round-trip.
        kubectl(cloud, "patch", "device", "thermo-1", "--type=json", "-p",
                json.dumps([{"op": "replace", "path": "/spec/properties/0/desired/value", "value": "21"}]))
        wait_until(lambda: mapper.saw("desired", target="21"), 30, what="desired 21 after the flood")
        wait_until(lambda: twin(device_json(cloud, "thermo-1"), "target-temperature") == "21", 20,
                   what="report after the flood")
        assert cluster["edge"].proc.poll() is None
        log = cluster["edge"].log.read_text(errors="replace")
        assert "devicetwin refused input" in log
        assert twin(device_json(cloud, "probe"), "target-temperature") is None  # nothing bad was applied
    finally:
        client.disconnect()
        client.loop_stop()


def test_state_reported_before_the_edge_knows_the_device_still_arrives(cluster):
    """A mapper may connect (and report "online") before its Device reaches the node: the broker
    refuses its subscriptions and the edge drops its reports until then, so the SDK asks for its
    twin again until it comes, and re-sends the state then."""
    from kedge.mapper import Mapper

    cloud, url, root = cluster["cloud"], cluster["url"], cluster["root"]
    # Credentials come from the device CA alone: the Device does not exist yet.
    creds = credentials(cloud, "default/late", root / "creds-late")
    m = Mapper("default/late", creds, url).start()
    try:
        assert m.connected.wait(15)
        m.report_state("online")  # dropped by the edge: unknown device
        time.sleep(0.5)
        kubectl(cloud, "apply", "-f", "-", input=as_list([thermostat_device("edge-1", "late", "21")]))
        obj = wait_until(lambda: (o := device_json(cloud, "late")) and o.get("status", {}).get("state") == "online"
                         and o, 30, what="state online for a device bound after its mapper connected")
        assert obj["status"].get("lastOnlineTime")
        assert m.twin_received.is_set() and m.desired.get("target-temperature") == "21"
    finally:
        m.stop()
        kubectl(cloud, "delete", "device", "late", check=False)


def _served_certificate(url: str, creds: Path) -> bytes | None:
    """The DER certificate the broker at ``url`` presents to a device (None while it restarts)."""
    import socket

    from kedge import tls

    host, port = url.removeprefix("mqtts://").rsplit(":", 1)
    ctx = tls.client_context(creds / "ca.crt", creds / "device.crt", creds / "device.key")
    try:
        with socket.create_connection((host, int(port)), 5) as raw, ctx.wrap_socket(raw, server_hostname=host) as s:
            return s.getpeercert(binary_form=True)
    except OSError:
        return None


def test_mqtt_certificates_are_renewed_while_running_with_keys_made_on_the_edge(tmp_path):
    """With short-lived MQTT certificates (45 s, the shortest a cloud accepts) a running edge
    renews them in time -- new keys made on the edge, certified from CSRs --, restarts its
    broker with them on the same address, and devices keep working across the swap."""
    import ssl

    cloud = DeviceCloud(tmp_path, config={"mqtt_cert_validity_s": 45}).start()
    edge = mapper = None
    try:
        apply_crds(cloud)
        assert cloud.join("edge-r").returncode == 0
        edge = DeviceEdge(tmp_path / "edge-r", tmp_path / "edge-r.log")
        url = edge.mqtt_url()
        kubectl(cloud, "apply", "-f", "-", input=as_list([thermostat_model(), thermostat_device("edge-r", "t", "20")]))
        creds = credentials(cloud, "default/t", tmp_path / "creds-t")
        mapper = MapperProcess("default/t", creds, url)
        wait_until(lambda: mapper.saw("desired", target="20"), 30, what="desired 20 at the mapper")
        pki_dir = edge.dir / "pki"
        first_cert = (pki_dir / "mqtt-broker.crt").read_bytes()
        first_key = (pki_dir / "mqtt-broker.key").read_bytes()
        first_served = wait_until(lambda: _served_certificate(url, creds), 10, what="broker certificate")
        assert ssl.DER_cert_to_PEM_cert(first_served).strip() == first_cert.decode().strip()

        # Due a third of the (back-dated) lifetime before expiry: about 10 s after issue.
        wait_until(lambda: (pki_dir / "mqtt-broker.crt").read_bytes() != first_cert, 40, what="renewed broker cert")
        assert (pki_dir / "mqtt-broker.key").read_bytes() != first_key
        assert (pki_dir / "mqtt-broker.key").stat().st_mode & 0o777 == 0o600
        assert edge.mqtt_url() == url  # same address for mappers
        renewed = wait_until(lambda: (c := _served_certificate(url, creds)) not in (None, first_served) and c, 20,
                             what="broker serving the renewed certificate")
        assert b"mqtt-broker:edge-r" in renewed

        # Devices keep working across the swap: a new desired value and the report round-trip.
        kubectl(cloud, "patch", "device", "t", "--type=json", "-p",
                json.dumps([{"op": "replace", "path": "/spec/properties/0/desired/value", "value": "26"}]))
        wait_until(lambda: mapper.saw("desired", target="26"), 30, what="desired 26 after the renewal")
        wait_until(lambda: twin(device_json(cloud, "t"), "target-temperature") == "26", 30,
                   what="report after the renewal")
        assert "MQTT certificates renewed" in edge.log.read_text(errors="replace")
        # Each issue is in the cloud's audit log, with the certificates' serials.
        issued = [r for r in cloud.audit() if r.get("event") == "mqtt_certs" and r.get("node") == "edge-r"]
        assert len(issued) >= 2 and all(r["result"] == "accepted" for r in issued)
        assert len({r["server_serial"] for r in issued}) == len(issued)
    finally:
        if mapper is not None:
            mapper.stop()
        if edge is not None:
            edge.stop()
        cloud.stop()
