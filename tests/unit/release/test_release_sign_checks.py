"""What `kedge release sign` checks before its key vouches for a directory."""

import datetime as dt
import hashlib
import os

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from kedge.errors import ConfigError, VerificationError
from kedge.release import provenance
from kedge.release.sign import check_release_dir, sign_release
from kedge.release.sums import format_sums

T0 = dt.datetime(2026, 11, 27, tzinfo=dt.timezone.utc)
FACTS = provenance.BuildFacts(
    repository="https://github.com/kedge/kedge", ref="refs/tags/v0.1.0", commit="ab" * 20,
    workflow_path="Makefile", builder_id=provenance.LOCAL_BUILDER_ID, invocation_id="urn:uuid:x",
    source_date_epoch=1_700_000_000, started_on=T0, finished_on=T0)


def release_dir(tmp_path, files=None, statements=True):
    files = files or {"a.whl": b"wheel", "a.tar.gz": b"sdist", "a.cdx.json": b"{}"}
    digests = {}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
        digests[name] = hashlib.sha256(data).hexdigest()
        if statements:
            stmt = provenance.make_statement([provenance.Subject(name, digests[name])], FACTS)
            (tmp_path / f"{name}.intoto.json").write_bytes(provenance.dump(stmt))
    (tmp_path / "SHA256SUMS").write_bytes(format_sums(digests))
    return digests


def test_consistent_directory_passes(tmp_path):
    digests = release_dir(tmp_path)
    got, statements = check_release_dir(tmp_path)
    assert got == digests and len(statements) == 3


def test_artifact_without_provenance_is_refused(tmp_path):
    release_dir(tmp_path)
    (tmp_path / "a.cdx.json.intoto.json").unlink()
    with pytest.raises(VerificationError) as err:
        check_release_dir(tmp_path)
    assert err.value.code == "missing_provenance"


def test_symlinked_artifact_is_refused(tmp_path):
    release_dir(tmp_path)
    (tmp_path / "elsewhere").write_bytes((tmp_path / "a.whl").read_bytes())
    os.unlink(tmp_path / "a.whl")
    os.symlink(tmp_path / "elsewhere", tmp_path / "a.whl")
    with pytest.raises(VerificationError) as err:
        check_release_dir(tmp_path)
    assert err.value.code == "artifact_missing"


def test_missing_sums_file_is_refused(tmp_path):
    release_dir(tmp_path)
    (tmp_path / "SHA256SUMS").unlink()
    with pytest.raises(VerificationError):
        check_release_dir(tmp_path)


def test_statement_about_an_unlisted_file_is_refused(tmp_path):
    release_dir(tmp_path)
    stmt = provenance.make_statement([provenance.Subject("evil.whl", "cd" * 32)], FACTS)
    (tmp_path / "evil.whl.intoto.json").write_bytes(provenance.dump(stmt))
    with pytest.raises(VerificationError) as err:
        check_release_dir(tmp_path)
    assert err.value.code == "digest_mismatch"


def test_release_with_unexpected_artifacts_is_not_signed(tmp_path):
    release_dir(tmp_path, {"a.whl": b"1", "b.whl": b"2", "a.tar.gz": b"3", "a.cdx.json": b"4"})
    with pytest.raises(VerificationError) as err:
        sign_release(tmp_path, ec.generate_private_key(ec.SECP256R1()), now=T0)
    assert err.value.code == "unexpected_artifacts"
    assert not list(tmp_path.glob("*.dsse.json"))


def test_release_without_links_is_not_signed(tmp_path):
    release_dir(tmp_path)
    with pytest.raises(VerificationError) as err:
        sign_release(tmp_path, ec.generate_private_key(ec.SECP256R1()), now=T0)
    assert err.value.code == "bad_functionary_key"
    assert not list(tmp_path.glob("*.dsse.json"))


@pytest.mark.parametrize("days", [0, 3651])
def test_layout_validity_is_bounded(tmp_path, days):
    release_dir(tmp_path)
    with pytest.raises(ConfigError):
        sign_release(tmp_path, ec.generate_private_key(ec.SECP256R1()), now=T0, layout_days=days)
