"""Runtime helpers that read files a pod can write: exit files and /proc stat lines."""

from __future__ import annotations

import os

import pytest

from kedge.edge.edged.runtime import ContainerSpec, proc_stat, read_exit_file


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


def test_which_resolves_like_exec_in_the_containers_cwd(tmp_path):
    from kedge.edge.edged.runtime import _which

    tool = tmp_path / "bin" / "tool"
    tool.parent.mkdir()
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    assert _which("./bin/tool", {}, str(tmp_path)) == os.path.join(str(tmp_path), "./bin/tool")
    assert _which("tool", {"PATH": f"/nonexistent:{tool.parent}"}, "/") == str(tool)
    assert _which("tool", {"PATH": "/usr/bin"}, "/") is None
    assert _which("/no/such/file", {}, "/") is None
