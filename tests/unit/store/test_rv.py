"""kedge.store.rv: the one resourceVersion parser (API server, store, controllers, edge)."""

from __future__ import annotations

import pytest

from kedge.store import rv


@pytest.mark.parametrize("text,value", [("0", 0), ("42", 42), ("007", 7), ("9" * 19, int("9" * 19))])
def test_ascii_decimals_up_to_19_digits_parse(text, value):
    assert rv.parse(text) == value


@pytest.mark.parametrize("bad", ["", "²", "١٢", "1²", " 1", "1 ", "1\n", "+1", "-1", "1_000", "1.0", "1" * 20,
                                 None, 5, b"5", 5.0])
def test_superscripts_other_scripts_signs_and_long_numbers_are_not_rvs(bad):
    assert rv.parse(bad) is None
    assert rv.parse(bad, canonical=True) is None


@pytest.mark.parametrize("bad", ["0", "007", str(rv.MAX_RV + 1), "9" * 19])
def test_canonical_refuses_leading_zeros_zero_and_values_beyond_sqlite(bad):
    assert rv.parse(bad, canonical=True) is None


def test_canonical_accepts_the_whole_range():
    assert rv.parse("1", canonical=True) == 1
    assert rv.parse(str(rv.MAX_RV), canonical=True) == rv.MAX_RV
