"""Files written the safe way: private from creation, replaced atomically."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from kedge.errors import LocalError, StateError

PRIVATE_FILE = 0o600
PUBLIC_FILE = 0o644
PRIVATE_DIR = 0o700


class FileTooLarge(LocalError):
    """A file is larger than the bound its reader takes (it is refused, never truncated)."""

    code = "file_too_large"


def read_bounded(path: str | os.PathLike[str], max_bytes: int) -> bytes:
    """The whole file at ``path`` if it has at most ``max_bytes``; else :class:`FileTooLarge`.

    Reads at most ``max_bytes + 1`` bytes whatever the file's size (a FIFO or /dev/zero
    included). ``OSError`` (``FileNotFoundError``, ``IsADirectoryError``...) propagates: each
    caller names its own codes for a missing, unreadable or oversized file.
    """
    with open(path, "rb") as fh:
        data = fh.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise FileTooLarge(f"{path} is larger than {max_bytes} bytes")
    return data


def make_private_dir(path: str | os.PathLike[str], *, exist_ok: bool = True) -> Path:
    """Create ``path`` (and missing parents) with mode 0700 from the start."""
    p = Path(path)
    old = os.umask(0o077)
    try:
        p.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=exist_ok)
    finally:
        os.umask(old)
    return p


def atomic_write(path: str | os.PathLike[str], data: bytes, *, mode: int = PUBLIC_FILE,
                 durable: bool = True) -> None:
    """Write ``data`` to ``path`` via a temp file + ``os.replace``.

    The temp file is created with ``mode`` (0600 for secrets) so the bytes are never
    readable by others, not even for a moment; readers see the old or the new file.
    ``durable=False`` skips the fsyncs: the file then survives a process crash (the page
    cache does) but not a power loss -- for state that a power loss makes moot anyway.
    """
    p = Path(path)
    tmp = p.with_name(f".{p.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            if durable:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, p)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    if durable:
        _fsync_dir(p.parent)


def write_private(path: str | os.PathLike[str], data: bytes) -> None:
    """Atomically write a secret (key, token) file with mode 0600."""
    atomic_write(path, data, mode=PRIVATE_FILE)


def create_exclusive(path: str | os.PathLike[str], data: bytes, *, mode: int = PRIVATE_FILE) -> None:
    """Create a new file; refuse if it already exists (never overwrite a CA)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    except FileExistsError as exc:
        raise StateError(f"{path} already exists; refusing to overwrite it", code="exists") from exc
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def read_json(path: str | os.PathLike[str], default: Any = None) -> Any:
    try:
        with open(path, "rb") as fh:
            return json.loads(fh.read())
    except FileNotFoundError:
        return default
    except (ValueError, RecursionError) as exc:  # RecursionError: absurdly deep nesting
        raise StateError(f"{path} is not valid JSON", code="corrupt_state") from exc


def update_json(path: str | os.PathLike[str], updates: dict[str, Any]) -> dict[str, Any]:
    """Merge ``updates`` into the JSON object at ``path`` and write it atomically.

    Several processes add their own keys to ``endpoints.json``; an advisory lock on a
    sidecar file serialises the read-modify-write.
    """
    import fcntl

    p = Path(path)
    lock_path = p.with_name(f".{p.name}.lock")
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, PRIVATE_FILE)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            current = read_json(p, {}) or {}
        except StateError:
            current = None
        if not isinstance(current, dict):
            # Only derived facts (addresses) live here: a damaged file is replaced, not fatal.
            logging.getLogger(__name__).warning("%s was not a JSON object; writing it anew", p)
            current = {}
        current.update(updates)
        atomic_write(p, (json.dumps(current, indent=2, sort_keys=True) + "\n").encode())
        return current
    finally:
        os.close(fd)


def sha256_file(path: str | os.PathLike[str]) -> str:
    """The SHA-256 hex digest of a file's contents, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1024 * 1024), b""):
            h.update(chunk)
    return h.hexdigest()


def file_stamp(paths: Iterable[Path]) -> tuple[tuple[int, int, int], ...]:
    """(mtime_ns, size, inode) of each of ``paths``, (-1, -1, -1) for one that cannot be
    stat'ed: compare two stamps to tell whether any of the files was replaced or changed."""
    out = []
    for path in paths:
        try:
            st = path.stat()
        except OSError:
            out.append((-1, -1, -1))
        else:
            out.append((st.st_mtime_ns, st.st_size, st.st_ino))
    return tuple(out)


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Make renames inside ``path`` durable (best effort: some filesystems refuse)."""
    _fsync_dir(Path(path))


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
