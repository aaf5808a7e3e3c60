"""edgecore's metrics: prometheus_client stays out of an edgecore started without --metrics-address,
and the endpoint is loopback only."""

from __future__ import annotations

import subprocess
import sys

import pytest

from kedge.edge.metrics import check_address
from kedge.errors import ConfigError


def test_edgecore_without_metrics_does_not_load_prometheus_client():
    code = ("from kedge.cli.main import build_parser\n"
            "args = build_parser('edgecore').parse_args(['edgecore', '--data-dir', 'x', '--log-format', 'json'])\n"
            "import kedge.cli.cluster, kedge.edge.core, kedge.edge.hub, kedge.edge.metrics\n"
            "from kedge._internal import logfmt\n"
            "logfmt.apply(args)\n"
            "import sys\n"
            "print(sorted(m for m in sys.modules if m.startswith('prometheus_client')))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("address", ["0.0.0.0:9100", "192.0.2.1:9100", "[::]:9100", "edge.example:9100"])
def test_edge_metrics_refuse_non_loopback_addresses(address):
    with pytest.raises(ConfigError):
        check_address(address)


def test_edge_metrics_take_loopback_addresses():
    assert check_address("127.0.0.1:0") == ("127.0.0.1", 0)
    assert check_address("[::1]:9100") == ("::1", 9100)
