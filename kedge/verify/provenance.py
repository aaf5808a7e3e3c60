"""In-toto statements and the provenance facts kedge's policy reads from them.

Pure: bytes in, frozen objects out. Knows three predicate shapes -- SLSA
provenance v0.2 (slsa-github-generator), SLSA provenance v1 (generator v1 and
GitHub artifact attestations) and the PyPI publish attestation of PEP 740 -- and
refuses everything else with ``predicate_type_invalid``. Missing or mistyped
fields raise ``provenance_malformed``; nothing is defaulted silently.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from kedge.errors import VerificationError
from kedge.verify import _json
from kedge.verify._limits import DEFAULT, VerifyLimits

STATEMENT_V01 = "https://in-toto.io/Statement/v0.1"
STATEMENT_V1 = "https://in-toto.io/Statement/v1"
SLSA_V02 = "https://slsa.dev/provenance/v0.2"
SLSA_V1 = "https://slsa.dev/provenance/v1"
PYPI_PUBLISH_V1 = "https://docs.pypi.org/attestations/publish/v1"

KIND_SLSA_V02 = "slsa-v0.2"
KIND_SLSA_V1 = "slsa-v1"
KIND_PYPI_PUBLISH = "pypi-publish-v1"

_HEX = re.compile(r"[0-9a-f]+")


def _malformed(msg: str) -> VerificationError:
    return VerificationError(msg, code="provenance_malformed")


@dataclasses.dataclass(frozen=True)
class Subject:
    """One in-toto subject: a name and its digests (algorithm -> lowercase hex)."""

    name: str
    digests: tuple[tuple[str, str], ...]

    def digest(self, algorithm: str) -> str | None:
        for alg, value in self.digests:
            if alg == algorithm:
                return value
        return None


@dataclasses.dataclass(frozen=True)
class Statement:
    """A decoded in-toto statement; ``predicate`` kept as decoded JSON (may be None)."""

    statement_type: str
    predicate_type: str
    subjects: tuple[Subject, ...]
    predicate: Any

    def __post_init__(self) -> None:
        if self.statement_type not in (STATEMENT_V01, STATEMENT_V1):
            raise VerificationError(
                f"unknown in-toto statement type {self.statement_type[:100]!r}", code="statement_type_invalid"
            )
        if not self.subjects:
            raise _malformed("statement has no subjects")

    @classmethod
    def from_payload(cls, payload: bytes, limits: VerifyLimits = DEFAULT) -> Statement:
        doc = _json.loads(payload, limits, max_bytes=limits.max_payload_bytes)
        if not isinstance(doc, dict):
            raise _malformed("statement is not a JSON object")
        stype = doc.get("_type")
        ptype = doc.get("predicateType")
        raw_subjects = doc.get("subject")
        if not isinstance(stype, str) or not isinstance(ptype, str):
            raise _malformed("statement lacks _type or predicateType")
        if not isinstance(raw_subjects, list):
            raise _malformed("statement subject is not a list")
        if len(raw_subjects) > limits.max_subjects:
            raise VerificationError("too many subjects", code="limit_exceeded")
        subjects = []
        for raw in raw_subjects:
            if not isinstance(raw, dict):
                raise _malformed("subject is not an object")
            name = raw.get("name", "")
            digest = raw.get("digest")
            if not isinstance(name, str) or not isinstance(digest, dict):
                raise _malformed("subject lacks name or digest")
            pairs = []
            for alg, value in digest.items():
                if not isinstance(value, str):
                    raise _malformed("subject digest value is not a string")
                pairs.append((alg, value.lower()))
            subjects.append(Subject(name=name, digests=tuple(pairs)))
        return cls(
            statement_type=stype,
            predicate_type=ptype,
            subjects=tuple(subjects),
            predicate=doc.get("predicate"),
        )

    def has_sha256(self, hex_digest: str) -> bool:
        return any(s.digest("sha256") == hex_digest for s in self.subjects)


@dataclasses.dataclass(frozen=True)
class ProvenanceFacts:
    """What the policy compares: builder, build type, source repo/ref/commit, inputs.

    ``trigger_uri`` / ``material_uri`` are ``git+https://github.com/o/r@ref`` as the
    predicate records them; ``commit`` the source commit (hex). For the PyPI
    publish predicate all but ``kind`` are empty: the certificate is the source.
    """

    kind: str
    builder_id: str
    build_type: str
    trigger_uri: str
    material_uri: str
    commit: str
    base_ref: str
    workflow_inputs: Any


def _get(obj: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj


def _str(obj: Any, what: str) -> str:
    if not isinstance(obj, str) or not obj:
        raise _malformed(f"provenance {what} missing or not a string")
    return obj


def facts_from_statement(stmt: Statement) -> ProvenanceFacts:
    """Extract :class:`ProvenanceFacts`; unknown predicate types are refused."""
    pred = stmt.predicate
    if stmt.predicate_type == SLSA_V02:
        if not isinstance(pred, dict):
            raise _malformed("predicate is not an object")
        materials = pred.get("materials")
        material = materials[0] if isinstance(materials, list) and materials else {}
        commit = _get(pred, "invocation", "configSource", "digest", "sha1")
        return ProvenanceFacts(
            kind=KIND_SLSA_V02,
            builder_id=_str(_get(pred, "builder", "id"), "builder.id"),
            build_type=_str(pred.get("buildType"), "buildType"),
            trigger_uri=_str(_get(pred, "invocation", "configSource", "uri"), "configSource.uri"),
            material_uri=_str(_get(material, "uri"), "materials[0].uri"),
            commit=_str(commit, "configSource.digest.sha1").lower(),
            base_ref=_get(pred, "invocation", "environment", "github_event_payload", "base_ref") or "",
            workflow_inputs=_get(pred, "invocation", "environment", "github_event_payload", "inputs"),
        )
    if stmt.predicate_type == SLSA_V1:
        if not isinstance(pred, dict):
            raise _malformed("predicate is not an object")
        workflow = _get(pred, "buildDefinition", "externalParameters", "workflow")
        repo = _str(_get(workflow, "repository"), "externalParameters.workflow.repository")
        ref = _str(_get(workflow, "ref"), "externalParameters.workflow.ref")
        deps = _get(pred, "buildDefinition", "resolvedDependencies")
        dep = deps[0] if isinstance(deps, list) and deps else {}
        commit = _get(dep, "digest", "gitCommit") or _get(dep, "digest", "sha1")
        inputs = _get(pred, "buildDefinition", "externalParameters", "inputs")
        return ProvenanceFacts(
            kind=KIND_SLSA_V1,
            builder_id=_str(_get(pred, "runDetails", "builder", "id"), "runDetails.builder.id"),
            build_type=_str(_get(pred, "buildDefinition", "buildType"), "buildType"),
            trigger_uri=f"git+{repo}@{ref}",
            material_uri=_str(_get(dep, "uri"), "resolvedDependencies[0].uri"),
            commit=_str(commit, "resolvedDependencies[0].digest.gitCommit").lower(),
            base_ref="",
            workflow_inputs=inputs,
        )
    if stmt.predicate_type == PYPI_PUBLISH_V1:
        return ProvenanceFacts(
            kind=KIND_PYPI_PUBLISH,
            builder_id="",
            build_type="",
            trigger_uri="",
            material_uri="",
            commit="",
            base_ref="",
            workflow_inputs=None,
        )
    raise VerificationError(
        f"unsupported predicate type {stmt.predicate_type[:100]!r}", code="predicate_type_invalid"
    )


def split_git_uri(uri: str) -> tuple[str, str]:
    """``git+https://github.com/o/r@refs/x`` -> (``https://github.com/o/r``, ``refs/x``)."""
    rest = uri[len("git+") :] if uri.startswith("git+") else uri
    repo, sep, ref = rest.partition("@")
    return repo, (ref if sep else "")
