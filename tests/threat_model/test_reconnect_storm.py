"""Threat: a reconnect storm (many edges reconnecting at once, e.g. after a network outage) starves
other nodes. Real cloudcore; the storm comes from a separate process with real mutual TLS."""

from __future__ import annotations

import asyncio
import datetime as dt
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from kedge.pki import ca as pki
from support.cluster import Cloud
from support.edge import edge_hub, hubinfo
from support.fixtures import cloud  # noqa: F401 - pytest fixture

STORM_NODES = 120

STORM = textwrap.dedent('''
    import asyncio, ssl, sys, time
    from websockets.asyncio.client import connect
    work, hub, n, seconds = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    async def node(i, stop):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_verify_locations(f"{work}/ca.crt")
        ctx.load_cert_chain(f"{work}/n{i}.crt", f"{work}/n.key")
        ok = 0
        while time.monotonic() < stop:          # connect, drop, reconnect at once: no backoff
            try:
                async with connect(hub + "/tunnel", ssl=ctx, proxy=None, open_timeout=10):
                    ok += 1
            except Exception:
                await asyncio.sleep(0.01)
        return ok
    async def main():
        stop = time.monotonic() + seconds
        print(sum(await asyncio.gather(*(node(i, stop) for i in range(n)))), flush=True)
    asyncio.run(main())
''')


@pytest.mark.threat("K-RECONNECT-STORM")
def test_reconnect_storm_does_not_starve_a_connected_node(cloud: Cloud, tmp_path: Path):  # noqa: F811
    now = dt.datetime.now(dt.timezone.utc)
    ca_key = pki.load_key_file(cloud.dir / "pki" / "ca.key")
    ca_cert = pki.load_cert_file(cloud.dir / "pki" / "ca.crt")
    key = pki.generate_key()
    (tmp_path / "n.key").write_bytes(pki.key_to_pem(key))
    (tmp_path / "ca.crt").write_bytes(pki.cert_to_pem(ca_cert))
    for i in range(STORM_NODES):
        _, cert = pki.issue_client_cert(ca_key, ca_cert, common_name=f"system:node:storm-{i}",
                                        organizations=["system:nodes"], now=now,
                                        validity=dt.timedelta(hours=1), public_key=key.public_key())
        (tmp_path / f"n{i}.crt").write_bytes(pki.cert_to_pem(cert))
    assert cloud.join("steady", tmp_path / "steady").returncode == 0
    host, port = cloud.hub_hostport

    async def main():
        async with edge_hub(tmp_path / "steady") as steady:
            await hubinfo(steady)
            storm = subprocess.Popen([sys.executable, "-c", STORM,
                                      str(tmp_path), f"wss://{host}:{port}", str(STORM_NODES), "4"],
                                     stdout=subprocess.PIPE, text=True)
            latencies, failures = [], 0
            t_end = time.monotonic() + 4.5
            try:
                while storm.poll() is None and time.monotonic() < t_end + 10:
                    t = time.monotonic()
                    try:
                        await hubinfo(steady, timeout=5)
                        latencies.append(time.monotonic() - t)
                    except Exception:  # noqa: BLE001 - counted and asserted below
                        failures += 1
                    await asyncio.sleep(0.05)
            finally:
                out, _ = storm.communicate(timeout=30)
            return latencies, failures, int(out.strip() or 0)

    latencies, failures, storm_connects = asyncio.run(main())
    assert storm_connects > STORM_NODES, "the storm did not really happen"
    assert failures == 0
    latencies.sort()
    assert len(latencies) >= 10
    # The connected node keeps being served while the hub admits hundreds of reconnects.
    assert latencies[len(latencies) // 2] < 0.5, latencies

