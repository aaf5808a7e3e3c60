"""The backup file format: header, key derivation, chunked AES-256-GCM, manifest. Pure.

Layout (all integers big-endian)::

    header   88 bytes   magic "KEDGEBAK" | format u8 (1) | kdf u8 | scrypt log2(n) u8, r u8, p u8
                        | chunk log2 u8 | reserved u16 (0) | salt 32 | nonce prefix 7 | reserved u8 (0)
                        | check 32 = HMAC-SHA256(mac key, the 56 bytes before it)
    chunks              AES-256-GCM(enc key, nonce = prefix | counter u32 | last u8, plaintext, aad = header)
                        every chunk but the last holds exactly 2**chunk_log2 plaintext bytes; the
                        last (flag 1) holds 0..2**chunk_log2 -- so a truncated, reordered, spliced
                        or extended file fails a tag (the STREAM construction).
    plaintext           manifest length u32 | manifest (JSON) | each file's bytes, in manifest order

Keys: ``kdf`` 1 is a 32-byte key file the operator holds; ``kdf`` 2 a passphrase stretched with
scrypt (parameters in the header, bounded on reading). Either input key goes through HKDF-SHA256
(salt: the header's fresh random salt) into an encryption key and a MAC key, so every backup has
its own keys. The header check tells a wrong key (``backup_wrong_key``) from damaged data
(``backup_tampered``) before anything is decrypted; both are :class:`VerificationError`.

Nothing here touches files, sockets or the clock: bytes in, bytes out.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import struct
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from kedge._internal import jsonutil
from kedge.errors import KedgeError, StateError, VerificationError

__all__ = [
    "FORMAT",
    "HEADER_BYTES",
    "KDF_KEY_FILE",
    "KDF_PASSPHRASE",
    "Decryptor",
    "Encryptor",
    "Header",
    "check_manifest",
    "decode_manifest",
    "encode_manifest",
]

MAGIC = b"KEDGEBAK"
FORMAT = 1
KDF_KEY_FILE = 1
KDF_PASSPHRASE = 2
KEY_BYTES = 32
SALT_BYTES = 32
PREFIX_BYTES = 7
TAG_BYTES = 16
_FIXED = struct.Struct(">8sBBBBBBH32s7sB")
HEADER_BYTES = _FIXED.size + 32
CHUNK_LOG2 = 16  # 64 KiB of plaintext per chunk
# Bounds on what a header may ask for (checked before any key is derived: a forged header must
# not make restore spend gigabytes or hours).
CHUNK_LOG2_RANGE = (12, 20)
SCRYPT_LOG2_N = 16  # 64 MiB with r = 8
SCRYPT_R = 8
SCRYPT_P = 1
SCRYPT_MAX_MEM = 128 * (1 << 18) * 8  # log2(n) <= 18 with r <= 8: 256 MiB
MIN_PASSPHRASE_BYTES = 12
# The manifest (operator input, authenticated before it is read, bounded anyway).
MAX_MANIFEST_BYTES = 4 * 1024 * 1024
MAX_MANIFEST_DEPTH = 8
MAX_FILES = 10_000
MAX_PATH_DEPTH = 8
MAX_PATH_BYTES = 1024
MANIFEST_KIND = "kedge-cloud-backup"
_COMPONENT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._+-]{0,254}")


class BackupFormatError(StateError):
    """Not a kedge backup, or one this kedge cannot read."""

    code = "backup_format"


@dataclass(frozen=True)
class Header:
    kdf: int
    salt: bytes
    prefix: bytes
    chunk_log2: int = CHUNK_LOG2
    scrypt_log2_n: int = 0
    scrypt_r: int = 0
    scrypt_p: int = 0

    def __post_init__(self) -> None:
        if self.kdf == KDF_KEY_FILE:
            if (self.scrypt_log2_n, self.scrypt_r, self.scrypt_p) != (0, 0, 0):
                raise BackupFormatError("scrypt parameters on a key-file backup")
        elif self.kdf == KDF_PASSPHRASE:
            if not (14 <= self.scrypt_log2_n <= 18 and 1 <= self.scrypt_r <= 8 and 1 <= self.scrypt_p <= 4):
                raise BackupFormatError("scrypt parameters out of bounds")
        else:
            raise BackupFormatError(f"unknown key derivation {self.kdf}")
        if not CHUNK_LOG2_RANGE[0] <= self.chunk_log2 <= CHUNK_LOG2_RANGE[1]:
            raise BackupFormatError("chunk size out of bounds")
        if len(self.salt) != SALT_BYTES or len(self.prefix) != PREFIX_BYTES:
            raise BackupFormatError("bad salt or nonce prefix")

    @property
    def chunk_size(self) -> int:
        return 1 << self.chunk_log2

    def fixed_bytes(self) -> bytes:
        return _FIXED.pack(MAGIC, FORMAT, self.kdf, self.scrypt_log2_n, self.scrypt_r, self.scrypt_p,
                           self.chunk_log2, 0, self.salt, self.prefix, 0)

    @classmethod
    def parse(cls, data: bytes) -> tuple[Header, bytes]:
        """``(header, check)`` from the first :data:`HEADER_BYTES` of a file; nothing is trusted yet."""
        if len(data) < HEADER_BYTES or data[:8] != MAGIC:
            raise BackupFormatError("not a kedge backup file")
        magic, fmt, kdf, log2n, r, p, chunk_log2, reserved, salt, prefix, reserved2 = _FIXED.unpack(
            data[:_FIXED.size])
        if fmt != FORMAT:
            raise BackupFormatError(f"backup format {fmt}; this kedge reads format {FORMAT}")
        if reserved or reserved2:
            raise BackupFormatError("reserved header bytes are set")
        header = cls(kdf=kdf, salt=salt, prefix=prefix, chunk_log2=chunk_log2, scrypt_log2_n=log2n,
                     scrypt_r=r, scrypt_p=p)
        return header, data[_FIXED.size:HEADER_BYTES]


def stretch_passphrase(passphrase: bytes, header: Header) -> bytes:
    """The 32-byte input key for a passphrase backup (scrypt with the header's parameters)."""
    if len(passphrase) < MIN_PASSPHRASE_BYTES:
        raise StateError(f"the passphrase must have at least {MIN_PASSPHRASE_BYTES} bytes", code="backup_key_invalid")
    return hashlib.scrypt(passphrase, salt=header.salt, n=1 << header.scrypt_log2_n, r=header.scrypt_r,
                          p=header.scrypt_p, maxmem=SCRYPT_MAX_MEM + 1024 * 1024, dklen=KEY_BYTES)


def _derive(input_key: bytes, header: Header) -> tuple[bytes, bytes]:
    if len(input_key) != KEY_BYTES:
        raise StateError("a backup key is 32 bytes", code="backup_key_invalid")
    okm = HKDF(algorithm=hashes.SHA256(), length=2 * KEY_BYTES, salt=header.salt,
               info=b"kedge-backup-v1\x00" + header.fixed_bytes()).derive(input_key)
    return okm[:KEY_BYTES], okm[KEY_BYTES:]


def _nonce(prefix: bytes, counter: int, last: bool) -> bytes:
    if counter >= 1 << 32:
        raise StateError("backup too large for one file", code="backup_too_large")
    return prefix + struct.pack(">IB", counter, 1 if last else 0)


class Encryptor:
    """Plaintext in (:meth:`update`, any sizes), ciphertext out; :meth:`finish` seals the last chunk."""

    def __init__(self, input_key: bytes, header: Header) -> None:
        enc, mac = _derive(input_key, header)
        fixed = header.fixed_bytes()
        self.header_bytes = fixed + hmac.new(mac, fixed, hashlib.sha256).digest()
        self._aead = AESGCM(enc)
        self._prefix = header.prefix
        self._size = header.chunk_size
        self._buf = bytearray()
        self._counter = 0
        self._done = False

    def _seal(self, chunk: bytes, last: bool) -> bytes:
        out = self._aead.encrypt(_nonce(self._prefix, self._counter, last), chunk, self.header_bytes)
        self._counter += 1
        return out

    def update(self, data: bytes) -> bytes:
        if self._done:
            raise ValueError("finished")
        self._buf += data
        out = []
        # Keep at least one byte back: the last chunk must be sealed as the last.
        while len(self._buf) > self._size:
            out.append(self._seal(bytes(self._buf[:self._size]), False))
            del self._buf[:self._size]
        return b"".join(out)

    def finish(self) -> bytes:
        self._done = True
        return self._seal(bytes(self._buf), True)


class Decryptor:
    """Checks the key against the header, then opens chunks one at a time, in order."""

    def __init__(self, input_key: bytes, header: Header, check: bytes) -> None:
        enc, mac = _derive(input_key, header)
        fixed = header.fixed_bytes()
        if not hmac.compare_digest(hmac.new(mac, fixed, hashlib.sha256).digest(), check):
            raise VerificationError("wrong backup key (or the backup's header was altered)", code="backup_wrong_key")
        self.header_bytes = fixed + check
        self._aead = AESGCM(enc)
        self._prefix = header.prefix
        self.chunk_bytes = header.chunk_size + TAG_BYTES  # what a reader reads at a time
        self._counter = 0
        self.finished = False

    def open(self, chunk: bytes, last: bool) -> bytes:
        """The plaintext of the next chunk; ``last`` when the file ends after it."""
        if self.finished:
            raise VerificationError("data after the last chunk", code="backup_tampered")
        if len(chunk) > self.chunk_bytes or (not last and len(chunk) != self.chunk_bytes):
            raise VerificationError("backup is truncated or altered", code="backup_tampered")
        try:
            plain = self._aead.decrypt(_nonce(self._prefix, self._counter, last), chunk, self.header_bytes)
        except InvalidTag as exc:
            raise VerificationError("backup is truncated or altered", code="backup_tampered") from exc
        self._counter += 1
        self.finished = last
        return plain


# --------------------------------------------------------------------------- manifest


def encode_manifest(manifest: dict[str, Any]) -> bytes:
    body = json.dumps(manifest, separators=(",", ":"), sort_keys=True).encode()
    if len(body) > MAX_MANIFEST_BYTES:
        raise StateError("too many files to back up", code="backup_too_large")
    return struct.pack(">I", len(body)) + body


def manifest_length(prefix: bytes) -> int:
    (length,) = struct.unpack(">I", prefix)
    if length > MAX_MANIFEST_BYTES:
        raise BackupFormatError("manifest too large")
    return int(length)


def check_path(path: Any) -> str:
    """A relative path of plain components: no ``..``, no dot-files, no absolute or empty parts."""
    if not isinstance(path, str) or not 0 < len(path.encode()) <= MAX_PATH_BYTES:
        raise BackupFormatError("bad path in manifest")
    parts = path.split("/")
    if len(parts) > MAX_PATH_DEPTH or not all(_COMPONENT.fullmatch(p) for p in parts):
        raise BackupFormatError(f"refused path in manifest: {path!r}")
    return path


def decode_manifest(body: bytes) -> dict[str, Any]:
    try:
        data = jsonutil.loads(body, max_bytes=MAX_MANIFEST_BYTES, max_depth=MAX_MANIFEST_DEPTH)
    except KedgeError as exc:
        raise BackupFormatError("manifest is not valid JSON") from exc
    return check_manifest(data)


def check_manifest(data: Any) -> dict[str, Any]:
    """The manifest, if well-formed: ``kind``, ``format``, and ``files``: ``[{path, size, mode}]``."""
    if not isinstance(data, dict) or data.get("kind") != MANIFEST_KIND or data.get("format") != FORMAT:
        raise BackupFormatError("not a kedge cloud data dir backup")
    files = data.get("files")
    if not isinstance(files, list) or len(files) > MAX_FILES:
        raise BackupFormatError("bad file list in manifest")
    seen: set[str] = set()
    for entry in files:
        if not isinstance(entry, dict) or set(entry) != {"path", "size", "mode"}:
            raise BackupFormatError("bad file entry in manifest")
        path = check_path(entry["path"])
        size, mode = entry["size"], entry["mode"]
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise BackupFormatError("bad size in manifest")
        if not isinstance(mode, int) or isinstance(mode, bool) or not 0 <= mode <= 0o777:
            raise BackupFormatError("bad mode in manifest")
        if path in seen or any(p in seen for p in _parents(path)):
            raise BackupFormatError(f"duplicate path in manifest: {path!r}")
        seen.add(path)
    for path in seen:  # a file may not also be a directory of another
        if any(p in seen for p in _parents(path)):
            raise BackupFormatError(f"path both file and directory in manifest: {path!r}")
    return data


def _parents(path: str) -> list[str]:
    parts = path.split("/")
    return ["/".join(parts[:i]) for i in range(1, len(parts))]
