"""In-process requests to the embedded API server (``kedge.apiserver.local``): the identity is
the certificate's, authorization and audit are the network path's, revocation still bites,
and a watch that falls behind ends instead of buffering without bound. Real API server
(listening on loopback), real SQLite, real certificates."""

from __future__ import annotations

import asyncio
import datetime as dt
import json

import pytest
from cryptography.hazmat.primitives import serialization

from kedge._internal import fsutil
from kedge.apiserver import watch as watch_mod
from kedge.apiserver.local import LocalClient, WatchEnded, identity_of
from kedge.apiserver.server import API_AUDIT_LOG, start_apiserver
from kedge.cloud.init import init_cloud
from kedge.pki import ca as pki

DEVICES = "/apis/devices.kubeedge.io/v1beta1"


@pytest.fixture
def cloud(tmp_path):
    return init_cloud(tmp_path / "cloud", api_port=0)


def run_with_server(d, body):
    async def go():
        server, store, _ = await start_apiserver(d.root, port=0)
        try:
            return await body(server)
        finally:
            await server.stop()
            store.close()

    return asyncio.run(go())


def audit_records(d):
    return [json.loads(x) for x in (d.root / API_AUDIT_LOG).read_text().splitlines()]


def device(name: str) -> dict:
    return {"apiVersion": "devices.kubeedge.io/v1beta1", "kind": "Device",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"deviceModelRef": {"name": "m"}, "nodeName": "edge-1"}}


def test_identity_is_the_certificates(cloud):
    user, serial = identity_of(cloud.cloudcore_crt)
    assert user.name == "system:kedge:cloudcore"
    assert user.groups == ("system:kedge-cloudcore", "system:authenticated")
    assert serial == pki.load_cert_file(cloud.cloudcore_crt).serial_number


def test_requests_are_authorized_as_that_identity_and_audited(cloud):
    async def body(server):
        admin = LocalClient.for_certificate(server, cloud.admin_crt)
        cc = LocalClient.for_certificate(server, cloud.cloudcore_crt)
        created, _ = await admin.request("POST", f"{DEVICES}/namespaces/default/devices", device("d1"))
        listed, data = await cc.request("GET", f"{DEVICES}/devices")
        patched, _ = await cc.request("PATCH", f"{DEVICES}/namespaces/default/devices/d1/status",
                                      {"status": {"state": "online"}}, content_type="application/merge-patch+json")
        secrets, _ = await cc.request("GET", "/api/v1/secrets")  # cloudcore's own role grants no secrets
        spec, _ = await cc.request("PATCH", f"{DEVICES}/namespaces/default/devices/d1",
                                   {"spec": {"nodeName": "edge-2"}}, content_type="application/merge-patch+json")
        _, got = await admin.request("GET", f"{DEVICES}/namespaces/default/devices/d1")
        return created, listed, json.loads(data), patched, secrets, spec, json.loads(got)

    created, listed, data, patched, secrets, spec, got = run_with_server(cloud, body)
    assert (created, listed, patched) == (201, 200, 200)
    assert [o["metadata"]["name"] for o in data["items"]] == ["d1"]
    assert secrets == 403
    assert spec == 403  # status only: cloudcore may not move a device to another node
    assert got["status"]["state"] == "online" and got["spec"]["nodeName"] == "edge-1"
    mine = [r for r in audit_records(cloud) if r["user"]["username"] == "system:kedge:cloudcore"]
    assert [(r["verb"], r["responseStatus"]["code"]) for r in mine] == [
        ("list", 200), ("patch", 200), ("list", 403), ("patch", 403)]
    assert all(r["userAgent"] == "kedge-cloudcore/in-process" and r["sourceIPs"] == [] for r in mine)
    assert mine[1]["objectRef"]["subresource"] == "status"


def test_a_revoked_certificate_gets_401(cloud):
    serial = pki.load_cert_file(cloud.cloudcore_crt).serial_number
    ca_key, ca_cert = pki.load_key_file(cloud.ca_key), pki.load_cert_file(cloud.ca_crt)

    async def body(server):
        cc = LocalClient.for_certificate(server, cloud.cloudcore_crt)
        before, _ = await cc.request("GET", f"{DEVICES}/devices")
        now = dt.datetime.now(dt.timezone.utc)
        crl = pki.build_crl(ca_key, ca_cert, [(serial, now)], now=now)
        fsutil.atomic_write(cloud.crl, crl.public_bytes(serialization.Encoding.PEM))
        after, _ = await cc.request("GET", f"{DEVICES}/devices")
        return before, after

    assert run_with_server(cloud, body) == (200, 401)
    assert audit_records(cloud)[-1]["responseStatus"]["code"] == 401


def test_watch_sees_changes_and_ends_when_it_falls_behind(cloud, monkeypatch):
    async def body(server):
        admin = LocalClient.for_certificate(server, cloud.admin_crt)
        _, data = await admin.request("GET", f"{DEVICES}/devices")
        rv = json.loads(data)["metadata"]["resourceVersion"]
        events = admin.watch(f"{DEVICES}/devices?watch=1&resourceVersion={rv}")
        await admin.request("POST", f"{DEVICES}/namespaces/default/devices", device("d1"))
        first = await asyncio.wait_for(events.__anext__(), 5)
        # Nobody reads while more changes than the backlog allows arrive: the watch is dropped.
        monkeypatch.setattr(watch_mod, "MAX_WATCH_BACKLOG", 3)
        for i in range(6):
            await admin.request("POST", f"{DEVICES}/namespaces/default/devices", device(f"e{i}"))
        with pytest.raises(WatchEnded):
            async for _ in events:
                pass
        refused = admin.watch("/api/v1/namespaces/default/configmaps?watch=1&resourceVersion=-1")
        with pytest.raises(Exception) as exc_info:
            await refused.__anext__()
        return first, exc_info.value

    first, refused = run_with_server(cloud, body)
    assert first["type"] == "ADDED" and first["object"]["metadata"]["name"] == "d1"
    assert getattr(refused, "code", "") == "http_400"
