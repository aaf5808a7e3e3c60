"""The traceability check itself: it passes on main and fails on each broken link.

End-to-end cases run ``security/traceability.py`` as a subprocess on a temporary copy of
the repository with one thing broken (a referenced test removed, an acceptance expired,
an unknown marker id planted); the other rules are exercised on the pure core.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "security" / "traceability.py"
TODAY = dt.date(2026, 11, 27)


def _load_module():
    spec = importlib.util.spec_from_file_location("kedge_security_traceability", SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


tr = _load_module()


def _run(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(  # noqa: S603 - fixed argv, no shell
        [sys.executable, str(SCRIPT), "--root", str(root), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture()
def repo_copy(tmp_path: Path) -> Path:
    """What the check reads: the model, the tests, the fuzz targets, and every path a
    mitigation says it is implemented in."""
    dst = tmp_path / "repo"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache")
    for rel in ("threat-model", "tests", "fuzz/targets"):
        if (ROOT / rel).exists():
            shutil.copytree(ROOT / rel, dst / rel, ignore=ignore)
    mits = yaml.safe_load((ROOT / "threat-model" / "mitigations.yaml").read_text())["mitigations"]
    for rel in {p for m in mits for p in m["implemented_in"]}:
        src, out = ROOT / rel, dst / rel
        if out.exists():
            continue
        out.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, out, ignore=ignore)
        else:
            shutil.copy2(src, out)
    return dst


def _first_referenced_test() -> str:
    mits = yaml.safe_load((ROOT / "threat-model" / "mitigations.yaml").read_text())["mitigations"]
    for m in mits:
        for t in m["tests"]:
            if "::" in t and "[" not in t:
                return t
    raise AssertionError("no mitigation references a test function")


# --------------------------------------------------------------------------- on main


def test_traceability_holds_on_main():
    proc = _run(ROOT, "--check")
    assert proc.returncode == 0, proc.stderr


def test_matrix_names_every_threat_its_tests_and_the_gaps(tmp_path):
    out = tmp_path / "TRACEABILITY.md"
    proc = _run(ROOT, "--matrix", str(out))
    assert proc.returncode == 0, proc.stderr
    text = out.read_text()
    threats = yaml.safe_load((ROOT / "threat-model" / "threats.yaml").read_text())["threats"]
    for th in threats:
        assert f"`{th['id']}`" in text
        if th["status"] == "planned":
            assert re.search(rf"`{re.escape(th['id'])}`.*\*\*planned\*\*, tracked in issue #{th['issue']}", text)
    assert _first_referenced_test() in text
    assert "## Gaps" in text and "all rules hold" in text


# --------------------------------------------------------------------------- broken copies


def test_removing_a_referenced_test_fails_and_names_it(repo_copy):
    assert _run(repo_copy, "--check").returncode == 0  # the copy itself is sound
    test_id = _first_referenced_test()
    path, func = test_id.split("::")[0], test_id.split("::")[-1]
    target = repo_copy / path
    source = target.read_text()
    edited = re.sub(rf"\bdef {re.escape(func)}\(", f"def removed_{func}(", source)
    assert edited != source
    target.write_text(edited)
    proc = _run(repo_copy, "--check")
    assert proc.returncode == 1
    assert "missing-test" in proc.stderr and test_id in proc.stderr


def test_deleting_a_referenced_test_file_fails(repo_copy):
    test_id = _first_referenced_test()
    (repo_copy / test_id.split("::")[0]).unlink()
    proc = _run(repo_copy, "--check")
    assert proc.returncode == 1 and test_id in proc.stderr


def test_expired_acceptance_fails(repo_copy):
    path = repo_copy / "threat-model" / "threats.yaml"
    original = yaml.safe_load(path.read_text())
    today = dt.datetime.now(dt.timezone.utc).date()

    def plant(expires: dt.date) -> subprocess.CompletedProcess:
        doc = {**original, "threats": [*original["threats"], {
            "id": "K-PLANTED-ACCEPTED",
            "title": "planted accepted risk",
            "stride": "D",
            "component": "test",
            "status": "accepted",
            "reason": "tolerated for the test",
            "expires": expires.isoformat(),
            "mitigations": [],
        }]}
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        return _run(repo_copy, "--check")

    still_valid = plant(today + dt.timedelta(days=3650))
    assert still_valid.returncode == 0, still_valid.stderr
    expired = plant(today - dt.timedelta(days=1))
    assert expired.returncode == 1
    assert "expired-acceptance: K-PLANTED-ACCEPTED" in expired.stderr


def test_today_is_injectable_on_the_command_line(repo_copy):
    """--today moves "now": far enough ahead, every real acceptance has expired too."""
    threats = yaml.safe_load((repo_copy / "threat-model" / "threats.yaml").read_text())["threats"]
    accepted = [t for t in threats if t["status"] == "accepted"]
    assert _run(repo_copy, "--check", "--today", "2000-01-01").returncode == 0
    far = _run(repo_copy, "--check", "--today", "9999-12-31")
    assert far.returncode == (1 if accepted else 0)
    for t in accepted:
        assert f"expired-acceptance: {t['id']}" in far.stderr


def test_unknown_threat_marker_fails(repo_copy):
    planted = repo_copy / "tests" / "threat_model" / "test_planted_marker.py"
    planted.write_text(
        "import pytest\n\n\n"
        "@pytest.mark.threat('K-NO-SUCH-THREAT')\n"
        "def test_something():\n    pass\n"
    )
    proc = _run(repo_copy, "--check")
    assert proc.returncode == 1
    assert "K-NO-SUCH-THREAT" in proc.stderr and "test_planted_marker.py::test_something" in proc.stderr


def test_unknown_module_level_marker_fails(repo_copy):
    planted = repo_copy / "tests" / "threat_model" / "test_planted_pytestmark.py"
    planted.write_text(
        "import pytest\n\npytestmark = [pytest.mark.threat('K-ALSO-UNKNOWN')]\n\n\n"
        "class TestX:\n    def test_a(self):\n        pass\n"
    )
    proc = _run(repo_copy, "--check")
    assert proc.returncode == 1 and "K-ALSO-UNKNOWN" in proc.stderr


def test_broken_yaml_is_an_input_error(repo_copy):
    (repo_copy / "threat-model" / "threats.yaml").write_text("threats: [unclosed\n")
    proc = _run(repo_copy, "--check")
    assert proc.returncode == 2 and "invalid YAML" in proc.stderr


# --------------------------------------------------------------------------- pure core

EMPTY_INDEX = tr.SuiteIndex(files=frozenset(), node_ids=frozenset(), markers={}, bad_markers=())
INDEX = tr.SuiteIndex(
    files=frozenset({"tests/a/test_x.py"}),
    node_ids=frozenset({"tests/a/test_x.py::test_ok", "tests/a/test_x.py::TestC::test_m"}),
    markers={},
    bad_markers=(),
)


def _threat(**over):
    base = {"id": "K-T", "title": "t", "stride": "S", "component": "c", "status": "mitigated", "mitigations": ["M-A"]}
    base.update(over)
    return base


def _mit(**over):
    base = {"id": "M-A", "description": "d", "implemented_in": ["x"], "tests": ["tests/a/test_x.py::test_ok"], "fuzz_targets": []}
    base.update(over)
    return base


def _rules(threats, mits, index=INDEX, fuzz=frozenset(), today=TODAY):
    found = tr.check_model({"threats": threats}, {"mitigations": mits}, index, fuzz, today)
    return {(f.rule, f.where) for f in found}


def test_core_accepts_a_sound_model():
    assert _rules([_threat()], [_mit()]) == set()


def test_core_mitigated_threat_without_mitigation_fails():
    assert ("unmitigated", "K-T") in _rules([_threat(mitigations=[])], [_mit()])


def test_core_threat_without_any_status_fails():
    bad = _threat()
    del bad["status"]
    assert ("schema", "K-T") in _rules([bad], [_mit()])


def test_core_mitigation_without_test_fails():
    assert ("no-test", "M-A") in _rules([_threat()], [_mit(tests=[])])


def test_core_unknown_mitigation_id_fails():
    assert ("unknown-mitigation", "K-T") in _rules([_threat(mitigations=["M-A", "M-B"])], [_mit()])


def test_core_missing_fuzz_target_fails():
    assert ("missing-fuzz-target", "M-A") in _rules([_threat()], [_mit(fuzz_targets=["nope"])])
    assert _rules([_threat()], [_mit(fuzz_targets=["yes"])], fuzz=frozenset({"yes"})) == set()


def test_core_test_ids_resolve_classes_params_and_files():
    ok = ["tests/a/test_x.py", "tests/a/test_x.py::TestC::test_m", "tests/a/test_x.py::test_ok[param-1]"]
    assert _rules([_threat()], [_mit(tests=ok)]) == set()
    for missing in ("tests/a/test_x.py::test_nope", "tests/a/test_y.py::test_ok", "tests/a/test_x.py::TestC::test_ok"):
        assert ("missing-test", "M-A") in _rules([_threat()], [_mit(tests=[missing])]), missing


def test_core_planned_needs_an_issue_and_not_applicable_a_reason():
    assert ("schema", "K-T") in _rules([_threat(status="planned", mitigations=[])], [_mit()])
    assert _rules([_threat(status="planned", issue=3, mitigations=["M-A"])], [_mit()]) == set()
    assert ("schema", "K-T") in _rules([_threat(status="not-applicable", mitigations=["M-A"])], [_mit()])


def test_core_acceptance_expiry_uses_injected_today():
    th = _threat(status="accepted", reason="r", expires="2026-11-26")
    assert ("expired-acceptance", "K-T") in _rules([th], [_mit()])
    assert ("expired-acceptance", "K-T") not in _rules([th], [_mit()], today=dt.date(2026, 11, 26))


def test_core_unknown_keys_duplicates_and_bad_stride_fail():
    assert ("schema", "K-T") in _rules([_threat(sevirity="high")], [_mit()])
    assert ("schema", "K-T") in _rules([_threat(), _threat()], [_mit()])
    assert ("schema", "K-T") in _rules([_threat(stride="SX")], [_mit()])


def test_core_orphan_mitigation_fails():
    assert ("orphan-mitigation", "M-Z") in _rules([_threat()], [_mit(), _mit(id="M-Z")])


def test_core_unknown_marker_fails():
    index = tr.SuiteIndex(
        files=INDEX.files, node_ids=INDEX.node_ids, markers={"K-GHOST": ("tests/a/test_x.py::test_ok",)}, bad_markers=()
    )
    assert ("unknown-marker", "tests/a/test_x.py::test_ok") in _rules([_threat()], [_mit()], index=index)


def test_marker_index_reads_decorators_classes_and_pytestmark(tmp_path):
    (tmp_path / "tests" / "t").mkdir(parents=True)
    (tmp_path / "tests" / "t" / "test_m.py").write_text(
        "import pytest\nfrom pytest import mark\n"
        "pytestmark = pytest.mark.threat('K-MOD')\n"
        "@pytest.mark.threat('K-FN')\ndef test_a():\n    pass\n"
        "@mark.threat('K-CLS')\nclass TestB:\n    def test_b(self):\n        pass\n"
        "def helper():\n    pass\n"
    )
    index = tr.index_tests(tmp_path)
    assert index.node_ids == {"tests/t/test_m.py::test_a", "tests/t/test_m.py::TestB::test_b"}
    assert index.markers["K-MOD"] == ("tests/t/test_m.py::test_a", "tests/t/test_m.py::TestB::test_b")
    assert index.markers["K-FN"] == ("tests/t/test_m.py::test_a",)
    assert index.markers["K-CLS"] == ("tests/t/test_m.py::TestB::test_b",)


def test_oversized_model_file_is_refused(tmp_path):
    big = tmp_path / "threats.yaml"
    big.write_bytes(b"#" * (tr.MAX_YAML_BYTES + 1))
    with pytest.raises(tr.ModelError):
        tr.load_yaml(big)
