"""resourceVersion text to an integer: the one parser every component uses.

A resourceVersion comes from a peer (a client's query or body, an API server's list or watch,
the cloud's tunnel message). Only ASCII decimal digits are accepted, matched in full and at
most :data:`MAX_RV_DIGITS` long: ``str.isdigit`` alone accepts ``"²"`` and other scripts'
digits (``int()`` then refuses the first and silently converts the second), and a bound keeps
``int()`` cheap. Callers decide what "not an rv" means to them (an error code, or a version
that never wins).

Pure: no I/O, no clock.
"""

from __future__ import annotations

import re

__all__ = ["MAX_RV", "MAX_RV_DIGITS", "parse"]

MAX_RV = 2**63 - 1  # the largest SQLite INTEGER
MAX_RV_DIGITS = 19  # len(str(MAX_RV))
_DECIMAL = re.compile(r"[0-9]{1,%d}" % MAX_RV_DIGITS)
_CANONICAL = re.compile(r"[1-9][0-9]{0,%d}" % (MAX_RV_DIGITS - 1))


def parse(value: object, *, canonical: bool = False) -> int | None:
    """The resourceVersion ``value`` as an int, or None when it is not one.

    Accepted: a ``str`` of 1..19 ASCII digits. ``canonical`` also refuses a leading zero (so
    ``"7"`` and ``"007"`` are never two versions of one object), ``"0"``, and values above
    :data:`MAX_RV`.
    """
    if not isinstance(value, str):
        return None
    if canonical:
        if not _CANONICAL.fullmatch(value):
            return None
        number = int(value)
        return number if number <= MAX_RV else None
    return int(value) if _DECIMAL.fullmatch(value) else None
