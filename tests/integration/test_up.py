"""``kedge up``: the all-in-one local cluster starts, shows both edges connected, and stops cleanly."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from support.cluster import REPO


def test_up_starts_cloud_and_two_connected_edges(tmp_path: Path):
    root = tmp_path / "up"
    proc = subprocess.Popen([sys.executable, "-m", "kedge", "up", "--data-dir", str(root)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=REPO)
    lines: list[str] = []
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
    finally:
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(30)
    assert rc == 0
    # Nothing is left running from this cluster.
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert str(root) not in ps
