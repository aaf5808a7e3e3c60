"""Short-lived Python children of edgecore.

Work that needs ``cryptography`` (node certificate renewal, MQTT keys, probing an operator's
broker) runs as ``python -m <module> ...`` so that library never stays resident in edgecore
(see :mod:`kedge.edge.renewal`). A child prints one JSON line: ``{"ok": true, ...}`` or the
error report of :func:`kedge.edge.renewal.result_of` (never key material).
"""

from __future__ import annotations

import asyncio
import json
import subprocess  # nosec B404 - runs this interpreter on a kedge module with fixed arguments, no shell
import sys
from typing import Any

MAX_OUTPUT_BYTES = 64 * 1024


async def run_module(module: str, *args: str, timeout_s: float, code: str) -> tuple[bytes, int | None]:
    """Run ``python -m module args``: its stdout and exit code. A child still running after
    ``timeout_s`` is killed and ``TimeoutError`` raised; without an interpreter to run it,
    ``LocalError(code)`` (the caller's stable code for its failure)."""
    from kedge.errors import LocalError

    if not sys.executable:
        raise LocalError(f"no Python interpreter to run {module} with", code=code)
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", module, *args,
                                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
    try:
        async with asyncio.timeout(timeout_s):
            out, _ = await proc.communicate()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    return out, proc.returncode


def parse_report(data: bytes, returncode: int | None, *, what: str, code: str) -> dict[str, Any]:
    """The child's report when it succeeded (``"ok": true``, exit 0); otherwise the error it
    reported is raised with its kind and stable code, or ``LocalError(code)`` if it reported
    nothing usable."""
    from kedge.edge import renewal
    from kedge.errors import LocalError

    try:
        res = json.loads(data[:MAX_OUTPUT_BYTES].decode("utf-8", "replace").strip().splitlines()[-1])
    except (ValueError, IndexError):
        res = None
    if not isinstance(res, dict):
        raise LocalError(f"{what} gave no result (exit {returncode})", code=code)
    if res.get("ok") is True and returncode == 0:
        return res
    if res.get("ok") is False:
        renewal.raise_result(json.dumps(res).encode(), returncode)
    raise LocalError(f"{what} failed (exit {returncode})", code=code)
