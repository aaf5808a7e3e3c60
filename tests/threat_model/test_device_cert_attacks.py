"""Threat: a node mints MQTT (device CA) certificates without bound, and keeps them after it is
revoked (red-team finding 4). A real cloudcore, real joined nodes, raw requests over their real
tunnels (the edge's EdgeHub), the real ``kedge node revoke``."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from kedge.cloud.devicecontroller import pki as device_pki
from kedge.edge import mqttkeys
from kedge.edge.devicetwin import crl
from kedge.pki import ca as pki
from kedge.protocol import message as m
from support.cluster import Cloud, kedge, running_cloud
from support.edge import edge_hub


async def _ask_certs(hub, csrs: dict[str, str]) -> m.Message:
    # What the red team sent: ``update x/devicecerts/x`` (the node is the tunnel's, never the message's).
    return await hub.request(hub.new_message(m.UPDATE, "x/devicecerts/x", csrs), timeout=30)


async def _device_crl(hub) -> frozenset[int]:
    reply = await hub.request(hub.new_message(m.QUERY, f"default/devicecrl/{hub.node}", None), timeout=30)
    assert reply.route.operation != m.ERROR, reply.content
    return crl.parse_crl_pem(reply.content["crl"].encode(), max_bytes=512 * 1024).revoked


def _csrs(work: Path, node: str) -> dict[str, str]:
    """Keys made and CSRs written the way an edge does it (the keys stay here)."""
    work.mkdir(mode=0o700, parents=True, exist_ok=True)
    return mqttkeys.stage_keys(work, node)


def _serials(reply: m.Message) -> set[int]:
    return {pki.load_cert_pem(reply.content[k].encode()).serial_number for k in ("serverCert", "clientCert")}


@pytest.fixture(scope="module")
def cloud(tmp_path_factory):
    with running_cloud(tmp_path_factory.mktemp("cloud")) as c:
        yield c


@pytest.mark.threat("K-DEVICE-CERT-REVOCATION")
def test_node_requesting_mqtt_certificates_in_a_loop_is_refused_after_the_burst_with_a_code(cloud: Cloud,
                                                                                          tmp_path: Path):
    assert cloud.join("minter", tmp_path / "minter").returncode == 0
    csrs = _csrs(tmp_path / "keys", "minter")  # two CSRs, reused every time

    async def main() -> list[m.Message]:
        async with edge_hub(tmp_path / "minter") as hub:
            return [await _ask_certs(hub, csrs) for _ in range(12)]

    replies = asyncio.run(main())
    issued = [r for r in replies if r.route.operation != m.ERROR]
    refused = [r.content for r in replies if r.route.operation == m.ERROR]
    assert len(issued) == 4  # limits.device_cert_pairs_per_hour
    assert refused == [{"code": "device_certs_rate_limited"}] * 8
    audited = [e for e in cloud.audit() if e["event"] == "mqtt_certs" and e["node"] == "minter"]
    assert [e["result"] for e in audited] == ["accepted"] * 4 + ["refused"] * 8
    assert {e.get("code") for e in audited if e["result"] == "refused"} == {"device_certs_rate_limited"}
    # The record holds the four pairs; all but the last two are superseded (revoked).
    record = json.loads((cloud.dir / "pki" / device_pki.DEVICE_CERTS).read_text())
    mine = {int(s, 16): e for s, e in record.items() if e.get("node") == "minter"}
    assert len(mine) == 8
    valid = {s for s, e in mine.items() if e["revoked_at"] is None}
    assert valid == _serials(issued[-1]) | _serials(issued[-2])


@pytest.mark.threat("K-DEVICE-CERT-REVOCATION")
def test_node_revocation_puts_the_nodes_mqtt_certificates_in_the_device_crl(cloud: Cloud, tmp_path: Path):
    assert cloud.join("doomed", tmp_path / "doomed").returncode == 0
    assert cloud.join("witness", tmp_path / "witness").returncode == 0

    async def issue() -> tuple[set[int], set[int], frozenset[int]]:
        async with edge_hub(tmp_path / "doomed") as doomed, edge_hub(tmp_path / "witness") as witness:
            mine = await _ask_certs(doomed, _csrs(tmp_path / "d", "doomed"))
            theirs = await _ask_certs(witness, _csrs(tmp_path / "w", "witness"))
            assert mine.route.operation != m.ERROR and theirs.route.operation != m.ERROR
            return _serials(mine), _serials(theirs), await _device_crl(witness)

    mine, theirs, before = asyncio.run(issue())
    assert not before & mine
    kedge("node", "revoke", "--data-dir", str(cloud.dir), "--node", "doomed", check=True)

    async def after() -> frozenset[int]:
        async with edge_hub(tmp_path / "witness") as witness:  # what every other edge's broker gets
            return await _device_crl(witness)

    listed = asyncio.run(after())
    assert mine <= listed, f"MQTT certificates of the revoked node missing from the device CRL: {mine - listed}"
    assert not listed & theirs
    [event] = [e for e in cloud.audit() if e["event"] == "node_revoked" and e["node"] == "doomed"]
    assert event["mqtt_certificates"] == 2
