"""The newest-resourceVersion-wins decision and tombstone pruning, as tables."""

from __future__ import annotations

import pytest

from kedge.edge.metamanager.decide import (
    BadResourceVersion,
    Decision,
    PrunePolicy,
    UnsupportedOperation,
    decide,
    format_rv,
    parse_rv,
    tombstones_to_prune,
)
from kedge.errors import PeerError, StateError

A, S, D = Decision.APPLY, Decision.STALE, Decision.DUPLICATE

DECISIONS = [
    # stored,            operation, rv,   expected
    (None,               "insert",  "5",  A),
    (None,               "update",  "5",  A),
    (None,               "patch",   "5",  A),
    (None,               "delete",  "5",  A),  # tombstone for a key never seen
    (("5", False),       "update",  "6",  A),
    (("5", False),       "patch",   "6",  A),
    (("5", False),       "insert",  "6",  A),
    (("5", False),       "delete",  "6",  A),
    (("5", False),       "update",  "4",  S),
    (("5", False),       "delete",  "4",  S),
    (("5", False),       "update",  "5",  D),
    (("5", False),       "insert",  "5",  D),
    (("5", False),       "delete",  "5",  A),  # delete-what-you-reported (resync)
    (("5", True),        "delete",  "5",  D),
    (("5", True),        "insert",  "5",  S),  # no resurrection at the same rv
    (("5", True),        "update",  "4",  S),  # stale insert after delete
    (("5", True),        "delete",  "3",  S),
    (("5", True),        "insert",  "6",  A),  # re-created later
    (("5", True),        "delete",  "9",  A),
    (("9", False),       "update",  "10", A),  # integers, not strings: "10" > "9"
    (("10", False),      "update",  "9",  S),
    (("9223372036854775806", False), "update", "9223372036854775807", A),
]


@pytest.mark.parametrize(("stored", "op", "rv", "expected"), DECISIONS)
def test_decide_table(stored, op, rv, expected):
    assert decide(stored, op, rv) is expected


@pytest.mark.parametrize(("stored", "op", "rv", "expected"), [
    (("5", True), "insert", "5", A),   # a released configmap/secret needed again, same version
    (("5", True), "update", "5", A),
    (("5", True), "insert", "4", S),   # never an older one
    (("5", True), "delete", "5", D),
    (("5", False), "insert", "5", D),  # revivable only matters for tombstones
])
def test_revivable_tombstone_lets_the_same_version_back_and_nothing_older(stored, op, rv, expected):
    assert decide(stored, op, rv, revivable=True) is expected


BAD_RVS = ["", "0", "007", "-1", "+5", " 5", "5 ", "1e3", "5.0", "abc", "9223372036854775808",
           "99999999999999999999", "٣", None, 5, 5.0, b"5"]


@pytest.mark.parametrize("rv", BAD_RVS, ids=repr)
def test_unorderable_resource_version_is_refused_with_a_code(rv):
    with pytest.raises(BadResourceVersion) as info:
        decide(("5", False), "update", rv)
    assert info.value.code == "bad_resource_version"
    assert isinstance(info.value, PeerError)


@pytest.mark.parametrize("op", ["query", "response", "keepalive", "error", "upload", "", "DELETE"])
def test_operations_that_do_not_write_are_refused(op):
    with pytest.raises(UnsupportedOperation) as info:
        decide(None, op, "5")
    assert info.value.code == "unsupported_operation"


def test_corrupt_stored_rv_is_our_fault_not_the_peers():
    with pytest.raises(StateError) as info:
        decide(("x", False), "update", "5")
    assert info.value.code == "edge_store_corrupt"


@pytest.mark.parametrize(("text", "value"), [("1", 1), ("42", 42), ("9223372036854775807", 2**63 - 1)])
def test_rv_round_trip(text, value):
    assert parse_rv(text) == value and format_rv(value) == text


@pytest.mark.parametrize("value", [0, -1, 2**63, True])
def test_format_rv_refuses_values_that_cannot_be_stored(value):
    with pytest.raises(StateError):
        format_rv(value)


PRUNE = [
    # tombstones (key, rv, deleted_at), now, policy (age, count), dropped
    ([], 100.0, (10.0, 5), []),
    ([("a", 1, 95.0), ("b", 2, 80.0)], 100.0, (10.0, 5), ["b"]),  # b is older than 10 s
    ([("a", 1, 90.0)], 100.0, (10.0, 5), []),  # exactly max age survives
    ([("a", 1, 99.0), ("b", 2, 98.0), ("c", 3, 97.0)], 100.0, (60.0, 2), ["c"]),  # count: newest 2 kept
    ([("a", 1, 99.0), ("b", 7, 99.0), ("c", 3, 99.0)], 100.0, (60.0, 1), ["c", "a"]),  # tie on time: higher rv newer
    ([("a", 1, 99.0)], 100.0, (60.0, 0), ["a"]),
    ([("a", 1, 10.0), ("b", 2, 99.0), ("c", 3, 20.0)], 100.0, (50.0, 2), ["c", "a"]),
]


@pytest.mark.parametrize(("tombstones", "now", "policy", "dropped"), PRUNE)
def test_tombstone_pruning_table(tombstones, now, policy, dropped):
    got = tombstones_to_prune(tombstones, now=now, policy=PrunePolicy(max_age_s=policy[0], max_count=policy[1]))
    assert got == dropped


@pytest.mark.parametrize("kw", [{"max_age_s": 0}, {"max_age_s": -1.0}, {"max_count": -1}, {"max_count": 1.5},
                                {"max_age_s": True}])
def test_prune_policy_is_validated(kw):
    with pytest.raises(ValueError):
        PrunePolicy(**kw)
