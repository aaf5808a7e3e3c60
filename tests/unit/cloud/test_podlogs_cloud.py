"""Cloud side of ``kubectl logs``: the edge's answer is peer input, and tailLines."""

from __future__ import annotations

import base64

import pytest

from kedge.cloud import podlogs
from kedge.errors import PeerError


def ans(data: bytes, start: int = 0, size: int | None = None) -> dict:
    return {"data": base64.b64encode(data).decode(), "start": start, "size": len(data) + start if size is None else size}


def test_a_well_formed_answer_is_accepted():
    c = podlogs._check_answer(ans(b"hello\n", start=10), 100)
    assert (c.data, c.start, c.size) == (b"hello\n", 10, 16)


@pytest.mark.parametrize("content", [
    None, [], {"data": "", "start": 0}, {"data": "", "start": 0, "size": 0, "extra": 1},
    {"data": "!!!", "start": 0, "size": 3},                     # not base64
    {"data": "", "start": -1, "size": 0}, {"data": "", "start": True, "size": 0},
    {"data": "", "start": 0, "size": 2**60},
    ans(b"x" * 101),                                            # more than asked for
    ans(b"abc", start=0, size=2),                               # beyond the file's size
    {"data": 5, "start": 0, "size": 0},
])
def test_malformed_or_oversized_answers_are_refused(content):
    with pytest.raises(PeerError) as exc:
        podlogs._check_answer(content, 100)
    assert exc.value.code == "bad_response"


@pytest.mark.parametrize("data, n, want", [
    (b"a\nb\nc\n", 2, b"b\nc\n"),
    (b"a\nb\nc", 2, b"b\nc"),
    (b"a\nb\nc\n", 10, b"a\nb\nc\n"),
    (b"a\nb\nc\n", 0, b""),
    (b"", 3, b""),
    (b"only\n", 1, b"only\n"),
])
def test_tail_lines(data, n, want):
    assert podlogs.tail_lines(data, n) == want
