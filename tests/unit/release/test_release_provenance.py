"""The provenance document: shape a slsa-verifier style reader expects, strict inputs."""

import dataclasses
import datetime as dt
import json

import pytest

from kedge.errors import ConfigError, VerificationError
from kedge.release import provenance as p

T0 = dt.datetime(2026, 11, 27, 12, 0, 0, tzinfo=dt.timezone.utc)
COMMIT = "0123456789abcdef0123456789abcdef01234567"
DIGEST = "ab" * 32


def facts(**over):
    base = dict(
        repository="https://github.com/kedge/kedge",
        ref="refs/tags/v0.1.0",
        commit=COMMIT,
        workflow_path=".github/workflows/release.yml",
        builder_id="https://github.com/kedge/kedge/.github/workflows/_build-sign.yml@refs/tags/v0.1.0",
        invocation_id="https://github.com/kedge/kedge/actions/runs/1/attempts/1",
        source_date_epoch=1_700_000_000,
        started_on=T0,
        finished_on=T0 + dt.timedelta(seconds=3),
        tools=(("hatchling", "1.27.0"),),
    )
    base.update(over)
    return p.BuildFacts(**base)


def test_statement_has_every_field_the_issue_names():
    stmt = p.make_statement([p.Subject("kedge-0.1.0.tar.gz", DIGEST)], facts())
    assert stmt["_type"] == "https://in-toto.io/Statement/v1"
    assert stmt["predicateType"] == "https://slsa.dev/provenance/v1"
    assert stmt["subject"] == [{"name": "kedge-0.1.0.tar.gz", "digest": {"sha256": DIGEST}}]
    bd = stmt["predicate"]["buildDefinition"]
    assert bd["buildType"].startswith("https://kedge.dev/")
    assert bd["externalParameters"]["workflow"] == {
        "repository": "https://github.com/kedge/kedge",
        "ref": "refs/tags/v0.1.0",
        "path": ".github/workflows/release.yml",
    }
    assert bd["internalParameters"]["sourceDateEpoch"] == 1_700_000_000
    assert bd["resolvedDependencies"][0] == {
        "uri": "git+https://github.com/kedge/kedge@refs/tags/v0.1.0",
        "digest": {"gitCommit": COMMIT},
    }
    rd = stmt["predicate"]["runDetails"]
    assert rd["builder"]["id"].endswith("_build-sign.yml@refs/tags/v0.1.0")
    assert rd["metadata"] == {
        "invocationId": "https://github.com/kedge/kedge/actions/runs/1/attempts/1",
        "startedOn": "2026-11-27T12:00:00Z",
        "finishedOn": "2026-11-27T12:00:03Z",
    }


def test_dump_then_parse_round_trips_and_is_deterministic():
    stmt = p.make_statement([p.Subject("a.whl", DIGEST)], facts())
    data = p.dump(stmt)
    assert data == p.dump(json.loads(data))
    assert p.subject_digests(p.parse_statement(data)) == {"a.whl": DIGEST}


@pytest.mark.parametrize("over", [
    {"repository": "ftp://example.org/x"},
    {"repository": "github.com/kedge/kedge"},
    {"ref": "refs/heads/a b"},
    {"commit": COMMIT.upper()},
    {"commit": COMMIT[:39]},
    {"builder_id": "not a uri"},
    {"source_date_epoch": 0},
    {"source_date_epoch": True},
    {"started_on": T0.replace(tzinfo=None)},
    {"finished_on": T0 - dt.timedelta(seconds=1)},
])
def test_bad_build_facts_are_refused(over):
    with pytest.raises(ConfigError):
        facts(**over)


@pytest.mark.parametrize("name,digest", [("a/b.whl", DIGEST), ("", DIGEST), ("a.whl", "AB" * 32), ("a.whl", "ab")])
def test_bad_subjects_are_refused(name, digest):
    with pytest.raises(ConfigError):
        p.Subject(name, digest)


def test_duplicate_subjects_are_refused():
    with pytest.raises(ConfigError):
        p.make_statement([p.Subject("a.whl", DIGEST)] * 2, facts())


@pytest.mark.parametrize("mutate", [
    lambda d: d.update(_type="https://in-toto.io/Statement/v0.1"),
    lambda d: d.update(predicateType="https://slsa.dev/provenance/v0.2"),
    lambda d: d.update(subject=[]),
    lambda d: d["subject"][0]["digest"].update(sha256="zz"),
    lambda d: d["subject"][0].update(name="../x"),
    lambda d: d.pop("predicate"),
])
def test_parse_statement_refuses_foreign_or_broken_statements(mutate):
    doc = p.make_statement([p.Subject("a.whl", DIGEST)], facts())
    mutate(doc)
    with pytest.raises(VerificationError):
        p.parse_statement(p.dump(doc))


def test_parse_statement_is_bounded():
    with pytest.raises(VerificationError):
        p.parse_statement(b" " * (p.MAX_STATEMENT_BYTES + 1))


def test_facts_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        facts().ref = "x"  # type: ignore[misc]
