"""Benchmark the embedded API server: creates/s, GET p99, LIST of all pods, watch fan-out latency.

Usage: python benchmarks/apiserver_bench.py [--pods 10000] [--watchers 100] [--clients 8]

Starts `kedge init` + `kedge apiserver` in a temporary directory (real TLS, real SQLite
with synchronous=FULL), fills it with pods through several keep-alive connections and
prints figures. Bounded: every phase has a deadline.
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from kedge import tls  # noqa: E402


def _conn(data: Path, url: str) -> http.client.HTTPSConnection:
    host, port = url.removeprefix("https://").rsplit(":", 1)
    ctx = tls.client_context(data / "pki" / "ca.crt", data / "pki" / "admin.crt", data / "pki" / "admin.key")
    return http.client.HTTPSConnection(host, int(port), context=ctx, timeout=60)


def _req(conn, method, path, body=None):
    conn.request(method, path, body=json.dumps(body).encode() if body is not None else None,
                 headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    return resp.status, resp.read()


def _pod(name: str, node: str) -> dict:
    return {"metadata": {"name": name, "labels": {"app": "bench"}},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "registry.example/app:1",
                                                       "env": [{"name": "K", "value": "v"}]}]}}


def start(tmp: Path) -> tuple[subprocess.Popen, Path, str]:
    data = tmp / "cloud"
    subprocess.run([sys.executable, "-m", "kedge", "init", "--data-dir", str(data), "--api-port", "0"],
                   cwd=REPO, check=True, capture_output=True, timeout=60)
    proc = subprocess.Popen([sys.executable, "-m", "kedge", "apiserver", "--data-dir", str(data)], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        ep = data / "endpoints.json"
        if ep.exists():
            api = json.loads(ep.read_text()).get("api")
            if api:
                return proc, data, api
        time.sleep(0.05)
    proc.kill()
    raise SystemExit("apiserver did not start")


def _fill_worker(args: tuple[str, str, int, int, float]) -> int:
    data, url, start_i, count, stop_at = args
    conn = _conn(Path(data), url)
    ok = 0
    for i in range(start_i, start_i + count):
        if time.time() > stop_at:
            break
        status, _ = _req(conn, "POST", "/api/v1/namespaces/default/pods", _pod(f"pod-{i:05d}", f"node-{i % 50}"))
        ok += status == 201
    return ok


def fill(data: Path, url: str, pods: int, clients: int, deadline_s: float) -> tuple[int, float]:
    """Create ``pods`` pods from ``clients`` processes (separate processes: the client must not be the bottleneck)."""
    per = -(-pods // clients)
    stop_at = time.time() + deadline_s
    jobs = [(str(data), url, k * per, min(per, pods - k * per), stop_at) for k in range(clients)]
    t0 = time.perf_counter()
    with multiprocessing.Pool(clients) as pool:
        done = sum(pool.map(_fill_worker, jobs))
    return done, time.perf_counter() - t0


def get_p99(data: Path, url: str, pods: int, n: int) -> float:
    conn = _conn(data, url)
    lat = []
    for i in range(n):
        t0 = time.perf_counter()
        status, _ = _req(conn, "GET", f"/api/v1/namespaces/default/pods/pod-{(i * 7919) % pods:05d}")
        lat.append(time.perf_counter() - t0)
        assert status == 200
    lat.sort()
    return lat[int(len(lat) * 0.99) - 1] * 1000


def list_time(data: Path, url: str) -> tuple[float, int]:
    conn = _conn(data, url)
    t0 = time.perf_counter()
    status, body = _req(conn, "GET", "/api/v1/pods")
    elapsed = time.perf_counter() - t0
    assert status == 200
    return elapsed, len(json.loads(body)["items"])


def _watch_proc(args: tuple[str, str, str, int, object, object, float]) -> list[float]:
    """One process holding ``n`` asyncio watches; returns wall-clock arrival times of the first event."""
    data, url, rv, n, ready, go, timeout_s = args
    import asyncio

    host, port = url.removeprefix("https://").rsplit(":", 1)
    ctx = tls.client_context(Path(data) / "pki" / "ca.crt", Path(data) / "pki" / "admin.crt",
                             Path(data) / "pki" / "admin.key")

    async def one(opened: list) -> float | None:
        reader, writer = await asyncio.open_connection(host, int(port), ssl=ctx, server_hostname=host)
        writer.write((f"GET /api/v1/namespaces/default/configmaps?watch=1&timeoutSeconds=30&resourceVersion={rv} "
                      f"HTTP/1.1\r\nHost: {host}\r\n\r\n").encode())
        await writer.drain()
        buf = b""
        while b"\r\n\r\n" not in buf:
            buf += await reader.read(4096)
        opened.append(1)
        while b'"type"' not in buf:
            chunk = await asyncio.wait_for(reader.read(65536), timeout_s)
            if not chunk:
                return None
            buf += chunk
        arrived = time.time()
        writer.close()
        return arrived

    async def run() -> list[float]:
        opened: list = []
        tasks = [asyncio.ensure_future(one(opened)) for _ in range(n)]
        while len(opened) < n:
            await asyncio.sleep(0.01)
        ready.wait()  # type: ignore[attr-defined]
        results = await asyncio.gather(*tasks, return_exceptions=True)
        return [r for r in results if isinstance(r, float)]

    return asyncio.run(run())


def watch_fanout(data: Path, url: str, watchers: int, procs: int = 2, timeout_s: float = 20.0) -> tuple[float, float, int]:
    """Open ``watchers`` watches (asyncio, in ``procs`` processes), create one object, measure delivery latency."""
    c = _conn(data, url)
    _, body = _req(c, "GET", "/api/v1/namespaces/default/configmaps")
    rv = json.loads(body)["metadata"]["resourceVersion"]
    mgr = multiprocessing.Manager()
    ready = mgr.Barrier(procs + 1, timeout=timeout_s)
    per = watchers // procs
    with multiprocessing.Pool(procs) as pool:
        res = pool.map_async(_watch_proc, [(str(data), url, rv, per, ready, None, timeout_s)] * procs)
        ready.wait()
        time.sleep(0.5)  # every watch is registered on the server
        t0 = time.time()
        _req(c, "POST", "/api/v1/namespaces/default/configmaps", {"metadata": {"name": f"fan-{time.time_ns()}"}})
        arrivals = [a for chunk in res.get(timeout_s + 10) for a in chunk]
    lat = sorted(a - t0 for a in arrivals)
    if not lat:
        return float("nan"), float("nan"), 0
    return lat[len(lat) // 2] * 1000, lat[max(0, -(-len(lat) * 99 // 100) - 1)] * 1000, len(lat)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pods", type=int, default=10_000)
    ap.add_argument("--clients", type=int, default=2)
    ap.add_argument("--watchers", type=int, default=100)
    ap.add_argument("--gets", type=int, default=2000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        proc, data, url = start(Path(tmp))
        try:
            created, secs = fill(data, url, args.pods, args.clients, deadline_s=300)
            print(f"creates: {created} pods in {secs:.2f}s = {created / secs:.0f}/s ({args.clients} client processes)")
            p99s = [get_p99(data, url, created, args.gets) for _ in range(3)]
            print(f"GET p99 (median of 3 x {args.gets}): {statistics.median(p99s):.2f} ms  runs={['%.2f' % p for p in p99s]}")
            lists = [list_time(data, url) for _ in range(3)]
            print(f"LIST all pods ({lists[0][1]} items, median of 3): {statistics.median(x[0] for x in lists):.3f} s")
            med, p99, n = watch_fanout(data, url, args.watchers)
            print(f"watch fan-out to {n}/{args.watchers} watchers: median {med:.1f} ms, p99 {p99:.1f} ms")
            db = data / "api.db"
            print(f"api.db size: {db.stat().st_size / 1e6:.1f} MB (+WAL {Path(str(db) + '-wal').stat().st_size / 1e6:.1f} MB)")
        finally:
            proc.terminate()
            proc.wait(10)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
