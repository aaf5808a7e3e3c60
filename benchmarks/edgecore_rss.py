#!/usr/bin/env python3
"""Idle edgecore memory: a real `kedge edgecore` process, joined and connected to a real cloudcore.

    .venv/bin/python benchmarks/edgecore_rss.py [--runs 3] [--settle 5] [--metrics]

Each run: `kedge init` + `kedge cloudcore`, `kedge token create` + `kedge join`, then

1. **first start after join**: `kedge edgecore` connects over mutual TLS and provisions itself
   once (it fetches the MQTT broker certificates from the cloud's device CA, checks them, starts
   mosquitto); measured once the tunnel is up, provisioning done and `--settle` seconds passed;
2. **idle** (the headline): that edgecore is stopped and started again, as after a reboot or an
   upgrade: a provisioned node with its broker running, connected, no pods, no devices; measured
   after `--settle` seconds.

For each it prints the process's own VmRSS (what `ps`/`top` show), PSS and USS (private) from
/proc/PID/smaps_rollup, median and every run, in MiB and MB (goal: RSS <= 40 MB = 38.1 MiB),
and whether cryptography's native module is mapped. ``--metrics`` starts edgecore with
``--metrics-address 127.0.0.1:0`` (prometheus_client loaded, one scrape before measuring).
Asserts nothing; stops by itself.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from kedge.edge.broker import find_mosquitto  # noqa: E402 - after the sys.path line above

MIB = 1024 * 1024
GOAL_MB = 40.0


def kedge(*args: str) -> str:
    return subprocess.run([sys.executable, "-m", "kedge", *args], check=True, capture_output=True, text=True,
                          cwd=REPO).stdout


def memory_kb(pid: int) -> dict[str, int]:
    """VmRSS from status; Pss and private (USS) from smaps_rollup (RSS also counts shared library pages)."""
    rss = next(int(line.split()[1]) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
               if line.startswith("VmRSS:"))
    roll = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        key, _, rest = line.partition(":")
        if rest.strip().endswith("kB"):
            roll[key] = int(rest.split()[0])
    crypto = "cryptography/hazmat/bindings" in Path(f"/proc/{pid}/maps").read_text()
    return {"rss": rss, "pss": roll.get("Pss", 0), "uss": roll.get("Private_Clean", 0) + roll.get("Private_Dirty", 0),
            "crypto": int(crypto)}


def wait(pred, timeout=30.0, what="") -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return
        time.sleep(0.1)
    raise SystemExit(f"timed out: {what}")


def _json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def one_run(settle: float, broker: bool, metrics: bool = False) -> tuple[dict[str, int], dict[str, int], int]:
    root = Path(tempfile.mkdtemp(prefix="kedge-rss-"))
    cloud, edge = root / "cloud", root / "edge"
    connected = cloud / "connected.json"

    def edge_connected() -> bool:
        return "rss" in _json(connected).get("nodes", [])

    def start_edge() -> subprocess.Popen:
        extra = ["--metrics-address", "127.0.0.1:0"] if metrics else []
        return subprocess.Popen([sys.executable, "-m", "kedge", "edgecore", "--data-dir", str(edge), *extra],
                                stderr=subprocess.DEVNULL, cwd=REPO)

    def scrape() -> None:
        if metrics:
            import urllib.request

            wait(lambda: "metrics" in _json(edge / "endpoints.json"), what="edge metrics endpoint")
            with urllib.request.urlopen(_json(edge / "endpoints.json")["metrics"] + "/metrics", timeout=10) as r:
                r.read()

    def stop(proc: subprocess.Popen) -> None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)

    try:
        kedge("init", "--data-dir", str(cloud), "--api-port", "0", "--hub-port", "0", "--cert-port", "0")
        cc = subprocess.Popen([sys.executable, "-m", "kedge", "cloudcore", "--data-dir", str(cloud)],
                              stderr=subprocess.DEVNULL, cwd=REPO)
        try:
            ep = cloud / "endpoints.json"
            wait(lambda: "certs" in _json(ep), what="cloudcore endpoints")
            certs = _json(ep)["certs"].removeprefix("https://")
            token = kedge("token", "create", "--data-dir", str(cloud), "--node", "rss").strip()
            kedge("join", "--cloud", certs, "--token", token, "--node", "rss", "--data-dir", str(edge))

            ec = start_edge()
            try:
                wait(edge_connected, what="first connect")
                if broker:  # provisioning done: MQTT certificates fetched and mosquitto listening
                    wait(lambda: "mqtt" in _json(edge / "endpoints.json"), what="mosquitto up")
                time.sleep(settle)
                first = memory_kb(ec.pid)
            finally:
                stop(ec)
            wait(lambda: not edge_connected(), what="cloud sees the edge gone")

            ec = start_edge()
            try:
                wait(edge_connected, what="reconnect")
                scrape()
                time.sleep(settle)
                idle = memory_kb(ec.pid)
                cloud_rss = memory_kb(cc.pid)["rss"]
            finally:
                stop(ec)
        finally:
            stop(cc)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return first, idle, cloud_rss


def _report(label: str, samples: list[dict[str, int]]) -> None:
    def med(key: str) -> float:
        return statistics.median(s[key] for s in samples) * 1024

    def runs(key: str) -> str:
        return ", ".join(f"{s[key] / 1024:.1f}" for s in samples)

    rss = med("rss")
    verdict = "meets" if rss / 1e6 <= GOAL_MB else "misses"
    print(f"{label}:")
    print(f"  RSS  median {rss / MIB:.1f} MiB = {rss / 1e6:.1f} MB  (runs, MiB: {runs('rss')}); "
          f"{verdict} the goal <= {GOAL_MB:.0f} MB = {GOAL_MB * 1e6 / MIB:.1f} MiB (KubeEdge advertises 70 MB)")
    print(f"  PSS  median {med('pss') / MIB:.1f} MiB  (runs: {runs('pss')})")
    print(f"  USS  median {med('uss') / MIB:.1f} MiB  (runs: {runs('uss')}); the rest of RSS is shared library pages")
    print(f"  cryptography's native module mapped in {sum(s['crypto'] for s in samples)} of {len(samples)} runs")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--settle", type=float, default=5.0)
    ap.add_argument("--metrics", action="store_true", help="edgecore with --metrics-address 127.0.0.1:0")
    args = ap.parse_args()
    broker = find_mosquitto() is not None
    firsts, idles, clouds = [], [], []
    for _ in range(args.runs):
        first, idle, cloud_rss = one_run(args.settle, broker, args.metrics)
        firsts.append(first)
        idles.append(idle)
        clouds.append(cloud_rss)
    print(f"edgecore memory over {args.runs} runs, settle {args.settle:.0f} s; device broker (mosquitto): "
          f"{'running' if broker else 'not installed, device management off'}; metrics endpoint: "
          f"{'on (scraped once)' if args.metrics else 'off'}")
    _report("idle edgecore (provisioned node, restarted; the headline figure)", idles)
    _report("first start after join (includes the one-time provisioning)", firsts)
    print(f"cloudcore RSS with one edge: median {statistics.median(clouds) / 1024:.1f} MiB")


if __name__ == "__main__":
    main()
