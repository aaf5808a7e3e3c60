"""SHA256SUMS: round trip and refusal of names that escape the release directory."""

import pytest

from kedge.errors import VerificationError
from kedge.release.sums import format_sums, parse_sums

A = "a" * 64
B = "0123456789abcdef" * 4


def test_format_is_sorted_and_sha256sum_compatible():
    data = format_sums({"z.whl": A, "a.tar.gz": B})
    assert data == f"{B}  a.tar.gz\n{A}  z.whl\n".encode()
    assert parse_sums(data) == {"z.whl": A, "a.tar.gz": B}


def test_binary_mode_marker_is_accepted():
    assert parse_sums(f"{A} *x.whl\n".encode()) == {"x.whl": A}


@pytest.mark.parametrize("name", ["../etc/passwd", "dir/x.whl", "/abs", ".hidden", "a b", ""])
def test_path_traversal_names_are_refused(name):
    with pytest.raises(VerificationError):
        parse_sums(f"{A}  {name}\n".encode())
    with pytest.raises(VerificationError):
        format_sums({name: A})


@pytest.mark.parametrize("data", [
    b"",
    f"{A[:-1]}  x.whl\n".encode(),
    f"{A.upper()}  x.whl\n".encode(),
    f"{A}  x.whl\n{B}  x.whl\n".encode(),
    "é".encode() * 10,
    b"x" * (64 * 1024 + 1),
])
def test_malformed_sums_are_refused(data):
    with pytest.raises(VerificationError):
        parse_sums(data)
