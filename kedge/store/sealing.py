"""Encryption at rest for the API server's Secrets (Kubernetes' ``aesgcm`` provider, in kedge's store).

What is stored for a sealed resource instead of its JSON::

    k8s:enc:aesgcm:v1:<key name>:<base64(nonce || ciphertext+tag)>

AES-256-GCM with a random 96-bit nonce per write and the row's key
(``resource``, ``namespace``, ``name``) as associated data, so a sealed value copied
onto another row does not open. A copy of ``api.db`` (or of its WAL) therefore shows
names, never values; the key lives in ``DIR/pki/encryption.json`` (0600), like
kube-apiserver's ``EncryptionConfiguration``.

Key rotation: the first key in the file seals, every listed key opens. Put a new key
first and restart: the store re-seals every row that is not under the first key (and
seals any plaintext row left from before encryption was on) when it opens.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
from pathlib import Path

from kedge._internal import fsutil
from kedge.errors import StateError

PREFIX = "k8s:enc:aesgcm:v1:"
KEY_BYTES = 32
NONCE_BYTES = 12
SEALED_RESOURCES: frozenset[str] = frozenset({"/secrets"})
MAX_CONFIG_BYTES = 64 * 1024
_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")


class SealingError(StateError):
    """The encryption config is unusable, or a stored value does not open with any of its keys."""

    code = "secrets_key_mismatch"


def _aad(key: tuple[str, str, str]) -> bytes:
    return "\x00".join(key).encode("utf-8", "surrogatepass")


class Sealer:
    """Seals and opens the stored JSON of :data:`SEALED_RESOURCES` rows."""

    resources = SEALED_RESOURCES

    def __init__(self, keys: list[tuple[str, bytes]]) -> None:
        if not keys:
            raise SealingError("no encryption key", code="bad_encryption_config")
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        self._ciphers: dict[str, AESGCM] = {}
        for name, secret in keys:
            if not _NAME.fullmatch(name) or len(secret) != KEY_BYTES or name in self._ciphers:
                raise SealingError("encryption keys need distinct names and 32 bytes each",
                                   code="bad_encryption_config")
            self._ciphers[name] = AESGCM(secret)
        self.primary = keys[0][0]
        self._head = f"{PREFIX}{self.primary}:"

    # -- config file -----------------------------------------------------------------

    @classmethod
    def load_or_create(cls, path: str | os.PathLike[str]) -> "Sealer":
        """Read ``path`` (``{"keys": [{"name", "secret": base64}]}``); create it, 0600, with one
        fresh key if it does not exist."""
        p = Path(path)
        if not p.exists():
            doc = {"keys": [{"name": "key1", "secret": base64.b64encode(os.urandom(KEY_BYTES)).decode()}]}
            # Written whole (0600) under a temporary name, then linked into place: never half a key file,
            # and never over one another process created meanwhile.
            tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
            fsutil.write_private(tmp, (json.dumps(doc, indent=2) + "\n").encode())
            try:
                os.link(tmp, p)
            except FileExistsError:
                pass  # created meanwhile: read that one
            finally:
                tmp.unlink(missing_ok=True)
            fsutil.fsync_dir(p.parent)
        st = p.stat()
        if st.st_mode & 0o077:
            raise SealingError(f"{p} must not be readable by group or others (chmod 600)",
                               code="bad_encryption_config")
        if st.st_size > MAX_CONFIG_BYTES:
            raise SealingError(f"{p} is too large", code="bad_encryption_config")
        try:
            doc = json.loads(p.read_bytes())
            keys = [(str(k["name"]), base64.b64decode(k["secret"], validate=True)) for k in doc["keys"]]
        except (ValueError, KeyError, TypeError, binascii.Error) as exc:
            raise SealingError(f"{p} is not a kedge encryption config", code="bad_encryption_config") from exc
        return cls(keys)

    # -- values --------------------------------------------------------------------

    def is_current(self, stored: str) -> bool:
        """Sealed under the primary key (nothing to re-seal)."""
        return stored.startswith(self._head)

    def seal(self, key: tuple[str, str, str], text: str) -> str:
        nonce = os.urandom(NONCE_BYTES)
        ct = self._ciphers[self.primary].encrypt(nonce, text.encode("utf-8", "surrogatepass"), _aad(key))
        return self._head + base64.b64encode(nonce + ct).decode("ascii")

    def open(self, key: tuple[str, str, str], stored: str) -> str:
        """The JSON of a stored value; plaintext (from before encryption) passes through."""
        if not stored.startswith(PREFIX):
            return stored
        name, sep, body = stored[len(PREFIX):].partition(":")
        cipher = self._ciphers.get(name) if sep else None
        if cipher is None:
            raise SealingError(f"a stored secret is sealed with key {name[:64]!r}, which the encryption "
                               "config does not list")
        try:
            raw = base64.b64decode(body, validate=True)
            return cipher.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], _aad(key)).decode("utf-8", "surrogatepass")
        except Exception as exc:  # noqa: BLE001 - InvalidTag, bad base64, short input: all "does not open"
            raise SealingError("a stored secret does not open with the configured key "
                               "(wrong encryption.json for this api.db?)") from exc


# -- key management (kedge secrets ...) ----------------------------------------------


def _read_config(path: Path) -> list[dict[str, str]]:
    Sealer.load_or_create(path)  # validates (mode, shape, key sizes); creates nothing if present
    return list(json.loads(path.read_bytes())["keys"])


def _write_config(path: Path, keys: list[dict[str, str]]) -> None:
    fsutil.write_private(path, (json.dumps({"keys": keys}, indent=2) + "\n").encode())


def rotate_key(path: str | os.PathLike[str]) -> str:
    """Put a fresh key first (it seals from the next API server start); return its name."""
    p = Path(path)
    if not p.exists():
        raise SealingError(f"{p} does not exist (kedge init creates it)", code="bad_encryption_config")
    keys = _read_config(p)
    taken = {k["name"] for k in keys}
    n = len(keys) + 1
    while f"key{n}" in taken:
        n += 1
    name = f"key{n}"
    _write_config(p, [{"name": name, "secret": base64.b64encode(os.urandom(KEY_BYTES)).decode()}, *keys])
    return name


def key_usage(config: str | os.PathLike[str], db: str | os.PathLike[str]) -> dict[str, int]:
    """How many sealed rows of ``db`` each configured key holds (plus ``"plaintext"`` and
    ``"unknown"`` for rows under no configured key). Read-only."""
    import sqlite3

    names = [k["name"] for k in _read_config(Path(config))]
    out = {n: 0 for n in names} | {"plaintext": 0, "unknown": 0}
    dbp = Path(db)
    if not dbp.is_file():
        return out
    conn = sqlite3.connect(f"{dbp.resolve().as_uri()}?mode=ro", uri=True, timeout=5.0)
    try:
        marks = ",".join("?" * len(SEALED_RESOURCES))
        rows = conn.execute(
            f"SELECT data FROM objects WHERE resource IN ({marks}) UNION ALL "  # nosec B608 - only placeholders
            f"SELECT data FROM events WHERE resource IN ({marks})", (*SEALED_RESOURCES, *SEALED_RESOURCES))
        for (data,) in rows:
            if not data.startswith(PREFIX):
                out["plaintext"] += 1
                continue
            name = data[len(PREFIX):].partition(":")[0]
            out[name if name in names else "unknown"] += 1
    finally:
        conn.close()
    return out


def prune_keys(config: str | os.PathLike[str], db: str | os.PathLike[str]) -> list[str]:
    """Drop keys (never the first) that seal no row of ``db``; return their names. New writes only
    ever use the first key, so a key with no rows now will never be needed again."""
    p = Path(config)
    keys = _read_config(p)
    usage = key_usage(p, db)
    keep = [keys[0]] + [k for k in keys[1:] if usage.get(k["name"], 0) > 0]
    dropped = [k["name"] for k in keys if k not in keep]
    if dropped:
        _write_config(p, keep)
    return dropped
