"""kedge.backup.format: bytes in, bytes out -- the chunk stream, keys and manifest checks."""

from __future__ import annotations

import os

import pytest

from kedge.backup import format as fmt
from kedge.errors import StateError, VerificationError

KEY = bytes(range(32))


def header(**kw) -> fmt.Header:
    return fmt.Header(kdf=fmt.KDF_KEY_FILE, salt=os.urandom(32), prefix=os.urandom(7), chunk_log2=12, **kw)


def seal(plain: bytes, h: fmt.Header) -> tuple[bytes, list[bytes]]:
    enc = fmt.Encryptor(KEY, h)
    body = enc.update(plain) + enc.finish()
    size = h.chunk_size + fmt.TAG_BYTES
    return enc.header_bytes, [body[i:i + size] for i in range(0, len(body), size)]


def open_all(head: bytes, chunks: list[bytes], key: bytes = KEY) -> bytes:
    h, check = fmt.Header.parse(head)
    dec = fmt.Decryptor(key, h, check)
    return b"".join(dec.open(c, last=i == len(chunks) - 1) for i, c in enumerate(chunks))


@pytest.mark.parametrize("size", [0, 1, 4095, 4096, 4097, 3 * 4096, 20_000])
def test_round_trip_at_every_chunk_boundary(size):
    plain = os.urandom(size)
    head, chunks = seal(plain, header())
    assert len(head) == fmt.HEADER_BYTES
    assert open_all(head, chunks) == plain


def test_dropping_the_last_chunk_is_detected():
    head, chunks = seal(os.urandom(10_000), header())
    with pytest.raises(VerificationError) as err:
        open_all(head, chunks[:-1])
    assert err.value.code == "backup_tampered"


def test_reordered_chunks_are_detected():
    head, chunks = seal(os.urandom(3 * 4096 + 5), header())
    with pytest.raises(VerificationError):
        open_all(head, [chunks[1], chunks[0], *chunks[2:]])


def test_a_chunk_from_another_backup_is_detected():
    head, chunks = seal(os.urandom(9000), header())
    _, other = seal(os.urandom(9000), header())  # another salt: other keys
    with pytest.raises(VerificationError):
        open_all(head, [other[0], *chunks[1:]])


def test_wrong_key_is_reported_as_such_before_any_chunk():
    head, _ = seal(b"x", header())
    h, check = fmt.Header.parse(head)
    with pytest.raises(VerificationError) as err:
        fmt.Decryptor(bytes(32), h, check)
    assert err.value.code == "backup_wrong_key"


def test_header_bounds_are_checked_before_any_key_work():
    head, _ = seal(b"x", header())
    with pytest.raises(fmt.BackupFormatError):
        fmt.Header.parse(b"NOTKEDGE" + head[8:])
    with pytest.raises(fmt.BackupFormatError):
        fmt.Header.parse(head[:8] + bytes([2]) + head[9:])  # a newer format
    with pytest.raises(fmt.BackupFormatError):
        fmt.Header(kdf=fmt.KDF_PASSPHRASE, salt=bytes(32), prefix=bytes(7), scrypt_log2_n=30, scrypt_r=8,
                   scrypt_p=1)  # a forged header asking for 128 GiB of scrypt
    with pytest.raises(fmt.BackupFormatError):
        fmt.Header(kdf=fmt.KDF_KEY_FILE, salt=bytes(32), prefix=bytes(7), chunk_log2=31)
    with pytest.raises(fmt.BackupFormatError):
        fmt.Header(kdf=9, salt=bytes(32), prefix=bytes(7))


def test_passphrase_is_stretched_and_short_ones_refused():
    h = fmt.Header(kdf=fmt.KDF_PASSPHRASE, salt=bytes(32), prefix=bytes(7), scrypt_log2_n=14, scrypt_r=8,
                   scrypt_p=1)
    k = fmt.stretch_passphrase(b"correct horse battery", h)
    assert len(k) == 32 and k == fmt.stretch_passphrase(b"correct horse battery", h)
    with pytest.raises(StateError):
        fmt.stretch_passphrase(b"short", h)


def manifest(files):
    return {"kind": fmt.MANIFEST_KIND, "format": 1, "files": files}


@pytest.mark.parametrize("path", ["../etc/passwd", "/etc/passwd", "pki/../../x", ".hidden", "pki/.lock", "a//b",
                                  "", "a/", "x\x00y", "a\\b", "/".join(["d"] * 9)])
def test_manifest_path_traversal_is_refused(path):
    with pytest.raises(fmt.BackupFormatError):
        fmt.check_manifest(manifest([{"path": path, "size": 1, "mode": 0o600}]))


def test_manifest_duplicates_and_file_directory_clashes_are_refused():
    entry = {"path": "pki/ca.key", "size": 1, "mode": 0o600}
    with pytest.raises(fmt.BackupFormatError):
        fmt.check_manifest(manifest([entry, entry]))
    with pytest.raises(fmt.BackupFormatError):
        fmt.check_manifest(manifest([{"path": "pki", "size": 1, "mode": 0o600}, entry]))
    with pytest.raises(fmt.BackupFormatError):
        fmt.check_manifest(manifest([entry, {"path": "pki", "size": 1, "mode": 0o600}]))


@pytest.mark.parametrize("entry", [{"path": "a", "size": -1, "mode": 0o600}, {"path": "a", "size": 1, "mode": 0o7777},
                                   {"path": "a", "size": True, "mode": 0o600}, {"path": "a", "size": 1},
                                   {"path": "a", "size": 1, "mode": 0o600, "extra": 1}])
def test_manifest_bad_entries_are_refused(entry):
    with pytest.raises(fmt.BackupFormatError):
        fmt.check_manifest(manifest([entry]))


def test_manifest_round_trip_and_length_bound():
    m = manifest([{"path": "pki/ca.crt", "size": 3, "mode": 0o644}])
    blob = fmt.encode_manifest(m)
    assert fmt.decode_manifest(blob[4:4 + fmt.manifest_length(blob[:4])]) == m
    with pytest.raises(fmt.BackupFormatError):
        fmt.manifest_length((fmt.MAX_MANIFEST_BYTES + 1).to_bytes(4, "big"))
