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

Exit codes outlive edgecore too. Only a process's parent can collect its exit status,
and a restarted edgecore is nobody's parent; so when the spec names an ``exit_file``,
the container runs under a tiny ``/bin/sh`` shim that waits for it and writes its exit
code there (like containerd's shim, at the cost of one idle shell per container).
The shim traps TERM/INT/HUP/QUIT with a no-op handler -- handlers, unlike ignored
signals, are reset on exec, so the container keeps default dispositions -- and the
signals sent to the process group still reach the container directly.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import re
import signal
import stat
import subprocess  # nosec B404 - starting the pod's own processes is this module's job
import time
from pathlib import Path
from typing import Any, Protocol

from kedge.errors import LocalError

log = logging.getLogger(__name__)

EXIT_UNKNOWN = -1  # the process is gone and its exit status was not ours to collect
_POLL_S = 0.02
SHELL = "/bin/sh"
_SH_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# $0 = the exit file, "$@" = the container's argv. PWD/OLDPWD are unset so the
# container's environment is exactly the one the spec resolved.
_SHIM = 'unset PWD OLDPWD; trap : TERM INT HUP QUIT; "$@"; rc=$?; echo "$rc" > "$0"; exit "$rc"'


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
    exit_file: str = ""  # where the shim records the exit code (writable by uid); "" = no shim

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
    exit_file: str = ""
    proc: Any = dataclasses.field(default=None, compare=False, repr=False)  # subprocess.Popen if ours

    def to_dict(self) -> dict[str, Any]:
        return {"pid": self.pid, "proc_start": self.proc_start, "boot_id": self.boot_id,
                "started_at": self.started_at, "exit_file": self.exit_file}


class Runtime(Protocol):
    async def start_container(self, pod_uid: str, spec: ContainerSpec) -> ContainerHandle: ...

    async def stop_container(self, handle: ContainerHandle, grace_period_s: float) -> int | None: ...

    def poll(self, handle: ContainerHandle) -> int | None: ...

    def adopt(self, pod_uid: str, name: str, record: dict[str, Any]) -> ContainerHandle | None: ...

    def recorded_exit(self, record: dict[str, Any]) -> int | None: ...


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


def read_exit_file(path: str) -> int | None:
    """The exit code a shim recorded, or ``None``.

    The file sits in a directory the pod's user owns: never follow a link, never block
    on a FIFO, read a few bytes only, accept only 0..255.
    """
    if not path:
        return None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        raw = os.read(fd, 16).strip()
    finally:
        os.close(fd)
    if not raw.isdigit() or int(raw) > 255:
        return None
    return int(raw)


def _which(cmd: str, env: dict[str, str], cwd: str) -> str | None:
    if "/" in cmd:
        path = os.path.join(cwd, cmd)  # relative commands resolve in the container's cwd
        return path if os.path.isfile(path) else None
    for d in env.get("PATH", "").split(":"):
        candidate = os.path.join(cwd, d or ".", cmd)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


def _exit_code(returncode: int) -> int:
    return 128 - returncode if returncode < 0 else returncode  # signal N -> 128+N, as runtimes report


class ProcessRuntime:
    """Containers as local processes (one session and process group each)."""

    def __init__(self, *, umask: int = 0o027, shim: bool = True) -> None:
        self._umask = umask
        self._shim = shim and os.access(SHELL, os.X_OK)
        self.boot_id = boot_id()

    async def start_container(self, pod_uid: str, spec: ContainerSpec) -> ContainerHandle:
        env = dict(spec.env)
        argv = list(spec.argv)
        # A POSIX shell drops environment names that are not shell identifiers (Kubernetes
        # allows e.g. "app.conf"); such containers run without the shim rather than
        # with a different environment -- their exit code is then lost on an edgecore restart.
        exit_file = spec.exit_file if self._shim and all(_SH_NAME.match(k) for k in env) else ""
        if exit_file:
            if _which(argv[0], env, spec.cwd) is None:  # the shell would say 127; kubelet says StartError
                raise StartError(f"cannot start {argv[0]!r}: executable not found")
            try:
                os.unlink(exit_file)  # a stale code from the previous run must not be read
            except FileNotFoundError:
                pass
            # The pod's argv goes to the shim as positional parameters, never into the
            # script text: no shell parsing of pod input.
            argv = [SHELL, "-c", _SHIM, exit_file, *argv]
        log_fd = os.open(spec.log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW
                         | os.O_CLOEXEC, 0o600)
        kwargs: dict[str, Any] = {}
        if spec.uid is not None and os.geteuid() == 0:
            kwargs.update(user=spec.uid, group=spec.gid if spec.gid is not None else spec.uid,
                          extra_groups=[])
        try:
            started_at = time.time()
            # The argv comes from the pod spec by design: running it is the point.
            proc = subprocess.Popen(  # nosec B603 - argv list, pod input never parsed by a shell
                argv, stdin=subprocess.DEVNULL, stdout=log_fd, stderr=log_fd,
                cwd=spec.cwd, env=env, start_new_session=True, close_fds=True,
                umask=self._umask, **kwargs)
        except (OSError, subprocess.SubprocessError, ValueError) as exc:
            raise StartError(f"cannot start {spec.argv[0]!r}: {exc.__class__.__name__}") from exc
        finally:
            os.close(log_fd)
        st = proc_stat(proc.pid)
        return ContainerHandle(pod_uid, spec.name, proc.pid, st[1] if st else 0, self.boot_id,
                               started_at, exit_file, proc)

    def adopt(self, pod_uid: str, name: str, record: dict[str, Any]) -> ContainerHandle | None:
        """A handle for a process a previous edgecore started, if it is still that process."""
        try:
            handle = ContainerHandle(pod_uid, name, int(record["pid"]), int(record["proc_start"]),
                                     str(record["boot_id"]), float(record["started_at"]),
                                     str(record.get("exit_file") or ""))
        except (KeyError, TypeError, ValueError):
            return None
        if handle.pid <= 1 or handle.boot_id != self.boot_id or not _alive(handle):
            return None
        return handle

    def recorded_exit(self, record: dict[str, Any]) -> int | None:
        """The exit code of a process from ``record`` that ended while nobody watched."""
        if not isinstance(record, dict) or record.get("boot_id") != self.boot_id:
            return None  # a file from before a reboot says nothing about this boot
        return read_exit_file(str(record.get("exit_file") or ""))

    def poll(self, handle: ContainerHandle) -> int | None:
        """``None`` while running; the exit code (``EXIT_UNKNOWN`` for adopted processes) once gone."""
        if handle.proc is not None:
            rc = handle.proc.poll()
            if rc is None:
                return None
            self._kill_group(handle.pid)  # leftovers of the container, as a runtime would
            return _exit_code(rc)
        if _alive(handle):
            return None
        code = read_exit_file(handle.exit_file)
        return EXIT_UNKNOWN if code is None else code

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
