"""kedge.cloud.state: single-use tokens, certificate records and revocation, on real SQLite.

Concurrency is tested for real: several connections in threads, and two separate
processes racing for the same tokens on one database file.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sqlite3
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from kedge.errors import AuthenticationError, ConfigError, StateError
from kedge.cloud.state import CloudState
from kedge.pki import ca, tokens

REPO = Path(__file__).resolve().parents[3]
NOW = dt.datetime(2026, 6, 1, 12, 0, 0, tzinfo=dt.timezone.utc)
CA_HASH = "0" * 64
SEC = dt.timedelta(seconds=1)
DAY_ = dt.timedelta(days=1)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    d = tmp_path / "cloud"
    d.mkdir(mode=0o700)
    return d / "state.db"


@pytest.fixture
def state(db_path: Path):
    s = CloudState(db_path)
    yield s
    s.close()


def _add(state: CloudState, node: str = "edge-a", *, ttl: dt.timedelta = dt.timedelta(minutes=15), at=NOW):
    tok = tokens.generate(CA_HASH)
    state.add_token(
        token_id=tok.token_id,
        node=node,
        secret_hash=tokens.hash_secret(tok.token_id, tok.secret),
        expires_at=at + ttl,
        created_at=at,
    )
    return tok


def _code(fn, *args, **kwargs) -> str:
    with pytest.raises(AuthenticationError) as err:
        fn(*args, **kwargs)
    return err.value.code


# ----------------------------------------------------------------------------- file safety


def test_state_db_and_its_wal_files_are_0600(state: CloudState, db_path: Path) -> None:
    _add(state)
    files = sorted(p.name for p in db_path.parent.iterdir())
    assert files == ["state.db", "state.db-shm", "state.db-wal"]
    for p in db_path.parent.iterdir():
        assert stat.S_IMODE(p.stat().st_mode) == 0o600, p.name


def test_state_db_is_private_even_under_a_permissive_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        s = CloudState(tmp_path / "state.db")
    finally:
        os.umask(old)
    s.close()
    assert stat.S_IMODE((tmp_path / "state.db").stat().st_mode) == 0o600


def test_world_readable_existing_state_db_is_refused(db_path: Path) -> None:
    CloudState(db_path).close()
    os.chmod(db_path, 0o644)
    with pytest.raises(StateError) as err:
        CloudState(db_path)
    assert err.value.code == "insecure_permissions"


def test_symlinked_state_db_is_not_followed(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere.db"
    link = tmp_path / "state.db"
    link.symlink_to(target)
    with pytest.raises(StateError):
        CloudState(link)
    assert not target.exists()


def test_state_from_a_newer_kedge_is_refused(db_path: Path) -> None:
    CloudState(db_path).close()
    raw = sqlite3.connect(db_path)
    raw.execute("PRAGMA user_version=99")
    raw.close()
    with pytest.raises(StateError) as err:
        CloudState(db_path)
    assert err.value.code == "schema_too_new"


# ----------------------------------------------------------------------------- tokens


def test_token_consumed_once_returns_its_node(state: CloudState) -> None:
    tok = _add(state, "edge-a")
    assert state.consume_token(token_id=tok.token_id, secret=tok.secret, now=NOW) == "edge-a"


def test_token_replay_is_refused_as_used(state: CloudState) -> None:
    tok = _add(state)
    state.consume_token(token_id=tok.token_id, secret=tok.secret, now=NOW)
    assert _code(state.consume_token, token_id=tok.token_id, secret=tok.secret, now=NOW + SEC) == "token_used"


def test_expired_token_is_refused(state: CloudState) -> None:
    tok = _add(state, ttl=dt.timedelta(minutes=15))
    at_expiry = NOW + dt.timedelta(minutes=15)
    assert _code(state.consume_token, token_id=tok.token_id, secret=tok.secret, now=at_expiry) == "token_expired"
    # ...and refusing it did not consume it: one microsecond earlier it still works.
    just_before = at_expiry - dt.timedelta(microseconds=1)
    assert state.consume_token(token_id=tok.token_id, secret=tok.secret, now=just_before) == "edge-a"


def test_wrong_secret_does_not_burn_the_token(state: CloudState) -> None:
    tok = _add(state)
    wrong = tokens.generate(CA_HASH).secret
    for _ in range(3):
        assert _code(state.consume_token, token_id=tok.token_id, secret=wrong, now=NOW) == "token_bad_secret"
    assert state.consume_token(token_id=tok.token_id, secret=tok.secret, now=NOW) == "edge-a"


def test_wrong_secret_reveals_nothing_about_a_used_or_expired_token(state: CloudState) -> None:
    tok = _add(state)
    state.consume_token(token_id=tok.token_id, secret=tok.secret, now=NOW)
    wrong = tokens.generate(CA_HASH).secret
    assert _code(state.consume_token, token_id=tok.token_id, secret=wrong, now=NOW) == "token_bad_secret"
    assert _code(state.consume_token, token_id=tok.token_id, secret=wrong, now=NOW + 365 * 86400 * SEC) == (
        "token_bad_secret"
    )


def test_unknown_token_is_refused(state: CloudState) -> None:
    tok = tokens.generate(CA_HASH)
    assert _code(state.consume_token, token_id=tok.token_id, secret=tok.secret, now=NOW) == "token_unknown"
    assert _code(state.consume_token, token_id=None, secret=tok.secret, now=NOW) == "token_unknown"


def test_token_for_node_a_yields_node_a_only(state: CloudState) -> None:
    a = _add(state, "edge-a")
    b = _add(state, "edge-b")
    # B's secret under A's id (and vice versa) is not a valid credential.
    assert _code(state.consume_token, token_id=a.token_id, secret=b.secret, now=NOW) == "token_bad_secret"
    assert state.consume_token(token_id=a.token_id, secret=a.secret, now=NOW) == "edge-a"
    assert state.consume_token(token_id=b.token_id, secret=b.secret, now=NOW) == "edge-b"


def test_revoked_token_is_refused(state: CloudState) -> None:
    tok = _add(state)
    state.revoke_token(tok.token_id)
    assert _code(state.consume_token, token_id=tok.token_id, secret=tok.secret, now=NOW) == "token_revoked"
    with pytest.raises(StateError):
        state.revoke_token("nosuch")


def test_duplicate_token_id_is_refused_not_overwritten(state: CloudState) -> None:
    tok = _add(state, "edge-a")
    with pytest.raises(StateError) as err:
        state.add_token(
            token_id=tok.token_id,
            node="edge-evil",
            secret_hash=tokens.hash_secret(tok.token_id, tokens.generate(CA_HASH).secret),
            expires_at=NOW + SEC,
            created_at=NOW,
        )
    assert err.value.code == "token_exists"
    assert state.consume_token(token_id=tok.token_id, secret=tok.secret, now=NOW) == "edge-a"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"token_id": "ABCDEF"},
        {"node": "Edge_A"},
        {"secret_hash": "plaintext-secret"},
        {"expires_at": NOW},
    ],
)
def test_add_token_validates_its_input(state: CloudState, kwargs) -> None:
    tok = tokens.generate(CA_HASH)
    args = {
        "token_id": tok.token_id,
        "node": "edge-a",
        "secret_hash": tokens.hash_secret(tok.token_id, tok.secret),
        "expires_at": NOW + SEC,
        "created_at": NOW,
    }
    args.update(kwargs)
    with pytest.raises(ConfigError):
        state.add_token(**args)


def test_list_tokens_never_includes_secrets_or_hashes(state: CloudState) -> None:
    tok = _add(state, "edge-a")
    used = _add(state, "edge-b")
    state.consume_token(token_id=used.token_id, secret=used.secret, now=NOW)
    listed = state.list_tokens()
    assert {t["token_id"] for t in listed} == {tok.token_id, used.token_id}
    blob = repr(listed)
    for t in (tok, used):
        assert t.secret not in blob
        assert tokens.hash_secret(t.token_id, t.secret) not in blob
    by_id = {t["token_id"]: t for t in listed}
    assert by_id[used.token_id]["used_at"] == NOW and by_id[tok.token_id]["used_at"] is None
    assert by_id[tok.token_id]["expires_at"] == NOW + dt.timedelta(minutes=15)


def test_token_survives_restart_and_stays_used(db_path: Path) -> None:
    s = CloudState(db_path)
    tok = _add(s)
    other = _add(s)
    s.consume_token(token_id=tok.token_id, secret=tok.secret, now=NOW)
    s.close()
    s = CloudState(db_path)
    try:
        assert _code(s.consume_token, token_id=tok.token_id, secret=tok.secret, now=NOW) == "token_used"
        assert s.consume_token(token_id=other.token_id, secret=other.secret, now=NOW) == "edge-a"
    finally:
        s.close()


def test_concurrent_consumption_from_8_connections_has_exactly_one_winner(db_path: Path) -> None:
    setup = CloudState(db_path)
    toks = [_add(setup) for _ in range(5)]
    setup.close()
    conns = [CloudState(db_path) for _ in range(8)]
    try:
        for tok in toks:
            barrier = threading.Barrier(8, timeout=10)
            results: list[str] = []
            lock = threading.Lock()

            def worker(s: CloudState, tok=tok, barrier=barrier, results=results, lock=lock) -> None:
                barrier.wait()
                try:
                    out = "won:" + s.consume_token(token_id=tok.token_id, secret=tok.secret, now=NOW)
                except AuthenticationError as exc:
                    out = exc.code
                with lock:
                    results.append(out)

            threads = [threading.Thread(target=worker, args=(c,)) for c in conns]
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=20)
            assert sorted(results) == ["token_used"] * 7 + ["won:edge-a"], results
    finally:
        for c in conns:
            c.close()


def test_concurrent_consumption_through_one_shared_instance_has_exactly_one_winner(state: CloudState) -> None:
    tok = _add(state)
    barrier = threading.Barrier(8, timeout=10)
    results: list[str] = []

    def worker() -> None:
        barrier.wait()
        try:
            results.append(state.consume_token(token_id=tok.token_id, secret=tok.secret, now=NOW))
        except AuthenticationError as exc:
            results.append(exc.code)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=20)
    assert sorted(results) == ["edge-a"] + ["token_used"] * 7


_RACER = r"""
import datetime as dt, json, sys
from kedge.cloud.state import CloudState
from kedge.errors import AuthenticationError
path, pairs = sys.argv[1], json.loads(sys.argv[2])
if sys.argv[3] == "reverse":
    pairs.reverse()
now = dt.datetime(2026, 6, 1, 12, 0, 0, tzinfo=dt.timezone.utc)
s = CloudState(path)
print("ready", flush=True)
sys.stdin.readline()
won, lost = [], []
for tid, secret in pairs:
    try:
        s.consume_token(token_id=tid, secret=secret, now=now)
        won.append(tid)
    except AuthenticationError as exc:
        assert exc.code == "token_used", exc.code
        lost.append(tid)
s.close()
print(json.dumps({"won": won, "lost": lost}), flush=True)
"""


def test_concurrent_consumption_from_two_processes_has_exactly_one_winner_per_token(db_path: Path) -> None:
    setup = CloudState(db_path)
    toks = [_add(setup) for _ in range(100)]
    setup.close()
    pairs = json.dumps([[t.token_id, t.secret] for t in toks])
    env = dict(os.environ, PYTHONPATH=str(REPO))
    procs = [
        subprocess.Popen(  # nosec B603 - fixed interpreter and script, test-controlled args
            [sys.executable, "-c", _RACER, str(db_path), pairs, order],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        # Opposite orders: the racers meet in the middle and collide on the same tokens
        # (in the same order the leader would simply win everything).
        for order in ("forward", "reverse")
    ]
    try:
        for p in procs:
            assert p.stdout.readline().strip() == "ready"
        for p in procs:  # release both racers together
            p.stdin.write("go\n")
            p.stdin.flush()
        outs = []
        for p in procs:
            out, err = p.communicate(timeout=30)
            assert p.returncode == 0, err
            outs.append(json.loads(out))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(timeout=5)
    won = [set(o["won"]) for o in outs]
    assert won[0].isdisjoint(won[1])
    assert won[0] | won[1] == {t.token_id for t in toks}
    for o in outs:
        assert set(o["won"]) | set(o["lost"]) == {t.token_id for t in toks}


# ----------------------------------------------------------------------------- certificates and revocation


def _record(state: CloudState, serial: int, node: str = "edge-a", issued_at: dt.datetime = NOW) -> None:
    state.record_cert(
        serial=serial, node=node, not_before=issued_at - 60 * SEC, not_after=issued_at + 86400 * SEC, issued_at=issued_at
    )


def test_revoke_node_revokes_all_its_certs_and_only_its_certs(state: CloudState) -> None:
    _record(state, 1)
    _record(state, 2, issued_at=NOW + SEC)
    _record(state, 3, node="edge-b")
    assert not state.is_cert_revoked(node="edge-a", serial=1)
    assert state.revoke_node("edge-a", now=NOW + 2 * SEC) == 2
    assert state.is_cert_revoked(node="edge-a", serial=1)
    assert state.is_cert_revoked(node="edge-a", serial=2)
    assert not state.is_cert_revoked(node="edge-b", serial=3)
    assert state.revoke_node("edge-a", now=NOW + 3 * SEC) == 0  # nothing new to revoke


def test_revoked_node_with_unknown_serial_is_refused(state: CloudState) -> None:
    assert not state.is_cert_revoked(node="edge-a", serial=424242)
    state.revoke_node("edge-a", now=NOW)
    assert state.is_cert_revoked(node="edge-a", serial=424242)
    assert state.is_node_revoked("edge-a") == NOW
    assert state.is_node_revoked("edge-b") is None


def test_cert_presented_under_another_nodes_name_is_refused(state: CloudState) -> None:
    _record(state, 7, node="edge-a")
    assert state.is_cert_revoked(node="edge-b", serial=7)


def test_node_rejoining_after_revocation_gets_a_valid_cert(state: CloudState) -> None:
    _record(state, 10, issued_at=NOW)
    state.revoke_node("edge-a", now=NOW + SEC)
    # The node re-joins with a new token, created and used after the revocation.
    tok = _add(state, "edge-a", at=NOW + 2 * SEC)
    assert state.consume_token(token_id=tok.token_id, secret=tok.secret, now=NOW + 3 * SEC) == "edge-a"
    _record(state, 11, issued_at=NOW + 3 * SEC)
    assert state.is_cert_revoked(node="edge-a", serial=10)
    assert not state.is_cert_revoked(node="edge-a", serial=11)
    # A cert issued in the very microsecond of the revocation counts as revoked.
    _record(state, 12, issued_at=NOW + SEC)
    assert state.is_cert_revoked(node="edge-a", serial=12)
    # Revoking again also cuts off the re-joined certificate.
    assert state.revoke_node("edge-a", now=NOW + 4 * SEC) == 2
    assert state.is_cert_revoked(node="edge-a", serial=11)


def test_revoking_a_node_burns_its_pending_tokens(state: CloudState) -> None:
    pending = _add(state, "edge-a", at=NOW)
    other = _add(state, "edge-b", at=NOW)
    state.revoke_node("edge-a", now=NOW + SEC)
    assert _code(state.consume_token, token_id=pending.token_id, secret=pending.secret, now=NOW + 2 * SEC) == (
        "token_revoked"
    )
    assert state.consume_token(token_id=other.token_id, secret=other.secret, now=NOW + 2 * SEC) == "edge-b"


def test_revocation_survives_restart(db_path: Path) -> None:
    s = CloudState(db_path)
    _record(s, 99)
    s.revoke_node("edge-a", now=NOW + SEC)
    s.close()
    s = CloudState(db_path)
    try:
        assert s.is_cert_revoked(node="edge-a", serial=99)
        assert s.is_cert_revoked(node="edge-a", serial=100)
    finally:
        s.close()


def test_generation_changes_are_visible_to_another_connection_at_once(db_path: Path) -> None:
    cloudcore = CloudState(db_path)
    cli = CloudState(db_path)
    try:
        g0 = cloudcore.generation()
        assert cli.generation() == g0
        cli.revoke_node("edge-a", now=NOW)
        g1 = cloudcore.generation()
        assert g1 > g0
        tok = _add(cli)
        assert cloudcore.generation() == g1  # adding a token is not a revocation
        cli.revoke_token(tok.token_id)
        assert cloudcore.generation() > g1
    finally:
        cloudcore.close()
        cli.close()


def test_large_serials_round_trip_and_duplicates_are_refused(state: CloudState) -> None:
    big = 2**158 + 12345
    _record(state, big)
    with pytest.raises(StateError) as err:
        _record(state, big, node="edge-b")
    assert err.value.code == "serial_exists"
    state.revoke_node("edge-a", now=NOW + SEC)
    assert state.revoked_serials() == [(big, NOW + SEC)]
    for bad in (0, -1, 2**161, True, "5"):
        with pytest.raises(ValueError):
            state.is_cert_revoked(node="edge-a", serial=bad)


def test_crl_built_from_state_contains_the_revoked_serials(state: CloudState) -> None:
    key, cert = ca.create_ca("kedge-test-ca", now=NOW)
    issued = []
    for node in ("edge-a", "edge-a", "edge-b"):
        c = ca.sign_node_csr(
            key, cert, ca.make_csr(ca.generate_key(), node), node_name=node, now=NOW, validity=86400 * SEC
        )
        state.record_cert(
            serial=c.serial_number, node=node, not_before=c.not_valid_before_utc,
            not_after=c.not_valid_after_utc, issued_at=NOW,
        )
        issued.append(c)
    state.revoke_node("edge-a", now=NOW + SEC)
    crl = ca.build_crl(key, cert, state.revoked_serials(), now=NOW + 2 * SEC)
    assert crl.is_signature_valid(cert.public_key())
    assert {r.serial_number for r in crl} == {issued[0].serial_number, issued[1].serial_number}
    assert crl.get_revoked_certificate_by_serial_number(issued[2].serial_number) is None


def test_naive_datetimes_are_refused(state: CloudState) -> None:
    with pytest.raises(ValueError):
        state.revoke_node("edge-a", now=dt.datetime(2026, 1, 1))


def test_crl_view_can_leave_out_expired_certs(state: CloudState) -> None:
    state.record_cert(serial=1, node="edge-a", not_before=NOW, not_after=NOW + 10 * SEC, issued_at=NOW)
    state.record_cert(serial=2, node="edge-a", not_before=NOW, not_after=NOW + 100 * SEC, issued_at=NOW)
    state.revoke_node("edge-a", now=NOW + SEC)
    assert [s for s, _ in state.revoked_serials()] == [1, 2]
    assert [s for s, _ in state.revoked_serials(now=NOW + 50 * SEC)] == [2]


def test_prune_drops_old_tokens_and_certs_but_never_node_revocations(state: CloudState) -> None:
    old = _add(state, "edge-a", ttl=dt.timedelta(minutes=15))
    fresh = _add(state, "edge-b", at=NOW + dt.timedelta(days=10))
    state.record_cert(serial=5, node="edge-a", not_before=NOW, not_after=NOW + DAY_, issued_at=NOW)
    state.revoke_node("edge-a", now=NOW + SEC)
    assert state.prune(now=NOW + dt.timedelta(days=9)) == 2
    assert [t["token_id"] for t in state.list_tokens()] == [fresh.token_id]
    assert _code(state.consume_token, token_id=old.token_id, secret=old.secret, now=NOW) == "token_unknown"
    assert state.revoked_serials() == []
    # The node stays revoked, so the pruned certificate is still refused.
    assert state.is_cert_revoked(node="edge-a", serial=5)


def test_token_for_another_node_is_refused_without_being_used_up(state: CloudState) -> None:
    tok = _add(state, "edge-a")
    assert _code(state.consume_token, token_id=tok.token_id, secret=tok.secret, now=NOW,
                 expect_node="edge-b") == "token_node_mismatch"
    # Only the holder of the secret learns the token is for another node.
    wrong = tok.secret[:-1] + ("A" if tok.secret[-1] != "A" else "B")
    assert _code(state.consume_token, token_id=tok.token_id, secret=wrong, now=NOW,
                 expect_node="edge-b") == "token_bad_secret"
    assert state.consume_token(token_id=tok.token_id, secret=tok.secret, now=NOW, expect_node="edge-a") == "edge-a"
