"""The audit's result model: one shape that every output format is rendered from.

A :class:`Check` is a catalogue entry (data from ``security/audit-checks.yaml``); an
:class:`Outcome` is what a pure check function decides from gathered facts; a
:class:`Result` joins the two (plus a waiver, when one applied). Keeping a single
model is what keeps text, JSON, JUnit and SARIF from ever disagreeing.
"""

from __future__ import annotations

import dataclasses
import enum
import re

from kedge.errors import ConfigError


class Status(str, enum.Enum):
    """Outcome of one check. ``ERROR`` means the check could not be evaluated."""

    PASS = "PASS"
    FAIL = "FAIL"
    WARN = "WARN"
    INFO = "INFO"
    SKIP = "SKIP"
    ERROR = "ERROR"


class Severity(str, enum.Enum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        return _SEVERITY_RANK[self]

    @property
    def score(self) -> float:
        """SARIF ``security-severity`` (GitHub buckets: >=9 critical, >=7 high, >=4 medium)."""
        return _SEVERITY_SCORE[self]

    @classmethod
    def parse(cls, text: str) -> "Severity":
        try:
            return cls(str(text).lower())
        except ValueError as exc:
            raise ConfigError(f"unknown severity {text!r} (low|medium|high|critical)", code="bad_severity") from exc


_SEVERITY_RANK = {Severity.LOW: 1, Severity.MEDIUM: 2, Severity.HIGH: 3, Severity.CRITICAL: 4}
_SEVERITY_SCORE = {Severity.LOW: 3.0, Severity.MEDIUM: 5.5, Severity.HIGH: 8.0, Severity.CRITICAL: 9.5}

SCOPES = ("cloud", "edge", "cluster")
CHECK_ID = re.compile(r"KEDGE-(CLOUD|EDGE|CLUSTER)-[0-9]{3}", re.ASCII)
REFERENCE_KEYS = ("cis", "kubeedge_threat", "kubeedge_recommendation", "nsa_kubescape", "kedge_threat")


@dataclasses.dataclass(frozen=True)
class Check:
    """One catalogue entry. Validated on construction so a bad catalogue fails loudly."""

    id: str
    title: str
    scope: str
    severity: Severity
    automated: bool
    remediation: str
    references: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not CHECK_ID.fullmatch(self.id):
            raise ConfigError(f"bad check id {self.id!r}", code="bad_catalogue")
        if self.scope not in SCOPES:
            raise ConfigError(f"{self.id}: scope must be one of {SCOPES}", code="bad_catalogue")
        if self.id.split("-")[1].lower() != self.scope:
            raise ConfigError(f"{self.id}: id prefix does not match scope {self.scope}", code="bad_catalogue")
        if not isinstance(self.severity, Severity):
            raise ConfigError(f"{self.id}: bad severity", code="bad_catalogue")
        if not isinstance(self.automated, bool):
            raise ConfigError(f"{self.id}: automated must be true or false", code="bad_catalogue")
        for name in ("title", "remediation"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise ConfigError(f"{self.id}: {name} must be non-empty text", code="bad_catalogue")
        for key, value in self.references:
            if key not in REFERENCE_KEYS or not isinstance(value, str) or not value:
                raise ConfigError(f"{self.id}: bad reference {key!r}", code="bad_catalogue")

    @property
    def reference_dict(self) -> dict[str, str]:
        return dict(self.references)


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What a check function decided: status, expected vs actual, where."""

    status: Status
    expected: str
    actual: str
    locations: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.status, Status):
            raise TypeError("status must be a Status")
        if not isinstance(self.locations, tuple):
            raise TypeError("locations must be a tuple of paths")


@dataclasses.dataclass(frozen=True)
class Waiver:
    """An accepted risk: suppresses a FAIL of ``check_id`` (in ``scope``) until ``expires``."""

    check_id: str
    reason: str
    expires: str  # ISO date, inclusive
    scope: str | None = None


@dataclasses.dataclass(frozen=True)
class Result:
    check: Check
    outcome: Outcome
    waiver: Waiver | None = None
    expired_waiver: Waiver | None = None

    @property
    def status(self) -> Status:
        return self.outcome.status


@dataclasses.dataclass(frozen=True)
class Report:
    """Every result of one audit run, in catalogue order, plus run metadata."""

    results: tuple[Result, ...]
    generated_at: str
    version: str
    targets: tuple[tuple[str, str], ...] = ()  # ("cloud", "/path"), ("endpoint", "https://..")

    def totals(self) -> dict[str, int]:
        counts = {s.value.lower(): 0 for s in Status}
        for r in self.results:
            counts[r.status.value.lower()] += 1
        counts["total"] = len(self.results)
        counts["waived"] = sum(1 for r in self.results if r.waiver is not None)
        return counts

    def failing(self, fail_on: Severity) -> list[Result]:
        """FAIL results at or above ``fail_on`` -- what makes the exit code 1."""
        return [r for r in self.results
                if r.status is Status.FAIL and r.check.severity.rank >= fail_on.rank]

    def errors(self) -> list[Result]:
        return [r for r in self.results if r.status is Status.ERROR]

    def exit_code(self, fail_on: Severity) -> int:
        """0 clean; 1 findings at/above ``fail_on``; 3 some check could not run."""
        if self.failing(fail_on):
            return 1
        if self.errors():
            return 3
        return 0
