"""The fuzzing tooling around the targets: ``fuzz/run.sh`` and ``.clusterfuzzlite/``.

Nothing here needs atheris: ``run.sh`` is exercised only on the paths that refuse to run
(unknown target, bad arguments, a Python without atheris), and ``build.sh`` runs with
the OSS-Fuzz helpers (``compile_python_fuzzer``, ``pip``, ``zip``) replaced by stubs
that record what they were asked to do.
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RUN_SH = ROOT / "fuzz" / "run.sh"
CFL = ROOT / ".clusterfuzzlite"
TARGETS = {p.stem[len("fuzz_"):]: p for p in sorted((ROOT / "fuzz" / "targets").glob("fuzz_*.py"))}
SH = shutil.which("sh") or "/bin/sh"
BASH = shutil.which("bash") or "/bin/bash"


def _run(argv: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - fixed argv, no shell
        argv, capture_output=True, text=True, timeout=60, check=False, cwd=ROOT,
        env={**os.environ, **(env or {})},
    )


# -- fuzz/run.sh -----------------------------------------------------------------


def test_run_sh_is_posix_sh_with_set_eu():
    text = RUN_SH.read_text(encoding="utf-8")
    assert text.startswith("#!/bin/sh\n")
    assert "\nset -eu\n" in text
    assert os.stat(RUN_SH).st_mode & stat.S_IXUSR, "fuzz/run.sh must be executable"
    assert _run([SH, "-n", str(RUN_SH)]).returncode == 0


def test_run_sh_refuses_an_unknown_target_with_exit_2():
    proc = _run([SH, str(RUN_SH), "no_such_target", "1"])
    assert proc.returncode == 2, proc.stderr
    assert "unknown target: no_such_target" in proc.stderr
    # and it says what the targets are
    assert "  protocol\n" in proc.stderr and "  rbac\n" in proc.stderr


@pytest.mark.parametrize(
    "argv",
    [[], ["protocol"], ["../targets/fuzz_protocol", "1"], ["protocol", "ten"], ["protocol", "-1"]],
    ids=["no-args", "no-seconds", "path-as-target", "seconds-not-a-number", "negative-seconds"],
)
def test_run_sh_refuses_bad_arguments_with_exit_2(argv):
    proc = _run([SH, str(RUN_SH), *argv])
    assert proc.returncode == 2, proc.stderr
    assert "usage: fuzz/run.sh TARGET SECONDS" in proc.stderr or "SECONDS must be" in proc.stderr


def test_run_sh_says_clearly_when_atheris_is_missing(tmp_path):
    # A Python without site-packages (-S) cannot import atheris, installed or not.
    python = tmp_path / "python"
    python.write_text(f'#!/bin/sh\nexec "{sys.executable}" -S "$@"\n')
    python.chmod(0o755)
    proc = _run([SH, str(RUN_SH), "protocol", "1"], env={"KEDGE_FUZZ_PYTHON": str(python)})
    assert proc.returncode == 3, proc.stderr
    assert "atheris is not installed" in proc.stderr
    assert "-m pip install atheris" in proc.stderr


def test_run_sh_gives_libfuzzer_a_scratch_dir_first_then_the_seeds(tmp_path):
    """The first directory receives new corpus entries: it must never be fuzz/corpus/."""
    log = tmp_path / "argv.txt"
    python = tmp_path / "python"
    # Stands in for a Python with atheris: answers the import probe, records the real run.
    python.write_text(
        "#!/bin/sh\n"
        'if [ "$1" = "-c" ]; then exit 0; fi\n'
        f'for a in "$@"; do echo "$a"; done > "{log}"\n'
    )
    python.chmod(0o755)
    proc = _run([SH, str(RUN_SH), "rbac", "7"], env={"KEDGE_FUZZ_PYTHON": str(python), "TMPDIR": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr
    argv = log.read_text().splitlines()
    assert argv[0] == str(ROOT / "fuzz" / "targets" / "fuzz_rbac.py")
    assert "-max_total_time=7" in argv
    assert f"-dict={ROOT / 'fuzz' / 'dictionaries' / 'rbac.dict'}" in argv
    prefix = next(a for a in argv if a.startswith("-artifact_prefix="))
    assert prefix.startswith(f"-artifact_prefix={tmp_path}/kedge-fuzz-rbac.")
    dirs = [a for a in argv if not a.startswith("-")][1:]
    assert dirs[-1] == str(ROOT / "fuzz" / "corpus" / "rbac")
    assert len(dirs) == 2 and dirs[0].startswith(str(tmp_path)), dirs
    assert "crashes" in proc.stderr and "no crash" in proc.stderr


# -- .clusterfuzzlite ------------------------------------------------------------------


def test_clusterfuzzlite_project_and_pinned_builder():
    project = (CFL / "project.yaml").read_text(encoding="utf-8")
    assert re.search(r"^language: python$", project, re.M)
    dockerfile = (CFL / "Dockerfile").read_text(encoding="utf-8")
    froms = [line for line in dockerfile.splitlines() if line.startswith("FROM ")]
    assert len(froms) == 1
    assert re.fullmatch(r"FROM gcr\.io/oss-fuzz-base/base-builder-python@sha256:[0-9a-f]{64}", froms[0]), froms
    assert "COPY .clusterfuzzlite/build.sh $SRC/build.sh" in dockerfile
    assert _run([BASH, "-n", str(CFL / "build.sh")]).returncode == 0


def _stub(bin_dir: Path, name: str, body: str) -> None:
    path = bin_dir / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)


def test_build_sh_packages_every_target_with_its_corpus_and_dictionary(tmp_path):
    bin_dir, src, out = tmp_path / "bin", tmp_path / "src", tmp_path / "out"
    for d in (bin_dir, src, out):
        d.mkdir()
    (src / "kedge").symlink_to(ROOT)
    _stub(bin_dir, "compile_python_fuzzer", 'echo "$*" >> "$OUT/compiled.txt"\n')
    _stub(bin_dir, "python3", 'echo "$*" >> "$OUT/pip.txt"\n')
    # zip stub: records the archive and its members (build.sh zips from a staging dir)
    _stub(bin_dir, "zip", 'shift; archive=$1; shift; for f in "$@"; do echo "$f"; done > "$archive.list"\n')
    proc = _run([BASH, str(CFL / "build.sh")],
                env={"PATH": f"{bin_dir}:{os.environ['PATH']}", "SRC": str(src), "OUT": str(out)})
    assert proc.returncode == 0, proc.stderr

    assert "-m pip install" in (out / "pip.txt").read_text()
    compiled = (out / "compiled.txt").read_text().splitlines()
    assert sorted(line.split()[0] for line in compiled) == sorted(f"fuzz/targets/fuzz_{n}.py" for n in TARGETS)
    for name in TARGETS:
        members = (out / f"fuzz_{name}_seed_corpus.zip.list").read_text().splitlines()
        seeds = sorted(f"./corpus-{p.name}" for p in (ROOT / "fuzz" / "corpus" / name).iterdir() if p.is_file())
        assert seeds, f"{name} has no seeds"
        assert set(seeds) <= set(members), name
        regressions = ROOT / "fuzz" / "regressions" / name
        if regressions.is_dir():
            assert {f"./regressions-{p.name}" for p in regressions.iterdir() if p.is_file()} <= set(members)
        has_dict = (ROOT / "fuzz" / "dictionaries" / f"{name}.dict").is_file()
        assert (out / f"fuzz_{name}.dict").is_file() == has_dict, name


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_target_has_the_oss_fuzz_entry_point(name):
    """compile_python_fuzzer runs the script as __main__: main() must set up and start atheris."""
    tree = ast.parse(TARGETS[name].read_text(encoding="utf-8"))
    mains = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "main"]
    assert len(mains) == 1, f"fuzz_{name}.py has no main()"
    calls = {ast.unparse(c.func) for c in ast.walk(mains[0]) if isinstance(c, ast.Call)}
    assert {"atheris.Setup", "atheris.Fuzz"} <= calls, calls
    setup = next(c for c in ast.walk(mains[0]) if isinstance(c, ast.Call) and ast.unparse(c.func) == "atheris.Setup")
    assert [ast.unparse(a) for a in setup.args] == ["sys.argv", "test_one_input"]
    guard = tree.body[-1]
    assert isinstance(guard, ast.If) and ast.unparse(guard.test) == "__name__ == '__main__'"
    assert [ast.unparse(s) for s in guard.body] == ["main()"]
    assert (ROOT / "fuzz" / "corpus" / name).is_dir(), f"fuzz_{name}.py has no fuzz/corpus/{name}/"


def test_readme_lists_every_target():
    readme = (ROOT / "fuzz" / "README.md").read_text(encoding="utf-8")
    listed = set(re.findall(r"^\| `([a-z0-9_]+)` \|", readme, re.M))
    assert listed == set(TARGETS), f"README table: missing {set(TARGETS) - listed}, extra {listed - set(TARGETS)}"
