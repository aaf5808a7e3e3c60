"""Release pipeline end to end: real git clones, real hatchling, real in-toto, real keys.

Two clean clones of HEAD are built with ``python -m kedge.release build`` (what
``make release`` runs) in separate processes; the wheel, sdist, SBOMs and the
cloudcore OCI image must be bit-identical. (The image's pinned inputs are fetched
once into a cache shared by both builds; every use re-checks their SHA-256.) One build is then signed with ``kedge release sign`` and checked by
in-toto's own verifier and by kedge's DSSE/SLSA verification, and each kind of
tampering must be caught.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PY = sys.executable
REPOSITORY = "https://github.com/kedge/kedge"
REF = "refs/tags/v0.1.0"
TIMEOUT = 120
IMAGE = "kedge-cloudcore-0.1.0.oci.tar"
IMAGE_SBOM = "kedge-cloudcore-0.1.0.oci.cdx.json"
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "kedge-release"


def run(args, cwd=REPO, check=True):
    done = subprocess.run([PY, "-m", "kedge.release", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=TIMEOUT, check=False)
    if check and done.returncode != 0:
        raise AssertionError(f"{args[0]} failed ({done.returncode}): {done.stderr}")
    return done


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def git(*args, cwd):
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, timeout=TIMEOUT)


def _build(clone: Path, out: Path, check: bool = True) -> subprocess.CompletedProcess:
    return run(["build", "--out", str(out), "--source", str(clone), "--repository", REPOSITORY, "--ref", REF,
                "--cache-dir", str(CACHE)], check=check)


@pytest.fixture(scope="module")
def builds(tmp_path_factory):
    """Two clean clones of one commit, each built into its own dist directory.

    The image's Debian inputs are pinned by version; Debian's archive keeps only current
    versions, so once a pin is withdrawn upstream (a point release) and it is not in the cache,
    clone a's lock is refreshed with ``kedge release image-lock`` and committed there, and both
    builds use that commit: what is tested -- two builds of one commit agree bit for bit --
    holds either way. (The repository's lock then wants a refresh: the test prints so.)
    """
    root = tmp_path_factory.mktemp("release")
    a, b = root / "a", root / "b"
    git("clone", "--quiet", str(REPO), str(a), cwd=root)
    out_a = root / "dist-a"
    first = _build(a, out_a, check=False)
    if first.returncode != 0 and "fetch_failed" in first.stderr:
        print("provenance/image.lock.json pins inputs no longer published; refreshing it for this test:",
              first.stderr[-500:])
        run(["image-lock", "--out", str(a / "provenance" / "image.lock.json")], cwd=a)
        git("-c", "user.name=test", "-c", "user.email=test@invalid", "commit", "--quiet", "-am",
            "test: refreshed image lock", cwd=a)
        shutil.rmtree(out_a, ignore_errors=True)
        first = _build(a, out_a, check=False)
    if first.returncode != 0:
        raise AssertionError(f"build failed ({first.returncode}): {first.stderr}")
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=a, capture_output=True, text=True,
                            check=True).stdout.strip()
    git("clone", "--quiet", str(a), str(b), cwd=root)
    git("checkout", "--quiet", "--detach", commit, cwd=b)
    # A dirty working tree must not leak into the release: build from the commit.
    (b / "kedge" / "zz_uncommitted.py").write_text("raise SystemExit('not committed')\n")
    with open(b / "README.md", "a") as fh:
        fh.write("\nlocal edit\n")
    out_b = root / "dist-b"
    _build(b, out_b)
    return [out_a, out_b]


@pytest.fixture(scope="module")
def signed(builds, tmp_path_factory):
    """Build a, copied and signed with a fresh key from ``kedge release keygen``."""
    root = tmp_path_factory.mktemp("signed")
    dist = root / "dist"
    shutil.copytree(builds[0], dist)
    run(["keygen", "--out", str(root / "release.pem")])
    run(["sign", "--key", str(root / "release.pem"), "--in", str(dist)])
    return dist, root / "release.pem", root / "release.pub"


def artifacts(dist: Path) -> dict[str, str]:
    return {p.name: sha256(p) for p in sorted(dist.iterdir())
            if p.name.endswith((".whl", ".tar.gz", ".cdx.json", ".oci.tar"))}


def test_two_clean_clones_build_bit_identical_wheel_and_sdist(builds):
    a, b = (artifacts(d) for d in builds)
    assert sorted(a) == ["kedge-0.1.0-py3-none-any.whl", "kedge-0.1.0.cdx.json", "kedge-0.1.0.tar.gz",
                         IMAGE_SBOM, IMAGE]
    assert a == b  # wheel, sdist, SBOM, image and image SBOM
    assert (builds[0] / "SHA256SUMS").read_bytes() == (builds[1] / "SHA256SUMS").read_bytes()
    print("wheel+sdist sha256:", {k: v for k, v in a.items() if not k.endswith(".json")})


def test_uncommitted_files_do_not_reach_the_release(builds):
    import tarfile
    import zipfile

    with zipfile.ZipFile(builds[1] / "kedge-0.1.0-py3-none-any.whl") as zf:
        assert not any("zz_uncommitted" in n for n in zf.namelist())
    with tarfile.open(builds[1] / "kedge-0.1.0.tar.gz") as tf:
        names = tf.getnames()
        assert "kedge-0.1.0/pyproject.toml" in names
        assert not any("zz_uncommitted" in n for n in names)


def test_release_files_and_provenance_describe_the_commit(builds):
    dist = builds[0]
    sums = dict(reversed(line.split("  ")) for line in (dist / "SHA256SUMS").read_text().splitlines())
    assert sums == artifacts(dist)
    clone = dist.parent / "a"  # the commit that was built, not whatever HEAD is by now
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=clone, capture_output=True, text=True,
                          check=True).stdout.strip()
    epoch = int(subprocess.run(["git", "log", "-1", "--format=%ct"], cwd=clone, capture_output=True, text=True,
                               check=True).stdout)
    for name, digest in sums.items():
        stmt = json.loads((dist / f"{name}.intoto.json").read_text())
        assert stmt["subject"][0] == {"name": name, "digest": {"sha256": digest}}
        assert len(stmt["subject"]) == (2 if name == IMAGE else 1)
        pred = stmt["predicate"]
        assert pred["buildDefinition"]["resolvedDependencies"][0] == {
            "uri": f"git+{REPOSITORY}@{REF}", "digest": {"gitCommit": head}}
        assert pred["buildDefinition"]["internalParameters"]["sourceDateEpoch"] == epoch
        assert pred["runDetails"]["metadata"]["invocationId"].startswith("urn:uuid:")
    bom = json.loads((dist / "kedge-0.1.0.cdx.json").read_text())
    assert bom["metadata"]["component"]["hashes"][0]["content"] == sums["kedge-0.1.0-py3-none-any.whl"]
    names = {c["name"] for c in bom["components"] if c["scope"] == "required"}
    assert {"cryptography", "websockets", "h11", "pyyaml"} <= names


def test_keygen_key_is_private(signed):
    _dist, key, pub = signed
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
    assert pub.read_bytes().startswith(b"-----BEGIN PUBLIC KEY-----")


def test_in_toto_verify_accepts_the_signed_release(signed, tmp_path):
    dist, _key, pub = signed
    work = tmp_path / "dist"
    shutil.copytree(dist, work)
    done = subprocess.run([str(Path(PY).parent / "in-toto-verify"), "--layout", "root.layout",
                           "--verification-keys", str(pub), "--link-dir", "in-toto"],
                          cwd=work, capture_output=True, text=True, timeout=TIMEOUT, check=False)
    assert done.returncode == 0, done.stderr


def _in_toto_verify(dist: Path, pub: Path, monkeypatch) -> None:
    from in_toto.models._signer import load_public_key_from_file
    from in_toto.models.metadata import Metadata
    from in_toto.verifylib import in_toto_verify

    key = load_public_key_from_file(str(pub))
    monkeypatch.chdir(dist)  # inspections run in the release directory
    in_toto_verify(Metadata.load("root.layout"), {key["keyid"]: key}, link_dir_path="in-toto",
                   persist_inspection_links=False)


def test_in_toto_verifylib_accepts_the_signed_release(signed, tmp_path, monkeypatch):
    dist, _key, pub = signed
    shutil.copytree(dist, tmp_path / "d")
    _in_toto_verify(tmp_path / "d", pub, monkeypatch)


def _flip(path: Path, offset: int = 200) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def test_artifact_swapped_after_build_fails_in_toto_even_with_rewritten_sums(signed, tmp_path, monkeypatch):
    from in_toto.exceptions import RuleVerificationError

    dist, _key, pub = signed
    work = tmp_path / "d"
    shutil.copytree(dist, work)
    wheel = work / "kedge-0.1.0-py3-none-any.whl"
    _flip(wheel)
    lines = [ln for ln in (work / "SHA256SUMS").read_text().splitlines() if not ln.endswith(wheel.name)]
    (work / "SHA256SUMS").write_text("\n".join(sorted([*lines, f"{sha256(wheel)}  {wheel.name}"])) + "\n")
    with pytest.raises(RuleVerificationError, match="DISALLOW"):
        _in_toto_verify(work, pub, monkeypatch)


def test_artifact_tampered_after_build_fails_in_toto_inspection(signed, tmp_path, monkeypatch):
    from in_toto.exceptions import BadReturnValueError

    dist, _key, pub = signed
    work = tmp_path / "d"
    shutil.copytree(dist, work)
    _flip(work / "kedge-0.1.0.tar.gz")
    with pytest.raises(BadReturnValueError):
        _in_toto_verify(work, pub, monkeypatch)


def test_edited_link_fails_in_toto_signature_check(signed, tmp_path, monkeypatch):
    from in_toto.exceptions import ThresholdVerificationError

    dist, _key, pub = signed
    work = tmp_path / "d"
    shutil.copytree(dist, work)
    link = next((work / "in-toto").glob("build.*.link"))
    doc = json.loads(link.read_text())
    doc["signed"]["products"]["kedge-0.1.0.tar.gz"]["sha256"] = "0" * 64
    link.write_text(json.dumps(doc))
    with pytest.raises(ThresholdVerificationError):
        _in_toto_verify(work, pub, monkeypatch)


def test_layout_signed_by_another_key_is_refused(signed, tmp_path, monkeypatch):
    from in_toto.exceptions import SignatureVerificationError

    dist, _key, _pub = signed
    run(["keygen", "--out", str(tmp_path / "other.pem")])
    work = tmp_path / "d"
    shutil.copytree(dist, work)
    with pytest.raises(SignatureVerificationError):
        _in_toto_verify(work, tmp_path / "other.pub", monkeypatch)


def test_sign_refuses_a_release_edited_after_build(builds, tmp_path):
    work = tmp_path / "d"
    shutil.copytree(builds[0], work)
    run(["keygen", "--out", str(tmp_path / "k.pem")])
    _flip(work / "kedge-0.1.0.tar.gz")
    done = run(["sign", "--key", str(tmp_path / "k.pem"), "--in", str(work)], check=False)
    assert done.returncode == 1 and "digest_mismatch" in done.stderr
    assert not list(work.glob("*.dsse.json")) and not (work / "root.layout").exists()


def test_sign_refuses_a_statement_about_another_artifact(builds, tmp_path):
    work = tmp_path / "d"
    shutil.copytree(builds[0], work)
    run(["keygen", "--out", str(tmp_path / "k.pem")])
    stmt_path = work / "kedge-0.1.0.tar.gz.intoto.json"
    stmt = json.loads(stmt_path.read_text())
    stmt["subject"][0]["digest"]["sha256"] = "1" * 64
    stmt_path.write_text(json.dumps(stmt))
    done = run(["sign", "--key", str(tmp_path / "k.pem"), "--in", str(work)], check=False)
    assert done.returncode == 1 and "digest_mismatch" in done.stderr


def test_sign_can_pin_the_functionary_key(builds, tmp_path):
    work = tmp_path / "d"
    shutil.copytree(builds[0], work)
    run(["keygen", "--out", str(tmp_path / "k.pem")])
    run(["keygen", "--out", str(tmp_path / "other.pem")])
    sign = ["sign", "--key", str(tmp_path / "k.pem"), "--in", str(work), "--functionary-key"]
    done = run([*sign, str(tmp_path / "other.pub")], check=False)
    assert done.returncode == 1 and "unexpected_functionary" in done.stderr
    run([*sign, str(work / "in-toto" / "functionary.pub")])
    assert (work / "root.layout").is_file()


# --- DSSE envelopes through `kedge verify` -------------------------------------------


def kedge_verify(artifact: Path, envelope: Path, pub: Path, *extra: str, source: str = "github.com/kedge/kedge"):
    return subprocess.run([PY, "-m", "kedge", "verify", str(artifact), "--provenance-path", str(envelope),
                           "--key", str(pub), "--source-uri", source, *extra],
                          cwd=REPO, capture_output=True, text=True, timeout=TIMEOUT, check=False)


@pytest.mark.parametrize("name", ["kedge-0.1.0-py3-none-any.whl", "kedge-0.1.0.tar.gz", "kedge-0.1.0.cdx.json"])
def test_signed_provenance_round_trips_through_kedge_verify(signed, name):
    from kedge.release.sign import load_public_key
    from kedge.verify.dsse import verify_envelope

    dist, _key, pub = signed
    envelope = dist / f"{name}.intoto.dsse.json"
    env = json.loads(envelope.read_text())
    assert env["payloadType"] == "application/vnd.in-toto+json"
    assert base64.b64decode(env["payload"]) == (dist / f"{name}.intoto.json").read_bytes()
    verify_envelope(env, load_public_key(pub))
    done = kedge_verify(dist / name, envelope, pub, "--source-tag", "v0.1.0",
                        "--builder-id", "https://kedge.dev/provenance/builders/local/v1")
    assert done.returncode == 0, done.stderr
    assert "PASSED: SLSA verification passed" in done.stdout + done.stderr


def test_flipped_artifact_byte_fails_kedge_verify(signed, tmp_path):
    dist, _key, pub = signed
    wheel = tmp_path / "kedge-0.1.0-py3-none-any.whl"
    shutil.copy(dist / wheel.name, wheel)
    _flip(wheel)
    done = kedge_verify(wheel, dist / f"{wheel.name}.intoto.dsse.json", pub)
    assert done.returncode == 1 and "digest_mismatch" in done.stderr


def test_edited_provenance_payload_fails_kedge_verify(signed, tmp_path):
    dist, _key, pub = signed
    name = "kedge-0.1.0.tar.gz"
    env = json.loads((dist / f"{name}.intoto.dsse.json").read_text())
    stmt = json.loads(base64.b64decode(env["payload"]))
    stmt["predicate"]["buildDefinition"]["externalParameters"]["workflow"]["ref"] = "refs/tags/v9.9.9"
    env["payload"] = base64.b64encode(json.dumps(stmt).encode()).decode()
    forged = tmp_path / "forged.dsse.json"
    forged.write_text(json.dumps(env))
    done = kedge_verify(dist / name, forged, pub)
    assert done.returncode == 1 and "dsse_bad_signature" in done.stderr


def test_other_artifacts_signature_fails_kedge_verify(signed, tmp_path):
    dist, _key, pub = signed
    wheel, sdist = dist / "kedge-0.1.0-py3-none-any.whl", dist / "kedge-0.1.0.tar.gz"
    # The sdist's (validly signed) envelope presented for the wheel.
    done = kedge_verify(wheel, dist / f"{sdist.name}.intoto.dsse.json", pub)
    assert done.returncode == 1 and "digest_mismatch" in done.stderr
    # The wheel's statement with the sdist's signature spliced in.
    env = json.loads((dist / f"{wheel.name}.intoto.dsse.json").read_text())
    env["signatures"] = json.loads((dist / f"{sdist.name}.intoto.dsse.json").read_text())["signatures"]
    spliced = tmp_path / "spliced.dsse.json"
    spliced.write_text(json.dumps(env))
    done = kedge_verify(wheel, spliced, pub)
    assert done.returncode == 1 and "dsse_bad_signature" in done.stderr


@pytest.mark.parametrize("extra,source,code", [
    ((), "github.com/evil/kedge", "source_mismatch"),
    (("--source-tag", "v0.2.0"), "github.com/kedge/kedge", "tag_mismatch"),
    (("--builder-id", "https://github.com/kedge/kedge/.github/workflows/_build-sign.yml"),
     "github.com/kedge/kedge", "untrusted_builder"),
])
def test_wrong_source_tag_or_builder_fails_kedge_verify(signed, extra, source, code):
    dist, _key, pub = signed
    wheel = dist / "kedge-0.1.0-py3-none-any.whl"
    done = kedge_verify(wheel, dist / f"{wheel.name}.intoto.dsse.json", pub, *extra, source=source)
    assert done.returncode == 1
    assert code in done.stderr, done.stderr


def test_key_other_than_the_release_key_fails_kedge_verify(signed, tmp_path):
    dist, _key, _pub = signed
    run(["keygen", "--out", str(tmp_path / "other.pem")])
    wheel = dist / "kedge-0.1.0-py3-none-any.whl"
    done = kedge_verify(wheel, dist / f"{wheel.name}.intoto.dsse.json", tmp_path / "other.pub")
    assert done.returncode == 1 and "dsse_bad_signature" in done.stderr


# --- kedge release verify-layout (in-toto through kedge's CLI) -----------------------


def test_verify_layout_command_passes_on_the_signed_release(signed):
    dist, _key, pub = signed
    before = sorted(p.name for p in dist.rglob("*"))
    done = run(["verify-layout", "--in", str(dist), "--key", str(pub)])
    assert done.stdout.startswith("PASSED:")
    assert sorted(p.name for p in dist.rglob("*")) == before  # verification writes nothing


@pytest.mark.parametrize("tamper,code", [
    (lambda d: _flip(d / "kedge-0.1.0.cdx.json"), "inspection_failed"),
    (lambda d: (d / "root.layout").write_text((d / "root.layout").read_text().replace("DISALLOW", "ALLOW", 1)),
     "layout_signature_invalid"),
    (lambda d: next((d / "in-toto").glob("sbom.*.link")).unlink(), "link_missing"),
])
def test_verify_layout_command_names_what_was_tampered(signed, tmp_path, tamper, code):
    dist, _key, pub = signed
    work = tmp_path / "d"
    shutil.copytree(dist, work)
    tamper(work)
    done = run(["verify-layout", "--in", str(work), "--key", str(pub)], check=False)
    assert done.returncode == 1
    assert f"kedge: {code}:" in done.stderr


# --- the cloudcore OCI image ----------------------------------------------------------


def _image_info(path: Path):
    from kedge.release import oci

    with path.open("rb") as fh:
        return oci.read_archive(fh)


def test_two_builds_give_the_same_image_manifest_digest(builds):
    a, b = (_image_info(d / IMAGE) for d in builds)
    assert (builds[0] / IMAGE).read_bytes() == (builds[1] / IMAGE).read_bytes()
    assert a.manifest_digest == b.manifest_digest
    print("image", IMAGE, (builds[0] / IMAGE).stat().st_size, "bytes; sha256", sha256(builds[0] / IMAGE),
          "manifest", a.manifest_digest)


def test_image_layout_is_valid_and_describes_the_commit(builds):
    import gzip
    import tarfile

    from kedge.release import oci

    dist = builds[0]
    info = _image_info(dist / IMAGE)  # index -> manifest -> config/layers: digests, sizes, media types, diff_ids
    clone = dist.parent / "a"
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=clone, capture_output=True, text=True,
                          check=True).stdout.strip()
    epoch = int(subprocess.run(["git", "log", "-1", "--format=%ct"], cwd=clone, capture_output=True, text=True,
                               check=True).stdout)
    assert info.ref_name == "0.1.0" and len(info.layer_digests) == 3
    cfg = info.config
    assert cfg["created"] == oci.rfc3339(epoch) and (cfg["os"], cfg["architecture"]) == ("linux", "amd64")
    assert cfg["config"]["User"] == "65532:65532"
    assert cfg["config"]["Entrypoint"] == ["/opt/kedge/bin/kedge"] and cfg["config"]["Cmd"][0] == "cloudcore"
    labels = cfg["config"]["Labels"]
    assert labels["org.opencontainers.image.source"] == REPOSITORY
    assert labels["org.opencontainers.image.revision"] == head
    assert labels["org.opencontainers.image.version"] == "0.1.0"
    assert info.manifest["annotations"] == labels
    with tarfile.open(dist / IMAGE) as outer:
        for digest in info.layer_digests:
            blob = outer.extractfile("blobs/sha256/" + digest[7:]).read()
            assert blob[4:8] == b"\0\0\0\0"  # gzip mtime 0
            with tarfile.open(fileobj=__import__("io").BytesIO(gzip.decompress(blob))) as layer:
                members = layer.getmembers()
            assert {m.mtime for m in members} == {epoch}
            assert not any(m.mode & 0o6000 for m in members)  # no setuid/setgid
            assert all(m.uid in (0, 65532) and not {"mtime", "atime", "ctime"} & set(m.pax_headers) for m in members)
            names = [m.name.rstrip("/") for m in members]
            assert names == sorted(names, key=lambda n: n.split("/"))


def test_image_provenance_names_the_manifest_and_every_pinned_input(builds):
    from kedge.release import image

    dist = builds[0]
    stmt = json.loads((dist / f"{IMAGE}.intoto.json").read_text())
    manifest = _image_info(dist / IMAGE).manifest_digest
    assert stmt["subject"][1] == {"name": "kedge-cloudcore", "digest": {"sha256": manifest[7:]}}
    lock = image.parse_lock((dist.parent / "a" / image.LOCK_PATH).read_bytes())
    deps = {d["uri"]: d["digest"]["sha256"] for d in stmt["predicate"]["buildDefinition"]["resolvedDependencies"]
            if d["uri"].startswith(("pkg:deb/", "pkg:pypi/")) and "digest" in d}
    assert deps == {p.purl: p.sha256 for p in (*lock.debs, *lock.wheels)}
    bom = json.loads((dist / IMAGE_SBOM).read_text())
    assert bom["metadata"]["component"]["type"] == "container"
    assert bom["metadata"]["component"]["hashes"][0]["content"] == manifest[7:]
    purls = {c["purl"] for c in bom["components"]}
    assert "pkg:pypi/kedge@0.1.0" in purls
    assert {p.purl for p in (*lock.debs, *lock.wheels)} <= purls
    kedge = next(c for c in bom["components"] if c["name"] == "kedge")
    assert kedge["hashes"][0]["content"] == sha256(dist / "kedge-0.1.0-py3-none-any.whl")


def test_image_sbom_is_valid_cyclonedx(builds):
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator

    errors = JsonStrictValidator(SchemaVersion.V1_5).validate_str((builds[0] / IMAGE_SBOM).read_text(),
                                                                 all_errors=True)
    assert errors is None, errors


def _unpack_rootfs(archive: Path, root: Path) -> None:
    import tarfile

    info = _image_info(archive)
    with tarfile.open(archive) as outer:
        for digest in info.layer_digests:
            with tarfile.open(fileobj=outer.extractfile("blobs/sha256/" + digest[7:]), mode="r:gz") as layer:
                layer.extractall(root, filter="tar")


def test_image_runs_cloudcore_as_nonroot(builds, tmp_path):
    """The unpacked layers are a working system: Debian's python3.11 runs kedge init and cloudcore as 65532."""
    if os.geteuid() != 0 or not shutil.which("chroot"):
        pytest.fail("chroot into the image needs root and chroot(8): run the suite as root (CI does)")
    import time

    root = tmp_path / "rootfs"
    _unpack_rootfs(builds[0] / IMAGE, root)
    user = [shutil.which("chroot"), "--userspec=65532:65532", str(root), "/opt/kedge/bin/kedge"]
    env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
    done = subprocess.run([*user, "init", "--data-dir", "/var/lib/kedge/c", "--api-port", "0", "--hub-port", "0",
                           "--cert-port", "0"], capture_output=True, text=True, timeout=TIMEOUT, env=env, check=False)
    assert done.returncode == 0, done.stderr
    proc = subprocess.Popen([*user, "cloudcore", "--data-dir", "/var/lib/kedge/c"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, env=env)
    try:
        endpoints = root / "var/lib/kedge/c/endpoints.json"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            if endpoints.exists() and "hub" in json.loads(endpoints.read_text() or "{}"):
                break
            time.sleep(0.2)
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        assert json.loads(endpoints.read_text())["hub"].startswith("wss://")
        assert (root / "var/lib/kedge/c/pki/ca.key").stat().st_uid == 65532
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_skopeo_reads_the_image_and_agrees_on_its_digest(builds, tmp_path):
    archive = f"oci-archive:{builds[0] / IMAGE}"
    done = subprocess.run(["skopeo", "inspect", archive], capture_output=True, text=True, timeout=TIMEOUT,
                          check=False)
    assert done.returncode == 0, done.stderr
    inspected = json.loads(done.stdout)
    assert inspected["Digest"] == _image_info(builds[0] / IMAGE).manifest_digest
    assert (inspected["Os"], inspected["Architecture"]) == ("linux", "amd64")
    # A copy makes skopeo read and check every blob against its descriptor.
    done = subprocess.run(["skopeo", "copy", "--quiet", archive, f"dir:{tmp_path / 'copy'}"], capture_output=True,
                          text=True, timeout=TIMEOUT, check=False)
    assert done.returncode == 0, done.stderr


def test_kedge_verify_accepts_the_image_by_file_and_by_manifest_digest(signed):
    dist, _key, pub = signed
    envelope = dist / f"{IMAGE}.intoto.dsse.json"
    manifest = _image_info(dist / IMAGE).manifest_digest
    for artifact in (str(dist / IMAGE), manifest):
        done = subprocess.run([PY, "-m", "kedge", "verify", artifact, "--provenance-path", str(envelope),
                               "--key", str(pub), "--source-uri", "github.com/kedge/kedge", "--source-tag", "v0.1.0",
                               "--builder-id", "https://kedge.dev/provenance/builders/local/v1"],
                              cwd=REPO, capture_output=True, text=True, timeout=TIMEOUT, check=False)
        assert done.returncode == 0, done.stderr
        assert "PASSED: SLSA verification passed" in done.stdout + done.stderr


def test_tampered_image_fails_kedge_verify(signed, tmp_path):
    dist, _key, pub = signed
    tampered = tmp_path / IMAGE
    shutil.copy(dist / IMAGE, tampered)
    _flip(tampered, offset=tampered.stat().st_size // 2)
    envelope = dist / f"{IMAGE}.intoto.dsse.json"
    done = kedge_verify(tampered, envelope, pub)
    assert done.returncode == 1 and "digest_mismatch" in done.stderr
    done = subprocess.run([PY, "-m", "kedge", "verify", "sha256:" + sha256(tampered), "--provenance-path",
                           str(envelope), "--key", str(pub), "--source-uri", "github.com/kedge/kedge"],
                          cwd=REPO, capture_output=True, text=True, timeout=TIMEOUT, check=False)
    assert done.returncode == 1 and "digest_mismatch" in done.stderr


def test_tampered_image_fails_in_toto_verification(signed, tmp_path):
    dist, _key, pub = signed
    work = tmp_path / "d"
    shutil.copytree(dist, work)
    _flip(work / IMAGE, offset=4096)
    done = run(["verify-layout", "--in", str(work), "--key", str(pub)], check=False)
    assert done.returncode == 1 and "kedge: inspection_failed:" in done.stderr


def test_sign_refuses_an_image_statement_naming_another_manifest(builds, tmp_path):
    work = tmp_path / "d"
    shutil.copytree(builds[0], work)
    run(["keygen", "--out", str(tmp_path / "k.pem")])
    path = work / f"{IMAGE}.intoto.json"
    stmt = json.loads(path.read_text())
    stmt["subject"][1]["digest"]["sha256"] = "2" * 64
    path.write_text(json.dumps(stmt))
    done = run(["sign", "--key", str(tmp_path / "k.pem"), "--in", str(work)], check=False)
    assert done.returncode == 1 and "digest_mismatch" in done.stderr
