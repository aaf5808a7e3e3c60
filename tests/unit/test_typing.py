"""mypy --strict on the pure cores is clean.

The modules and flags are pyproject.toml's ``[tool.mypy]`` (the protocol, authz, pki and
decision modules, checked with ``strict = true``); mypy runs as a subprocess, the way a
developer runs it from the repository root. Its incremental cache is mypy's own
``.mypy_cache`` (shared with ``make lint``), so a re-run checks only what changed.
"""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = ROOT / "pyproject.toml"


def test_the_strict_mypy_configuration_covers_the_pure_cores() -> None:
    config = tomllib.loads(PYPROJECT.read_text())["tool"]["mypy"]
    assert config["strict"] is True
    files = set(config["files"])
    for core in ("kedge/protocol", "kedge/authz", "kedge/pki", "kedge/edge/metamanager/decide.py",
                 "kedge/cloud/edgecontroller/plan.py"):
        assert core in files, f"{core} is not under mypy --strict"
    missing = sorted(f for f in files if not (ROOT / f).exists())
    assert not missing, f"[tool.mypy] files names paths that do not exist: {missing}"


def test_mypy_strict_is_clean_on_the_pure_cores() -> None:
    # mypy's own incremental cache (.mypy_cache, which `make lint` has just warmed): a re-run
    # checks only what changed.
    proc = subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(PYPROJECT)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    assert proc.returncode == 0, f"mypy --strict reports errors:\n{proc.stdout}{proc.stderr}"
