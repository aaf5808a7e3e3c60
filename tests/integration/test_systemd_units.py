"""``kedge systemd`` writes units that the real ``systemd-analyze`` scores and verifies.

Goals (DESIGN.md): ``systemd-analyze security --offline=true`` exposure <= 2.0 for
cloudcore and <= 4.0 for edgecore; ``systemd-analyze verify`` clean (it needs ExecStart's
binary to exist: the units point at this venv's ``kedge``). systemd-analyze is installed by
tests/install-system-deps.sh: without it these tests fail, they do not skip.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from kedge.systemd import analyze
from kedge.systemd.policy import EXPOSURE_GOALS, UNIT_NAMES, check_unit

VENV_KEDGE = Path(sys.executable).parent / "kedge"


def kedge(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kedge", *args], capture_output=True, text=True, timeout=60,
                          check=False)


@pytest.fixture(scope="module", autouse=True)
def _systemd_analyze_present():
    assert analyze.find(), "systemd-analyze is missing: tests/install-system-deps.sh installs the systemd package"
    assert os.access(VENV_KEDGE, os.X_OK), f"{VENV_KEDGE} missing: the venv's console script"


def generate(tmp_path: Path, role: str, data_dir: str, *extra: str) -> Path:
    proc = kedge("systemd", "--role", role, "--data-dir", data_dir, "--out", str(tmp_path / "out"), *extra)
    assert proc.returncode == 0, proc.stderr
    unit = tmp_path / "out" / UNIT_NAMES[role]
    assert proc.stdout.strip() == str(unit)
    return unit


@pytest.mark.parametrize("role", ["cloud", "edge"])
def test_generated_unit_meets_the_exposure_goal_and_verifies(tmp_path, role):
    unit = generate(tmp_path, role, f"/var/lib/kedge/{role}", "--kedge-path", str(VENV_KEDGE))
    exposure = analyze.security_exposure(unit)
    print(f"{UNIT_NAMES[role]}: systemd-analyze security --offline=true exposure {exposure}")
    assert exposure <= EXPOSURE_GOALS[role]
    rc, out = analyze.verify(unit)
    assert (rc, out.strip()) == (0, "")
    assert check_unit(role, [(str(unit), unit.read_text())]) == []
    assert oct(unit.stat().st_mode & 0o777) == "0o644"


@pytest.mark.parametrize("role", ["cloud", "edge"])
def test_unit_for_a_data_dir_under_tmp_binds_it_in_and_still_verifies(tmp_path, role):
    data_dir = tmp_path / f"{role} data"  # under /tmp (PrivateTmp hides it), with a space
    data_dir.mkdir()
    proc = kedge("systemd", "--role", role, "--data-dir", str(data_dir), "--out", str(tmp_path / "out"))
    assert proc.returncode == 0, proc.stderr
    unit = tmp_path / "out" / UNIT_NAMES[role]
    text = unit.read_text()
    assert f'BindPaths="{data_dir}"' in text and "PrivateTmp" in proc.stderr
    assert analyze.security_exposure(unit) <= EXPOSURE_GOALS[role]
    assert analyze.verify(unit) == (0, "")


def test_default_kedge_path_is_an_installed_executable(tmp_path):
    unit = generate(tmp_path, "cloud", "/var/lib/kedge/cloud")
    exec_start = next(line for line in unit.read_text().splitlines() if line.startswith("ExecStart="))
    binary = exec_start.split("=", 1)[1].split()[0]
    assert os.path.isabs(binary) and os.access(binary, os.X_OK) and Path(binary).name == "kedge"


def test_usage_errors_exit_2(tmp_path):
    assert kedge("systemd", "--role", "edge", "--data-dir", "/x", "--out", str(tmp_path), "--user", "bob").returncode == 2
    assert kedge("systemd", "--role", "cloud", "--data-dir", "/x", "--out", str(tmp_path),
                 "--user", "root").returncode == 2
    assert kedge("systemd", "--role", "nope", "--data-dir", "/x", "--out", str(tmp_path)).returncode == 2
    assert not list(tmp_path.iterdir())


def test_kedge_audit_reports_the_generated_units_and_a_weakening_drop_in(tmp_path):
    import json

    units = tmp_path / "units"
    cloud = tmp_path / "cloud"
    cloud.mkdir()
    (cloud / "config.json").write_text("{}")
    kedge("systemd", "--role", "cloud", "--data-dir", str(cloud), "--out", str(units))

    def result() -> dict:
        proc = kedge("audit", "--data-dir", str(cloud), "--systemd-dir", str(units), "--format", "json")
        return next(r for r in json.loads(proc.stdout)["results"] if r["id"] == "KEDGE-CLOUD-022")

    assert result()["status"] == "PASS"
    (units / "kedge-cloudcore.service.d").mkdir()
    (units / "kedge-cloudcore.service.d" / "override.conf").write_text("[Service]\nPrivateDevices=no\nUser=root\n")
    r = result()
    assert r["status"] == "FAIL" and "PrivateDevices=" in r["actual"] and "User=" in r["actual"]
