"""Render one :class:`~kedge.audit.model.Report` as text, JSON, JUnit XML or SARIF 2.1.0.

All four come from the same results, so they cannot disagree: JSON totals equal the
number of checks, JUnit has one testcase per check (failure for FAIL, error for ERROR,
skipped for SKIP), SARIF has one rule per check (ruleId = check id) and a result for
every FAIL, WARN and ERROR (waived findings carry an accepted suppression).
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET  # nosec B405 - we only build XML, never parse it
from pathlib import Path
from typing import Any

from kedge.audit.model import Report, Result, Status

SARIF_SCHEMA = "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json"
FORMATS = ("text", "json", "junit", "sarif")


def _result_dict(r: Result) -> dict[str, Any]:
    d: dict[str, Any] = {
        "id": r.check.id,
        "title": r.check.title,
        "scope": r.check.scope,
        "severity": r.check.severity.value,
        "automated": r.check.automated,
        "status": r.status.value,
        "expected": r.outcome.expected,
        "actual": r.outcome.actual,
        "locations": list(r.outcome.locations),
        "remediation": r.check.remediation,
        "references": r.check.reference_dict,
    }
    if r.waiver is not None:
        d["waiver"] = {"reason": r.waiver.reason, "expires": r.waiver.expires, "scope": r.waiver.scope}
    if r.expired_waiver is not None:
        d["expired_waiver"] = {"reason": r.expired_waiver.reason, "expires": r.expired_waiver.expires}
    return d


def to_json(report: Report) -> str:
    doc = {
        "tool": "kedge audit",
        "version": report.version,
        "generated_at": report.generated_at,
        "targets": [{"kind": k, "value": v} for k, v in report.targets],
        "totals": report.totals(),
        "results": [_result_dict(r) for r in report.results],
    }
    return json.dumps(doc, indent=2) + "\n"


def to_text(report: Report) -> str:
    lines = [f"kedge audit {report.version} -- {report.generated_at}"]
    for kind, value in report.targets:
        lines.append(f"  {kind}: {value}")
    lines.append("")
    for scope in ("cloud", "cluster", "edge"):
        rs = [r for r in report.results if r.check.scope == scope]
        if not rs:
            continue
        lines.append(f"== {scope} ==")
        for r in rs:
            lines.append(f"[{r.status.value:<5}] {r.check.id} ({r.check.severity.value}) {r.check.title}")
            if r.status in (Status.FAIL, Status.WARN, Status.ERROR):
                lines.append(f"        expected: {r.outcome.expected}")
                lines.append(f"        actual:   {r.outcome.actual}")
                for loc in r.outcome.locations:
                    lines.append(f"        at:       {loc}")
                if r.status is not Status.ERROR:
                    lines.append(f"        fix:      {r.check.remediation}")
            elif r.status in (Status.SKIP, Status.INFO):
                lines.append(f"        {r.outcome.actual}")
            if r.expired_waiver is not None:
                lines.append(f"        waiver expired {r.expired_waiver.expires}: {r.expired_waiver.reason}")
        lines.append("")
    t = report.totals()
    lines.append("== summary ==")
    lines.append(f"{t['pass']} pass, {t['fail']} fail, {t['warn']} warn ({t['waived']} waived), "
                 f"{t['info']} info, {t['skip']} skip, {t['error']} error -- {t['total']} checks")
    return "\n".join(lines) + "\n"


def to_junit(report: Report) -> str:
    t = report.totals()
    suites = ET.Element("testsuites", name="kedge-audit", tests=str(t["total"]), failures=str(t["fail"]),
                        errors=str(t["error"]), skipped=str(t["skip"]))
    for scope in ("cloud", "cluster", "edge"):
        rs = [r for r in report.results if r.check.scope == scope]
        suite = ET.SubElement(
            suites, "testsuite", name=f"kedge-audit.{scope}", tests=str(len(rs)),
            failures=str(sum(r.status is Status.FAIL for r in rs)),
            errors=str(sum(r.status is Status.ERROR for r in rs)),
            skipped=str(sum(r.status is Status.SKIP for r in rs)), time="0", timestamp=report.generated_at)
        for r in rs:
            tc = ET.SubElement(suite, "testcase", classname=f"kedge.audit.{scope}",
                               name=f"{r.check.id} {r.check.title}", time="0")
            detail = f"expected: {r.outcome.expected}\nactual: {r.outcome.actual}"
            if r.status is Status.FAIL:
                el = ET.SubElement(tc, "failure", message=r.outcome.actual[:500], type=r.check.severity.value)
                el.text = f"{detail}\nremediation: {r.check.remediation}"
            elif r.status is Status.ERROR:
                el = ET.SubElement(tc, "error", message=r.outcome.actual[:500], type="probe")
                el.text = detail
            elif r.status is Status.SKIP:
                ET.SubElement(tc, "skipped", message=r.outcome.actual[:500])
            out = ET.SubElement(tc, "system-out")
            out.text = f"status: {r.status.value}\n{detail}"
    ET.indent(suites)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suites, encoding="unicode") + "\n"


def _level(r: Result) -> str:
    if r.status is Status.FAIL:
        return "error" if r.check.severity.rank >= 3 else "warning"
    if r.status is Status.ERROR:
        return "error"
    return "warning"


def _location(path: str, bases: dict[str, str]) -> dict[str, Any]:
    """A location relative to the audited directory (uriBaseId), or an absolute file URI."""
    p = Path(path)
    for base_id, base in bases.items():
        try:
            rel = p.relative_to(base)
        except ValueError:
            continue
        return {"physicalLocation": {"artifactLocation": {"uri": rel.as_posix() or ".", "uriBaseId": base_id}}}
    return {"physicalLocation": {"artifactLocation": {"uri": p.absolute().as_uri()}}}


def to_sarif(report: Report) -> str:
    bases = {}
    for kind, value in report.targets:
        if kind == "cloud":
            bases["CLOUDDIR"] = str(Path(value).absolute())
        elif kind == "edge":
            bases["EDGEDIR"] = str(Path(value).absolute())
    rules, results = [], []
    for idx, r in enumerate(report.results):
        c = r.check
        tags = ["security", c.scope] + [f"{k}:{v}" for k, v in c.references]
        rules.append({
            "id": c.id,
            "name": c.id.replace("-", ""),
            "shortDescription": {"text": c.title},
            "fullDescription": {"text": c.title},
            "help": {"text": c.remediation},
            "defaultConfiguration": {"level": "error" if c.severity.rank >= 3 else "warning"},
            "properties": {"security-severity": f"{c.severity.score:.1f}", "severity": c.severity.value,
                           "automated": c.automated, "tags": tags},
        })
        if r.status not in (Status.FAIL, Status.WARN, Status.ERROR):
            continue
        res: dict[str, Any] = {
            "ruleId": c.id,
            "ruleIndex": idx,
            "level": _level(r),
            "message": {"text": f"{c.title}: expected {r.outcome.expected}; actual {r.outcome.actual}"},
            "properties": {"status": r.status.value},
        }
        if r.outcome.locations:
            res["locations"] = [_location(p, bases) for p in r.outcome.locations]
        if r.waiver is not None:
            res["suppressions"] = [{"kind": "external", "status": "accepted",
                                    "justification": f"{r.waiver.reason} (until {r.waiver.expires})"}]
        results.append(res)
    run: dict[str, Any] = {
        "tool": {"driver": {"name": "kedge-audit", "version": report.version, "semanticVersion": report.version,
                            "rules": rules}},
        "results": results,
        "invocations": [{"executionSuccessful": not report.errors(), "endTimeUtc": report.generated_at}],
    }
    if bases:
        run["originalUriBaseIds"] = {k: {"uri": Path(v).as_uri() + "/"} for k, v in bases.items()}
    doc = {"$schema": SARIF_SCHEMA, "version": "2.1.0", "runs": [run]}
    return json.dumps(doc, indent=2) + "\n"


def render(report: Report, fmt: str) -> str:
    if fmt == "text":
        return to_text(report)
    if fmt == "json":
        return to_json(report)
    if fmt == "junit":
        return to_junit(report)
    if fmt == "sarif":
        return to_sarif(report)
    raise ValueError(f"unknown format {fmt!r}")
