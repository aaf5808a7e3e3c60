"""Threat K-POD-ESCAPE: a pod on an edge reaches another pod or the node's own secrets.

The process runtime runs pods as host processes, so their only wall is their identity.
Each test drives a real cloudcore (embedded API server), a real ``kedge edgecore`` and
real kubectl; the attacking pods are Python scripts that report what they could do.

- a pod reads another pod's secret volume, its ``/proc/<pid>/environ`` (secrets passed as
  env), or signals it -- possible while every pod ran as ``nobody``;
- a pod asks for a privileged group (``runAsGroup: 6``, ``disk``: raw block devices) or a
  uid outside the node's pod range -- it must be refused with a reason on its status;
- under a non-root edgecore every pod ran as edgecore's own user and read ``node.key``
  -- pods must not run at all then;
- a pod's uid must survive an edgecore restart (or its files and processes would change
  hands), and pods run with ``no_new_privs`` and no supplementary groups;
- a pod names a file in the node's 0700 data directory as its command: edgecore resolved
  it as root, so "exit code 126" (there) and "executable not found" (missing) told the pod
  which files exist there. It must read the same either way.

These need root (the runtime does); CI runs as root. Not root is a failure, not a skip.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from kedge.edge.edged.ids import DEFAULT_POD_UID_RANGE, parse_id_range
from support.cluster import REPO, Cloud, EdgeProcess, pod_processes, pods_root, remove_pods, running_cloud, wait_until

PY = "/usr/bin/python3" if os.access("/usr/bin/python3", os.X_OK) else sys.executable
POD_IDS = parse_id_range(DEFAULT_POD_UID_RANGE)

PEEK = """
import json, os, signal, sys
pid, secret, key, db = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
def attempt(f):
    try:
        f()
        return "ok"
    except OSError as e:
        return type(e).__name__
def read(path):
    with open(path, "rb") as fh:
        fh.read(1)
status = dict(l.split(":", 1) for l in open("/proc/self/status") if ":" in l)
print(json.dumps({"uid": os.getuid(), "groups": status["Groups"].strip(),
                  "no_new_privs": status["NoNewPrivs"].strip(),
                  "secret": attempt(lambda: read(secret)),
                  "environ": attempt(lambda: read(f"/proc/{pid}/environ")),
                  "signal": attempt(lambda: os.kill(pid, signal.SIGSTOP)),
                  "node_key": attempt(lambda: read(key)), "edge_db": attempt(lambda: read(db))}), flush=True)
import time; time.sleep(600)
"""


def kubectl(cloud: Cloud, *args: str, input: str | None = None) -> str:
    env = dict(os.environ, KUBECONFIG=str(cloud.dir / "admin.kubeconfig"))
    r = subprocess.run(["kubectl", *args], input=input, capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 0, f"kubectl {' '.join(args)}: {r.stderr}"
    return r.stdout


def pod_manifest(node: str, name: str, command: list[str], *, security: dict | None = None,
                 restart: str = "Always") -> str:
    doc = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default"},
           "spec": {"nodeName": node, "terminationGracePeriodSeconds": 1, "restartPolicy": restart,
                    "containers": [{"name": "c", "image": "example/attacker", "command": command}]}}
    if security is not None:
        doc["spec"]["securityContext"] = security
    return json.dumps(doc)


def waiting(cloud: Cloud, name: str) -> dict:
    pod = json.loads(kubectl(cloud, "get", "pod", name, "-o", "json"))
    statuses = pod.get("status", {}).get("containerStatuses") or [{}]
    return statuses[0].get("state", {}).get("waiting") or {}


def pids_of(root: Path, name: str) -> list[int]:
    """The container processes (not the exit-code shims) of pod ``name``."""
    out = []
    for pid in pod_processes(root):
        try:
            if f"_{name}_" in os.readlink(f"/proc/{pid}/cwd") and \
                    not Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"/bin/sh\0"):
                out.append(pid)
        except OSError:
            continue
    return out


def uid_of(pid: int) -> int:
    line = next(ln for ln in Path(f"/proc/{pid}/status").read_text().splitlines() if ln.startswith("Uid:"))
    uids = set(line.split()[1:])
    assert len(uids) == 1, line
    return int(uids.pop())


def _require_root() -> None:
    if os.geteuid() != 0:
        pytest.fail("pods run only under a root edgecore: run the threat tests as root (CI does)")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    _require_root()
    root = tmp_path_factory.mktemp("podescape")
    # The edge's data dir sits in a directory every user may traverse (as /var/lib/kedge
    # does), so its own mode is all that keeps pods out of it.
    base = Path(tempfile.mkdtemp(prefix="kedge-escape-"))
    os.chmod(base, 0o711)
    edge_dir = base / "edge"
    with running_cloud(root) as cloud:
        assert cloud.join("esc", edge_dir).returncode == 0
        edge = EdgeProcess(edge_dir, root / "esc.log")
        try:
            wait_until(lambda: "esc" in cloud.connected(), what="edge connected")
            yield cloud, edge_dir, edge, root
        finally:
            edge.stop()
            remove_pods(edge_dir, "esc")
            shutil.rmtree(base, ignore_errors=True)


@pytest.mark.threat("K-POD-ESCAPE")
def test_pod_cannot_read_another_pods_secret_or_environ_or_signal_it_or_read_the_node_key(cluster):
    cloud, edge_dir, _, _ = cluster
    kubectl(cloud, "apply", "--validate=false", "-f", "-", input=json.dumps({
        "apiVersion": "v1", "kind": "List", "items": [
            {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "victim-creds", "namespace": "default"},
             "stringData": {"password": "victim-s3cr3t"}},
            {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "victim", "namespace": "default"},
             "spec": {"nodeName": "esc", "terminationGracePeriodSeconds": 1, "containers": [{
                 "name": "c", "image": "example/victim", "command": ["sleep", "600"],
                 "env": [{"name": "PW", "valueFrom": {"secretKeyRef": {"name": "victim-creds", "key": "password"}}}],
                 "volumeMounts": [{"name": "creds", "mountPath": "/creds"}]}],
                 "volumes": [{"name": "creds", "secret": {"secretName": "victim-creds"}}]}}]}))
    proot = pods_root(edge_dir, "esc")
    victim = wait_until(lambda: pids_of(proot, "victim"), 30, what="victim running")[0]
    secret = next(proot.glob("default_victim_*")) / "volumes" / "creds" / "password"
    assert secret.read_text() == "victim-s3cr3t"
    assert "victim-s3cr3t" in Path(f"/proc/{victim}/environ").read_text()

    kubectl(cloud, "apply", "--validate=false", "-f", "-", input=pod_manifest("esc", "thief", [
        PY, "-c", PEEK, str(victim), str(secret), str(edge_dir / "pki" / "node.key"), str(edge_dir / "edge.db")]))
    thief = wait_until(lambda: pids_of(proot, "thief"), 30, what="thief running")[0]
    log = next(proot.glob("default_thief_*")) / "logs" / "c.log"
    seen = json.loads(wait_until(lambda: log.exists() and log.read_text().strip(), 15, what="thief's report"))

    assert seen["secret"] == "PermissionError", seen  # another pod's secret file
    assert seen["environ"] == "PermissionError", seen  # another pod's secret env
    assert seen["signal"] == "PermissionError", seen  # SIGSTOP to another pod
    assert seen["node_key"] == "PermissionError" and seen["edge_db"] == "PermissionError", seen
    assert uid_of(victim) != uid_of(thief)
    assert uid_of(victim) in POD_IDS and uid_of(thief) in POD_IDS
    assert seen["uid"] == uid_of(thief)
    assert seen["groups"] == "" and seen["no_new_privs"] == "1", seen
    assert Path(f"/proc/{victim}/stat").read_text().split(") ")[1][0] != "T"
    kubectl(cloud, "delete", "pod", "victim", "thief", "--wait=false")


@pytest.mark.threat("K-POD-ESCAPE")
def test_a_pod_cannot_learn_which_files_exist_in_the_node_data_dir_from_its_start_error(cluster):
    cloud, edge_dir, _, _ = cluster
    probes = {"probe-key": edge_dir / "pki" / "node.key", "probe-none": edge_dir / "pki" / "nosuchfile"}
    assert probes["probe-key"].exists() and not probes["probe-none"].exists()
    for name, path in probes.items():
        kubectl(cloud, "apply", "--validate=false", "-f", "-",
                input=pod_manifest("esc", name, [str(path)], restart="Never"))

    def ended(name: str) -> dict:
        pod = json.loads(kubectl(cloud, "get", "pod", name, "-o", "json"))
        statuses = pod.get("status", {}).get("containerStatuses") or [{}]
        return statuses[0].get("state", {}).get("terminated") or {}

    wait_until(lambda: all(ended(n) for n in probes), 30, what="both probe pods ended")
    seen = {n: {k: str(ended(n).get(k)).replace(str(p), "PATH") for k in ("reason", "message", "exitCode")}
            for n, p in probes.items()}
    assert seen["probe-key"] == seen["probe-none"], seen  # no existence oracle
    assert seen["probe-key"]["reason"] == "StartError" and "permission denied" in seen["probe-key"]["message"]
    kubectl(cloud, "delete", "pod", *probes, "--wait=false")


@pytest.mark.threat("K-POD-ESCAPE")
def test_privileged_groups_and_uids_outside_the_range_are_refused_with_a_reason(cluster):
    cloud, edge_dir, _, _ = cluster
    asks = {"disk-group": {"runAsGroup": 6}, "shadow-group": {"runAsUser": 200100, "runAsGroup": 42},
            "human-uid": {"runAsUser": 1000}, "root-uid": {"runAsUser": 0},
            "extra-groups": {"supplementalGroups": [6]}, "fs-group": {"fsGroup": 6}}
    for name, ctx in asks.items():
        kubectl(cloud, "apply", "--validate=false", "-f", "-", input=pod_manifest("esc", name, ["sleep", "600"], security=ctx))
    wait_until(lambda: all(waiting(cloud, n).get("reason") == "SecurityContextRefused" for n in asks), 30,
               what="every pod refused with a reason")
    assert "runAsGroup 6 is outside" in waiting(cloud, "disk-group")["message"]
    assert "runAsUser 1000 is outside" in waiting(cloud, "human-uid")["message"]
    proot = pods_root(edge_dir, "esc")
    assert not any(pids_of(proot, n) for n in asks)  # nothing of them runs
    phases = json.loads(kubectl(cloud, "get", "pods", "-o", "json"))["items"]
    assert {p["metadata"]["name"]: p["status"]["phase"] for p in phases if p["metadata"]["name"] in asks} \
        == dict.fromkeys(asks, "Pending")
    kubectl(cloud, "delete", "pod", *asks, "--wait=false")


@pytest.mark.threat("K-POD-ESCAPE")
def test_pod_keeps_its_uid_across_an_edgecore_restart(cluster):
    cloud, edge_dir, edge, root = cluster
    kubectl(cloud, "apply", "--validate=false", "-f", "-", input=pod_manifest("esc", "steady", ["sleep", "600"]))
    proot = pods_root(edge_dir, "esc")
    first = wait_until(lambda: pids_of(proot, "steady"), 30, what="steady running")[0]
    uid = uid_of(first)
    assert uid in POD_IDS  # an id of its own, not one every pod shares
    edge.stop()
    log = root / "esc.log"
    seen = log.read_text(errors="replace").count("re-adopted default/steady") if log.exists() else 0
    restarted = EdgeProcess(edge_dir, log)
    try:
        # Positive signal: the new edgecore says it re-adopted the running container (not restarted).
        wait_until(lambda: log.read_text(errors="replace").count("re-adopted default/steady") > seen, 30,
                   what="steady re-adopted")
        assert pids_of(proot, "steady") == [first] and uid_of(first) == uid
        os.kill(first, signal.SIGKILL)  # the container dies: the new edgecore starts it again...
        again = wait_until(lambda: [p for p in pids_of(proot, "steady") if p != first], 40,
                           what="steady restarted")[0]
        assert uid_of(again) == uid  # ...as the same uid, recorded before the restart
    finally:
        edge.proc, edge._fh = restarted.proc, restarted._fh  # the fixture stops this one
    kubectl(cloud, "delete", "pod", "steady", "--wait=false")


@pytest.mark.threat("K-POD-ESCAPE")
def test_a_non_root_edgecore_runs_no_pod_and_says_why(tmp_path):
    """edgecore as ``nobody`` (keeping only CAP_DAC_READ_SEARCH, so that it can reach the
    interpreter and the repository wherever CI put them): its pods would run as nobody
    and read its node key. They must not run at all, and their status says why."""
    _require_root()
    nobody = 65534
    with running_cloud(tmp_path) as cloud:
        edge_dir = tmp_path / "lowly"
        assert cloud.join("lowly", edge_dir).returncode == 0
        for dirpath, _, files in os.walk(edge_dir):
            os.chown(dirpath, nobody, nobody)
            for f in files:
                os.chown(os.path.join(dirpath, f), nobody, nobody)
        log = open(tmp_path / "lowly.log", "ab")  # noqa: SIM115 - closed below
        proc = subprocess.Popen(
            ["setpriv", f"--reuid={nobody}", f"--regid={nobody}", "--clear-groups",
             "--inh-caps=-all,+dac_read_search", "--ambient-caps=-all,+dac_read_search",
             sys.executable, "-m", "kedge", "edgecore", "--data-dir", str(edge_dir)],
            stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env=dict(os.environ, HOME=str(edge_dir)))
        try:
            wait_until(lambda: "lowly" in cloud.connected(), 30, what="non-root edgecore connected")
            key = edge_dir / "pki" / "node.key"
            kubectl(cloud, "apply", "--validate=false", "-f", "-", input=pod_manifest("lowly", "grab", [
                PY, "-c", "import sys, time; print(open(sys.argv[1]).read()[:40], flush=True); time.sleep(600)",
                str(key)]))
            reason = wait_until(lambda: waiting(cloud, "grab").get("reason") in ("RuntimeNeedsRoot",) and
                                waiting(cloud, "grab"), 30, what="the pod refused for a non-root edgecore")
            assert "not root" in reason["message"]
            assert proc.poll() is None  # edgecore keeps running
            pods = edge_dir / "pods"
            logs = list(pods.glob("*/logs/*.log")) if pods.exists() else []
            assert not any("PRIVATE KEY" in p.read_text(errors="replace") for p in logs)
            assert not pod_processes(pods)
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
            log.close()
            for pid in pod_processes(edge_dir / "pods"):
                os.kill(pid, signal.SIGKILL)
