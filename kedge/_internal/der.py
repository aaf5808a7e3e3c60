"""A strict, bounded reader of the few DER items kedge walks without ``cryptography``.

Edgecore reads its certificates' validity (:mod:`kedge.tls`) and the device CA's CRL
(:mod:`kedge.edge.devicetwin.crl`) without loading ``cryptography`` or ``ssl``; both walk
DER with these helpers. Pure: bytes in, items, integers and datetimes out; no ssl, no
clock. Anything that is not minimal, in-bounds DER raises :class:`DerError`, which each
caller turns into its own error at its boundary.
"""

from __future__ import annotations

import datetime as dt

from kedge.errors import KedgeError

TAG_INTEGER = 0x02
TAG_UTC_TIME = 0x17
TAG_GENERALIZED_TIME = 0x18


class DerError(KedgeError):
    """Bytes that are not the DER expected here (truncated, non-minimal, overrunning, mistyped)."""

    code = "bad_der"


def der_item(der: bytes, pos: int, end: int) -> tuple[int, int, int]:
    """(tag, start of contents, end of contents) of the DER item at ``pos``; all within ``end``."""
    if pos + 2 > end:
        raise DerError("truncated DER")
    tag, first = der[pos], der[pos + 1]
    if tag & 0x1F == 0x1F:
        raise DerError("unexpected high tag number")
    pos += 2
    if first < 0x80:
        length = first
    else:
        n = first & 0x7F
        if n == 0 or n > 4 or pos + n > end:  # indefinite length is not DER; 4 bytes is far beyond any bound
            raise DerError("bad DER length")
        length = int.from_bytes(der[pos:pos + n], "big")
        if der[pos] == 0 or length < 0x80:  # DER: minimal length encoding
            raise DerError("non-minimal DER length")
        pos += n
    if pos + length > end:
        raise DerError("DER item overruns its container")
    return tag, pos, pos + length


def der_time(tag: int, raw: bytes) -> dt.datetime:
    """RFC 5280 4.1.2.5 / 5.1.2.4: UTCTime YYMMDDHHMMSSZ (YY < 50 is 20YY) or GeneralizedTime
    YYYYMMDDHHMMSSZ, as an aware UTC datetime."""
    if tag not in (TAG_UTC_TIME, TAG_GENERALIZED_TIME) or len(raw) != (13 if tag == TAG_UTC_TIME else 15) \
            or raw[-1:] != b"Z" or not all(0x30 <= b <= 0x39 for b in raw[:-1]):
        raise DerError("time is not a UTCTime or GeneralizedTime in Z form")
    digits = raw[:-1].decode("ascii")
    if tag == TAG_UTC_TIME:
        year = int(digits[:2])
        year += 2000 if year < 50 else 1900
        digits = digits[2:]
    else:
        year = int(digits[:4])
        digits = digits[4:]
    month, day, hour, minute, second = (int(digits[i:i + 2]) for i in range(0, 10, 2))
    try:
        return dt.datetime(year, month, day, hour, minute, second, tzinfo=dt.timezone.utc)
    except ValueError as exc:
        raise DerError("time out of range") from exc


def der_integer(der: bytes, tag: int, start: int, end: int) -> int:
    """The INTEGER whose contents are ``der[start:end]`` (its tag ``tag``)."""
    if tag != TAG_INTEGER or start == end:
        raise DerError("expected an INTEGER")
    return int.from_bytes(der[start:end], "big", signed=True)
