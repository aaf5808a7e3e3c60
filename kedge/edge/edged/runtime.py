"""Container runtimes. :class:`ProcessRuntime` runs a container as a local process.

Without images, namespaces or root-only bind mounts, a "container" here is its
``command`` + ``args`` started in a session of its own (so SIGTERM/SIGKILL reach its
whole process group and it outlives edgecore), with a clean environment, a working
directory inside the pod directory and stdout/stderr appended to a log file.

Every decision about a path the pod names -- its working directory, its command -- is
made with the pod's identity (:func:`as_pod`), never as root: a pod learns nothing that
``exec`` as itself would not tell it. A file behind a directory it cannot search (the
node's 0700 data directory, say) reads "permission denied" whether it exists or not, as
a missing one does. The working directory is opened as the pod and entered through that
descriptor (``/proc/self/fd/N``), so a link the pod swaps in afterwards cannot move it.

Confinement is by identity only. Every container runs as its pod's own uid/gid (from
the node's pod id range, see :mod:`kedge.edge.edged.ids`; never root -- the runtime
refuses a spec without one, or with 0) with no supplementary groups (``setgroups([])``),
``no_new_privs`` set (inherited from edgecore, which sets it on itself once: no setuid
binary or file capability can raise a pod again, and Python's ``preexec_fn`` is not
safe in a threaded process), umask 077, no inherited descriptors but its log, and only
the environment its spec resolved (nothing of edgecore's). A deleted pod's uid is swept
(:meth:`ProcessRuntime.reap_user`: ``kill(-1, SIGKILL)`` from a process with that uid) so
daemons that left its process group do not live on into the uid's next pod.

What it cannot isolate (no namespaces, no cgroups): pods share the node's network
namespace -- every pod can reach every loopback port, including other pods' and the
node's local services -- and its filesystem view: whatever the host leaves readable to
any user (world-readable files, ``/proc/<pid>/cmdline`` of every process, ``/tmp``) is
readable to pods, and world-writable places are shared. There are no CPU, memory or
process-count limits, so a pod can exhaust the node. The process runtime is for
trusted workloads on a node you control; the container runtime is for the rest.

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
import errno
import logging
import os
import re
import signal
import stat
import subprocess  # nosec B404 - starting the pod's own processes is this module's job
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, TypeVar

from kedge.errors import LocalError

log = logging.getLogger(__name__)

EXIT_UNKNOWN = -1  # the process is gone and its exit status was not ours to collect
MIN_POD_ID = 65536  # below: root, system and human accounts (kedge.edge.edged.ids.MIN_POD_ID)
PR_SET_NO_NEW_PRIVS, PR_GET_NO_NEW_PRIVS = 38, 39
_POLL_S = 0.02
SHELL = "/bin/sh"
_SH_NAME = re.compile(r"\A[A-Za-z_][A-Za-z0-9_]*\Z")
# $0 = the exit file, "$@" = the container's argv. PWD/OLDPWD are unset so the
# container's environment is exactly the one the spec resolved.
_SHIM = 'unset PWD OLDPWD; trap : TERM INT HUP QUIT; "$@"; rc=$?; echo "$rc" > "$0"; exit "$rc"'
_T = TypeVar("_T")
_libc: Any = None  # ctypes' handle on libc, loaded when first needed (root only)


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

    def reap_user(self, uid: int) -> None:
        """SIGKILL every process running as ``uid``, a deleted pod's (:meth:`ProcessRuntime.reap_user`)."""

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


def _libc_handle() -> Any:
    global _libc
    if _libc is None:
        import ctypes  # only a root edgecore that runs pods pays for ctypes

        _libc = ctypes.CDLL(None, use_errno=True)
    return _libc


def as_pod(uid: int | None, gid: int | None, fn: Callable[[], _T]) -> _T:
    """``fn()`` with the filesystem identity ``uid``/``gid``: its path lookups and permission
    checks are the pod's (no supplementary groups, no capability over files).

    The identity changes in a fresh thread through ``setfsuid``/``setfsgid``, which act on
    the calling thread only -- ``setresuid`` would change every thread of edgecore (glibc
    applies it to all) -- and the kernel drops the file capabilities (DAC override and
    read-search) of a thread whose fsuid is not 0. The thread ends with it; nothing is
    changed back. Not root, or no uid: edgecore's identity is the pod's, ``fn`` runs here.
    ``fn`` must import nothing (the import would run as the pod).
    """
    if uid is None or os.geteuid() != 0:
        return fn()
    fsgid = uid if gid is None else gid
    libc = _libc_handle()
    result: list[tuple[bool, Any]] = []

    def body() -> None:
        try:
            if os.getgroups():  # ProcessRuntime drops them: a pod's checks must not have root's
                raise StartError("edgecore has supplementary groups: no path is resolved for a pod")
            libc.setfsgid(fsgid)
            libc.setfsuid(uid)
            if libc.setfsuid(-1) != uid or libc.setfsgid(-1) != fsgid:  # -1 changes nothing: reads
                raise StartError("the pod's filesystem identity could not be taken")
            result.append((True, fn()))
        except BaseException as exc:  # noqa: BLE001 - raised again in the caller's thread
            result.append((False, exc))

    thread = threading.Thread(target=body, name="kedge-as-pod", daemon=True)
    thread.start()
    thread.join()
    ok, value = result[0]
    if not ok:
        raise value
    return value  # type: ignore[no-any-return]


def open_dir(path: str) -> int:
    """An ``O_PATH`` descriptor of directory ``path``, which the caller may enter: the
    trailing ``/.`` makes the kernel check search permission on ``path`` itself too."""
    return os.open(os.path.join(path, "."), os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)


def _why(exc: OSError, *, command: bool = False) -> str:
    """What exec (or chdir) said, in kubelet's words; never a path."""
    if exc.errno in (errno.ENOENT, errno.ENOTDIR):
        return "executable not found" if command else "no such file or directory"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "permission denied"
    return os.strerror(exc.errno).lower() if exc.errno else exc.__class__.__name__


def _may_exec(st: os.stat_result, uid: int, gid: int) -> bool:
    if st.st_uid == uid:
        return bool(st.st_mode & stat.S_IXUSR)
    if st.st_gid == gid:
        return bool(st.st_mode & stat.S_IXGRP)
    return bool(st.st_mode & stat.S_IXOTH)


def find_executable(cmd: str, search: list[str], dir_fd: int, uid: int, gid: int) -> None:
    """Raise the ``OSError`` exec of ``cmd`` would (as execvp searches: a name without ``/``
    in each ``search`` directory, ``ENOENT`` skipped, ``EACCES`` kept), relative to
    ``dir_fd``. Call it as the pod (:func:`as_pod`): a stat the pod cannot make fails with
    the pod's errno. Execute bits are read for ``uid``/``gid`` (the pod has no other groups)."""
    candidates = [cmd] if "/" in cmd else [os.path.join(d or ".", cmd) for d in search]
    err: OSError | None = None
    for candidate in candidates:
        try:
            st = os.stat(candidate, dir_fd=dir_fd)
        except OSError as exc:
            if exc.errno not in (errno.ENOENT, errno.ENOTDIR) and err is None:
                err = exc
            continue
        if stat.S_ISREG(st.st_mode) and _may_exec(st, uid, gid):
            return
        if err is None:
            err = OSError(errno.EACCES, os.strerror(errno.EACCES))
    raise err or OSError(errno.ENOENT, os.strerror(errno.ENOENT))


def _enter(cwd: str, cmd: str, search: list[str], uid: int, gid: int) -> int:
    """The working directory, opened as the pod, once ``cmd`` is found from it (as the pod)."""
    try:
        fd = open_dir(cwd)
    except OSError as exc:
        raise StartError(f"cannot enter the working directory {cwd!r}: {_why(exc)}") from None
    try:
        find_executable(cmd, search, fd, uid, gid)
    except OSError as exc:
        os.close(fd)
        raise StartError(f"cannot start {cmd!r}: {_why(exc, command=True)}") from None
    return fd


def proc_uids(pid: int) -> tuple[int, ...] | None:
    """(real, effective, saved, filesystem) uid of ``pid`` (``/proc/<pid>/status``), or ``None``."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    for line in text.splitlines():
        if line.startswith("Uid:"):
            try:
                return tuple(int(x) for x in line.split()[1:5])
            except ValueError:
                return None
    return None


def running_uids() -> set[int]:
    """Every uid (real, effective, saved) some process on the host runs as -- so that an id
    another edgecore's pod (or anyone) uses right now is not handed to a pod here."""
    out: set[int] = set()
    try:
        entries = os.listdir("/proc")
    except OSError:  # pragma: no cover - no procfs
        return out
    for name in entries:
        if name.isdigit():
            uids = proc_uids(int(name))
            out.update(uids[:3] if uids else ())
    return out


def set_no_new_privs() -> bool:
    """Set ``PR_SET_NO_NEW_PRIVS`` on this process (inherited by every child, irreversible).

    True once it is set. ctypes is loaded here only, when the first pod runtime is built.
    """
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            log.error("prctl(PR_SET_NO_NEW_PRIVS) failed: errno %d", ctypes.get_errno())
            return False
        return bool(libc.prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) == 1)
    except (OSError, AttributeError):  # pragma: no cover - not glibc/musl Linux
        log.error("prctl is not available: no_new_privs cannot be set")
        return False


def _exit_code(returncode: int) -> int:
    return 128 - returncode if returncode < 0 else returncode  # signal N -> 128+N, as runtimes report


class ProcessRuntime:
    """Containers as local processes (one session and process group each)."""

    def __init__(self, *, umask: int = 0o077, shim: bool = True, no_new_privs: bool = True) -> None:
        """``no_new_privs=True`` (edgecore's case) sets ``no_new_privs`` on *this* process
        when it is root, for every pod to inherit; containers are refused if that fails.
        In-process tests pass False and check the flag in a child of their own."""
        self._umask = umask
        self._shim = shim and os.access(SHELL, os.X_OK)
        self.boot_id = boot_id()
        self._nnp_failed = no_new_privs and os.geteuid() == 0 and not set_no_new_privs()
        if os.geteuid() == 0 and os.getgroups():
            # Root's supplementary groups would count in the checks made as a pod (as_pod):
            # edgecore needs none (it is root), so it drops them, for every thread, once.
            os.setgroups([])

    async def start_container(self, pod_uid: str, spec: ContainerSpec) -> ContainerHandle:
        env = dict(spec.env)
        argv = list(spec.argv)
        # A POSIX shell drops environment names that are not shell identifiers (Kubernetes
        # allows e.g. "app.conf"); such containers run without the shim rather than
        # with a different environment -- their exit code is then lost on an edgecore restart.
        exit_file = spec.exit_file if self._shim and all(_SH_NAME.match(k) for k in env) else ""
        kwargs: dict[str, Any] = {}
        if os.geteuid() == 0:
            # Defence in depth: the manager decided the identity; never start without one.
            if spec.uid is None or spec.gid is None or spec.uid == 0 or spec.gid == 0:
                raise StartError("refusing to start a container without a non-root uid and gid")
            if self._nnp_failed:
                raise StartError("no_new_privs could not be set on edgecore: containers are not started")
            kwargs.update(user=spec.uid, group=spec.gid, extra_groups=[])  # setgroups([]): none
        uid = os.geteuid() if spec.uid is None else spec.uid
        gid = os.getegid() if spec.gid is None else spec.gid
        # As the pod: its working directory and its command (the shell would say 127 for a
        # missing one; kubelet says StartError). The descriptor is what the process enters.
        search = os.get_exec_path(env)
        cwd_fd = as_pod(spec.uid, spec.gid, lambda: _enter(spec.cwd, argv[0], search, uid, gid))
        try:
            return self._launch(pod_uid, spec, env, argv, exit_file, cwd_fd, kwargs)
        finally:
            os.close(cwd_fd)

    def _launch(self, pod_uid: str, spec: ContainerSpec, env: dict[str, str], argv: list[str],
                exit_file: str, cwd_fd: int, kwargs: dict[str, Any]) -> ContainerHandle:
        if exit_file:
            try:
                os.unlink(exit_file)  # a stale code from the previous run must not be read
            except FileNotFoundError:
                pass
            # The pod's argv goes to the shim as positional parameters, never into the
            # script text: no shell parsing of pod input.
            argv = [SHELL, "-c", _SHIM, exit_file, *argv]
        log_fd = os.open(spec.log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW
                         | os.O_CLOEXEC, 0o600)
        try:
            started_at = time.time()
            # The argv comes from the pod spec by design: running it is the point. The child
            # enters the directory the pod opened (the descriptor is close-on-exec) and execs
            # as the pod: an exec error is the pod's own errno.
            proc = subprocess.Popen(  # nosec B603 - argv list, pod input never parsed by a shell
                argv, stdin=subprocess.DEVNULL, stdout=log_fd, stderr=log_fd,
                cwd=f"/proc/self/fd/{cwd_fd}", env=env, start_new_session=True, close_fds=True,
                umask=self._umask, **kwargs)
        except OSError as exc:
            raise StartError(f"cannot start {spec.argv[0]!r}: {_why(exc, command=True)}") from exc
        except (subprocess.SubprocessError, ValueError) as exc:
            raise StartError(f"cannot start {spec.argv[0]!r}: {exc.__class__.__name__}") from exc
        finally:
            os.close(log_fd)
        st = proc_stat(proc.pid)
        return ContainerHandle(pod_uid, spec.name, proc.pid, st[1] if st else 0, self.boot_id,
                               started_at, exit_file, proc)

    def reap_user(self, uid: int) -> None:
        """SIGKILL every process running as ``uid`` -- a deleted pod's, whatever its process group.

        ``kill(-1, SIGKILL)`` sent *as* ``uid`` reaches exactly the processes that uid may
        signal (its own) in one kernel walk, so a pod cannot outrun it by forking. Only ids
        above the system and human ranges are ever swept.
        """
        if os.geteuid() != 0 or uid < MIN_POD_ID:
            return
        try:
            # A fixed script; the uid is an int we allocated. sh's builtin kill: no PATH lookup.
            subprocess.run(  # nosec B603 - fixed argv, no pod input
                [SHELL, "-c", "kill -9 -1"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL, env={}, cwd="/", user=uid, group=uid, extra_groups=[],
                close_fds=True, timeout=10, check=False)
        except (OSError, subprocess.SubprocessError) as exc:
            log.warning("could not sweep the processes of uid %d: %s", uid, exc.__class__.__name__)

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
