"""MetaStore semantics on real SQLite files: newest-wins, tombstones, sealing, callbacks, threads."""

from __future__ import annotations

import base64
import os
import random
import sqlite3
import threading
from pathlib import Path

import pytest

from kedge.edge.metamanager.decide import Decision, PrunePolicy
from kedge.edge.metamanager.store import KEY_BYTES, InvalidObject, MetaStore, load_or_create_key
from kedge.errors import PeerError, ProtocolError, StateError

NOW = 1_700_000_000.0
SECRET_VALUE = "hunter2-Zq8xW3-never-on-disk"


def obj(name: str, ns: str = "default", **extra) -> dict:
    return {"metadata": {"name": name, "namespace": ns}, **extra}


def secret(name: str, value: str = SECRET_VALUE) -> dict:
    return obj(name, kind="Secret", data={"password": base64.b64encode(value.encode()).decode()},
               stringData={"token": value})


@pytest.fixture()
def edge_dir(tmp_path: Path) -> Path:
    return tmp_path / "edge"


@pytest.fixture()
def store(edge_dir: Path):
    s = MetaStore(edge_dir / "edge.db", edge_dir / "edge.key")
    yield s
    s.close()


def mode(p: Path) -> int:
    return p.stat().st_mode & 0o777


# -- basics ----------------------------------------------------------------------


def test_apply_get_list_inventory(store: MetaStore):
    r = store.apply("default/pod/a", "insert", "3", obj("a", spec={"x": 1}), now=NOW)
    assert (r.decision, r.result, r.rv, r.stored_rv, r.deleted) == (Decision.APPLY, "applied", "3", "3", False)
    store.apply("kube-system/pod/b", "insert", "4", obj("b", "kube-system"), now=NOW)
    store.apply("default/configmap/c", "insert", "5", obj("c", data={"k": "v"}), now=NOW)
    got = store.get("default/pod/a")
    assert got == {"metadata": {"name": "a", "namespace": "default", "resourceVersion": "3"}, "spec": {"x": 1}}
    assert store.get("default/pod/nope") is None
    assert [o["metadata"]["name"] for o in store.list("pod")] == ["a", "b"]
    assert [o["metadata"]["name"] for o in store.list("pod", "kube-system")] == ["b"]
    assert store.list("secret") == []
    assert store.inventory() == {"default/pod/a": "3", "kube-system/pod/b": "4", "default/configmap/c": "5"}


def test_stored_object_carries_the_applied_resource_version(store: MetaStore):
    o = obj("a")
    o["metadata"]["resourceVersion"] = "1"
    store.apply("default/pod/a", "update", "8", o, now=NOW)
    assert store.get("default/pod/a")["metadata"]["resourceVersion"] == "8"
    assert o["metadata"]["resourceVersion"] == "1"  # the caller's object is not mutated


def test_duplicate_is_acked_without_a_write(store: MetaStore):
    store.apply("default/pod/a", "insert", "3", obj("a", v=1), now=NOW)
    r = store.apply("default/pod/a", "insert", "3", obj("a", v=2), now=NOW + 1)
    assert (r.decision, r.stored_rv) == (Decision.DUPLICATE, "3")
    assert store.get("default/pod/a")["v"] == 1


def test_stale_update_never_overwrites_newer(store: MetaStore):
    store.apply("default/pod/a", "update", "10", obj("a", v="new"), now=NOW)
    r = store.apply("default/pod/a", "update", "9", obj("a", v="old"), now=NOW)
    assert (r.decision, r.rv, r.stored_rv) == (Decision.STALE, "9", "10")
    assert store.get("default/pod/a")["v"] == "new"


def test_stale_insert_after_delete_does_not_resurrect(store: MetaStore):
    store.apply("default/pod/a", "insert", "5", obj("a"), now=NOW)
    assert store.apply("default/pod/a", "delete", "7", None, now=NOW).decision is Decision.APPLY
    assert store.get("default/pod/a") is None
    for op, rv in (("insert", "5"), ("update", "6"), ("insert", "7")):
        r = store.apply("default/pod/a", op, rv, obj("a"), now=NOW)
        assert r.decision is Decision.STALE and r.deleted and r.stored_rv == "7"
    assert store.get("default/pod/a") is None
    assert store.record("default/pod/a") == ("7", True)
    assert store.apply("default/pod/a", "delete", "7", None, now=NOW).decision is Decision.DUPLICATE
    # Re-created later in the cloud: a newer rv brings it back.
    assert store.apply("default/pod/a", "insert", "8", obj("a"), now=NOW).decision is Decision.APPLY
    assert store.get("default/pod/a")["metadata"]["resourceVersion"] == "8"


@pytest.mark.parametrize("kind", ["configmap", "secret"])
def test_released_configmap_or_secret_comes_back_at_the_same_version(store: MetaStore, kind):
    key = f"default/{kind}/x"
    o = secret("x") if kind == "secret" else obj("x", data={"k": "v"})
    store.apply(key, "insert", "5", o, now=NOW)
    # No pod needs it any more: the cloud releases the version the edge holds.
    assert store.apply(key, "delete", "5", None, now=NOW).decision is Decision.APPLY
    assert store.get(key) is None and store.snapshot()[1] == {key: "5"}
    assert store.counts() == (0, 1)
    # A new pod needs the unchanged object again: the same version is let back in ...
    assert store.apply(key, "insert", "5", o, now=NOW).decision is Decision.APPLY
    assert store.get(key)["metadata"]["resourceVersion"] == "5"
    # ... never an older one.
    store.apply(key, "delete", "5", None, now=NOW)
    assert store.apply(key, "insert", "4", o, now=NOW).decision is Decision.STALE


def test_a_real_deletion_or_a_released_pod_is_never_revived_at_the_same_version(store: MetaStore):
    store.apply("default/configmap/x", "insert", "5", obj("x"), now=NOW)
    store.apply("default/configmap/x", "delete", "6", None, now=NOW)  # deleted in the cloud (newer rv)
    assert store.apply("default/configmap/x", "insert", "6", obj("x"), now=NOW).decision is Decision.STALE
    store.apply("default/pod/p", "insert", "5", obj("p"), now=NOW)
    store.apply("default/pod/p", "delete", "5", None, now=NOW)  # released pod: its processes stopped
    assert store.apply("default/pod/p", "insert", "5", obj("p"), now=NOW).decision is Decision.STALE
    assert store.get("default/pod/p") is None


def test_released_tombstones_are_pruned_like_others(edge_dir: Path):
    from kedge.edge.metamanager.decide import PrunePolicy

    s = MetaStore(edge_dir / "edge.db", edge_dir / "edge.key", prune_policy=PrunePolicy(max_count=1, max_age_s=1))
    try:
        s.apply("default/configmap/x", "insert", "5", obj("x"), now=NOW)
        s.apply("default/configmap/x", "delete", "5", None, now=NOW)
        assert s.prune_tombstones(now=NOW + 10) == 1 and s.counts() == (0, 0)
    finally:
        s.close()


def test_delete_before_insert_leaves_a_tombstone(store: MetaStore):
    assert store.apply("default/pod/a", "delete", "9", None, now=NOW).decision is Decision.APPLY
    assert store.apply("default/pod/a", "insert", "4", obj("a"), now=NOW).decision is Decision.STALE
    assert store.snapshot() == ({}, {"default/pod/a": "9"})
    assert store.inventory() == {"default/pod/a": "9"}


def test_out_of_order_delivery_converges_to_the_newest():
    rng = random.Random(7)
    store = MetaStore.in_memory(bytes(KEY_BYTES))
    for trial in range(20):
        key = f"default/configmap/c{trial}"
        versions = list(range(1, 30))
        changes = [("update", v) for v in versions] * 2  # every change delivered twice
        if trial % 2:
            changes.append(("delete", 30))
        rng.shuffle(changes)
        for op, v in changes:
            store.apply(key, op, str(v), obj(f"c{trial}", v=v), now=NOW)
        if trial % 2:
            assert store.get(key) is None and store.record(key) == ("30", True)
        else:
            assert store.get(key)["v"] == 29 and store.record(key) == ("29", False)
    store.close()


def test_rv_compared_as_integer_not_string(store: MetaStore):
    store.apply("default/pod/a", "update", "9", obj("a", v=9), now=NOW)
    assert store.apply("default/pod/a", "update", "10", obj("a", v=10), now=NOW).decision is Decision.APPLY
    assert store.apply("default/pod/a", "update", "9", obj("a", v=9), now=NOW).decision is Decision.STALE


BAD_WRITES = [
    ("default/pod", "insert", "1", obj("a"), "bad_resource"),
    ("default/pod/a/b", "insert", "1", obj("a"), "bad_resource"),
    ("Default/pod/a", "insert", "1", obj("a"), "bad_resource"),
    ("default/pod/../x", "insert", "1", obj("a"), "bad_resource"),
    ("default/pod/a", "query", "1", obj("a"), "unsupported_operation"),
    ("default/pod/a", "insert", "01", obj("a"), "bad_resource_version"),
    ("default/pod/a", "insert", "", obj("a"), "bad_resource_version"),
    ("default/pod/a", "insert", "1", None, "invalid_object"),
    ("default/pod/a", "insert", "1", ["not", "a", "dict"], "invalid_object"),
    ("default/pod/a", "insert", "1", {"metadata": "x"}, "invalid_object"),
    ("default/pod/a", "insert", "1", {"metadata": {}, "v": float("nan")}, "invalid_object"),
    ("default/pod/a", "insert", "1", {"metadata": {}, "v": object()}, "invalid_object"),
]


@pytest.mark.parametrize(("key", "op", "rv", "o", "code"), BAD_WRITES)
def test_refused_writes_change_nothing(store: MetaStore, key, op, rv, o, code):
    with pytest.raises(ProtocolError) as info:
        store.apply(key, op, rv, o, now=NOW)
    assert info.value.code == code and isinstance(info.value, PeerError)
    assert store.inventory() == {}


def test_lone_surrogate_in_an_object_is_storable(store: MetaStore):
    store.apply("default/configmap/u", "insert", "1", obj("u", data={"k": "\ud800x\u202e"}), now=NOW)
    assert store.get("default/configmap/u")["data"]["k"] == "\ud800x\u202e"


def test_closed_store_refuses(store: MetaStore):
    store.close()
    with pytest.raises(StateError) as info:
        store.get("default/pod/a")
    assert info.value.code == "edge_store_closed"
    store.close()  # idempotent


# -- durability across reopen -------------------------------------------------------


def test_reopen_after_close_keeps_everything(edge_dir: Path):
    with MetaStore(edge_dir / "edge.db", edge_dir / "edge.key") as s:
        for i in range(50):
            s.apply(f"default/pod/p{i}", "insert", str(i + 1), obj(f"p{i}", i=i), now=NOW)
        s.apply("default/secret/s", "insert", "100", secret("s"), now=NOW)
        s.apply("default/pod/p3", "delete", "101", None, now=NOW)
        before = s.snapshot()
    with MetaStore(edge_dir / "edge.db", edge_dir / "edge.key") as s:
        assert s.snapshot() == before
        assert s.get("default/pod/p7")["i"] == 7
        assert s.get("default/pod/p3") is None
        assert s.get("default/secret/s")["stringData"]["token"] == SECRET_VALUE
        assert s.apply("default/pod/p3", "insert", "4", obj("p3"), now=NOW).decision is Decision.STALE


# -- files and keys -------------------------------------------------------------------


def test_files_are_private_from_creation(edge_dir: Path, store: MetaStore):
    store.apply("default/pod/a", "insert", "1", obj("a"), now=NOW)
    assert mode(edge_dir) == 0o700
    assert mode(edge_dir / "edge.key") == 0o600
    for name in ("edge.db", "edge.db-wal", "edge.db-shm"):
        assert mode(edge_dir / name) == 0o600, name
    assert (edge_dir / "edge.key").stat().st_size == KEY_BYTES
    assert not [p.name for p in edge_dir.iterdir() if p.name.endswith(".tmp")]


def _raw_bytes(edge_dir: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(edge_dir.iterdir()) if p.name.startswith("edge.db"))


def _needles(value: str) -> list[bytes]:
    b64 = base64.b64encode(value.encode())
    return [value.encode(), b64, base64.b64encode(b64), value.encode("utf-16-le")]


def test_secret_value_is_nowhere_in_the_database_files(edge_dir: Path):
    s = MetaStore(edge_dir / "edge.db", edge_dir / "edge.key")
    for i in range(20):  # several versions: old WAL frames must not hold plaintext either
        s.apply("default/secret/db-pass", "update", str(i + 1), secret("db-pass"), now=NOW)
        s.apply("default/serviceaccounttoken/tok", "update", str(i + 1),
                obj("tok", status={"token": SECRET_VALUE + "-sa"}), now=NOW)
    s.apply("default/configmap/plain", "insert", "50", obj("plain", data={"k": "visible-marker-123"}), now=NOW)
    assert (edge_dir / "edge.db-wal").stat().st_size > 0
    raw = _raw_bytes(edge_dir)
    assert b"visible-marker-123" in raw  # the grep works: non-secret data is found
    for needle in _needles(SECRET_VALUE) + _needles(SECRET_VALUE + "-sa"):
        assert needle not in raw, needle
    s.apply("default/secret/db-pass", "delete", "99", None, now=NOW)
    s.close()  # checkpoint: WAL content moves into edge.db
    raw = _raw_bytes(edge_dir)
    for needle in _needles(SECRET_VALUE):
        assert needle not in raw, needle
    assert b"db-pass" in raw  # the key (a name, not a secret) is stored in the clear


def test_wrong_key_is_a_clear_error_never_garbage(edge_dir: Path):
    with MetaStore(edge_dir / "edge.db", edge_dir / "edge.key") as s:
        s.apply("default/secret/s", "insert", "1", secret("s"), now=NOW)
    other = edge_dir / "other.key"
    with pytest.raises(StateError) as info:
        MetaStore(edge_dir / "edge.db", other)  # a fresh, different key
    assert info.value.code == "edge_key_mismatch"
    # A replaced key file (e.g. restored from another node) is refused the same way.
    (edge_dir / "edge.key").unlink()
    with pytest.raises(StateError) as info:
        MetaStore(edge_dir / "edge.db", edge_dir / "edge.key")
    assert info.value.code == "edge_key_mismatch"


def test_store_written_before_key_mac_is_verified_once_then_carries_key_mac(edge_dir: Path):
    """A store from before ``key_mac`` holds only the AES-GCM sealed ``key_check``."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    from kedge.edge.metamanager import store as store_mod

    with MetaStore(edge_dir / "edge.db", edge_dir / "edge.key") as s:
        s.apply("default/secret/s", "insert", "1", secret("s"), now=NOW)
    key = (edge_dir / "edge.key").read_bytes()
    nonce = os.urandom(store_mod.NONCE_BYTES)
    legacy = nonce + AESGCM(key).encrypt(nonce, store_mod._KEY_CHECK_PLAIN, store_mod._KEY_CHECK_AAD)
    db = sqlite3.connect(edge_dir / "edge.db")
    with db:
        db.execute("DELETE FROM meta WHERE name = 'key_mac'")
        db.execute("INSERT INTO meta(name, value) VALUES ('key_check', ?)", (legacy,))
    db.close()
    with pytest.raises(StateError) as info:  # a wrong key fails the legacy check too
        MetaStore(edge_dir / "edge.db", edge_dir / "other.key")
    assert info.value.code == "edge_key_mismatch"
    with MetaStore(edge_dir / "edge.db", edge_dir / "edge.key") as s:
        assert s.get("default/secret/s")["stringData"] == {"token": SECRET_VALUE}
    db = sqlite3.connect(edge_dir / "edge.db")
    names = {n for (n,) in db.execute("SELECT name FROM meta")}
    db.close()
    assert {"key_mac", "key_check"} <= names
    with pytest.raises(StateError) as info:
        MetaStore(edge_dir / "edge.db", edge_dir / "other.key")
    assert info.value.code == "edge_key_mismatch"


def test_altered_key_mac_is_a_key_mismatch(edge_dir: Path):
    MetaStore(edge_dir / "edge.db", edge_dir / "edge.key").close()
    db = sqlite3.connect(edge_dir / "edge.db")
    with db:
        db.execute("UPDATE meta SET value = ? WHERE name = 'key_mac'", (b"\x00" * 32,))
    db.close()
    with pytest.raises(StateError) as info:
        MetaStore(edge_dir / "edge.db", edge_dir / "edge.key")
    assert info.value.code == "edge_key_mismatch"


def test_store_without_secrets_does_not_load_cryptography(tmp_path: Path):
    """AES-GCM (and so cryptography's native module) is loaded when a sealed row is first used."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from kedge.edge.metamanager.store import MetaStore\n"
        f"d = {str(tmp_path)!r}\n"
        "for _ in range(2):\n"  # create, then reopen (the key check)
        "    s = MetaStore(d + '/edge.db', d + '/edge.key')\n"
        "    s.apply('default/configmap/c', 'insert', '1', {'metadata': {'name': 'c', 'namespace': 'default'}}, now=1.0)\n"
        "    s.list('configmap'); s.close()\n"
        "print('cryptography' in sys.modules)\n"
        "s = MetaStore(d + '/edge.db', d + '/edge.key')\n"
        "s.apply('default/secret/x', 'insert', '2', {'metadata': {'name': 'x', 'namespace': 'default'}}, now=1.0)\n"
        "print('cryptography' in sys.modules, s.get('default/secret/x')['metadata']['name'])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.split() == ["False", "True", "x"]


def test_key_file_readable_by_others_is_refused(edge_dir: Path, store: MetaStore):
    os.chmod(edge_dir / "edge.key", 0o644)
    with pytest.raises(StateError) as info:
        load_or_create_key(edge_dir / "edge.key")
    assert info.value.code == "edge_key_permissions"


@pytest.mark.parametrize("content", [b"", b"x" * 31, b"x" * 33])
def test_key_file_of_the_wrong_size_is_refused(tmp_path: Path, content: bytes):
    p = tmp_path / "edge.key"
    fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(fd, content)
    os.close(fd)
    with pytest.raises(StateError) as info:
        load_or_create_key(p)
    assert info.value.code == "edge_key_invalid"


def test_key_file_symlink_is_refused(tmp_path: Path):
    real = tmp_path / "real.key"
    load_or_create_key(real)
    (tmp_path / "edge.key").symlink_to(real)
    with pytest.raises(StateError) as info:
        load_or_create_key(tmp_path / "edge.key")
    assert info.value.code == "edge_key_invalid"


def test_concurrent_key_creation_yields_one_key(tmp_path: Path):
    p = tmp_path / "edge.key"
    got: list[bytes] = []
    threads = [threading.Thread(target=lambda: got.append(load_or_create_key(p))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(got) == 8 and len(set(got)) == 1 and got[0] == p.read_bytes()


def _raw_db(edge_dir: Path) -> sqlite3.Connection:
    return sqlite3.connect(edge_dir / "edge.db", isolation_level=None)


def test_ciphertext_moved_onto_another_row_is_detected(edge_dir: Path):
    with MetaStore(edge_dir / "edge.db", edge_dir / "edge.key") as s:
        s.apply("default/secret/a", "insert", "1", secret("a", "value-a"), now=NOW)
        s.apply("default/secret/b", "insert", "2", secret("b", "value-b"), now=NOW)
    db = _raw_db(edge_dir)
    blob = db.execute("SELECT data FROM objects WHERE key='default/secret/a'").fetchone()[0]
    db.execute("UPDATE objects SET data=? WHERE key='default/secret/b'", (blob,))
    db.close()
    with MetaStore(edge_dir / "edge.db", edge_dir / "edge.key") as s:
        assert s.get("default/secret/a")["stringData"]["token"] == "value-a"
        with pytest.raises(StateError) as info:
            s.get("default/secret/b")
        assert info.value.code == "edge_store_corrupt"


def test_ciphertext_replayed_at_another_rv_is_detected(edge_dir: Path):
    with MetaStore(edge_dir / "edge.db", edge_dir / "edge.key") as s:
        s.apply("default/secret/a", "insert", "1", secret("a", "old"), now=NOW)
    db = _raw_db(edge_dir)
    db.execute("UPDATE objects SET rv=5 WHERE key='default/secret/a'")
    db.close()
    with MetaStore(edge_dir / "edge.db", edge_dir / "edge.key") as s:
        with pytest.raises(StateError) as info:
            s.list("secret")
        assert info.value.code == "edge_store_corrupt"


def test_secret_downgraded_to_plaintext_row_is_refused(edge_dir: Path):
    with MetaStore(edge_dir / "edge.db", edge_dir / "edge.key") as s:
        s.apply("default/secret/a", "insert", "1", secret("a"), now=NOW)
    db = _raw_db(edge_dir)
    db.execute("UPDATE objects SET sealed=0, data=? WHERE key='default/secret/a'", (b'{"planted":1}',))
    db.close()
    with MetaStore(edge_dir / "edge.db", edge_dir / "edge.key") as s:
        with pytest.raises(StateError) as info:
            s.get("default/secret/a")
        assert info.value.code == "edge_store_corrupt"


def test_write_that_cannot_commit_is_never_reported_applied(edge_dir: Path):
    """Another process holds SQLite's write lock: apply fails loudly (no ack), then recovers."""
    s = MetaStore(edge_dir / "edge.db", edge_dir / "edge.key", busy_timeout_ms=50)
    s.apply("default/pod/a", "insert", "1", obj("a"), now=NOW)
    blocker = _raw_db(edge_dir)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(StateError) as info:
            s.apply("default/pod/a", "update", "2", obj("a"), now=NOW)
        assert info.value.code == "edge_store_write_failed"
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert s.record("default/pod/a") == ("1", False)
    assert s.apply("default/pod/a", "update", "2", obj("a"), now=NOW).decision is Decision.APPLY
    s.close()


def test_not_a_database_is_a_state_error(edge_dir: Path):
    edge_dir.mkdir(mode=0o700)
    fd = os.open(edge_dir / "edge.db", os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, b"this is not sqlite" * 300)
    os.close(fd)
    with pytest.raises(StateError) as info:
        MetaStore(edge_dir / "edge.db", edge_dir / "edge.key")
    assert info.value.code == "edge_store_corrupt"


# -- change callbacks -----------------------------------------------------------------


def test_on_change_reports_visible_changes_only(store: MetaStore):
    seen: list[tuple[str, object]] = []
    unsubscribe = store.on_change(lambda k, o: seen.append((k, None if o is None else o["metadata"]["resourceVersion"])))
    store.apply("default/pod/a", "insert", "1", obj("a"), now=NOW)
    store.apply("default/pod/a", "insert", "1", obj("a"), now=NOW)  # duplicate
    store.apply("default/pod/a", "update", "3", obj("a"), now=NOW)
    store.apply("default/pod/a", "update", "2", obj("a"), now=NOW)  # stale
    store.apply("default/pod/a", "delete", "4", None, now=NOW)
    store.apply("default/pod/a", "delete", "6", None, now=NOW)  # tombstone rv moves up: nothing visible
    store.apply("default/pod/b", "delete", "6", None, now=NOW)  # never seen: nothing visible
    store.apply("default/secret/s", "insert", "7", secret("s"), now=NOW)
    assert seen == [("default/pod/a", "1"), ("default/pod/a", "3"), ("default/pod/a", None),
                    ("default/secret/s", "7")]
    unsubscribe()
    store.apply("default/pod/a", "insert", "9", obj("a"), now=NOW)
    assert len(seen) == 4


def test_failing_callback_does_not_undo_the_write(store: MetaStore):
    def boom(key, o):
        raise RuntimeError("subscriber bug")

    store.on_change(boom)
    assert store.apply("default/pod/a", "insert", "1", obj("a"), now=NOW).decision is Decision.APPLY
    assert store.get("default/pod/a") is not None


def test_callback_may_read_the_store(store: MetaStore):
    got = []
    store.on_change(lambda k, o: got.append(store.get(k)))
    store.apply("default/pod/a", "insert", "1", obj("a", v=1), now=NOW)
    assert got[0]["v"] == 1


# -- resync deletions and pruning ---------------------------------------------------------


def test_delete_missing_converges_offline_deletions(store: MetaStore):
    for i, name in enumerate(["a", "b", "c", "d"], start=1):
        store.apply(f"default/pod/{name}", "insert", str(i), obj(name), now=NOW)
    store.apply("other/pod/x", "insert", "5", obj("x", "other"), now=NOW)
    store.apply("default/configmap/a", "insert", "6", obj("a"), now=NOW)
    store.apply("default/pod/e", "insert", "20", obj("e"), now=NOW)  # newer than the cloud's list
    seen = []
    store.on_change(lambda k, o: seen.append((k, o)))
    gone = store.delete_missing("pod", {"default/pod/a", "default/pod/c"}, "10", now=NOW + 5, namespace="default")
    assert gone == ["default/pod/b", "default/pod/d"]
    assert seen == [("default/pod/b", None), ("default/pod/d", None)]
    live, dead = store.snapshot()
    assert set(live) == {"default/pod/a", "default/pod/c", "default/pod/e", "other/pod/x", "default/configmap/a"}
    assert dead == {"default/pod/b": "2", "default/pod/d": "4"}  # tombstones keep the object's rv
    assert store.apply("default/pod/b", "insert", "2", obj("b"), now=NOW).decision is Decision.STALE
    assert store.apply("default/pod/b", "delete", "11", None, now=NOW).decision is Decision.APPLY
    # Without a namespace the whole type is converged.
    assert store.delete_missing("pod", set(), "10", now=NOW) == ["default/pod/a", "default/pod/c", "other/pod/x"]
    assert store.get("default/pod/e") is not None


def test_delete_missing_validates_its_input(store: MetaStore):
    with pytest.raises(ProtocolError):
        store.delete_missing("pod", set(), "x", now=NOW)
    with pytest.raises(ProtocolError):
        store.delete_missing("Pod!", set(), "1", now=NOW)


def test_tombstones_are_pruned_by_count_and_age(edge_dir: Path):
    s = MetaStore(edge_dir / "edge.db", edge_dir / "edge.key",
                  prune_policy=PrunePolicy(max_age_s=100.0, max_count=5), prune_every=4)
    for i in range(1, 13):
        s.apply(f"default/pod/p{i}", "delete", str(i), None, now=NOW + i)
    # Pruned at the 4th, 8th and 12th tombstone: at most 5 remain plus those written since.
    assert s.counts() == (0, 5)
    assert set(s.snapshot()[1]) == {f"default/pod/p{i}" for i in range(8, 13)}
    assert s.prune_tombstones(now=NOW + 8 + 100) == 0  # p8 is exactly max_age old: kept
    assert s.prune_tombstones(now=NOW + 8 + 100.5) == 1  # p8 now older than 100 s
    assert s.prune_tombstones(now=NOW + 10_000) == 4
    s.apply("default/pod/live", "insert", "1", obj("live"), now=NOW)
    assert s.prune_tombstones(now=NOW + 10_000) == 0 and s.counts() == (1, 0)
    s.close()


# -- threads --------------------------------------------------------------------------------


def test_concurrent_apply_from_threads_keeps_newest_wins(edge_dir: Path):
    s = MetaStore(edge_dir / "edge.db", edge_dir / "edge.key")
    keys = [f"default/configmap/k{i}" for i in range(5)]
    last_seen: dict[str, int] = {}
    regressions: list[tuple[str, int, int]] = []

    def watch(key, o):
        if o is None:
            return
        v = int(o["metadata"]["resourceVersion"])
        if v <= last_seen.get(key, 0):
            regressions.append((key, last_seen[key], v))
        last_seen[key] = v

    s.on_change(watch)
    errors: list[BaseException] = []

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        try:
            for _ in range(60):
                key = rng.choice(keys)
                v = rng.randint(1, 200)
                s.apply(key, "update", str(v), obj(key.rsplit("/", 1)[1], v=v), now=NOW)
        except BaseException as exc:  # noqa: BLE001 - surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(seed,)) for seed in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors and not any(t.is_alive() for t in threads)
    expected: dict[str, int] = {}
    for seed in range(6):
        rng = random.Random(seed)
        for _ in range(60):
            key = rng.choice(keys)
            v = rng.randint(1, 200)
            expected[key] = max(expected.get(key, 0), v)
    assert {k: int(v) for k, v in s.inventory().items()} == expected
    for key, v in expected.items():
        assert s.get(key)["v"] == v
    assert not regressions  # callbacks saw each key's versions strictly increasing
    s.close()


def test_in_memory_store_refuses_a_short_key():
    with pytest.raises(StateError):
        MetaStore.in_memory(b"short")


def test_invalid_object_is_a_peer_error():
    assert issubclass(InvalidObject, PeerError)
