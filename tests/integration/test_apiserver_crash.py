"""kill -9 during a write burst: every acknowledged object survives, resourceVersions keep rising."""

from __future__ import annotations

import http.client
import json
import signal
import sys
import threading
import time
from pathlib import Path

from kedge import tls

sys.path.insert(0, str(Path(__file__).parent))
from test_kubectl import _kedge, start_apiserver  # noqa: E402
from support.cluster import stop_process as stop  # noqa: E402


def _client(data: Path, url: str) -> http.client.HTTPSConnection:
    host, port = url.removeprefix("https://").rsplit(":", 1)
    ctx = tls.client_context(data / "pki" / "ca.crt", data / "pki" / "admin.crt", data / "pki" / "admin.key")
    return http.client.HTTPSConnection(host, int(port), context=ctx, timeout=10)


def test_kill_9_loses_no_acknowledged_write(tmp_path):
    data = tmp_path / "cloud"
    assert _kedge("init", "--data-dir", str(data), "--api-port", "0").returncode == 0
    proc, url = start_apiserver(data)
    acked: dict[str, int] = {}
    stop_flag = threading.Event()

    def writer(worker: int) -> None:
        conn = _client(data, url)
        i = 0
        try:
            while not stop_flag.is_set() and i < 5000:
                name = f"w{worker}-{i}"
                body = json.dumps({"metadata": {"name": name}, "data": {"i": str(i)}})
                conn.request("POST", "/api/v1/namespaces/default/configmaps", body=body,
                             headers={"Content-Type": "application/json"})
                resp = conn.getresponse()
                payload = resp.read()
                if resp.status == 201:
                    acked[name] = int(json.loads(payload)["metadata"]["resourceVersion"])
                i += 1
        except (OSError, http.client.HTTPException):
            pass  # the server died under us: whatever was not acknowledged may be lost

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 10
    while len(acked) < 200 and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    stop_flag.set()
    for t in threads:
        t.join(15)
    assert len(acked) >= 200, "the write burst did not get going"

    proc, url = start_apiserver(data)
    try:
        conn = _client(data, url)
        conn.request("GET", "/api/v1/namespaces/default/configmaps")
        resp = conn.getresponse()
        listing = json.loads(resp.read())
        stored = {o["metadata"]["name"]: int(o["metadata"]["resourceVersion"]) for o in listing["items"]}
        missing = set(acked) - set(stored)
        assert not missing, f"{len(missing)} acknowledged objects lost"
        assert all(stored[n] == rv for n, rv in acked.items())
        top = max(acked.values())
        conn.request("POST", "/api/v1/namespaces/default/configmaps",
                     body=json.dumps({"metadata": {"name": "after-restart"}}),
                     headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        after = json.loads(resp.read())
        assert resp.status == 201 and int(after["metadata"]["resourceVersion"]) > max(top, int(
            listing["metadata"]["resourceVersion"]) - 1)
    finally:
        stop(proc)
