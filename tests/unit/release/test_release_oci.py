"""OCI layout writer and reader: bytes in, bytes out, no network, no files."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile

import pytest

from kedge.errors import ConfigError, VerificationError
from kedge.release import image, oci

EPOCH = 1_700_000_000


def _entries():
    return [
        oci.Entry("usr/bin/tool", oci.FILE, 0o755, b"#!/bin/true\n"),
        oci.Entry("etc/passwd", oci.FILE, 0o644, b"root:x:0:0::/:/sbin/nologin\n"),
        oci.Entry("usr/bin/alias", oci.SYMLINK, 0o777, target="tool"),
        oci.Entry("var/lib/kedge", oci.DIR, 0o700, uid=65532, gid=65532),
    ]


def _image(entries=None, **cfg):
    lay = oci.layer(entries or _entries(), EPOCH)
    config = oci.ImageConfig(entrypoint=("/usr/bin/tool",), history=("test layer",), **cfg)
    return oci.image_archive([lay], config, epoch=EPOCH, ref_name="0.1.0", annotations={"a": "b"})


def test_layer_bytes_depend_only_on_the_entries():
    a = oci.layer(_entries(), EPOCH)
    b = oci.layer(list(reversed(_entries())), EPOCH)
    assert a.blob.data == b.blob.data and a.diff_id == b.diff_id
    assert oci.layer(_entries(), EPOCH + 1).blob.data != a.blob.data
    # gzip header: no name, mtime 0
    assert a.blob.data[3] == 0 and a.blob.data[4:8] == b"\0\0\0\0"


def test_layer_tar_is_sorted_parents_first_fixed_time_and_numeric_owners():
    raw = gzip.decompress(oci.layer(_entries(), EPOCH).blob.data)
    with tarfile.open(fileobj=io.BytesIO(raw)) as tf:
        members = tf.getmembers()
    names = [m.name for m in members]
    assert names == ["etc", "etc/passwd", "usr", "usr/bin", "usr/bin/alias", "usr/bin/tool", "var", "var/lib",
                     "var/lib/kedge"]
    assert {m.mtime for m in members} == {EPOCH}
    assert all(m.uname == "" and m.gname == "" and not m.pax_headers for m in members)
    kedge_dir = members[-1]
    assert (kedge_dir.uid, kedge_dir.gid, kedge_dir.mode) == (65532, 65532, 0o700)


@pytest.mark.parametrize("bad", [
    lambda: oci.Entry("/etc/passwd"),
    lambda: oci.Entry("etc/../passwd"),
    lambda: oci.Entry("etc/./passwd"),
    lambda: oci.Entry("usr/bin/su", oci.FILE, 0o4755),  # setuid
    lambda: oci.Entry("x", oci.SYMLINK, 0o777),  # symlink without target
])
def test_entries_outside_the_layer_or_setuid_are_refused(bad):
    with pytest.raises(ConfigError):
        bad()


def test_duplicate_or_file_parent_entries_are_refused():
    with pytest.raises(ConfigError):
        oci.with_parents([oci.Entry("a"), oci.Entry("a")])
    with pytest.raises(ConfigError):
        oci.with_parents([oci.Entry("a"), oci.Entry("a/b")])


def test_archive_reads_back_and_names_its_manifest():
    img = _image()
    info = oci.read_archive(io.BytesIO(img.archive))
    assert info.manifest_digest == img.manifest_digest and info.config_digest == img.config_digest
    assert info.ref_name == "0.1.0"
    assert info.config["created"] == "2023-11-14T22:13:20Z"
    assert info.config["config"]["User"] == "65532:65532"
    assert info.manifest["layers"][0]["mediaType"] == oci.MEDIA_LAYER_GZIP
    assert _image().archive == img.archive


def _rewrite(archive: bytes, edit) -> bytes:
    """Re-tar ``archive`` with ``edit(name, data) -> (name, data) | None`` applied to each file."""
    out = io.BytesIO()
    with tarfile.open(fileobj=io.BytesIO(archive)) as src, tarfile.open(fileobj=out, mode="w") as dst:
        for m in src.getmembers():
            data = src.extractfile(m).read() if m.isreg() else b""
            new = edit(m.name, data) if m.isreg() else (m.name, data)
            if new is None:
                continue
            m.name, data = new
            m.size = len(data)
            dst.addfile(m, io.BytesIO(data) if m.isreg() else None)
    return out.getvalue()


def _blob_name(digest: str) -> str:
    return "blobs/sha256/" + digest.split(":", 1)[1]


def test_tampered_layer_is_refused():
    img = _image()
    layer = _blob_name(img.layers[0].blob.digest)

    def flip(name, data):
        return (name, data[:-1] + bytes([data[-1] ^ 1])) if name == layer else (name, data)
    with pytest.raises(VerificationError, match="layer 0"):
        oci.read_archive(io.BytesIO(_rewrite(img.archive, flip)))


def test_layer_renamed_to_its_own_digest_still_fails_the_diff_id():
    """A swapped layer with a correct blob name and manifest still breaks the config's diff_id."""
    img = _image()
    other = oci.layer([oci.Entry("evil", oci.FILE, 0o755, b"x")], EPOCH)
    old = img.layers[0].blob
    manifest = json.loads(next(d for n, d in _files(img.archive).items() if n == _blob_name(img.manifest_digest)))
    manifest["layers"][0] = other.blob.descriptor()
    new_manifest = oci.canonical_json(manifest)
    new_digest = "sha256:" + hashlib.sha256(new_manifest).hexdigest()

    def edit(name, data):
        if name == _blob_name(old.digest):
            return _blob_name(other.blob.digest), other.blob.data
        if name == _blob_name(img.manifest_digest):
            return _blob_name(new_digest), new_manifest
        if name == "index.json":
            index = json.loads(data)
            index["manifests"][0].update(digest=new_digest, size=len(new_manifest))
            return name, oci.canonical_json(index)
        return name, data
    with pytest.raises(VerificationError, match="diff_id"):
        oci.read_archive(io.BytesIO(_rewrite(img.archive, edit)))


def _files(archive: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(archive)) as tf:
        return {m.name: tf.extractfile(m).read() for m in tf.getmembers() if m.isreg()}


@pytest.mark.parametrize("edit", [
    lambda n, d: None if n == "oci-layout" else (n, d),  # missing oci-layout
    lambda n, d: (n, d.replace(b'"size":', b'"size":1', 1)) if n == "index.json" else (n, d),  # wrong size
    lambda n, d: ("../escape", d) if n == "oci-layout" else (n, d),  # path outside the layout
    lambda n, d: (n, b"not json") if n == "index.json" else (n, d),
])
def test_malformed_archives_are_refused(edit):
    with pytest.raises(VerificationError):
        oci.read_archive(io.BytesIO(_rewrite(_image().archive, edit)))


def test_not_a_tar_is_refused():
    with pytest.raises(VerificationError):
        oci.read_archive(io.BytesIO(b"\0" * 10))


# --- image.py pure parts --------------------------------------------------------------


def _wheel(files: dict[str, bytes]) -> bytes:
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in files.items():
            info = zipfile.ZipInfo(name)
            if name.endswith("/script"):
                info.external_attr = 0o755 << 16
            zf.writestr(info, data)
    return buf.getvalue()


def test_wheel_is_installed_into_site_packages_with_scripts_and_entry_points():
    whl = _wheel({
        "demo/__init__.py": b"",
        "demo-1.0.dist-info/METADATA": b"Metadata-Version: 2.1\nName: demo\nVersion: 1.0\nLicense-Expression: MIT\n",
        "demo-1.0.dist-info/RECORD": b"",
        "demo-1.0.dist-info/entry_points.txt": b"[console_scripts]\ndemo = demo.cli:main\n",
        "demo-1.0.data/scripts/script": b"#!python\nprint(1)\n",
        "demo-1.0.data/headers/x.h": b"",
    })
    entries, info = image.wheel_contents(whl)
    paths = {e.path: e for e in entries}
    assert f"{image.SITE_PACKAGES}/demo/__init__.py" in paths
    assert f"{image.SITE_PACKAGES}/demo-1.0.dist-info/RECORD" not in paths
    assert paths[f"{image.SITE_PACKAGES}/demo-1.0.dist-info/INSTALLER"].data == b"kedge-release\n"
    script = paths[f"{image.BIN}/script"]
    assert script.mode == 0o755 and script.data.startswith(b"#!/usr/bin/python3.11\n")
    assert not any("x.h" in p for p in paths)
    assert info.console_scripts == (("demo", "demo.cli:main"),) and info.license_expression == "MIT"
    launcher = image.console_script("demo.cli:main")
    assert launcher.startswith(b"#!/usr/bin/python3.11 -sE\n") and b"from demo.cli import main" in launcher


def test_wheel_member_outside_site_packages_is_refused():
    whl = _wheel({"../../etc/passwd": b"x",
                  "demo-1.0.dist-info/METADATA": b"Metadata-Version: 2.1\nName: demo\nVersion: 1.0\n"})
    with pytest.raises(ConfigError):
        image.wheel_contents(whl)


def test_lock_round_trips_and_rejects_unknown_fields():
    deb = image.Pinned("deb", "libc6", "2.36-9+deb12u10", "https://deb.debian.org/debian/pool/main/g/glibc/x.deb",
                       "ab" * 32)
    whl = image.Pinned("wheel", "h11", "0.16.0", "https://files.pythonhosted.org/packages/h11.whl", "cd" * 32)
    lock = image.Lock((deb,), (whl,))
    assert image.parse_lock(lock.to_bytes()) == lock
    doc = json.loads(lock.to_bytes())
    doc["wheels"][0]["extra"] = 1
    with pytest.raises(ConfigError):
        image.parse_lock(json.dumps(doc).encode())
    doc = json.loads(lock.to_bytes())
    doc["debs"][0]["url"] = "file:///etc/passwd"
    with pytest.raises(ConfigError):
        image.parse_lock(json.dumps(doc).encode())


def test_fetch_refuses_bytes_that_do_not_match_the_lock(tmp_path):
    from kedge.errors import StateError

    class Resp(io.BytesIO):
        pass

    pin = image.Pinned("wheel", "h11", "0.16.0", "https://files.pythonhosted.org/h11.whl",
                       hashlib.sha256(b"good").hexdigest())
    with pytest.raises(StateError, match="sha256"):
        image.fetch(pin, tmp_path, opener=lambda url: Resp(b"evil"))
    assert not list(tmp_path.iterdir())  # nothing unverified is cached
    assert image.fetch(pin, tmp_path, opener=lambda url: Resp(b"good")) == b"good"
    (tmp_path / pin.sha256).write_bytes(b"evil")  # a poisoned cache entry is refetched, not used
    assert image.fetch(pin, tmp_path, opener=lambda url: Resp(b"good")) == b"good"


def test_repository_lock_parses_and_pins_the_base_and_kedges_dependencies():
    from pathlib import Path

    lock = image.parse_lock((Path(__file__).resolve().parents[3] / image.LOCK_PATH).read_bytes())
    assert {p.name for p in lock.debs} == set(image.DEBIAN_PACKAGES)
    names = {p.name for p in lock.wheels}
    assert {"cryptography", "websockets", "h11", "pyyaml", "kubernetes", "uvloop"} <= names
    assert "kedge" not in names
    assert all(p.url.startswith("https://") for p in (*lock.debs, *lock.wheels))
