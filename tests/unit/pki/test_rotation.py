"""kedge.pki.rotation: cross-certificates, the bundle an edge accepts, the rotation record."""

from __future__ import annotations

import datetime as dt

import pytest

from kedge.errors import StateError
from kedge.pki import ca as pki
from kedge.pki.rotation import BundleError, RotationRecord, accept_bundle, ca_name, cross_certify, issuer_of

NOW = dt.datetime(2030, 1, 1, tzinfo=dt.timezone.utc)


@pytest.fixture(scope="module")
def cas():
    old_key, old = pki.create_ca("kedge-ca", now=NOW)
    new_key, new = pki.create_ca(ca_name(old), now=NOW)
    return old_key, old, new_key, new


def test_next_ca_names_count_generations():
    _, first = pki.create_ca("kedge-ca", now=NOW)
    assert ca_name(first) == "kedge-ca-2"
    _, second = pki.create_ca("kedge-ca-2", now=NOW)
    assert ca_name(second) == "kedge-ca-3"
    _, odd = pki.create_ca("someone's CA", now=NOW)
    assert ca_name(odd) == "kedge-ca-2"


def test_cross_certificate_carries_subject_and_key_signed_by_the_issuer(cas):
    old_key, old, _, new = cas
    cross = cross_certify(old_key, old, new, now=NOW)
    assert cross.subject == new.subject and cross.issuer == old.subject
    assert cross.public_key() == new.public_key()
    cross.verify_directly_issued_by(old)
    assert cross.not_valid_after_utc <= min(old.not_valid_after_utc, new.not_valid_after_utc)


def test_bundle_with_a_cross_certified_ca_is_accepted_in_either_direction(cas):
    old_key, old, new_key, new = cas
    forward, backward = cross_certify(old_key, old, new, now=NOW), cross_certify(new_key, new, old, now=NOW)
    assert accept_bundle([old], [new, old], [forward, backward], now=NOW) == [new, old]
    assert accept_bundle([new], [new, old], [forward, backward], now=NOW) == [new, old]
    # finish: dropping a trusted CA needs no evidence.
    assert accept_bundle([new, old], [new], now=NOW) == [new]
    assert accept_bundle([old], [old], now=NOW) == [old]


@pytest.mark.parametrize("case, code", [
    ("empty", "bundle_empty"),
    ("unvouched", "bundle_unvouched"),
    ("wrong_direction", "bundle_unvouched"),
    ("drops_trust", "bundle_drops_trust"),
    ("leaf", "bundle_not_ca"),
    ("expired", "bundle_not_ca"),
    ("duplicate", "bundle_malformed"),
    ("too_many", "bundle_too_large"),
    ("nothing_trusted", "bundle_unvouched"),
])
def test_bundles_an_edge_must_refuse(cas, case, code):
    old_key, old, new_key, new = cas
    forward = cross_certify(old_key, old, new, now=NOW)
    backward = cross_certify(new_key, new, old, now=NOW)
    _, leaf = pki.issue_server_cert(old_key, old, common_name="x", sans=["127.0.0.1"], now=NOW)
    _, stale = pki.create_ca("kedge-ca-9", now=NOW - dt.timedelta(days=20), validity=dt.timedelta(days=1))
    trusted, offered, cross = {
        "empty": ([old], [], [forward]),
        "unvouched": ([old], [old, new], []),
        "wrong_direction": ([old], [old, new], [backward]),  # old certified by new says nothing about new
        "drops_trust": ([old], [new], [forward]),
        "leaf": ([old], [old, leaf], []),
        "expired": ([old], [old, stale], []),
        "duplicate": ([old], [old, old], []),
        "too_many": ([old], [old] * 5, []),
        "nothing_trusted": ([], [new], [forward]),
    }[case]
    with pytest.raises(BundleError) as info:
        accept_bundle(trusted, offered, cross, now=NOW)
    assert info.value.code == code


def test_issuer_of_names_the_signing_ca(cas):
    old_key, old, _, new = cas
    _, leaf = pki.issue_client_cert(old_key, old, common_name="u", organizations=["g"], now=NOW)
    assert issuer_of(leaf, [new, old]) is old
    assert issuer_of(leaf, [new]) is None


def test_rotation_record_is_strict():
    rec = RotationRecord(phase="rotating", current="a", previous="b", renew_now=True, renew_requested=1)
    assert RotationRecord.from_dict(rec.to_dict()) == rec
    for bad in ({"phase": "halfway"}, {"phase": "rotating", "current": "a"}, {"surprise": 1}, [],
                {"renew_requested": -1}, {"renew_now": "yes"}):
        with pytest.raises(StateError):
            RotationRecord.from_dict(bad)
