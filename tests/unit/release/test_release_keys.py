"""Release keys: 0600 from creation, never overwritten, only P-256 accepted."""

import os
import stat

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from kedge.errors import ConfigError, StateError
from kedge.release.sign import keygen, load_private_key, load_public_key, public_path_for


def test_keygen_writes_private_key_0600_and_public_key(tmp_path):
    pub = keygen(tmp_path / "release.pem")
    assert pub == tmp_path / "release.pub"
    assert stat.S_IMODE(os.stat(tmp_path / "release.pem").st_mode) == 0o600
    priv = load_private_key(tmp_path / "release.pem")
    assert load_public_key(pub).public_numbers() == priv.public_key().public_numbers()


def test_keygen_refuses_to_overwrite_a_key(tmp_path):
    keygen(tmp_path / "k.pem")
    before = (tmp_path / "k.pem").read_bytes()
    (tmp_path / "k.pub").unlink()
    with pytest.raises(StateError):
        keygen(tmp_path / "k.pem")
    assert (tmp_path / "k.pem").read_bytes() == before


def test_public_path_naming():
    from pathlib import Path
    assert public_path_for(Path("a/k.pem")) == Path("a/k.pub")
    assert public_path_for(Path("a/k")) == Path("a/k.pub")


@pytest.mark.parametrize("make", [
    lambda: ec.generate_private_key(ec.SECP384R1()),
    lambda: ed25519.Ed25519PrivateKey.generate(),
])
def test_non_p256_keys_are_refused(tmp_path, make):
    path = tmp_path / "k.pem"
    path.write_bytes(make().private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    with pytest.raises(ConfigError):
        load_private_key(path)


def test_garbage_and_oversized_key_files_are_refused(tmp_path):
    (tmp_path / "a.pem").write_bytes(b"-----BEGIN PRIVATE KEY-----\nzz\n")
    (tmp_path / "b.pem").write_bytes(b"A" * 20000)
    for name in ("a.pem", "b.pem"):
        with pytest.raises(ConfigError):
            load_private_key(tmp_path / name)
