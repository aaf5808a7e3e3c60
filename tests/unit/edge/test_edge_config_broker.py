"""The edge config's ``mqtt_broker`` (an operator's broker): TLS-only URL, absolute paths,
exactly the documented keys -- refused with ConfigError otherwise."""

from __future__ import annotations

import pytest

from kedge.edge.config import EdgeConfig
from kedge.errors import ConfigError

BASE = {"node_name": "edge-1", "certs": "https://127.0.0.1:10002", "hub": "wss://127.0.0.1:10000"}
GOOD = {"url": "mqtts://broker.example:8883", "ca": "/etc/kedge/ca.crt", "cert": "/etc/kedge/c.crt",
        "key": "/etc/kedge/c.key"}


def test_a_tls_broker_with_absolute_paths_is_accepted():
    cfg = EdgeConfig.from_dict(dict(BASE, mqtt_broker=GOOD))
    assert cfg.mqtt_broker == GOOD
    assert EdgeConfig.from_dict(cfg.to_dict()) == cfg
    assert EdgeConfig.from_dict(BASE).mqtt_broker is None


@pytest.mark.parametrize("broker", [
    dict(GOOD, url="mqtt://broker.example:1883"),  # clear text
    dict(GOOD, url="mqtts://broker.example"),  # no port
    dict(GOOD, url="mqtts://user@broker.example:8883"),
    dict(GOOD, url="mqtts://broker.example:8883/path"),
    dict(GOOD, url="mqtts://[::1:8883"),
    dict(GOOD, url="mqtts://broker.example:99999"),
    dict(GOOD, key="relative/c.key"),
    dict(GOOD, ca="/etc/x\nuser root"),
    {k: v for k, v in GOOD.items() if k != "key"},
    dict(GOOD, extra="x"),
    dict(GOOD, cert=7),
    "mqtts://broker.example:8883",
    [],
])
def test_anything_else_is_refused(broker):
    with pytest.raises(ConfigError):
        EdgeConfig.from_dict(dict(BASE, mqtt_broker=broker))
