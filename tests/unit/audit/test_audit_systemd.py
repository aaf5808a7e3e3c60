"""KEDGE-CLOUD-022 / KEDGE-EDGE-012: installed units (and their drop-ins) checked against kedge's unit policy.

Planted unit files are read by the real gatherer and scored by the real ``systemd-analyze``
(tests/install-system-deps.sh installs it): these tests fail, never skip, without it.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from unit.audit import audit_facts as af
from kedge.audit import gather
from kedge.audit.checks import REGISTRY
from kedge.audit.facts import SystemdUnitFacts
from kedge.audit.model import Status
from kedge.audit.runner import run_audit
from kedge.errors import ConfigError
from kedge.systemd.units import UnitOptions, render

KEDGE = "/opt/kedge/bin/kedge"
CHECK = {"cloud": "KEDGE-CLOUD-022", "edge": "KEDGE-EDGE-012"}
NAME = {"cloud": "kedge-cloudcore.service", "edge": "kedge-edgecore.service"}


def install(units_dir: Path, role: str, data_dir: str, *dropins: tuple[str, str]) -> Path:
    units_dir.mkdir(parents=True, exist_ok=True)
    path = units_dir / NAME[role]
    path.write_text(render(UnitOptions(role=role, data_dir=data_dir, kedge_path=KEDGE)))
    for fname, text in dropins:
        (units_dir / f"{NAME[role]}.d").mkdir(exist_ok=True)
        (units_dir / f"{NAME[role]}.d" / fname).write_text(text)
    return path


def outcome(role: str, unit: SystemdUnitFacts | None, dirs: tuple[str, ...] = ("/etc/systemd/system",)):
    part = (af.cloud if role == "cloud" else af.edge)(systemd_unit=unit, systemd_dirs=dirs)
    return REGISTRY[CHECK[role]](af.facts(**{role: part}))


@pytest.mark.parametrize("role", ["cloud", "edge"])
def test_generated_unit_installed_passes_with_its_measured_exposure(tmp_path, role):
    root = "/c" if role == "cloud" else "/e"
    install(tmp_path, role, root)
    unit = gather.read_systemd_unit(NAME[role], [str(tmp_path)])
    assert unit is not None and unit.analyze_error is None
    assert unit.exposure is not None and unit.exposure <= {"cloud": 2.0, "edge": 4.0}[role]
    o = outcome(role, unit)
    assert o.status is Status.PASS, o.actual
    assert f"exposure {unit.exposure:.1f}" in o.actual


@pytest.mark.parametrize("role, dropin, named", [
    ("cloud", "[Service]\nCapabilityBoundingSet=CAP_SYS_ADMIN\n", "CapabilityBoundingSet="),
    ("cloud", "[Service]\nUser=\n", "User="),
    ("cloud", "[Service]\nProtectSystem=no\nPrivateTmp=no\n", "ProtectSystem="),
    ("edge", "[Service]\nSystemCallFilter=\n", "SystemCallFilter="),
    ("edge", "[Service]\nPrivateDevices=false\n", "PrivateDevices="),
    ("edge", "[Service]\nCapabilityBoundingSet=CAP_SYS_ADMIN CAP_NET_ADMIN\n", "CapabilityBoundingSet="),
])
def test_a_weakening_drop_in_fails_the_check_and_is_named(tmp_path, role, dropin, named):
    install(tmp_path, role, "/c" if role == "cloud" else "/e", ("50-local.conf", dropin))
    unit = gather.read_systemd_unit(NAME[role], [str(tmp_path)])
    o = outcome(role, unit)
    assert o.status is Status.FAIL and named in o.actual
    assert str(tmp_path / f"{NAME[role]}.d" / "50-local.conf") in o.locations


def test_an_unsandboxed_unit_fails_on_exposure_and_directives(tmp_path):
    (tmp_path / NAME["edge"]).write_text("[Unit]\nDescription=edge\n[Service]\nExecStart=/usr/bin/kedge edgecore "
                                         "--data-dir /e\n")
    unit = gather.read_systemd_unit(NAME["edge"], [str(tmp_path)])
    assert unit is not None and unit.exposure is not None and unit.exposure > 4.0
    o = outcome("edge", unit)
    assert o.status is Status.FAIL and f"exposure {unit.exposure:.1f} > 4.0" in o.actual


def test_drop_ins_are_collected_across_unit_dirs_first_dir_winning_a_name(tmp_path):
    etc, lib = tmp_path / "etc", tmp_path / "lib"
    install(lib, "cloud", "/c", ("10-weak.conf", "[Service]\nUser=root\n"), ("20-ok.conf", "[Service]\nTasksMax=64\n"))
    (etc / f"{NAME['cloud']}.d").mkdir(parents=True)
    (etc / f"{NAME['cloud']}.d" / "10-weak.conf").write_text("[Service]\nTasksMax=32\n")  # masks lib's 10-weak
    unit = gather.read_systemd_unit(NAME["cloud"], [str(etc), str(lib)], analyze=False)
    d = f"{NAME['cloud']}.d"
    assert unit is not None and [p for p, _ in unit.files] == [
        str(lib / NAME["cloud"]), str(etc / d / "10-weak.conf"), str(lib / d / "20-ok.conf")]
    assert outcome("cloud", unit).status is Status.PASS


def test_the_unit_in_the_first_dir_is_the_one_checked(tmp_path):
    etc, lib = tmp_path / "etc", tmp_path / "lib"
    etc.mkdir()
    (etc / NAME["cloud"]).write_text("[Service]\nExecStart=/usr/bin/kedge cloudcore --data-dir /c\n")
    install(lib, "cloud", "/c")
    unit = gather.read_systemd_unit(NAME["cloud"], [str(etc), str(lib)], analyze=False)
    assert unit is not None and unit.path == str(etc / NAME["cloud"])
    assert outcome("cloud", unit).status is Status.FAIL


def test_exposure_above_the_goal_fails_even_when_every_directive_is_there(tmp_path):
    install(tmp_path, "cloud", "/c")
    unit = gather.read_systemd_unit(NAME["cloud"], [str(tmp_path)], analyze=False)
    assert unit is not None
    o = outcome("cloud", dataclasses.replace(unit, exposure=2.1))
    assert o.status is Status.FAIL and "exposure 2.1 > 2.0" in o.actual


def test_without_systemd_analyze_the_directives_still_decide(tmp_path):
    install(tmp_path, "edge", "/e")
    unit = gather.read_systemd_unit(NAME["edge"], [str(tmp_path)], analyze=False)
    assert unit is not None
    o = outcome("edge", dataclasses.replace(unit, analyze_error="systemd-analyze is not installed"))
    assert o.status is Status.PASS and "exposure not measured" in o.actual


def test_no_installed_unit_skips_saying_where_it_looked(tmp_path):
    assert gather.read_systemd_unit(NAME["cloud"], [str(tmp_path)]) is None
    o = outcome("cloud", None, (str(tmp_path),))
    assert o.status is Status.SKIP and "component not present" in o.actual and str(tmp_path) in o.actual


def test_no_data_dir_audited_skips():
    f = af.facts(cloud=None, edge=None)
    assert REGISTRY["KEDGE-CLOUD-022"](f).status is Status.SKIP
    assert REGISTRY["KEDGE-EDGE-012"](f).status is Status.SKIP


@pytest.mark.parametrize("text", ["ExecStart=/bin/true\n", "[Service]\nthis is not a setting\n"])
def test_a_file_that_is_not_a_unit_fails(tmp_path, text):
    (tmp_path / NAME["cloud"]).write_text(text)
    o = outcome("cloud", gather.read_systemd_unit(NAME["cloud"], [str(tmp_path)], analyze=False))
    assert o.status is Status.FAIL and "not a unit file" in o.actual


def test_an_oversized_unit_is_reported_not_read(tmp_path):
    (tmp_path / NAME["cloud"]).write_text("[Service]\n" + "# padding\n" * 30_000)
    unit = gather.read_systemd_unit(NAME["cloud"], [str(tmp_path)], analyze=False)
    assert unit is not None and unit.error
    assert outcome("cloud", unit).status is Status.FAIL


def test_a_unit_for_another_data_dir_is_noted(tmp_path):
    install(tmp_path, "cloud", "/var/lib/kedge/other")
    o = outcome("cloud", gather.read_systemd_unit(NAME["cloud"], [str(tmp_path)], analyze=False))
    assert o.status is Status.PASS and "runs on /var/lib/kedge/other, not the audited /c" in o.actual


def test_run_audit_looks_in_the_given_systemd_dirs(tmp_path):
    cloud, edge, units = tmp_path / "cloud", tmp_path / "edge", tmp_path / "units"
    for d in (cloud, edge):
        d.mkdir()
        (d / "config.json").write_text("{}")
    install(units, "cloud", str(cloud))
    install(units, "edge", str(edge), ("weak.conf", "[Service]\nNoNewPrivileges=no\n"))
    report = run_audit(data_dir=cloud, edge_data_dir=edge, systemd_dirs=[str(units)])
    by_id = {r.check.id: r for r in report.results}
    assert by_id["KEDGE-CLOUD-022"].status is Status.PASS, by_id["KEDGE-CLOUD-022"].outcome.actual
    assert by_id["KEDGE-EDGE-012"].status is Status.FAIL
    assert "NoNewPrivileges=" in by_id["KEDGE-EDGE-012"].outcome.actual


def test_run_audit_refuses_a_missing_systemd_dir(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ConfigError):
        run_audit(data_dir=tmp_path, systemd_dirs=[str(tmp_path / "nope")])
