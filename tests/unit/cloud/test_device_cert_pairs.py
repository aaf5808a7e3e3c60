"""A node's MQTT (device CA) certificate pairs are bounded, superseded and revoked with the node
(red-team finding 4): the pure decisions on the record, then issue_broker_certs and
revoke_node_certs on a real cloud pki dir."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from kedge._internal import fsutil
from kedge.cloud.devicecontroller import pki as device_pki
from kedge.edge import mqttkeys
from kedge.edge.broker import admin_username
from kedge.edge.devicetwin import crl
from kedge.errors import RateLimited
from kedge.limits import DEFAULT, Limits
from kedge.pki import ca as pki

NOW = dt.datetime(2026, 6, 1, 12, 0, 0, tzinfo=dt.timezone.utc)
MIN = dt.timedelta(minutes=1)
HOUR = dt.timedelta(hours=1)
DAY = dt.timedelta(days=1)


def pair(node: str, at: dt.datetime, serials: tuple[str, str], *, revoked: str | None = None,
         reason: str | None = None, validity: dt.timedelta = 90 * DAY) -> dict[str, dict]:
    out = {}
    for serial, cn in zip(serials, (f"mqtt-broker:{node}", admin_username(node)), strict=True):
        out[serial] = {"cn": cn, "node": node, "issued_at": at.isoformat(), "not_after": (at + validity).isoformat(),
                       "revoked_at": revoked}
        if reason:
            out[serial]["reason"] = reason
    return out


def refusal(record: dict, node: str = "edge-1", *, now: dt.datetime = NOW, per_hour: int = 4, per_node: int = 8,
            max_records: int = 1000) -> str | None:
    return device_pki.pair_refusal(record, node, now=now, per_hour=per_hour, per_node=per_node,
                                   max_records=max_records)


# -- decisions (pure) --------------------------------------------------------------------------


def test_a_burst_of_pairs_then_none_until_the_hour_has_passed():
    record: dict = {}
    for i in range(4):
        assert refusal(record, now=NOW + i * MIN) is None
        record.update(pair("edge-1", NOW + i * MIN, (f"a{i}", f"b{i}")))
    assert refusal(record, now=NOW + 5 * MIN) == "device_certs_rate_limited"
    assert refusal(record, "edge-2", now=NOW + 5 * MIN) is None  # other nodes are not affected
    assert refusal(record, now=NOW + HOUR + MIN) is None  # the first one left the window


def test_unexpired_pairs_on_record_are_capped_per_node_but_a_node_revocation_starts_afresh():
    record: dict = {}
    for i in range(8):
        record.update(pair("edge-1", NOW - (i + 2) * HOUR, (f"a{i}", f"b{i}"), revoked=NOW.isoformat(),
                           reason=device_pki.SUPERSEDED))
    assert refusal(record) == "device_certs_exhausted"
    assert refusal(record, now=NOW + 91 * DAY) is None  # expired ones do not count
    for entry in record.values():
        entry["reason"] = device_pki.NODE_REVOKED
    assert refusal(record) is None


def test_the_whole_record_is_capped():
    record = pair("edge-9", NOW - DAY, ("a", "b"))
    assert refusal(record, max_records=3) == "device_ca_full"
    assert refusal(record, max_records=4) is None


def test_a_new_pair_supersedes_every_older_pair_but_the_one_before_it():
    record: dict = {}
    record.update(pair("edge-1", NOW - 3 * DAY, ("a1", "b1")))
    record.update(pair("edge-1", NOW - 2 * DAY, ("a2", "b2")))
    record.update(pair("edge-1", NOW - DAY, ("a3", "b3")))  # what the broker may still run with
    record.update(pair("edge-2", NOW - 3 * DAY, ("c1", "d1")))
    record.update(pair("edge-1", NOW, ("a4", "b4")))
    assert sorted(device_pki.supersede(record, "edge-1", {"a4", "b4"}, now=NOW)) == ["a1", "a2", "b1", "b2"]
    assert {s for s, e in record.items() if e["revoked_at"]} == {"a1", "a2", "b1", "b2"}
    assert record["a1"]["reason"] == device_pki.SUPERSEDED


def test_entries_recorded_before_they_named_their_node_are_matched_by_cn_and_count_as_oldest():
    legacy = {"l1": {"cn": "mqtt-broker:edge-1", "not_after": (NOW + 80 * DAY).isoformat(), "revoked_at": None},
              "l2": {"cn": admin_username("edge-1"), "not_after": (NOW + 80 * DAY).isoformat(), "revoked_at": None},
              "dv": {"cn": "device:default/edge-1", "not_after": (NOW + 80 * DAY).isoformat(), "revoked_at": None}}
    record = dict(legacy)
    record.update(pair("edge-1", NOW - DAY, ("a1", "b1")))
    record.update(pair("edge-1", NOW, ("a2", "b2")))
    assert sorted(device_pki.supersede(record, "edge-1", {"a2", "b2"}, now=NOW)) == ["l1", "l2"]
    assert record["dv"]["revoked_at"] is None


# -- issuing and revoking on a real record ----------------------------------------------------


@pytest.fixture
def cloud(tmp_path: Path) -> Path:
    d = tmp_path / "cloud"
    fsutil.make_private_dir(d / "pki")
    return d


def issue(cloud: Path, tmp: Path, node: str = "edge-1", *, now: dt.datetime = NOW,
          limits: Limits = DEFAULT) -> dict[str, str]:
    csrs = mqttkeys.stage_keys(tmp, node)
    return device_pki.issue_broker_certs(cloud, node, csrs["serverCsr"].encode(), csrs["clientCsr"].encode(),
                                         now=now, limits=limits)


def serials(bundle: dict[str, str]) -> set[int]:
    return {pki.load_cert_pem(bundle[k].encode()).serial_number for k in ("serverCert", "clientCert")}


def revoked_in(bundle_or_pem: dict[str, str] | str) -> frozenset[int]:
    pem = bundle_or_pem["crl"] if isinstance(bundle_or_pem, dict) else bundle_or_pem
    return crl.parse_crl_pem(pem.encode(), max_bytes=512 * 1024).revoked


def test_a_node_asking_in_a_loop_is_refused_after_the_burst_with_a_code(cloud, tmp_path):
    limits = Limits(device_cert_pairs_per_hour=3)
    for i in range(3):
        issue(cloud, tmp_path, now=NOW + i * MIN, limits=limits)
    with pytest.raises(RateLimited) as exc:
        issue(cloud, tmp_path, now=NOW + 3 * MIN, limits=limits)
    assert exc.value.code == "device_certs_rate_limited"
    assert len(json.loads((cloud / "pki" / device_pki.DEVICE_CERTS).read_text())) == 6  # nothing recorded


def test_each_bundle_revokes_the_pair_before_the_previous_one_and_keeps_the_installed_one(cloud, tmp_path):
    first = issue(cloud, tmp_path, now=NOW)
    second = issue(cloud, tmp_path, now=NOW + MIN)
    assert revoked_in(second) == frozenset()  # the first may be what the broker runs with
    third = issue(cloud, tmp_path, now=NOW + 2 * MIN)
    assert revoked_in(third) == serials(first)
    assert not revoked_in(third) & (serials(second) | serials(third))


def test_node_revocation_revokes_its_mqtt_certificates_only(cloud, tmp_path):
    mine = issue(cloud, tmp_path, now=NOW)
    mine2 = issue(cloud, tmp_path, now=NOW + MIN)
    other = issue(cloud, tmp_path, "edge-2", now=NOW)
    device_pki.issue_device_credentials(cloud, "default", "edge-1", now=NOW)  # a device, not the node
    got = device_pki.revoke_node_certs(cloud, "edge-1", now=NOW + 2 * MIN)
    assert set(got) == serials(mine) | serials(mine2)
    listed = revoked_in(device_pki.device_crl_pem(cloud, now=NOW + 3 * MIN, lifetime=DAY))
    assert listed == serials(mine) | serials(mine2)
    assert not listed & serials(other)
    assert device_pki.revoke_node_certs(cloud, "edge-1", now=NOW + 4 * MIN) == []  # nothing new


def test_revoking_a_node_before_the_device_ca_was_used_is_a_no_op(cloud):
    assert device_pki.revoke_node_certs(cloud, "edge-1", now=NOW) == []
    assert not (cloud / "pki" / device_pki.DEVICE_CERTS).exists()


def test_expired_entries_are_dropped_when_a_pair_is_recorded(cloud, tmp_path):
    issue(cloud, tmp_path, "edge-old", now=NOW - 200 * DAY)
    issue(cloud, tmp_path, now=NOW)
    record = json.loads((cloud / "pki" / device_pki.DEVICE_CERTS).read_text())
    assert {e["node"] for e in record.values()} == {"edge-1"}
