"""SLSA policy decisions on synthetic identities and statements (pure, no signatures)."""

from __future__ import annotations

import dataclasses
import json

import pytest

from kedge.errors import VerificationError
from kedge.verify import policy
from kedge.verify.fulcio import GITHUB_ACTIONS_ISSUER, CertIdentity
from kedge.verify.provenance import Statement

DIGEST = "ab" * 32
REPO = "https://github.com/acme/widget"
GENERIC = "https://github.com/slsa-framework/slsa-github-generator/.github/workflows/generator_generic_slsa3.yml"
COMMIT = "cd" * 20


def _identity(**overrides: str) -> CertIdentity:
    base = dict(
        issuer=GITHUB_ACTIONS_ISSUER,
        san_uri=GENERIC + "@refs/tags/v2.1.0",
        build_signer_uri=GENERIC + "@refs/tags/v2.1.0",
        build_signer_digest="",
        runner_environment="github-hosted",
        source_repository_uri=REPO,
        source_repository_digest=COMMIT,
        source_repository_ref="refs/tags/v1.4.2",
        build_config_uri=REPO + "/.github/workflows/release.yml@refs/tags/v1.4.2",
        build_trigger="push",
    )
    base.update(overrides)
    return CertIdentity(**base)


def _v02(ref: str = "refs/tags/v1.4.2", builder: str = GENERIC + "@refs/tags/v2.1.0", **env: object) -> Statement:
    doc = {
        "_type": "https://in-toto.io/Statement/v0.1",
        "predicateType": "https://slsa.dev/provenance/v0.2",
        "subject": [{"name": "widget", "digest": {"sha256": DIGEST}}],
        "predicate": {
            "builder": {"id": builder},
            "buildType": "https://github.com/slsa-framework/slsa-github-generator/generic@v1",
            "invocation": {
                "configSource": {"uri": f"git+{REPO}@{ref}", "digest": {"sha1": COMMIT}},
                "environment": {"github_event_payload": env},
            },
            "materials": [{"uri": f"git+{REPO}@{ref}", "digest": {"sha1": COMMIT}}],
        },
    }
    return Statement.from_payload(json.dumps(doc).encode())


def _opts(**kw: object) -> policy.SlsaOptions:
    return policy.SlsaOptions(artifact_sha256=DIGEST, source_uri="github.com/acme/widget", **kw)  # type: ignore[arg-type]


def _code(fn) -> str:  # type: ignore[no-untyped-def]
    with pytest.raises(VerificationError) as info:
        fn()
    return info.value.code


def test_trusted_builder_at_release_tag_passes() -> None:
    res = policy.evaluate(_identity(), "application/vnd.in-toto+json", _v02(), _opts(source_tag="v1.4.2"))
    assert res.builder_id == GENERIC + "@refs/tags/v2.1.0"
    assert res.source_ref == "refs/tags/v1.4.2"
    assert res.source_commit == COMMIT


def test_non_github_issuer_is_refused() -> None:
    ident = _identity(issuer="https://accounts.google.com")
    assert _code(lambda: policy.evaluate(ident, "application/vnd.in-toto+json", _v02(), _opts())) == "oidc_issuer_mismatch"


def test_self_hosted_runner_is_refused() -> None:
    ident = _identity(runner_environment="self-hosted")
    assert _code(lambda: policy.evaluate(ident, "application/vnd.in-toto+json", _v02(), _opts())) == "runner_not_hosted"


def test_untrusted_reusable_workflow_is_refused_without_builder_id() -> None:
    evil = "https://github.com/evil/gen/.github/workflows/generator_generic_slsa3.yml@refs/tags/v2.1.0"
    ident = _identity(build_signer_uri=evil)
    assert _code(lambda: policy.evaluate(ident, "application/vnd.in-toto+json", _v02(builder=evil), _opts())) == "untrusted_builder"


def test_trusted_builder_at_branch_is_refused() -> None:
    ident = _identity(build_signer_uri=GENERIC + "@refs/heads/main")
    stmt = _v02(builder=GENERIC + "@refs/heads/main")
    assert _code(lambda: policy.evaluate(ident, "application/vnd.in-toto+json", stmt, _opts())) == "builder_ref_invalid"


@pytest.mark.parametrize("ref", ["refs/tags/v2.1.0-rc.1", "refs/tags/v2.1", "refs/tags/2.1.0", "refs/tags/v2.1.0+meta"])
def test_builder_must_be_pinned_to_plain_semver(ref: str) -> None:
    ident = _identity(build_signer_uri=GENERIC + "@" + ref)
    stmt = _v02(builder=GENERIC + "@" + ref)
    assert _code(lambda: policy.evaluate(ident, "application/vnd.in-toto+json", stmt, _opts())) == "builder_ref_invalid"


def test_provenance_builder_must_equal_certificate_builder() -> None:
    stmt = _v02(builder=GENERIC + "@refs/tags/v2.0.0")
    assert _code(lambda: policy.evaluate(_identity(), "application/vnd.in-toto+json", stmt, _opts())) == "builder_id_mismatch"


def test_provenance_ref_must_match_certificate_ref() -> None:
    stmt = _v02(ref="refs/tags/v9.9.9")
    assert _code(lambda: policy.evaluate(_identity(), "application/vnd.in-toto+json", stmt, _opts())) == "source_inconsistent"


def test_provenance_commit_must_match_certificate_commit() -> None:
    ident = _identity(source_repository_digest="ef" * 20)
    assert _code(lambda: policy.evaluate(ident, "application/vnd.in-toto+json", _v02(), _opts())) == "source_inconsistent"


def test_certificate_source_must_match_requested_source() -> None:
    ident = _identity(source_repository_uri="https://github.com/acme/widget-fork")
    assert _code(lambda: policy.evaluate(ident, "application/vnd.in-toto+json", _v02(), _opts())) == "source_mismatch"


def test_wrong_payload_type_is_refused() -> None:
    assert _code(lambda: policy.evaluate(_identity(), "text/plain", _v02(), _opts())) == "payload_type_invalid"


def test_unknown_predicate_type_is_refused() -> None:
    doc = {"_type": "https://in-toto.io/Statement/v1", "predicateType": "https://example.com/x",
           "subject": [{"name": "a", "digest": {"sha256": DIGEST}}], "predicate": {}}
    stmt = Statement.from_payload(json.dumps(doc).encode())
    assert _code(lambda: policy.evaluate(_identity(), "application/vnd.in-toto+json", stmt, _opts())) == "predicate_type_invalid"


def test_artifact_not_among_subjects_is_refused() -> None:
    opts = dataclasses.replace(_opts(), artifact_sha256="00" * 32)
    assert _code(lambda: policy.evaluate(_identity(), "application/vnd.in-toto+json", _v02(), opts)) == "digest_mismatch"


def test_branch_of_a_tag_build_comes_from_base_ref() -> None:
    stmt = _v02(base_ref="refs/heads/release")
    policy.evaluate(_identity(), "application/vnd.in-toto+json", stmt, _opts(source_branch="release"))
    assert _code(lambda: policy.evaluate(_identity(), "application/vnd.in-toto+json", _v02(), _opts(source_branch="main"))) == "branch_mismatch"


@pytest.mark.parametrize(
    ("tag", "expected", "ok"),
    [
        ("v1.4.2", "v1", True),
        ("v1.4.2", "v1.4", True),
        ("v1.4.2", "v1.4.2", True),
        ("v1.4.2", "v2", False),
        ("v1.4.2", "v1.5", False),
        ("v1.4.2", "v1.4.3", False),
        ("v1.4.2-rc.1", "v1.4.2", False),
        ("v1.4.2+build.7", "v1.4.2", True),
        ("v14.2", "v14", True),
        ("release-1", "v1", False),
    ],
)
def test_versioned_tag_semantics(tag: str, expected: str, ok: bool) -> None:
    ident = _identity(source_repository_ref=f"refs/tags/{tag}")
    stmt = _v02(ref=f"refs/tags/{tag}")
    run = lambda: policy.evaluate(ident, "application/vnd.in-toto+json", stmt, _opts(source_versioned_tag=expected))  # noqa: E731
    if ok:
        run()
    else:
        assert _code(run) == "versioned_tag_mismatch"


def test_workflow_inputs_must_match_exactly() -> None:
    stmt = _v02(inputs={"release": "true", "n": 3})
    policy.evaluate(_identity(), "application/vnd.in-toto+json", stmt, _opts(workflow_inputs=(("release", "true"),)))
    for wanted in ((("release", "false"),), (("missing", "x"),), (("n", "3"),)):
        assert _code(
            lambda wanted=wanted: policy.evaluate(_identity(), "application/vnd.in-toto+json", stmt,
                                                  _opts(workflow_inputs=wanted))
        ) == "workflow_input_mismatch"


@pytest.mark.parametrize(
    ("actual", "expected", "ok"),
    [
        ("https://github.com/o/r/.github/workflows/b.yml@refs/tags/v1.2.3", "https://github.com/o/r/.github/workflows/b.yml", True),
        ("https://github.com/o/r/.github/workflows/b.yml@refs/tags/v1.2.3", "https://github.com/o/r/.github/workflows/b.yml@v1.2.3", True),
        ("https://github.com/o/r/.github/workflows/b.yml@refs/tags/v1.2.3", "https://github.com/o/r/.github/workflows/b.yml@refs/tags/v1.2.3", True),
        ("https://github.com/o/r/.github/workflows/b.yml@refs/tags/v1.2.3", "https://github.com/o/r/.github/workflows/b.yml@v1.2.4", False),
        ("https://github.com/o/r/.github/workflows/b.yml@refs/tags/v1.2.3", "https://github.com/o/r/.github/workflows/b.y", False),
        ("https://github.com/o/r/.github/workflows/b.yml@refs/tags/v1.2.3", "", False),
    ],
)
def test_builder_id_matching(actual: str, expected: str, ok: bool) -> None:
    assert policy.builder_matches(actual, expected) is ok


@pytest.mark.parametrize(
    ("given", "normal"),
    [
        ("github.com/o/r", "https://github.com/o/r"),
        ("https://github.com/o/r", "https://github.com/o/r"),
        ("git+https://github.com/o/r", "https://github.com/o/r"),
    ],
)
def test_source_uri_normalisation(given: str, normal: str) -> None:
    assert policy.normalize_source_uri(given) == normal


@pytest.mark.parametrize("bad", ["gitlab.com/o/r", "github.com/o", "github.com/o/r/extra", "github.com/o/r@main", "github.com/o/r/"])
def test_bad_source_uris_are_refused(bad: str) -> None:
    with pytest.raises(VerificationError):
        policy.normalize_source_uri(bad)


def test_options_are_validated_on_construction() -> None:
    with pytest.raises(ValueError):
        policy.SlsaOptions(artifact_sha256="xyz", source_uri="github.com/o/r")
    with pytest.raises(ValueError):
        policy.SlsaOptions(artifact_sha256=DIGEST, source_uri="github.com/o/r", source_tag="a", source_branch="b")
    with pytest.raises(ValueError):
        policy.SlsaOptions(artifact_sha256=DIGEST, source_uri="github.com/o/r", source_versioned_tag="one")


def test_key_mode_checks_provenance_builder_when_asked() -> None:
    stmt = _v02()
    res = policy.evaluate(None, "application/vnd.in-toto+json", stmt, _opts(builder_id=GENERIC))
    assert res.signer == "key"
    assert _code(lambda: policy.evaluate(None, "application/vnd.in-toto+json", stmt, _opts(builder_id=GENERIC + "x"))) == "untrusted_builder"


def test_pypi_publish_attestation_needs_the_repositorys_own_workflow() -> None:
    doc = {"_type": "https://in-toto.io/Statement/v1", "predicateType": "https://docs.pypi.org/attestations/publish/v1",
           "subject": [{"name": "w.whl", "digest": {"sha256": DIGEST}}], "predicate": None}
    stmt = Statement.from_payload(json.dumps(doc).encode())
    own = _identity(build_signer_uri=REPO + "/.github/workflows/release.yml@refs/tags/v1.4.2")
    pub = {"kind": "GitHub", "repository": "acme/widget", "workflow": "release.yml"}
    policy.evaluate(own, "application/vnd.in-toto+json", stmt, _opts(), publisher=pub)
    foreign = _identity(build_signer_uri="https://github.com/evil/x/.github/workflows/r.yml@refs/tags/v1.0.0")
    assert _code(lambda: policy.evaluate(foreign, "application/vnd.in-toto+json", stmt, _opts(), publisher=pub)) == "untrusted_builder"
    other_pub = dict(pub, workflow="other.yml")
    assert _code(lambda: policy.evaluate(own, "application/vnd.in-toto+json", stmt, _opts(), publisher=other_pub)) == "publisher_mismatch"
    assert _code(lambda: policy.evaluate(None, "application/vnd.in-toto+json", stmt, _opts())) == "predicate_type_invalid"
