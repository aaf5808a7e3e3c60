"""Bounded JSON: the one depth scanner, value walker and loader kedge's parsers share.

``json.loads`` recurses once per nesting level, so ``[[[[...`` from a peer reaches Python's
recursion limit; :func:`check_depth` refuses such input on the bytes, before the parser runs,
without recursion. String literals are blanked with one regular expression, every bracket is
reduced to ``[``/``]``, and innermost ``[]`` pairs are deleted at most ``max_depth`` times
(each pass peels one nesting level, in C). What is left tells the answer: nothing -- balanced
and shallow enough; a ``[]`` still present -- deeper than allowed; otherwise unbalanced, so
malformed (or too deep, when more openers than the bound are left unclosed). Because the
parser's recursion depth never exceeds the number of open brackets in the prefix it has read,
``json.loads`` is only ever called on input whose recursion is bounded by ``max_depth``.

Errors (callers wrap them into their own types and codes at their boundary):

===================  ========================  ==========================================
code                 class                     cause
===================  ========================  ==========================================
``too_large``        :class:`LimitExceeded`    more than ``max_bytes``
``depth_exceeded``   :class:`LimitExceeded`    nesting deeper than ``max_depth``
``too_many_values``  :class:`LimitExceeded`    more than ``max_nodes`` values (if given)
``malformed_json``   :class:`ProtocolError`    not strict UTF-8, unbalanced, not JSON --
                                               ``NaN``, ``Infinity`` and ``-Infinity``
                                               included (RFC 8259 has no such literals;
                                               Go's ``encoding/json`` refuses them too)
===================  ========================  ==========================================

Pure: no I/O, no clock.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from typing import Any, NoReturn

from kedge.errors import KedgeError, LimitExceeded, ProtocolError

__all__ = ["check_depth", "loads", "refuse_constant", "within_bounds"]

# A JSON string literal: quote, runs of ordinary bytes, escapes, then the closing quote -- or the
# end of input, for an unterminated string. Quote and backslash bytes never occur inside
# multi-byte UTF-8 sequences, so working on bytes is exact. The pattern can never fail once it
# has seen a quote, and each byte has exactly one way to be consumed, so the substitution is
# linear: a pattern that could fail on an unterminated string would be retried from every later
# quote (``"\"\"\"...`` took 16 s for 60 KB before this). Brackets after an unterminated string
# are swallowed, as the parser never gets past it either. DOTALL so that an escaped newline
# (invalid JSON) is consumed as the parser would.
_STRING_RE = re.compile(rb'"[^"\\]*(?:\\.?[^"\\]*)*(?:"|\Z)', re.DOTALL)
# Keep only the bracket bytes; map both kinds to one pair so nesting of mixed kinds is counted
# together (a kind mismatch is the parser's job to refuse).
_BRACKETS_ONLY = bytes(range(256)).translate(bytes.maketrans(b"{}", b"[]"))
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def refuse_constant(name: str) -> NoReturn:
    """The default ``parse_constant`` of :func:`loads`: ``NaN``/``Infinity``/``-Infinity`` are
    not JSON, so a document holding one is ``malformed_json``."""
    raise ProtocolError(f"{name} is not a JSON value", code="malformed_json")


def _too_deep(max_depth: int) -> LimitExceeded:
    return LimitExceeded(f"JSON nesting deeper than {max_depth}", code="depth_exceeded")


def check_depth(data: bytes | str, max_depth: int) -> None:
    """Refuse nesting deeper than ``max_depth`` without parsing (see the module doc).

    Raises :class:`LimitExceeded` ``depth_exceeded``, or :class:`ProtocolError`
    ``malformed_json`` for unbalanced brackets.
    """
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogatepass")  # only quotes, backslashes and brackets matter
    if data.count(b"[") + data.count(b"{") <= max_depth:
        return  # cannot nest deeper than the number of openers, strings or not
    skeleton = _STRING_RE.sub(b"", data).translate(_BRACKETS_ONLY, _NOT_BRACKETS)
    if not skeleton:
        return
    # Fast path for bombs: a run of max_depth + 1 openers is that deep already.
    if b"[" * (max_depth + 1) in skeleton:
        raise _too_deep(max_depth)
    for _ in range(max_depth):
        if b"[]" not in skeleton:
            break
        skeleton = skeleton.replace(b"[]", b"")
        if not skeleton:
            return
    if not skeleton:
        return
    if b"[]" in skeleton:
        raise _too_deep(max_depth)
    # Residue has the shape ']' * a + '[' * b: unbalanced brackets. The trailing unclosed openers
    # are all open at once at the end of the input.
    unclosed = len(skeleton) - len(skeleton.rstrip(b"["))
    if unclosed > max_depth:
        raise _too_deep(max_depth)
    raise ProtocolError("unbalanced brackets", code="malformed_json")


def finite_float(text: str) -> float:
    """``parse_float`` that refuses numbers a float cannot hold (``1e999`` would be ``inf``: Go's
    decoder says "out of range", and ``inf`` could never be written back as JSON)."""
    value = float(text)
    if math.isinf(value):
        raise ValueError("number out of range")
    return value


def loads(
    data: bytes | str,
    *,
    max_bytes: int,
    max_depth: int,
    max_nodes: int | None = None,
    object_pairs_hook: Callable[[list[tuple[str, Any]]], Any] | None = None,
    parse_constant: Callable[[str], Any] = refuse_constant,
    parse_float: Callable[[str], Any] = finite_float,
) -> Any:
    """Decode one JSON document of at most ``max_bytes`` (``len(data)``), ``max_depth`` and,
    if given, ``max_nodes`` values (counted after parsing; ``max_bytes`` bounds the parse).

    Bytes must be strict UTF-8 (``json.loads(bytes)`` would sniff UTF-16/32). ``NaN`` and
    ``Infinity`` are refused unless the caller passes its own ``parse_constant``, and numbers out
    of a float's range (``1e999``) unless it passes its own ``parse_float``. A
    :class:`KedgeError` raised by a hook propagates unchanged; everything else the parser
    raises becomes one of the errors in the module doc.
    """
    if len(data) > max_bytes:
        raise LimitExceeded(f"JSON document larger than {max_bytes} bytes", code="too_large")
    check_depth(data, max_depth)
    if isinstance(data, (bytes, bytearray)):
        try:
            text = bytes(data).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ProtocolError("JSON document is not valid UTF-8", code="malformed_json") from exc
    else:
        text = data
    try:
        value = json.loads(text, object_pairs_hook=object_pairs_hook, parse_constant=parse_constant,
                           parse_float=parse_float)
    except KedgeError:
        raise
    except RecursionError as exc:  # unreachable after check_depth; belt and braces
        raise _too_deep(max_depth) from exc
    except ValueError as exc:  # JSONDecodeError, and int() digit-limit errors
        raise ProtocolError("not valid JSON", code="malformed_json") from exc
    # Brackets nest at most max_depth deep, so values at most one deeper: only the count can fail.
    if max_nodes is not None and not within_bounds(value, max_depth + 1, max_nodes):
        raise LimitExceeded(f"JSON document with more than {max_nodes} values", code="too_many_values")
    return value


def within_bounds(value: Any, max_depth: int, max_nodes: int) -> bool:
    """Whether a decoded value (from JSON, YAML or protobuf) nests at most ``max_depth`` deep
    and has at most ``max_nodes`` values in all; walked iteratively, so never ``RecursionError``."""
    stack = [(value, 1)]
    seen = 0
    while stack:
        v, d = stack.pop()
        seen += 1
        if d > max_depth or seen > max_nodes:
            return False
        if isinstance(v, dict):
            stack.extend((x, d + 1) for x in v.values())
        elif isinstance(v, list):
            stack.extend((x, d + 1) for x in v)
    return True
