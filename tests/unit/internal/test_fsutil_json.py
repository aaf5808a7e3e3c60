"""fsutil's JSON helpers on damaged files: a clear error or a clean rewrite, never a crash."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kedge._internal import fsutil
from kedge.errors import StateError


@pytest.mark.parametrize("text", ["[" * 100_000, "{not json", "\xff\xfe"])
def test_read_json_of_a_damaged_file_is_corrupt_state(tmp_path: Path, text):
    p = tmp_path / "x.json"
    p.write_bytes(text.encode("latin-1"))
    with pytest.raises(StateError) as exc:
        fsutil.read_json(p)
    assert exc.value.code == "corrupt_state"


@pytest.mark.parametrize("text", ["[1, 2]", "[" * 100_000, "garbage"])
def test_update_json_replaces_a_damaged_endpoints_file(tmp_path: Path, text):
    p = tmp_path / "endpoints.json"
    p.write_text(text)
    assert fsutil.update_json(p, {"mqtt": "mqtts://127.0.0.1:1"}) == {"mqtt": "mqtts://127.0.0.1:1"}
    assert json.loads(p.read_text()) == {"mqtt": "mqtts://127.0.0.1:1"}


def test_update_json_merges_into_a_good_file(tmp_path: Path):
    p = tmp_path / "endpoints.json"
    fsutil.update_json(p, {"api": "https://127.0.0.1:6443"})
    fsutil.update_json(p, {"hub": "wss://127.0.0.1:10000"})
    assert json.loads(p.read_text()) == {"api": "https://127.0.0.1:6443", "hub": "wss://127.0.0.1:10000"}


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -1, 0, 1.5, True, "10"])
def test_limits_refuse_what_is_not_a_positive_finite_amount(value):
    from kedge.limits import Limits

    with pytest.raises(ValueError):
        Limits(max_frame_bytes=value)


def test_a_whole_float_limit_from_json_becomes_an_int():
    from kedge.limits import Limits

    assert Limits(max_frame_bytes=2048.0).max_frame_bytes == 2048
    assert isinstance(Limits(max_frame_bytes=2048.0).max_frame_bytes, int)
