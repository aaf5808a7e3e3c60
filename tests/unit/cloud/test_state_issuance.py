"""Issuance serialised with revocation, and the per-node issuance rate (CloudState.record_cert)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from kedge.cloud.state import CloudState
from kedge.errors import AuthenticationError, RateLimited
from kedge.pki import tokens

NOW = dt.datetime(2026, 6, 1, 12, 0, 0, tzinfo=dt.timezone.utc)
SEC = dt.timedelta(seconds=1)
HOUR = dt.timedelta(hours=1)


@pytest.fixture
def state(tmp_path: Path):
    s = CloudState(tmp_path / "state.db")
    yield s
    s.close()


def _record(state: CloudState, serial: int, at: dt.datetime, **kw) -> None:
    state.record_cert(serial=serial, node="edge-a", not_before=at - 60 * SEC, not_after=at + HOUR, issued_at=at, **kw)


def _token(state: CloudState, at: dt.datetime) -> str:
    tok = tokens.generate("0" * 64)
    state.add_token(token_id=tok.token_id, node="edge-a", secret_hash=tokens.hash_secret(tok.token_id, tok.secret),
                    expires_at=at + HOUR, created_at=at)
    return tok.token_id


def test_renewal_recorded_after_its_parent_was_revoked_is_refused_and_listed_revoked(state):
    _record(state, 1, NOW)
    state.revoke_node("edge-a", now=NOW + SEC)
    gen = state.generation()
    with pytest.raises(AuthenticationError) as info:
        _record(state, 2, NOW + 2 * SEC, renewed_from=1)  # a later clock than the revocation's
    assert info.value.code == "revoked"
    assert {s for s, _ in state.revoked_serials()} == {1, 2} and state.generation() > gen


def test_bootstrap_with_a_token_from_before_the_revocation_is_refused(state):
    old = _token(state, NOW)
    state.revoke_node("edge-a", now=NOW + SEC)
    with pytest.raises(AuthenticationError):
        _record(state, 3, NOW + 2 * SEC, token_id=old)
    fresh = _token(state, NOW + 3 * SEC)  # re-joining with a token made after the revocation works
    _record(state, 4, NOW + 4 * SEC, token_id=fresh)
    assert not state.is_cert_revoked(node="edge-a", serial=4)


def test_revocation_covers_a_certificate_recorded_before_it_with_a_later_clock(state):
    _record(state, 5, NOW + 10 * SEC, renewed_from=None)
    assert state.revoke_node("edge-a", now=NOW) == 1  # the CLI read its clock first, then waited
    assert state.is_cert_revoked(node="edge-a", serial=5)
    assert 5 in {s for s, _ in state.revoked_serials()}


def test_issuance_rate_per_node(state):
    _record(state, 10, NOW)
    _record(state, 11, NOW + SEC, renewed_from=10, max_recent=(3, HOUR))
    _record(state, 12, NOW + 2 * SEC, renewed_from=11, max_recent=(3, HOUR))
    with pytest.raises(RateLimited) as info:
        _record(state, 13, NOW + 3 * SEC, renewed_from=12, max_recent=(3, HOUR))
    assert info.value.code == "renewal_rate_limited"
    assert not state._read("SELECT 1 FROM certs WHERE serial = '13'")  # nothing recorded
    _record(state, 14, NOW + HOUR + 3 * SEC, renewed_from=12, max_recent=(3, HOUR))  # an hour on


def test_a_token_is_usable_until_it_is_used_revoked_or_expired_and_the_check_needs_no_secret(state):
    tok = tokens.generate("0" * 64)
    state.add_token(token_id=tok.token_id, node="edge-a", secret_hash=tokens.hash_secret(tok.token_id, tok.secret),
                    expires_at=NOW + HOUR, created_at=NOW)
    assert state.token_usable(token_id=tok.token_id, now=NOW)
    assert not state.token_usable(token_id=tok.token_id, now=NOW + HOUR)
    assert not state.token_usable(token_id="zzzzzz", now=NOW)
    assert not state.token_usable(token_id="bad id; --", now=NOW)
    state.consume_token(token_id=tok.token_id, secret=tok.secret, now=NOW)
    assert not state.token_usable(token_id=tok.token_id, now=NOW)
    revoked = _token(state, NOW)
    state.revoke_token(revoked, now=NOW)
    assert not state.token_usable(token_id=revoked, now=NOW)


def test_a_node_has_a_valid_certificate_until_revoked_and_again_after_re_joining(state):
    assert not state.node_has_valid_cert("edge-a", now=NOW)
    _record(state, 1, NOW)
    assert state.node_has_valid_cert("edge-a", now=NOW)
    assert not state.node_has_valid_cert("edge-a", now=NOW + 2 * HOUR)  # expired
    state.revoke_node("edge-a", now=NOW + SEC)
    assert not state.node_has_valid_cert("edge-a", now=NOW + 2 * SEC)
    _record(state, 2, NOW + 3 * SEC, token_id=_token(state, NOW + 2 * SEC))
    assert state.node_has_valid_cert("edge-a", now=NOW + 4 * SEC)
