"""Benchmark the edge store: durable applies/s and inventory() time.

Usage: python benchmarks/edge_store_bench.py [--applies 2000] [--objects 10000] [--runs 3] [--dir DIR]

* applies/s: ``MetaStore.apply`` of ~1 KB objects with ``synchronous=FULL`` (each
  apply is one fsync'ed WAL commit, i.e. what the edge does before every ack), for
  configmaps (plaintext) and secrets (AES-256-GCM sealed), and through
  ``MetaManager.process`` (message validation + apply).
* inventory: ``MetaStore.inventory()`` and ``MetaManager.inventory_messages()`` (the
  paged resync messages) over a store holding ``--objects`` objects.

Each figure is the median of ``--runs`` runs on a fresh store. The store lives under
``--dir`` (default: a temp dir in the system temp location) -- put it on the disk you
care about: on tmpfs fsync is free and the applies/s figure means nothing. Bounded:
fixed counts, no network.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from kedge.edge.metamanager import MetaManager, MetaStore  # noqa: E402
from kedge.protocol import message as m  # noqa: E402

PAYLOAD = "x" * 900  # with metadata the stored JSON is ~1 KB


def _obj(kind: str, name: str) -> dict:
    return {"kind": kind, "metadata": {"name": name, "namespace": "default", "labels": {"app": "bench"}},
            "data": {"blob": PAYLOAD}}


def _fresh(base: Path, tag: str) -> tuple[MetaStore, Path]:
    d = base / tag
    if d.exists():
        shutil.rmtree(d)
    return MetaStore(d / "edge.db", d / "edge.key"), d


def bench_applies(base: Path, kind: str, n: int) -> float:
    store, _ = _fresh(base, f"apply-{kind}")
    try:
        started = time.perf_counter()
        for i in range(n):
            store.apply(f"default/{kind}/o{i % 500}", "update", str(i + 1), _obj(kind, f"o{i % 500}"), now=time.time())
        return n / (time.perf_counter() - started)
    finally:
        store.close()


def bench_process(base: Path, n: int) -> float:
    store, _ = _fresh(base, "process")
    mm = MetaManager(store, node="bench-node")
    msgs = [m.Message.new(source="edgecontroller", destination="metamanager", group="resource",
                          operation="update", resource=f"default/pod/p{i % 500}", content=_obj("pod", f"p{i % 500}"),
                          now_ms=0, resourceversion=str(i + 1)) for i in range(n)]
    try:
        started = time.perf_counter()
        for msg in msgs:
            mm.process(msg)
        return n / (time.perf_counter() - started)
    finally:
        store.close()


def fill(base: Path, n: int) -> Path:
    """A store with ``n`` objects (1/10 secrets, 1/20 deleted), written by one fill process."""
    store, d = _fresh(base, "inventory")
    kinds = ["pod", "configmap", "configmap", "pod", "pod", "configmap", "pod", "pod", "configmap", "secret"]
    try:
        for i in range(n):
            kind = kinds[i % len(kinds)]
            store.apply(f"default/{kind}/o{i}", "insert", str(i + 1), _obj(kind, f"o{i}"), now=time.time())
        for i in range(0, n, 20):
            kind = kinds[i % len(kinds)]
            store.apply(f"default/{kind}/o{i}", "delete", str(n + i + 1), None, now=time.time())
    finally:
        store.close()
    return d


def bench_inventory(d: Path) -> tuple[float, float, int, int, int]:
    store = MetaStore(d / "edge.db", d / "edge.key")
    try:
        t0 = time.perf_counter()
        inv = store.inventory()
        t1 = time.perf_counter()
        pages = MetaManager(store, node="bench-node").inventory_messages(now_ms=0)
        wire = sum(len(p.to_bytes()) for p in pages)
        t2 = time.perf_counter()
        return (t1 - t0) * 1000, (t2 - t1) * 1000, len(inv), len(pages), wire
    finally:
        store.close()


def _fs_type(path: Path) -> str:
    try:
        out = subprocess.run(["df", "-T", str(path)], capture_output=True, text=True, timeout=10,  # noqa: S603,S607
                             check=False).stdout.splitlines()
        return out[-1].split()[1] if len(out) > 1 else "?"
    except (OSError, subprocess.SubprocessError):
        return "?"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--applies", type=int, default=2000)
    ap.add_argument("--objects", type=int, default=10_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--dir", type=Path, default=None)
    args = ap.parse_args()
    base = Path(tempfile.mkdtemp(prefix="kedge-edge-bench-", dir=args.dir))
    try:
        print(f"store dir {base} (filesystem {_fs_type(base)}), python {sys.version.split()[0]}, "
              f"{os.cpu_count()} cpus")
        cm = [bench_applies(base, "configmap", args.applies) for _ in range(args.runs)]
        sec = [bench_applies(base, "secret", args.applies) for _ in range(args.runs)]
        proc = [bench_process(base, args.applies) for _ in range(args.runs)]
        print(f"apply configmap ~1KB, synchronous=FULL : {statistics.median(cm):8.0f} applies/s "
              f"(runs: {', '.join(f'{x:.0f}' for x in cm)})")
        print(f"apply secret ~1KB sealed, FULL        : {statistics.median(sec):8.0f} applies/s "
              f"(runs: {', '.join(f'{x:.0f}' for x in sec)})")
        print(f"MetaManager.process pod ~1KB, FULL    : {statistics.median(proc):8.0f} msgs/s "
              f"(runs: {', '.join(f'{x:.0f}' for x in proc)})")
        started = time.perf_counter()
        d = fill(base, args.objects)
        print(f"filled {args.objects} objects (+{len(range(0, args.objects, 20))} deletes) "
              f"in {time.perf_counter() - started:.1f}s; edge.db {(d / 'edge.db').stat().st_size // 1024} KiB")
        inv = [bench_inventory(d) for _ in range(args.runs)]
        n_keys = inv[0][2]
        pages, wire = inv[0][3], inv[0][4]
        print(f"inventory() over {n_keys} keys          : {statistics.median(x[0] for x in inv):8.1f} ms "
              f"(runs: {', '.join(f'{x[0]:.1f}' for x in inv)})")
        print(f"inventory_messages() -> {pages} pages, {wire // 1024} KiB: "
              f"{statistics.median(x[1] for x in inv):8.1f} ms (runs: {', '.join(f'{x[1]:.1f}' for x in inv)})")
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
