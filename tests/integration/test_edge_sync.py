"""Pods from kubectl to edge stores, reliably: real cloudcore (embedded API server), real
edgecore processes, real kubectl, real SQLite on both sides."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from kedge.edge.metamanager.store import MetaStore
from kedge.protocol import message as m
from support.cluster import Cloud, EdgeProcess, pod_processes, pods_root, remove_pods, running_cloud, wait_until
from support.edge import edge_hub

SECRET_VALUE = "s3cr3t-Value-9f2b"


def kubectl(cloud: Cloud, *args: str, input: str | None = None) -> str:
    env = dict(os.environ, KUBECONFIG=str(cloud.dir / "admin.kubeconfig"))
    r = subprocess.run(["kubectl", *args], input=input, capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 0, f"kubectl {' '.join(args)}: {r.stderr}"
    return r.stdout


def manifest(node: str, suffix: str, greeting: str = "hello") -> str:
    return f"""
apiVersion: v1
kind: ConfigMap
metadata: {{name: cfg-{suffix}, namespace: default}}
data: {{greeting: {greeting}}}
---
apiVersion: v1
kind: Secret
metadata: {{name: sec-{suffix}, namespace: default}}
stringData: {{password: {SECRET_VALUE}-{suffix}}}
---
apiVersion: v1
kind: Pod
metadata: {{name: web-{suffix}, namespace: default}}
spec:
  nodeName: {node}
  containers:
  - name: c
    image: example/web
    command: ["sleep", "600"]
    env:
    - {{name: GREETING, valueFrom: {{configMapKeyRef: {{name: cfg-{suffix}, key: greeting}}}}}}
    - {{name: PW, valueFrom: {{secretKeyRef: {{name: sec-{suffix}, key: password}}}}}}
"""


class EdgeView:
    """Reads an edge's store from outside (WAL: concurrent with the running edgecore)."""

    def __init__(self, edge_dir: Path) -> None:
        self.dir = edge_dir

    def inventory(self) -> dict[str, str]:
        """Live objects only (key -> rv); tombstones are left out."""
        if not (self.dir / "edge.db").exists():
            return {}
        store = MetaStore(self.dir / "edge.db", self.dir / "edge.key")
        try:
            return store.snapshot()[0]
        finally:
            store.close()

    def get(self, key: str):
        store = MetaStore(self.dir / "edge.db", self.dir / "edge.key")
        try:
            return store.get(key)
        finally:
            store.close()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    root = tmp_path_factory.mktemp("sync")
    with running_cloud(root) as cloud:
        edges = {}
        for node in ("edge-a", "edge-b"):
            assert cloud.join(node, root / node).returncode == 0
            edges[node] = EdgeProcess(root / node, root / f"{node}.log")
        wait_until(lambda: {"edge-a", "edge-b"} <= cloud.connected(), what="edges connected")
        try:
            yield cloud, root, edges
        finally:
            for node, e in edges.items():
                e.stop()
                remove_pods(root / node, node)


@pytest.mark.threat("K-EDGE-DB-THEFT")
def test_kubectl_apply_reaches_the_edge_store_and_secrets_are_encrypted(cluster):
    cloud, root, _ = cluster
    kubectl(cloud, "apply", "-f", "-", input=manifest("edge-a", "one"))
    view = EdgeView(root / "edge-a")
    want = {"default/pod/web-one", "default/configmap/cfg-one", "default/secret/sec-one"}
    wait_until(lambda: want <= set(view.inventory()), what="objects on edge-a")
    assert view.get("default/configmap/cfg-one")["data"] == {"greeting": "hello"}
    # Node B was given nothing of node A's.
    assert not want & set(EdgeView(root / "edge-b").inventory())
    # The secret's value (plain or base64) appears nowhere in the database files' bytes.
    import base64

    needles = [f"{SECRET_VALUE}-one".encode(), base64.b64encode(f"{SECRET_VALUE}-one".encode())]
    for f in (root / "edge-a").glob("edge.db*"):
        data = f.read_bytes()
        assert not any(n in data for n in needles), f
    # Nor in the cloud's API server store (Secrets sealed with DIR/pki/encryption.json), while the
    # configmap's value is there as it is (control: we are looking at the right files).
    cloud_files = b"".join(f.read_bytes() for f in cloud.dir.glob("api.db*"))
    assert b'"greeting":"hello"' in cloud_files
    assert not any(n in cloud_files for n in needles)
    assert (cloud.dir / "pki" / "encryption.json").stat().st_mode & 0o777 == 0o600
    # The node shows Ready in kubectl.
    nodes = json.loads(kubectl(cloud, "get", "nodes", "-o", "json"))["items"]
    ready = {n["metadata"]["name"]: [c["status"] for c in n["status"]["conditions"] if c["type"] == "Ready"]
             for n in nodes}
    assert ready.get("edge-a") == ["True"]


def test_configmap_update_and_pod_delete_reach_the_edge(cluster):
    cloud, root, _ = cluster
    kubectl(cloud, "apply", "-f", "-", input=manifest("edge-a", "two"))
    view = EdgeView(root / "edge-a")
    wait_until(lambda: "default/pod/web-two" in view.inventory(), what="pod on edge")
    kubectl(cloud, "apply", "-f", "-", input=manifest("edge-a", "two", greeting="bonjour"))
    wait_until(lambda: (view.get("default/configmap/cfg-two") or {}).get("data") == {"greeting": "bonjour"},
               what="configmap update on edge")
    kubectl(cloud, "delete", "pod", "web-two", "--wait=false")
    wait_until(lambda: "default/pod/web-two" not in view.inventory(), what="pod deletion on edge")
    # Its configmap and secret are no longer referenced by any pod of the node: gone too.
    wait_until(lambda: "default/secret/sec-two" not in view.inventory(), what="unreferenced secret removed")


def test_changes_made_while_edge_offline_converge_after_reconnect(cluster):
    cloud, root, edges = cluster
    kubectl(cloud, "apply", "-f", "-", input=manifest("edge-b", "off"))
    view = EdgeView(root / "edge-b")
    wait_until(lambda: "default/pod/web-off" in view.inventory(), what="pod on edge-b")
    edges["edge-b"].stop()
    wait_until(lambda: "edge-b" not in cloud.connected(), what="edge-b disconnected")
    # While it is away: an update, a deletion and a new pod.
    kubectl(cloud, "apply", "-f", "-", input=manifest("edge-b", "off", greeting="changed"))
    kubectl(cloud, "apply", "-f", "-", input=manifest("edge-b", "new"))
    kubectl(cloud, "delete", "pod", "web-off", "--wait=false")
    edges["edge-b"] = EdgeProcess(root / "edge-b", root / "edge-b.log")
    wait_until(lambda: "default/pod/web-new" in view.inventory()
               and "default/pod/web-off" not in view.inventory(), timeout=20, what="edge-b converged")
    assert view.get("default/configmap/cfg-new")["data"] == {"greeting": "hello"}


@pytest.mark.threat("K-LATERAL")
def test_node_cannot_obtain_another_nodes_secret_over_the_tunnel(cluster):
    cloud, root, edges = cluster
    kubectl(cloud, "apply", "-f", "-", input=manifest("edge-b", "bsecret"))
    wait_until(lambda: "default/secret/sec-bsecret" in EdgeView(root / "edge-b").inventory(), what="b's secret")

    async def main():
        async with edge_hub(root / "edge-a") as hub:
            own = await hub.request(hub.new_message(m.QUERY, "default/secret/sec-one"))
            other = await hub.request(hub.new_message(m.QUERY, "default/secret/sec-bsecret"))
            return own, other

    # The in-test hub takes over edge-a's tunnel (newest session wins); the real edgecore reconnects later.
    own, other = asyncio.run(main())
    assert own.route.operation == m.RESPONSE and own.content["object"]["metadata"]["name"] == "sec-one"
    assert other.route.operation == m.ERROR and other.content == {"code": "forbidden"}


@pytest.mark.threat("K-STALE-OVERWRITE")
def test_cloudcore_killed_mid_sync_converges_without_loss(cluster):
    cloud, root, edges = cluster
    view = EdgeView(root / "edge-a")
    docs = "\n---\n".join(manifest("edge-a", f"k{i}") for i in range(10))
    kubectl(cloud, "apply", "-f", "-", input=docs)
    time.sleep(0.3)
    cloud.stop(sig=signal.SIGKILL)
    cloud.start()
    want = {f"default/pod/web-k{i}" for i in range(10)} | {f"default/secret/sec-k{i}" for i in range(10)}
    wait_until(lambda: want <= set(view.inventory()), timeout=30, what="all objects after cloudcore restart")
    rvs = view.inventory()
    assert all(int(rvs[k]) > 0 for k in want)


def test_lost_node_becomes_unknown_but_keeps_its_pods(tmp_path):
    with running_cloud(tmp_path, config={"node_monitor_grace_s": 2}) as cloud:
        assert cloud.join("lonely", tmp_path / "lonely").returncode == 0
        edge = EdgeProcess(tmp_path / "lonely", tmp_path / "lonely.log")
        try:
            wait_until(lambda: "lonely" in cloud.connected(), what="connected")
            kubectl(cloud, "apply", "-f", "-", input=manifest("lonely", "stay"))
            wait_until(lambda: "default/pod/web-stay" in EdgeView(tmp_path / "lonely").inventory(), what="pod")
        finally:
            edge.stop()
            remove_pods(tmp_path / "lonely", "lonely")

        def ready() -> str:
            node = json.loads(kubectl(cloud, "get", "node", "lonely", "-o", "json"))
            return next(c["status"] for c in node["status"]["conditions"] if c["type"] == "Ready")

        wait_until(lambda: ready() == "Unknown", timeout=20, what="node Ready=Unknown")
        pod = json.loads(kubectl(cloud, "get", "pod", "web-stay", "-o", "json"))
        assert not pod["metadata"].get("deletionTimestamp"), "pods of a lost edge node are not evicted"


def _pod_json(cloud: Cloud, name: str) -> dict:
    return json.loads(kubectl(cloud, "get", "pod", name, "-o", "json"))


def test_pod_runs_as_processes_reports_status_and_stops_on_delete(cluster):
    cloud, root, _ = cluster
    kubectl(cloud, "apply", "-f", "-", input=manifest("edge-a", "run"))

    wait_until(lambda: _running(cloud, "web-run"), timeout=20, what="pod Running in kubectl")
    proot = pods_root(root / "edge-a", "edge-a")
    procs = [p for p in pod_processes(proot) if "_web-run_" in os.readlink(f"/proc/{p}/cwd")]
    assert procs, "the container runs as a local process"
    # The process got its env from the configmap and the secret, and runs unprivileged.
    pid = next(p for p in procs if Path(f"/proc/{p}/cmdline").read_bytes().startswith(b"sleep"))
    env = dict(kv.split("=", 1) for kv in Path(f"/proc/{pid}/environ").read_text().split("\0") if "=" in kv)
    assert env["GREETING"] == "hello" and env["PW"] == f"{SECRET_VALUE}-run"
    # Pods run only under a root edgecore (CI runs as root), each as a uid of its own.
    assert os.geteuid() == 0, "run as root: edgecore runs pods only as root"
    assert os.stat(f"/proc/{pid}").st_uid >= 200000
    kubectl(cloud, "delete", "pod", "web-run", "--wait=false")
    wait_until(lambda: not any(Path(f"/proc/{p}").exists() for p in procs), timeout=40, what="processes stopped")
    # The node finished the graceful deletion: the pod is gone from the API too.
    wait_until(lambda: "web-run" not in kubectl(cloud, "get", "pods", "-o", "name"), timeout=20,
               what="pod removed from the API")


def test_edgecore_restart_while_offline_keeps_pod_exactly_once(cluster):
    cloud, root, edges = cluster
    kubectl(cloud, "apply", "-f", "-", input=manifest("edge-b", "once"))
    proot = pods_root(root / "edge-b", "edge-b")

    def once_pids():
        return [p for p in pod_processes(proot) if "_web-once_" in os.readlink(f"/proc/{p}/cwd")
                and Path(f"/proc/{p}/cmdline").read_bytes().startswith(b"sleep")]

    wait_until(lambda: len(once_pids()) == 1, timeout=20, what="pod running on edge-b")
    first = once_pids()
    cloud.stop()  # the link is gone
    edges["edge-b"].stop()
    assert once_pids() == first, "stopping edgecore leaves the pod running"
    log = root / "edge-b.log"
    seen = log.read_text(errors="replace").count("re-adopted default/web-once") if log.exists() else 0
    edges["edge-b"] = EdgeProcess(root / "edge-b", log)
    # Positive signal: the restarted edgecore (offline) says it re-adopted the running container.
    wait_until(lambda: log.read_text(errors="replace").count("re-adopted default/web-once") > seen, timeout=30,
               what="edgecore re-adopted the pod while offline")
    assert once_pids() == first, "the pod is back exactly once: re-adopted, not duplicated or restarted"
    cloud.start()
    wait_until(lambda: "edge-b" in cloud.connected(), timeout=30, what="edge-b reconnected")
    # Positive signal: a pod created after the reconnect runs on edge-b; the node's messages are applied
    # in order, so the reconnect's resync of web-once was applied before it.
    kubectl(cloud, "apply", "-f", "-", input=manifest("edge-b", "after"))
    wait_until(lambda: any("_web-after_" in os.readlink(f"/proc/{p}/cwd") for p in pod_processes(proot)),
               timeout=30, what="a pod created after the reconnect runs")
    assert once_pids() == first, "reconnecting does not restart a healthy pod"


def test_container_restarts_show_in_kubectl(cluster):
    cloud, root, _ = cluster
    kubectl(cloud, "apply", "-f", "-", input="""
apiVersion: v1
kind: Pod
metadata: {name: crasher, namespace: default}
spec:
  nodeName: edge-a
  restartPolicy: Always
  containers:
  - {name: c, image: example/crash, command: ["sh", "-c", "exit 3"]}
""")

    def restarted():
        cs = (_pod_json(cloud, "crasher").get("status") or {}).get("containerStatuses") or []
        return cs and cs[0].get("restartCount", 0) >= 1 and cs[0]

    cs = wait_until(restarted, timeout=40, what="restartCount >= 1 in kubectl")
    last = cs.get("lastState", {}).get("terminated") or cs.get("state", {}).get("terminated") or {}
    assert last.get("exitCode") == 3
    kubectl(cloud, "delete", "pod", "crasher", "--wait=false")


def test_configmap_and_secret_released_then_needed_again_reach_the_new_pod(cluster):
    """A configmap/secret no pod needs is removed from the edge (released at its version); a new pod
    that needs the unchanged objects again must get them -- the same version is let back in."""
    cloud, root, _ = cluster
    view = EdgeView(root / "edge-a")
    kubectl(cloud, "apply", "-f", "-", input=manifest("edge-a", "again"))
    keys = ("default/configmap/cfg-again", "default/secret/sec-again")
    wait_until(lambda: all(k in view.inventory() for k in keys), timeout=20, what="referenced objects on the edge")
    kubectl(cloud, "delete", "pod", "web-again", "--wait=true", "--timeout=60s")
    wait_until(lambda: not any(k in view.inventory() for k in keys), timeout=30, what="released from the edge")
    pod = manifest("edge-a", "again").split("---")[-1].replace("web-again", "web-again2")
    kubectl(cloud, "apply", "-f", "-", input=pod)

    wait_until(lambda: _running(cloud, "web-again2"), timeout=30, what="the new pod Running with the configmap and secret it references")
    assert all(k in view.inventory() for k in keys)
    kubectl(cloud, "delete", "pod", "web-again2", "--wait=true", "--timeout=60s")


@pytest.mark.threat("K-POD-LOG-ABUSE")
def test_kubectl_logs_reaches_the_container_on_the_edge_over_the_tunnel(cluster):
    cloud, root, _ = cluster
    kubectl(cloud, "apply", "-f", "-", input="""
apiVersion: v1
kind: Pod
metadata: {name: talker, namespace: default}
spec:
  nodeName: edge-a
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: example/talker
    command: ["sh", "-c", "echo first; echo second; i=0; while [ $i -lt 600 ]; do i=$((i+1)); echo tick $i; sleep 0.2; done"]
""")
    wait_until(lambda: "second" in _logs(cloud, "talker"), timeout=30, what="the container's output via kubectl logs")
    out = _logs(cloud, "talker")
    assert out.startswith("first\nsecond\n")
    assert _logs(cloud, "talker", "--tail=1").count("\n") == 1
    assert len(_logs(cloud, "talker", "--limit-bytes=5").encode()) == 5
    # -f streams what is written after it started (bounded: kubectl is stopped after a few lines).
    env = dict(os.environ, KUBECONFIG=str(cloud.dir / "admin.kubeconfig"))
    proc = subprocess.Popen(["kubectl", "logs", "-f", "--tail=0", "talker"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    try:
        lines = [proc.stdout.readline() for _ in range(3)]
    finally:
        proc.kill()
        proc.wait(10)
    ticks = [int(x.split()[1]) for x in lines]
    assert all(x.startswith("tick ") for x in lines) and ticks == sorted(ticks) and len(set(ticks)) == 3
    # Refused, with kube-apiserver's words, not guessed at.
    for args, words in ((("-c", "nope"), "container nope is not valid"),
                        (("--timestamps",), "timestamps is not supported")):
        r = subprocess.run(["kubectl", "logs", "talker", *args], capture_output=True, text=True, env=env, timeout=60)
        assert r.returncode != 0 and words in r.stderr, r.stderr
    # Reading logs is its own permission (pods/log): a node's certificate does not carry it.
    import urllib.error
    import urllib.request

    from kedge import tls

    edge = root / "edge-a" / "pki"
    ctx = tls.client_context(cloud.dir / "pki" / "ca.crt", edge / "node.crt", edge / "node.key")
    url = cloud.endpoints()["api"] + "/api/v1/namespaces/default/pods/talker/log"
    with pytest.raises(urllib.error.HTTPError) as denied:
        urllib.request.urlopen(url, context=ctx, timeout=30)
    assert denied.value.code == 403
    kubectl(cloud, "delete", "pod", "talker", "--wait=false")


@pytest.mark.threat("K-POD-LOG-ABUSE")
def test_kubectl_logs_for_a_pod_whose_node_is_offline_is_a_clear_503(cluster):
    cloud, _, _ = cluster
    kubectl(cloud, "apply", "-f", "-", input="""
apiVersion: v1
kind: Pod
metadata: {name: nowhere, namespace: default}
spec:
  nodeName: no-such-edge
  containers: [{name: c, image: x, command: ["true"]}]
""")
    env = dict(os.environ, KUBECONFIG=str(cloud.dir / "admin.kubeconfig"))
    r = subprocess.run(["kubectl", "logs", "nowhere"], capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode != 0 and 'node "no-such-edge" is not connected' in r.stderr, r.stderr
    kubectl(cloud, "delete", "pod", "nowhere", "--grace-period=0", "--force")
    assert "nowhere" not in kubectl(cloud, "get", "pods", "-o", "name")


def _running(cloud: Cloud, pod: str) -> bool:
    st = _pod_json(cloud, pod).get("status") or {}
    cs = st.get("containerStatuses") or []
    return bool(st.get("phase") == "Running" and cs and "running" in cs[0].get("state", {}))


def _logs(cloud: Cloud, pod: str, *args: str) -> str:
    env = dict(os.environ, KUBECONFIG=str(cloud.dir / "admin.kubeconfig"))
    r = subprocess.run(["kubectl", "logs", pod, *args], capture_output=True, text=True, env=env, timeout=60)
    return r.stdout if r.returncode == 0 else ""
