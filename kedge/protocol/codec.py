"""Bounded JSON for the tunnel: one frame payload in, one JSON value out.

Why not plain ``json.loads``: it accepts UTF-16/32 input, NaN and Infinity,
duplicate keys (last one silently wins), lone surrogates that cannot be
re-encoded, numbers that overflow to ``inf``, and it recurses once per nesting
level, so a ``[[[[...`` frame reaches Python's recursion limit. Every one of
those is a way for a peer to smuggle ambiguity or crash a hub, so this module
refuses them with a stable code:

=====================  ========================  ==============================
code                   class                     cause
=====================  ========================  ==============================
``frame_too_large``    :class:`LimitExceeded`    more than ``max_frame_bytes``
``depth_exceeded``     :class:`LimitExceeded`    nesting deeper than ``max_json_depth``
``string_too_long``    :class:`LimitExceeded`    a key or string over ``max_string_bytes`` (UTF-8)
``list_too_long``      :class:`LimitExceeded`    an array over ``max_list_items``
``too_many_keys``      :class:`LimitExceeded`    an object over ``max_object_keys``
``duplicate_key``      :class:`ProtocolError`    the same key twice in one object
``malformed_json``     :class:`ProtocolError`    not strict UTF-8 JSON, NaN/Infinity,
                                                 lone surrogate, number out of range
=====================  ========================  ==============================

Depth is checked *before* the parser runs, on the bytes, without recursion, by
:func:`kedge._internal.jsonutil.check_depth` (the module doc there says how), so
``json.loads`` is only ever called on input whose recursion is bounded by
``max_json_depth``.

This module is pure: no I/O, no clock.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from kedge._internal import jsonutil
from kedge.errors import LimitExceeded, LocalError, ProtocolError
from kedge.limits import DEFAULT, Limits

__all__ = ["EncodeError", "decode_json", "encode_json"]

# A \\uD800-\\uDFFF escape (may be a valid pair; the walk decides).
_SURROGATE_ESCAPE_RE = re.compile(rb"\\u[dD][89a-fA-F]")


class EncodeError(LocalError):
    """We tried to send something that is not strict JSON (NaN, lone surrogate...)."""

    code = "encode_failed"


def _fail(code: str, detail: str) -> ProtocolError:
    return ProtocolError(detail, code=code)


def _limit(code: str, detail: str) -> LimitExceeded:
    return LimitExceeded(detail, code=code)


def _reject_constant(name: str) -> Any:
    raise _fail("malformed_json", f"non-finite number {name}")


def _parse_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _fail("malformed_json", "number out of range")
    return value


def _object_hook_factory(limits: Limits):  # type: ignore[no-untyped-def]
    max_keys = limits.max_object_keys

    def hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        if len(pairs) > max_keys:
            raise _limit("too_many_keys", f"object has more than {max_keys} keys")
        obj = dict(pairs)
        if len(obj) != len(pairs):
            raise _fail("duplicate_key", "object has a duplicate key")
        return obj

    return hook


def _check_string(s: str, max_bytes: int) -> None:
    if len(s) > max_bytes:
        raise _limit("string_too_long", f"string longer than {max_bytes} bytes")
    if s.isascii():
        return
    try:
        n = len(s.encode("utf-8"))
    except UnicodeEncodeError as exc:  # lone surrogate from a \\uD800 escape
        raise _fail("malformed_json", "lone surrogate in string") from exc
    if n > max_bytes:
        raise _limit("string_too_long", f"string longer than {max_bytes} bytes")


def _check_values(value: Any, limits: Limits) -> None:
    """Walk the decoded value iteratively, bounding strings and arrays."""
    max_bytes = limits.max_string_bytes
    max_items = limits.max_list_items
    stack: list[Any] = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            _check_string(item, max_bytes)
        elif isinstance(item, list):
            if len(item) > max_items:
                raise _limit("list_too_long", f"array longer than {max_items} items")
            stack.extend(item)
        elif isinstance(item, dict):
            for key, sub in item.items():
                _check_string(key, max_bytes)
                stack.append(sub)


def _may_break_value_bounds(data: bytes, limits: Limits) -> bool:
    """Cheap byte-level test whether the value walk can find anything to refuse.

    A decoded string never has more UTF-8 bytes than its literal in the frame
    (every escape decodes to fewer bytes than it is written with), and an array
    of n items needs n - 1 commas. So a frame shorter than ``max_string_bytes``
    with fewer commas than ``max_list_items`` and no surrogate escape needs no
    walk -- the common case, and the walk is most of the decode cost.
    """
    return (
        len(data) > limits.max_string_bytes
        or data.count(b",") >= limits.max_list_items
        or _SURROGATE_ESCAPE_RE.search(data) is not None
    )


def decode_json(data: bytes, limits: Limits = DEFAULT) -> Any:
    """Decode one frame payload of strict, bounded UTF-8 JSON.

    Raises :class:`LimitExceeded` or :class:`ProtocolError` with the codes in
    the module docstring; never ``RecursionError``, ``UnicodeDecodeError`` or
    ``json.JSONDecodeError``.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError("decode_json takes bytes")
    data = bytes(data)
    if len(data) > limits.max_frame_bytes:
        raise _limit("frame_too_large", f"frame larger than {limits.max_frame_bytes} bytes")
    # Depth checked on the bytes first, strict UTF-8, then the parser (kedge._internal.jsonutil);
    # its codes (depth_exceeded, malformed_json) are this module's.
    value = jsonutil.loads(
        data,
        max_bytes=limits.max_frame_bytes,
        max_depth=limits.max_json_depth,
        object_pairs_hook=_object_hook_factory(limits),
        parse_constant=_reject_constant,
        parse_float=_parse_float,
    )
    if _may_break_value_bounds(data, limits):
        _check_values(value, limits)
    return value


def encode_json(obj: Any) -> bytes:
    """Compact UTF-8 JSON (no spaces, non-ASCII kept, NaN/Infinity refused)."""
    try:
        return json.dumps(
            obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False
        ).encode("utf-8")
    except (TypeError, ValueError, RecursionError) as exc:
        # UnicodeEncodeError is a ValueError: a lone surrogate in a str.
        raise EncodeError(f"cannot encode as strict JSON: {type(exc).__name__}") from exc
