"""The devicecerts route: certificates only for CSRs (no key is ever made in the cloud), the
validity the cloud config sets, every issue and refusal in cloudcore's audit log."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest

from kedge.cloud.devicecontroller import DeviceController
from kedge.cloud.init import init_cloud
from kedge.edge import mqttkeys
from kedge.errors import PeerError
from kedge.pki import ca as pki
from kedge.protocol import message as m


def query(content) -> m.Message:
    return m.Message.new(source="edgehub", destination="cloudhub", group="resource", operation=m.QUERY,
                         resource="default/devicecerts/edge-1", content=content, now_ms=0)


@pytest.fixture
def dc(tmp_path):
    d = init_cloud(tmp_path / "cloud", api_port=0)
    cfg = d.load_config()
    d.save_config(type(cfg)(**{**cfg.__dict__, "mqtt_cert_validity_s": 3600}))
    controller = DeviceController(None, d.root)  # type: ignore[arg-type]
    controller.audited = []
    controller.audit = lambda event, **fields: controller.audited.append((event, fields))
    return controller


def test_csrs_get_certificates_for_their_keys_with_the_configured_validity(dc, tmp_path):
    csrs = mqttkeys.stage_keys(tmp_path, "edge-1")
    out = asyncio.run(dc.route_certs("edge-1", query(csrs)))
    assert set(out) == {"ca", "serverCert", "clientCert", "crl"}
    server = pki.load_cert_pem(out["serverCert"].encode())
    lifetime = server.not_valid_after_utc - dt.datetime.now(dt.timezone.utc)
    assert dt.timedelta(minutes=59) < lifetime <= dt.timedelta(hours=1)
    [(event, fields)] = dc.audited
    assert event == "mqtt_certs" and fields["result"] == "accepted" and fields["node"] == "edge-1"
    assert fields["server_serial"] == format(server.serial_number, "x")


@pytest.mark.parametrize("content, code", [
    (None, "csr_required"),
    ({"serverCsr": "x"}, "csr_required"),
    ({"serverCsr": "x" * 20000, "clientCsr": "y"}, "csr_required"),
    ({"serverCsr": "not a csr", "clientCsr": "neither"}, "csr_malformed"),
])
def test_anything_but_two_good_csrs_is_refused(dc, content, code):
    with pytest.raises(PeerError) as exc:
        asyncio.run(dc.route_certs("edge-1", query(content)))
    assert exc.value.code == code
    assert dc.audited == [("mqtt_certs", {"node": "edge-1", "result": "refused", "code": code})]


def test_a_node_past_its_pair_budget_is_refused_with_a_code_and_audited(dc, tmp_path):
    from kedge.cloud.config import CloudDir

    d = CloudDir(dc.data_dir)
    cfg = d.load_config()
    d.save_config(type(cfg)(**{**cfg.__dict__, "limits": {"device_cert_pairs_per_hour": 2}}))
    csrs = mqttkeys.stage_keys(tmp_path, "edge-1")  # the same two CSRs again and again, as the red team did
    for _ in range(2):
        asyncio.run(dc.route_certs("edge-1", query(csrs)))
    with pytest.raises(PeerError) as exc:
        asyncio.run(dc.route_certs("edge-1", query(csrs)))
    assert exc.value.code == "device_certs_rate_limited"
    assert [f["result"] for _, f in dc.audited] == ["accepted", "accepted", "refused"]
    assert dc.audited[-1][1]["code"] == "device_certs_rate_limited"


def test_a_pair_issued_to_a_revoked_node_is_revoked_and_not_handed_out(dc, tmp_path):
    from kedge.cloud.config import CloudDir
    from kedge.cloud.devicecontroller import pki as device_pki
    from kedge.cloud.state import CloudState
    from kedge.edge.devicetwin import crl

    with CloudState(CloudDir(dc.data_dir).state_db) as state:  # as `kedge node revoke` does, first step
        state.revoke_node("edge-1", now=dt.datetime.now(dt.timezone.utc))
    with pytest.raises(PeerError) as exc:
        asyncio.run(dc.route_certs("edge-1", query(mqttkeys.stage_keys(tmp_path, "edge-1"))))
    assert exc.value.code == "revoked"
    listed = crl.parse_crl_pem(device_pki.device_crl_pem(dc.data_dir, now=dt.datetime.now(dt.timezone.utc),
                                                         lifetime=dt.timedelta(hours=1)).encode(),
                               max_bytes=1 << 20).revoked
    assert len(listed) == 2
    asyncio.run(dc.close())
