"""SLSA Provenance v1 inside an in-toto Statement v1 -- the document, nothing else.

Pure: the caller passes every fact (source, commit, times, invocation id); nothing
here reads git, the clock or the environment, so the same inputs give the same
bytes and the shape can be tested and fuzzed without a build.

The layout follows what GitHub's own build provenance uses
(``externalParameters.workflow{repository, ref, path}``, ``resolvedDependencies[0]``
= ``git+REPO@REF`` with a ``gitCommit`` digest) so that a verifier written for
slsa-verifier/``gh attestation verify`` style provenance reads kedge's unchanged;
only ``buildType`` is kedge's own (documented in ``provenance/README.md``).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from kedge.errors import ConfigError, VerificationError

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
SLSA_PROVENANCE_V1 = "https://slsa.dev/provenance/v1"
PAYLOAD_TYPE = "application/vnd.in-toto+json"
#: What a kedge release build *is*: clean clone of one commit, hatchling sdist+wheel
#: with SOURCE_DATE_EPOCH = committer time, CycloneDX SBOM of the runtime deps.
BUILD_TYPE = "https://kedge.dev/provenance/buildtypes/hatchling-reproducible/v1"
#: Builder id of a build run on a developer's or release manager's machine. CI
#: builds use the reusable workflow's identity instead (see .github/workflows).
LOCAL_BUILDER_ID = "https://kedge.dev/provenance/builders/local/v1"

MAX_STATEMENT_BYTES = 1024 * 1024
MAX_SUBJECTS = 64

_HEX64 = re.compile(r"[0-9a-f]{64}")
_COMMIT = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
_TOKEN = re.compile(r"[\x21-\x7e]{1,512}")  # printable ASCII, no spaces
_URI = re.compile(r"[a-z][a-z0-9+.-]*://[\x21-\x7e]{1,500}")


def _require(cond: bool, what: str) -> None:
    if not cond:
        raise ConfigError(what, code="bad_build_parameter")


@dataclasses.dataclass(frozen=True)
class Subject:
    """One artifact a Statement speaks about: file name and SHA-256."""

    name: str
    sha256: str

    def __post_init__(self) -> None:
        _require(isinstance(self.name, str) and 0 < len(self.name) <= 255 and "/" not in self.name,
                 f"bad subject name {self.name!r}")
        _require(isinstance(self.sha256, str) and bool(_HEX64.fullmatch(self.sha256)),
                 f"bad sha256 for {self.name!r}")

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "digest": {"sha256": self.sha256}}


@dataclasses.dataclass(frozen=True)
class BuildFacts:
    """Everything the provenance asserts about one build run.

    ``repository`` is the source repository URI as a verifier's ``--source-uri``
    names it (``https://github.com/OWNER/REPO``); ``ref`` the git ref built
    (``refs/tags/v1.2.3``); ``commit`` the exact commit; ``workflow_path`` the
    top-level entry point (workflow file or ``Makefile``).
    """

    repository: str
    ref: str
    commit: str
    workflow_path: str
    builder_id: str
    invocation_id: str
    source_date_epoch: int
    started_on: dt.datetime
    finished_on: dt.datetime
    tools: tuple[tuple[str, str], ...] = ()
    internal: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        _require(isinstance(self.repository, str) and bool(_URI.fullmatch(self.repository))
                 and self.repository.split("://", 1)[0] in ("https", "http", "file"),
                 "repository must be an https:// or file:// URI")
        _require(isinstance(self.ref, str) and bool(_TOKEN.fullmatch(self.ref)), "bad git ref")
        _require(isinstance(self.commit, str) and bool(_COMMIT.fullmatch(self.commit)),
                 "commit must be a full lowercase hex git object id")
        _require(isinstance(self.workflow_path, str) and bool(_TOKEN.fullmatch(self.workflow_path)),
                 "bad workflow path")
        _require(isinstance(self.builder_id, str) and bool(_URI.fullmatch(self.builder_id)),
                 "builder id must be a URI")
        _require(isinstance(self.invocation_id, str) and bool(_TOKEN.fullmatch(self.invocation_id)),
                 "bad invocation id")
        _require(isinstance(self.source_date_epoch, int) and not isinstance(self.source_date_epoch, bool)
                 and 315532800 <= self.source_date_epoch < 2**32,
                 "SOURCE_DATE_EPOCH out of range (zip cannot store times before 1980)")
        for when in (self.started_on, self.finished_on):
            _require(isinstance(when, dt.datetime) and when.tzinfo is not None,
                     "start/finish times must be timezone-aware")
        _require(self.finished_on >= self.started_on, "build finished before it started")
        for pairs in (self.tools, self.internal):
            _require(isinstance(pairs, tuple) and all(
                isinstance(p, tuple) and len(p) == 2 and all(isinstance(x, str) and x for x in p)
                for p in pairs), "tools/internal must be (name, value) string pairs")

    @property
    def source_uri(self) -> str:
        """``git+REPO@REF`` -- the resolvedDependencies entry for the source."""
        return f"git+{self.repository}@{self.ref}"


def rfc3339(when: dt.datetime) -> str:
    """UTC, second precision, ``Z`` suffix -- the form SLSA examples use."""
    return when.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def make_statement(
    subjects: Sequence[Subject],
    facts: BuildFacts,
    *,
    dependencies: Sequence[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    """The in-toto Statement v1 with an SLSA Provenance v1 predicate for ``subjects``.

    ``dependencies`` are further ``resolvedDependencies`` (SLSA ResourceDescriptors
    with a ``sha256`` digest), after the source and the tools: the pinned inputs an
    image was assembled from.
    """
    _require(0 < len(subjects) <= MAX_SUBJECTS, "a statement needs 1..64 subjects")
    _require(all(isinstance(s, Subject) for s in subjects), "subjects must be Subject objects")
    names = [s.name for s in subjects]
    _require(len(set(names)) == len(names), "duplicate subject name")
    resolved: list[dict[str, Any]] = [
        {"uri": facts.source_uri, "digest": {"gitCommit": facts.commit}},
    ]
    resolved.extend({"uri": f"pkg:pypi/{name}@{version}"} for name, version in facts.tools)
    for dep in dependencies:
        uri = dep.get("uri") if isinstance(dep, Mapping) else None
        digest = dep.get("digest") if isinstance(dep, Mapping) else None
        _require(isinstance(uri, str) and bool(_TOKEN.fullmatch(uri)), "a resolved dependency needs a URI")
        _require(isinstance(digest, Mapping) and bool(_HEX64.fullmatch(str(digest.get("sha256", "")))),
                 "a resolved dependency needs a sha256 digest")
        resolved.append(dict(dep))
    return {
        "_type": STATEMENT_TYPE,
        "subject": [s.to_dict() for s in subjects],
        "predicateType": SLSA_PROVENANCE_V1,
        "predicate": {
            "buildDefinition": {
                "buildType": BUILD_TYPE,
                "externalParameters": {
                    "workflow": {
                        "repository": facts.repository,
                        "ref": facts.ref,
                        "path": facts.workflow_path,
                    },
                },
                "internalParameters": {
                    "sourceDateEpoch": facts.source_date_epoch,
                    **dict(facts.internal),
                },
                "resolvedDependencies": resolved,
            },
            "runDetails": {
                "builder": {"id": facts.builder_id},
                "metadata": {
                    "invocationId": facts.invocation_id,
                    "startedOn": rfc3339(facts.started_on),
                    "finishedOn": rfc3339(facts.finished_on),
                },
            },
        },
    }


def dump(doc: Mapping[str, Any]) -> bytes:
    """Canonical-enough JSON bytes: sorted keys, two-space indent, trailing newline."""
    return (json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=True) + "\n").encode("ascii")


def parse_statement(data: bytes) -> dict[str, Any]:
    """Read a Statement back, checking the type fields and subjects; bounded.

    Used before signing: kedge signs only a Statement of the kinds it writes.
    """
    if len(data) > MAX_STATEMENT_BYTES:
        raise VerificationError("statement too large", code="limit_exceeded")
    def no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        out = dict(pairs)
        if len(out) != len(pairs):
            raise ValueError("duplicate key")  # two readers could see two different statements
        return out

    try:
        doc = json.loads(data, object_pairs_hook=no_duplicate_keys)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise VerificationError("statement is not JSON", code="malformed_statement") from exc
    if not isinstance(doc, dict) or doc.get("_type") != STATEMENT_TYPE:
        raise VerificationError("not an in-toto Statement v1", code="malformed_statement")
    if doc.get("predicateType") != SLSA_PROVENANCE_V1 or not isinstance(doc.get("predicate"), dict):
        raise VerificationError("not an SLSA Provenance v1 statement", code="malformed_statement")
    subjects = doc.get("subject")
    if not isinstance(subjects, list) or not 0 < len(subjects) <= MAX_SUBJECTS:
        raise VerificationError("statement has no subjects", code="malformed_statement")
    names: set[str] = set()
    for entry in subjects:
        if not isinstance(entry, dict) or not isinstance(entry.get("digest"), dict) or \
                not isinstance(entry.get("name"), str):  # an unhashable name would crash the set below
            raise VerificationError("malformed subject", code="malformed_statement")
        if entry.get("name") in names:
            raise VerificationError("two subjects share a name", code="malformed_statement")
        names.add(entry.get("name"))
        try:
            Subject(entry.get("name"), entry["digest"].get("sha256"))  # type: ignore[arg-type]
        except ConfigError as exc:
            raise VerificationError("malformed subject", code="malformed_statement") from exc
    return doc


def subject_digests(doc: Mapping[str, Any]) -> dict[str, str]:
    """``{name: sha256}`` of an already parsed Statement."""
    return {s["name"]: s["digest"]["sha256"] for s in doc["subject"]}
