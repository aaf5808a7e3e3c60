#!/usr/bin/env python3
"""Idle edgecore memory: a real `kedge edgecore` process, joined and connected to a real cloudcore.

    .venv/bin/python benchmarks/edgecore_rss.py [--runs 3] [--settle 5]

Prints the edgecore process's own VmRSS (and the cloudcore's) once the tunnel is up and idle,
median over runs. Asserts nothing; stops by itself.
"""

from __future__ import annotations

import argparse
import json
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def kedge(*args: str) -> str:
    return subprocess.run([sys.executable, "-m", "kedge", *args], check=True, capture_output=True, text=True,
                          cwd=REPO).stdout


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def rollup_kb(pid: int) -> dict[str, int]:
    """Pss and private (USS) from smaps_rollup: RSS also counts library pages other processes share."""
    out = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        key, _, rest = line.partition(":")
        if rest.strip().endswith("kB"):
            out[key] = int(rest.split()[0])
    return {"pss": out.get("Pss", 0), "uss": out.get("Private_Clean", 0) + out.get("Private_Dirty", 0)}


def wait(pred, timeout=30.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return
        time.sleep(0.1)
    raise SystemExit("timed out")


def one_run(settle: float) -> tuple[int, int, dict[str, int]]:
    root = Path(tempfile.mkdtemp(prefix="kedge-rss-"))
    cloud = root / "cloud"
    kedge("init", "--data-dir", str(cloud), "--api-port", "0", "--hub-port", "0", "--cert-port", "0")
    cc = subprocess.Popen([sys.executable, "-m", "kedge", "cloudcore", "--data-dir", str(cloud)],
                          stderr=subprocess.DEVNULL, cwd=REPO)
    try:
        ep = cloud / "endpoints.json"
        wait(lambda: ep.exists() and "certs" in json.loads(ep.read_text()))
        certs = json.loads(ep.read_text())["certs"].removeprefix("https://")
        token = kedge("token", "create", "--data-dir", str(cloud), "--node", "rss").strip()
        kedge("join", "--cloud", certs, "--token", token, "--node", "rss", "--data-dir", str(root / "edge"))
        ec = subprocess.Popen([sys.executable, "-m", "kedge", "edgecore", "--data-dir", str(root / "edge")],
                              stderr=subprocess.DEVNULL, cwd=REPO)
        try:
            conn = cloud / "connected.json"
            wait(lambda: conn.exists() and "rss" in json.loads(conn.read_text())["nodes"])
            time.sleep(settle)
            return rss_kb(ec.pid), rss_kb(cc.pid), rollup_kb(ec.pid)
        finally:
            ec.send_signal(signal.SIGTERM)
            ec.wait(10)
    finally:
        cc.send_signal(signal.SIGTERM)
        cc.wait(10)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--settle", type=float, default=5.0)
    args = ap.parse_args()
    edge, cloud, pss, uss = [], [], [], []
    for _ in range(args.runs):
        e, c, roll = one_run(args.settle)
        edge.append(e)
        cloud.append(c)
        pss.append(roll["pss"])
        uss.append(roll["uss"])
    print(f"edgecore idle RSS: median {statistics.median(edge) / 1024:.1f} MiB over {args.runs} runs "
          f"({', '.join(f'{x / 1024:.1f}' for x in edge)}); goal <= 40 MiB, KubeEdge advertises 70 MB")
    print(f"edgecore idle PSS: median {statistics.median(pss) / 1024:.1f} MiB; private (USS): median "
          f"{statistics.median(uss) / 1024:.1f} MiB (the rest of RSS is shared library pages)")
    print(f"cloudcore RSS with one edge: median {statistics.median(cloud) / 1024:.1f} MiB")


if __name__ == "__main__":
    main()
