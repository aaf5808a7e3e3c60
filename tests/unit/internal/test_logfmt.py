"""--log-format json|text: stable JSON fields, and no secret reaches a log line in either format."""

from __future__ import annotations

import io
import json
import logging

import pytest

from kedge._internal import logfmt

CA_HASH = "ab" * 32
BOOTSTRAP_TOKEN = f"{CA_HASH}.abc123.{'S' * 43}"
JWT = "eyJhbGciOiJFUzI1NiIsImtpZCI6IngifQ.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQifQ.c2lnbmF0dXJlLWJ5dGVz"
PEM_KEY = ("-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIBk2cW5hbWVzZWNyZXRrZXltYXRlcmlhbA==\n"
           "-----END EC PRIVATE KEY-----")
SECRETS = (BOOTSTRAP_TOKEN, "S" * 43, JWT, "MHcCAQEEIBk2cW5hbWVzZWNyZXRrZXltYXRlcmlhbA", "s3cr3t-bearer-value")


@pytest.fixture
def capture():
    stream = io.StringIO()
    yield stream
    logging.basicConfig(level=logging.WARNING, handlers=[logging.StreamHandler()], force=True)


def _log_secrets(logger: logging.Logger) -> None:
    logger.info("join with token %s failed", BOOTSTRAP_TOKEN, extra={"event": "bootstrap.refused", "code": "x"})
    logger.info("request header Authorization: Bearer s3cr3t-bearer-value")
    logger.warning("service account token %s", JWT, extra={"peer": f"token={JWT}"})
    logger.error("loaded key %s", PEM_KEY)
    logger.info("unterminated %s", PEM_KEY.split("-----END")[0])
    try:
        raise ValueError(f"bad token {BOOTSTRAP_TOKEN}")
    except ValueError:
        logger.exception("traceback carries it too")


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_known_secret_shapes_are_redacted_from_log_lines(capture, fmt):
    logfmt.setup(fmt, stream=capture)
    _log_secrets(logging.getLogger("kedge.test"))
    out = capture.getvalue()
    assert out.count(logfmt.REDACTED) >= 6
    for secret in SECRETS:
        assert secret not in out, (fmt, secret)


def test_json_lines_have_the_stable_fields(capture):
    logfmt.setup("json", stream=capture)
    log = logging.getLogger("kedge.edge.hub")
    log.info("tunnel connected to %s as %s", "wss://h:1", "edge-1",
             extra={"event": "tunnel.connected", "node": "edge-1", "peer": "wss://h:1"})
    log.warning("plain line")
    first, second = (json.loads(line) for line in capture.getvalue().splitlines())
    assert first["event"] == "tunnel.connected" and first["node"] == "edge-1" and first["peer"] == "wss://h:1"
    assert first["msg"] == "tunnel connected to wss://h:1 as edge-1"
    assert first["level"] == "info" and first["logger"] == "kedge.edge.hub" and first["ts"].endswith("Z")
    assert second["event"] == "log" and "node" not in second and "code" not in second


def test_ordinary_text_is_left_alone():
    for text in ("bad token: token_missing", "kedge token create --node edge-1", "secret default/db not found",
                 "basic idea", "node edge-1 resynced: 3 objects desired"):
        assert logfmt.redact(text) == text


def test_unknown_format_is_refused():
    with pytest.raises(ValueError):
        logfmt.setup("xml")
