"""slsa-verifier-compatible policy over a *signature-verified* provenance statement.

Pure: the certificate identity (or ``None`` for key-signed envelopes), the
statement and the user's expectations go in; a :class:`VerifiedProvenance` comes
out or a :class:`~kedge.errors.VerificationError` with a stable code is raised.
Every check fails closed: an absent field never counts as a match.

Rules follow slsa-verifier v2 (``verifiers/internal/gha``):
- the OIDC issuer must be GitHub Actions;
- without ``--builder-id`` only slsa-github-generator's trusted reusable
  workflows are accepted; with it, the certificate's Build Signer URI must have
  that name, and that version when given (``@v1.2.3`` matches ``@refs/tags/v1.2.3``);
- the builder must be pinned at a release tag ``refs/tags/vX.Y.Z``;
- the provenance builder id must equal the certificate's builder identity;
- the certificate's source repository must equal ``--source-uri``, and the
  provenance's trigger/material repository, ref and commit must agree with it;
- the artifact's SHA-256 must be one of the subjects;
- then the optional branch / tag / versioned-tag / workflow-input constraints.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from kedge.errors import VerificationError
from kedge.verify import provenance as prov
from kedge.verify.dsse import INTOTO_PAYLOAD_TYPE
from kedge.verify.fulcio import GITHUB_ACTIONS_ISSUER, CertIdentity

GITHUB = "https://github.com/"
TRUSTED_BUILDER_REPOSITORY = "slsa-framework/slsa-github-generator"
#: Reusable workflows slsa-verifier trusts for artifacts without --builder-id.
TRUSTED_ARTIFACT_BUILDERS = frozenset(
    GITHUB + TRUSTED_BUILDER_REPOSITORY + "/.github/workflows/" + name
    for name in (
        "generator_generic_slsa3.yml",
        "builder_go_slsa3.yml",
        "builder_docker-based_slsa3.yml",
        "builder_container-based_slsa3.yml",
    )
)

_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_SEMVER = re.compile(
    r"v(0|[1-9]\d*)(?:\.(0|[1-9]\d*)(?:\.(0|[1-9]\d*)"
    r"(?:-([0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?"
    r"(?:\+([0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?)?)?"
)
_MAX_OPTION = 1024


def _fail(code: str, msg: str) -> VerificationError:
    return VerificationError(msg, code=code)


def normalize_source_uri(uri: str) -> str:
    """``github.com/o/r`` / ``https://…`` / ``git+https://…`` -> ``https://github.com/o/r``."""
    value = uri.strip()
    if value.startswith("git+"):
        value = value[4:]
    if not value.startswith("https://"):
        value = "https://" + value
    if not value.startswith(GITHUB) or value.count("/") != 4 or "@" in value or value.endswith("/"):
        raise _fail("source_uri_invalid", f"expected a github.com/OWNER/REPO source URI, got {uri[:200]!r}")
    return value


@dataclasses.dataclass(frozen=True)
class SlsaOptions:
    """What the user asks for on the command line (validated on construction)."""

    artifact_sha256: str
    source_uri: str
    source_branch: str | None = None
    source_tag: str | None = None
    source_versioned_tag: str | None = None
    builder_id: str | None = None
    workflow_inputs: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if not _SHA256_HEX.fullmatch(self.artifact_sha256):
            raise ValueError("artifact_sha256 must be 64 lowercase hex characters")
        object.__setattr__(self, "source_uri", normalize_source_uri(self.source_uri))
        chosen = [x for x in (self.source_branch, self.source_tag, self.source_versioned_tag) if x is not None]
        if len(chosen) > 1:
            raise ValueError("--source-branch, --source-tag and --source-versioned-tag are exclusive")
        for value in (*chosen, self.builder_id or ""):
            if len(value) > _MAX_OPTION:
                raise ValueError("option value too long")
        if self.source_versioned_tag is not None and not _SEMVER.fullmatch(self.source_versioned_tag):
            raise ValueError("--source-versioned-tag must be a semantic version like v1, v1.2 or v1.2.3")


@dataclasses.dataclass(frozen=True)
class VerifiedProvenance:
    """The result of a passing verification (what ``--json`` reports)."""

    builder_id: str
    source_uri: str
    source_ref: str
    source_commit: str
    predicate_type: str
    build_type: str
    subjects: tuple[str, ...]
    signer: str


# --- builder identity -------------------------------------------------------


def _split_builder(builder: str) -> tuple[str, str]:
    name, sep, ref = builder.partition("@")
    return name, (ref if sep else "")


def builder_matches(actual: str, expected: str) -> bool:
    """``expected`` (``name`` or ``name@vX`` / ``name@refs/tags/vX``) vs ``actual`` ``name@ref``."""
    a_name, a_ref = _split_builder(actual)
    e_name, e_ref = _split_builder(expected)
    if a_name != e_name or not e_name:
        return False
    if not e_ref:
        return True
    return e_ref == a_ref or "refs/tags/" + e_ref == a_ref


def _is_release_tag(ref: str) -> bool:
    if not ref.startswith("refs/tags/"):
        return False
    m = _SEMVER.fullmatch(ref[len("refs/tags/") :])
    return bool(m and m.group(3) is not None and m.group(4) is None and m.group(5) is None)


def check_issuer(identity: CertIdentity) -> None:
    """GitHub Actions OIDC issuer, on a GitHub-hosted runner.

    A self-hosted runner is controlled by the repository owner, so its build is
    not isolated from them (no SLSA Build L3); certificates from before Fulcio
    recorded the runner environment carry none and are accepted.
    """
    if identity.issuer != GITHUB_ACTIONS_ISSUER:
        raise _fail("oidc_issuer_mismatch", f"certificate issuer {identity.issuer[:200]!r} is not GitHub Actions")
    if identity.runner_environment not in ("", "github-hosted"):
        raise _fail(
            "runner_not_hosted", f"built on a {identity.runner_environment[:50]!r} runner, not a GitHub-hosted one"
        )


def check_builder_identity(identity: CertIdentity, expected_builder: str | None) -> str:
    """Return the trusted builder id (``https://github.com/…@refs/tags/vX.Y.Z``)."""
    check_issuer(identity)
    signer = identity.build_signer_uri
    name, ref = _split_builder(signer)
    if not name.startswith(GITHUB) or not ref:
        raise _fail("certificate_malformed", "certificate has no GitHub workflow identity")
    if expected_builder:
        if not builder_matches(signer, expected_builder):
            raise _fail("untrusted_builder", f"certificate builder {signer[:300]!r} is not {expected_builder[:300]!r}")
    elif name not in TRUSTED_ARTIFACT_BUILDERS:
        raise _fail("untrusted_builder", f"certificate builder {name[:300]!r} is not a trusted builder")
    if not _is_release_tag(ref):
        raise _fail("builder_ref_invalid", f"builder ref {ref[:200]!r} is not a release tag vX.Y.Z")
    return signer


# --- source -------------------------------------------------------------------


def _check_source(identity: CertIdentity | None, facts: prov.ProvenanceFacts, source: str) -> tuple[str, str]:
    """Source repository checks; returns (ref, commit)."""
    if identity is not None and identity.source_repository_uri != source:
        raise _fail(
            "source_mismatch",
            f"certificate source {identity.source_repository_uri[:200]!r} is not {source!r}",
        )
    if facts.kind == prov.KIND_PYPI_PUBLISH:
        if identity is None:  # evaluate() refuses this earlier; kept so the check cannot be skipped
            raise _fail("predicate_type_invalid", "a PyPI publish attestation needs a Sigstore certificate")
        return identity.source_repository_ref, identity.source_repository_digest
    trig_repo, trig_ref = prov.split_git_uri(facts.trigger_uri)
    mat_repo, mat_ref = prov.split_git_uri(facts.material_uri)
    if trig_repo != source:
        raise _fail("source_mismatch", f"provenance trigger {facts.trigger_uri[:200]!r} is not {source!r}")
    if mat_repo != source:
        raise _fail("source_mismatch", f"provenance source {facts.material_uri[:200]!r} is not {source!r}")
    if not trig_ref or not mat_ref:
        raise _fail("provenance_malformed", "provenance source has no ref")
    if facts.trigger_uri.removeprefix("git+") != facts.material_uri.removeprefix("git+"):
        raise _fail("source_inconsistent", "provenance trigger and source URIs differ")
    if identity is not None:
        if identity.source_repository_ref != trig_ref:
            raise _fail(
                "source_inconsistent",
                f"provenance ref {trig_ref[:200]!r} differs from certificate ref "
                f"{identity.source_repository_ref[:200]!r}",
            )
        if identity.source_repository_digest.lower() != facts.commit:
            raise _fail("source_inconsistent", "provenance commit differs from the certificate's")
    return trig_ref, facts.commit


def _branch_of(ref: str, facts: prov.ProvenanceFacts) -> str | None:
    if ref.startswith("refs/heads/"):
        return ref[len("refs/heads/") :]
    if ref.startswith("refs/tags/") and isinstance(facts.base_ref, str) and facts.base_ref.startswith("refs/heads/"):
        return facts.base_ref[len("refs/heads/") :]
    return None


def _versioned_tag_matches(tag: str, expected: str) -> bool:
    t = _SEMVER.fullmatch(tag)
    e = _SEMVER.fullmatch(expected)
    if not t or not e:
        return False
    t_parts = [int(t.group(i) or 0) for i in (1, 2, 3)]
    if int(e.group(1)) != t_parts[0]:
        return False
    if e.group(2) is not None and int(e.group(2)) != t_parts[1]:
        return False
    if e.group(3) is not None:
        if int(e.group(3)) != t_parts[2] or (e.group(4) or "") != (t.group(4) or ""):
            return False
    return True


def _check_ref_constraints(ref: str, facts: prov.ProvenanceFacts, opts: SlsaOptions) -> None:
    if opts.source_branch is not None:
        branch = _branch_of(ref, facts)
        if branch != opts.source_branch:
            raise _fail("branch_mismatch", f"expected branch {opts.source_branch!r}, built from {ref[:200]!r}")
    if opts.source_tag is not None:
        if ref != "refs/tags/" + opts.source_tag:
            raise _fail("tag_mismatch", f"expected tag {opts.source_tag!r}, built from {ref[:200]!r}")
    if opts.source_versioned_tag is not None:
        tag = ref[len("refs/tags/") :] if ref.startswith("refs/tags/") else ""
        if not _versioned_tag_matches(tag, opts.source_versioned_tag):
            raise _fail(
                "versioned_tag_mismatch",
                f"expected a tag matching {opts.source_versioned_tag!r}, built from {ref[:200]!r}",
            )


def _check_inputs(facts: prov.ProvenanceFacts, wanted: tuple[tuple[str, str], ...]) -> None:
    if not wanted:
        return
    inputs: Any = facts.workflow_inputs
    for key, value in wanted:
        got = inputs.get(key) if isinstance(inputs, dict) else None
        if not isinstance(got, str) or got != value:
            raise _fail("workflow_input_mismatch", f"workflow input {key[:100]!r} is not {value[:200]!r}")


# --- the whole policy ---------------------------------------------------------


def check_statement_header(payload_type: str, stmt: prov.Statement) -> prov.ProvenanceFacts:
    if payload_type != INTOTO_PAYLOAD_TYPE:
        raise _fail("payload_type_invalid", f"DSSE payload type {payload_type[:100]!r} is not in-toto")
    return prov.facts_from_statement(stmt)


def evaluate(
    identity: CertIdentity | None,
    payload_type: str,
    stmt: prov.Statement,
    opts: SlsaOptions,
    *,
    publisher: dict[str, Any] | None = None,
) -> VerifiedProvenance:
    """Apply the SLSA policy. ``identity`` is None only for ``--key`` envelopes."""
    facts = check_statement_header(payload_type, stmt)
    source = opts.source_uri
    if identity is None:
        if facts.kind == prov.KIND_PYPI_PUBLISH:
            raise _fail("predicate_type_invalid", "a PyPI publish attestation needs a Sigstore certificate")
        if opts.builder_id and not builder_matches(facts.builder_id, opts.builder_id):
            raise _fail("untrusted_builder", f"provenance builder {facts.builder_id[:300]!r} is not {opts.builder_id!r}")
        builder = facts.builder_id
    elif facts.kind == prov.KIND_PYPI_PUBLISH:
        check_issuer(identity)
        if identity.source_repository_uri != source:
            raise _fail(
                "source_mismatch",
                f"certificate source {identity.source_repository_uri[:200]!r} is not {source!r}",
            )
        builder = identity.build_signer_uri
        if opts.builder_id:
            if not builder_matches(builder, opts.builder_id):
                raise _fail("untrusted_builder", f"certificate builder {builder[:300]!r} is not {opts.builder_id!r}")
        elif not builder.startswith(source + "/.github/workflows/"):
            raise _fail("untrusted_builder", f"publisher workflow {builder[:300]!r} is not in {source!r}")
        _check_publisher(identity, publisher)
    else:
        builder = check_builder_identity(identity, opts.builder_id)
        if facts.builder_id != builder:
            raise _fail(
                "builder_id_mismatch",
                f"provenance builder {facts.builder_id[:300]!r} differs from the certificate's {builder[:300]!r}",
            )
    ref, commit = _check_source(identity, facts, source)
    if not stmt.has_sha256(opts.artifact_sha256):
        raise _fail("digest_mismatch", f"artifact sha256:{opts.artifact_sha256} is not a subject of the provenance")
    _check_ref_constraints(ref, facts, opts)
    _check_inputs(facts, opts.workflow_inputs)
    return VerifiedProvenance(
        builder_id=builder,
        source_uri=source,
        source_ref=ref,
        source_commit=commit,
        predicate_type=stmt.predicate_type,
        build_type=facts.build_type,
        subjects=tuple(s.name for s in stmt.subjects),
        signer=identity.san_uri if identity is not None else "key",
    )


def _check_publisher(identity: CertIdentity, publisher: dict[str, Any] | None) -> None:
    """PEP 740: the attestation's GitHub Trusted Publisher must be the certificate's."""
    if publisher is None:
        return
    if publisher.get("kind") != "GitHub":
        raise _fail("publisher_mismatch", "only GitHub Trusted Publishers are supported")
    repo = publisher.get("repository")
    workflow = publisher.get("workflow")
    if not isinstance(repo, str) or not isinstance(workflow, str):
        raise _fail("publisher_mismatch", "publisher lacks repository or workflow")
    if identity.source_repository_uri != GITHUB + repo:
        raise _fail("publisher_mismatch", "publisher repository differs from the certificate's")
    config = identity.build_config_uri or identity.build_signer_uri
    if not config.startswith(f"{GITHUB}{repo}/.github/workflows/{workflow}@"):
        raise _fail("publisher_mismatch", "publisher workflow differs from the certificate's")
