"""kedge._internal.der: bytes in, items/times/integers out, DerError for anything not minimal DER."""

from __future__ import annotations

import datetime as dt

import pytest

from kedge._internal.der import DerError, der_integer, der_item, der_time


def test_item_reads_short_and_long_lengths_within_bounds():
    assert der_item(b"\x30\x03\x02\x01\x05", 0, 5) == (0x30, 2, 5)
    long = b"\x04\x81\x80" + b"x" * 0x80
    assert der_item(long, 0, len(long)) == (0x04, 3, len(long))


@pytest.mark.parametrize("data", [
    b"\x30",  # truncated
    b"\x1f\x00",  # high tag number
    b"\x04\x80",  # indefinite length
    b"\x04\x81\x05xxxxx",  # long form for a short length
    b"\x04\x82\x00\x80" + b"x" * 0x80,  # leading zero length byte
    b"\x04\x05xx",  # overruns
])
def test_item_refuses_what_is_not_minimal_in_bounds_der(data):
    with pytest.raises(DerError):
        der_item(data, 0, len(data))


def test_time_reads_utc_and_generalized_time():
    utc = dt.timezone.utc
    assert der_time(0x17, b"491231235959Z") == dt.datetime(2049, 12, 31, 23, 59, 59, tzinfo=utc)
    assert der_time(0x17, b"500101000000Z") == dt.datetime(1950, 1, 1, tzinfo=utc)
    assert der_time(0x18, b"20500101000000Z") == dt.datetime(2050, 1, 1, tzinfo=utc)


@pytest.mark.parametrize("tag,raw", [(0x17, b"4912312359Z"), (0x18, b"491231235959Z"), (0x17, b"491231235959+"),
                                     (0x04, b"491231235959Z"), (0x17, b"491331235959Z")])
def test_time_refuses_other_forms_and_impossible_dates(tag, raw):
    with pytest.raises(DerError):
        der_time(tag, raw)


def test_integer_is_signed_and_typed():
    assert der_integer(b"\x02\x01\xff", 0x02, 2, 3) == -1
    with pytest.raises(DerError):
        der_integer(b"\x04\x01\x01", 0x04, 2, 3)
    with pytest.raises(DerError):
        der_integer(b"\x02\x00", 0x02, 2, 2)
