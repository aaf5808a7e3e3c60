"""A container's exit is recorded and reported when it happens, not at the supervision tick."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import tempfile
from pathlib import Path

import pytest

from kedge.edge.edged.manager import PodManager
from kedge.edge.edged.runtime import ProcessRuntime


@pytest.fixture
def base():
    # Not tmp_path: pytest's base dir is 0700, and the pods' user must traverse to its dir.
    path = Path(tempfile.mkdtemp(prefix="kedge-exit-"))
    os.chmod(path, 0o711)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_exit_is_reported_long_before_the_next_tick(base):
    pod = {"metadata": {"uid": "uid-quit", "namespace": "default", "name": "quit", "resourceVersion": "1"},
           "spec": {"restartPolicy": "Never", "terminationGracePeriodSeconds": 1,
                    "containers": [{"name": "c", "image": "i", "command": ["sh", "-c", "sleep 0.5; exit 3"]}]}}
    statuses: list[dict] = []

    def terminated():
        for st in statuses:
            for cs in st.get("containerStatuses") or []:
                if (cs.get("state") or {}).get("terminated", {}).get("exitCode") == 3:
                    return st
        return None

    async def main():
        # A 60 s tick: before exits woke the loop, this exit was seen a minute late.
        mgr = PodManager(base / "pods", runtime=ProcessRuntime(no_new_privs=False), lookup=lambda *a: None,
                         on_status=lambda ns, name, st: statuses.append(st), tick_s=60)
        loop_task = asyncio.create_task(mgr.run())
        try:
            await mgr.sync([pod])
            async with asyncio.timeout(20):
                while terminated() is None:
                    await asyncio.sleep(0.02)
            assert terminated()["phase"] == "Failed"
            assert mgr._exit_fds == {}  # the exit's pidfd is closed once it fired
        finally:
            loop_task.cancel()
            await asyncio.gather(loop_task, return_exceptions=True)
            for handle in mgr.handles("uid-quit").values():
                os.killpg(handle.pid, signal.SIGKILL)
            await mgr.shutdown(stop_pods=True)

    asyncio.run(main())
