"""``SHA256SUMS``: the format ``sha256sum --check`` reads, written and parsed strictly.

Pure: bytes in, bytes or a mapping out. Only plain file names (no directories, no
``..``) are allowed, so a sums file can never point a checker outside the release
directory.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from kedge.errors import VerificationError

SUMS_NAME = "SHA256SUMS"
MAX_SUMS_BYTES = 64 * 1024
MAX_SUMS_ENTRIES = 256

_HEX64 = re.compile(r"[0-9a-f]{64}")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,254}")
# "<hex>  <name>" (text mode) or "<hex> *<name>" (binary mode) -- what coreutils writes.
_LINE = re.compile(r"([0-9a-f]{64}) [ *]([^\n]+)")


def check_name(name: str) -> str:
    """Return ``name`` if it is a plain release file name, else raise."""
    if not isinstance(name, str) or not _NAME.fullmatch(name) or ".." in name:
        raise VerificationError(f"not a plain release file name: {name!r}", code="bad_file_name")
    return name


def format_sums(digests: Mapping[str, str]) -> bytes:
    """Render ``{name: sha256hex}`` sorted by name, one ``hex  name`` line each."""
    lines = []
    for name in sorted(digests):
        digest = digests[name]
        check_name(name)
        if not isinstance(digest, str) or not _HEX64.fullmatch(digest):
            raise VerificationError(f"bad sha256 for {name}", code="bad_digest")
        lines.append(f"{digest}  {name}\n")
    return "".join(lines).encode("ascii")


def parse_sums(data: bytes) -> dict[str, str]:
    """Parse a sums file into ``{name: sha256hex}``; duplicates and junk are errors."""
    if len(data) > MAX_SUMS_BYTES:
        raise VerificationError("SHA256SUMS too large", code="limit_exceeded")
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError as exc:
        raise VerificationError("SHA256SUMS is not ASCII", code="malformed_sums") from exc
    out: dict[str, str] = {}
    for line in text.splitlines():
        if not line:
            continue
        match = _LINE.fullmatch(line)
        if not match:
            raise VerificationError("malformed SHA256SUMS line", code="malformed_sums")
        digest, name = match.group(1), check_name(match.group(2))
        if name in out:
            raise VerificationError(f"{name} listed twice in SHA256SUMS", code="malformed_sums")
        out[name] = digest
        if len(out) > MAX_SUMS_ENTRIES:
            raise VerificationError("SHA256SUMS has too many entries", code="limit_exceeded")
    if not out:
        raise VerificationError("SHA256SUMS is empty", code="malformed_sums")
    return out
