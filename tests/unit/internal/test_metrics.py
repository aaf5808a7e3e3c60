"""The shared metrics helpers: addresses, bounded labels, and the endpoint's refusal off loopback."""

from __future__ import annotations

import asyncio

import pytest

from kedge._internal import metrics as mx
from kedge.cloud.metrics import MAX_CODES, Codes, message_labels
from kedge.errors import ConfigError
from kedge.limits import DEFAULT


@pytest.mark.parametrize("text,expected", [
    ("127.0.0.1:0", ("127.0.0.1", 0)), ("localhost:9100", ("localhost", 9100)), ("[::1]:10003", ("::1", 10003)),
    ("0.0.0.0:10003", ("0.0.0.0", 10003)),
])
def test_parse_address(text, expected):
    assert mx.parse_address(text) == expected


@pytest.mark.parametrize("text", ["10003", ":10003", "host:", "host:99999", "host:x", "[::1:1", "a b:1"])
def test_parse_address_refuses_malformed(text):
    with pytest.raises(ConfigError):
        mx.parse_address(text)


def test_loopback():
    assert mx.is_loopback("127.0.0.1") and mx.is_loopback("::1") and mx.is_loopback("localhost")
    assert not mx.is_loopback("0.0.0.0") and not mx.is_loopback("10.0.0.1") and not mx.is_loopback("example.com")


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "example.com"])
def test_non_loopback_metrics_without_tls_material_are_refused(host):
    async def main():
        await mx.serve(mx.new_registry(), host, 0, limits=DEFAULT)

    with pytest.raises(ConfigError) as err:
        asyncio.run(main())
    assert err.value.code == "metrics_need_tls"


def test_message_labels_come_from_fixed_sets():
    assert message_labels("update", "default/podstatus/web") == ("update", "podstatus")
    assert message_labels("x" * 100, "ns/attacker-chosen-kind/name") == ("other", "other")
    assert message_labels("query", "no-slashes") == ("query", "other")


def test_reason_code_labels_are_capped():
    codes = Codes()
    for i in range(MAX_CODES * 3):
        codes.inc_code((), f"code_{i}")
    codes.inc_code((), "Not A Code <script>")
    assert len(codes.counts) <= MAX_CODES + 1
    assert codes.counts[("other",)] >= MAX_CODES * 2 + 1
