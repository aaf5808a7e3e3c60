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
