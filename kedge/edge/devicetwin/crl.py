"""The device CA's CRL on an edge: a strict reader and what a newly fetched one changes.

The edge's mosquitto enforces the CRL (``crlfile``); edgecore only has to decide *whether*
a CRL from the cloud is worth installing and *how* mosquitto must pick it up. Pure: bytes
and datetimes in, a :class:`CrlInfo` or an :class:`Action` out; no ssl, no clock, no
``cryptography`` (an idle edgecore does not load it). The CRL's signature is checked
elsewhere, by OpenSSL, before the file is installed (``devicetwin._check_with_openssl``).

Why the shape check is strict: OpenSSL's file loader reads certificates as well as CRLs
from a PEM file, so a "CRL" carrying a certificate could become a trust anchor. A CRL here
is exactly one ``X509 CRL`` PEM block, nothing else but surrounding whitespace.
"""

from __future__ import annotations

import binascii
import datetime as dt
import enum
from typing import NamedTuple

from kedge._internal.der import DerError, der_integer, der_item, der_time
from kedge.errors import PeerError

PEM_BEGIN = b"-----BEGIN X509 CRL-----"
PEM_END = b"-----END X509 CRL-----"
# The cloud back-dates certificates by a minute for clock skew; a CRL whose thisUpdate is
# further ahead of our clock than this is refused, a nearer one is installed once it is valid.
MAX_CLOCK_SKEW = dt.timedelta(seconds=60)
_CRL_NUMBER_OID = b"\x06\x03\x55\x1d\x14"  # 2.5.29.20, DER-encoded with its tag and length


class BadCrl(PeerError):
    """The cloud sent something that is not a usable CRL of the device CA."""

    code = "bad_crl"


class CrlInfo(NamedTuple):
    this_update: dt.datetime
    next_update: dt.datetime
    number: int | None  # the CRLNumber extension (kedge's cloud: issuing time in seconds)
    revoked: frozenset[int]  # serial numbers


class Action(enum.Enum):
    KEEP = "keep"  # nothing to do (not newer, or nothing changed and no refresh due)
    RELOAD = "reload"  # install; mosquitto re-reads it on SIGHUP (nothing newly revoked)
    RESTART = "restart"  # install and restart mosquitto: SIGHUP leaves revoked devices' live sessions up


# -- reader ----------------------------------------------------------------------------


def pem_to_der(data: bytes, *, max_bytes: int) -> bytes:
    """The DER of a PEM file that is one ``X509 CRL`` block and nothing else."""
    if len(data) > max_bytes:
        raise BadCrl("CRL too large", code="crl_too_large")
    body = data.strip()
    if not body.startswith(PEM_BEGIN) or not body.endswith(PEM_END) or body.count(b"-----") != 4:
        raise BadCrl("not exactly one PEM X509 CRL")
    try:  # line breaks aside, only base64 (strict: no stray characters skipped)
        der = binascii.a2b_base64(b"".join(body[len(PEM_BEGIN):-len(PEM_END)].split()), strict_mode=True)
    except binascii.Error as exc:
        raise BadCrl("CRL PEM is not base64") from exc
    return der


def crl_info_der(der: bytes) -> CrlInfo:
    """thisUpdate, nextUpdate, CRL number and revoked serials of a DER CertificateList
    (RFC 5280 5.1). nextUpdate is required: a CRL without one never goes stale."""
    try:
        return _crl_info(der)
    except DerError as exc:
        raise BadCrl(f"malformed CRL: {exc}") from exc


def _crl_info(der: bytes) -> CrlInfo:
    tag, start, end = der_item(der, 0, len(der))
    if tag != 0x30 or end != len(der):
        raise BadCrl("not a DER CertificateList")
    tag, pos, tbs_end = der_item(der, start, end)
    if tag != 0x30:
        raise BadCrl("no TBSCertList")
    tag, s, e = der_item(der, tbs_end, end)  # signatureAlgorithm
    if tag != 0x30:
        raise BadCrl("no signature algorithm")
    tag, s, e = der_item(der, e, end)  # signatureValue
    if tag != 0x03 or e != end:
        raise BadCrl("no signature, or trailing data")

    tag, s, e = der_item(der, pos, tbs_end)
    if tag == 0x02:  # version (v2 = 1)
        if der_integer(der, tag, s, e) != 1:
            raise BadCrl("unsupported CRL version")
        tag, s, e = der_item(der, e, tbs_end)
    for what in ("signature algorithm", "issuer"):
        if tag != 0x30:
            raise BadCrl(f"no {what} in TBSCertList")
        tag, s, e = der_item(der, e, tbs_end)
    this_update = der_time(tag, der[s:e])
    if e >= tbs_end:
        raise BadCrl("CRL without nextUpdate")
    tag, s, e = der_item(der, e, tbs_end)
    next_update = der_time(tag, der[s:e])
    if next_update <= this_update:
        raise BadCrl("CRL nextUpdate is not after thisUpdate")

    revoked: set[int] = set()
    number = None
    pos = e
    if pos < tbs_end:
        tag, s, e = der_item(der, pos, tbs_end)
        if tag == 0x30:  # revokedCertificates
            entry = s
            while entry < e:
                etag, es, ee = der_item(der, entry, e)
                if etag != 0x30:
                    raise BadCrl("malformed revoked certificate entry")
                stag, ss, se = der_item(der, es, ee)
                serial = der_integer(der, stag, ss, se)
                if serial <= 0:
                    raise BadCrl("revoked serial is not positive")
                revoked.add(serial)
                entry = ee
            pos = e
            if pos < tbs_end:
                tag, s, e = der_item(der, pos, tbs_end)
        if pos < tbs_end:
            if tag != 0xA0 or e != tbs_end:  # [0] EXPLICIT crlExtensions, and nothing after them
                raise BadCrl("unexpected data in TBSCertList")
            number = _crl_number(der, s, e)
    return CrlInfo(this_update, next_update, number, frozenset(revoked))


def _crl_number(der: bytes, start: int, end: int) -> int | None:
    tag, s, e = der_item(der, start, end)
    if tag != 0x30 or e != end:
        raise BadCrl("malformed CRL extensions")
    pos, number = s, None
    while pos < e:
        xtag, xs, xe = der_item(der, pos, e)
        if xtag != 0x30:
            raise BadCrl("malformed CRL extension")
        otag, _, oe = der_item(der, xs, xe)
        if otag != 0x06:
            raise BadCrl("CRL extension without an OID")
        if der[xs:oe] == _CRL_NUMBER_OID:
            vtag, vs, ve = der_item(der, oe, xe)
            if vtag == 0x01:  # critical flag
                vtag, vs, ve = der_item(der, ve, xe)
            if vtag != 0x04:
                raise BadCrl("CRL number is not in an OCTET STRING")
            itag, is_, ie = der_item(der, vs, ve)
            number = der_integer(der, itag, is_, ie)
        pos = xe
    return number


def parse_crl_pem(data: bytes, *, max_bytes: int) -> CrlInfo:
    """What edgecore needs from a PEM CRL; :class:`BadCrl` for anything else."""
    return crl_info_der(pem_to_der(data, max_bytes=max_bytes))


# -- decisions -------------------------------------------------------------------------


def check_current(new: CrlInfo, *, now: dt.datetime) -> float:
    """Seconds until ``new`` is valid by our clock (0: already). Refuses an expired CRL
    (``crl_expired``: mosquitto would refuse every client) and one further ahead than
    MAX_CLOCK_SKEW (``crl_not_yet_valid``)."""
    if new.next_update <= now:
        raise BadCrl("the CRL is past its nextUpdate", code="crl_expired")
    if new.this_update > now + MAX_CLOCK_SKEW:
        raise BadCrl("the CRL's thisUpdate is too far ahead of this edge's clock", code="crl_not_yet_valid")
    return max(0.0, (new.this_update - now).total_seconds())


def _newer(new: CrlInfo, old: CrlInfo) -> bool:
    if new.number is not None and old.number is not None and new.number != old.number:
        return new.number > old.number
    return new.this_update > old.this_update


def decide(installed: CrlInfo | None, new: CrlInfo, *, now: dt.datetime) -> Action:
    """What to do with ``new`` (already checked current) given the ``installed`` CRL.

    Never roll back to an older CRL (a stale or replayed answer). A newly revoked serial
    restarts mosquitto: a SIGHUP makes it refuse new handshakes of that certificate but
    leaves the device's live session up (observed with mosquitto 2.0.11). Serials that
    only disappeared (records of expired certificates are dropped) or a refresh before the
    installed CRL ages past two thirds of its lifetime need only a reload."""
    if installed is None:
        return Action.RESTART
    if not _newer(new, installed):
        return Action.KEEP
    if new.revoked - installed.revoked:
        return Action.RESTART
    if new.revoked != installed.revoked:
        return Action.RELOAD
    refresh_at = installed.this_update + (installed.next_update - installed.this_update) * 2 / 3
    return Action.RELOAD if now >= refresh_at else Action.KEEP


def poll_delay(installed: CrlInfo | None, *, interval_s: float, now: dt.datetime) -> float:
    """Seconds until the next CRL poll: the configured interval, but at least four polls
    within what is left of the installed CRL's lifetime (never less than a second)."""
    if installed is None:
        return min(interval_s, 1.0)
    left = (installed.next_update - now).total_seconds()
    return max(1.0, min(interval_s, left / 4))
