"""Kubernetes' own Pod Security Standards test table, evaluated by kedge's checks.

The fixtures under ``data/podsecurity`` are upstream's ``test/testdata`` (see its SOURCES):
for every level and policy version, pods that must pass and pods that must fail. As in
upstream's run.go, a failing pod must be refused with the substring its fixture generator
names (``expectErrorSubstring``, or the check id) and never for an unknown reason; in
addition every fixture is allowed at ``privileged``.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

import pytest
import yaml

from kedge.apiserver import podsecurity as ps

DATA = Path(__file__).parent / "data" / "podsecurity"
UPSTREAM_CASES = 4537  # YAML files in upstream's test/testdata (v1.0 ... v1.37, both levels)

# Fixture file stem (without its index) -> the substring a refusal must contain: upstream's
# expectErrorSubstring per fixture generator, else the check id.
EXPECTED_SUBSTRING = {
    "allowprivilegeescalation": "allowPrivilegeEscalation",
    "apparmorprofile": "forbidden AppArmor profile",
    "capabilities_baseline": "capabilities",
    "capabilities_restricted": "unrestricted capabilities",
    "hostnamespaces": "host namespaces",
    "hostpathvolumes": "hostPath",
    "hostports": "hostPort",
    "hostprobesandhostlifecycle": "probe or lifecycle host",
    "privileged": "privileged",
    "procmount": "procMount",
    "procmount_restricted": "procMount",
    "restrictedvolumes": "restricted volume types",
    "runasnonroot": "runAsNonRoot",
    "runasuser": "runAsUser",
    "seccompprofile_baseline": "seccompProfile",
    "seccompprofile_restricted": "seccompProfile",
    "selinuxoptions": "seLinuxOptions",
    "sysctls": "forbidden sysctl",
    "windowshostprocess": "hostProcess",
}


@functools.cache
def _vendored() -> dict[str, list[int]]:
    """level -> the vendored version minors, ascending."""
    out: dict[str, list[int]] = {}
    for level in ("baseline", "restricted"):
        out[level] = sorted(int(p.name.split(".")[1]) for p in (DATA / level).iterdir() if p.is_dir())
    return out


@functools.cache
def _load(level: str, minor: int) -> tuple[tuple[str, str, dict], ...]:
    """(expectation, stem, pod) of the vendored directory ``level/v1.<minor>``."""
    cases = []
    for expect in ("pass", "fail"):
        for path in sorted((DATA / level / f"v1.{minor}" / expect).glob("*.yaml")):
            cases.append((expect, path.stem, yaml.load(path.read_text(), Loader=yaml.CSafeLoader)))
    return tuple(cases)


def _cases_for(level: str, minor: int) -> tuple[tuple[str, str, dict], ...]:
    """Upstream's directory ``level/v1.<minor>``: identical to the newest vendored one <= minor."""
    return _load(level, max(m for m in _vendored()[level] if m <= minor))


def _judge(level: str, version: ps.Version, expect: str, stem: str, pod: dict) -> str | None:
    """None if kedge decides the fixture as upstream expects, else what went wrong."""
    result = ps.evaluate_pod(ps.LevelVersion(level, version), pod.get("metadata"), pod.get("spec"))
    detail = result.forbidden_detail()
    if expect == "pass":
        return None if result.allowed else f"refused: {detail}"
    if result.allowed:
        return "allowed"
    want = EXPECTED_SUBSTRING[re.sub(r"\d+$", "", stem)]
    if want not in detail or ps.UNKNOWN_REASON in detail:
        return f"refused without {want!r}: {detail}"
    return None


def _versions() -> list[tuple[str, int]]:
    return [(level, minor) for level in ("baseline", "restricted") for minor in range(0, ps.MAX_MINOR + 1)]


@pytest.mark.parametrize(("level", "minor"), _versions(), ids=[f"{lv}-v1.{m}" for lv, m in _versions()])
def test_upstream_fixtures_decide_as_upstream(level: str, minor: int) -> None:
    wrong = []
    for expect, stem, pod in _cases_for(level, minor):
        why = _judge(level, ps.Version(minor), expect, stem, pod)
        if why is not None:
            wrong.append(f"{level}/v1.{minor}/{expect}/{stem}: {why}")
        # privileged allows everything
        assert ps.evaluate_pod(ps.LevelVersion(ps.PRIVILEGED, ps.Version(minor)), pod.get("metadata"),
                               pod.get("spec")).allowed
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("level", ["baseline", "restricted"])
def test_latest_and_future_versions_are_judged_as_the_newest(level: str) -> None:
    for version in (ps.LATEST, ps.Version(ps.MAX_MINOR + 5)):
        wrong = [stem for expect, stem, pod in _cases_for(level, ps.MAX_MINOR)
                 if _judge(level, version, expect, stem, pod) is not None]
        assert not wrong


def test_table_counts(capsys: pytest.CaptureFixture[str]) -> None:
    """Every upstream case ran and matched; none was set aside as not applicable."""
    ran = matched = 0
    not_applicable = 0  # every fixture is a plain pod spec kedge evaluates; nothing is skipped
    for level, minor in _versions():
        for expect, stem, pod in _cases_for(level, minor):
            ran += 1
            matched += _judge(level, ps.Version(minor), expect, stem, pod) is None
    with capsys.disabled():
        print(f"\nPod Security table: ran={ran} matched={matched} not-applicable={not_applicable} "
              f"(upstream cases: {UPSTREAM_CASES})")
    assert ran == UPSTREAM_CASES
    assert matched == ran
