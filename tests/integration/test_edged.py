"""edged with real processes: start, env, volumes, restarts, probes, termination, re-adoption.

Each test runs a real PodManager + ProcessRuntime in an event loop, with pods that are
``python3 -c`` scripts (each pod as a uid of its own from the pod id range: the suite
runs as root, as CI does, and fails otherwise), real HTTP/TCP
servers on 127.0.0.1 for probes and real signals. Back-off, probe periods and the
supervision tick are scaled down through constructor parameters, not slept through.
Every pod's argv carries the test's private directory as a marker, so a test can count
the processes it started (exactly-once) and the fixture can clean up after a failure.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import json
import logging
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from kedge.edge.edged import DEFAULT_POD_UID_RANGE, BackoffPolicy, PodManager, ProcessRuntime, parse_id_range
from kedge.edge.edged.runtime import SHELL, proc_stat
from kedge.edge.edged.spec import MAX_DIR_NAME, pod_dir_name

# The system interpreter: the venv's may live under /root, which nobody cannot reach.
PY = "/usr/bin/python3" if os.access("/usr/bin/python3", os.X_OK) else sys.executable
POD_IDS = parse_id_range(DEFAULT_POD_UID_RANGE)
FAST = BackoffPolicy(base_s=0.2, cap_s=0.8, reset_after_s=30)


def marked_pids(marker: str, *, shims: bool = False) -> list[int]:
    """Live (non-zombie) processes whose argv holds ``marker`` (the exit-code shims too if asked)."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        st = proc_stat(int(entry.name))
        if marker.encode() in argv and st is not None and st[0] != "Z" and (
                shims or argv[0] != SHELL.encode()):
            out.append(int(entry.name))
    return sorted(out)


def alive(pid: int) -> bool:
    st = proc_stat(pid)
    return st is not None and st[0] != "Z"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Edge:
    """One PodManager under test plus what it reported."""

    def __init__(self, base: Path, objs: dict, **kw) -> None:
        self.base = base
        self.root = base / "pods"
        self.marker = str(base)
        self.objs = objs
        self.kw = {"tick_s": 0.02, "backoff": FAST, "probe_time_scale": 0.1, **kw}
        self.status: dict[str, dict] = {}
        self.history: dict[str, list] = collections.defaultdict(list)
        self.mgr: PodManager | None = None
        self.task: asyncio.Task | None = None

    def lookup(self, kind, namespace, name):
        return self.objs.get((kind, name))

    def on_status(self, namespace, name, status):
        self.status[name] = status
        self.history[name].append(status)

    async def start(self) -> "Edge":
        # no_new_privs=False: the flag would stick to pytest itself; the real edgecore's pods
        # are checked for it in tests/threat_model/test_pod_escape_attacks.py.
        self.mgr = PodManager(self.root, runtime=ProcessRuntime(no_new_privs=False), lookup=self.lookup,
                              on_status=self.on_status, **self.kw)
        self.task = asyncio.create_task(self.mgr.run())
        return self

    async def stop(self, *, stop_pods: bool) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        await self.mgr.shutdown(stop_pods=stop_pods)

    def pod(self, name: str, script: str, *, policy: str = "Always", grace: int = 2, uid: str = "",
            volumes=None, deleting: bool = False, **container) -> dict:
        c = {"name": "main", "image": "example.org/app:1.0", "command": [PY, "-c", script, self.marker]}
        c.update(container)
        obj = {"metadata": {"uid": uid or f"uid-{name}", "namespace": "default", "name": name,
                            "resourceVersion": "1", "labels": {"app": name}},
               "spec": {"nodeName": "edge-1", "restartPolicy": policy,
                        "terminationGracePeriodSeconds": grace, "containers": [c],
                        "volumes": volumes or []}}
        if deleting:
            obj["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
        return obj

    def pod_dir(self, name: str) -> Path:
        return self.root / pod_dir_name("default", name, f"uid-{name}")

    def log(self, name: str) -> str:
        try:
            return (self.pod_dir(name) / "logs" / "main.log").read_text()
        except FileNotFoundError:
            return ""

    def cs(self, name: str) -> dict:
        return (self.status.get(name) or {"containerStatuses": [{}]})["containerStatuses"][0]

    def pid(self, name: str) -> int | None:
        h = self.mgr.handles(f"uid-{name}").get("main")
        return h.pid if h else None

    def running(self, name: str) -> bool:
        st = self.status.get(name)
        return bool(st) and st["phase"] == "Running" and "running" in self.cs(name).get("state", {})

    async def settled(self, after_s: float, what: str) -> None:
        """Wait for a supervisor pass that began ``after_s`` seconds from now to finish.

        Whatever was due in that window (a back-off restart, a probe, a re-adoption) has been
        acted on by then: "nothing happened" is read after that positive signal, not after a sleep.
        """
        due = time.time() + after_s
        await self.until(lambda: self.mgr.last_pass_started >= due, f"a supervisor pass {after_s}s on: {what}",
                         timeout=after_s + 10)

    async def until(self, pred, what: str, timeout: float = 5.0):
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            value = pred()
            if value:
                return value
            if loop.time() > deadline:
                raise AssertionError(f"timed out waiting for {what}; statuses: "
                                     f"{json.dumps(self.status)[:2000]}")
            await asyncio.sleep(0.02)


@pytest.fixture(autouse=True)
def _root():
    if os.geteuid() != 0:
        pytest.fail("edged runs pods only as root (each pod gets a uid of its own): run these tests as root")


def proc_ids(pid: int) -> tuple[set[str], set[str], str]:
    """(uids, gids, supplementary groups) of a process, from /proc/<pid>/status."""
    lines = dict(ln.split(":", 1) for ln in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in ln)
    return set(lines["Uid"].split()), set(lines["Gid"].split()), lines["Groups"].strip()


@pytest.fixture
def base():
    # Not tmp_path: pytest's base dir is 0700, and the pods' user must traverse to its dir.
    path = Path(tempfile.mkdtemp(prefix="kedge-edged-"))
    os.chmod(path, 0o711)
    yield path
    for pid in marked_pids(str(path), shims=True):  # only processes this test started
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    shutil.rmtree(path, ignore_errors=True)


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


SLEEPER = "import time\nprint('up', flush=True)\nwhile True: time.sleep(0.05)"


@pytest.mark.threat("KE-T4")
def test_pod_runs_unprivileged_with_env_from_configmap_and_secret_and_private_secret_files(base):
    objs = {("configmap", "cfg"): {"data": {"A": "alpha", "app.conf": "level=debug"}},
            ("secret", "creds"): {"data": {"password": base64.b64encode(b"s3cr3t").decode()}}}
    script = ("import json, os, time\n"
              "v = os.environ['KEDGE_VOLUME_CREDS']\n"
              "print(json.dumps({'uid': os.getuid(), 'A': os.environ.get('CFG_A'),"
              " 'PASS': os.environ.get('PASS'), 'cwd': os.getcwd(), 'home': os.environ.get('HOME'),"
              " 'secret': open(v + '/password').read(),"
              " 'conf': open(os.environ['KEDGE_VOLUME_CONFIG'] + '/app.conf').read()}), flush=True)\n"
              "print(json.dumps({'env': sorted(os.environ), 'fds': sorted(os.listdir('/proc/self/fd'))}),"
              " flush=True)\n"
              "time.sleep(60)")
    edge = Edge(base, objs)
    os.environ["KEDGE_EDGED_LEAK_CANARY"] = "edgecore's environment must not reach pods"
    leaked_fd = os.open(base, os.O_RDONLY)
    os.set_inheritable(leaked_fd, True)

    async def main():
        await edge.start()
        await edge.mgr.sync([edge.pod(
            "web", script, envFrom=[{"configMapRef": {"name": "cfg"}, "prefix": "CFG_"}],
            env=[{"name": "PASS", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password"}}}],
            volumeMounts=[{"name": "creds", "mountPath": "/etc/creds"},
                          {"name": "config", "mountPath": "/etc/app"}],
            volumes=[{"name": "creds", "secret": {"secretName": "creds"}},
                     {"name": "config", "configMap": {"name": "cfg"}}])])
        await edge.until(lambda: edge.running("web") and edge.log("web"), "web running and logging")
        await edge.until(lambda: len(edge.log("web").splitlines()) >= 2, "second log line")
        out = json.loads(edge.log("web").splitlines()[0])
        seen = json.loads(edge.log("web").splitlines()[1])
        # (LC_CTYPE is set by the pod's own Python: PEP 538 locale coercion.)
        assert [k for k in seen["env"] if k != "LC_CTYPE"] == sorted(["PATH", "HOSTNAME", "CFG_A", "CFG_app.conf", "PASS",
                                      "KEDGE_VOLUME_CREDS", "KEDGE_VOLUME_CONFIG"])
        assert set(seen["fds"]) <= {"0", "1", "2", "3"}  # stdio + the listing itself
        pod_uid = out["uid"]
        assert pod_uid in POD_IDS
        assert out == {"uid": pod_uid, "A": "alpha", "PASS": "s3cr3t", "home": None, "secret": "s3cr3t",
                       "cwd": str(edge.pod_dir("web") / "work"), "conf": "level=debug"}
        # real, effective, saved, fs uid and gid all the pod's own; no supplementary groups
        assert proc_ids(edge.pid("web")) == ({str(pod_uid)}, {str(pod_uid)}, "")
        vol = edge.pod_dir("web") / "volumes" / "creds"
        st_dir, st_file = os.lstat(vol), os.lstat(vol / "password")
        assert stat.S_IMODE(st_dir.st_mode) == 0o700 and stat.S_IMODE(st_file.st_mode) == 0o400
        assert st_dir.st_uid == st_file.st_uid == pod_uid
        assert stat.S_IMODE(os.lstat(edge.pod_dir("web") / "state.json").st_mode) == 0o600
        assert stat.S_IMODE(os.lstat(edge.pod_dir("web") / "logs" / "main.log").st_mode) == 0o600
        cs = edge.cs("web")
        assert cs["image"] == "example.org/app:1.0" and cs["ready"] is True and cs["restartCount"] == 0
        assert {c["type"]: c["status"] for c in edge.status["web"]["conditions"]}["Ready"] == "True"
        await edge.stop(stop_pods=True)

    try:
        run(main())
    finally:
        del os.environ["KEDGE_EDGED_LEAK_CANARY"]
        os.close(leaked_fd)


def test_configmap_update_reaches_the_volume_without_a_restart(base):
    objs = {("configmap", "cfg"): {"data": {"msg": "v1"}}}
    edge = Edge(base, objs)

    async def main():
        await edge.start()
        pod = edge.pod("cm", SLEEPER, volumeMounts=[{"name": "cfg", "mountPath": "/cfg"}],
                       volumes=[{"name": "cfg", "configMap": {"name": "cfg"}}])
        await edge.mgr.sync([pod])
        await edge.until(lambda: edge.running("cm"), "running")
        pid = edge.pid("cm")
        path = edge.pod_dir("cm") / "volumes" / "cfg" / "msg"
        assert path.read_text() == "v1"
        objs[("configmap", "cfg")] = {"data": {"msg": "v2"}}
        await edge.mgr.sync([pod])
        assert path.read_text() == "v2"
        await edge.settled(FAST.cap_s, "no restart for a configmap change")
        assert edge.pid("cm") == pid and edge.cs("cm")["restartCount"] == 0
        await edge.stop(stop_pods=True)

    run(main())


def test_crashing_container_restarts_with_growing_backoff_and_counts_restarts(base):
    edge = Edge(base, {})
    script = "import sys, time\nprint(time.time(), flush=True)\nsys.exit(3)"

    async def main():
        await edge.start()
        await edge.mgr.sync([edge.pod("crash", script)])
        await edge.until(lambda: edge.cs("crash").get("restartCount", 0) >= 3
                         and len(edge.log("crash").split()) >= 4, "three restarts")
        starts = [float(x) for x in edge.log("crash").split()]
        gaps = [b - a for a, b in zip(starts, starts[1:], strict=False)]
        # back-off 0.2, 0.4, 0.8 s between the runs (plus interpreter start-up)
        for gap, delay in zip(gaps, (0.2, 0.4, 0.8), strict=False):
            assert gap >= delay * 0.9, (gaps, starts)
        assert gaps[2] > gaps[0] + 0.3, gaps
        seen = [s["containerStatuses"][0] for s in edge.history["crash"]]
        looping = [c for c in seen if c["state"].get("waiting", {}).get("reason") == "CrashLoopBackOff"]
        assert looping and looping[-1]["lastState"]["terminated"]["exitCode"] == 3
        assert looping[-1]["lastState"]["terminated"]["reason"] == "Error"
        assert all(s["phase"] == "Running" for s in edge.history["crash"][1:])
        await edge.stop(stop_pods=True)

    run(main())


def test_restart_policy_never_and_onfailure_finish_the_pod(base):
    edge = Edge(base, {})

    async def main():
        await edge.start()
        await edge.mgr.sync([edge.pod("ok", "import sys; sys.exit(0)", policy="OnFailure", uid="u-ok"),
                             edge.pod("bad", "import sys; sys.exit(4)", policy="Never", uid="u-bad")])
        await edge.until(lambda: edge.status.get("ok", {}).get("phase") == "Succeeded"
                         and edge.status.get("bad", {}).get("phase") == "Failed", "both finished")
        assert edge.cs("bad")["state"]["terminated"]["exitCode"] == 4
        await edge.settled(FAST.cap_s, "no restart of finished containers")
        assert edge.cs("bad")["restartCount"] == 0 and edge.cs("ok")["restartCount"] == 0
        await edge.stop(stop_pods=True)

    run(main())


HTTP_SERVER = """
import http.server, sys
port = int(sys.argv[2]); hits = {"n": 0}
class H(http.server.BaseHTTPRequestHandler):
    def log_message(self, *a): pass
    def do_GET(self):
        if self.path == "/live":
            hits["n"] += 1
            code = 200 if hits["n"] <= 3 else 500
        else:
            code = 200
        self.send_response(code); self.send_header("Content-Length", "0"); self.end_headers()
print("serving", flush=True)
http.server.HTTPServer(("127.0.0.1", port), H).serve_forever()
"""


def test_liveness_failure_restarts_the_container_and_readiness_gates_ready(base):
    edge = Edge(base, {})
    port = free_port()

    async def main():
        await edge.start()
        pod = edge.pod("probed", HTTP_SERVER, args=[str(port)],
                       ports=[{"name": "http", "containerPort": port}],
                       livenessProbe={"httpGet": {"path": "/live", "port": "http"}, "periodSeconds": 1,
                                      "failureThreshold": 2},
                       readinessProbe={"httpGet": {"path": "/ready", "port": port}, "periodSeconds": 1})
        await edge.mgr.sync([pod])
        await edge.until(lambda: edge.running("probed") and edge.cs("probed")["ready"], "ready")
        first = edge.pid("probed")
        await edge.until(lambda: edge.cs("probed").get("restartCount", 0) >= 1, "liveness restart")
        await edge.until(lambda: edge.running("probed") and edge.pid("probed") not in (None, first),
                         "running again")
        assert not alive(first)
        assert edge.cs("probed")["lastState"]["terminated"]["exitCode"] == 143  # SIGTERM
        not_ready = [s for s in edge.history["probed"] if s["phase"] == "Running"
                     and not s["containerStatuses"][0]["ready"]]
        assert not_ready  # readiness is re-proven after the restart
        await edge.stop(stop_pods=True)

    run(main())


def test_exec_readiness_and_tcp_liveness_probes(base):
    edge = Edge(base, {})
    closed = free_port()

    async def main():
        await edge.start()
        await edge.mgr.sync([
            edge.pod("execp", SLEEPER, uid="uid-execp",
                     readinessProbe={"exec": {"command": ["test", "-f", "ready"]}, "periodSeconds": 1}),
            edge.pod("tcpp", SLEEPER, uid="uid-tcpp",
                     livenessProbe={"tcpSocket": {"port": closed}, "periodSeconds": 1,
                                    "initialDelaySeconds": 2, "failureThreshold": 1})])
        await edge.until(lambda: edge.running("execp"), "exec pod running")
        await edge.settled(0.3, "readiness probes ran (period 0.1 s scaled)")
        assert edge.cs("execp")["ready"] is False
        (edge.pod_dir("execp") / "work" / "ready").write_text("")
        await edge.until(lambda: edge.cs("execp")["ready"], "exec readiness")
        await edge.until(lambda: edge.cs("tcpp").get("restartCount", 0) >= 1, "tcp liveness restart")
        assert edge.cs("execp")["restartCount"] == 0
        await edge.stop(stop_pods=True)

    run(main())


def test_graceful_termination_sigterm_then_sigkill_after_the_grace_period(base):
    edge = Edge(base, {})
    polite = ("import signal, sys, time\n"
              "def h(*a):\n    print('got SIGTERM', flush=True); sys.exit(0)\n"
              "signal.signal(signal.SIGTERM, h)\nprint('up', flush=True)\n"
              "while True: time.sleep(0.02)")
    stubborn = ("import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
                "print('up', flush=True)\nwhile True: time.sleep(0.02)")

    async def main():
        await edge.start()
        pods = [edge.pod("polite", polite, grace=1), edge.pod("stubborn", stubborn, grace=1)]
        await edge.mgr.sync(pods)
        await edge.until(lambda: "up" in edge.log("polite") and "up" in edge.log("stubborn"), "up")
        pids = {n: edge.pid(n) for n in ("polite", "stubborn")}
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        for p in pods:  # the API server marks them for deletion
            p["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
        await edge.mgr.sync(pods)
        await edge.until(lambda: not alive(pids["polite"]), "polite exit", timeout=2)
        polite_s = loop.time() - t0
        await edge.until(lambda: not alive(pids["stubborn"]), "stubborn killed", timeout=4)
        stubborn_s = loop.time() - t0
        assert polite_s < 0.9, polite_s
        assert 0.95 <= stubborn_s < 3.0, stubborn_s
        assert "got SIGTERM" in edge.log("polite")
        await edge.until(lambda: edge.status["stubborn"]["phase"] == "Failed", "stubborn terminated")
        assert edge.cs("polite")["state"]["terminated"]["exitCode"] == 0
        assert edge.cs("stubborn")["state"]["terminated"]["exitCode"] == 137
        await edge.stop(stop_pods=True)

    run(main())


def test_unchanged_spec_is_not_restarted_and_changed_spec_is(base):
    edge = Edge(base, {})

    async def main():
        await edge.start()
        pod = edge.pod("stable", SLEEPER, args=["a"])
        await edge.mgr.sync([pod])
        await edge.until(lambda: edge.running("stable"), "running")
        pid = edge.pid("stable")
        reports = len(edge.history["stable"])
        # What a reconnect resync delivers: same spec, newer metadata.
        pod["metadata"]["resourceVersion"] = "7"
        pod["metadata"]["labels"]["tier"] = "x"
        for _ in range(3):
            await edge.mgr.sync([json.loads(json.dumps(pod))])
        await edge.settled(FAST.cap_s, "no restart for a metadata-only resync")
        assert edge.pid("stable") == pid and alive(pid)
        assert len(edge.history["stable"]) == reports  # not even a status change
        pod["spec"]["containers"][0]["args"] = ["b"]
        await edge.mgr.sync([pod])
        await edge.until(lambda: edge.pid("stable") not in (None, pid) and edge.running("stable"),
                         "restarted with the new spec")
        assert not alive(pid) and edge.cs("stable")["restartCount"] == 1
        assert len(marked_pids(edge.marker)) == 1
        await edge.stop(stop_pods=True)

    run(main())


def test_manager_restart_readopts_running_pods_exactly_once(base):
    async def main():
        first = await Edge(base, {}).start()
        pods = [first.pod("keep", SLEEPER, readinessProbe={
                    "exec": {"command": ["test", "-f", "ready"]}, "periodSeconds": 1}),
                first.pod("died", SLEEPER)]
        await first.mgr.sync(pods)
        await first.until(lambda: first.running("keep") and first.running("died"), "both running")
        assert first.cs("keep")["ready"] is False
        keep, died = first.pid("keep"), first.pid("died")
        await first.stop(stop_pods=False)  # edgecore stops; pods stay up
        assert alive(keep) and alive(died)
        os.killpg(died, signal.SIGKILL)  # one pod dies while edgecore is down
        await first.until(lambda: not alive(died), "died is gone")

        second = await Edge(base, {}).start()
        await second.mgr.sync(pods)  # the same pods, from the local store
        await second.until(lambda: second.running("keep") and second.running("died")
                           and second.pid("died") not in (None, died), "converged")
        assert second.pid("keep") == keep and second.cs("keep")["restartCount"] == 0
        assert second.cs("died")["restartCount"] == 1
        assert second.cs("died")["lastState"]["terminated"]["reason"] == "ContainerStatusUnknown"
        # The adopted container is probed again: it becomes ready once its probe passes.
        (second.pod_dir("keep") / "work" / "ready").write_text("")
        await second.until(lambda: second.cs("keep")["ready"], "adopted container probed ready")
        await second.settled(FAST.cap_s, "no second process for an adopted pod")
        assert len(marked_pids(base.as_posix())) == 2  # exactly one process per pod
        # The adopted process is supervised like our own: stopping it works.
        await second.mgr.sync([pods[1]])
        await second.until(lambda: not alive(keep) and not second.pod_dir("keep").exists(),
                           "adopted pod stopped and removed on delete")
        assert alive(second.pid("died"))
        await second.stop(stop_pods=True)

    run(main())


def test_after_a_reboot_pods_are_started_again_without_backoff(base):
    async def main():
        first = await Edge(base, {}).start()
        pod = first.pod("boot", SLEEPER)
        await first.mgr.sync([pod])
        await first.until(lambda: first.running("boot"), "running")
        pid = first.pid("boot")
        await first.stop(stop_pods=False)
        os.killpg(pid, signal.SIGKILL)  # the node goes down...
        state_path = first.pod_dir("boot") / "state.json"
        state = json.loads(state_path.read_text())
        state["containers"]["main"]["handle"]["boot_id"] = "00000000-0000-0000-0000-000000000000"
        state_path.write_text(json.dumps(state))  # ...and comes back with a new boot id

        second = await Edge(base, {}, backoff=BackoffPolicy(base_s=30, cap_s=300)).start()
        await second.mgr.sync([pod])
        await second.until(lambda: second.running("boot"), "started again at once", timeout=3)
        assert second.cs("boot")["lastState"]["terminated"]["reason"] == "Unknown"
        assert len(marked_pids(base.as_posix())) == 1
        await second.stop(stop_pods=True)

    run(main())


@pytest.mark.threat("KE-T4")
def test_reused_pid_is_neither_adopted_nor_signalled(base):
    strangers = []
    try:
        async def main():
            first = await Edge(base, {}).start()
            pod = first.pod("reuse", SLEEPER)
            await first.mgr.sync([pod])
            await first.until(lambda: first.running("reuse"), "running")
            pid = first.pid("reuse")
            await first.stop(stop_pods=False)
            os.killpg(pid, signal.SIGKILL)
            await first.until(lambda: not alive(pid), "gone")
            # The recorded pid now belongs to a process started later (as after pid reuse).
            state_path = first.pod_dir("reuse") / "state.json"
            state = json.loads(state_path.read_text())
            await asyncio.sleep(0.05)  # a later clock tick than the pod's start
            strangers.append(subprocess.Popen([PY, "-c", "import time; time.sleep(30)"]))
            stranger = strangers[0]
            assert proc_stat(stranger.pid)[1] != state["containers"]["main"]["handle"]["proc_start"]
            state["containers"]["main"]["handle"]["pid"] = stranger.pid
            state_path.write_text(json.dumps(state))

            second = await Edge(base, {}).start()
            await second.mgr.sync([pod])
            await second.until(lambda: second.running("reuse") and second.pid("reuse") != stranger.pid,
                               "a fresh process")
            await second.stop(stop_pods=True)
            assert stranger.poll() is None  # never signalled, not even by the pod's stop

        run(main())
    finally:
        for stranger in strangers:
            stranger.kill()
            stranger.wait()


def test_deleting_a_pod_stops_its_whole_process_group_and_removes_its_directory(base):
    edge = Edge(base, {})
    forking = ("import subprocess, sys, time\n"
               "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)', sys.argv[1]])\n"
               "print('up', flush=True)\nwhile True: time.sleep(0.05)")

    async def main():
        await edge.start()
        await edge.mgr.sync([edge.pod("forks", forking, grace=1)])
        await edge.until(lambda: len(marked_pids(edge.marker)) == 2, "parent and child")
        await edge.mgr.sync([])
        await edge.until(lambda: marked_pids(edge.marker) == [], "all processes gone", timeout=4)
        await edge.until(lambda: not edge.pod_dir("forks").exists(), "pod dir removed")
        await edge.stop(stop_pods=True)

    run(main())


@pytest.mark.threat("KE-T4")
def test_refused_containers_report_why_and_a_late_configmap_starts_the_pod(base):
    objs: dict = {}
    edge = Edge(base, objs)

    async def main():
        await edge.start()
        nocmd = edge.pod("nocmd", SLEEPER, uid="uid-nocmd")
        del nocmd["spec"]["containers"][0]["command"]
        asroot = edge.pod("asroot", SLEEPER, uid="uid-asroot", securityContext={"runAsUser": 0})
        late = edge.pod("late", SLEEPER, uid="uid-late",
                        env=[{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "later", "key": "x"}}}])
        await edge.mgr.sync([nocmd, asroot, late])

        def reason(name):
            return edge.cs(name).get("state", {}).get("waiting", {}).get("reason")

        await edge.until(lambda: reason("nocmd") == "NoCommand" and reason("late") ==
                         "CreateContainerConfigError", "refusals reported")
        await edge.until(lambda: reason("asroot") == "SecurityContextRefused", "root refused")
        assert "root" in edge.cs("asroot")["state"]["waiting"]["message"]
        assert edge.status["nocmd"]["phase"] == "Pending"
        objs[("configmap", "later")] = {"data": {"x": "1"}}
        await edge.mgr.sync([nocmd, asroot, late])
        await edge.until(lambda: edge.running("late"), "late pod started")
        assert reason("nocmd") == "NoCommand"
        await edge.stop(stop_pods=True)

    run(main())


def test_logs_are_size_capped_with_rotation(base):
    edge = Edge(base, {}, log_max_bytes=4000, log_backups=2)
    chatty = "import time\nwhile True:\n    print('x' * 99, flush=True); time.sleep(0.002)"

    async def main():
        await edge.start()
        await edge.mgr.sync([edge.pod("chatty", chatty)])
        logs = edge.pod_dir("chatty") / "logs"
        await edge.until(lambda: (logs / "main.log.2").exists(), "two rotations")
        for _ in range(10):
            assert (logs / "main.log").stat().st_size < 4000 + 20000  # cap + one tick of output
            await asyncio.sleep(0.03)
        assert not (logs / "main.log.3").exists()
        assert (logs / "main.log.1").read_text().startswith("x" * 99)
        tail = edge.mgr.read_log("default", "chatty", "main", limit_bytes=500)
        assert 0 < len(tail) <= 500 and set(tail) <= set(b"x\n")
        assert edge.mgr.read_log("default", "chatty", "main", previous=True).startswith(b"x" * 99)
        assert edge.mgr.read_log("default", "chatty", "../../etc/passwd") is None
        assert edge.mgr.read_log("default", "other", "main") is None
        await edge.stop(stop_pods=True)

    run(main())


@pytest.mark.threat("KE-T4")
def test_pod_planted_symlinks_do_not_redirect_volume_updates_or_working_dirs(base):
    victim = base / "victim.txt"
    victim.write_text("original")
    victim_dir = base / "victim-dir"
    victim_dir.mkdir(mode=0o755)
    objs = {("configmap", "cfg"): {"data": {"msg": "v1"}}}
    edge = Edge(base, objs)
    planter = ("import os, sys, time\n"
               "v = os.environ['KEDGE_VOLUME_CFG']\n"
               "os.unlink(v + '/msg'); os.symlink(sys.argv[2], v + '/msg')\n"
               "os.symlink(sys.argv[3], 'sub')\n"
               "print('planted', flush=True)\nwhile True: time.sleep(0.05)")

    async def main():
        await edge.start()
        pod = edge.pod("evil", planter, args=[str(victim), str(victim_dir)],
                       volumeMounts=[{"name": "cfg", "mountPath": "/cfg"}],
                       volumes=[{"name": "cfg", "configMap": {"name": "cfg"}}])
        await edge.mgr.sync([pod])
        await edge.until(lambda: "planted" in edge.log("evil"), "symlinks planted")
        objs[("configmap", "cfg")] = {"data": {"msg": "v2"}}
        await edge.mgr.sync([pod])  # root rewrites the volume...
        msg = edge.pod_dir("evil") / "volumes" / "cfg" / "msg"
        assert not msg.is_symlink() and msg.read_text() == "v2"
        assert victim.read_text() == "original"  # ...but never through the pod's link
        assert os.lstat(victim).st_uid == os.geteuid()
        pod["spec"]["containers"][0]["workingDir"] = "sub/inner"
        await edge.mgr.sync([pod])
        await edge.until(lambda: edge.cs("evil").get("state", {}).get("waiting", {}).get("reason")
                         == "CreateContainerConfigError", "workingDir through a symlink refused")
        assert list(victim_dir.iterdir()) == []
        await edge.stop(stop_pods=True)

    run(main())


def test_exit_codes_of_pods_that_ended_while_edgecore_was_down_are_kept(base):
    waiter = ("import os, sys, time\nprint('up', flush=True)\n"
              "while not os.path.exists('go'): time.sleep(0.02)\n"
              "sys.exit(int(open('go').read()))")

    async def main():
        first = await Edge(base, {}).start()
        pods = [first.pod("job", waiter, policy="Never", uid="uid-job"),
                first.pod("retry", waiter, policy="OnFailure", uid="uid-retry")]
        await first.mgr.sync(pods)
        await first.until(lambda: "up" in first.log("job") and "up" in first.log("retry"), "both up")
        pids = {n: first.pid(n) for n in ("job", "retry")}
        await first.stop(stop_pods=False)
        # Both finish while no edgecore is watching: the job succeeds, the other fails.
        (first.pod_dir("job") / "work" / "go").write_text("0")
        (first.pod_dir("retry") / "work" / "go").write_text("4")
        await first.until(lambda: not alive(pids["job"]) and not alive(pids["retry"]), "both ended")

        second = await Edge(base, {}).start()
        await second.mgr.sync(pods)
        await second.until(lambda: second.status.get("job", {}).get("phase") == "Succeeded",
                           "the job is known to have succeeded")
        assert second.cs("job")["state"]["terminated"]["exitCode"] == 0
        assert second.cs("job")["state"]["terminated"]["reason"] == "Completed"
        await second.until(lambda: second.cs("retry").get("restartCount") == 1, "failed one restarted")
        assert second.cs("retry")["lastState"]["terminated"]["exitCode"] == 4
        await second.settled(FAST.cap_s, "a Never pod is not run again")
        assert second.cs("job")["restartCount"] == 0  # Never: not run again
        await second.stop(stop_pods=True)

    run(main())


# --- confinement: each pod an identity of its own (red-team finding 3) -------------------

PEEK = ("import json, os, signal, sys, time\n"
        "def try_(f):\n"
        "    try:\n        f(); return 'ok'\n"
        "    except OSError as e:\n        return type(e).__name__\n"
        "def peek(path):\n    with open(path, 'rb') as fh:\n        fh.read(1)\n"
        "while not os.path.exists('targets.json'): time.sleep(0.02)\n"
        "t = json.load(open('targets.json'))\n"
        "print(json.dumps({'uid': os.getuid(), 'secret': try_(lambda: peek(t['secret'])),"
        " 'environ': try_(lambda: peek(f\"/proc/{t['pid']}/environ\")),"
        " 'signal': try_(lambda: os.kill(t['pid'], signal.SIGSTOP)),"
        " 'key': try_(lambda: peek(t['key']))}), flush=True)\n"
        "time.sleep(60)")


def test_two_pods_get_distinct_uids_and_cannot_read_or_signal_each_other(base):
    objs = {("secret", "creds"): {"data": {"password": base64.b64encode(b"victim-s3cr3t").decode()}}}
    edgedir = base / "edge"
    edgedir.mkdir(mode=0o700)
    (edgedir / "node.key").write_text("KEY")
    os.chmod(edgedir / "node.key", 0o600)
    edge = Edge(base, objs, private_dirs=(edgedir,))

    async def main():
        await edge.start()
        victim = edge.pod("victim", SLEEPER, uid="uid-victim",
                          env=[{"name": "PW", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password"}}}],
                          volumeMounts=[{"name": "creds", "mountPath": "/creds"}],
                          volumes=[{"name": "creds", "secret": {"secretName": "creds"}}])
        thief = edge.pod("thief", PEEK, uid="uid-thief")
        await edge.mgr.sync([victim, thief])
        await edge.until(lambda: edge.running("victim") and edge.running("thief"), "both running")
        v_uid, t_uid = (proc_ids(edge.pid(n))[0] for n in ("victim", "thief"))
        assert len(v_uid) == len(t_uid) == 1 and v_uid != t_uid
        assert all(int(u) in POD_IDS for u in v_uid | t_uid)
        secret = edge.pod_dir("victim") / "volumes" / "creds" / "password"
        assert secret.read_bytes() == b"victim-s3cr3t"
        work = edge.pod_dir("victim") / "work"
        assert stat.S_IMODE(os.lstat(work).st_mode) == 0o700 and str(os.lstat(work).st_uid) in v_uid
        targets = {"secret": str(secret), "pid": edge.pid("victim"), "key": str(edgedir / "node.key")}
        (edge.pod_dir("thief") / "work" / "targets.json").write_text(json.dumps(targets))
        await edge.until(lambda: edge.log("thief"), "thief reported")
        seen = json.loads(edge.log("thief").splitlines()[0])
        assert seen == {"uid": int(t_uid.pop()), "secret": "PermissionError", "environ": "PermissionError",
                        "signal": "PermissionError", "key": "PermissionError"}
        assert proc_stat(edge.pid("victim"))[0] != "T"  # not stopped by the thief
        await edge.stop(stop_pods=True)

    run(main())


def test_pod_keeps_its_uid_across_a_manager_restart_and_loses_it_on_delete(base):
    daemon = ("import os, sys, time\n"
              "if os.fork() == 0:\n    os.setsid()\n"
              "    if os.fork() == 0:\n        open('daemon.pid', 'w').write(str(os.getpid()))\n"
              "        time.sleep(60)\n    os._exit(0)\n"
              "print('up', flush=True)\nwhile True: time.sleep(0.05)")

    async def main():
        first = await Edge(base, {}).start()
        pods = [first.pod("keep", daemon, uid="uid-keep"), first.pod("other", SLEEPER, uid="uid-other")]
        await first.mgr.sync(pods)
        await first.until(lambda: first.running("keep") and first.running("other")
                          and (first.pod_dir("keep") / "work" / "daemon.pid").exists(), "running")
        ids = {n: json.loads((first.pod_dir(n) / "state.json").read_text())["ids"] for n in ("keep", "other")}
        assert ids["keep"][0] != ids["other"][0] and ids["keep"][0] == ids["keep"][1]
        keep_pid = first.pid("keep")
        await first.stop(stop_pods=False)

        second = await Edge(base, {}).start()
        await second.mgr.sync(pods)
        await second.until(lambda: second.running("keep"), "re-adopted")
        assert second.pid("keep") == keep_pid  # adopted, not restarted...
        assert proc_ids(keep_pid)[0] == {str(ids["keep"][0])}  # ...and still its own uid
        daemon_pid = int((second.pod_dir("keep") / "work" / "daemon.pid").read_text())
        assert alive(daemon_pid) and os.getpgid(daemon_pid) != keep_pid  # left the process group
        await second.mgr.sync([pods[1]])  # "keep" is deleted
        await second.until(lambda: not second.pod_dir("keep").exists(), "keep removed")
        await second.until(lambda: not alive(daemon_pid), "the escaped daemon swept with its pod's uid")
        # Its uid is free again but the next pod gets the one after the last handed out.
        await second.mgr.sync([pods[1], second.pod("next", SLEEPER, uid="uid-next")])
        await second.until(lambda: second.running("next"), "next running")
        nxt = json.loads((second.pod_dir("next") / "state.json").read_text())["ids"]
        # (the very next one unless some process on this host -- another test's pod -- runs as it)
        assert nxt[0] > max(ids["keep"][0], ids["other"][0])
        await second.stop(stop_pods=True)

    run(main())


def test_ids_outside_the_range_extra_groups_and_an_open_node_dir_are_refused_with_reasons(base):
    edgedir = base / "edge"
    edgedir.mkdir(mode=0o700)
    edge = Edge(base, {}, private_dirs=(edgedir,))

    def waiting(name):
        return edge.cs(name).get("state", {}).get("waiting", {})

    async def main():
        await edge.start()
        pods = [edge.pod("disk", SLEEPER, uid="uid-disk", securityContext={"runAsGroup": 6}),
                edge.pod("shadow", SLEEPER, uid="uid-shadow", securityContext={"runAsUser": 1000,
                                                                               "runAsGroup": 42}),
                edge.pod("groups", SLEEPER, uid="uid-groups"),
                edge.pod("inrange", SLEEPER, uid="uid-inrange", securityContext={"runAsUser": 265000})]
        pods[2]["spec"]["securityContext"] = {"supplementalGroups": [6]}
        await edge.mgr.sync(pods)
        await edge.until(lambda: all(waiting(n).get("reason") == "SecurityContextRefused"
                                     for n in ("disk", "shadow", "groups")) and edge.running("inrange"),
                         "refusals reported")
        assert "runAsGroup 6 is outside" in waiting("disk")["message"]
        assert "runAsUser 1000 is outside" in waiting("shadow")["message"]
        assert "supplementalGroups" in waiting("groups")["message"]
        assert edge.status["disk"]["phase"] == "Pending"
        assert proc_ids(edge.pid("inrange"))[0] == {"265000"}
        assert len(marked_pids(edge.marker)) == 1  # only "inrange" runs
        os.chmod(edgedir, 0o755)  # the node's key and store opened to every user
        await edge.mgr.sync(pods + [edge.pod("late", SLEEPER, uid="uid-late")])
        await edge.until(lambda: waiting("late").get("reason") == "NodeDataDirExposed", "exposed dir refused")
        assert "0755" in waiting("late")["message"]
        os.chmod(edgedir, 0o700)
        await edge.until(lambda: edge.running("late"), "started once the dir is private again")
        await edge.stop(stop_pods=True)

    run(main())


def test_a_pod_started_without_an_identity_of_its_own_is_restarted_under_one(base):
    async def main():
        first = await Edge(base, {}).start()
        pod = first.pod("legacy", SLEEPER, uid="uid-legacy")
        await first.mgr.sync([pod])
        await first.until(lambda: first.running("legacy"), "running")
        pid = first.pid("legacy")
        await first.stop(stop_pods=False)
        state_path = first.pod_dir("legacy") / "state.json"
        state = json.loads(state_path.read_text())
        del state["ids"]  # as written before pods had identities (they ran as nobody)
        state_path.write_text(json.dumps(state))

        second = await Edge(base, {}).start()
        await second.mgr.sync([pod])
        await second.until(lambda: second.running("legacy") and second.pid("legacy") not in (None, pid),
                           "restarted")
        assert not alive(pid)
        ids = json.loads(state_path.read_text())["ids"]
        assert proc_ids(second.pid("legacy"))[0] == {str(ids[0])}
        await second.stop(stop_pods=True)

    run(main())


def private_dir(base: Path) -> Path:
    """A directory only root may enter (as the node's EDGEDIR is), holding an executable."""
    private = base / "private"
    private.mkdir(mode=0o700)
    exe = private / "tool"
    exe.write_text("#!/bin/sh\necho ran\n")
    exe.chmod(0o755)
    return private


def terminated(edge: Edge, name: str, hide: str) -> dict:
    """A container's terminated state without its times, ``hide`` (the path it named) masked."""
    t = dict(edge.cs(name)["state"]["terminated"])
    return {k: str(v).replace(hide, "PATH") for k, v in t.items() if k in ("reason", "message", "exitCode")}


@pytest.mark.threat("K-POD-ESCAPE")
def test_a_pod_cannot_tell_whether_a_command_behind_a_root_only_directory_exists(base):
    private = private_dir(base)
    edge = Edge(base, {})
    probes = {"there": str(private / "tool"), "missing": str(private / "nosuchfile"),
              "rel-there": "../../../private/tool", "rel-missing": "../../../private/nosuchfile"}

    async def main():
        await edge.start()
        await edge.mgr.sync([edge.pod(n, "", policy="Never", command=[cmd]) for n, cmd in probes.items()])
        await edge.until(lambda: all("terminated" in edge.cs(n).get("state", {}) for n in probes),
                         "every probe pod finished")
        seen = {n: terminated(edge, n, cmd) for n, cmd in probes.items()}
        assert seen["there"] == seen["missing"] == seen["rel-there"] == seen["rel-missing"], seen
        assert seen["there"] == {"reason": "StartError", "exitCode": "128",
                                 "message": "cannot start 'PATH': permission denied"}, seen
        assert "ran" not in edge.log("there")
        await edge.stop(stop_pods=True)

    run(main())


@pytest.mark.threat("K-POD-ESCAPE")
def test_a_pod_cannot_tell_whether_a_working_dir_behind_a_root_only_directory_exists(base):
    """A workingDir the operator allows (allowed_host_paths) is entered as the pod: a
    directory inside a root-only one reads the same whether it exists or not."""
    private = private_dir(base)
    (private / "sub").mkdir(mode=0o755)
    edge = Edge(base, {}, allowed_host_paths=(str(base),))
    dirs = {"there": str(private / "sub"), "missing": str(private / "nosuchdir")}

    async def main():
        await edge.start()
        await edge.mgr.sync([edge.pod(n, "print('ran', flush=True)", policy="Never", workingDir=d)
                             for n, d in dirs.items()])
        await edge.until(lambda: all("terminated" in edge.cs(n).get("state", {}) for n in dirs),
                         "both pods finished")
        seen = {n: terminated(edge, n, d) for n, d in dirs.items()}
        assert seen["there"] == seen["missing"] == {
            "reason": "StartError", "exitCode": "128",
            "message": "cannot enter the working directory 'PATH': permission denied"}, seen
        assert "ran" not in edge.log("there")
        await edge.stop(stop_pods=True)

    run(main())


def test_a_pod_with_the_longest_valid_name_runs_and_is_readopted(base):
    name = "n" * 253  # Kubernetes' bound; <namespace>_<name>_<uid> would be 270 bytes
    script = "import os, time\nprint('up', os.getcwd(), flush=True)\nwhile True: time.sleep(0.05)"

    async def main():
        first = await Edge(base, {}).start()
        pod = first.pod(name, script, uid="uid-long")
        await first.mgr.sync([pod])
        await first.until(lambda: first.running(name), "the long-named pod running")
        pid = first.mgr.handles("uid-long")["main"].pid
        dirs = [p for p in first.root.iterdir() if p.is_dir()]
        assert len(dirs) == 1 and len(dirs[0].name) <= MAX_DIR_NAME and dirs[0].name.startswith("default_nnn")
        log = dirs[0] / "logs" / "main.log"
        await first.until(lambda: f"up {dirs[0] / 'work'}" in log.read_text(), "it says where it runs")
        await first.stop(stop_pods=False)

        second = await Edge(base, {}).start()  # a restarted edgecore finds the same directory
        await second.mgr.sync([pod])
        await second.until(lambda: second.running(name), "re-adopted")
        assert second.mgr.handles("uid-long")["main"].pid == pid and alive(pid)
        await second.stop(stop_pods=True)

    run(main())


def test_a_pod_directory_named_before_names_were_bounded_is_readopted(base):
    name = "m" * (MAX_DIR_NAME + 10)  # <namespace>_<name>_<uid> fits 255 bytes: such dirs exist
    legacy = f"default_{name}_uid-mid"

    async def main():
        first = await Edge(base, {}).start()
        pod = first.pod(name, SLEEPER, uid="uid-mid")
        await first.mgr.sync([pod])
        await first.until(lambda: first.running(name), "running")
        pid = first.mgr.handles("uid-mid")["main"].pid
        await first.stop(stop_pods=False)
        bounded = pod_dir_name("default", name, "uid-mid")
        assert bounded != legacy
        # As an older edgecore left it: the full name, its own paths in state.json.
        os.rename(first.root / bounded, first.root / legacy)
        state = first.root / legacy / "state.json"
        state.write_text(state.read_text().replace(bounded, legacy))

        second = await Edge(base, {}).start()
        await second.mgr.sync([pod])
        await second.until(lambda: second.running(name), "re-adopted")
        assert second.mgr.handles("uid-mid")["main"].pid == pid
        assert sorted(p.name for p in second.root.iterdir() if p.is_dir()) == [legacy]
        await second.stop(stop_pods=True)
        assert not alive(pid)

    run(main())


def test_a_pod_whose_directory_cannot_be_made_says_why_once_without_a_traceback(base, caplog):
    edge = Edge(base, {})
    pod = edge.pod("blocked", SLEEPER)

    async def main():
        await edge.start()
        edge.root.joinpath(pod_dir_name("default", "blocked", "uid-blocked")).write_text("")  # not a dir
        await edge.mgr.sync([pod])
        await edge.until(lambda: edge.cs("blocked").get("state", {}).get("waiting", {}).get("reason")
                         == "CreateContainerError", "the reason reported")
        assert "EEXIST" in edge.cs("blocked")["state"]["waiting"]["message"]
        await edge.until(lambda: sum("failed again" in r.getMessage() for r in caplog.records) >= 3,
                         "three more attempts (back-off)")
        await edge.stop(stop_pods=True)

    with caplog.at_level(logging.DEBUG, logger="kedge.edge.edged.manager"):
        run(main())
    said = [r for r in caplog.records if r.levelno >= logging.WARNING and "blocked" in r.getMessage()]
    assert len(said) == 1 and "pod_dir_error" in said[0].getMessage() and "EEXIST" in said[0].getMessage()
    assert not [r for r in caplog.records if r.exc_info], "no traceback"
