"""OCI image layouts, written bit-for-bit reproducibly and read back strictly.

Pure apart from the bytes it is handed: :func:`layer` turns a list of
:class:`Entry` into a gzip'd tar whose bytes depend only on the entries and the
epoch (entries sorted, parents before children, owner/group numeric only, fixed
mtime, no pax time records, gzip header mtime 0, no file name, fixed level);
:func:`image_archive` assembles the OCI image layout (``oci-layout``,
``index.json``, ``blobs/sha256/...``; image-spec v1.1) as one uncompressed tar.
:func:`read_archive` is the checker for such a tar -- index -> manifest ->
config and layers, every digest, size, media type and ``diff_id`` -- bounded,
without extracting anything, so it can be pointed at a file from anywhere.

The gzip bytes are zlib's output at a fixed level: the same zlib gives the same
bytes (what two builds on one builder, or two builders with one zlib, compare);
the uncompressed ``diff_ids`` in the config are independent of zlib.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import gzip
import hashlib
import io
import json
import re
import tarfile
import zlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from kedge.errors import ConfigError, VerificationError

MEDIA_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
LAYOUT_VERSION = "1.0.0"
GZIP_LEVEL = 6

#: Bounds for reading an archive back (an image of kedge is ~40 MB).
MAX_ARCHIVE_MEMBERS = 64
MAX_JSON_BLOB_BYTES = 1024 * 1024
MAX_BLOB_BYTES = 512 * 1024 * 1024
MAX_LAYERS = 32

_HEX64 = re.compile(r"[0-9a-f]{64}")
_BLOB_PATH = re.compile(r"blobs/sha256/([0-9a-f]{64})")
_PATH = re.compile(r"[\x21-\x2e\x30-\x5b\x5d-\x7e]+(?:/[\x21-\x2e\x30-\x5b\x5d-\x7e]+)*")  # printable ASCII but / and \

FILE, DIR, SYMLINK = "file", "dir", "symlink"


@dataclasses.dataclass(frozen=True)
class Entry:
    """One file system entry of a layer: relative POSIX path, no ``.``/``..`` parts."""

    path: str
    kind: str = FILE
    mode: int = 0o644
    data: bytes = b""
    target: str = ""
    uid: int = 0
    gid: int = 0

    def __post_init__(self) -> None:
        check_path(self.path)
        if self.kind not in (FILE, DIR, SYMLINK):
            raise ConfigError(f"bad entry kind for {self.path}", code="bad_layer_entry")
        if not 0 <= self.mode <= 0o1777:  # no setuid/setgid bits in a kedge image
            raise ConfigError(f"bad mode {self.mode:o} for {self.path}", code="bad_layer_entry")
        if (self.kind == SYMLINK) != bool(self.target) or (self.kind != FILE and self.data):
            raise ConfigError(f"bad entry {self.path}", code="bad_layer_entry")
        if not (0 <= self.uid < 2**21 and 0 <= self.gid < 2**21):
            raise ConfigError(f"bad owner for {self.path}", code="bad_layer_entry")


def check_path(path: str) -> str:
    if not isinstance(path, str) or len(path) > 4096 or not _PATH.fullmatch(path) \
            or any(part in (".", "..") for part in path.split("/")):
        raise ConfigError(f"not a plain relative path: {path!r}", code="bad_layer_entry")
    return path


@dataclasses.dataclass(frozen=True)
class Blob:
    media_type: str
    data: bytes

    @property
    def digest(self) -> str:
        return "sha256:" + hashlib.sha256(self.data).hexdigest()

    def descriptor(self, **extra: Any) -> dict[str, Any]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": len(self.data), **extra}


@dataclasses.dataclass(frozen=True)
class Layer:
    blob: Blob
    diff_id: str  # sha256:<hex> of the uncompressed tar
    entries: int


def with_parents(entries: Iterable[Entry]) -> list[Entry]:
    """Add a 0755 root-owned directory for every missing parent; refuse duplicates."""
    by_path: dict[str, Entry] = {}
    for entry in entries:
        if entry.path in by_path:
            raise ConfigError(f"{entry.path} is in the layer twice", code="bad_layer_entry")
        by_path[entry.path] = entry
    for path in list(by_path):
        parts = path.split("/")
        for i in range(1, len(parts)):
            parent = "/".join(parts[:i])
            existing = by_path.get(parent)
            if existing is None:
                by_path[parent] = Entry(parent, DIR, 0o755)
            elif existing.kind != DIR:
                raise ConfigError(f"{parent} is a parent of {path} but not a directory", code="bad_layer_entry")
    return [by_path[p] for p in sorted(by_path, key=lambda p: p.split("/"))]


def _tar(members: Iterable[tuple[tarfile.TarInfo, bytes]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for info, data in members:
            tf.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return buf.getvalue()


def _info(name: str, kind: str, mode: int, size: int, mtime: int, *, uid: int = 0, gid: int = 0,
          target: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = {FILE: tarfile.REGTYPE, DIR: tarfile.DIRTYPE, SYMLINK: tarfile.SYMTYPE}[kind]
    info.mode, info.size, info.mtime = mode, size, mtime
    info.uid, info.gid, info.uname, info.gname = uid, gid, "", ""
    info.linkname = target
    return info


def tar_bytes(entries: Iterable[Entry], mtime: int) -> bytes:
    """The uncompressed layer tar: sorted, parents first, every time ``mtime``."""
    members = []
    for e in with_parents(entries):
        name = e.path + "/" if e.kind == DIR else e.path
        members.append((_info(name, e.kind, e.mode, len(e.data), mtime, uid=e.uid, gid=e.gid, target=e.target),
                        e.data))
    return _tar(members)


def gzip_bytes(data: bytes) -> bytes:
    """gzip with header mtime 0, no file name, level :data:`GZIP_LEVEL`."""
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, compresslevel=GZIP_LEVEL, mtime=0) as gz:
        gz.write(data)
    return buf.getvalue()


def layer(entries: Iterable[Entry], mtime: int) -> Layer:
    full = with_parents(entries)
    raw = tar_bytes(full, mtime)
    return Layer(Blob(MEDIA_LAYER_GZIP, gzip_bytes(raw)), "sha256:" + hashlib.sha256(raw).hexdigest(), len(full))


def canonical_json(doc: Mapping[str, Any]) -> bytes:
    """Compact, sorted keys, ASCII: one byte string per document."""
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def rfc3339(epoch: int) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclasses.dataclass(frozen=True)
class ImageConfig:
    """What runs, as whom; ``history`` is one ``created_by`` line per layer."""

    entrypoint: tuple[str, ...]
    cmd: tuple[str, ...] = ()
    user: str = "65532:65532"
    env: tuple[str, ...] = ()
    working_dir: str = "/"
    labels: Mapping[str, str] = dataclasses.field(default_factory=dict)
    exposed_ports: tuple[str, ...] = ()
    volumes: tuple[str, ...] = ()
    history: tuple[str, ...] = ()
    architecture: str = "amd64"
    os: str = "linux"


@dataclasses.dataclass(frozen=True)
class Image:
    archive: bytes  # the OCI layout as a tar
    manifest_digest: str
    config_digest: str
    layers: tuple[Layer, ...]


def image_archive(layers: Sequence[Layer], cfg: ImageConfig, *, epoch: int, ref_name: str,
                  annotations: Mapping[str, str]) -> Image:
    """The OCI image layout tar for ``layers`` under ``cfg``; every byte fixed by the inputs."""
    if not 0 < len(layers) <= MAX_LAYERS:
        raise ConfigError("an image needs 1..32 layers", code="bad_image")
    if cfg.history and len(cfg.history) != len(layers):
        raise ConfigError("one history line per layer", code="bad_image")
    created = rfc3339(epoch)
    config_doc: dict[str, Any] = {
        "created": created,
        "architecture": cfg.architecture,
        "os": cfg.os,
        "config": {
            "User": cfg.user,
            "Env": list(cfg.env),
            "Entrypoint": list(cfg.entrypoint),
            "Cmd": list(cfg.cmd),
            "WorkingDir": cfg.working_dir,
            "Labels": dict(cfg.labels),
            "ExposedPorts": {p: {} for p in cfg.exposed_ports},
            "Volumes": {v: {} for v in cfg.volumes},
        },
        "rootfs": {"type": "layers", "diff_ids": [lay.diff_id for lay in layers]},
        "history": [{"created": created, "created_by": line} for line in cfg.history],
    }
    config = Blob(MEDIA_CONFIG, canonical_json(config_doc))
    manifest_doc = {
        "schemaVersion": 2,
        "mediaType": MEDIA_MANIFEST,
        "config": config.descriptor(),
        "layers": [lay.blob.descriptor() for lay in layers],
        "annotations": dict(annotations),
    }
    manifest = Blob(MEDIA_MANIFEST, canonical_json(manifest_doc))
    index_doc = {
        "schemaVersion": 2,
        "mediaType": MEDIA_INDEX,
        "manifests": [manifest.descriptor(
            platform={"architecture": cfg.architecture, "os": cfg.os},
            annotations={"org.opencontainers.image.ref.name": ref_name},
        )],
    }
    blobs = {b.digest: b.data for b in (config, manifest, *(lay.blob for lay in layers))}
    members: list[tuple[tarfile.TarInfo, bytes]] = [
        (_info("blobs/", DIR, 0o755, 0, epoch), b""),
        (_info("blobs/sha256/", DIR, 0o755, 0, epoch), b""),
    ]
    for digest in sorted(blobs):
        data = blobs[digest]
        members.append((_info("blobs/sha256/" + digest.split(":", 1)[1], FILE, 0o644, len(data), epoch), data))
    for name, doc in (("index.json", index_doc), ("oci-layout", {"imageLayoutVersion": LAYOUT_VERSION})):
        data = canonical_json(doc)
        members.append((_info(name, FILE, 0o644, len(data), epoch), data))
    return Image(_tar(members), manifest.digest, config.digest, tuple(layers))


# --- reading an archive back ----------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ArchiveInfo:
    manifest_digest: str
    config_digest: str
    ref_name: str
    manifest: dict[str, Any]
    config: dict[str, Any]
    layer_digests: tuple[str, ...]


def _bad(what: str) -> VerificationError:
    return VerificationError(f"not a valid OCI image archive: {what}", code="bad_oci_archive")


def _json_blob(data: bytes, what: str) -> dict[str, Any]:
    if len(data) > MAX_JSON_BLOB_BYTES:
        raise _bad(f"{what} too large")
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise _bad(f"{what} is not JSON") from exc
    if not isinstance(doc, dict):
        raise _bad(f"{what} is not an object")
    return doc


def _descriptor(doc: Any, media_type: str, what: str) -> tuple[str, int]:
    if not isinstance(doc, dict) or doc.get("mediaType") != media_type:
        raise _bad(f"{what} has media type {doc.get('mediaType') if isinstance(doc, dict) else None!r}")
    digest, size = doc.get("digest"), doc.get("size")
    if not isinstance(digest, str) or not digest.startswith("sha256:") or not _HEX64.fullmatch(digest[7:]):
        raise _bad(f"{what} digest")
    if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= MAX_BLOB_BYTES:
        raise _bad(f"{what} size")
    return digest, size


def read_archive(fileobj: Any, *, check_diff_ids: bool = True) -> ArchiveInfo:
    """Check an OCI layout tar (one image manifest) and return what it holds.

    Every blob must be named by its own SHA-256; the index must name exactly one
    image manifest; the manifest's config and layers must be present with the
    stated size and media type; with ``check_diff_ids`` each layer is
    decompressed (streamed) and its SHA-256 compared with the config's diff_id.
    """
    try:
        tf = tarfile.open(fileobj=fileobj, mode="r:")
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise _bad("not a tar") from exc
    with tf:
        members: dict[str, tarfile.TarInfo] = {}
        try:
            for count, info in enumerate(tf):
                if count >= MAX_ARCHIVE_MEMBERS:
                    raise _bad("too many members")
                name = info.name.rstrip("/")
                if name in members:
                    raise _bad(f"{name} twice")
                if info.isdir() and name in ("blobs", "blobs/sha256"):
                    continue
                if not info.isreg() or not (name in ("oci-layout", "index.json") or _BLOB_PATH.fullmatch(name)):
                    raise _bad(f"unexpected member {name[:100]!r}")
                if info.size > MAX_BLOB_BYTES:
                    raise _bad(f"{name} too large")
                members[name] = info
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise _bad("corrupt tar") from exc

        def read(name: str, limit: int) -> bytes:
            info = members.get(name)
            if info is None:
                raise _bad(f"{name} missing")
            if info.size > limit:
                raise _bad(f"{name} too large")
            fh = tf.extractfile(info)
            if fh is None:
                raise _bad(f"{name} unreadable")
            return fh.read()

        def blob_member(digest: str, size: int, what: str) -> tarfile.TarInfo:
            info = members.get("blobs/sha256/" + digest[7:])
            if info is None:
                raise _bad(f"{what} blob missing")
            if info.size != size:
                raise _bad(f"{what} size differs from its descriptor")
            return info

        def hash_member(info: tarfile.TarInfo, *, gunzip: bool = False) -> tuple[str, str | None]:
            """(sha256 of the blob, sha256 of its gunzipped content or None if not asked/not gzip)."""
            fh = tf.extractfile(info)
            if fh is None:
                raise _bad("blob unreadable")
            outer = hashlib.sha256()
            inner = hashlib.sha256()
            unz = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS) if gunzip else None
            total = 0
            while chunk := fh.read(1024 * 1024):
                outer.update(chunk)
                if unz is None:
                    continue
                try:
                    out = unz.decompress(chunk, 16 * 1024 * 1024)
                    while True:
                        inner.update(out)
                        total += len(out)
                        if total > 4 * MAX_BLOB_BYTES:
                            raise _bad("layer expands too far")
                        if not unz.unconsumed_tail:
                            break
                        out = unz.decompress(unz.unconsumed_tail, 16 * 1024 * 1024)
                except zlib.error:
                    unz = None  # not gzip: reported after the blob digest, which is checked first
                    inner = hashlib.sha256(b"not gzip")
            valid = unz is not None and unz.eof
            return "sha256:" + outer.hexdigest(), ("sha256:" + inner.hexdigest()) if valid else None

        layout = _json_blob(read("oci-layout", 4096), "oci-layout")
        if layout.get("imageLayoutVersion") != LAYOUT_VERSION:
            raise _bad("imageLayoutVersion")
        index = _json_blob(read("index.json", MAX_JSON_BLOB_BYTES), "index.json")
        if index.get("schemaVersion") != 2 or index.get("mediaType", MEDIA_INDEX) != MEDIA_INDEX:
            raise _bad("index.json schemaVersion/mediaType")
        manifests = index.get("manifests")
        if not isinstance(manifests, list) or len(manifests) != 1:
            raise _bad("index.json must name exactly one manifest")
        manifest_digest, manifest_size = _descriptor(manifests[0], MEDIA_MANIFEST, "index manifest")
        ann = manifests[0].get("annotations") or {}
        ref_name = ann.get("org.opencontainers.image.ref.name", "") if isinstance(ann, dict) else ""
        info = blob_member(manifest_digest, manifest_size, "manifest")
        manifest_bytes = read(info.name, MAX_JSON_BLOB_BYTES)
        if "sha256:" + hashlib.sha256(manifest_bytes).hexdigest() != manifest_digest:
            raise _bad("manifest digest mismatch")
        manifest = _json_blob(manifest_bytes, "manifest")
        if manifest.get("schemaVersion") != 2 or manifest.get("mediaType") != MEDIA_MANIFEST:
            raise _bad("manifest schemaVersion/mediaType")
        config_digest, config_size = _descriptor(manifest.get("config"), MEDIA_CONFIG, "config")
        config_bytes = read(blob_member(config_digest, config_size, "config").name, MAX_JSON_BLOB_BYTES)
        if "sha256:" + hashlib.sha256(config_bytes).hexdigest() != config_digest:
            raise _bad("config digest mismatch")
        config = _json_blob(config_bytes, "config")
        layers = manifest.get("layers")
        if not isinstance(layers, list) or not 0 < len(layers) <= MAX_LAYERS:
            raise _bad("manifest layers")
        rootfs = config.get("rootfs")
        diff_ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
        if not isinstance(diff_ids, list) or len(diff_ids) != len(layers):
            raise _bad("config rootfs.diff_ids does not match the layers")
        layer_digests = []
        for i, desc in enumerate(layers):
            digest, size = _descriptor(desc, MEDIA_LAYER_GZIP, f"layer {i}")
            outer, inner = hash_member(blob_member(digest, size, f"layer {i}"), gunzip=check_diff_ids)
            if outer != digest:
                raise _bad(f"layer {i} digest mismatch")
            if check_diff_ids and inner is None:
                raise _bad(f"layer {i} is not a complete gzip stream")
            if check_diff_ids and inner != diff_ids[i]:
                raise _bad(f"layer {i} diff_id mismatch")
            layer_digests.append(digest)
        referenced = {manifest_digest, config_digest, *layer_digests}
        stray = {n for n in members if n.startswith("blobs/")} - {"blobs/sha256/" + d[7:] for d in referenced}
        if stray:
            raise _bad("blobs no descriptor names")
        return ArchiveInfo(manifest_digest, config_digest, ref_name if isinstance(ref_name, str) else "",
                           manifest, config, tuple(layer_digests))
