"""The reconcile decisions of edged, as pure functions.

:func:`plan` compares the pods the node should run with what it runs and says what
to do -- start, stop, restart, remove -- with kubelet's crash-loop back-off
(10 s, doubling, capped at 300 s, forgotten after 10 min of running). A container
whose spec hash is unchanged and which is running is left alone: that is what lets
an edge converge after a reconnect or an edgecore restart without restarting
healthy pods. :func:`pod_status` turns the same state into Kubernetes ``PodStatus``
JSON. :func:`probe_observe` is the probe threshold state machine.

Pure: no I/O, no clock -- ``now`` (seconds since the epoch) is a parameter.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Iterable, Mapping
from typing import Any

from kedge.edge.edged.spec import ContainerDef, PodDef, ProbeDef

# Reasons (Kubernetes spellings where Kubernetes has one).
CONTAINER_CREATING = "ContainerCreating"
CRASH_LOOP = "CrashLoopBackOff"
NO_COMMAND = "NoCommand"
CONFIG_ERROR = "CreateContainerConfigError"
COMPLETED = "Completed"
ERROR = "Error"
START_ERROR = "StartError"
STATUS_UNKNOWN = "ContainerStatusUnknown"  # the process vanished while we were not watching
NODE_RESTART = "Unknown"  # the node rebooted under a running container (kubelet reports this)
# The node will not run the pod as asked (see kedge.edge.edged.ids): a securityContext id
# outside the node's pod id range, root, supplementary groups...
RUN_AS_REFUSED = "SecurityContextRefused"
# edgecore is not root, so it cannot give the pod a uid of its own: no pod runs.
RUNTIME_NEEDS_ROOT = "RuntimeNeedsRoot"
# EDGEDIR (node key, store) is open to other users: no pod runs until it is 0700 again.
NODE_DIR_EXPOSED = "NodeDataDirExposed"

# Containers lost to a node reboot come back at once, without back-off.
_IMMEDIATE = frozenset({NODE_RESTART})
# Refusals that retrying cannot fix until the spec changes (or, for the node's own
# conditions, until edgecore restarts: the manager forgets those when it loads).
NODE_REFUSALS = frozenset({RUN_AS_REFUSED, RUNTIME_NEEDS_ROOT})
_PERMANENT = frozenset({NO_COMMAND}) | NODE_REFUSALS


@dataclasses.dataclass(frozen=True)
class BackoffPolicy:
    """kubelet's crash-loop back-off: ``base * 2**streak`` capped at ``cap``."""

    base_s: float = 10.0
    cap_s: float = 300.0
    reset_after_s: float = 600.0

    def __post_init__(self) -> None:
        if not 0 < self.base_s <= self.cap_s or self.reset_after_s <= 0:
            raise ValueError("back-off needs 0 < base <= cap and a positive reset window")

    def delay(self, streak: int) -> float:
        if streak <= 0:
            return self.base_s
        if streak >= 32:
            return self.cap_s
        return min(self.base_s * (1 << streak), self.cap_s)


@dataclasses.dataclass(frozen=True)
class ContainerState:
    """What edged knows about one container (persisted in ``state.json``)."""

    name: str
    spec_hash: str = ""
    running: bool = False
    started_at: float | None = None  # current or last run
    finished_at: float | None = None  # last exit, or last failed attempt to start
    exit_code: int | None = None
    reason: str = ""  # terminated reason, or why it could not start
    message: str = ""
    restart_count: int = 0
    crash_streak: int = 0  # consecutive restarts without a long-enough run
    ready: bool = False
    unhealthy: bool = False  # liveness probe says: restart
    last_terminated: tuple[int, str, float, float] | None = None  # (exitCode, reason, started, finished)

    def __post_init__(self) -> None:
        if self.restart_count < 0 or self.crash_streak < 0:
            raise ValueError("counts must be >= 0")
        if self.running and self.started_at is None:
            raise ValueError("a running container has a start time")

    @property
    def has_run(self) -> bool:
        return self.started_at is not None and self.exit_code is not None


@dataclasses.dataclass(frozen=True)
class PodState:
    uid: str
    namespace: str
    name: str
    containers: tuple[ContainerState, ...] = ()

    def container(self, name: str) -> ContainerState | None:
        for c in self.containers:
            if c.name == name:
                return c
        return None


@dataclasses.dataclass(frozen=True)
class Action:
    """One step for the shell. ``kind``: start | stop | restart | kill_pod | remove_pod."""

    kind: str
    pod_uid: str
    container: str = ""
    reason: str = ""
    crash_streak: int = 0  # for start/restart: the streak the new run carries

    def __post_init__(self) -> None:
        if self.kind not in ("start", "stop", "restart", "kill_pod", "remove_pod"):
            raise ValueError(f"unknown action {self.kind!r}")


def should_restart(policy: str, exit_code: int | None) -> bool:
    if policy == "Always":
        return True
    if policy == "OnFailure":
        return exit_code != 0
    return False


def restart_at(c: ContainerState, backoff: BackoffPolicy) -> tuple[float, int]:
    """When an exited container may start again, and the streak that run will carry."""
    assert c.finished_at is not None  # nosec B101 - callers only ask for exited containers
    if c.reason in _IMMEDIATE:
        return c.finished_at, 0
    ran = c.finished_at - c.started_at if c.started_at is not None else 0.0
    streak = 0 if ran >= backoff.reset_after_s else c.crash_streak
    return c.finished_at + backoff.delay(streak), streak + 1


def _plan_container(pod: PodDef, spec: ContainerDef, c: ContainerState | None, now: float,
                    backoff: BackoffPolicy) -> Action | None:
    uid = pod.uid
    if c is None:
        return Action("start", uid, spec.name, "Created")
    if c.running:
        if c.spec_hash != spec.spec_hash:
            return Action("restart", uid, spec.name, "SpecChanged")
        if c.unhealthy:
            return Action("stop", uid, spec.name, "LivenessProbeFailed")
        return None
    if c.spec_hash != spec.spec_hash:
        return Action("start", uid, spec.name, "SpecChanged")
    if c.started_at is None:  # never ran: waiting on config, or refused
        if c.reason in _PERMANENT:
            return None
        if c.reason and c.finished_at is not None and now < c.finished_at + backoff.base_s:
            return None
        return Action("start", uid, spec.name, "Created" if not c.reason else "Retry")
    if c.exit_code is None or c.finished_at is None:
        return None  # exiting: the shell has not recorded the exit yet
    if not should_restart(pod.restart_policy, c.exit_code):
        return None
    due, streak = restart_at(c, backoff)
    if now < due:
        return None
    return Action("start", uid, spec.name, "BackOff", crash_streak=streak)


def plan(desired: Iterable[PodDef], actual: Mapping[str, PodState], now: float,
         backoff: BackoffPolicy = BackoffPolicy()) -> list[Action]:
    """Actions that move ``actual`` (by pod uid) towards ``desired``."""
    actions: list[Action] = []
    wanted = {p.uid: p for p in desired}
    for uid in sorted(set(actual) - set(wanted)):
        actions.append(Action("remove_pod", uid, reason="Deleted"))
    for pod in wanted.values():
        state = actual.get(pod.uid)
        if pod.deleting:
            if state is not None and any(c.running for c in state.containers):
                actions.append(Action("kill_pod", pod.uid, reason="Terminating"))
            continue
        names = {c.name for c in pod.containers}
        if state is not None:
            for c in state.containers:
                if c.name not in names and c.running:
                    actions.append(Action("stop", pod.uid, c.name, "Removed"))
        for spec in pod.containers:
            action = _plan_container(pod, spec, state.container(spec.name) if state else None, now,
                                     backoff)
            if action is not None:
                actions.append(action)
    return actions


# --- probes ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ProbeTracker:
    """Consecutive results of one probe; ``result`` flips only at a threshold."""

    result: bool
    successes: int = 0
    failures: int = 0
    last_run: float | None = None

    @classmethod
    def liveness(cls) -> "ProbeTracker":
        return cls(result=True)  # alive until proven otherwise

    @classmethod
    def readiness(cls) -> "ProbeTracker":
        return cls(result=False)  # not ready until proven


def probe_due(probe: ProbeDef, tracker: ProbeTracker, started_at: float, now: float) -> bool:
    if now < started_at + probe.initial_delay_s:
        return False
    return tracker.last_run is None or now >= tracker.last_run + probe.period_s


def probe_observe(probe: ProbeDef, tracker: ProbeTracker, ok: bool, now: float) -> ProbeTracker:
    if ok:
        successes, failures = tracker.successes + 1, 0
        result = True if successes >= probe.success_threshold else tracker.result
    else:
        successes, failures = 0, tracker.failures + 1
        result = False if failures >= probe.failure_threshold else tracker.result
    return ProbeTracker(result=result, successes=successes, failures=failures, last_run=now)


# --- status ---------------------------------------------------------------------------


def rfc3339(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.datetime.fromtimestamp(int(ts), tz=datetime.timezone.utc).strftime(
        "%Y-%m-%dT%H:%M:%SZ")


def _terminated(exit_code: int, reason: str, started: float | None, finished: float | None,
                message: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {"exitCode": exit_code, "reason": reason or (COMPLETED if exit_code == 0
                                                                        else ERROR)}
    if started is not None:
        out["startedAt"] = rfc3339(started)
    if finished is not None:
        out["finishedAt"] = rfc3339(finished)
    if message:
        out["message"] = message
    return out


def container_status(pod: PodDef, spec: ContainerDef, c: ContainerState | None, now: float,
                     backoff: BackoffPolicy) -> tuple[dict[str, Any], str]:
    """One ``containerStatuses`` entry and its bucket for the phase: pending|running|stopped."""
    st: dict[str, Any] = {"name": spec.name, "image": spec.image, "imageID": "",
                          "ready": False, "started": False,
                          "restartCount": c.restart_count if c else 0}
    if c is not None and c.last_terminated is not None:
        code, reason, started, finished = c.last_terminated
        st["lastState"] = {"terminated": _terminated(code, reason, started, finished)}
    else:
        st["lastState"] = {}
    if c is None or (not c.running and c.started_at is None):
        reason = c.reason if c is not None and c.reason else CONTAINER_CREATING
        waiting: dict[str, Any] = {"reason": reason}
        if c is not None and c.message:
            waiting["message"] = c.message
        st["state"] = {"waiting": waiting}
        return st, "pending"
    if c.running:
        st.update(ready=c.ready, started=True)
        st["containerID"] = f"kedge://{pod.uid}/{spec.name}"
        st["state"] = {"running": {"startedAt": rfc3339(c.started_at)}}
        return st, "running"
    st["containerID"] = f"kedge://{pod.uid}/{spec.name}"
    terminated = _terminated(c.exit_code if c.exit_code is not None else 0, c.reason, c.started_at,
                             c.finished_at, c.message)
    if not pod.deleting and c.exit_code is not None and c.finished_at is not None and (
            c.spec_hash != spec.spec_hash or should_restart(pod.restart_policy, c.exit_code)):
        due, _ = restart_at(c, backoff)
        st["lastState"] = {"terminated": terminated}
        if now < due:
            st["state"] = {"waiting": {"reason": CRASH_LOOP, "message": (
                f"back-off {int(round(due - c.finished_at))}s restarting failed container="
                f"{spec.name} pod={pod.name}_{pod.namespace}({pod.uid})")}}
        else:
            st["state"] = {"waiting": {"reason": CONTAINER_CREATING}}
        return st, "stopped"
    st["state"] = {"terminated": terminated}
    return st, "succeeded" if c.exit_code == 0 else "stopped"


def _phase(policy: str, buckets: list[str], deleting: bool = False) -> str:
    # kubelet's getPhase: a never-started container keeps the pod Pending; any running
    # one makes it Running; once all have stopped the restart policy decides.
    if "pending" in buckets:
        return "Pending"
    if "running" in buckets:
        return "Running"
    succeeded = buckets.count("succeeded")
    if deleting:  # nothing will restart: the pod is over
        return "Succeeded" if succeeded == len(buckets) else "Failed"
    if policy == "Always":
        return "Running"
    if succeeded == len(buckets):
        return "Succeeded"
    if policy == "Never":
        return "Failed"
    return "Running"


def pod_status(pod: PodDef, state: PodState | None, now: float, *, backoff: BackoffPolicy = BackoffPolicy(),
               previous: Mapping[str, Any] | None = None, start_time: float | None = None,
               host_ip: str | None = None) -> dict[str, Any]:
    """Kubernetes ``PodStatus`` JSON for ``pod``.

    ``previous`` is the last status reported: a condition whose value did not change
    keeps its ``lastTransitionTime``, so identical states give identical statuses and
    nothing is re-sent upstream.
    """
    statuses = []
    buckets = []
    for spec in pod.containers:
        st, bucket = container_status(pod, spec, state.container(spec.name) if state else None, now,
                                      backoff)
        statuses.append(st)
        buckets.append(bucket)
    phase = _phase(pod.restart_policy, buckets, pod.deleting)
    all_ready = all(st["ready"] for st in statuses)
    running = phase == "Running"
    values = {
        "PodScheduled": "True",
        "Initialized": "True",
        "ContainersReady": "True" if all_ready and running else "False",
        "Ready": "True" if all_ready and running else "False",
    }
    prev_times = {}
    if previous:
        for prev in previous.get("conditions") or ():
            if isinstance(prev, dict):
                prev_times[(prev.get("type"), prev.get("status"))] = prev.get("lastTransitionTime")
    conditions = []
    for ctype, value in values.items():
        cond: dict[str, Any] = {"type": ctype, "status": value,
                                "lastProbeTime": None,
                                "lastTransitionTime": prev_times.get((ctype, value)) or rfc3339(now)}
        if value == "False" and ctype in ("ContainersReady", "Ready"):
            not_ready = [st["name"] for st in statuses if not st["ready"]]
            cond["reason"] = "ContainersNotReady" if not_ready else "PodCompleted"
            if not_ready:
                cond["message"] = f"containers with unready status: [{' '.join(not_ready)}]"
        conditions.append(cond)
    status: dict[str, Any] = {"phase": phase, "conditions": conditions, "containerStatuses": statuses}
    if start_time is not None:
        status["startTime"] = rfc3339(start_time)
    if host_ip:
        status["hostIP"] = host_ip
        status["podIP"] = host_ip
        status["podIPs"] = [{"ip": host_ip}]
    return status
