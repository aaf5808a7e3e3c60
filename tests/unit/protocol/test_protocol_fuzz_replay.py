"""Replay the protocol fuzz target's seed corpus and crash regressions as plain tests.

The target's invariant (parse or documented error; re-encode is a fixed point; a
Session ends CONNECTED or FAILED) must hold for every stored input, so a crash
found once by atheris stays fixed.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
TARGET = ROOT / "fuzz" / "targets" / "fuzz_protocol.py"
INPUTS = sorted(
    p
    for d in (ROOT / "fuzz" / "corpus" / "protocol", ROOT / "fuzz" / "regressions" / "protocol")
    if d.is_dir()
    for p in d.iterdir()
    if p.is_file()
)


def _target():
    spec = importlib.util.spec_from_file_location("fuzz_protocol_target", TARGET)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


fuzz_protocol = _target()


def test_seed_corpus_is_present():
    assert len(INPUTS) >= 10


@pytest.mark.parametrize("path", INPUTS, ids=lambda p: p.name)
def test_fuzz_input_keeps_the_invariant(path):
    fuzz_protocol.test_one_input(path.read_bytes())

