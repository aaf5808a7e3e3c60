"""Container runtimes. :class:`ProcessRuntime` runs a container as a local process.

Without images, namespaces or root-only bind mounts, a "container" here is its
``command`` + ``args`` started in a session of its own (so SIGTERM/SIGKILL reach its
whole process group and it outlives edgecore), with a clean environment, a working
directory inside the pod directory, stdout/stderr appended to a log file, and an
unprivileged uid/gid when edgecore is root.

The :class:`Runtime` protocol is what :class:`~kedge.edge.edged.manager.PodManager`
needs, so a CRI (containerd) runtime can be slotted in later.

Identity of a process across edgecore restarts is (boot id, pid, start time in clock
ticks from ``/proc/<pid>/stat``): a pid that was reused by another process after ours
died never matches, so a restarted edgecore never adopts -- or signals -- a stranger.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import signal
import subprocess  # nosec B404 - starting the pod's own processes is this module's job
import time
from pathlib import Path
from typing import Any, Protocol

from kedge.errors import LocalError

log = logging.getLogger(__name__)

EXIT_UNKNOWN = -1  # the process is gone and its exit status was not ours to collect
_POLL_S = 0.02


class StartError(LocalError):
    """The process could not be started (no such executable, not permitted, ...)."""

    code = "start_failed"


@dataclasses.dataclass(frozen=True)
class ContainerSpec:
    """A container resolved for launching: everything decided, nothing to look up."""

    name: str
    argv: tuple[str, ...]
    env: tuple[tuple[str, str], ...]
    cwd: str
    log_path: str
    uid: int | None = None  # None: run as edgecore's own user
    gid: int | None = None
    image: str = ""

    def __post_init__(self) -> None:
        if not self.argv or not self.argv[0]:
            raise ValueError("a container needs a command")
        if any("\x00" in a for a in self.argv) or any("\x00" in k + v or "=" in k for k, v in self.env):
            raise ValueError("argv/env must not contain NUL (or '=' in names)")


@dataclasses.dataclass(frozen=True)
class ContainerHandle:
    """A started (or adopted) container process."""

    pod_uid: str
    name: str
    pid: int
    proc_start: int  # start time in clock ticks since boot (/proc/<pid>/stat field 22)
    boot_id: str
    started_at: float  # wall clock
    proc: Any = dataclasses.field(default=None, compare=False, repr=False)  # subprocess.Popen if ours

    def to_dict(self) -> dict[str, Any]:
        return {"pid": self.pid, "proc_start": self.proc_start, "boot_id": self.boot_id,
                "started_at": self.started_at}


class Runtime(Protocol):
    async def start_container(self, pod_uid: str, spec: ContainerSpec) -> ContainerHandle: ...

    async def stop_container(self, handle: ContainerHandle, grace_period_s: float) -> int | None: ...

    def poll(self, handle: ContainerHandle) -> int | None: ...

    def adopt(self, pod_uid: str, name: str, record: dict[str, Any]) -> ContainerHandle | None: ...


def boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:  # pragma: no cover - not Linux
        return ""


def proc_stat(pid: int) -> tuple[str, int] | None:
    """(state letter, start ticks) of ``pid``, or ``None`` if there is no such process."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # comm (field 2) may hold spaces and parentheses: split after the last ')'.
    rest = raw[raw.rfind(b")") + 2:].split()
    try:
        return rest[0].decode(), int(rest[19])
    except (IndexError, ValueError):
        return None


def _alive(handle: ContainerHandle) -> bool:
    st = proc_stat(handle.pid)
    return st is not None and st[1] == handle.proc_start and st[0] not in ("Z", "X")


def _exit_code(returncode: int) -> int:
    return 128 - returncode if returncode < 0 else returncode  # signal N -> 128+N, as runtimes report


class ProcessRuntime:
    """Containers as local processes (one session and process group each)."""

    def __init__(self, *, umask: int = 0o027) -> None:
        self._umask = umask
        self.boot_id = boot_id()

    async def start_container(self, pod_uid: str, spec: ContainerSpec) -> ContainerHandle:
        log_fd = os.open(spec.log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW
                         | os.O_CLOEXEC, 0o600)
        kwargs: dict[str, Any] = {}
        if spec.uid is not None and os.geteuid() == 0:
            kwargs.update(user=spec.uid, group=spec.gid if spec.gid is not None else spec.uid,
                          extra_groups=[])
        try:
            started_at = time.time()
            # The argv comes from the pod spec by design: running it is the point. No shell.
            proc = subprocess.Popen(  # nosec B603 - argv list, no shell, clean env
                list(spec.argv), stdin=subprocess.DEVNULL, stdout=log_fd, stderr=log_fd,
                cwd=spec.cwd, env=dict(spec.env), start_new_session=True, close_fds=True,
                umask=self._umask, **kwargs)
        except (OSError, subprocess.SubprocessError, ValueError) as exc:
            raise StartError(f"cannot start {spec.argv[0]!r}: {exc.__class__.__name__}") from exc
        finally:
            os.close(log_fd)
        st = proc_stat(proc.pid)
        return ContainerHandle(pod_uid, spec.name, proc.pid, st[1] if st else 0, self.boot_id,
                               started_at, proc)

    def adopt(self, pod_uid: str, name: str, record: dict[str, Any]) -> ContainerHandle | None:
        """A handle for a process a previous edgecore started, if it is still that process."""
        try:
            handle = ContainerHandle(pod_uid, name, int(record["pid"]), int(record["proc_start"]),
                                     str(record["boot_id"]), float(record["started_at"]))
        except (KeyError, TypeError, ValueError):
            return None
        if handle.pid <= 1 or handle.boot_id != self.boot_id or not _alive(handle):
            return None
        return handle

    def poll(self, handle: ContainerHandle) -> int | None:
        """``None`` while running; the exit code (``EXIT_UNKNOWN`` for adopted processes) once gone."""
        if handle.proc is not None:
            rc = handle.proc.poll()
            if rc is None:
                return None
            self._kill_group(handle.pid)  # leftovers of the container, as a runtime would
            return _exit_code(rc)
        return None if _alive(handle) else EXIT_UNKNOWN

    def _kill_group(self, pgid: int, sig: int = signal.SIGKILL) -> None:
        try:
            os.killpg(pgid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    async def stop_container(self, handle: ContainerHandle, grace_period_s: float) -> int | None:
        """SIGTERM to the process group, SIGKILL after the grace period; the exit code."""
        rc = self.poll(handle)
        if rc is not None:
            return rc
        self._kill_group(handle.pid, signal.SIGTERM)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(grace_period_s, 0.0)
        while loop.time() < deadline:
            rc = self.poll(handle)
            if rc is not None:
                return rc
            await asyncio.sleep(_POLL_S)
        if handle.proc is not None or _alive(handle):
            self._kill_group(handle.pid, signal.SIGKILL)
        deadline = loop.time() + 5.0
        while loop.time() < deadline:
            rc = self.poll(handle)
            if rc is not None:
                return rc
            await asyncio.sleep(_POLL_S)
        log.warning("container %s/%s (pid %d) did not die after SIGKILL", handle.pod_uid, handle.name,
                    handle.pid)
        return None
