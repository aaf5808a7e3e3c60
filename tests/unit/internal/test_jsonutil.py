"""kedge._internal.jsonutil: the one bounded JSON loader and depth scanner."""

from __future__ import annotations

import pytest

from kedge._internal import jsonutil
from kedge.errors import KedgeError, LimitExceeded, ProtocolError


@pytest.mark.parametrize("data", [b"[" * 10_000, b"{\"a\":" * 5_000, "[" * 33 + "]" * 33])
def test_deeply_nested_json_is_refused_before_parsing(data):
    with pytest.raises(LimitExceeded) as info:
        jsonutil.loads(data, max_bytes=1 << 20, max_depth=32)
    assert info.value.code == "depth_exceeded"


def test_brackets_inside_strings_do_not_count():
    doc = b'{"a": "' + b"[" * 1000 + b'\\"[[["}'
    assert jsonutil.loads(doc, max_bytes=1 << 20, max_depth=2) == {"a": "[" * 1000 + '"[[['}


def test_depth_bound_is_inclusive():
    assert jsonutil.loads("[" * 32 + "]" * 32, max_bytes=100, max_depth=32) is not None


def test_oversized_document_is_refused_with_too_large():
    with pytest.raises(LimitExceeded) as info:
        jsonutil.loads(b"[" + b"1," * 100 + b"1]", max_bytes=64, max_depth=8)
    assert info.value.code == "too_large"


@pytest.mark.parametrize("data", [b"\xff\xfe[]", b"[1,", b"[[]", b"{\"a\" 1}", b"\xfe\xff\x00[\x00]"])
def test_malformed_json_is_one_code(data):
    with pytest.raises(ProtocolError) as info:
        jsonutil.loads(data, max_bytes=100, max_depth=8)
    assert info.value.code == "malformed_json" and not isinstance(info.value, LimitExceeded)


def test_a_hook_error_propagates_unchanged():
    class Mine(KedgeError):
        code = "mine"

    def hook(pairs):
        raise Mine("no")

    with pytest.raises(Mine):
        jsonutil.loads(b'{"a":1}', max_bytes=100, max_depth=8, object_pairs_hook=hook)


def test_within_bounds_counts_depth_and_nodes():
    assert jsonutil.within_bounds({"a": [1, {"b": 2}]}, 4, 10)  # the 2 is at depth 4
    assert not jsonutil.within_bounds({"a": [1, {"b": 2}]}, 3, 10)
    assert not jsonutil.within_bounds(list(range(10)), 5, 10)  # 11 values
    nested: list = []
    for _ in range(100_000):  # deeper than the recursion limit: walked iteratively
        nested = [nested]
    assert not jsonutil.within_bounds(nested, 64, 10**6)


@pytest.mark.parametrize("data", [b"NaN", b"[1, Infinity]", b'{"a": -Infinity}'])
def test_nan_and_infinity_are_refused_by_default(data):
    with pytest.raises(ProtocolError) as info:
        jsonutil.loads(data, max_bytes=1 << 20, max_depth=32)
    assert info.value.code == "malformed_json"


def test_a_caller_may_accept_constants_explicitly():
    assert jsonutil.loads(b"[Infinity]", max_bytes=64, max_depth=2, parse_constant=float) == [float("inf")]


def test_too_many_values_is_refused_when_bounded():
    data = b"[" + b",".join([b"0"] * 100) + b"]"
    assert len(jsonutil.loads(data, max_bytes=1 << 20, max_depth=2, max_nodes=101)) == 100
    with pytest.raises(LimitExceeded) as info:
        jsonutil.loads(data, max_bytes=1 << 20, max_depth=2, max_nodes=100)
    assert info.value.code == "too_many_values"


def test_node_bound_never_refuses_for_depth_alone():
    # Bracket depth max_depth puts leaves one level deeper: only the count may fail.
    assert jsonutil.loads(b"[[[1]]]", max_bytes=64, max_depth=3, max_nodes=4) == [[[1]]]
