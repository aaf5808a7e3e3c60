"""Device twin throughput/latency: N simulated devices, 1 report/s each, to Device status.

Real cloudcore (embedded API server) + real edgecore with its mosquitto; every simulated
device has its own certificate from ``kedge device credentials``' CA and its own TLS
MQTT connection (publisher processes of up to 250 devices each). Each report's value is
its send time in ms. A report has reached Device status when a watch on Devices (as
admin) shows that value -- or a newer report of the same device, since status keeps
the newest and intermediate values may be coalesced -- in ``status.twins``; latency is
that moment minus the send time. Prints p50/p99/max latency, reports that never reached
status, edgecore and cloudcore CPU (% of one core, from /proc) and the 1-minute load average
(the machine may be shared) per run, then the median of runs.

    .venv/bin/python benchmarks/device_twin_bench.py [--devices 1000] [--seconds 20] [--runs 3] [--real-cluster]

By default cloudcore embeds the API server and writes status in-process; ``--real-cluster``
runs cloudcore against a separate ``kedge apiserver`` with the manifests' RBAC, so status
goes through the ``kubernetes`` client over HTTPS (API server CPU is reported too).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from integration.test_devices import (  # noqa: E402
    DeviceCloud, DeviceEdge, apply_crds, as_list, kubectl, thermostat_device, thermostat_model)
from support.cluster import wait_until  # noqa: E402

PER_PROCESS = 250


def publisher(creds: list[tuple[str, str]], port: int, seconds: float, go, ready, done) -> None:
    """One process: a TLS MQTT client per device; each reports once a second, spread evenly."""
    import paho.mqtt.client as mqtt

    from kedge import tls

    clients = []
    for device, d in creds:
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"bench-{device}"[:64], protocol=mqtt.MQTTv311)
        c.tls_set_context(tls.client_context(Path(d) / "ca.crt", Path(d) / "device.crt", Path(d) / "device.key"))
        c.connect_async("127.0.0.1", port)  # paho's thread connects (and reconnects) on its own
        c.loop_start()
        clients.append((device, c))
        time.sleep(0.002)  # do not storm the broker with handshakes
    deadline = time.time() + 60
    while time.time() < deadline and not all(c.is_connected() for _, c in clients):
        time.sleep(0.05)
    ready.put(sum(1 for _, c in clients if c.is_connected()))
    start_at = go.get(timeout=600)  # every publisher starts at the same moment, once all are connected
    while time.time() < start_at:
        time.sleep(0.01)
    n = len(clients)
    tick = 0
    sent: list[tuple[str, int]] = []
    end = start_at + seconds
    while time.time() < end:
        for i, (device, c) in enumerate(clients):
            due = start_at + tick + i / n
            delay = due - time.time()
            if delay > 0:
                time.sleep(delay)
            ns, name = device.split("/")
            value = int(time.time() * 1000)
            body = {"twin": {"temperature": {"actual": {"value": str(value)}}}}
            c.publish(f"$hw/events/device/{ns}/{name}/twin/update", json.dumps(body), qos=1)
            sent.append((name, value))
        tick += 1
    done.put(sent)
    time.sleep(1)
    for _, c in clients:
        c.disconnect()
        c.loop_stop()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def watch_status(cloud, stop: threading.Event, seen: dict[str, list[tuple[int, float]]]) -> None:
    """Record, per device, each reported temperature value the watch shows and when."""
    from kubernetes import client, config, watch

    cfg = client.Configuration()
    config.load_kube_config(config_file=str(cloud.dir / "admin.kubeconfig"), client_configuration=cfg)
    api = client.CustomObjectsApi(client.ApiClient(cfg))
    while not stop.is_set():
        w = watch.Watch()
        try:
            for ev in w.stream(api.list_namespaced_custom_object, "devices.kubeedge.io", "v1beta1", "bench",
                               "devices", timeout_seconds=30):
                now = time.time() * 1000
                obj = ev["object"]
                for t in (obj.get("status") or {}).get("twins") or []:
                    if t.get("propertyName") == "temperature":
                        v = (t.get("reported") or {}).get("value", "")
                        if v.isdigit():
                            seen.setdefault(obj["metadata"]["name"], []).append((int(v), now))
                if stop.is_set():
                    break
        except Exception as exc:  # noqa: BLE001 - benchmark: re-watch
            print("watch:", type(exc).__name__, file=sys.stderr)
            time.sleep(0.2)


class RealCluster:
    """``--real-cluster``: a separate ``kedge apiserver`` (data dir A, the "real cluster",
    authorising cloudcore only through the applied ``kedge manifests``) and ``kedge cloudcore
    --kubeconfig`` (data dir B) -- status writes go through the ``kubernetes`` client over
    HTTPS instead of in-process. Quacks like the embedded-mode Cloud where run_once needs it."""

    def __init__(self, root: Path) -> None:
        from integration.test_real_cluster_mode import CC_USER, Proc, _endpoints, write_remote_kubeconfig
        from support.cluster import kedge

        self.root, self._kedge, self._endpoints = root, kedge, _endpoints
        self.a, self.b = root / "A", root / "B"
        self.dir = self.a  # kubectl and the status watch talk to the real cluster as its admin
        ports = ["--api-port", "0", "--hub-port", "0", "--cert-port", "0"]
        for d in (self.a, self.b):
            kedge("init", "--data-dir", str(d), *ports, check=True)
        self.api = Proc(["apiserver", "--data-dir", str(self.a)], root / "apiserver.log")
        self.proc = None
        server = wait_until(lambda: _endpoints(self.a).get("api"), 30, what="A's API endpoint")
        kubeconfig = root / "cloudcore-on-a.kubeconfig"
        write_remote_kubeconfig(self.a, server, kubeconfig)
        manifests = kedge("manifests", "--node", "edge-1", "--cloudcore-user", CC_USER, check=True).stdout
        kubectl(self, "apply", "-f", "-", input=manifests)
        self.cloudcore = Proc(["cloudcore", "--data-dir", str(self.b), "--kubeconfig", str(kubeconfig)],
                              root / "cloudcore.log")
        self.proc = self.cloudcore.proc
        wait_until(lambda: _endpoints(self.b).get("certs"), 30, what="cloudcore endpoints")

    @property
    def device_ca_dir(self) -> Path:
        return self.b

    def join(self, node: str):
        token = self._kedge("token", "create", "--data-dir", str(self.b), "--node", node, check=True).stdout.strip()
        certs = self._endpoints(self.b)["certs"].removeprefix("https://")
        return self._kedge("join", "--cloud", certs, "--token", token, "--node", node, "--data-dir",
                           str(self.root / node))

    def stop(self) -> None:
        self.cloudcore.stop()
        self.api.stop()


def run_once(n: int, seconds: float, root: Path, *, real_cluster: bool = False) -> dict:
    cloud = RealCluster(root) if real_cluster else DeviceCloud(root).start()
    edge = None
    try:
        if not real_cluster:
            apply_crds(cloud)  # the manifests carry them in real-cluster mode
        assert cloud.join("edge-1").returncode == 0
        edge = DeviceEdge(root / "edge-1", root / "edge-1.log")
        url = edge.mqtt_url(60)
        port = int(url.rsplit(":", 1)[1])
        kubectl(cloud, "create", "namespace", "bench", check=False)
        docs = [thermostat_model(ns="bench")] + [thermostat_device("edge-1", f"d{i}", "20", ns="bench")
                                                 for i in range(n)]
        for i in range(0, len(docs), 250):
            kubectl(cloud, "apply", "-f", "-", input=as_list(docs[i:i + 250]))
        # Device credentials straight from the device CA (what `kedge device credentials` does).
        import datetime as dt

        from kedge._internal import fsutil
        from kedge.cloud.devicecontroller import pki as dpki
        now = dt.datetime.now(dt.timezone.utc)
        creds = []
        for i in range(n):
            crt, key, ca = dpki.issue_device_credentials(getattr(cloud, "device_ca_dir", cloud.dir), "bench", f"d{i}",
                                                         now=now)
            d = fsutil.make_private_dir(root / "creds" / f"d{i}")
            fsutil.write_private(d / "device.key", key)
            fsutil.atomic_write(d / "device.crt", crt)
            fsutil.atomic_write(d / "ca.crt", ca)
            creds.append((f"bench/d{i}", str(d)))
        acl = edge.dir / "mqtt" / "acl"
        wait_until(lambda: acl.exists() and acl.read_text().count("user device:bench/") == n, 120,
                   what="all devices synced to the edge")
        seen: dict[str, list[tuple[int, float]]] = {}
        stop = threading.Event()
        watcher = threading.Thread(target=watch_status, args=(cloud, stop, seen), daemon=True)
        watcher.start()
        ctx = mp.get_context("spawn")  # never fork a process that runs threads (watch, TLS)
        ready = ctx.Queue()
        done = ctx.Queue()
        go = ctx.Queue()
        procs = [ctx.Process(target=publisher, daemon=True, args=(creds[i:i + PER_PROCESS], port, seconds, go, ready, done))
                 for i in range(0, n, PER_PROCESS)]
        for p in procs:
            p.start()
        connected = sum(ready.get(timeout=300) for _ in procs)
        start_at = time.time() + 1
        for _ in procs:
            go.put(start_at)
        while time.time() < start_at:
            time.sleep(0.01)
        api_pid = cloud.api.proc.pid if real_cluster else None
        cpu0, ccpu0, t0 = cpu_seconds(edge.proc.pid), cpu_seconds(cloud.proc.pid), time.monotonic()
        acpu0 = cpu_seconds(api_pid) if api_pid else 0.0
        time.sleep(seconds)
        cpu1, ccpu1, t1 = cpu_seconds(edge.proc.pid), cpu_seconds(cloud.proc.pid), time.monotonic()
        acpu1 = cpu_seconds(api_pid) if api_pid else 0.0
        sent = [x for _ in procs for x in done.get(timeout=120)]
        for p in procs:
            p.join(60)
        time.sleep(5)  # let the tail arrive
        stop.set()
        watcher.join(10)
        # A report has reached status when status shows it or a newer report of that device
        # (status keeps the newest; a superseded report counts with the time its successor landed).
        lat, lost = [], 0
        for name, value in sent:
            hit = min((t for v, t in seen.get(name, []) if v >= value), default=None)
            if hit is None:
                lost += 1
            else:
                lat.append(hit - value)
        # A device none of whose reports arrived points at a broker ACL or binding problem, not load.
        silent = sorted({name for name, _ in sent} - {name for name, obs in seen.items() if obs})
        lat.sort()
        q = statistics.quantiles(lat, n=100) if len(lat) > 2 else [float("nan")] * 99
        distinct = sum(len({v for v, _ in obs}) for obs in seen.values())
        return {"devices": n, "connected": connected, "sent": len(sent), "not_reached": lost,
                "devices_never_reached": len(silent), **({"e.g.": silent[:3]} if silent else {}),
                "status_writes_seen": distinct,
                "p50_ms": round(q[49]), "p99_ms": round(q[98]), "max_ms": round(lat[-1]) if lat else None,
                "edgecore_cpu_pct": round(100 * (cpu1 - cpu0) / (t1 - t0), 1),
                "cloudcore_cpu_pct": round(100 * (ccpu1 - ccpu0) / (t1 - t0), 1),
                **({"apiserver_cpu_pct": round(100 * (acpu1 - acpu0) / (t1 - t0), 1)} if api_pid else {}),
                "load_avg_1m": round(os.getloadavg()[0], 1)}
    finally:
        if edge is not None:
            edge.stop()
        cloud.stop()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--devices", type=int, default=1000)
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--real-cluster", action="store_true",
                    help="cloudcore --kubeconfig against a separate API server (kubernetes client path)")
    args = ap.parse_args()
    results = []
    for r in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="kedge-devbench-") as tmp:
            res = run_once(args.devices, args.seconds, Path(tmp), real_cluster=args.real_cluster)
        print(json.dumps({"run": r + 1, **res}), flush=True)
        results.append(res)
    med = {k: statistics.median(x[k] for x in results) for k in ("p50_ms", "p99_ms", "max_ms", "edgecore_cpu_pct",
                                                                  "cloudcore_cpu_pct", "not_reached")}
    print(json.dumps({"median_of_runs": len(results), "devices": args.devices, "seconds": args.seconds,
                      "mode": "real-cluster" if args.real_cluster else "embedded", **med}))


if __name__ == "__main__":
    main()
