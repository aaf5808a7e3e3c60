"""PodManager: the thin asyncio shell around :func:`kedge.edge.edged.plan.plan`.

edgecore hands it the full list of Pod objects bound to the node (:meth:`sync`); the
manager plans, starts/stops container processes through a :class:`Runtime`,
supervises them (:meth:`run`: exits, crash-loop back-off, probes, log rotation) and
reports each pod's status when it changes (``on_status``).

Pods survive edgecore: processes run in sessions of their own and every change is
persisted to ``<pod dir>/state.json`` (atomically, 0600) before it is reported. A new
PodManager over the same ``root`` re-adopts processes that are still the ones it
started (boot id + pid + start ticks), so a restarted edgecore neither duplicates
nor loses pods; after a reboot the same records say what to start again.

Each pod runs as an identity of its own (uid = gid, or its requested ids) from the node's
pod id range (:mod:`kedge.edge.edged.ids`). The identity is recorded in ``state.json``
before anything runs as it, so a pod keeps it across edgecore restarts and no two live
pods ever hold the same id; it is freed -- after its processes are swept -- when the pod
is removed. ``ids.json`` in ``root`` remembers the last id handed out, so ids are reused
as late as the range allows. Pods run only under a root edgecore, and only while the
node's data directory (key, store) is private to root: otherwise each container waits
with a reason that says so (see :mod:`kedge.edge.edged.runtime` for what this
confinement cannot do).
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import errno
import inspect
import json
import logging
import os
import re
import stat
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from kedge._internal import fsutil
from kedge.edge.edged import ids as idpolicy
from kedge.edge.edged import plan as planner
from kedge.edge.edged.content import ContainerConfigError, Lookup, resolve_env, volume_files
from kedge.edge.edged.plan import Action, BackoffPolicy, ContainerState, PodState, ProbeTracker
from kedge.edge.edged.prober import run_probe
from kedge.edge.edged.runtime import (EXIT_UNKNOWN, ContainerHandle, ContainerSpec, Runtime, StartError,
                                      proc_uids, running_uids)
from kedge.edge.edged.spec import ContainerDef, PodDef, PodSpecError, ProbeDef, parse_pod, pod_dir_name
from kedge.edge.edged.volumes import TRAVERSE_DIR, PodDir, make_dir, rotate_log
from kedge.errors import KedgeError

log = logging.getLogger(__name__)

StatusCallback = Callable[[str, str, dict[str, Any]], "Awaitable[None] | None"]
# <namespace>_<name>_<uid>, the name shortened with '~' and a digest when long (spec.pod_dir_name)
_DIR_NAME = re.compile(r"\A[a-z0-9][-a-z0-9]*_[a-z0-9][-a-z0-9.]*(?:~[0-9a-f]{32})?_[A-Za-z0-9][-A-Za-z0-9]*\Z")
POD_DIR_ERROR = "pod_dir_error"  # the code logged for a filesystem error about one pod
STATE_VERSION = 1
MAX_STATE_BYTES = 256 * 1024
IDS_FILE = "ids.json"  # in root: {"version": 1, "last": the last id handed out}
# Local accounts and subordinate id ranges: never handed to a pod.
ACCOUNT_FILES = ("/etc/passwd", "/etc/group")
SUBID_FILES = ("/etc/subuid", "/etc/subgid")


class _Pod:
    """Mutable bookkeeping for one pod (only the manager touches it)."""

    def __init__(self, root: Path, uid: str, namespace: str, name: str) -> None:
        self.uid, self.namespace, self.name = uid, namespace, name
        self.dir = PodDir(root, pod_dir_name(namespace, name, uid))
        self.defn: PodDef | None = None
        self.grace_s = 30.0
        self.start_time: float | None = None
        self.containers: dict[str, ContainerState] = {}
        self.handles: dict[str, ContainerHandle] = {}
        self.launch: dict[str, tuple[dict[str, str], str, int | None, int | None]] = {}
        self.probes: dict[tuple[str, str], ProbeTracker] = {}
        self.probing: dict[tuple[str, str], asyncio.Task[None]] = {}
        self.task: asyncio.Task[None] | None = None
        self.last_status: dict[str, Any] | None = None
        self.ids: tuple[int, int] | None = None  # (uid, gid), given once, kept until removal
        self.fs_trouble: str | None = None  # the errno last logged for this pod (see _fs_failed)

    @property
    def busy(self) -> bool:
        return self.task is not None and not self.task.done()

    def snapshot(self) -> PodState:
        return PodState(self.uid, self.namespace, self.name, tuple(self.containers.values()))


def _state_to_json(c: ContainerState) -> dict[str, Any]:
    out = dataclasses.asdict(c)
    out["last_terminated"] = list(c.last_terminated) if c.last_terminated else None
    return out


def _state_from_json(raw: dict[str, Any]) -> ContainerState:
    fields = {f.name for f in dataclasses.fields(ContainerState)}
    data = {k: v for k, v in raw.items() if k in fields}
    lt = data.get("last_terminated")
    data["last_terminated"] = (int(lt[0]), str(lt[1]), float(lt[2]), float(lt[3])) if lt else None
    return ContainerState(**data)


def _replace_private(path: Path, data: bytes) -> None:
    """Atomic 0600 replace *without* fsync.

    state.json must survive edgecore dying (the page cache does), not power loss: a
    power loss also kills every pod process, and the pods are then started again from
    the store whatever the file says. Skipping two fsyncs per change is what keeps
    starting 100 pods well under a second on a busy disk.
    """
    fsutil.atomic_write(path, data, mode=fsutil.PRIVATE_FILE, durable=False)


def _errno_name(exc: OSError) -> str:
    """``ENOSPC``, ``ENAMETOOLONG``, ...: what went wrong, without the paths."""
    return errno.errorcode.get(exc.errno or 0, exc.__class__.__name__)


def _uid(obj: Any) -> str | None:
    """metadata.uid of a pod object, or None."""
    meta = obj.get("metadata") if isinstance(obj, dict) else None
    uid = meta.get("uid") if isinstance(meta, dict) else None
    return uid if isinstance(uid, str) and uid else None


class PodManager:
    def __init__(self, root: Path | str, *, runtime: Runtime, lookup: Lookup,
                 on_status: StatusCallback, clock: Callable[[], float] = time.time,
                 uid_range: idpolicy.IdRange | str = idpolicy.DEFAULT_POD_UID_RANGE,
                 private_dirs: tuple[Path | str, ...] = (), backoff: BackoffPolicy | None = None,
                 tick_s: float = 1.0, log_max_bytes: int = 10 * 1024 * 1024, log_backups: int = 2,
                 allowed_host_paths: tuple[str, ...] = (), host_ip: str = "127.0.0.1",
                 probe_time_scale: float = 1.0, max_pods: int = 110,
                 shutdown_wait_s: float = 5.0) -> None:
        """Supervise the pods under ``root`` (``EDGEDIR/pods``).

        ``lookup(type, namespace, name)`` returns the ConfigMap (``"configmap"``) or Secret
        (``"secret"``) object the node holds, or ``None``. ``on_status(namespace, name,
        status)`` receives Kubernetes PodStatus JSON when a pod's status changes (it may be
        a coroutine function). ``tick_s``, ``backoff``, ``probe_time_scale`` and the log cap
        exist so tests run fast; the defaults are kubelet's. ``uid_range`` is the node's pod
        id range (edge config ``pod_uid_range``); ``private_dirs`` (``EDGEDIR``) must stay
        0700 and edgecore's, or no container starts.
        """
        self.root = Path(root)
        self._runtime = runtime
        self._lookup = lookup
        self._on_status = on_status
        self._clock = clock
        self._range = uid_range if isinstance(uid_range, idpolicy.IdRange) else idpolicy.parse_id_range(uid_range)
        self._private_dirs = tuple(Path(p) for p in private_dirs)
        self._backoff = backoff or BackoffPolicy()
        self._tick_s = tick_s
        self._log_max = log_max_bytes
        self._log_backups = log_backups
        self._allowed = tuple(os.path.normpath(p) for p in allowed_host_paths)
        self._host_ip = host_ip
        if probe_time_scale <= 0:
            raise ValueError("probe_time_scale must be positive")
        self._probe_scale = probe_time_scale
        self._max_pods = max_pods  # kubelet's default --max-pods
        self._shutdown_wait_s = shutdown_wait_s
        self._euid, self._egid = os.geteuid(), os.getegid()
        self._desired: dict[str, PodDef] | None = None
        self._parsed: dict[str, tuple[dict[str, Any], PodDef]] = {}  # uid -> (object as parsed, result)
        self._pods: dict[str, _Pod] = {}
        self._wake = asyncio.Event()
        self._exit_fds: dict[tuple[int, int], int] = {}  # (pid, start ticks) -> pidfd, see _notice_exit
        self._closed = False
        # Observers (tests, metrics): how many supervisor passes have finished, and the clock
        # reading at the start of the last one. A pass started at T has acted on everything due
        # by T (back-off restarts, probes), so "nothing happened by T" is a positive signal.
        self.passes = 0
        self.last_pass_started = float("-inf")
        make_dir(self.root, TRAVERSE_DIR)
        self._root_reachable = all(os.stat(p).st_mode & 0o001 for p in [self.root, *self.root.parents])
        self._excluded = self._account_ids() if self._euid == 0 else []
        self._reserved: set[int] = set()  # owners of pod directories whose state is unreadable
        self._last_id = self._load_last_id()
        if self._euid != 0:
            log.warning("edgecore is not root (uid %d): pods will not run -- each pod needs a uid of "
                        "its own, which only root can give", self._euid)
        self._load()

    # --- persistence --------------------------------------------------------------------

    def _account_ids(self) -> list[tuple[int, int]]:
        """Ids of local accounts and subordinate ranges: excluded from the pod id range."""
        single: set[int] = set()
        blocks: list[tuple[int, int]] = []
        for path, parse in [*((p, idpolicy.passwd_ids) for p in ACCOUNT_FILES),
                            *((p, idpolicy.subid_blocks) for p in SUBID_FILES)]:
            try:
                text = Path(path).read_text(errors="replace")
            except OSError:
                continue
            found = parse(text)
            if isinstance(found, set):
                single |= found
            else:
                blocks += found
        return idpolicy.excluded_blocks(single, blocks)

    def _load_last_id(self) -> int | None:
        try:
            raw = fsutil.read_json(self.root / IDS_FILE)
        except (KedgeError, ValueError):
            return None
        last = raw.get("last") if isinstance(raw, dict) else None
        return last if last in self._range else None

    def _held_ids(self, but: _Pod | None = None) -> set[int]:
        """Every id a live pod other than ``but`` holds (its identity and what its running
        containers were started as), and those of unreadable pod directories."""
        held = set(self._reserved)
        for pod in self._pods.values():
            if pod is but:
                continue
            if pod.ids is not None:
                held.update(pod.ids)
            for _, _, uid, gid in pod.launch.values():
                held.update(x for x in (uid, gid) if x is not None)
        return held

    def _load(self) -> None:
        now = self._clock()
        for entry in sorted(self.root.iterdir()):
            if not _DIR_NAME.match(entry.name) or not entry.is_dir():
                continue
            try:
                raw = fsutil.read_json(entry / "state.json")
                if raw is None:
                    self._reserve_owner(entry)
                    continue
                pod = self._restore(raw, now)
            except (KedgeError, AttributeError, KeyError, TypeError, ValueError) as exc:
                log.warning("ignoring unreadable pod state in %s: %s", entry.name, exc.__class__.__name__)
                self._reserve_owner(entry)
                continue
            # A directory made before names were bounded keeps its longer (<= 255) name.
            if entry.name not in (pod.dir.path.name, f"{pod.namespace}_{pod.name}_{pod.uid}"):
                log.warning("ignoring pod state that does not match its directory %s", entry.name)
                self._reserve_owner(entry)
                continue
            pod.dir = PodDir(self.root, entry.name)
            self._pods[pod.uid] = pod
            self._save(pod)

    def _reserve_owner(self, entry: Path) -> None:
        """A pod directory we cannot account for may hold files of some uid: never hand it out."""
        for leaf in (entry / "work", entry / "run"):
            try:
                st = os.lstat(leaf)
            except OSError:
                continue
            self._reserved.update(x for x in (st.st_uid, st.st_gid) if x in self._range)

    def _restore(self, raw: dict[str, Any], now: float) -> _Pod:
        if raw.get("version") != STATE_VERSION:
            raise ValueError("unknown state version")
        pod = _Pod(self.root, str(raw["uid"]), str(raw["namespace"]), str(raw["name"]))
        pod.grace_s = float(raw.get("grace_s", 30.0))
        pod.start_time = raw.get("start_time")
        ids = raw.get("ids")
        if isinstance(ids, list) and len(ids) == 2 and all(x in self._range for x in ids):
            pod.ids = (int(ids[0]), int(ids[1]))
        for name, rec in dict(raw["containers"]).items():
            state = _state_from_json(rec["state"])
            handle_rec = rec.get("handle")
            if not state.running and state.started_at is None and state.reason in planner.NODE_REFUSALS:
                # Refused for how the node was (not root, another range): decide again.
                state = dataclasses.replace(state, reason="", message="", finished_at=None)
            if state.running:
                handle = self._runtime.adopt(pod.uid, name, handle_rec) if handle_rec else None
                if handle is not None:
                    pod.handles[name] = handle
                    self._notice_exit(handle)
                    # Probes start afresh; readiness is re-proven before it is claimed.
                    state = dataclasses.replace(state, unhealthy=False)
                    uids = proc_uids(handle.pid)
                    if pod.ids is None or uids is None or set(uids) != {pod.ids[0]}:
                        # Started before pods had identities of their own (or under an id
                        # outside today's range): restarted as the pod's own uid.
                        state = dataclasses.replace(state, spec_hash="")
                        log.info("%s/%s container %s runs as %s, not as an id of its own: restarting it",
                                 pod.namespace, pod.name, name, uids[0] if uids else "?")
                    log.info("re-adopted %s/%s container %s (pid %d)", pod.namespace, pod.name, name,
                             handle.pid)
                else:
                    rebooted = isinstance(handle_rec, dict) and handle_rec.get("boot_id") != getattr(
                        self._runtime, "boot_id", None)
                    code = None if rebooted or not handle_rec else self._runtime.recorded_exit(handle_rec)
                    if code is not None:  # it ended on its own while we were away, and said how
                        state = dataclasses.replace(
                            state, running=False, ready=False, finished_at=now, exit_code=code,
                            reason=planner.COMPLETED if code == 0 else planner.ERROR)
                    else:
                        state = dataclasses.replace(
                            state, running=False, ready=False, finished_at=now,
                            exit_code=255 if rebooted else 137,
                            reason=planner.NODE_RESTART if rebooted else planner.STATUS_UNKNOWN)
            pod.containers[name] = state
        return pod

    def _save(self, pod: _Pod) -> None:
        doc = {"version": STATE_VERSION, "uid": pod.uid, "namespace": pod.namespace, "name": pod.name,
               "grace_s": pod.grace_s, "start_time": pod.start_time,
               "ids": list(pod.ids) if pod.ids is not None else None,
               "containers": {name: {"state": _state_to_json(c),
                                     "handle": pod.handles[name].to_dict() if name in pod.handles else None}
                              for name, c in pod.containers.items()}}
        make_dir(pod.dir.path, TRAVERSE_DIR)
        _replace_private(pod.dir.state, json.dumps(doc, sort_keys=True).encode())

    def _fs_failed(self, pod: _Pod, what: str, exc: OSError) -> None:
        """A filesystem error about one pod (its directory, state, logs): logged once per errno
        until a container of the pod starts, with a code and the errno's name -- not a
        traceback at every retry. The pod's status says why its containers do not run (see
        :meth:`_start`)."""
        name = _errno_name(exc)
        if pod.fs_trouble == name:
            log.debug("pod %s/%s: %s failed again (%s)", pod.namespace, pod.name, what, name)
            return
        pod.fs_trouble = name
        log.warning("pod %s/%s: %s failed (%s, %s); retried with back-off", pod.namespace, pod.name, what,
                    POD_DIR_ERROR, name)

    # --- public API -----------------------------------------------------------------------

    async def sync(self, desired: list[dict[str, Any]]) -> None:
        """Make the node run exactly ``desired`` (every Pod object bound to it)."""
        parsed: list[PodDef] = []
        seen: dict[str, tuple[dict[str, Any], PodDef]] = {}
        for obj in desired:
            # Parse each version of a pod once, not every pod again on every store change
            # (O(pods) per new pod otherwise): an object equal to the one parsed last time
            # gets the same PodDef (comparing is far cheaper than validating).
            uid = _uid(obj)
            known = self._parsed.get(uid) if uid is not None else None
            if known is not None and known[0] == obj:
                parsed.append(known[1])
                seen[uid] = known
                continue
            try:
                parsed.append(parse_pod(obj))
                if uid is not None:
                    seen[uid] = (copy.deepcopy(obj), parsed[-1])  # a copy: the caller's may change
            except PodSpecError as exc:
                meta = obj.get("metadata") if isinstance(obj, dict) else None
                uid = meta.get("uid") if isinstance(meta, dict) else None
                kept = self._desired.get(uid) if self._desired and isinstance(uid, str) else None
                log.warning("refusing pod (%s): %s%s", exc.code, exc,
                            "; keeping the previous spec" if kept else "")
                if kept is not None:
                    parsed.append(kept)
        self._parsed = seen
        # Over the pod limit, pods already here win: a resync never evicts a running pod.
        parsed.sort(key=lambda p: p.uid not in self._pods)
        wanted: dict[str, PodDef] = {}
        for pod in parsed:
            if pod.uid not in wanted and len(wanted) >= self._max_pods:
                log.warning("refusing pod %s/%s: the node runs at most %d pods", pod.namespace, pod.name,
                            self._max_pods)
                continue
            wanted[pod.uid] = pod
        self._desired = wanted
        for pod_def in wanted.values():
            pod = self._pods.get(pod_def.uid)
            if pod is not None:
                pod.defn = pod_def
                pod.grace_s = pod_def.grace_period_s
                if not pod.busy:
                    self._readopt(pod)
                    self._refresh_volumes(pod)
        self._reconcile()
        await self._report()

    async def run(self) -> None:
        """Supervise until cancelled: exits, back-off restarts, probes, logs, status."""
        while not self._closed:
            started = self._clock()
            self._tick()
            self._reconcile()
            await self._report()
            self.passes += 1
            self.last_pass_started = started
            try:
                # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancellation
                # that races with the event being set, and the loop would never stop.
                async with asyncio.timeout(self._tick_s):
                    await self._wake.wait()
            except TimeoutError:
                pass
            self._wake.clear()

    async def shutdown(self, *, stop_pods: bool) -> None:
        """edgecore is stopping. ``stop_pods=False`` leaves every pod process running."""
        self._closed = True
        for pod in self._pods.values():
            for task in pod.probing.values():
                task.cancel()
        busy = [p.task for p in self._pods.values() if p.task is not None and p.busy]
        if busy:
            # In-flight actions may be waiting out a grace period; do not hang edgecore's
            # exit on them. A cancelled stop leaves state.json saying "running", so the next
            # edgecore re-adopts the process and finishes the job.
            _, pending = await asyncio.wait(busy, timeout=self._shutdown_wait_s)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        if stop_pods:
            await asyncio.gather(*(self._stop_all(p, "Shutdown") for p in self._pods.values()),
                                 return_exceptions=True)
            for pod in self._pods.values():
                self._sweep(pod)
        for key in list(self._exit_fds):
            self._forget_exit(key)
        for pod in list(self._pods.values()):
            try:
                if pod.dir.path.exists():
                    self._save(pod)
            except OSError as exc:
                self._fs_failed(pod, "saving its state", exc)

    def log_path(self, namespace: str, name: str, container: str, previous: bool = False) -> Path | None:
        """The log file of a container this node runs (``previous``: the rotated one), or ``None``.
        Names are only matched against running pods, never joined into a path."""
        for pod in list(self._pods.values()):
            if (pod.namespace, pod.name) == (namespace, name) and container in pod.containers:
                path = pod.dir.log_path(container)
                return path.with_name(f"{path.name}.1") if previous else path
        return None

    def read_log(self, namespace: str, name: str, container: str, *, limit_bytes: int = 1024 * 1024,
                 previous: bool = False) -> bytes | None:
        """The last ``limit_bytes`` of a container's log (``kubectl logs``), or ``None``.

        ``previous`` reads the last rotated file. Names are matched against pods this
        node runs, never joined into a path from the request.
        """
        if limit_bytes <= 0:
            raise ValueError("limit_bytes must be positive")
        for pod in self._pods.values():
            if (pod.namespace, pod.name) == (namespace, name) and container in pod.containers:
                path = pod.dir.log_path(container)
                if previous:
                    path = path.with_name(f"{path.name}.1")
                try:
                    with open(path, "rb") as fh:
                        size = os.fstat(fh.fileno()).st_size
                        fh.seek(max(0, size - limit_bytes))
                        return fh.read(limit_bytes)
                except FileNotFoundError:
                    return b""
        return None

    def pod_state(self, uid: str) -> PodState | None:
        pod = self._pods.get(uid)
        return pod.snapshot() if pod else None

    def handles(self, uid: str) -> dict[str, ContainerHandle]:
        pod = self._pods.get(uid)
        return dict(pod.handles) if pod else {}

    # --- the loop -------------------------------------------------------------------------

    def _notice_exit(self, handle: ContainerHandle) -> None:
        """Wake the loop as soon as ``handle``'s process ends, so its exit is recorded and
        reported then and not at the next tick (up to ``tick_s`` later).

        A pidfd becomes readable when the process ends, for adopted processes as for our
        own children. Without pidfds (old kernel) or outside a running loop the tick
        notices the exit, as before. The wake-up only makes :meth:`_tick` poll now.
        """
        key = (handle.pid, handle.proc_start)
        if key in self._exit_fds:
            return
        try:
            loop = asyncio.get_running_loop()
            fd = os.pidfd_open(handle.pid)
        except (AttributeError, OSError, RuntimeError):
            return
        self._exit_fds[key] = fd

        def ended() -> None:
            self._forget_exit(key)
            self._wake.set()

        try:
            loop.add_reader(fd, ended)
        except (NotImplementedError, OSError):
            self._forget_exit(key)

    def _forget_exit(self, key: tuple[int, int]) -> None:
        fd = self._exit_fds.pop(key, None)
        if fd is None:
            return
        try:
            asyncio.get_running_loop().remove_reader(fd)
        except (RuntimeError, NotImplementedError, OSError, ValueError):
            pass
        os.close(fd)

    def _tick(self) -> None:
        now = self._clock()
        for pod in list(self._pods.values()):
            if pod.busy:
                continue
            changed = False
            for name, handle in list(pod.handles.items()):
                rc = self._runtime.poll(handle)
                if rc is not None:
                    self._record_exit(pod, name, rc, now)
                    changed = True
                    continue
                try:
                    rotate_log(pod.dir.log_path(name), self._log_max, self._log_backups)
                except OSError as exc:  # one pod's files: every container is still polled
                    self._fs_failed(pod, f"rotating the log of {name}", exc)
            try:
                if changed:
                    self._save(pod)
            except OSError as exc:
                self._fs_failed(pod, "saving its state", exc)
            self._schedule_probes(pod, now)

    def _reconcile(self) -> None:
        if self._desired is None or self._closed:
            return
        idle = {uid: p for uid, p in self._pods.items() if not p.busy}
        desired = [d for uid, d in self._desired.items() if uid not in self._pods or uid in idle]
        actual = {uid: p.snapshot() for uid, p in idle.items()}
        by_pod: dict[str, list[Action]] = {}
        for action in planner.plan(desired, actual, self._clock(), self._backoff):
            by_pod.setdefault(action.pod_uid, []).append(action)
        for uid, actions in by_pod.items():
            pod = self._pods.get(uid)
            if pod is None:
                d = self._desired[uid]
                pod = self._pods[uid] = _Pod(self.root, d.uid, d.namespace, d.name)
                pod.defn, pod.grace_s = d, d.grace_period_s
            pod.task = asyncio.ensure_future(self._apply(pod, actions))
            pod.task.add_done_callback(lambda _t: self._wake.set())

    async def _report(self) -> None:
        for pod in list(self._pods.values()):
            if not pod.busy:  # a busy pod reports when its actions are done
                await self._report_pod(pod)

    async def _report_pod(self, pod: _Pod) -> None:
        if pod.defn is None or self._desired is None or pod.uid not in self._desired:
            return
        status = planner.pod_status(pod.defn, pod.snapshot(), self._clock(), backoff=self._backoff,
                                    previous=pod.last_status, start_time=pod.start_time,
                                    host_ip=self._host_ip)
        if status == pod.last_status:
            return
        pod.last_status = status
        try:
            result = self._on_status(pod.namespace, pod.name, status)
            if inspect.isawaitable(result):
                await result
        except Exception:  # noqa: BLE001 - a failing consumer must not stop supervision
            log.exception("on_status failed for %s/%s", pod.namespace, pod.name)

    # --- actions --------------------------------------------------------------------------

    async def _apply(self, pod: _Pod, actions: list[Action]) -> None:
        try:
            for action in actions:
                if action.kind == "start":
                    await self._start(pod, action.container, action.crash_streak)
                elif action.kind == "stop":
                    await self._stop(pod, action.container)
                elif action.kind == "restart":
                    await self._stop(pod, action.container)
                    await self._start(pod, action.container, 0)
                elif action.kind == "kill_pod":
                    await self._stop_all(pod, action.reason)
                elif action.kind == "remove_pod":
                    await self._stop_all(pod, action.reason)
                    self._sweep(pod)
                    pod.dir.remove()
                    self._pods.pop(pod.uid, None)  # its ids are free from here on
                    log.info("removed pod %s/%s", pod.namespace, pod.name)
                    return
                self._save(pod)
            await self._report_pod(pod)  # persisted first, then reported
        except OSError as exc:  # its directory (disk full, read-only, ...): said once, retried
            self._fs_failed(pod, f"applying {[a.kind for a in actions]}", exc)
            await self._report_pod(pod)  # what it could not do is on its containers' states
        except Exception:  # noqa: BLE001 - keep supervising the other pods
            log.exception("applying %s to pod %s/%s failed", [a.kind for a in actions], pod.namespace,
                          pod.name)

    def _sweep(self, pod: _Pod) -> None:
        """Kill whatever still runs as the pod's uid (daemons that left its process groups)."""
        reap = getattr(self._runtime, "reap_user", None)
        uids = {pod.ids[0]} if pod.ids is not None else set()
        uids.update(u for _, _, u, _ in pod.launch.values() if u is not None)
        for uid in uids:
            if reap is not None and uid in self._range:
                reap(uid)

    async def _stop_all(self, pod: _Pod, reason: str) -> None:
        await asyncio.gather(*(self._stop(pod, name) for name in list(pod.handles)))
        if pod.dir.path.exists() and reason != "Deleted":
            self._save(pod)

    async def _stop(self, pod: _Pod, name: str) -> None:
        handle = pod.handles.get(name)
        if handle is None:
            return
        for key in [k for k in pod.probing if k[0] == name]:
            pod.probing.pop(key).cancel()
        rc = await self._runtime.stop_container(handle, pod.grace_s)
        self._record_exit(pod, name, EXIT_UNKNOWN if rc is None else rc, self._clock())

    def _record_exit(self, pod: _Pod, name: str, rc: int, now: float) -> None:
        prev = pod.containers[name]
        pod.handles.pop(name, None)
        pod.launch.pop(name, None)
        for key in [k for k in pod.probes if k[0] == name]:
            pod.probes.pop(key)
        if rc == EXIT_UNKNOWN:
            code, reason = 137, planner.STATUS_UNKNOWN
        else:
            code, reason = rc, planner.COMPLETED if rc == 0 else planner.ERROR
        pod.containers[name] = dataclasses.replace(
            prev, running=False, ready=False, unhealthy=False, exit_code=code, finished_at=now,
            reason=reason, message="")
        log.info("container %s/%s/%s exited with %d", pod.namespace, pod.name, name, code)

    async def _start(self, pod: _Pod, name: str, streak: int) -> None:
        defn = pod.defn
        assert defn is not None  # nosec B101 - plan only starts desired pods
        spec = next(c for c in defn.containers if c.name == name)
        prev = pod.containers.get(name)
        now = self._clock()
        restarts = (prev.restart_count + 1 if prev.started_at is not None else prev.restart_count) \
            if prev else 0
        last = prev.last_terminated if prev else None
        if prev is not None and prev.has_run:
            last = (prev.exit_code or 0, prev.reason or planner.ERROR, prev.started_at or now,
                    prev.finished_at or now)
        base = ContainerState(name, spec_hash=spec.spec_hash, restart_count=restarts, crash_streak=streak,
                              last_terminated=last)
        if pod.start_time is None:
            pod.start_time = now
        if spec.command is None:
            pod.containers[name] = dataclasses.replace(
                base, reason=planner.NO_COMMAND, finished_at=now,
                message="no command: the process runtime has no images to take an entrypoint from")
            return
        try:
            cspec, launch = self._prepare(pod, defn, spec)
        except ContainerConfigError as exc:
            pod.containers[name] = dataclasses.replace(base, reason=exc.reason, message=str(exc),
                                                       finished_at=now)
            log.warning("pod %s/%s container %s: %s", pod.namespace, pod.name, name, exc)
            return
        except OSError as exc:  # our side (disk full, ...): retried after the base back-off
            pod.containers[name] = dataclasses.replace(
                base, reason="CreateContainerError", finished_at=now,
                message=f"cannot prepare the pod's directory: {_errno_name(exc)}")
            self._fs_failed(pod, f"preparing container {name}", exc)
            return
        try:
            handle = await self._runtime.start_container(pod.uid, cspec)
        except StartError as exc:
            pod.containers[name] = dataclasses.replace(
                base, started_at=now, finished_at=now, exit_code=128, reason=planner.START_ERROR,
                message=str(exc))
            return
        pod.handles[name] = handle
        pod.fs_trouble = None
        self._notice_exit(handle)
        pod.launch[name] = launch
        pod.containers[name] = dataclasses.replace(base, running=True, started_at=handle.started_at,
                                                   ready=spec.readiness is None)
        log.info("started %s/%s container %s (pid %d)", pod.namespace, pod.name, name, handle.pid)

    def _readopt(self, pod: _Pod) -> None:
        """Adopted processes get their launch context back, so their probes run again."""
        if pod.defn is None:
            return
        for spec in pod.defn.containers:
            if spec.name in pod.handles and spec.name not in pod.launch and spec.command is not None:
                try:
                    _, pod.launch[spec.name] = self._prepare(pod, pod.defn, spec, materialise=False)
                except (ContainerConfigError, OSError) as exc:
                    log.warning("pod %s/%s container %s: no probes after re-adoption: %s",
                                pod.namespace, pod.name, spec.name, exc)

    def _prepare(self, pod: _Pod, defn: PodDef, spec: ContainerDef, *, materialise: bool = True) -> tuple[
            ContainerSpec, tuple[dict[str, str], str, int | None, int | None]]:
        uid, gid = self._identity(pod, defn, allocate=materialise)
        if not self._root_reachable:
            raise ContainerConfigError(f"{self.root} is not reachable by uid {uid}: every parent "
                                       "directory needs o+x (0711)")
        if materialise:
            pod.dir.create(uid, gid)
            self._materialise(pod, defn, uid, gid)
        paths = {}
        for m in spec.mounts:
            path = pod.dir.volume_path(m.name)
            paths[m.name] = str(path / m.sub_path) if m.sub_path else str(path)
        if not spec.working_dir:
            cwd = str(pod.dir.work)
        elif spec.working_dir.startswith("/"):
            cwd = os.path.normpath(spec.working_dir)
            if not any(cwd == a or cwd.startswith(a.rstrip("/") + "/") for a in self._allowed):
                raise ContainerConfigError(f"workingDir {cwd!r} is outside the pod and not allowed")
        else:
            try:
                cwd = str(pod.dir.ensure_workdir(spec.working_dir, uid, gid))
            except OSError as exc:
                raise ContainerConfigError("workingDir cannot be created") from exc
        env = resolve_env(defn, spec, self._lookup, volume_paths=paths, host_ip=self._host_ip)
        assert spec.command is not None  # nosec B101 - checked by the caller
        cspec = ContainerSpec(spec.name, tuple(spec.command) + spec.args, tuple(env.items()), cwd,
                              str(pod.dir.log_path(spec.name)), uid, gid, spec.image,
                              str(pod.dir.exit_path(spec.name)))
        return cspec, (env, cwd, uid, gid)

    def _identity(self, pod: _Pod, defn: PodDef, *, allocate: bool) -> tuple[int, int]:
        """The pod's (uid, gid); a fresh identity is recorded in ``state.json`` before use."""
        idpolicy.check_runtime(self._euid)
        for d in self._private_dirs:
            try:
                st = os.stat(d)
            except OSError as exc:
                raise ContainerConfigError(f"{d} cannot be checked", reason=planner.NODE_DIR_EXPOSED) from exc
            if st.st_uid != self._euid or st.st_mode & 0o077:
                raise ContainerConfigError(
                    f"{d} (the node's key and store) is mode {stat.S_IMODE(st.st_mode):04o} owned by uid "
                    f"{st.st_uid}: no pod runs until it is 0700 and edgecore's", reason=planner.NODE_DIR_EXPOSED)
        request = idpolicy.pod_request(defn, self._range)
        if not allocate:
            if pod.ids is None:
                raise ContainerConfigError("the pod has no identity yet")
            return pod.ids
        others = self._held_ids(but=pod)
        if pod.ids is None:  # a first identity: not one that some process on the host runs as
            others |= {u for u in running_uids() if u in self._range}
        ids = idpolicy.choose_ids(request, pod.ids, others, self._range, after=self._last_id,
                                  excluded=self._excluded)
        if ids != pod.ids:
            pod.ids = ids
            self._save(pod)  # recorded before anything runs as it
            if ids[0] != request.uid:
                self._last_id = ids[0]
                fsutil.atomic_write(self.root / IDS_FILE, json.dumps({"version": 1, "last": ids[0]}).encode(),
                                    mode=fsutil.PRIVATE_FILE, durable=False)
            log.info("pod %s/%s runs as uid %d gid %d", pod.namespace, pod.name, ids[0], ids[1])
        return ids

    def _materialise(self, pod: _Pod, defn: PodDef, uid: int | None, gid: int | None) -> None:
        for vol in defn.volumes:
            files = volume_files(defn, vol, self._lookup)
            if files is None:
                pod.dir.ensure_empty_dir(vol.name, uid, gid)
            else:
                pod.dir.write_volume(vol.name, files, uid, gid)

    def _refresh_volumes(self, pod: _Pod) -> None:
        """ConfigMap/Secret updates reach a running pod's volume files (not its env)."""
        if pod.defn is None or not pod.launch:
            return
        _, _, uid, gid = next(iter(pod.launch.values()))
        try:
            self._materialise(pod, pod.defn, uid, gid)
        except (ContainerConfigError, OSError) as exc:
            log.warning("pod %s/%s: volumes not refreshed: %s", pod.namespace, pod.name, exc)

    # --- probes ---------------------------------------------------------------------------

    def _schedule_probes(self, pod: _Pod, now: float) -> None:
        if pod.defn is None:
            return
        for spec in pod.defn.containers:
            handle = pod.handles.get(spec.name)
            state = pod.containers.get(spec.name)
            if handle is None or state is None or not state.running or spec.name not in pod.launch:
                continue
            for kind, probe in (("liveness", spec.liveness), ("readiness", spec.readiness)):
                if probe is None:
                    continue
                probe = self._scaled(probe)
                key = (spec.name, kind)
                tracker = pod.probes.get(key) or (ProbeTracker.liveness() if kind == "liveness"
                                                  else ProbeTracker(result=state.ready))
                pod.probes[key] = tracker
                task = pod.probing.get(key)
                if (task is not None and not task.done()) or not planner.probe_due(
                        probe, tracker, handle.started_at, now):
                    continue
                pod.probing[key] = asyncio.ensure_future(self._probe(pod, spec, kind, probe, handle))

    def _scaled(self, probe: ProbeDef) -> ProbeDef:
        if self._probe_scale == 1.0:
            return probe
        k = self._probe_scale
        return dataclasses.replace(probe, initial_delay_s=probe.initial_delay_s * k,
                                   period_s=probe.period_s * k, timeout_s=probe.timeout_s * k)

    async def _probe(self, pod: _Pod, spec: ContainerDef, kind: str, probe: ProbeDef,
                     handle: ContainerHandle) -> None:
        env, cwd, uid, gid = pod.launch[spec.name]
        ok = await run_probe(probe, spec, env=env, cwd=cwd, uid=uid, gid=gid)
        if pod.handles.get(spec.name) is not handle:
            return  # restarted meanwhile: this result is about the old process
        key = (spec.name, kind)
        tracker = planner.probe_observe(probe, pod.probes[key], ok, self._clock())
        pod.probes[key] = tracker
        state = pod.containers[spec.name]
        if kind == "liveness" and not tracker.result and not state.unhealthy:
            log.info("liveness probe failed for %s/%s container %s", pod.namespace, pod.name, spec.name)
            pod.containers[spec.name] = dataclasses.replace(state, unhealthy=True)
            self._wake.set()
        elif kind == "readiness" and tracker.result != state.ready:
            pod.containers[spec.name] = dataclasses.replace(state, ready=tracker.result)
            self._wake.set()
