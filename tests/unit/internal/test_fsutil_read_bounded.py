"""fsutil.read_bounded: the one bounded file reader (PEM, CRL, keys, trust roots, audit inputs)."""

from __future__ import annotations

from pathlib import Path

import pytest

from kedge._internal import fsutil


def test_a_file_within_the_bound_is_read_whole(tmp_path: Path):
    p = tmp_path / "f"
    p.write_bytes(b"x" * 10)
    assert fsutil.read_bounded(p, 10) == b"x" * 10


def test_an_oversized_file_is_refused_not_truncated(tmp_path: Path):
    p = tmp_path / "f"
    p.write_bytes(b"x" * 11)
    with pytest.raises(fsutil.FileTooLarge) as info:
        fsutil.read_bounded(p, 10)
    assert info.value.code == "file_too_large"


def test_an_endless_device_is_read_no_further_than_the_bound():
    with pytest.raises(fsutil.FileTooLarge):
        fsutil.read_bounded("/dev/zero", 4096)


def test_os_errors_propagate_for_the_caller_to_name(tmp_path: Path):
    with pytest.raises(FileNotFoundError):
        fsutil.read_bounded(tmp_path / "missing", 10)
    with pytest.raises(IsADirectoryError):
        fsutil.read_bounded(tmp_path, 10)
