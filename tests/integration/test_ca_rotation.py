"""Cluster CA rotation without downtime (issue 16 item 4): real cloudcore, two real edgecore
processes, a pod running, real kubectl throughout `kedge ca rotate --renew-now` and `kedge ca finish`."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from kedge.pki import ca as pki
from support.cluster import Cloud, EdgeProcess, kedge, pod_processes, pods_root, remove_pods, running_cloud, wait_until

POD = """
apiVersion: v1
kind: Pod
metadata: {name: steady, namespace: default}
spec:
  nodeName: edge-1
  containers:
  - name: c
    image: example/steady
    command: ["sleep", "600"]
"""


def kubectl(cloud: Cloud, *args: str, input: str | None = None) -> str:
    env = dict(os.environ, KUBECONFIG=str(cloud.dir / "admin.kubeconfig"))
    r = subprocess.run(["kubectl", *args], input=input, capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 0, f"kubectl {' '.join(args)}: {r.stderr}"
    return r.stdout


def issuer_cn(path: Path) -> str:
    return pki.load_cert_file(path).issuer.rfc4514_string()


def ca_status(cloud: Cloud) -> dict:
    return json.loads(kedge("ca", "status", "--data-dir", str(cloud.dir), "--format", "json", check=True).stdout)


def accepted_connects(cloud: Cloud, node: str, after: int) -> int:
    return sum(1 for e in cloud.audit()[after:]
               if e["event"] == "connect" and e.get("node") == node and e.get("result") == "accepted")


@pytest.fixture
def cluster(tmp_path: Path):
    with running_cloud(tmp_path) as cloud:
        edges = {}
        try:
            for node in ("edge-1", "edge-2"):
                assert cloud.join(node, tmp_path / node).returncode == 0
                edges[node] = EdgeProcess(tmp_path / node, tmp_path / f"{node}.log")
            wait_until(lambda: {"edge-1", "edge-2"} <= cloud.connected(), what="edges connected")
            yield cloud, tmp_path
        finally:
            for node, e in edges.items():
                e.stop()
                remove_pods(tmp_path / node, node)


def test_ca_rotation_with_renew_now_and_finish_keeps_edges_pods_and_kubectl_working(cluster):
    cloud, root = cluster
    status = ca_status(cloud)
    assert status["phase"] == "none" and status["previous"] is None
    old_fp = status["current"]["fingerprint"]
    kubectl(cloud, "apply", "-f", "-", input=POD)
    proot = pods_root(root / "edge-1", "edge-1")

    def pod_pids() -> list[int]:
        return [p for p in pod_processes(proot) if "_steady_" in os.readlink(f"/proc/{p}/cwd")
                and Path(f"/proc/{p}/cmdline").read_bytes().startswith(b"sleep")]

    wait_until(lambda: len(pod_pids()) == 1, timeout=30, what="pod running on edge-1")
    pid = pod_pids()
    for node in ("edge-1", "edge-2"):
        assert issuer_cn(root / node / "pki" / "node.crt") == "CN=kedge-ca"
    audit_mark = len(cloud.audit())

    # -- rotate: both CAs trusted, the new one issues; edges get the bundle and renew at once.
    r = kedge("ca", "rotate", "--renew-now", "--data-dir", str(cloud.dir))
    assert r.returncode == 0, r.stderr
    kubectl(cloud, "get", "nodes")
    assert issuer_cn(cloud.dir / "pki" / "admin.crt") == "CN=kedge-ca-2"
    status = ca_status(cloud)
    assert status["phase"] == "rotating" and status["previous"]["fingerprint"] == old_fp
    new_fp = status["current"]["fingerprint"]
    for node in ("edge-1", "edge-2"):
        wait_until(lambda n=node: issuer_cn(root / n / "pki" / "node.crt") == "CN=kedge-ca-2", timeout=30,
                   what=f"{node} renewed onto the new CA")
        edge_bundle = pki.load_cert_bundle_file(root / node / "pki" / "ca.crt")
        assert {pki.ca_fingerprint(c) for c in edge_bundle} == {old_fp, new_fp}
    wait_until(lambda: ca_status(cloud)["nodes_on_previous_ca"] == [], timeout=10, what="status: all nodes moved")
    wait_until(lambda: {"edge-1", "edge-2"} <= cloud.connected(), what="edges reconnected")
    kubectl(cloud, "get", "pods")

    # -- finish: the old CA leaves every trust store.
    r = kedge("ca", "finish", "--data-dir", str(cloud.dir))
    assert r.returncode == 0, r.stderr
    kubectl(cloud, "get", "nodes")
    assert ca_status(cloud)["phase"] == "finished"
    assert [pki.ca_fingerprint(c) for c in pki.load_cert_bundle_file(cloud.dir / "pki" / "ca.crt")] == [new_fp]
    assert issuer_cn(cloud.dir / "pki" / "hub.crt") == "CN=kedge-ca-2"
    for node in ("edge-1", "edge-2"):
        wait_until(lambda n=node: [pki.ca_fingerprint(c) for c in pki.load_cert_bundle_file(
            root / n / "pki" / "ca.crt")] == [new_fp], timeout=20, what=f"{node} pins the new CA alone")
    assert {"edge-1", "edge-2"} <= cloud.connected()

    # Each edge reconnected exactly once (with its new certificate), the pod never restarted.
    for node in ("edge-1", "edge-2"):
        assert accepted_connects(cloud, node, audit_mark) == 1, node
    assert pod_pids() == pid
    assert "steady" in kubectl(cloud, "get", "pods", "-o", "name")
    # A later join pins the new CA (token create prints its hash) and works.
    assert cloud.join("edge-3", root / "edge-3").returncode == 0
    assert issuer_cn(root / "edge-3" / "pki" / "node.crt") == "CN=kedge-ca-2"


def test_join_during_rotation_pins_the_bundle_and_finish_lists_nodes_left_behind(tmp_path: Path):
    with running_cloud(tmp_path) as cloud:
        assert cloud.join("stayer", tmp_path / "stayer").returncode == 0
        old_token = cloud.token("late")  # pins the old CA
        assert kedge("ca", "rotate", "--data-dir", str(cloud.dir)).returncode == 0
        again = kedge("ca", "rotate", "--data-dir", str(cloud.dir))
        assert again.returncode == 1 and "rotation_in_progress" in again.stderr
        # Joining during the rotation with a token printed now (the new CA's pin) or before (the old
        # CA's): either way the edge pins both, as the cross-certificates vouch for the other.
        for node, token in (("joiner", None), ("late", old_token)):
            r = cloud.join(node, tmp_path / node, token=token)
            assert r.returncode == 0, r.stderr
            assert len(pki.load_cert_bundle_file(tmp_path / node / "pki" / "ca.crt")) == 2
            assert issuer_cn(tmp_path / node / "pki" / "node.crt") == "CN=kedge-ca-2"
        # The node that joined before and never renewed keeps finish from dropping its CA.
        r = kedge("ca", "finish", "--data-dir", str(cloud.dir))
        assert r.returncode == 1 and "stayer" in r.stderr and "joiner" not in r.stderr
        assert ca_status(cloud)["nodes_on_previous_ca"] == ["stayer"]
        assert kedge("node", "revoke", "--data-dir", str(cloud.dir), "--node", "stayer").returncode == 0
        assert kedge("ca", "finish", "--data-dir", str(cloud.dir)).returncode == 0
        assert not (cloud.dir / "pki" / "ca-cross.crt").exists()
        assert kedge("ca", "finish", "--data-dir", str(cloud.dir)).returncode == 1  # nothing to finish
