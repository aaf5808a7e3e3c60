"""The real kubectl against a real `kedge apiserver` process on 127.0.0.1 (TLS, x509 admin cert)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from support.cluster import stop_process

KUBECTL = shutil.which("kubectl") or "/usr/bin/kubectl"
REPO = Path(__file__).resolve().parents[2]


def _kedge(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kedge", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=60, **kw)


def wait_for_api(data_dir: Path, proc: subprocess.Popen, timeout: float = 20.0) -> str:
    deadline = time.monotonic() + timeout
    ep = data_dir / "endpoints.json"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"apiserver exited: {proc.stderr.read() if proc.stderr else ''}")
        if ep.exists():
            try:
                api = json.loads(ep.read_text()).get("api")
            except ValueError:
                api = None
            if api:
                return api
        time.sleep(0.05)
    raise AssertionError("apiserver did not publish its endpoint")


def start_apiserver(data_dir: Path, *extra: str) -> tuple[subprocess.Popen, str]:
    (data_dir / "endpoints.json").unlink(missing_ok=True)
    proc = subprocess.Popen([sys.executable, "-m", "kedge", "apiserver", "--data-dir", str(data_dir), *extra],
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    return proc, wait_for_api(data_dir, proc)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    root = tmp_path_factory.mktemp("kubectl")
    data = root / "cloud"
    r = _kedge("init", "--data-dir", str(data), "--api-port", "0")
    assert r.returncode == 0, r.stderr
    proc, url = start_apiserver(data)
    env = dict(os.environ, KUBECONFIG=str(data / "admin.kubeconfig"), HOME=str(root))
    yield {"data": data, "url": url, "env": env, "root": root, "proc": proc}
    stop_process(proc)


def kubectl(cluster, *args: str, input: str | None = None, check: bool = True, timeout: float = 30):
    r = subprocess.run([KUBECTL, "--cache-dir", str(cluster["root"] / "cache"), *args], env=cluster["env"],
                       capture_output=True, text=True, input=input, timeout=timeout)
    if check:
        assert r.returncode == 0, f"kubectl {' '.join(args)} failed: {r.stderr}"
    return r


def write(cluster, name: str, text: str) -> str:
    p = cluster["root"] / name
    p.write_text(text)
    return str(p)


def test_kubeconfig_points_at_the_listening_server(cluster):
    assert f"server: {cluster['url']}" in (cluster["data"] / "admin.kubeconfig").read_text()
    assert oct((cluster["data"] / "admin.kubeconfig").stat().st_mode & 0o777) == "0o600"


def test_version_and_discovery(cluster):
    out = kubectl(cluster, "version", "-o", "json").stdout
    assert json.loads(out)["serverVersion"]["major"] == "1"
    res = kubectl(cluster, "api-resources", "-o", "name").stdout.split()
    for name in ("pods", "nodes", "configmaps", "secrets", "leases.coordination.k8s.io",
                 "roles.rbac.authorization.k8s.io", "customresourcedefinitions.apiextensions.k8s.io"):
        assert name in res


def test_get_nodes_and_pods_when_empty(cluster):
    assert kubectl(cluster, "get", "nodes").stderr.strip() == "No resources found"
    assert "No resources found in default namespace" in kubectl(cluster, "get", "pods").stderr
    ns = kubectl(cluster, "get", "ns", "-o", "name").stdout.split()
    assert {"namespace/default", "namespace/kube-system", "namespace/kube-node-lease"} <= set(ns)


MANIFEST = """\
apiVersion: v1
kind: ConfigMap
metadata: {name: app-config}
data: {mode: "VALUE"}
---
apiVersion: v1
kind: Secret
metadata: {name: app-secret}
stringData: {password: "VALUE"}
---
apiVersion: v1
kind: Pod
metadata: {name: app, labels: {app: demo}}
spec:
  containers:
  - name: main
    image: "registry.example/app:VALUE"
    env: [{name: MODE, valueFrom: {configMapKeyRef: {name: app-config, key: mode}}}]
"""


def test_apply_creates_then_updates_configmap_secret_pod(cluster):
    path = write(cluster, "app.yaml", MANIFEST.replace("VALUE", "one"))
    out = kubectl(cluster, "apply", "-f", path).stdout
    assert "configmap/app-config created" in out and "secret/app-secret created" in out and "pod/app created" in out
    rv1 = kubectl(cluster, "get", "cm", "app-config", "-o", "jsonpath={.metadata.resourceVersion}").stdout
    path = write(cluster, "app.yaml", MANIFEST.replace("VALUE", "two"))
    out = kubectl(cluster, "apply", "-f", path).stdout
    assert "configmap/app-config configured" in out and "pod/app configured" in out
    cm = json.loads(kubectl(cluster, "get", "cm", "app-config", "-o", "json").stdout)
    assert cm["data"] == {"mode": "two"} and int(cm["metadata"]["resourceVersion"]) > int(rv1)
    secret = json.loads(kubectl(cluster, "get", "secret", "app-secret", "-o", "json").stdout)
    assert secret["data"]["password"] == "dHdv"  # base64("two")
    pod = json.loads(kubectl(cluster, "get", "pod", "app", "-o", "json").stdout)
    assert pod["spec"]["containers"][0]["image"] == "registry.example/app:two"
    assert pod["metadata"]["generation"] == 2 and pod["status"]["phase"] == "Pending"
    assert "unchanged" in kubectl(cluster, "apply", "-f", path).stdout


CRD = """\
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: gadgets.example.com}
spec:
  group: example.com
  scope: Namespaced
  names: {plural: gadgets, singular: gadget, kind: Gadget, shortNames: [gd]}
  versions:
  - name: v1
    served: true
    storage: true
    schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}
"""

GADGET = """\
apiVersion: example.com/v1
kind: Gadget
metadata: {name: g1}
spec: {size: SIZE, color: blue}
"""


def test_apply_crd_and_instance_then_delete(cluster):
    kubectl(cluster, "apply", "-f", write(cluster, "crd.yaml", CRD))
    assert "gadget.example.com/g1 created" in kubectl(
        cluster, "apply", "-f", write(cluster, "g.yaml", GADGET.replace("SIZE", "1"))).stdout
    assert "configured" in kubectl(cluster, "apply", "-f", write(cluster, "g.yaml", GADGET.replace("SIZE", "2"))).stdout
    g = json.loads(kubectl(cluster, "get", "gd", "g1", "-o", "json").stdout)
    assert g["spec"] == {"size": 2, "color": "blue"} and g["apiVersion"] == "example.com/v1"
    kubectl(cluster, "delete", "-f", str(cluster["root"] / "g.yaml"))
    r = kubectl(cluster, "get", "gadget", "g1", check=False)
    assert r.returncode != 0 and "NotFound" in r.stderr
    kubectl(cluster, "delete", "crd", "gadgets.example.com")


def test_json_round_trip_through_replace(cluster):
    kubectl(cluster, "create", "configmap", "rt", "--from-literal=k=v")  # protobuf body from kubectl
    obj = json.loads(kubectl(cluster, "get", "cm", "rt", "-o", "json").stdout)
    obj["data"]["k"] = "w"
    kubectl(cluster, "replace", "-f", "-", input=json.dumps(obj))
    again = json.loads(kubectl(cluster, "get", "cm", "rt", "-o", "json").stdout)
    assert again["data"] == {"k": "w"} and again["metadata"]["uid"] == obj["metadata"]["uid"]
    # replaying the stale copy is a conflict (optimistic concurrency)
    r = kubectl(cluster, "replace", "-f", "-", input=json.dumps(obj), check=False)
    assert r.returncode != 0 and "Conflict" in r.stderr


def test_get_watch_streams_a_change(cluster):
    kubectl(cluster, "create", "configmap", "watched", "--from-literal=a=1")
    proc = subprocess.Popen([KUBECTL, "--cache-dir", str(cluster["root"] / "cache"), "get", "cm", "watched", "-w",
                             "-o", "jsonpath={.data.a}{\"\\n\"}"], env=cluster["env"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "1"
        kubectl(cluster, "patch", "cm", "watched", "--type=merge", "-p", '{"data":{"a":"2"}}')
        deadline = time.monotonic() + 10
        line = ""
        while time.monotonic() < deadline and line.strip() != "2":
            line = proc.stdout.readline()
        assert line.strip() == "2"
    finally:
        proc.kill()
        proc.wait(5)


def test_auth_can_i(cluster):
    assert kubectl(cluster, "auth", "can-i", "create", "pods").stdout.strip() == "yes"
    r = kubectl(cluster, "auth", "can-i", "get", "secrets", "--as", "nobody", check=False)
    assert r.stdout.strip() == "no" and r.returncode == 1
    r = kubectl(cluster, "auth", "can-i", "list", "pods", "--as", "system:node:n1", "--as-group", "system:nodes",
                check=False)
    assert r.stdout.strip().startswith("no")
    who = kubectl(cluster, "auth", "whoami", "-o", "json").stdout
    assert json.loads(who)["status"]["userInfo"]["username"] == "kedge-admin"


def test_delete_pod_and_describe(cluster):
    assert "Image:" in kubectl(cluster, "describe", "pod", "app").stdout
    kubectl(cluster, "delete", "pod", "app", "--wait=true", timeout=20)
    assert "NotFound" in kubectl(cluster, "get", "pod", "app", check=False).stderr


def test_errors_are_status_objects(cluster):
    r = kubectl(cluster, "get", "cm", "does-not-exist", check=False)
    assert 'configmaps "does-not-exist" not found' in r.stderr
    r = kubectl(cluster, "create", "-f", "-", check=False,
                input='{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"Bad_Name"}}')
    assert r.returncode != 0 and 'ConfigMap "Bad_Name" is invalid' in r.stderr and "metadata.name" in r.stderr


def test_service_account_token_authenticates_and_dies_with_its_account(cluster):
    kubectl(cluster, "create", "serviceaccount", "bot")
    token = kubectl(cluster, "create", "token", "bot", "--duration=15m").stdout.strip()
    anon = ["--kubeconfig", "/dev/null", "--server", cluster["url"], "--certificate-authority",
            str(cluster["data"] / "pki" / "ca.crt"), "--token", token]
    r = kubectl(cluster, *anon, "get", "pods", check=False)
    assert 'User "system:serviceaccount:default:bot" cannot list resource "pods"' in r.stderr
    kubectl(cluster, "delete", "serviceaccount", "bot")
    r = kubectl(cluster, *anon, "get", "pods", check=False)
    assert r.returncode != 0 and "Unauthorized" in r.stderr
