"""Generated mosquitto config and ACL (pure rendering)."""

from __future__ import annotations

from pathlib import Path

import pytest

from kedge.edge import broker
from kedge.errors import ConfigError

FILES = broker.BrokerFiles(Path("/e/ca.crt"), Path("/e/b.crt"), Path("/e/b.key"), Path("/e/acl"))


def test_config_has_one_tls_listener_on_loopback_with_client_certs():
    conf = broker.render_config(8883, FILES, run_as="kedge").splitlines()
    assert [line for line in conf if line.startswith(("listener", "port", "bind"))] == ["listener 8883 127.0.0.1"]
    for line in ("allow_anonymous false", "require_certificate true", "use_identity_as_username true",
                 "tls_version tlsv1.3", "cafile /e/ca.crt", "acl_file /e/acl"):
        assert line in conf


def test_acl_gives_each_device_only_its_own_subtree():
    acl = broker.render_acl("edge-1", [("default", "b"), ("default", "a"), ("default", "a")]).splitlines()
    assert acl[acl.index("user edgecore:edge-1") + 1] == "topic readwrite $hw/events/device/#"
    assert acl[acl.index("user device:default/a") + 1] == "topic readwrite $hw/events/device/default/a/#"
    assert acl[acl.index("user device:default/b") + 1] == "topic readwrite $hw/events/device/default/b/#"
    assert sum(1 for line in acl if line.startswith("user ")) == 3
    assert not any(line.startswith("pattern") for line in acl)


@pytest.mark.parametrize("ns,name", [("default", "a\ntopic readwrite #"), ("default", "a#"), ("x+", "a")])
def test_acl_refuses_injection(ns, name):
    with pytest.raises(ConfigError):
        broker.render_acl("edge-1", [(ns, name)])


def test_missing_mosquitto_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("KEDGE_MOSQUITTO", str(tmp_path / "nope"))
    b = broker.Broker(tmp_path / "mqtt", "edge-1", cafile=tmp_path / "ca", certfile=tmp_path / "c",
                      keyfile=tmp_path / "k")
    with pytest.raises(broker.BrokerUnavailable) as info:
        b.start()
    assert "mosquitto" in str(info.value) and info.value.code == "broker_unavailable"


def test_config_names_the_device_crl_when_given():
    files = broker.BrokerFiles(Path("/e/ca.crt"), Path("/e/b.crt"), Path("/e/b.key"), Path("/e/acl"),
                               Path("/e/mqtt-crl.pem"))
    assert "crlfile /e/mqtt-crl.pem" in broker.render_config(8883, files, run_as="kedge").splitlines()


def test_long_node_names_sharing_a_prefix_get_distinct_bounded_mqtt_identities():
    a, b = "n" * 60 + "-a", "n" * 60 + "-b"
    for make in (broker.admin_username, broker.mqtt_client_id):
        assert make(a) != make(b)
        assert len(make(a)) <= 64 and len(make(b)) <= 64
        assert make("edge-1").endswith(":edge-1") or make("edge-1").endswith("-edge-1")  # short names unchanged
    assert broker.admin_username("edge-1") == "edgecore:edge-1"
    # a shortened identity can never equal another node's full one: '~' is not in node names
    assert "~" in broker.admin_username(a)
    broker.render_acl(a, [])  # and it is a safe ACL line
