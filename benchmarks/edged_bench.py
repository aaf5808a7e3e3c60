"""Benchmark edged's process runtime.

Usage: python benchmarks/edged_bench.py [--rss-pods 20] [--pods 100] [--runs 3]

1. RSS: a fresh Python process runs a PodManager with N sleeping pods (``/bin/sleep``)
   and reports its own VmRSS / VmHWM (not the pods'), next to the RSS of the same
   interpreter with only ``asyncio`` imported (the floor any edgecore pays).
2. Start latency: time from ``sync()`` of N new pods to each pod's first status with
   phase Running (what edgecore would forward upstream), p50/p99.
Each figure is the median of ``--runs`` runs. Everything is bounded by deadlines.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess  # nosec B404 - the benchmark starts itself as a child
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SLEEP = shutil.which("sleep") or "/bin/sleep"


def _pods(n: int, tag: str) -> list[dict]:
    return [{"metadata": {"uid": f"{tag}-{i}", "namespace": "bench", "name": f"p{i}"},
             "spec": {"terminationGracePeriodSeconds": 1,
                      "containers": [{"name": "c", "image": "bench", "command": [SLEEP, "3600"]}]}}
             for i in range(n)]


def _root() -> Path:
    base = Path(tempfile.mkdtemp(prefix="kedge-edged-bench-"))
    os.chmod(base, 0o711)  # the pods' user must reach its directory
    return base


def _rss_kib() -> tuple[int, int]:
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value
    return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])


async def _rss_child(n: int) -> dict:
    from kedge.edge.edged import PodManager, ProcessRuntime

    base = _root()
    running: set[str] = set()
    mgr = PodManager(base / "pods", runtime=ProcessRuntime(), lookup=lambda *a: None,
                     on_status=lambda ns, name, st: running.add(name) if st["phase"] == "Running" else None)
    task = asyncio.create_task(mgr.run())
    try:
        await mgr.sync(_pods(n, "rss"))
        deadline = time.monotonic() + 30
        while len(running) < n and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await asyncio.sleep(3)  # a few idle supervision ticks
        rss, hwm = _rss_kib()
        return {"running": len(running), "rss_kib": rss, "hwm_kib": hwm}
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await mgr.shutdown(stop_pods=True)
        shutil.rmtree(base, ignore_errors=True)


def _floor_child() -> dict:
    import asyncio  # noqa: F401,F811 - the floor: interpreter + asyncio

    rss, hwm = _rss_kib()
    return {"rss_kib": rss, "hwm_kib": hwm}


def _child(mode: str, n: int) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", mode, "--rss-pods", str(n)],  # nosec B603
                         capture_output=True, text=True, timeout=120, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


async def _latency(n: int) -> list[float]:
    from kedge.edge.edged import PodManager, ProcessRuntime

    base = _root()
    first_running: dict[str, float] = {}

    def on_status(ns: str, name: str, st: dict) -> None:
        if st["phase"] == "Running" and name not in first_running:
            first_running[name] = time.perf_counter()

    mgr = PodManager(base / "pods", runtime=ProcessRuntime(), lookup=lambda *a: None, on_status=on_status,
                     tick_s=1.0)
    task = asyncio.create_task(mgr.run())
    try:
        await asyncio.sleep(0.1)
        t0 = time.perf_counter()
        await mgr.sync(_pods(n, "lat"))
        deadline = time.monotonic() + 60
        while len(first_running) < n and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
        if len(first_running) < n:
            raise SystemExit(f"only {len(first_running)}/{n} pods reached Running")
        return sorted(t - t0 for t in first_running.values())
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await mgr.shutdown(stop_pods=True)
        shutil.rmtree(base, ignore_errors=True)


def _pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, max(0, int(round(q * len(values) + 0.5)) - 1))]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rss-pods", type=int, default=20)
    ap.add_argument("--pods", type=int, default=100)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--child", choices=("rss", "floor"))
    args = ap.parse_args()
    if args.child == "rss":
        print(json.dumps(asyncio.run(_rss_child(args.rss_pods))))
        return
    if args.child == "floor":
        print(json.dumps(_floor_child()))
        return

    print(f"edged benchmark: python {sys.version.split()[0]}, euid {os.geteuid()}, "
          f"{os.cpu_count()} cpus, pods = {SLEEP} 3600")
    floors = [_child("floor", 0) for _ in range(args.runs)]
    rss = [_child("rss", args.rss_pods) for _ in range(args.runs)]
    assert all(r["running"] == args.rss_pods for r in rss), rss  # nosec B101 - benchmark sanity
    med = statistics.median
    print(f"RSS, interpreter + asyncio only:          {med(f['rss_kib'] for f in floors) / 1024:6.1f} MiB")
    print(f"RSS, PodManager with {args.rss_pods:3d} sleeping pods:   "
          f"{med(r['rss_kib'] for r in rss) / 1024:6.1f} MiB (peak {med(r['hwm_kib'] for r in rss) / 1024:.1f} MiB)"
          f"  runs: {[round(r['rss_kib'] / 1024, 1) for r in rss]}")
    p50s, p99s, maxs = [], [], []
    for _ in range(args.runs):
        lat = asyncio.run(_latency(args.pods))
        p50s.append(_pct(lat, 0.50))
        p99s.append(_pct(lat, 0.99))
        maxs.append(lat[-1])
    print(f"sync() -> Running, {args.pods} pods: p50 {med(p50s) * 1000:7.1f} ms   p99 {med(p99s) * 1000:7.1f} ms"
          f"   max {med(maxs) * 1000:7.1f} ms   (median of {args.runs}; p99 per run "
          f"{[round(x * 1000, 1) for x in p99s]})")


if __name__ == "__main__":
    main()
