"""Fuzz the ``SHA256SUMS`` parser that ``kedge release sign`` trusts to name release files.

Invariant: ``kedge.release.sums.parse_sums`` either returns ``{name: sha256hex}`` or
raises :class:`kedge.errors.VerificationError` with one of the codes
``limit_exceeded``, ``malformed_sums``, ``bad_file_name`` -- nothing else. What it
returns is safe to join to the release directory: between 1 and ``MAX_SUMS_ENTRIES``
entries, every name a plain file name (accepted by ``check_name``; no ``/``, no
``\\``, no ``..``, no leading dot, no control or non-ASCII characters) and every
digest 64 lower-case hex characters. ``format_sums`` of the result parses back to the
same mapping, and formatting is a fixed point (format -> parse -> format gives the
same bytes). Every non-empty line of an accepted input is one of the entries.

Run: ``.venv/bin/python fuzz/targets/fuzz_release_sums.py -max_total_time=60 /tmp/scratch fuzz/corpus/release_sums``
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

try:
    import kedge  # noqa: F401
except ImportError:  # running as a script from a checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from kedge.errors import VerificationError
from kedge.release import sums

CODES = {"limit_exceeded", "malformed_sums", "bad_file_name"}
_HEX64 = re.compile(r"[0-9a-f]{64}")
_PLAIN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")


def _require(ok: bool, what: str) -> None:
    """Like assert, but survives ``python -O``: a violated invariant is a crash."""
    if not ok:
        raise AssertionError(what)


def test_one_input(data: bytes) -> None:
    """One fuzz iteration; raises only if the invariant in the module docstring breaks."""
    try:
        parsed = sums.parse_sums(data)
    except VerificationError as exc:
        _require(exc.code in CODES, f"undocumented code {exc.code}")
        return
    _require(isinstance(parsed, dict) and 0 < len(parsed) <= sums.MAX_SUMS_ENTRIES, "entry count")
    for name, digest in parsed.items():
        _require(isinstance(name, str) and bool(_PLAIN.fullmatch(name)) and ".." not in name,
                 f"unsafe file name {name!r}")
        _require(sums.check_name(name) == name, "check_name disagrees with parse_sums")
        _require(isinstance(digest, str) and bool(_HEX64.fullmatch(digest)), f"bad digest for {name!r}")
    lines = [line for line in data.decode("ascii").splitlines() if line]
    _require(len(lines) == len(parsed), "a line was dropped or merged")
    wire = sums.format_sums(parsed)
    _require(sums.parse_sums(wire) == parsed, "format_sums does not round-trip")
    _require(sums.format_sums(sums.parse_sums(wire)) == wire, "formatting is not a fixed point")


def main() -> None:
    import atheris  # lazily: replaying the corpus in the test suite must not need it

    atheris.instrument_all()
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
