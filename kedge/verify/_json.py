"""Bounded, strict JSON decoding for untrusted verification inputs.

``json.loads`` alone recurses without limit and keeps the last of duplicate keys;
both are ways to make two verifiers disagree about one document. This module
checks size and nesting depth before parsing and rejects duplicate keys.
"""

from __future__ import annotations

import json
from typing import Any

from kedge.errors import VerificationError
from kedge.verify._limits import DEFAULT, VerifyLimits


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise VerificationError(f"duplicate JSON key {key[:64]!r}", code="malformed_json")
        out[key] = value
    return out


def _check_depth(text: str, max_depth: int) -> None:
    """Scan brackets outside strings; refuse nesting deeper than ``max_depth``."""
    depth = 0
    in_string = False
    escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
            continue
        if ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            if depth > max_depth:
                raise VerificationError("JSON nested too deeply", code="limit_exceeded")
        elif ch in "]}":
            depth -= 1


def loads(data: bytes | str, limits: VerifyLimits = DEFAULT, *, max_bytes: int | None = None) -> Any:
    """Decode one JSON document within ``limits``; raise VerificationError otherwise."""
    cap = limits.max_file_bytes if max_bytes is None else max_bytes
    if len(data) > cap:
        raise VerificationError(f"input larger than {cap} bytes", code="limit_exceeded")
    if isinstance(data, bytes):
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise VerificationError("input is not UTF-8", code="malformed_json") from exc
    else:
        text = data
    _check_depth(text, limits.max_json_depth)
    try:
        return json.loads(text, object_pairs_hook=_reject_duplicates)
    except VerificationError:
        raise
    except (ValueError, RecursionError) as exc:
        raise VerificationError("input is not valid JSON", code="malformed_json") from exc
