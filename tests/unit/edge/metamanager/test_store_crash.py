"""kill -9 in the middle of a write burst: every write the store acknowledged is there after reopen.

A real child process applies changes to a real ``edge.db`` and prints each key only
after :meth:`MetaStore.apply` returned (the moment the handler would ack). The parent
kills it with SIGKILL mid-burst, reopens the file and checks every printed write.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from kedge.edge.metamanager.store import MetaStore

REPO = Path(__file__).resolve().parents[4]

CHILD = r"""
import sys, time, base64
from pathlib import Path
from kedge.edge.metamanager.store import MetaStore
d = Path(sys.argv[1])
s = MetaStore(d / "edge.db", d / "edge.key")
i = 0
while True:
    i += 1
    kind = "secret" if i % 3 == 0 else "configmap"
    key = f"default/{kind}/o{i % 40}"
    body = {"metadata": {"name": f"o{i % 40}", "namespace": "default"}, "data": {"v": "x" * 512, "i": str(i)}}
    op = "delete" if i % 7 == 0 else "update"
    r = s.apply(key, op, str(i), body, now=time.time())
    sys.stdout.write(f"{key} {i} {op} {r.result}\n")
    sys.stdout.flush()
"""

MIN_ACKED = 150
DEADLINE_S = 30.0


def test_kill9_mid_burst_loses_no_acknowledged_write(tmp_path: Path):
    edge = tmp_path / "edge"
    proc = subprocess.Popen(  # noqa: S603 - fixed argv
        [sys.executable, "-c", CHILD, str(edge)], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    acked: list[tuple[str, int, str]] = []
    deadline = time.monotonic() + DEADLINE_S
    try:
        assert proc.stdout is not None
        while len(acked) < MIN_ACKED and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            key, rv, op, result = line.decode().split()
            assert result == "applied"
            acked.append((key, int(rv), op))
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        out, err = proc.communicate(timeout=10)
    assert proc.returncode == -signal.SIGKILL, err.decode()[-2000:]
    # Lines already written to the pipe before the kill were acked too.
    for line in out.decode().splitlines():
        parts = line.split()
        if len(parts) == 4:
            acked.append((parts[0], int(parts[1]), parts[2]))
    assert len(acked) >= MIN_ACKED, f"only {len(acked)} writes acked before the deadline: {err.decode()[-2000:]}"

    last: dict[str, tuple[int, str]] = {}
    for key, rv, op in acked:
        last[key] = (rv, op)
    with MetaStore(edge / "edge.db", edge / "edge.key") as store:
        for key, (rv, op) in last.items():
            record = store.record(key)
            assert record is not None, f"acked {key}@{rv} lost"
            stored_rv, deleted = int(record[0]), record[1]
            # The child may have committed one more write after its last print; never less.
            assert stored_rv >= rv, f"{key}: acked rv {rv}, stored {stored_rv}"
            if stored_rv == rv:
                assert deleted == (op == "delete")
                got = store.get(key)
                if op == "delete":
                    assert got is None
                else:
                    assert got is not None and got["data"]["i"] == str(rv)
        # Exactly one write at most may be committed but unprinted, and the store is readable.
        newest_acked = max(rv for _, rv, _ in acked)
        newest_stored = max(int(v) for v in store.inventory().values())
        assert newest_acked <= newest_stored <= newest_acked + 1
        assert store.list("secret") is not None and store.list("configmap") is not None
