"""Real-cluster mode: ``kedge cloudcore --kubeconfig`` against a separate API server,
authorised only by the RBAC that ``kedge manifests`` prints.

The "real cluster" is a separate ``kedge apiserver`` process (data dir A, its own CA).
cloudcore runs from another data dir (B, another CA: the hub and the edges' identities)
with a kubeconfig for A carrying a client certificate from A's CA whose user and group
the embedded bootstrap policy does not know -- so neither the bootstrap
``system:kedge-cloudcore`` binding nor the built-in node-impersonation rule applies, and
every permission cloudcore has on A comes from the applied manifests. Real processes,
real TLS, real kubectl, real SQLite on both sides.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from kedge._internal import fsutil
from kedge.edge.metamanager.store import MetaStore
from kedge.pki import ca as pki
from support.cluster import REPO, EdgeProcess, kedge, remove_pods, wait_until
from support.edge import edge_inventory

KUBECTL = shutil.which("kubectl") or "/usr/bin/kubectl"
CC_USER = "kedge-remote-cloudcore"  # unknown to the embedded bootstrap policy
CC_GROUP = "kedge-remote-controllers"  # deliberately NOT system:kedge-cloudcore


def kubectl(kubeconfig: Path, *args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    env = dict(os.environ, KUBECONFIG=str(kubeconfig))
    r = subprocess.run([KUBECTL, *args], input=input, capture_output=True, text=True, env=env, timeout=60)
    if check:
        assert r.returncode == 0, f"kubectl {' '.join(args)}: {r.stderr}"
    return r




def edge_get(edge_dir: Path, key: str):
    store = MetaStore(edge_dir / "edge.db", edge_dir / "edge.key")
    try:
        return store.get(key)
    finally:
        store.close()


def write_remote_kubeconfig(a_dir: Path, server: str, path: Path) -> None:
    """A kubeconfig for A's API server with a cloudcore identity issued by A's CA."""
    ca_key = pki.load_key_file(a_dir / "pki" / "ca.key")
    ca_cert = pki.load_cert_file(a_dir / "pki" / "ca.crt")
    key, cert = pki.issue_client_cert(ca_key, ca_cert, common_name=CC_USER, organizations=[CC_GROUP],
                                      now=dt.datetime.now(dt.timezone.utc), validity=dt.timedelta(hours=2))
    assert key is not None
    b64 = lambda b: base64.b64encode(b).decode()  # noqa: E731
    doc = {
        "apiVersion": "v1", "kind": "Config", "current-context": "a",
        "clusters": [{"name": "a", "cluster": {"server": server,
                                               "certificate-authority-data": b64((a_dir / "pki" / "ca.crt").read_bytes())}}],
        "users": [{"name": CC_USER, "user": {"client-certificate-data": b64(pki.cert_to_pem(cert)),
                                             "client-key-data": b64(pki.key_to_pem(key))}}],
        "contexts": [{"name": "a", "context": {"cluster": "a", "user": CC_USER}}],
    }
    fsutil.write_private(path, yaml.safe_dump(doc).encode())


def workload(node: str, suffix: str) -> str:
    return f"""
apiVersion: v1
kind: ConfigMap
metadata: {{name: cfg-{suffix}, namespace: default}}
data: {{greeting: hello-{suffix}}}
---
apiVersion: v1
kind: Pod
metadata: {{name: web-{suffix}, namespace: default}}
spec:
  nodeName: {node}
  containers:
  - name: c
    image: example/web
    command: ["sleep", "3600"]
    env:
    - {{name: GREETING, valueFrom: {{configMapKeyRef: {{name: cfg-{suffix}, key: greeting}}}}}}
"""


def audit_records(a_dir: Path) -> list[dict]:
    path = a_dir / "apiserver-audit.log"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class Proc:
    def __init__(self, args: list[str], log: Path) -> None:
        self._fh = open(log, "ab")
        self.log = log
        self.proc = subprocess.Popen([sys.executable, "-m", "kedge", *args], stdout=self._fh,
                                     stderr=subprocess.STDOUT, cwd=REPO)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._fh.close()


def _endpoints(d: Path) -> dict:
    try:
        return json.loads((d / "endpoints.json").read_text())
    except (FileNotFoundError, ValueError):
        return {}


@pytest.fixture(scope="module")
def real_cluster(tmp_path_factory):
    root = tmp_path_factory.mktemp("realcluster")
    a_dir, b_dir = root / "A", root / "B"
    ports = ["--api-port", "0", "--hub-port", "0", "--cert-port", "0"]
    kedge("init", "--data-dir", str(a_dir), *ports, check=True)
    kedge("init", "--data-dir", str(b_dir), *ports, check=True)
    procs: list[Proc] = []
    try:
        apiserver = Proc(["apiserver", "--data-dir", str(a_dir)], root / "apiserver.log")
        procs.append(apiserver)
        server = wait_until(lambda: apiserver.alive() and _endpoints(a_dir).get("api"), 30, what="A's API endpoint")
        assert apiserver.alive(), apiserver.log.read_text()
        kubeconfig = root / "cloudcore-on-a.kubeconfig"
        write_remote_kubeconfig(a_dir, server, kubeconfig)
        cloudcore = Proc(["cloudcore", "--data-dir", str(b_dir), "--kubeconfig", str(kubeconfig)],
                         root / "cloudcore.log")
        procs.append(cloudcore)
        wait_until(lambda: not cloudcore.alive() or (_endpoints(b_dir).get("hub") and _endpoints(b_dir).get("certs")),
                   30, what="cloudcore endpoints")
        assert cloudcore.alive(), cloudcore.log.read_text()
        yield {"root": root, "a": a_dir, "b": b_dir, "kubeconfig": kubeconfig, "admin": a_dir / "admin.kubeconfig",
               "cloudcore": cloudcore, "procs": procs}
    finally:
        for p in reversed(procs):
            p.stop()
        for p in procs:
            if isinstance(p, EdgeProcess):
                remove_pods(p.dir, p.dir.name)  # pods outlive edgecore on purpose; not past the test


def _join_and_run(env: dict, node: str) -> Path:
    b_dir, root = env["b"], env["root"]
    token = kedge("token", "create", "--data-dir", str(b_dir), "--node", node, check=True).stdout.strip()
    certs = _endpoints(b_dir)["certs"].removeprefix("https://")
    edge_dir = root / node
    kedge("join", "--cloud", certs, "--token", token, "--node", node, "--data-dir", str(edge_dir), check=True)
    edge = EdgeProcess(edge_dir, root / f"{node}.log")
    env["procs"].append(edge)
    return edge_dir


def test_cloudcore_identity_alone_may_not_impersonate_nodes_on_the_real_cluster(real_cluster):
    """Before the manifests are applied, A refuses cloudcore's impersonation of a node."""
    r = kubectl(real_cluster["kubeconfig"], "get", "pods", "-A", "--as", "system:node:edge-x",
                "--as-group", "system:nodes", check=False)
    assert r.returncode != 0 and "forbidden" in r.stderr.lower(), r.stderr
    r = kubectl(real_cluster["kubeconfig"], "get", "nodes", check=False)
    assert r.returncode != 0 and "forbidden" in r.stderr.lower(), r.stderr


def test_pod_applied_on_the_real_cluster_reaches_a_listed_edge_and_an_unlisted_one_gets_nothing(real_cluster):
    env = real_cluster
    a_dir = env["a"]
    out = kedge("manifests", "--node", "edge-x", "--cloudcore-user", CC_USER, check=True).stdout
    kubectl(env["admin"], "apply", "-f", "-", input=out)
    # What the manifests granted is what A now answers for cloudcore: nodes listed, nothing more.
    cc = env["kubeconfig"]
    can = lambda *a: kubectl(cc, "auth", "can-i", *a, check=False).stdout.strip()  # noqa: E731
    assert can("impersonate", "users/system:node:edge-x") == "yes"
    assert can("impersonate", "users/system:node:edge-y") == "no"
    assert can("impersonate", "users/kedge-admin") == "no"
    assert can("impersonate", "groups/system:masters") == "no"
    assert can("get", "secrets", "-A") == "no"
    assert can("list", "configmaps", "-A") == "no"
    assert can("list", "nodes") == "yes"
    # The CRDs are served by A.
    kubectl(env["admin"], "get", "crd", "devices.devices.kubeedge.io", "devicemodels.devices.kubeedge.io")

    edge_x = _join_and_run(env, "edge-x")
    edge_y = _join_and_run(env, "edge-y")  # joined to cloudcore, but not in the manifests
    wait_until(lambda: {"edge-x", "edge-y"} <= set(json.loads((env["b"] / "connected.json").read_text())["nodes"])
               if (env["b"] / "connected.json").exists() else False, 30, what="edges connected to cloudcore")

    kubectl(env["admin"], "apply", "-f", "-", input=workload("edge-x", "x") + "---" + workload("edge-y", "y"))
    want = {"default/pod/web-x", "default/configmap/cfg-x"}
    wait_until(lambda: want <= set(edge_inventory(edge_x)), 30, what="pod and configmap on edge-x")
    assert edge_get(edge_x, "default/configmap/cfg-x")["data"] == {"greeting": "hello-x"}
    assert edge_get(edge_x, "default/pod/web-x")["spec"]["nodeName"] == "edge-x"

    # edge-x registered itself on A through cloudcore (impersonating it): its Node exists there.
    def node_x() -> dict | None:
        r = kubectl(env["admin"], "get", "node", "edge-x", "-o", "json", check=False)
        return json.loads(r.stdout) if r.returncode == 0 else None

    node = wait_until(node_x, 30, what="node edge-x on A")
    assert node["metadata"]["name"] == "edge-x"

    # edge-y: cloudcore tried to act for it and A refused every such impersonation.
    def refused_for_y() -> list[dict]:
        return [r for r in audit_records(a_dir)
                if r.get("user", {}).get("username") == CC_USER and "edge-y" in r.get("requestURI", "")
                and (r.get("responseStatus") or {}).get("code") == 403]

    wait_until(refused_for_y, 30, what="refused impersonation of edge-y in A's audit log")
    records = audit_records(a_dir)
    assert not [r for r in records if (r.get("impersonatedUser") or {}).get("username") == "system:node:edge-y"]
    assert [r for r in records if (r.get("impersonatedUser") or {}).get("username") == "system:node:edge-x"
            and (r.get("responseStatus") or {}).get("code", 200) < 300]
    assert not {k for k in edge_inventory(edge_y) if "/pod/" in k or "/configmap/" in k}
    assert kubectl(env["admin"], "get", "node", "edge-y", check=False).returncode != 0
    assert env["cloudcore"].alive()

    # Listing the node and re-applying (the documented workflow when nodes join) lets cloudcore act
    # for edge-y too: its pending pod arrives without restarting anything.
    out = kedge("manifests", "--node", "edge-y", "--node", "edge-x", "--cloudcore-user", CC_USER, check=True).stdout
    kubectl(env["admin"], "apply", "-f", "-", input=out)
    assert can("impersonate", "users/system:node:edge-y") == "yes"
    wait_until(lambda: {"default/pod/web-y", "default/configmap/cfg-y"} <= set(edge_inventory(edge_y)), 30,
               what="pod and configmap on edge-y after re-applying the manifests")
    assert "default/pod/web-y" not in edge_inventory(edge_x)


def test_devices_on_the_real_cluster_reach_the_edge_and_their_reports_reach_device_status(real_cluster):
    """The devicecontroller against a real cluster (the ``kubernetes`` client backend): a Device
    applied on A reaches its edge through cloudcore's list+watch, the thermostat mapper gets
    the desired value over the edge's broker, and its reports are written to A's Device
    status by cloudcore's identity -- with only the rights the manifests grant."""
    from integration.test_devices import MapperProcess, thermostat_device, thermostat_model, twin

    env = real_cluster
    out = kedge("manifests", "--node", "edge-d", "--node", "edge-x", "--node", "edge-y", "--cloudcore-user", CC_USER,
                check=True).stdout
    kubectl(env["admin"], "apply", "-f", "-", input=out)
    edge_d = _join_and_run(env, "edge-d")
    kubectl(env["admin"], "apply", "-f", "-", input=yaml.safe_dump_all([
        thermostat_model(), thermostat_device("edge-d", "thermo-d", "21")]))
    wait_until(lambda: {"default/device/thermo-d", "default/devicemodel/thermostat"} <= set(edge_inventory(edge_d)),
               30, what="device and model on edge-d")

    def mqtt() -> str | None:
        try:
            return json.loads((edge_d / "endpoints.json").read_text()).get("mqtt")
        except (FileNotFoundError, ValueError):
            return None

    url = wait_until(mqtt, 30, what="edge-d broker endpoint")
    creds = env["root"] / "creds-thermo-d"
    kedge("device", "credentials", "--data-dir", str(env["b"]), "--device", "default/thermo-d", "--out", str(creds),
          check=True)
    mapper = MapperProcess("default/thermo-d", creds, url)
    try:
        wait_until(lambda: mapper.saw("desired", target="21"), 30, what="desired 21 at the mapper")

        def status() -> dict | None:
            r = kubectl(env["admin"], "get", "device", "thermo-d", "-o", "json", check=False)
            obj = json.loads(r.stdout) if r.returncode == 0 else {}
            return obj if twin(obj, "temperature") and (obj.get("status") or {}).get("state") == "online" else None

        obj = wait_until(status, 30, what="reported temperature and state online in A's Device status")
        assert twin(obj, "target-temperature") == "21"
        # A desired change made on A reaches the mapper through the watch (no re-list needed).
        kubectl(env["admin"], "patch", "device", "thermo-d", "--type=json", "-p",
                json.dumps([{"op": "replace", "path": "/spec/properties/0/desired/value", "value": "24"}]))
        wait_until(lambda: mapper.saw("desired", target="24"), 20, what="desired 24 at the mapper")
    finally:
        mapper.stop()
    writes = [r for r in audit_records(env["a"]) if r.get("user", {}).get("username") == CC_USER
              and (r.get("objectRef") or {}).get("resource") == "devices" and r.get("verb") == "patch"]
    assert writes and all((r.get("objectRef") or {}).get("subresource") == "status" for r in writes)
    assert all(r["responseStatus"]["code"] == 200 for r in writes)
