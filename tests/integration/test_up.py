"""``kedge up``: the all-in-one local cluster starts, shows both edges connected, and stops cleanly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from support.cluster import REPO, remove_pods, wait_until


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> str:
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=2) as r:  # noqa: S310 - loopback test server
            return r.read().decode()
    except OSError:
        return ""


def test_up_starts_cloud_and_two_connected_edges(tmp_path: Path):
    root = tmp_path / "up"
    errlog = open(tmp_path / "up.stderr", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([sys.executable, "-m", "kedge", "up", "--data-dir", str(root)],
                            stdout=subprocess.PIPE, stderr=errlog, text=True, cwd=REPO)
    lines: list[str] = []
    port = _free_port()
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "Press Ctrl-C" in line:
                break
        out = "".join(lines)
        assert "Press Ctrl-C" in out, out
        assert "edge-1, edge-2 connected" in out
        assert "KUBECONFIG=" in out and "admin.kubeconfig" in out
        nodes = json.loads((root / "cloud" / "connected.json").read_text())["nodes"]
        assert nodes == ["edge-1", "edge-2"]
        for edge in ("edge-1", "edge-2"):
            assert (root / edge / "pki" / "node.key").stat().st_mode & 0o777 == 0o600

        # The shipped example: an HTTP server pod on edge-1 answering on loopback (on a free port here).
        example = (REPO / "examples" / "hello.yaml").read_text().replace("8080", str(port))
        env = dict(os.environ, KUBECONFIG=str(root / "cloud" / "admin.kubeconfig"))
        r = subprocess.run(["kubectl", "apply", "-f", "-"], input=example, capture_output=True, text=True,
                           env=env, timeout=60)
        assert r.returncode == 0, r.stderr
        assert wait_until(lambda: _get(f"http://127.0.0.1:{port}/"), 45, what="hello answering") \
            == "hello from kedge on edge-1\n"

        def ready() -> bool:
            r = subprocess.run(["kubectl", "get", "pod", "hello", "-o", "json"], capture_output=True, text=True,
                               env=env, timeout=60)
            conds = json.loads(r.stdout or "{}").get("status", {}).get("conditions") or []
            return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conds)

        wait_until(ready, 30, what="hello Ready in kubectl (readiness probe)")
        logs = subprocess.run(["kubectl", "logs", "hello"], capture_output=True, text=True, env=env, timeout=60)
        assert '"GET / HTTP/1.1" 200' in logs.stdout, logs
    finally:
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(30)
        served_after_stop = _get(f"http://127.0.0.1:{port}/")
        remove_pods(root / "edge-1", "edge-1")
        errlog.close()
    assert rc == 0
    assert served_after_stop == ""  # the demo's pods stop with `kedge up`
    stderr = (tmp_path / "up.stderr").read_text(errors="replace")
    assert "Traceback" not in stderr, stderr[-3000:]  # a clean stop logs no stack traces
    # Nothing is left running from this cluster.
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert str(root) not in ps
