"""Threat: one object the tunnel cannot carry stops a node's sync forever (red-team finding 6).

A pod named ``p\\n`` passed the API server's ``re.match(r"^...$")`` name check; the tunnel
then refused its resource string, the node's resync raised, and the resync retried the
same failure forever: no other pod ever reached that node. Driven here against a real
cloudcore and a real edgecore: the API server must refuse the name as Kubernetes does,
and -- independently of that check -- objects the tunnel refuses (a bad name written to the
store directly, as a restored backup or an older laxer version could have; a configmap over
the frame limit) are skipped, logged and audited once, while the node keeps receiving the
rest.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from support.api import scrape, admin_api
from support.cluster import Cloud, EdgeProcess, remove_pods, running_cloud, wait_until
from support.edge import edge_inventory

from kedge.store.sealing import Sealer
from kedge.store.sqlite import Store

NODE = "edge-bad"
BAD = "p\n"


def pod(name: str, **spec) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default"},
            "spec": {"nodeName": NODE, "containers": [{"name": "c", "image": "example/web",
                                                        "command": ["sleep", "600"]}], **spec}}


inventory = edge_inventory


def refusals(cloud: Cloud) -> list[dict]:
    return [e for e in cloud.audit() if e.get("event") == "sync_refused"]


@pytest.mark.threat("K-BAD-IDENTIFIER")
def test_api_server_refuses_a_pod_name_with_a_trailing_newline(tmp_path: Path):
    with running_cloud(tmp_path) as cloud:
        status, err = admin_api(cloud).request("POST", "/api/v1/namespaces/default/pods", pod(BAD))
    assert status == 422, err
    assert err["reason"] == "Invalid" and "metadata.name: Invalid value" in err["message"]


@pytest.mark.threat("K-BAD-IDENTIFIER")
def test_objects_the_tunnel_refuses_do_not_stop_the_nodes_sync(tmp_path: Path):
    cloud = Cloud(tmp_path, args=("--metrics-address", "127.0.0.1:0"))
    cloud.start()
    edge_dir = tmp_path / NODE
    edge = None
    try:
        assert cloud.join(NODE, edge_dir).returncode == 0
        api = admin_api(cloud)
        # A configmap the API server accepts (under its 3 MiB body limit) but no 1 MiB tunnel
        # frame can carry, referenced by a pod of the node.
        big = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "big"},
               "data": {"blob": "x" * (1536 * 1024)}}
        assert api.request("POST", "/api/v1/namespaces/default/configmaps", big)[0] == 201
        assert api.request("POST", "/api/v1/namespaces/default/pods", pod("uses-big", volumes=[
            {"name": "v", "configMap": {"name": "big"}}]))[0] == 201
        assert api.request("POST", "/api/v1/namespaces/default/pods", pod("before"))[0] == 201
        # A pod whose name the API server refuses, written to its store directly, cloudcore stopped.
        cloud.stop()
        store = Store(cloud.dir / "api.db", sealer=Sealer.load_or_create(cloud.dir / "pki" / "encryption.json"))
        try:
            bad = pod(BAD)
            bad["metadata"].update(uid="0b4d0b4d-0000-4000-8000-000000000001",
                                   creationTimestamp=dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
            store.create("/pods", "default", BAD, bad, index=NODE)
        finally:
            store.close()
        cloud.start()
        api = admin_api(cloud)
        # The edge connects: its first resync meets both objects the tunnel cannot carry.
        edge = EdgeProcess(edge_dir, tmp_path / "edge.log")
        wait_until(lambda: NODE in cloud.connected(), 30, what="edge connected")
        wait_until(lambda: "default/pod/before" in inventory(edge_dir), 30, what="'before' on the edge")
        # Positive signal: a pod created afterwards reaches the edge and is acked there.
        assert api.request("POST", "/api/v1/namespaces/default/pods", pod("after"))[0] == 201
        wait_until(lambda: "default/pod/after" in inventory(edge_dir), 30, what="'after' on the edge")
        held = inventory(edge_dir)
        assert "default/configmap/big" not in held and f"default/pod/{BAD}" not in held
        # Each refusal is logged with its code and audited once -- not retried every resync pass.
        wait_until(lambda: len(refusals(cloud)) >= 2, 15, what="refusals audited")

        def passes() -> float:
            return scrape(cloud.endpoints()["metrics"])["kedge_cloud_sync_passes"][
                ("kedge_cloud_sync_passes_total", ())]

        # Positive signal: two more periodic full passes have finished since (every 5 s).
        done = passes()
        wait_until(lambda: passes() >= done + 2, 30, what="two more periodic sync passes")
        seen = refusals(cloud)
        assert sorted(e["code"] for e in seen) == ["bad_resource", "frame_too_large"], seen
        assert {e["resource"] for e in seen} == {f"default/pod/{BAD}", "default/configmap/big"}
        log = (tmp_path / "cloudcore.log").read_text()
        assert "not sent: bad_resource" in log and "not sent: frame_too_large" in log
        assert log.count("not sent: bad_resource") == 1
        # Peers get codes, not exception text: nothing of this reached the edge as an error.
        assert "Traceback" not in log
    finally:
        if edge is not None:
            edge.stop()
            remove_pods(edge_dir, NODE)
        cloud.stop()
