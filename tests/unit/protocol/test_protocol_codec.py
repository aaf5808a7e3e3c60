"""Bounded JSON decoding: every refusal code, triggered by the crafted input it is for."""

from __future__ import annotations

import time

import pytest

from kedge.errors import LimitExceeded, ProtocolError
from kedge.limits import Limits
from kedge.protocol.codec import EncodeError, decode_json, encode_json

SMALL = Limits(
    max_frame_bytes=4096,
    max_json_depth=4,
    max_string_bytes=16,
    max_list_items=5,
    max_object_keys=3,
)


def _code(data: bytes, limits: Limits = SMALL) -> str:
    with pytest.raises(ProtocolError) as info:
        decode_json(data, limits)
    return info.value.code


# -- accepted input ----------------------------------------------------------


@pytest.mark.parametrize(
    "data, value",
    [
        (b"{}", {}),
        (b"[]", []),
        (b"null", None),
        (b" 0 ", 0),
        (b'"a"', "a"),
        (b'{"a":[2.5,true,false,null,"x"]}', {"a": [2.5, True, False, None, "x"]}),
        ('"\u00e9\u4e2d"'.encode(), "\u00e9\u4e2d"),
        (b'"\\ud83d\\ude00"', "\U0001f600"),  # a valid surrogate *pair* is one character
        (b'"[[[[[[[[[["', "[[[[[[[[[["),  # brackets inside strings are not nesting
        (b'"\\"[[[[[[[[\\\\"', '"[[[[[[[[\\'),  # escaped quotes and backslashes
    ],
)
def test_strict_json_within_bounds_decodes(data, value):
    assert decode_json(data, SMALL) == value


def test_nesting_at_exactly_the_bound_is_accepted():
    assert decode_json(b"[[[[1]]]]", SMALL) == [[[[1]]]]
    assert decode_json(b'{"a":{"b":[{"c":1}]}}', SMALL) == {"a": {"b": [{"c": 1}]}}


def test_values_at_exactly_the_bounds_are_accepted():
    assert decode_json(b'"' + b"x" * 16 + b'"', SMALL) == "x" * 16
    assert decode_json(b"[1,2,3,4,5]", SMALL) == [1, 2, 3, 4, 5]
    assert decode_json(b'{"a":1,"b":2,"c":3}', SMALL) == {"a": 1, "b": 2, "c": 3}
    frame = b'"' + b"y" * 4094 + b'"'
    assert len(frame) == 4096
    assert decode_json(frame, Limits(max_frame_bytes=4096)) == "y" * 4094


def test_bytearray_and_memoryview_are_accepted():
    assert decode_json(bytearray(b"[1]"), SMALL) == [1]
    assert decode_json(memoryview(b"[1]"), SMALL) == [1]


def test_str_input_is_a_type_error_not_a_silent_decode():
    with pytest.raises(TypeError):
        decode_json("[]", SMALL)  # type: ignore[arg-type]


# -- depth -------------------------------------------------------------------


def test_deeply_nested_json_is_refused_without_recursion():
    bomb = b"[" * 100_000 + b"]" * 100_000
    start = time.perf_counter()
    with pytest.raises(LimitExceeded) as info:
        decode_json(bomb)
    elapsed = time.perf_counter() - start
    assert info.value.code == "depth_exceeded"
    assert elapsed < 1.0  # measured ~1 ms; generous for a loaded CI box


def test_unclosed_depth_bomb_is_refused_as_too_deep():
    assert _code(b"[" * 100_000, Limits()) == "depth_exceeded"
    assert _code(b'{"a":' * 50_000, Limits()) == "depth_exceeded"


def test_depth_bomb_hidden_behind_shallow_siblings_is_refused():
    # Many [] pairs first, so a naive "count a run of openers" check misses it.
    bomb = b"[" + b"[]," * 1000 + b"[[[[[1]]]]]" + b"]"
    assert _code(bomb) == "depth_exceeded"


def test_alternating_object_array_nesting_is_counted_together():
    assert _code(b'[{"a":[{"b":[1]}]}]') == "depth_exceeded"


def test_one_level_over_the_bound_is_refused():
    assert _code(b"[[[[[1]]]]]") == "depth_exceeded"


def test_unbalanced_brackets_are_malformed():
    assert _code(b"[1]]") == "malformed_json"
    assert _code(b"]") == "malformed_json"
    assert _code(b"[[1]") == "malformed_json"
    assert _code(b"[}") == "malformed_json"


# -- sizes -------------------------------------------------------------------


def test_oversized_frame_is_refused_before_parsing():
    assert _code(b" " * 4097) == "frame_too_large"
    # the default bound is 1 MiB
    assert _code(b"[" + b"0," * (512 * 1024) + b"0]", Limits()) == "frame_too_large"


def test_huge_string_is_refused():
    assert _code(b'"' + b"x" * 17 + b'"') == "string_too_long"
    assert _code(b'{"k":"' + b"x" * 17 + b'"}') == "string_too_long"


def test_string_bound_counts_utf8_bytes_not_characters():
    # 6 characters, 18 bytes in UTF-8.
    assert _code('"\u4e2d\u4e2d\u4e2d\u4e2d\u4e2d\u4e2d"'.encode()) == "string_too_long"


def test_huge_object_key_is_refused():
    assert _code(b'{"' + b"k" * 17 + b'":1}') == "string_too_long"


def test_huge_list_is_refused():
    assert _code(b"[1,2,3,4,5,6]") == "list_too_long"
    assert _code(b'{"a":[[1,2,3,4,5,6]]}') == "list_too_long"


def test_huge_default_list_is_refused():
    assert _code(b"[" + b"0," * 10_000 + b"0]", Limits()) == "list_too_long"


def test_object_with_too_many_keys_is_refused():
    assert _code(b'{"a":1,"b":2,"c":3,"d":4}') == "too_many_keys"


# -- ambiguity ---------------------------------------------------------------


def test_duplicate_keys_are_refused_not_last_one_wins():
    assert _code(b'{"op":"query","op":"delete"}') == "duplicate_key"
    assert _code(b'{"a":{"x":1,"x":1}}') == "duplicate_key"


@pytest.mark.parametrize("literal", [b"NaN", b"Infinity", b"-Infinity", b"[NaN]", b'{"a":Infinity}'])
def test_nan_and_infinity_are_refused(literal):
    assert _code(literal) == "malformed_json"


def test_number_overflowing_to_infinity_is_refused():
    assert _code(b"1e400") == "malformed_json"
    assert _code(b"[-1e999]") == "malformed_json"


def test_integer_with_thousands_of_digits_is_refused():
    assert _code(b"9" * 5000, Limits(max_frame_bytes=8192)) == "malformed_json"


@pytest.mark.parametrize(
    "data",
    [
        b"\xff\xfe[\x00]\x00",  # UTF-16 that json.loads(bytes) would happily sniff
        b'"\xc3"',  # truncated UTF-8
        b'"\xed\xa0\x80"',  # UTF-8-encoded surrogate
        b"\xef\xbb\xbf[]",  # BOM
    ],
)
def test_non_utf8_frames_are_refused(data):
    assert _code(data) == "malformed_json"


def test_lone_surrogate_escape_is_refused():
    assert _code(b'"\\ud800"') == "malformed_json"
    assert _code(b'{"\\udfff":1}') == "malformed_json"


@pytest.mark.parametrize(
    "data",
    [b"", b"   ", b"{", b'{"a"}', b"[1,]", b"'a'", b"{a:1}", b"[1] [2]", b'"\x01"', b"tru", b"01"],
)
def test_malformed_json_is_refused(data):
    assert _code(data) == "malformed_json"


def test_unterminated_string_full_of_brackets_is_refused():
    assert _code(b'["' + b"[" * 100) in {"depth_exceeded", "malformed_json"}
    assert _code(b'["[[[') == "malformed_json"


def test_limit_errors_are_protocol_errors_with_stable_codes():
    with pytest.raises(LimitExceeded) as info:
        decode_json(b"[1,2,3,4,5,6]", SMALL)
    assert isinstance(info.value, ProtocolError)
    assert "Traceback" not in info.value.code


# -- encoding ----------------------------------------------------------------


def test_encode_is_compact_utf8_without_ascii_escapes():
    assert encode_json({"a": [1, "\u00e9"], "b": None}) == '{"a":[1,"\u00e9"],"b":null}'.encode()


def test_encode_round_trips_through_decode():
    value = {"k": [1, 2.5, "x", {"n": None, "t": True}], "u": "\u4e2d\U0001f600"}
    assert decode_json(encode_json(value)) == value


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), "\ud800", {1j: 1}, object()])
def test_encode_refuses_what_is_not_strict_json(bad):
    with pytest.raises(EncodeError) as info:
        encode_json([bad])
    assert info.value.code == "encode_failed"


@pytest.mark.parametrize(
    "frame",
    [
        # (the [] prefix defeats the few-brackets fast path, so the scan really runs)
        b"[" + b"[]," * 40 + b'"' + b'\\"' * 400_000,  # quotes after the first escaped
        b"[" + b"[]," * 40 + b'"' + b'\\"' * 400_000 + b"\\",  # ... and a lone backslash
        b'["' + b'\\"[' * 300_000,  # brackets inside the unterminated string
    ],
)
def test_unterminated_string_of_escaped_quotes_is_refused_in_linear_time(frame):
    # A string pattern that can fail is retried from every later quote: quadratic
    # (16 s for 60 KB before the fix). These are ~800 KB and take ~0.1 s now.
    start = time.perf_counter()
    assert _code(frame, Limits()) == "malformed_json"
    assert time.perf_counter() - start < 2.0


def test_escaped_backslash_before_closing_quote_ends_the_string():
    assert decode_json(b'["\\\\"]', SMALL) == ["\\"]
    assert decode_json(b'["\\\\\\"[[[[[[["]', SMALL) == ['\\"[[[[[[[']


def test_bounds_hold_on_the_fast_path_with_default_limits():
    # Small frames skip the value walk; the byte-level pre-test must still catch these.
    assert _code(b'["\\uD800"]', Limits()) == "malformed_json"
    assert _code(b'{"a":"\\udc00x"}', Limits()) == "malformed_json"
    assert decode_json(b'["\\uD83D\\uDE00"]', Limits()) == ["\U0001f600"]
    tight = Limits(max_string_bytes=300 * 1024, max_list_items=3)
    assert _code(b"[1,2,3,4]", tight) == "list_too_long"
    assert _code(b'"' + b"x" * (300 * 1024 + 1) + b'"', tight) == "string_too_long"


def _depth(value) -> int:
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    return 0


def _random_value(rng, depth_left: int):
    tricky = ['"', "\\", "[", "]", "{", "}", "\\u", "a", "\u00e9", ",", ":"]
    kind = rng.randrange(4) if depth_left > 0 else 3
    if kind == 0:
        return [_random_value(rng, depth_left - 1) for _ in range(rng.randrange(3))]
    if kind == 1:
        return {f"k{i}{rng.choice(tricky)}": _random_value(rng, depth_left - 1) for i in range(rng.randrange(3))}
    if kind == 2:
        return rng.choice([0, -1.5, True, None])
    return "".join(rng.choice(tricky) for _ in range(rng.randrange(6)))


def test_depth_check_agrees_with_the_real_nesting_of_valid_json():
    import json
    import random

    rng = random.Random(20261127)
    limits = Limits(max_json_depth=3)
    for _ in range(3000):
        value = _random_value(rng, 6)
        data = json.dumps(value, ensure_ascii=rng.random() < 0.5).encode()
        if _depth(value) <= 3:
            assert decode_json(data, limits) == value, data
        else:
            with pytest.raises(LimitExceeded) as info:
                decode_json(data, limits)
            assert info.value.code == "depth_exceeded", data


def test_random_garbage_raises_only_protocol_errors():
    import random

    rng = random.Random(7)
    alphabet = b'[]{}",:\\ u0e1-.tfn\xc3\xa9\xff'
    limits = Limits(max_json_depth=3, max_list_items=4, max_object_keys=4, max_string_bytes=8)
    for _ in range(5000):
        data = bytes(rng.choice(alphabet) for _ in range(rng.randrange(40)))
        try:
            value = decode_json(data, limits)
        except ProtocolError:
            continue
        assert _depth(value) <= 3
