"""Bounded, strict JSON decoding for untrusted verification inputs.

``json.loads`` alone recurses without limit and keeps the last of duplicate keys;
both are ways to make two verifiers disagree about one document. This module
checks size and nesting depth before parsing (:mod:`kedge._internal.jsonutil`) and rejects
duplicate keys.
"""

from __future__ import annotations

from typing import Any

from kedge._internal import jsonutil
from kedge.errors import LimitExceeded, ProtocolError, VerificationError
from kedge.verify._limits import DEFAULT, VerifyLimits


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise VerificationError(f"duplicate JSON key {key[:64]!r}", code="malformed_json")
        out[key] = value
    return out


def loads(data: bytes | str, limits: VerifyLimits = DEFAULT, *, max_bytes: int | None = None) -> Any:
    """Decode one JSON document within ``limits``; raise VerificationError otherwise."""
    cap = limits.max_file_bytes if max_bytes is None else max_bytes
    try:
        return jsonutil.loads(data, max_bytes=cap, max_depth=limits.max_json_depth,
                              object_pairs_hook=_reject_duplicates)
    except LimitExceeded as exc:
        detail = f"input larger than {cap} bytes" if exc.code == "too_large" else "JSON nested too deeply"
        raise VerificationError(detail, code="limit_exceeded") from exc
    except ProtocolError as exc:
        raise VerificationError("input is not valid JSON", code="malformed_json") from exc
