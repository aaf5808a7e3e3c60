"""Replay every fuzz seed and every kept crash reproducer, without libFuzzer.

Each ``fuzz/targets/fuzz_<name>.py`` exposes ``test_one_input(data: bytes)`` whose
invariant is "parses, or raises a documented kedge error -- which the target itself
catches". Any exception escaping ``test_one_input`` is a failure here, exactly as it
would be a crash under atheris. Inputs live in ``fuzz/corpus/<name>/`` (seeds, required)
and ``fuzz/regressions/<name>/`` (reproducers of fixed crashes, optional). Parameter ids
name the target and the file, so a failure names the input to reproduce with::

    python fuzz/targets/fuzz_<name>.py fuzz/regressions/<name>/<file>
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TARGETS_DIR = ROOT / "fuzz" / "targets"
CORPUS_DIR = ROOT / "fuzz" / "corpus"
REGRESSIONS_DIR = ROOT / "fuzz" / "regressions"
MAX_INPUT_BYTES = 1024 * 1024  # libFuzzer's default -max_len is far smaller; seeds stay small
PER_INPUT_SECONDS = 5.0

TARGETS = {p.stem[len("fuzz_"):]: p for p in sorted(TARGETS_DIR.glob("fuzz_*.py"))}


def _inputs() -> list[tuple[str, Path]]:
    found: list[tuple[str, Path]] = []
    for name in TARGETS:
        for base in (CORPUS_DIR / name, REGRESSIONS_DIR / name):
            if base.is_dir():
                found += [(name, f) for f in sorted(base.iterdir()) if f.is_file() and not f.name.startswith(".")]
    return found


INPUTS = _inputs()
_loaded: dict[str, types.ModuleType] = {}


def _load(name: str) -> types.ModuleType:
    if name not in _loaded:
        spec = importlib.util.spec_from_file_location(f"kedge_fuzz_target_{name}", TARGETS[name])
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        _loaded[name] = module
    return _loaded[name]


def test_fuzz_targets_exist():
    assert TARGETS, f"no fuzz targets under {TARGETS_DIR.relative_to(ROOT)}"


@pytest.mark.parametrize("name", sorted(TARGETS) or ["<none>"])
def test_target_has_a_seed_corpus(name):
    assert name in TARGETS, "no fuzz targets found"
    corpus = CORPUS_DIR / name
    seeds = [f for f in corpus.iterdir() if f.is_file()] if corpus.is_dir() else []
    assert seeds, f"fuzz target {name} has no seed corpus in {corpus.relative_to(ROOT)}"


@pytest.mark.parametrize("name", sorted(TARGETS) or ["<none>"])
def test_target_exposes_test_one_input_and_states_its_invariant(name):
    assert name in TARGETS, "no fuzz targets found"
    module = _load(name)
    assert callable(getattr(module, "test_one_input", None)), f"fuzz_{name}.py has no test_one_input(data)"
    assert (module.__doc__ or "").strip(), f"fuzz_{name}.py must state its invariant in the module docstring"


@pytest.mark.parametrize(
    ("name", "path"),
    INPUTS or [("<none>", Path("<none>"))],
    ids=[f"{n}/{p.parent.parent.name}/{p.name}" for n, p in INPUTS] or ["no-inputs"],
)
def test_replay_input(name, path):
    assert name in TARGETS, "no fuzz inputs found"
    data = path.read_bytes()
    assert len(data) <= MAX_INPUT_BYTES, f"{path.relative_to(ROOT)} is larger than {MAX_INPUT_BYTES} bytes"
    started = time.monotonic()
    _load(name).test_one_input(data)
    elapsed = time.monotonic() - started
    assert elapsed < PER_INPUT_SECONDS, f"{path.relative_to(ROOT)} took {elapsed:.1f}s (hang-like input)"


def test_targets_import_without_atheris():
    """Replay (and this suite) must not need atheris: targets import it lazily."""
    assert TARGETS, "no fuzz targets found"
    probe = (
        "import importlib.util, sys\n"
        "sys.modules['atheris'] = None  # any 'import atheris' now raises ImportError\n"
        "for i, path in enumerate(sys.argv[1:]):\n"
        "    spec = importlib.util.spec_from_file_location(f'probe_{i}', path)\n"
        "    module = importlib.util.module_from_spec(spec)\n"
        "    spec.loader.exec_module(module)\n"
        "    assert callable(module.test_one_input), path\n"
    )
    proc = subprocess.run(  # noqa: S603 - fixed argv, no shell
        [sys.executable, "-c", probe, *map(str, TARGETS.values())],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_replay_would_catch_an_escaping_exception(tmp_path):
    """The harness itself: an input that makes a target raise must fail the replay."""
    target = tmp_path / "fuzz_demo.py"
    target.write_text(
        '"""Demo target: raises on one byte pattern."""\n'
        "def test_one_input(data: bytes) -> None:\n"
        "    if data.startswith(b'boom'):\n"
        "        raise IndexError('crash')\n"
    )
    spec = importlib.util.spec_from_file_location("kedge_fuzz_demo", target)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.test_one_input(b"fine")
    with pytest.raises(IndexError):
        module.test_one_input(b"boom!")
