"""``kedge backup`` / ``kedge restore`` on a real data dir while a real ``kedge apiserver`` serves it."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from kedge.cloud.state import CloudState
from support.cluster import REPO, kedge, stop_process, wait_until

KUBECTL = shutil.which("kubectl") or "/usr/bin/kubectl"
SECRET_VALUE = "backed-up-secret-5e0c"


def start_apiserver(data: Path) -> subprocess.Popen:
    (data / "endpoints.json").unlink(missing_ok=True)
    proc = subprocess.Popen([sys.executable, "-m", "kedge", "apiserver", "--data-dir", str(data)], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def api() -> bool:
        assert proc.poll() is None, "apiserver exited"
        try:
            return bool(json.loads((data / "endpoints.json").read_text()).get("api"))
        except (FileNotFoundError, ValueError):
            return False

    wait_until(api, 30, what="apiserver endpoint")
    return proc


def kubectl(data: Path, home: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = dict(os.environ, KUBECONFIG=str(data / "admin.kubeconfig"), HOME=str(home))
    r = subprocess.run([KUBECTL, "--cache-dir", str(home / "cache"), *args], env=env, capture_output=True,
                       text=True, timeout=30)
    if check:
        assert r.returncode == 0, f"kubectl {' '.join(args)}: {r.stderr}"
    return r


@pytest.fixture(scope="module")
def backed_up(tmp_path_factory):
    """A data dir with objects, backed up while its apiserver runs; the apiserver is stopped after."""
    root = tmp_path_factory.mktemp("backup")
    data = root / "cloud"
    assert kedge("init", "--data-dir", str(data), "--api-port", "0", "--hub-port", "0",
                 "--cert-port", "0").returncode == 0
    proc = start_apiserver(data)
    try:
        kubectl(data, root, "create", "namespace", "prod")
        kubectl(data, root, "-n", "prod", "create", "configmap", "app", "--from-literal=color=blue")
        kubectl(data, root, "-n", "prod", "create", "secret", "generic", "db", f"--from-literal=password={SECRET_VALUE}")
        kedge("token", "create", "--data-dir", str(data), "--node", "edge-9", check=True)
        key = root / "backup.key"
        r = kedge("backup", "--new-key", str(key))
        assert r.returncode == 0, r.stderr
        assert key.stat().st_mode & 0o777 == 0o600
        out = root / "cloud.kbak"
        r = kedge("backup", "--data-dir", str(data), "--out", str(out), "--key-file", str(key))
        assert r.returncode == 0, r.stderr
        kubectl(data, root, "-n", "prod", "create", "configmap", "after-backup")  # not in the backup
    finally:
        stop_process(proc)
    return {"root": root, "data": data, "key": key, "out": out}


def restore(backed_up, name: str, *extra: str, src: Path | None = None) -> tuple[subprocess.CompletedProcess, Path]:
    target = backed_up["root"] / name
    r = kedge("restore", "--data-dir", str(target), "--from", str(src or backed_up["out"]), *extra)
    return r, target


def test_restored_dir_serves_the_same_objects_and_secrets(backed_up):
    out = backed_up["out"]
    assert out.stat().st_mode & 0o777 == 0o600
    assert SECRET_VALUE.encode() not in out.read_bytes()
    r, target = restore(backed_up, "restored", "--key-file", str(backed_up["key"]))
    assert r.returncode == 0, r.stderr
    # Modes: directories 0700, keys and databases 0600, certificates 0644.
    assert target.stat().st_mode & 0o777 == 0o700 and (target / "pki").stat().st_mode & 0o777 == 0o700
    for name in ("pki/ca.key", "pki/hub.key", "pki/admin.key", "pki/encryption.json", "api.db", "state.db",
                 "config.json", "admin.kubeconfig"):
        assert (target / name).stat().st_mode & 0o777 == 0o600, name
    assert (target / "pki" / "ca.crt").stat().st_mode & 0o777 == 0o644
    assert not (target / "endpoints.json").exists()
    assert not [p for p in target.parent.iterdir() if ".restore-" in p.name]

    state = CloudState(target / "state.db")
    try:
        assert [t["node"] for t in state.list_tokens()] == ["edge-9"]
    finally:
        state.close()

    home = backed_up["root"]
    proc = start_apiserver(target)
    try:
        secret = json.loads(kubectl(target, home, "-n", "prod", "get", "secret", "db", "-o", "json").stdout)
        assert base64.b64decode(secret["data"]["password"]).decode() == SECRET_VALUE
        cm = json.loads(kubectl(target, home, "-n", "prod", "get", "configmap", "app", "-o", "json").stdout)
        assert cm["data"] == {"color": "blue"}
        r = kubectl(target, home, "-n", "prod", "get", "configmap", "after-backup", check=False)
        assert r.returncode != 0 and "NotFound" in r.stderr
    finally:
        stop_process(proc)


def test_tampered_backup_is_refused_and_nothing_is_restored(backed_up):
    data = bytearray(backed_up["out"].read_bytes())
    cases = {
        "body": data[:2000] + bytes([data[2000] ^ 1]) + data[2001:],
        "truncated": data[:-100],
        "cut_at_chunk": data[:88 + 65536 + 16],
        "extended": data + data[-200:],
        "header": data[:20] + bytes([data[20] ^ 1]) + data[21:],
    }
    for name, blob in cases.items():
        bad = backed_up["root"] / f"bad-{name}.kbak"
        bad.write_bytes(bytes(blob))
        r, target = restore(backed_up, f"r-{name}", "--key-file", str(backed_up["key"]), src=bad)
        assert r.returncode == 1, (name, r.stderr)
        assert ("backup_tampered" in r.stderr or "backup_wrong_key" in r.stderr), (name, r.stderr)
        assert not target.exists(), name
    assert not [p for p in backed_up["root"].iterdir() if ".restore-" in p.name]


def test_wrong_key_is_refused(backed_up, tmp_path):
    other = tmp_path / "other.key"
    assert kedge("backup", "--new-key", str(other)).returncode == 0
    r, target = restore(backed_up, "r-wrong-key", "--key-file", str(other))
    assert r.returncode == 1 and "backup_wrong_key" in r.stderr
    assert not target.exists()
    pw = tmp_path / "pw"
    fd = os.open(pw, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, b"a long enough passphrase\n")
    os.close(fd)
    r, _ = restore(backed_up, "r-wrong-kind", "--passphrase-file", str(pw))
    assert r.returncode == 2 and "backup_key_kind" in r.stderr


def test_restore_refuses_a_non_empty_dir_and_backup_never_overwrites(backed_up, tmp_path):
    target = tmp_path / "busy"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    r = kedge("restore", "--data-dir", str(target), "--from", str(backed_up["out"]), "--key-file", str(backed_up["key"]))
    assert r.returncode == 2 and "restore_target_not_empty" in r.stderr
    assert [p.name for p in target.iterdir()] == ["keep.txt"]
    r = kedge("backup", "--data-dir", str(backed_up["data"]), "--out", str(backed_up["out"]),
              "--key-file", str(backed_up["key"]))
    assert r.returncode == 2 and "exists" in r.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    r = kedge("restore", "--data-dir", str(empty), "--from", str(backed_up["out"]), "--key-file", str(backed_up["key"]))
    assert r.returncode == 0, r.stderr
    assert (empty / "pki" / "ca.key").exists()


def test_key_file_readable_by_others_is_refused(backed_up, tmp_path):
    loose = tmp_path / "loose.key"
    loose.write_text(backed_up["key"].read_text())
    loose.chmod(0o644)
    r, _ = restore(backed_up, "r-loose", "--key-file", str(loose))
    assert r.returncode == 2 and "insecure_permissions" in r.stderr


def test_bare_command_shapes_use_the_default_key_and_a_passphrase_works(backed_up, tmp_path):
    env = dict(os.environ, KEDGE_BACKUP_KEY_FILE=str(tmp_path / "keys" / "backup.key"))
    out = tmp_path / "b.kbak"
    r = kedge("backup", "--data-dir", str(backed_up["data"]), "--out", str(out), env=env)
    assert r.returncode == 0 and "created the backup key" in r.stderr, r.stderr
    assert (tmp_path / "keys" / "backup.key").stat().st_mode & 0o777 == 0o600
    r = kedge("restore", "--data-dir", str(tmp_path / "r"), "--from", str(out), env=env)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "r" / "api.db").exists()

    pw = tmp_path / "pw"
    fd = os.open(pw, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, b"correct horse battery staple\n")
    os.close(fd)
    out2 = tmp_path / "p.kbak"
    r = kedge("backup", "--data-dir", str(backed_up["data"]), "--out", str(out2), "--passphrase-file", str(pw))
    assert r.returncode == 0, r.stderr
    r = kedge("restore", "--data-dir", str(tmp_path / "rp"), "--from", str(out2), "--passphrase-file", str(pw))
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "rp" / "pki" / "encryption.json").read_bytes() == \
        (backed_up["data"] / "pki" / "encryption.json").read_bytes()
