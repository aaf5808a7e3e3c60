"""Traceability check for kedge's executable threat model.

Usage::

    python security/traceability.py [--root DIR] [--matrix OUT.md] [--check] [--today YYYY-MM-DD]

Loads ``threat-model/threats.yaml`` and ``threat-model/mitigations.yaml`` (bounded,
``yaml.safe_load``), validates their schema and cross-references them against the
test tree (parsed with :mod:`ast`, nothing is imported or executed) and the fuzz
targets on disk. It fails (exit 1) when

* a threat has no mitigation and is not ``accepted``, ``not-applicable`` or ``planned``;
* a mitigation names no test;
* an acceptance has expired (``--today`` makes "now" injectable);
* a test id named by a mitigation does not exist;
* a ``@pytest.mark.threat("ID")`` marker (or ``pytestmark``) names an unknown threat id;
* a fuzz target or an ``implemented_in`` path named by a mitigation does not exist.

Without ``--check`` it also writes the auditor's matrix (threat -> mitigations ->
tests -> fuzz targets, gaps listed) to ``--matrix`` (default
``threat-model/TRACEABILITY.md``). ``--check`` validates only and writes nothing.

Why a script and not part of the ``kedge`` package: it audits the repository, not a
deployment, and must run from a source checkout (the wheel carries no tests).
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import datetime as dt
import re
import sys
from pathlib import Path
from typing import Any, Iterable

import yaml

# Bounds on what we read: the model files and test sources are repository content,
# but a check that reads unbounded input is the thing the threat model forbids.
MAX_YAML_BYTES = 1024 * 1024
MAX_TEST_FILE_BYTES = 2 * 1024 * 1024
MAX_TEST_FILES = 5_000

THREATS_FILE = Path("threat-model/threats.yaml")
MITIGATIONS_FILE = Path("threat-model/mitigations.yaml")
DEFAULT_MATRIX = Path("threat-model/TRACEABILITY.md")
TESTS_DIR = Path("tests")
FUZZ_TARGETS_DIR = Path("fuzz/targets")

STRIDE = {
    "S": "Spoofing",
    "T": "Tampering",
    "R": "Repudiation",
    "I": "Information disclosure",
    "D": "Denial of service",
    "E": "Elevation of privilege",
}
STATUSES = ("mitigated", "accepted", "not-applicable", "planned")
ID_RE = re.compile(r"^[A-Z][A-Z0-9]*(-[A-Z0-9]+)+$")
MITIGATION_ID_RE = re.compile(r"^M-[A-Z0-9]+(-[A-Z0-9]+)*$")
FUZZ_NAME_RE = re.compile(r"^[a-z0-9_]+$")
TEST_ID_RE = re.compile(
    r"^(?P<path>tests/[A-Za-z0-9_./-]+\.py)"
    r"(?:::(?P<cls>Test[A-Za-z0-9_]*)(?=::))?"
    r"(?:::(?P<func>test[A-Za-z0-9_]*))?"
    r"(?:\[[^\]]*\])?$"
)

THREAT_KEYS_REQUIRED = {"id", "title", "stride", "component", "status", "mitigations"}
THREAT_KEYS_OPTIONAL = {"source", "actor", "flow", "description", "references", "reason", "expires", "issue"}
MITIGATION_KEYS_REQUIRED = {"id", "description", "implemented_in", "tests", "fuzz_targets"}
MITIGATION_KEYS_OPTIONAL = {"notes"}


class ModelError(Exception):
    """The model files cannot be read or parsed at all."""


@dataclasses.dataclass(frozen=True)
class Finding:
    """One failed rule; ``where`` names the threat, mitigation or file it is about."""

    rule: str
    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.rule}: {self.where}: {self.message}"


@dataclasses.dataclass(frozen=True)
class SuiteIndex:
    """What the test tree contains, learned by parsing (never importing) it."""

    files: frozenset[str]
    # "path::func" and "path::Class::func" for every collected-looking test.
    node_ids: frozenset[str]
    # threat id -> node ids carrying @pytest.mark.threat(id) (directly or via pytestmark)
    markers: dict[str, tuple[str, ...]]
    # (where, message) for markers that could not be read as a literal id
    bad_markers: tuple[tuple[str, str], ...]


# --------------------------------------------------------------------------- loading


def load_yaml(path: Path) -> Any:
    """``yaml.safe_load`` of a bounded file; raises :class:`ModelError` on any problem."""
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise ModelError(f"{path}: cannot read: {exc.strerror}") from exc
    if size > MAX_YAML_BYTES:
        raise ModelError(f"{path}: {size} bytes exceeds the {MAX_YAML_BYTES}-byte bound")
    try:
        with path.open("rb") as fh:
            data = fh.read(MAX_YAML_BYTES + 1)
        return yaml.safe_load(data)
    except yaml.YAMLError as exc:
        raise ModelError(f"{path}: invalid YAML: {exc}") from exc


def _is_threat_marker(node: ast.AST) -> str | None | bool:
    """Return the id of ``pytest.mark.threat("ID")``; ``False`` if not a threat marker;
    ``None`` if it is one but its argument is not a string literal."""
    if not isinstance(node, ast.Call):
        return False
    func = node.func
    if not (isinstance(func, ast.Attribute) and func.attr == "threat"):
        return False
    base = func.value
    is_mark = (isinstance(base, ast.Attribute) and base.attr == "mark") or (
        isinstance(base, ast.Name) and base.id == "mark"
    )
    if not is_mark:
        return False
    if len(node.args) == 1 and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
        return node.args[0].value
    return None


def _markers_in(expr: ast.AST) -> list[str | None]:
    """Threat markers in a decorator or a ``pytestmark`` value (a call or a list of them)."""
    items = expr.elts if isinstance(expr, (ast.List, ast.Tuple)) else [expr]
    found: list[str | None] = []
    for item in items:
        got = _is_threat_marker(item)
        if got is not False:
            found.append(got)  # type: ignore[arg-type]
    return found


def index_tests(root: Path) -> SuiteIndex:
    """Parse every ``tests/**/*.py`` with :mod:`ast` and record test ids and threat markers."""
    files: set[str] = set()
    node_ids: set[str] = set()
    markers: dict[str, list[str]] = {}
    bad: list[tuple[str, str]] = []
    test_root = root / TESTS_DIR
    paths = sorted(test_root.rglob("*.py")) if test_root.is_dir() else []
    if len(paths) > MAX_TEST_FILES:
        raise ModelError(f"more than {MAX_TEST_FILES} test files under {test_root}")
    for path in paths:
        rel = path.relative_to(root).as_posix()
        if "__pycache__" in path.parts:
            continue
        files.add(rel)
        if path.stat().st_size > MAX_TEST_FILE_BYTES:
            bad.append((rel, f"file larger than {MAX_TEST_FILE_BYTES} bytes, not parsed"))
            continue
        try:
            tree = ast.parse(path.read_bytes(), filename=rel)
        except (SyntaxError, ValueError) as exc:
            bad.append((rel, f"cannot parse: {exc}"))
            continue
        module_marks: list[str | None] = []
        for stmt in tree.body:
            if isinstance(stmt, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "pytestmark" for t in stmt.targets
            ):
                module_marks.extend(_markers_in(stmt.value))

        def record(node_id: str, decorators: Iterable[ast.AST], inherited: list[str | None]) -> None:
            marks = list(inherited)
            for deco in decorators:
                marks.extend(_markers_in(deco))
            for mark in marks:
                if mark is None:
                    bad.append((node_id, "threat marker argument is not a string literal"))
                else:
                    markers.setdefault(mark, []).append(node_id)

        for stmt in tree.body:
            if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)) and stmt.name.startswith("test"):
                node_id = f"{rel}::{stmt.name}"
                node_ids.add(node_id)
                record(node_id, stmt.decorator_list, module_marks)
            elif isinstance(stmt, ast.ClassDef) and stmt.name.startswith("Test"):
                class_marks = list(module_marks)
                for deco in stmt.decorator_list:
                    class_marks.extend(_markers_in(deco))
                for sub in stmt.body:
                    if isinstance(sub, ast.Assign) and any(
                        isinstance(t, ast.Name) and t.id == "pytestmark" for t in sub.targets
                    ):
                        class_marks.extend(_markers_in(sub.value))
                for sub in stmt.body:
                    if isinstance(sub, (ast.FunctionDef, ast.AsyncFunctionDef)) and sub.name.startswith("test"):
                        node_id = f"{rel}::{stmt.name}::{sub.name}"
                        node_ids.add(node_id)
                        record(node_id, sub.decorator_list, class_marks)
    return SuiteIndex(
        files=frozenset(files),
        node_ids=frozenset(node_ids),
        markers={k: tuple(v) for k, v in sorted(markers.items())},
        bad_markers=tuple(bad),
    )


def fuzz_targets(root: Path) -> frozenset[str]:
    """Names of the fuzz targets on disk (``fuzz/targets/fuzz_<name>.py`` -> ``<name>``)."""
    base = root / FUZZ_TARGETS_DIR
    if not base.is_dir():
        return frozenset()
    return frozenset(p.stem[len("fuzz_"):] for p in base.glob("fuzz_*.py"))


# --------------------------------------------------------------------------- checking


def _as_list(value: Any) -> list[Any] | None:
    return value if isinstance(value, list) else None


def _parse_date(value: Any) -> dt.date | None:
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    if isinstance(value, str):
        try:
            return dt.date.fromisoformat(value)
        except ValueError:
            return None
    return None


def has_test(test_id: str, index: SuiteIndex) -> bool:
    """True if ``test_id`` (a file, ``file::func`` or ``file::Class::func``, optional
    ``[param]``) names something the test tree contains."""
    m = TEST_ID_RE.match(test_id)
    if not m:
        return False
    path, cls, func = m.group("path"), m.group("cls"), m.group("func")
    if path not in index.files:
        return False
    if func is None and cls is None:
        return any(n.startswith(path + "::") for n in index.node_ids)
    if func is None:
        return False
    node = f"{path}::{cls}::{func}" if cls else f"{path}::{func}"
    return node in index.node_ids


def check_model(
    threats_doc: Any,
    mitigations_doc: Any,
    index: SuiteIndex,
    fuzz_names: frozenset[str],
    today: dt.date,
    path_exists: Any = None,
) -> list[Finding]:
    """Every rule of the model, as a list of findings (empty means the model holds).

    Pure: the documents, the test index, the fuzz target names, ``today`` and a
    ``path_exists`` predicate (``None`` skips the ``implemented_in`` check) come in;
    findings come out.
    """
    out: list[Finding] = []

    def fail(rule: str, where: str, message: str) -> None:
        out.append(Finding(rule, where, message))

    threats = _as_list(threats_doc.get("threats")) if isinstance(threats_doc, dict) else None
    mitigations = _as_list(mitigations_doc.get("mitigations")) if isinstance(mitigations_doc, dict) else None
    if threats is None:
        fail("schema", str(THREATS_FILE), "top level must be a mapping with a 'threats' list")
        threats = []
    if mitigations is None:
        fail("schema", str(MITIGATIONS_FILE), "top level must be a mapping with a 'mitigations' list")
        mitigations = []

    # Mitigations first: threats refer to them.
    mit_ids: set[str] = set()
    for i, mit in enumerate(mitigations):
        where = f"mitigations[{i}]"
        if not isinstance(mit, dict):
            fail("schema", where, "each mitigation must be a mapping")
            continue
        mid = mit.get("id")
        if isinstance(mid, str):
            where = mid
        missing = MITIGATION_KEYS_REQUIRED - mit.keys()
        unknown = mit.keys() - MITIGATION_KEYS_REQUIRED - MITIGATION_KEYS_OPTIONAL
        if missing:
            fail("schema", where, f"missing keys: {', '.join(sorted(missing))}")
        if unknown:
            fail("schema", where, f"unknown keys: {', '.join(sorted(map(str, unknown)))}")
        if not isinstance(mid, str) or not MITIGATION_ID_RE.match(mid):
            fail("schema", where, "id must look like M-NAME")
            continue
        if mid in mit_ids:
            fail("schema", where, "duplicate mitigation id")
        mit_ids.add(mid)
        if not isinstance(mit.get("description"), str) or not mit.get("description", "").strip():
            fail("schema", where, "description must be a non-empty string")
        impl = _as_list(mit.get("implemented_in"))
        if impl is None or not impl or not all(isinstance(p, str) and p for p in impl):
            fail("schema", where, "implemented_in must be a non-empty list of repository paths")
        elif path_exists is not None:
            for p in impl:
                if not path_exists(p):
                    fail("missing-path", where, f"implemented_in path does not exist: {p}")
        tests = _as_list(mit.get("tests"))
        if tests is None or not all(isinstance(t, str) for t in tests):
            fail("schema", where, "tests must be a list of pytest node ids")
        elif not tests:
            fail("no-test", where, "mitigation has no test")
        else:
            for t in tests:
                if not has_test(t, index):
                    fail("missing-test", where, f"test does not exist: {t}")
        fz = _as_list(mit.get("fuzz_targets"))
        if fz is None or not all(isinstance(f, str) for f in fz):
            fail("schema", where, "fuzz_targets must be a list of target names")
        else:
            for f in fz:
                if not FUZZ_NAME_RE.match(f) or f not in fuzz_names:
                    fail("missing-fuzz-target", where, f"fuzz target does not exist: fuzz/targets/fuzz_{f}.py")

    threat_ids: set[str] = set()
    used_mits: set[str] = set()
    for i, th in enumerate(threats):
        where = f"threats[{i}]"
        if not isinstance(th, dict):
            fail("schema", where, "each threat must be a mapping")
            continue
        tid = th.get("id")
        if isinstance(tid, str):
            where = tid
        missing = THREAT_KEYS_REQUIRED - th.keys()
        unknown = th.keys() - THREAT_KEYS_REQUIRED - THREAT_KEYS_OPTIONAL
        if missing:
            fail("schema", where, f"missing keys: {', '.join(sorted(missing))}")
        if unknown:
            fail("schema", where, f"unknown keys: {', '.join(sorted(map(str, unknown)))}")
        if not isinstance(tid, str) or not ID_RE.match(tid) or tid.startswith("M-"):
            fail("schema", where, "id must be upper-case words joined by '-', e.g. K-TOKEN-REPLAY")
            continue
        if tid in threat_ids:
            fail("schema", where, "duplicate threat id")
        threat_ids.add(tid)
        if not isinstance(th.get("title"), str) or not th["title"].strip():
            fail("schema", where, "title must be a non-empty string")
        stride = th.get("stride")
        if not isinstance(stride, str) or not stride or any(c not in STRIDE for c in stride) or len(set(stride)) != len(stride):
            fail("schema", where, "stride must be a string of distinct letters from STRIDE, e.g. 'SE'")
        if not isinstance(th.get("component"), str) or not th["component"]:
            fail("schema", where, "component must be a non-empty string")
        mits = _as_list(th.get("mitigations"))
        if mits is None or not all(isinstance(m, str) for m in mits):
            fail("schema", where, "mitigations must be a list of mitigation ids")
            mits = []
        for m in mits:
            used_mits.add(m)
            if m not in mit_ids:
                fail("unknown-mitigation", where, f"names unknown mitigation {m}")
        status = th.get("status")
        if status not in STATUSES:
            fail("schema", where, f"status must be one of {', '.join(STATUSES)}")
            continue
        if status == "mitigated":
            if not mits:
                fail("unmitigated", where, "status mitigated but no mitigations listed")
            for k in ("reason", "expires", "issue"):
                if k in th:
                    fail("schema", where, f"'{k}' is not allowed with status mitigated")
        elif status == "accepted":
            if not isinstance(th.get("reason"), str) or not th["reason"].strip():
                fail("schema", where, "an accepted threat needs a reason")
            expires = _parse_date(th.get("expires"))
            if expires is None:
                fail("schema", where, "an accepted threat needs expires: YYYY-MM-DD")
            elif expires < today:
                fail("expired-acceptance", where, f"acceptance expired on {expires.isoformat()}")
        elif status == "not-applicable":
            if not isinstance(th.get("reason"), str) or not th["reason"].strip():
                fail("schema", where, "a not-applicable threat needs a reason")
        elif status == "planned":
            issue = th.get("issue")
            if not isinstance(issue, int) or isinstance(issue, bool) or issue <= 0:
                fail("schema", where, "a planned threat needs issue: <number>")

    for m in sorted(mit_ids - used_mits):
        fail("orphan-mitigation", m, "mitigation is not referenced by any threat")

    for mark, nodes in index.markers.items():
        if mark not in threat_ids:
            for node in nodes:
                fail("unknown-marker", node, f"@pytest.mark.threat names unknown threat id {mark!r}")
    for where, message in index.bad_markers:
        fail("bad-marker", where, message)
    return out


# --------------------------------------------------------------------------- matrix


def _cell(items: Iterable[str]) -> str:
    items = list(items)
    return "<br>".join(f"`{i}`" for i in items) if items else "—"


def render_matrix(threats_doc: Any, mitigations_doc: Any, index: SuiteIndex, findings: list[Finding]) -> str:
    """Markdown matrix threat -> mitigations -> tests -> fuzz targets, plus the gaps."""
    threats = [t for t in (threats_doc or {}).get("threats", []) if isinstance(t, dict)]
    mits = {m.get("id"): m for m in (mitigations_doc or {}).get("mitigations", []) if isinstance(m, dict)}
    lines = [
        "# Traceability matrix",
        "",
        "Generated by `python security/traceability.py` from `threat-model/threats.yaml` and",
        "`threat-model/mitigations.yaml`; do not edit by hand. Each row is one threat; tests are",
        "pytest node ids, fuzz targets are `fuzz/targets/fuzz_<name>.py`. \"Marked tests\" are tests",
        "carrying `@pytest.mark.threat(<id>)`.",
        "",
        "| Threat | Title | STRIDE | Component | Status | Mitigations | Tests | Fuzz targets | Marked tests |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    gaps: list[str] = []
    unmarked: list[str] = []
    counts: dict[str, int] = {s: 0 for s in STATUSES}
    for th in threats:
        tid = str(th.get("id"))
        status = str(th.get("status"))
        counts[status] = counts.get(status, 0) + 1
        tests: list[str] = []
        fuzz: list[str] = []
        for mid in th.get("mitigations") or []:
            m = mits.get(mid) or {}
            for t in m.get("tests") or []:
                if t not in tests:
                    tests.append(t)
            for f in m.get("fuzz_targets") or []:
                if f not in fuzz:
                    fuzz.append(f)
        shown_status = status
        if status == "planned":
            shown_status = f"planned (#{th.get('issue')})"
            gaps.append(f"- `{tid}` {th.get('title')}: **planned**, tracked in issue #{th.get('issue')}.")
        elif status == "accepted":
            shown_status = f"accepted until {th.get('expires')}"
            gaps.append(f"- `{tid}` {th.get('title')}: **accepted** until {th.get('expires')} — {th.get('reason')}")
        elif status == "not-applicable":
            shown_status = "not applicable"
        if status == "mitigated" and not index.markers.get(tid):
            unmarked.append(tid)
        title = str(th.get("title", "")).replace("|", "\\|")
        lines.append(
            f"| `{tid}` | {title} | {th.get('stride')} | {th.get('component')} | {shown_status} | "
            f"{_cell(th.get('mitigations') or [])} | {_cell(tests)} | {_cell(fuzz)} | "
            f"{_cell(index.markers.get(tid, ()))} |"
        )
    lines += ["", "## Summary", ""]
    lines += [f"- {s}: {counts.get(s, 0)}" for s in STATUSES]
    lines += ["", "## Gaps", ""]
    lines += gaps or ["- none"]
    if unmarked:
        lines += [
            "",
            "Mitigated threats that no test names with `@pytest.mark.threat` (the evidence is the",
            "mitigation's tests above; a marker makes the link visible from the test side too):",
            "",
            ", ".join(f"`{t}`" for t in unmarked),
        ]
    lines += ["", "## Check result", ""]
    lines += [f"- {f}" for f in findings] or ["- all rules hold"]
    lines.append("")
    return "\n".join(lines)


# --------------------------------------------------------------------------- shell


def run(root: Path, *, today: dt.date, matrix: Path | None) -> tuple[list[Finding], str]:
    """Load, check and (optionally) write the matrix. Returns the findings and the matrix text."""
    threats_doc = load_yaml(root / THREATS_FILE)
    mitigations_doc = load_yaml(root / MITIGATIONS_FILE)
    index = index_tests(root)
    findings = check_model(
        threats_doc,
        mitigations_doc,
        index,
        fuzz_targets(root),
        today,
        path_exists=lambda p: (root / p).exists() and ".." not in Path(p).parts,
    )
    text = render_matrix(threats_doc, mitigations_doc, index, findings)
    if matrix is not None:
        target = matrix if matrix.is_absolute() else root / matrix
        tmp = target.with_name(f".{target.name}.tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(target)
    return findings, text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parent.parent, help="repository root")
    parser.add_argument("--matrix", type=Path, default=None, help=f"where to write the matrix (default {DEFAULT_MATRIX})")
    parser.add_argument("--check", action="store_true", help="validate only, write nothing")
    parser.add_argument("--today", type=dt.date.fromisoformat, default=None, help="date used for expiry (YYYY-MM-DD)")
    args = parser.parse_args(argv)
    today = args.today or dt.datetime.now(dt.timezone.utc).date()
    matrix = None if args.check else (args.matrix or DEFAULT_MATRIX)
    try:
        findings, _ = run(args.root.resolve(), today=today, matrix=matrix)
    except ModelError as exc:
        print(f"traceability: {exc}", file=sys.stderr)
        return 2
    for f in findings:
        print(f"traceability: FAIL {f}", file=sys.stderr)
    if findings:
        print(f"traceability: {len(findings)} rule(s) failed", file=sys.stderr)
        return 1
    print("traceability: ok" + (f", matrix written to {matrix}" if matrix else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
