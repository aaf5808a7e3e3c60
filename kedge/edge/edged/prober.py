"""Running one probe: exec, HTTP GET or TCP connect, each bounded by its timeout.

HTTP and TCP probes only ever connect to 127.0.0.1 (a "pod IP" here is the node's
loopback): a pod spec cannot turn the edge into a scanner of other hosts. HTTPS
probes are refused (they would need a TLS context outside :mod:`kedge.tls`).
Exec probes run as the container's user, with its environment and working directory
(opened as that user, as the container's is: see :func:`~kedge.edge.edged.runtime.as_pod`).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess  # nosec B404 - exec probes run the pod's own command
from collections.abc import Mapping

from kedge.edge.edged.runtime import StartError, as_pod, open_dir
from kedge.edge.edged.spec import ContainerDef, ProbeDef

LOOPBACK = "127.0.0.1"
_ALLOWED_HOSTS = ("", LOOPBACK, "localhost")
from kedge.limits import PROBE_MAX_STATUS_LINE as MAX_STATUS_LINE  # noqa: E402


async def run_probe(probe: ProbeDef, container: ContainerDef, *, env: Mapping[str, str], cwd: str,
                    uid: int | None, gid: int | None) -> bool:
    """True if the probe succeeded within ``probe.timeout_s``."""
    try:
        if probe.kind == "exec":
            return await _exec(probe, env, cwd, uid, gid)
        if probe.host not in _ALLOWED_HOSTS or probe.scheme != "HTTP":
            return False
        port = container.port_number(probe.port)
        if port is None:
            return False
        async with asyncio.timeout(probe.timeout_s):
            return await (_tcp(port) if probe.kind == "tcp" else _http(probe, port))
    except (OSError, TimeoutError, ValueError):
        return False


async def _tcp(port: int) -> bool:
    _, writer = await asyncio.open_connection(LOOPBACK, port)
    writer.close()
    try:
        await writer.wait_closed()
    except OSError:
        pass
    return True


async def _http(probe: ProbeDef, port: int) -> bool:
    reader, writer = await asyncio.open_connection(LOOPBACK, port, limit=MAX_STATUS_LINE)
    try:
        headers = {"Host": f"{LOOPBACK}:{port}", "User-Agent": "kube-probe/kedge", "Accept": "*/*",
                   "Connection": "close"}
        for name, value in probe.headers:
            headers[name] = value
        head = f"GET {probe.path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        writer.write((head + "\r\n").encode("latin-1"))
        await writer.drain()
        line = await reader.readline()  # bounded by ``limit``; overlong raises ValueError
        parts = line.split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
            return False
        return 200 <= int(parts[1]) < 400
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except OSError:
            pass


async def _exec(probe: ProbeDef, env: Mapping[str, str], cwd: str, uid: int | None,
                gid: int | None) -> bool:
    kwargs: dict[str, object] = {}
    if uid is not None and os.geteuid() == 0:
        kwargs.update(user=uid, group=gid if gid is not None else uid, extra_groups=[])
    try:
        cwd_fd = as_pod(uid, gid, lambda: open_dir(cwd))
    except (OSError, StartError):
        return False
    try:
        proc = subprocess.Popen(  # nosec B603 - the pod's probe argv, no shell
            list(probe.command), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, cwd=f"/proc/self/fd/{cwd_fd}", env=dict(env),
            start_new_session=True, close_fds=True, **kwargs)  # type: ignore[call-overload]
    except (OSError, subprocess.SubprocessError):
        return False
    finally:
        os.close(cwd_fd)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + probe.timeout_s
    try:
        while loop.time() < deadline:
            rc = proc.poll()
            if rc is not None:
                return rc == 0
            await asyncio.sleep(0.02)
        return False
    finally:
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            proc.wait()
