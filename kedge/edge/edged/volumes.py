"""The pod directory on disk: volumes, working directory, logs.

Layout (``root`` = ``EDGEDIR/pods``)::

    root/                              0711 edgecore's user
      <namespace>_<name>_<uid>/        0711 edgecore's user
        state.json                     0600 edgecore's user (pids, start times, spec hashes)
        logs/<container>.log[.N]       0700 / 0600 edgecore's user (the pod cannot rewrite its history)
        volumes/                       0711 edgecore's user
          <vol>/                       0700 the pod's user; files 0400 (secret) / 0444 (configmap)
        work/                          0700 the pod's user; default working directory
        run/<container>.exit           0700 the pod's user; exit codes written by the shim

Everything the pod's user owns is a leaf edgecore never walks into with paths: volume
contents are built in a fresh directory and swapped in by rename, working
directories are created with ``dir_fd``/``O_NOFOLLOW`` -- so a pod that plants
symlinks in its own directories cannot make root write or chown elsewhere.

Directories above a pod's own leaves are 0711 (search, no listing) because an
unprivileged pod user must be able to reach its directories by path.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import stat
from pathlib import Path

from kedge._internal import fsutil

TRAVERSE_DIR = 0o711


def make_dir(path: Path, mode: int) -> Path:
    """Create ``path`` with exactly ``mode`` (umask-proof), or fix the mode of ours."""
    fsutil.make_private_dir(path)
    st = os.lstat(path)
    if st.st_mode & 0o7777 != mode and st.st_uid == os.geteuid():
        os.chmod(path, mode, follow_symlinks=False)
    return path


def _owned_by(path: Path, uid: int | None, gid: int | None) -> bool:
    """True if ``path`` exists; a leaf of another owner (a previous identity of the pod, a
    planted link) is removed -- never followed -- so it is created afresh for this one."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    if uid is None or os.geteuid() != 0 or ((st.st_uid, st.st_gid) == (uid, gid if gid is not None else uid)
                                            and stat.S_ISDIR(st.st_mode)):
        return True
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(path)  # fd-based and symlink-safe on Linux
    else:
        os.unlink(path)
    return False


def _chown(path: Path | str, uid: int | None, gid: int | None, *, dir_fd: int | None = None) -> None:
    if uid is None or os.geteuid() != 0:
        return
    os.chown(path, uid, gid if gid is not None else uid, dir_fd=dir_fd, follow_symlinks=False)


class PodDir:
    """Paths and safe writers for one pod's directory."""

    def __init__(self, root: Path, dir_name: str) -> None:
        self.path = root / dir_name
        self.state = self.path / "state.json"
        self.logs = self.path / "logs"
        self.volumes = self.path / "volumes"
        self.work = self.path / "work"
        self.run = self.path / "run"  # the pod user's exit-code files (see runtime's shim)

    def create(self, uid: int | None, gid: int | None) -> None:
        make_dir(self.path, TRAVERSE_DIR)
        make_dir(self.logs, fsutil.PRIVATE_DIR)
        make_dir(self.volumes, TRAVERSE_DIR)
        for private in (self.work, self.run):
            if not _owned_by(private, uid, gid):
                os.mkdir(private, 0o700)
                _chown(private, uid, gid)

    def exit_path(self, container: str) -> Path:
        return self.run / f"{container}.exit"

    def log_path(self, container: str) -> Path:
        return self.logs / f"{container}.log"

    def volume_path(self, name: str) -> Path:
        return self.volumes / name

    def ensure_empty_dir(self, name: str, uid: int | None, gid: int | None) -> Path:
        path = self.volume_path(name)
        if _owned_by(path, uid, gid):
            return path
        os.mkdir(path, 0o700)
        _chown(path, uid, gid)
        return path

    def write_volume(self, name: str, files: dict[str, tuple[bytes, int]], uid: int | None,
                     gid: int | None) -> bool:
        """Make ``volumes/<name>`` hold exactly ``files``; False if it already did."""
        digest = hashlib.sha256()
        for rel in sorted(files):
            data, mode = files[rel]
            digest.update(f"{rel}\0{mode}\0{len(data)}\0".encode())
            digest.update(data)
        digest.update(f"{uid}:{gid}".encode())
        marker = self.volumes / f".{name}.sha256"
        target = self.volume_path(name)
        try:
            if marker.read_text() == digest.hexdigest() and target.is_dir():
                return False
        except FileNotFoundError:
            pass
        fresh = self.volumes / f".{name}.{secrets.token_hex(6)}"
        os.mkdir(fresh, 0o700)
        try:
            for rel in sorted(files):
                data, mode = files[rel]
                parent = fresh
                for part in rel.split("/")[:-1]:
                    parent = parent / part
                    if not parent.is_dir():
                        os.mkdir(parent, 0o700)
                fd = os.open(parent / rel.rsplit("/", 1)[-1],
                             os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode & 0o777)
                with os.fdopen(fd, "wb") as fh:
                    fh.write(data)
                os.chmod(parent / rel.rsplit("/", 1)[-1], mode & 0o777)  # umask-proof
            # Hand the finished tree to the pod's user, bottom up, never following links.
            for dirpath, dirnames, filenames in os.walk(fresh, topdown=False):
                for entry in filenames + dirnames:
                    _chown(Path(dirpath) / entry, uid, gid)
            _chown(fresh, uid, gid)
            if os.path.lexists(target):
                old = self.volumes / f".{name}.old.{secrets.token_hex(6)}"
                os.rename(target, old)
                os.rename(fresh, target)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.rename(fresh, target)
        except BaseException:
            shutil.rmtree(fresh, ignore_errors=True)
            raise
        fsutil.write_private(marker, digest.hexdigest().encode())
        return True

    def ensure_workdir(self, rel: str, uid: int | None, gid: int | None) -> Path:
        """``work/<rel>``, created component by component without following links."""
        flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
        fd = os.open(self.work, flags)
        try:
            for part in rel.split("/"):
                try:
                    os.mkdir(part, 0o700, dir_fd=fd)
                    _chown(part, uid, gid, dir_fd=fd)
                except FileExistsError:
                    pass
                nfd = os.open(part, flags, dir_fd=fd)
                os.close(fd)
                fd = nfd
        finally:
            os.close(fd)
        return self.work / rel

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def rotate_log(path: Path, max_bytes: int, backups: int) -> bool:
    """Copy-truncate rotation: the process keeps its O_APPEND descriptor and writes on.

    Copy-then-truncate (rather than rename) because the writer is a process that may
    outlive edgecore and cannot be told to reopen. Lines written between the copy and
    the truncate are lost; the cap holds.
    """
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return False
    if size <= max_bytes:
        return False
    for i in range(backups - 1, 0, -1):
        older = path.with_name(f"{path.name}.{i}")
        if older.exists():
            os.replace(older, path.with_name(f"{path.name}.{i + 1}"))
    if backups > 0:
        tmp = path.with_name(f".{path.name}.rot")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with open(path, "rb") as src, os.fdopen(fd, "wb") as dst:
            shutil.copyfileobj(src, dst)
        os.replace(tmp, path.with_name(f"{path.name}.1"))
    os.truncate(path, 0)
    return True
