"""``kedge backup`` / ``kedge restore`` of a cloud data dir: the I/O around :mod:`kedge.backup.format`.

What a backup holds: every regular file under the data dir, by relative path, except

* SQLite's side files (``-wal``, ``-shm``, ``-journal``), dot-files (locks, temp files) and the
  copies upgrades leave (``*.bak-v<N>``);
* ``endpoints.json`` and ``connected.json``: facts about the running processes, rewritten at start;
* symlinks and anything that is not a regular file (reported, never followed).

Each ``*.db`` is copied with SQLite's online backup API from a read-only connection, in one
step: a consistent snapshot even while cloudcore writes (it never blocks cloudcore). Every other
file is opened before the manifest is written and exactly the size it had then is copied (an
appended log is cut there; a replaced file is read from the inode that was opened). The copy of
``api.db`` is checked against the copy of ``pki/encryption.json``: every sealed Secret must be
under a key the backup holds (a key rotation racing the backup fails it instead of producing a
backup whose Secrets cannot be opened).

Restore never writes into a non-empty directory. It decrypts into a fresh private staging
directory next to the target (0700), every file created 0600 (0644 only for what was 0644 and
is not a key, a database or the encryption config), checks the final chunk, and only then
renames the staging directory into place; on any failure the staging directory is removed.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import os
import secrets
import shutil
import sqlite3
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from kedge import __version__
from kedge._internal import fsutil
from kedge.backup import format as fmt
from kedge.errors import ConfigError, StateError, VerificationError

__all__ = ["KeySource", "create_backup", "create_key_file", "default_key_file", "restore_backup"]

RUNTIME_FILES = frozenset({"endpoints.json", "connected.json"})
SIDE_SUFFIXES = ("-wal", "-shm", "-journal")
SECRET_SUFFIXES = (".key", ".db", "encryption.json", ".kubeconfig", "config.json")
MAX_KEY_FILE_BYTES = 256
MAX_PASSPHRASE_BYTES = 4096
COPY_BYTES = 1024 * 1024


@dataclass(frozen=True)
class KeySource:
    """What the operator holds: a 32-byte key (``kdf`` 1) or a passphrase (``kdf`` 2)."""

    kdf: int
    material: bytes

    def input_key(self, header: fmt.Header) -> bytes:
        if header.kdf != self.kdf:
            raise ConfigError("this backup was encrypted with a " + (
                "passphrase: use --passphrase-file" if header.kdf == fmt.KDF_PASSPHRASE else "key file: use --key-file"),
                code="backup_key_kind")
        return self.material if self.kdf == fmt.KDF_KEY_FILE else fmt.stretch_passphrase(self.material, header)

    def new_header(self) -> fmt.Header:
        salt, prefix = secrets.token_bytes(fmt.SALT_BYTES), secrets.token_bytes(fmt.PREFIX_BYTES)
        if self.kdf == fmt.KDF_KEY_FILE:
            return fmt.Header(kdf=fmt.KDF_KEY_FILE, salt=salt, prefix=prefix)
        return fmt.Header(kdf=fmt.KDF_PASSPHRASE, salt=salt, prefix=prefix, scrypt_log2_n=fmt.SCRYPT_LOG2_N,
                          scrypt_r=fmt.SCRYPT_R, scrypt_p=fmt.SCRYPT_P)


# --------------------------------------------------------------------------- keys


def default_key_file() -> Path:
    """``$KEDGE_BACKUP_KEY_FILE``, else ``$XDG_CONFIG_HOME/kedge/backup.key`` (``~/.config/...``)."""
    explicit = os.environ.get("KEDGE_BACKUP_KEY_FILE")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "kedge" / "backup.key"


def create_key_file(path: str | os.PathLike[str]) -> None:
    """A new random 32-byte key, hex, in a new file created 0600 (never overwrites one)."""
    p = Path(path)
    if not p.parent.exists():
        fsutil.make_private_dir(p.parent)
    fsutil.create_exclusive(p, secrets.token_hex(fmt.KEY_BYTES).encode() + b"\n", mode=fsutil.PRIVATE_FILE)


def _read_private(path: Path, max_bytes: int, what: str) -> bytes:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as exc:
        raise ConfigError(f"cannot read the {what} {path}: {exc.strerror}", code="backup_key_missing") from exc
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fh.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError(f"the {what} {path} is not a regular file", code="backup_key_invalid")
        if st.st_mode & 0o077:
            raise StateError(f"the {what} {path} is accessible by group or others (mode "
                             f"{stat.S_IMODE(st.st_mode):o}); expected 0600", code="insecure_permissions")
        data = fh.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise ConfigError(f"the {what} {path} is too large", code="backup_key_invalid")
    return data


def read_key_file(path: str | os.PathLike[str]) -> KeySource:
    text = _read_private(Path(path), MAX_KEY_FILE_BYTES, "backup key file").strip()
    try:
        key = bytes.fromhex(text.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        key = b""
    if len(key) != fmt.KEY_BYTES:
        raise ConfigError(f"{path} must hold 64 hex digits (a 32-byte key; `kedge backup --new-key F` makes one)",
                          code="backup_key_invalid")
    return KeySource(fmt.KDF_KEY_FILE, key)


def read_passphrase_file(path: str | os.PathLike[str]) -> KeySource:
    data = _read_private(Path(path), MAX_PASSPHRASE_BYTES, "passphrase file")
    data = data.removesuffix(b"\n").removesuffix(b"\r")
    if len(data) < fmt.MIN_PASSPHRASE_BYTES:
        raise ConfigError(f"the passphrase must have at least {fmt.MIN_PASSPHRASE_BYTES} bytes",
                          code="backup_key_invalid")
    return KeySource(fmt.KDF_PASSPHRASE, data)


# --------------------------------------------------------------------------- backup


@dataclass
class _Entry:
    path: str  # relative, "/"-separated
    size: int
    mode: int
    fh: IO[bytes]


def _wanted(rel: str, name: str) -> bool:
    if name.startswith(".") or name.endswith(SIDE_SUFFIXES) or ".bak-v" in name:
        return False
    return not ("/" not in rel and name in RUNTIME_FILES)


def _walk(root: Path, skipped: list[str]) -> list[str]:
    out: list[str] = []
    stack = [""]
    while stack:
        rel_dir = stack.pop()
        with os.scandir(root / rel_dir if rel_dir else root) as it:
            for entry in sorted(it, key=lambda e: e.name):
                rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
                if not _wanted(rel, entry.name):
                    continue
                if entry.is_symlink():
                    skipped.append(f"{rel} (symlink)")
                elif entry.is_dir(follow_symlinks=False):
                    stack.append(rel)
                elif entry.is_file(follow_symlinks=False):
                    try:
                        out.append(fmt.check_path(rel))
                    except fmt.BackupFormatError:
                        skipped.append(f"{rel} (name)")
                else:
                    skipped.append(f"{rel} (not a regular file)")
    return sorted(out)


def _snapshot_db(src: Path, dest: Path) -> None:
    """A consistent copy of a live SQLite database (one backup step from a read-only connection)."""
    os.close(os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, fsutil.PRIVATE_FILE))
    try:
        conn = sqlite3.connect(f"{src.resolve().as_uri()}?mode=ro", uri=True, timeout=10.0)
        try:
            out = sqlite3.connect(str(dest), isolation_level=None)
            try:
                conn.backup(out, pages=-1)
                out.execute("PRAGMA journal_mode=DELETE")  # a self-contained file: no -wal to carry
                ok = out.execute("PRAGMA quick_check").fetchone()[0]
            finally:
                out.close()
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise StateError(f"cannot snapshot {src.name}: {exc}", code="backup_failed") from exc
    if ok != "ok":
        raise StateError(f"the snapshot of {src.name} fails SQLite's check: {ok}", code="backup_failed")


def _check_sealing(snapshot_dir: Path, entries: dict[str, _Entry]) -> None:
    """Every sealed row of the api.db copy is under a key of the encryption.json copy."""
    if "api.db" not in entries or "pki/encryption.json" not in entries:
        return
    from kedge.store import sealing

    enc = snapshot_dir / "encryption.json"
    fh = entries["pki/encryption.json"].fh
    fh.seek(0)
    fsutil.create_exclusive(enc, fh.read(entries["pki/encryption.json"].size))
    fh.seek(0)
    usage = sealing.key_usage(enc, snapshot_dir / "api.db")
    if usage["unknown"]:
        raise StateError("api.db holds Secrets sealed under a key the copied encryption.json lacks "
                         "(a key rotation during the backup?); run the backup again", code="backup_inconsistent")


def create_backup(data_dir: str | os.PathLike[str], out: str | os.PathLike[str], key: KeySource,
                  *, now: _dt.datetime | None = None) -> dict[str, Any]:
    """Write an encrypted backup of ``data_dir`` to ``out`` (a new file, 0600); return a summary."""
    root, dest = Path(data_dir), Path(out)
    if not (root / "pki" / "ca.crt").is_file() or not (root / "config.json").is_file():
        raise StateError(f"{root} is not an initialised kedge cloud data dir", code="not_initialised")
    if dest.exists() or dest.is_symlink():
        raise StateError(f"{dest} already exists; refusing to overwrite it", code="exists")
    if not dest.parent.is_dir():
        raise StateError(f"{dest.parent} is not a directory", code="backup_failed")
    skipped: list[str] = []
    paths = _walk(root, skipped)
    if len(paths) > fmt.MAX_FILES:
        raise StateError("too many files to back up", code="backup_too_large")
    when = (now or _dt.datetime.now(_dt.timezone.utc)).astimezone(_dt.timezone.utc)
    with tempfile.TemporaryDirectory(prefix=".kedge-backup-", dir=dest.parent) as tmp, \
            contextlib.ExitStack() as files:
        snapshot_dir = Path(tmp)  # 0700 (mkdtemp)
        entries: dict[str, _Entry] = {}
        for i, rel in enumerate(paths):
            src = root / rel
            if rel.endswith(".db"):
                copy = snapshot_dir / f"{i}.db"
                _snapshot_db(src, copy)
                if rel == "api.db":
                    os.link(copy, snapshot_dir / "api.db")  # for _check_sealing
                fh = files.enter_context(open(copy, "rb"))
            else:
                try:
                    fd = os.open(src, os.O_RDONLY | os.O_NOFOLLOW)
                except FileNotFoundError:
                    skipped.append(f"{rel} (removed during the backup)")
                    continue
                fh = files.enter_context(os.fdopen(fd, "rb"))
            st = os.fstat(fh.fileno())
            entries[rel] = _Entry(rel, st.st_size, stat.S_IMODE(os.stat(src, follow_symlinks=False).st_mode), fh)
        _check_sealing(snapshot_dir, entries)
        manifest = {
            "kind": fmt.MANIFEST_KIND, "format": fmt.FORMAT, "kedge": __version__,
            "created": when.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "files": [{"path": e.path, "size": e.size, "mode": e.mode} for e in entries.values()],
        }
        header = key.new_header()
        enc = fmt.Encryptor(key.input_key(header), header)
        tmp_out = dest.with_name(f".{dest.name}.{secrets.token_hex(6)}.tmp")
        fd = os.open(tmp_out, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, fsutil.PRIVATE_FILE)
        total = 0
        try:
            with os.fdopen(fd, "wb") as w:
                w.write(enc.header_bytes)
                w.write(enc.update(fmt.encode_manifest(manifest)))
                for e in entries.values():
                    left = e.size
                    while left:
                        block = e.fh.read(min(left, COPY_BYTES))
                        if not block:
                            raise StateError(f"{e.path} shrank during the backup; run it again", code="backup_failed")
                        w.write(enc.update(block))
                        left -= len(block)
                    total += e.size
                w.write(enc.finish())
                w.flush()
                os.fsync(w.fileno())
            try:
                os.link(tmp_out, dest)  # publish without ever replacing an existing file
            except FileExistsError as exc:
                raise StateError(f"{dest} already exists; refusing to overwrite it", code="exists") from exc
            fsutil.fsync_dir(dest.parent)
        finally:
            tmp_out.unlink(missing_ok=True)
    return {"files": len(entries), "bytes": total, "skipped": skipped, "created": manifest["created"],
            "sha256": fsutil.sha256_file(dest)}


# --------------------------------------------------------------------------- restore


class _PlainReader:
    """The decrypted stream of a backup file, read in bounded chunks."""

    def __init__(self, fh: IO[bytes], dec: fmt.Decryptor) -> None:
        self._fh, self._dec = fh, dec
        self._buf = bytearray()
        self._next = fh.read(dec.chunk_bytes)

    def _fill(self) -> bool:
        if self._dec.finished:
            return False
        chunk, self._next = self._next, self._fh.read(self._dec.chunk_bytes)
        self._buf += self._dec.open(chunk, last=not self._next)
        return True

    def read_exact(self, n: int) -> bytes:
        while len(self._buf) < n:
            if not self._fill():
                raise VerificationError("backup ends early", code="backup_tampered")
        out = bytes(self._buf[:n])
        del self._buf[:n]
        return out

    def read_some(self, limit: int) -> bytes:
        if not self._buf and not self._fill():
            raise VerificationError("backup ends early", code="backup_tampered")
        out = bytes(self._buf[:limit])
        del self._buf[:limit]
        return out

    def check_end(self) -> None:
        while self._fill():
            pass
        if self._buf:
            raise VerificationError("data after the last file", code="backup_tampered")


def _restored_mode(path: str, mode: int) -> int:
    name = path.rsplit("/", 1)[-1]
    if name.endswith(SECRET_SUFFIXES) or not mode & 0o044:
        return fsutil.PRIVATE_FILE
    return fsutil.PUBLIC_FILE


def _check_target(target: Path) -> bool:
    """Whether ``target`` exists (as an empty directory); anything else is refused."""
    try:
        st = os.lstat(target)
    except FileNotFoundError:
        return False
    if not stat.S_ISDIR(st.st_mode):
        raise StateError(f"{target} exists and is not a directory", code="restore_target_not_empty")
    if any(os.scandir(target)):
        raise StateError(f"{target} is not empty; restore only into a new or empty directory",
                         code="restore_target_not_empty")
    return True


def restore_backup(src: str | os.PathLike[str], data_dir: str | os.PathLike[str], key: KeySource) -> dict[str, Any]:
    """Restore the backup ``src`` into ``data_dir`` (new or empty); return a summary."""
    target = Path(data_dir)
    _check_target(target)
    try:
        fh = open(src, "rb")  # noqa: SIM115 - closed below
    except OSError as exc:
        raise StateError(f"cannot read {src}: {exc.strerror}", code="backup_unreadable") from exc
    with fh:
        if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
            raise StateError(f"{src} is not a regular file", code="backup_unreadable")
        header, check = fmt.Header.parse(fh.read(fmt.HEADER_BYTES))
        dec = fmt.Decryptor(key.input_key(header), header, check)
        remaining = os.fstat(fh.fileno()).st_size - fmt.HEADER_BYTES
        reader = _PlainReader(fh, dec)
        manifest = fmt.decode_manifest(reader.read_exact(fmt.manifest_length(reader.read_exact(4))))
        files = manifest["files"]
        if sum(f["size"] for f in files) > remaining:
            raise VerificationError("manifest claims more data than the backup holds", code="backup_tampered")
        parent = target.parent
        if not parent.exists():
            fsutil.make_private_dir(parent)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.restore-", dir=parent))  # 0700
        try:
            for entry in files:
                _restore_file(staging, entry, reader)
            reader.check_end()  # the last chunk's tag: only now is every byte above authenticated
            _fsync_tree(staging)
            if _check_target(target):
                os.rmdir(target)
            os.rename(staging, target)
            fsutil.fsync_dir(parent)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    return {"files": len(files), "bytes": sum(f["size"] for f in files), "created": manifest.get("created"),
            "kedge": manifest.get("kedge")}


def _restore_file(staging: Path, entry: dict[str, Any], reader: _PlainReader) -> None:
    rel: str = entry["path"]
    parts = rel.split("/")
    d = staging
    for part in parts[:-1]:
        d = d / part
        with contextlib.suppress(FileExistsError):
            os.mkdir(d, fsutil.PRIVATE_DIR)
        if not stat.S_ISDIR(os.lstat(d).st_mode):
            raise fmt.BackupFormatError(f"refused path in manifest: {rel!r}")
    fd = os.open(d / parts[-1], os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW,
                 _restored_mode(rel, entry["mode"]))
    with os.fdopen(fd, "wb") as w:
        left = entry["size"]
        while left:
            block = reader.read_some(min(left, COPY_BYTES))
            w.write(block)
            left -= len(block)
        w.flush()
        os.fsync(w.fileno())


def _fsync_tree(root: Path) -> None:
    for dirpath, _dirs, _files in os.walk(root):
        fsutil.fsync_dir(dirpath)
