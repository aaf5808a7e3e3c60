"""Run ``systemd-analyze`` on a unit file (the one piece of I/O in :mod:`kedge.systemd`).

``security --offline=true`` scores a unit file -- with the drop-ins in ``<unit>.d/`` beside
it -- without a running systemd; ``verify`` checks its syntax and that ``ExecStart=`` exists.
"""

from __future__ import annotations

import shutil
import subprocess  # nosec B404 - runs the fixed systemd-analyze binary on a unit path, no shell
from pathlib import Path

from kedge.errors import LocalError
from kedge.systemd.policy import parse_exposure

TIMEOUT_S = 30.0
_MAX_OUTPUT = 1024 * 1024


class AnalyzeError(LocalError):
    """systemd-analyze is missing, failed, or said something unexpected."""

    code = "systemd_analyze_failed"


def find() -> str | None:
    """The ``systemd-analyze`` binary, or None (Debian: package ``systemd``)."""
    return shutil.which("systemd-analyze") or shutil.which("systemd-analyze", path="/usr/bin:/bin")


def _run(args: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    binary = find()
    if binary is None:
        raise AnalyzeError("systemd-analyze is not installed (Debian package: systemd)")
    try:
        return subprocess.run(  # nosec B603 - fixed binary and sub-command; the unit path is one argv word
            [binary, *args], capture_output=True, text=True, timeout=timeout, check=False, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError) as exc:
        raise AnalyzeError(f"systemd-analyze {args[0]} could not run: {type(exc).__name__}") from exc


def security_exposure(unit: str | Path, *, timeout: float = TIMEOUT_S) -> float:
    """``systemd-analyze security --offline=true UNIT``'s overall exposure (0.0 best .. 10.0)."""
    proc = _run(["security", "--offline=true", "--no-pager", str(Path(unit).absolute())], timeout)
    try:
        return parse_exposure(proc.stdout[:_MAX_OUTPUT])
    except ValueError:
        raise AnalyzeError(f"systemd-analyze security gave no exposure (exit {proc.returncode}): "
                           f"{proc.stderr.strip()[:200]}") from None


def verify(unit: str | Path, *, timeout: float = TIMEOUT_S) -> tuple[int, str]:
    """``systemd-analyze verify UNIT``: its exit code and what it printed (empty when clean)."""
    proc = _run(["verify", "--no-pager", str(Path(unit).absolute())], timeout)
    return proc.returncode, (proc.stdout + proc.stderr)[:_MAX_OUTPUT]
