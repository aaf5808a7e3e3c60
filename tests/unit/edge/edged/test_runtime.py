"""Runtime helpers that read files a pod can write: exit files and /proc stat lines."""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
import threading

import pytest

from kedge.edge.edged.runtime import ContainerSpec, as_pod, find_executable, open_dir, proc_stat, read_exit_file


@pytest.mark.parametrize("content,expect", [
    (b"0\n", 0), (b"143\n", 143), (b"255", 255), (b"256\n", None), (b"-1\n", None), (b"", None),
    (b"12abc", None), (b"9" * 4096, None),
])
def test_exit_file_values(tmp_path, content, expect):
    path = tmp_path / "c.exit"
    path.write_bytes(content)
    assert read_exit_file(str(path)) == expect


def test_exit_file_that_is_a_symlink_fifo_or_missing_is_not_trusted(tmp_path):
    target = tmp_path / "target"
    target.write_bytes(b"0\n")
    link = tmp_path / "link.exit"
    link.symlink_to(target)
    fifo = tmp_path / "fifo.exit"
    os.mkfifo(fifo)
    assert read_exit_file(str(link)) is None
    assert read_exit_file(str(fifo)) is None  # and does not block
    assert read_exit_file(str(tmp_path / "missing")) is None
    assert read_exit_file("") is None


def test_proc_stat_reads_state_and_start_time_of_a_live_process():
    st = proc_stat(os.getpid())
    assert st is not None and st[0] in "RS" and st[1] > 0
    assert proc_stat(2**22 + 7) is None  # above pid_max: never a process


@pytest.mark.parametrize("argv,env", [((), ()), (("",), ()), (("a\x00b",), ()), (("x",), (("A=B", "1"),)),
                                      (("x",), (("A", "1\x00"),))])
def test_container_spec_refuses_unlaunchable_input(argv, env):
    with pytest.raises(ValueError):
        ContainerSpec("c", argv, env, "/", "/dev/null")


def _errno(fn):
    try:
        fn()
    except OSError as exc:
        return exc.errno
    return 0


def test_find_executable_resolves_like_execvp_in_the_containers_cwd(tmp_path):
    tool = tmp_path / "bin" / "tool"
    tool.parent.mkdir()
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    (tmp_path / "bin" / "plain").write_text("")
    me, grp = os.geteuid(), os.getegid()
    fd = open_dir(str(tmp_path))
    try:
        def find(cmd, search=()):
            return _errno(lambda: find_executable(cmd, list(search), fd, me, grp))

        assert find("./bin/tool") == 0 and find("bin/tool") == 0  # relative: from the cwd
        assert find("tool", ["/nonexistent", str(tool.parent)]) == 0
        assert find("tool", ["bin"]) == 0  # a relative PATH entry, from the cwd too
        assert find("tool", ["/usr/bin"]) == errno.ENOENT
        assert find("/no/such/file") == errno.ENOENT
        assert find("bin/plain") == errno.EACCES  # not executable
        assert find("plain", ["/nonexistent", "bin"]) == errno.EACCES  # execvp keeps EACCES
        assert find("./bin") == errno.EACCES  # a directory
    finally:
        os.close(fd)


@pytest.fixture
def root_only(tmp_path):
    """A directory only root may search, like the node's EDGEDIR, holding an executable."""
    if os.geteuid() != 0:
        pytest.fail("as_pod changes identity: run as root (CI does)")
    base = tempfile.mkdtemp(prefix="kedge-aspod-")
    os.chmod(base, 0o711)
    private = os.path.join(base, "private")
    os.mkdir(private, 0o700)
    exe = os.path.join(private, "node.key")
    with open(exe, "w") as fh:
        fh.write("#!/bin/sh\n")
    os.chmod(exe, 0o755)
    yield base, private
    shutil.rmtree(base)


POD = 4_000_000  # an id nobody has: the pod's


def test_a_pod_cannot_tell_a_file_behind_a_root_only_directory_from_a_missing_one(root_only):
    base, private = root_only

    def find(cmd):
        return as_pod(POD, POD, lambda: _errno(lambda: find_executable(cmd, [], open_dir(base), POD, POD)))

    assert find(os.path.join(private, "node.key")) == find(os.path.join(private, "nosuchfile")) == errno.EACCES
    assert find("private/node.key") == find("private/nosuchfile") == errno.EACCES
    assert find(os.path.join(base, "nosuchfile")) == errno.ENOENT  # where the pod may look: as exec says
    assert as_pod(POD, POD, lambda: _errno(lambda: open_dir(private))) == errno.EACCES
    assert as_pod(POD, POD, lambda: _errno(lambda: open_dir(os.path.join(private, "x")))) == errno.EACCES
    # Root itself (this thread, every other thread) is unchanged.
    assert os.path.exists(os.path.join(private, "node.key"))
    os.close(open_dir(private))


def test_as_pod_runs_in_a_thread_of_its_own_and_raises_what_fn_raised():
    def who():
        with open("/proc/thread-self/status") as fh:
            return [ln.split()[1:] for ln in fh if ln.startswith(("Uid:", "Gid:"))]

    if os.geteuid() != 0:
        pytest.fail("as_pod changes identity: run as root (CI does)")
    uids, gids = as_pod(POD, POD + 1, who)
    assert uids[3] == str(POD) and gids[3] == str(POD + 1)  # fsuid, fsgid
    assert who()[0][3] == "0"  # not this thread's
    with pytest.raises(ZeroDivisionError):
        as_pod(POD, POD, lambda: 1 // 0)
    assert as_pod(None, None, lambda: threading.get_ident()) == threading.get_ident()
