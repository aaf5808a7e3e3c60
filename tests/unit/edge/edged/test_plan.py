"""Table tests for edged's pure reconcile core: plan, back-off, probes, pod status."""

from __future__ import annotations

import dataclasses

import pytest

from kedge.edge.edged.plan import (BackoffPolicy, ContainerState, PodState, ProbeTracker, plan, pod_status,
                                   probe_due, probe_observe)
from kedge.edge.edged.spec import ProbeDef, parse_pod

T0 = 1_800_000_000.0
B = BackoffPolicy()


def pod(uid="u1", policy="Always", containers=("c",), command=("sleep", "9"), deleting=False, **extra):
    obj = {"metadata": {"uid": uid, "namespace": "ns", "name": f"p-{uid}"},
           "spec": {"restartPolicy": policy,
                    "containers": [{"name": n, "image": "img:1", "command": list(command) if command
                                    else None, **extra} for n in containers]}}
    if deleting:
        obj["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    return parse_pod(obj)


def state(p, **fields):
    spec = p.containers[0]
    return {p.uid: PodState(p.uid, p.namespace, p.name,
                            (ContainerState(spec.name, spec_hash=fields.pop("spec_hash", spec.spec_hash),
                                            **fields),))}


def kinds(actions):
    return [(a.kind, a.container, a.reason) for a in actions]


def test_new_pod_is_started():
    p = pod()
    assert kinds(plan([p], {}, T0)) == [("start", "c", "Created")]


def test_running_pod_with_unchanged_spec_is_left_alone():
    p = pod()
    assert plan([p], state(p, running=True, started_at=T0 - 5), T0) == []


def test_same_spec_parsed_twice_has_the_same_hash_and_is_not_restarted():
    a, b = pod(), pod()
    assert a.containers[0].spec_hash == b.containers[0].spec_hash
    assert plan([b], state(a, running=True, started_at=T0), T0 + 100) == []


def test_probe_change_does_not_restart_but_command_change_does():
    p = pod()
    probed = pod(livenessProbe={"tcpSocket": {"port": 80}})
    assert probed.containers[0].spec_hash == p.containers[0].spec_hash
    changed = pod(command=("sleep", "10"))
    assert kinds(plan([changed], state(p, running=True, started_at=T0), T0)) == [
        ("restart", "c", "SpecChanged")]


def test_removed_pod_is_removed_and_deleting_pod_is_killed():
    p = pod()
    assert kinds(plan([], state(p, running=True, started_at=T0), T0)) == [("remove_pod", "", "Deleted")]
    d = pod(deleting=True)
    assert kinds(plan([d], state(p, running=True, started_at=T0), T0)) == [
        ("kill_pod", "", "Terminating")]
    assert plan([d], state(p, exit_code=0, started_at=T0, finished_at=T0 + 1), T0 + 2) == []


def test_unhealthy_container_is_stopped():
    p = pod()
    assert kinds(plan([p], state(p, running=True, started_at=T0, unhealthy=True), T0)) == [
        ("stop", "c", "LivenessProbeFailed")]


@pytest.mark.parametrize("policy,exit_code,restarts", [
    ("Always", 0, True), ("Always", 1, True), ("OnFailure", 0, False), ("OnFailure", 2, True),
    ("Never", 0, False), ("Never", 1, False),
])
def test_restart_policy(policy, exit_code, restarts):
    p = pod(policy=policy)
    actual = state(p, started_at=T0, finished_at=T0 + 1, exit_code=exit_code)
    got = plan([p], actual, T0 + 1 + 10)
    assert (got != []) is restarts


@pytest.mark.parametrize("streak,delay", [(0, 10), (1, 20), (2, 40), (3, 80), (4, 160), (5, 300),
                                          (9, 300), (100, 300)])
def test_crash_loop_backoff_doubles_to_the_cap(streak, delay):
    p = pod()
    actual = state(p, started_at=T0, finished_at=T0 + 1, exit_code=1, crash_streak=streak)
    assert plan([p], actual, T0 + 1 + delay - 0.01) == []
    [action] = plan([p], actual, T0 + 1 + delay)
    assert (action.kind, action.crash_streak) == ("start", streak + 1)


def test_backoff_resets_after_ten_minutes_of_running():
    p = pod()
    actual = state(p, started_at=T0, finished_at=T0 + 600, exit_code=1, crash_streak=5)
    [action] = plan([p], actual, T0 + 600 + 10)
    assert action.crash_streak == 1
    short = state(p, started_at=T0, finished_at=T0 + 599, exit_code=1, crash_streak=5)
    assert plan([p], short, T0 + 599 + 10) == []


def test_backoff_policy_is_configurable_and_validated():
    fast = BackoffPolicy(base_s=0.1, cap_s=0.4, reset_after_s=1)
    assert [fast.delay(i) for i in range(4)] == [0.1, 0.2, 0.4, 0.4]
    with pytest.raises(ValueError):
        BackoffPolicy(base_s=5, cap_s=1)


def test_container_lost_to_reboot_restarts_at_once():
    p = pod()
    actual = state(p, started_at=T0, finished_at=T0 + 5, exit_code=255, reason="Unknown", crash_streak=4)
    [action] = plan([p], actual, T0 + 5)
    assert action.kind == "start" and action.crash_streak == 0


def test_no_command_is_not_retried_until_the_spec_changes():
    p = pod(command=None)
    actual = state(p, reason="NoCommand", finished_at=T0)
    assert plan([p], actual, T0 + 3600) == []
    fixed = pod(command=("true",))
    assert kinds(plan([fixed], actual, T0 + 1)) == [("start", "c", "SpecChanged")]


def test_config_error_is_retried_after_the_base_delay():
    p = pod()
    actual = state(p, reason="CreateContainerConfigError", finished_at=T0)
    assert plan([p], actual, T0 + 9) == []
    assert kinds(plan([p], actual, T0 + 10)) == [("start", "c", "Retry")]


def test_exiting_container_waits_for_its_exit_to_be_recorded():
    p = pod()
    assert plan([p], state(p, started_at=T0), T0 + 100) == []


# --- status --------------------------------------------------------------------------


def cstatus(status):
    [c] = status["containerStatuses"]
    return c


def conds(status):
    return {c["type"]: c["status"] for c in status["conditions"]}


def test_status_of_a_new_pod_is_pending_container_creating():
    p = pod()
    st = pod_status(p, None, T0)
    assert st["phase"] == "Pending"
    assert cstatus(st)["state"] == {"waiting": {"reason": "ContainerCreating"}}
    assert cstatus(st)["image"] == "img:1" and cstatus(st)["restartCount"] == 0
    assert conds(st) == {"PodScheduled": "True", "Initialized": "True", "ContainersReady": "False",
                         "Ready": "False"}


def test_status_of_a_running_ready_pod():
    p = pod()
    st = pod_status(p, state(p, running=True, started_at=T0, ready=True, restart_count=2)[p.uid], T0 + 1,
                    start_time=T0, host_ip="127.0.0.1")
    assert st["phase"] == "Running" and st["startTime"] == "2027-01-15T08:00:00Z"
    c = cstatus(st)
    assert c["state"] == {"running": {"startedAt": "2027-01-15T08:00:00Z"}}
    assert c["ready"] is True and c["started"] is True and c["restartCount"] == 2
    assert conds(st)["Ready"] == "True" and st["podIP"] == "127.0.0.1"


def test_status_of_a_running_unready_pod():
    p = pod()
    st = pod_status(p, state(p, running=True, started_at=T0, ready=False)[p.uid], T0)
    assert st["phase"] == "Running" and conds(st)["Ready"] == "False"
    ready = [c for c in st["conditions"] if c["type"] == "Ready"][0]
    assert ready["reason"] == "ContainersNotReady"


def test_status_of_a_crash_looping_pod():
    p = pod()
    s = state(p, started_at=T0, finished_at=T0 + 1, exit_code=3, reason="Error", restart_count=4,
              crash_streak=1, last_terminated=(1, "Error", T0 - 10, T0 - 5))[p.uid]
    st = pod_status(p, s, T0 + 2)
    c = cstatus(st)
    assert st["phase"] == "Running"
    assert c["state"]["waiting"]["reason"] == "CrashLoopBackOff"
    assert "back-off 20s" in c["state"]["waiting"]["message"]
    assert c["lastState"]["terminated"]["exitCode"] == 3
    assert c["lastState"]["terminated"]["reason"] == "Error"
    assert c["restartCount"] == 4


@pytest.mark.parametrize("policy,exit_code,phase,reason", [
    ("Never", 0, "Succeeded", "Completed"), ("Never", 1, "Failed", "Error"),
    ("OnFailure", 0, "Succeeded", "Completed"),
])
def test_status_of_a_finished_pod(policy, exit_code, phase, reason):
    p = pod(policy=policy)
    s = state(p, started_at=T0, finished_at=T0 + 1, exit_code=exit_code,
              reason="Completed" if exit_code == 0 else "Error")[p.uid]
    st = pod_status(p, s, T0 + 2)
    assert st["phase"] == phase
    term = cstatus(st)["state"]["terminated"]
    assert term == {"exitCode": exit_code, "reason": reason, "startedAt": "2027-01-15T08:00:00Z",
                    "finishedAt": "2027-01-15T08:00:01Z"}


def test_status_of_a_refused_container():
    p = pod(command=None)
    s = state(p, reason="NoCommand", message="no command", finished_at=T0)[p.uid]
    st = pod_status(p, s, T0)
    assert st["phase"] == "Pending"
    assert cstatus(st)["state"] == {"waiting": {"reason": "NoCommand", "message": "no command"}}


def test_status_of_a_deleted_pod_does_not_claim_a_restart():
    p = pod(deleting=True)
    s = state(p, started_at=T0, finished_at=T0 + 1, exit_code=143, reason="Error")[p.uid]
    st = pod_status(p, s, T0 + 2)
    assert st["phase"] == "Failed" and "terminated" in cstatus(st)["state"]


def test_status_keeps_transition_times_of_unchanged_conditions():
    p = pod()
    s = state(p, running=True, started_at=T0, ready=True)[p.uid]
    first = pod_status(p, s, T0)
    again = pod_status(p, s, T0 + 500, previous=first)
    assert again == first  # nothing changed: nothing to send upstream
    s2 = dataclasses.replace(s, containers=(dataclasses.replace(s.containers[0], ready=False),))
    changed = pod_status(p, s2, T0 + 500, previous=first)
    times = {c["type"]: c["lastTransitionTime"] for c in changed["conditions"]}
    assert times["PodScheduled"] == "2027-01-15T08:00:00Z"
    assert times["Ready"] == "2027-01-15T08:08:20Z"


# --- probes --------------------------------------------------------------------------


def test_probe_thresholds():
    probe = ProbeDef("tcp", port=1, period_s=1, failure_threshold=3, success_threshold=2)
    t = ProbeTracker.liveness()
    for i, (ok, expect) in enumerate([(False, True), (False, True), (True, True), (False, True),
                                      (False, True), (False, False), (True, False), (True, True)]):
        t = probe_observe(probe, t, ok, T0 + i)
        assert t.result is expect, i
    r = ProbeTracker.readiness()
    assert r.result is False
    assert probe_observe(probe, r, True, T0).result is False
    assert probe_observe(probe, probe_observe(probe, r, True, T0), True, T0).result is True


def test_probe_due_respects_initial_delay_and_period():
    probe = ProbeDef("tcp", port=1, initial_delay_s=5, period_s=2)
    t = ProbeTracker.liveness()
    assert not probe_due(probe, t, T0, T0 + 4.9)
    assert probe_due(probe, t, T0, T0 + 5)
    t = probe_observe(probe, t, True, T0 + 5)
    assert not probe_due(probe, t, T0, T0 + 6.9)
    assert probe_due(probe, t, T0, T0 + 7)
