"""The renewal child's one-line report and how EdgeHub turns it back into an error."""

from __future__ import annotations

import json

import pytest

from kedge.edge import renewal
from kedge.errors import LocalError, PeerError, StateError, VerificationError


def _line(exc) -> bytes:
    return (b"noise a library printed\n" + json.dumps(renewal.result_of(exc)).encode() + b"\n")


def test_success_needs_ok_and_exit_zero():
    renewal.raise_result(_line(None), 0)
    with pytest.raises(LocalError) as info:
        renewal.raise_result(_line(None), 1)
    assert info.value.code == "renewal_failed"


@pytest.mark.parametrize("exc,cls,code", [
    (PeerError("refused", code="revoked"), PeerError, "revoked"),
    (VerificationError("bad", code="bad_certificate"), VerificationError, "bad_certificate"),
    (StateError("gone", code="not_joined"), LocalError, "not_joined"),
    (ConnectionRefusedError(111, "refused"), LocalError, "ConnectionRefusedError"),
    (ValueError("odd"), LocalError, "ValueError"),
])
def test_child_errors_come_back_with_their_code(exc, cls, code):
    with pytest.raises(cls) as info:
        renewal.raise_result(_line(exc), 1)
    assert info.value.code == code


@pytest.mark.parametrize("out", [b"", b"\n", b"not json\n", b"[1, 2]\n", b"{\"ok\": \"yes\"}\n",
                                 b"x" * (renewal.MAX_RESULT_BYTES * 2)])
def test_missing_or_garbled_report_is_a_failure(out):
    with pytest.raises(LocalError) as info:
        renewal.raise_result(out, 0 if out else -9)
    assert info.value.code == "renewal_failed"


def test_report_never_carries_more_than_a_short_message():
    res = renewal.result_of(PeerError("m" * 10_000, code="c" * 500))
    assert len(res["message"]) <= 512 and len(res["code"]) <= 64


def test_usage_error_without_exactly_one_argument(capsys):
    assert renewal.main([]) == 2
    assert "usage" in capsys.readouterr().err
