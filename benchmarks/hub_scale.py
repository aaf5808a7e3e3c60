#!/usr/bin/env python3
"""CloudHub at scale: concurrent edges, memory per edge, keepalive latency, handshake CPU, push throughput.

Runs a real CloudHub (the same class `kedge cloudcore` runs, real mutual TLS 1.3 WebSockets on
127.0.0.1) in this process, and simulated edges in separate processes. Prints figures; asserts nothing.

    .venv/bin/python benchmarks/hub_scale.py --edges 10000 --procs 4
    .venv/bin/python benchmarks/hub_scale.py --edges 1000 --push 20000     # throughput to 1,000 edges

Every loop is bounded in count and time; the script stops by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve()
sys.path.insert(0, str(HERE.parents[1]))


def raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def rss_kb(pid: int | str = "self") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def cpu_s() -> float:
    t = os.times()
    return t.user + t.system


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


# ---------------------------------------------------------------- simulated edges (child process)

async def simulate(args) -> None:
    import ssl

    from websockets.asyncio.client import connect

    from kedge.protocol import message as m
    from kedge.protocol.session import MessageReceived, ResponseReceived, Session

    raise_nofile()
    work = Path(args.work)

    def ctx_for(i: int) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        ctx.load_verify_locations(work / "ca.crt")
        ctx.load_cert_chain(work / "certs" / f"n{i}.crt", work / "node.key")
        return ctx

    conns = {}
    sessions = {}
    rtts: list[float] = []
    acked = 0

    async def one(i: int) -> None:
        nonlocal acked
        name = f"n{i}"
        for attempt in range(20):
            try:
                ws = await connect(args.hub + "/tunnel", ssl=ctx_for(i), server_hostname="127.0.0.1", proxy=None,
                                   compression=None, ping_interval=None, max_queue=4, open_timeout=60,
                                   additional_headers={"node_id": name})
                break
            except Exception:  # noqa: BLE001 - retry under load, bounded
                await asyncio.sleep(0.2 * (attempt + 1))
        else:
            return
        s = Session(role="edge", local=name, peer="cloudhub")
        s.connection_made()
        conns[i], sessions[i] = ws, s

        async def reader():
            nonlocal acked
            pending: dict[str, float] = {}
            sessions[i].pending_times = pending  # type: ignore[attr-defined]
            async for frame in ws:
                now_ms = int(time.time() * 1000)
                s.receive_data(frame if isinstance(frame, bytes) else frame.encode(), now_ms=now_ms)
                for ev in s.events_received():
                    if isinstance(ev, ResponseReceived):
                        t0 = pending.pop(ev.request.msg_id, None)
                        if t0 is not None:
                            rtts.append(time.perf_counter() - t0)
                    elif isinstance(ev, MessageReceived):
                        s.send_response(ev.message, {"ack": ev.message.header.resourceversion}, now_ms=now_ms)
                        acked += 1
                for out in s.data_to_send():
                    await ws.send(out, text=True)

        asyncio.create_task(reader())

    sem = asyncio.Semaphore(64)

    async def guarded(i):
        async with sem:
            await one(i)

    await asyncio.gather(*(guarded(i) for i in range(args.start, args.start + args.count)))
    print(json.dumps({"connected": len(conns)}), flush=True)
    # Commands from the parent on stdin: "ping N" (N keepalives spread over the edges), "stats", "quit".
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while True:
        line = (await reader.readline()).decode().strip()
        if not line or line == "quit":
            break
        if line.startswith("ping"):
            n = int(line.split()[1])
            ids = list(conns)[:n]
            rtts.clear()
            for i in ids:
                s = sessions[i]
                msg = m.Message.new(source=f"n{i}", destination="cloudhub", group="hub", operation=m.KEEPALIVE,
                                    resource=f"n{i}/keepalive/n{i}", content=None,
                                    now_ms=int(time.time() * 1000), msg_id=s.new_msg_id())
                s.pending_times[msg.msg_id] = time.perf_counter()
                s.send_message(msg, expect_response=True)
                for out in s.data_to_send():
                    await conns[i].send(out, text=True)
                await asyncio.sleep(args.ping_spread / max(1, n))
            deadline = time.monotonic() + 10
            while len(rtts) < len(ids) and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            print(json.dumps({"rtts": rtts}), flush=True)
        elif line == "stats":
            print(json.dumps({"acked": acked}), flush=True)
    for ws in conns.values():
        await ws.close()


# ---------------------------------------------------------------- the hub side (this process)

def make_identities(work: Path, n: int):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    from kedge.pki import ca as pki

    now = dt.datetime.now(dt.timezone.utc)
    ca_key, ca_cert = pki.create_ca("bench-ca", now=now)
    hub_key, hub_cert = pki.issue_server_cert(ca_key, ca_cert, common_name="hub", sans=["127.0.0.1"], now=now)
    node_key = pki.generate_key()
    (work / "certs").mkdir(parents=True)
    (work / "ca.crt").write_bytes(pki.cert_to_pem(ca_cert))
    (work / "hub.crt").write_bytes(pki.cert_to_pem(hub_cert))
    (work / "hub.key").write_bytes(pki.key_to_pem(hub_key))
    (work / "node.key").write_bytes(pki.key_to_pem(node_key))
    pub = node_key.public_key()
    for i in range(n):
        # One key for every simulated edge (only the certificate differs), to keep set-up fast.
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"system:node:n{i}"),
                          x509.NameAttribute(NameOID.ORGANIZATION_NAME, "system:nodes")])
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(ca_cert.subject).public_key(pub)
                .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=1))
                .not_valid_after(now + dt.timedelta(days=1))
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
                .sign(ca_key, hashes.SHA256()))
        (work / "certs" / f"n{i}.crt").write_bytes(pki.cert_to_pem(cert))


async def run(args) -> None:
    from kedge import tls
    from kedge._internal.auditlog import AuditLog
    from kedge.cloud.hub import CloudHub
    from kedge.cloud.state import CloudState
    from kedge.limits import Limits
    from kedge.protocol import message as m

    raise_nofile()
    work = Path(tempfile.mkdtemp(prefix="kedge-bench-"))
    t = time.monotonic()
    make_identities(work, args.edges)
    print(f"identities for {args.edges} edges: {time.monotonic() - t:.1f}s", file=sys.stderr)
    state = CloudState(work / "state.db")
    audit = AuditLog(os.devnull)
    limits = Limits(max_nodes=max(args.edges + 10, 100), upstream_qps=1000.0, upstream_burst=1000,
                    idle_timeout_s=600.0)
    ctx = tls.server_context(work / "hub.crt", work / "hub.key", work / "ca.crt", client_cert="required")
    hub = CloudHub(ssl_ctx=ctx, limits=limits, state=state, audit=audit)
    port = await hub.start("127.0.0.1", 0)
    await asyncio.sleep(0.5)
    base_rss = rss_kb()
    base_cpu = cpu_s()
    t0 = time.monotonic()
    per = -(-args.edges // args.procs)
    procs = []
    for k in range(args.procs):
        start, count = k * per, min(per, args.edges - k * per)
        if count <= 0:
            break
        procs.append(await asyncio.create_subprocess_exec(
            sys.executable, str(HERE), "--simulate", "--hub", f"wss://127.0.0.1:{port}", "--work", str(work),
            "--start", str(start), "--count", str(count), "--ping-spread", str(args.ping_spread),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE))
    connected = 0
    for p in procs:
        line = await asyncio.wait_for(p.stdout.readline(), timeout=args.timeout)
        connected += json.loads(line)["connected"]
    connect_s = time.monotonic() - t0
    connect_cpu = cpu_s() - base_cpu
    await asyncio.sleep(2)
    held = len(hub.sessions)
    rss = rss_kb()
    print(f"edges connected: {connected} (hub holds {held}) in {connect_s:.1f}s")
    print(f"hub RSS: {base_rss / 1024:.1f} MiB idle -> {rss / 1024:.1f} MiB; "
          f"{(rss - base_rss) / max(1, held):.1f} KiB per edge")
    print(f"hub CPU per new mTLS WebSocket connection: {1000 * connect_cpu / max(1, held):.2f} ms "
          f"(includes handshake, upgrade, admission)")
    # Keepalive round trips with every edge connected.
    n_ping = min(args.pings, held)
    per_ping = -(-n_ping // len(procs))
    rtts: list[float] = []
    for p in procs:
        p.stdin.write(f"ping {per_ping}\n".encode())
    for p in procs:
        line = await asyncio.wait_for(p.stdout.readline(), timeout=60)
        rtts += json.loads(line)["rtts"]
    if rtts:
        print(f"keepalive RTT over {len(rtts)} pings: p50 {1000 * pct(rtts, 50):.1f} ms, "
              f"p99 {1000 * pct(rtts, 99):.1f} ms, max {1000 * max(rtts):.1f} ms")
    if args.push:
        payload = {"data": "x" * 1000}
        nodes = list(hub.sessions.values())
        cpu0, w0 = cpu_s(), time.monotonic()
        sem = asyncio.Semaphore(args.window)

        async def push(k: int):
            ns = nodes[k % len(nodes)]
            msg = m.Message.new(source="cloudhub", destination=ns.node, group="resource", operation=m.UPDATE,
                                resource=f"default/configmap/c{k}", content=payload,
                                now_ms=int(time.time() * 1000), resourceversion=str(k),
                                msg_id=ns.session.new_msg_id())
            async with sem:
                await ns.request(msg, timeout=60)

        await asyncio.wait_for(asyncio.gather(*(push(k) for k in range(args.push))), timeout=args.timeout)
        wall, cpu = time.monotonic() - w0, cpu_s() - cpu0
        print(f"pushed {args.push} acknowledged 1 KB messages to {len(nodes)} edges in {wall:.2f}s: "
              f"{args.push / wall:.0f} msg/s wall, {args.push / cpu:.0f} msg/s per hub CPU-second")
    for p in procs:
        p.stdin.write(b"quit\n")
    for p in procs:
        try:
            await asyncio.wait_for(p.wait(), timeout=30)
        except TimeoutError:
            p.kill()
    await hub.stop()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--edges", type=int, default=1000)
    ap.add_argument("--procs", type=int, default=4)
    ap.add_argument("--pings", type=int, default=2000)
    ap.add_argument("--ping-spread", type=float, default=2.0, help="seconds over which each process sends its pings")
    ap.add_argument("--push", type=int, default=0, help="acknowledged 1 KB messages to push")
    ap.add_argument("--window", type=int, default=2000, help="pushes in flight")
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("--simulate", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--hub", help=argparse.SUPPRESS)
    ap.add_argument("--work", help=argparse.SUPPRESS)
    ap.add_argument("--start", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--count", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--loop", choices=["asyncio", "uvloop"], default="uvloop", help="event loop of the hub")
    args = ap.parse_args()
    if args.simulate:
        asyncio.run(simulate(args))
    elif args.loop == "uvloop":
        import uvloop

        uvloop.run(run(args))
    else:
        asyncio.run(run(args))


if __name__ == "__main__":
    main()
