"""The cloudcore container image: an OCI layout assembled from pinned packages.

No registry, no Dockerfile, no ``pip install`` into a running container: every
byte of the image comes from files whose SHA-256 is committed in
``provenance/image.lock.json`` (Debian bookworm ``.deb`` packages for a minimal
"distroless"-style userland with Debian's Python 3.11, and cp311 manylinux x86_64
wheels of kedge[cloud]'s dependencies) plus the kedge wheel the release just built.
Packages are unpacked here, in Python -- no maintainer scripts run -- into three
layers (Debian base, Python dependencies, kedge), written by :mod:`.oci`.

Shell parts: :func:`fetch` (HTTP(S) download into a content-addressed cache,
checked against the lock before use) and :func:`make_lock` (``apt-get
download --print-uris`` and ``pip install --dry-run --report`` to pin a new
set). Everything between them is a function of bytes.
"""

from __future__ import annotations

import dataclasses
import email.parser
import io
import json
import lzma
import os
import re
import subprocess  # nosec B404 - apt-get and pip with fixed argument lists, only in make_lock
import sys
import tarfile
import tempfile
import urllib.request
import zipfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from kedge.errors import ConfigError, StateError
from kedge.release import oci
from kedge.release.intoto import IMAGE_LOCK

LOCK_PATH = IMAGE_LOCK
IMAGE_NAME = "kedge-cloudcore"  # also the name of the manifest-digest subject in the provenance
IMAGE_SUFFIX = ".oci.tar"
IMAGE_SBOM_SUFFIX = ".oci.cdx.json"
PYTHON = "/usr/bin/python3.11"
SITE_PACKAGES = "opt/kedge/lib/python3.11/site-packages"
BIN = "opt/kedge/bin"
DATA_DIR = "var/lib/kedge"
NONROOT = 65532
LOCK_VERSION = 1
DEBIAN = {"distro": "debian-12", "suite": "bookworm", "arch": "amd64"}
PYTHON_TARGET = {"python": "3.11", "implementation": "cp", "platform": "manylinux_2_36_x86_64"}
#: What the base layer holds: glibc, Debian's python3.11 and the shared libraries its
#: standard library links (ssl, sqlite3, ctypes, bz2/lzma, uuid, crypt; not readline, curses, dbm, nis),
#: base-files (/etc/os-release for scanners), netbase (/etc/services) and media-types.
#: No shell, no package manager, no ca-certificates (cloudcore trusts its own cluster CA
#: and the kubeconfig's; the bundle is built by a maintainer script that is not run here).
DEBIAN_PACKAGES = (
    "base-files", "netbase", "media-types", "gcc-12-base", "libc6", "libgcc-s1", "libssl3", "zlib1g",
    "libexpat1", "libffi8", "libsqlite3-0", "libbz2-1.0", "liblzma5", "libuuid1",
    "libcrypt1", "libpython3.11-minimal", "libpython3.11-stdlib", "python3.11-minimal",
)
#: Dropped from .deb contents (documentation other than copyright files is kept separately).
_DROP_SHARE = frozenset({"man", "info", "lintian", "locale", "bug", "doc-base", "menu"})
MAX_INPUT_BYTES = 128 * 1024 * 1024
MAX_LOCK_BYTES = 256 * 1024
MAX_MEMBER_BYTES = 64 * 1024 * 1024
FETCH_TIMEOUT_S = 120
_HEX64 = re.compile(r"[0-9a-f]{64}")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9.+_-]{0,127}")
_VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9.+~:_!-]{0,127}")
_URL = re.compile(r"https?://[A-Za-z0-9.-]+/[A-Za-z0-9._~%+/:@=-]{1,500}")


# --- the lock -------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Pinned:
    """One input file: a .deb or a wheel, where to fetch it and its SHA-256."""

    kind: str  # "deb" | "wheel"
    name: str
    version: str
    url: str
    sha256: str

    def __post_init__(self) -> None:
        if self.kind not in ("deb", "wheel"):
            raise ConfigError("lock entry kind must be deb or wheel", code="bad_image_lock")
        if not (isinstance(self.name, str) and _NAME.fullmatch(self.name)
                and isinstance(self.version, str) and _VERSION.fullmatch(self.version)):
            raise ConfigError(f"bad lock entry name/version {self.name!r}", code="bad_image_lock")
        if not isinstance(self.url, str) or not _URL.fullmatch(self.url):
            raise ConfigError(f"bad URL for {self.name}", code="bad_image_lock")
        if not isinstance(self.sha256, str) or not _HEX64.fullmatch(self.sha256):
            raise ConfigError(f"bad sha256 for {self.name}", code="bad_image_lock")

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[1]

    @property
    def purl(self) -> str:
        """The canonical package URL (``+`` in a Debian version is ``%2B``), as the SBOM writes it."""
        from packageurl import PackageURL

        if self.kind == "deb":
            return str(PackageURL("deb", "debian", self.name, self.version,
                                  {"arch": DEBIAN["arch"], "distro": DEBIAN["distro"]}).to_string())
        return str(PackageURL("pypi", None, self.name, self.version).to_string())


@dataclasses.dataclass(frozen=True)
class Lock:
    debs: tuple[Pinned, ...]
    wheels: tuple[Pinned, ...]

    def to_bytes(self) -> bytes:
        doc = {
            "version": LOCK_VERSION,
            "debian": DEBIAN,
            "python": PYTHON_TARGET,
            "debs": [_lock_entry(p) for p in self.debs],
            "wheels": [_lock_entry(p) for p in self.wheels],
        }
        return (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode("ascii")


def _lock_entry(pin: Pinned) -> dict[str, str]:
    return {"name": pin.name, "version": pin.version, "url": pin.url, "sha256": pin.sha256}


def parse_lock(data: bytes) -> Lock:
    """Read ``provenance/image.lock.json`` strictly; unknown or missing fields are errors."""
    if len(data) > MAX_LOCK_BYTES:
        raise ConfigError("image lock too large", code="bad_image_lock")
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConfigError("image lock is not JSON", code="bad_image_lock") from exc
    if not isinstance(doc, dict) or set(doc) != {"version", "debian", "python", "debs", "wheels"}:
        raise ConfigError("image lock has unexpected fields", code="bad_image_lock")
    if doc["version"] != LOCK_VERSION or doc["debian"] != DEBIAN or doc["python"] != PYTHON_TARGET:
        raise ConfigError("image lock is for another target", code="bad_image_lock")
    out: dict[str, list[Pinned]] = {"debs": [], "wheels": []}
    for section, kind in (("debs", "deb"), ("wheels", "wheel")):
        entries = doc[section]
        if not isinstance(entries, list) or not entries or len(entries) > 500:
            raise ConfigError(f"image lock {section} must be a non-empty list", code="bad_image_lock")
        for entry in entries:
            if not isinstance(entry, dict) or set(entry) != {"name", "version", "url", "sha256"}:
                raise ConfigError(f"bad image lock entry in {section}", code="bad_image_lock")
            out[section].append(Pinned(kind=kind, **entry))
        names = [p.name for p in out[section]]
        if len(set(names)) != len(names):
            raise ConfigError(f"image lock names a package twice in {section}", code="bad_image_lock")
    return Lock(tuple(out["debs"]), tuple(out["wheels"]))


# --- fetching -------------------------------------------------------------------------


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "kedge-release"


def fetch(pin: Pinned, cache: Path, *, opener: Callable[[str], Any] | None = None) -> bytes:
    """The bytes of ``pin``: from the cache if they hash right, else downloaded and checked.

    The cache is content-addressed (``cache/<sha256>``) and never trusted: a cached
    file is hashed on every use. A download whose hash differs from the lock fails
    the build; nothing unverified is written to the cache.
    """
    import hashlib

    cached = cache / pin.sha256
    if cached.is_file() and not cached.is_symlink():
        data = cached.read_bytes()
        if hashlib.sha256(data).hexdigest() == pin.sha256:
            return data
    if not pin.url.startswith(("https://", "http://")):
        raise ConfigError(f"refusing to fetch {pin.url}", code="bad_image_lock")
    try:
        if opener is not None:
            resp = opener(pin.url)
        else:
            resp = urllib.request.urlopen(pin.url, timeout=FETCH_TIMEOUT_S)  # noqa: S310  # nosec B310 - scheme checked above; bytes pinned by sha256
        with resp:
            data = resp.read(MAX_INPUT_BYTES + 1)
    except OSError as exc:
        raise StateError(f"cannot fetch {pin.url}: {exc}", code="fetch_failed") from exc
    if len(data) > MAX_INPUT_BYTES:
        raise StateError(f"{pin.url} is larger than {MAX_INPUT_BYTES} bytes", code="fetch_failed")
    got = hashlib.sha256(data).hexdigest()
    if got != pin.sha256:
        raise StateError(f"{pin.url} has sha256 {got}, the lock says {pin.sha256}", code="digest_mismatch")
    cache.mkdir(parents=True, exist_ok=True)
    tmp = cache / f".{pin.sha256}.{os.getpid()}.tmp"
    tmp.write_bytes(data)
    os.replace(tmp, cached)
    return data


# --- unpacking ------------------------------------------------------------------------


def _ar_members(data: bytes) -> dict[str, bytes]:
    """Members of a Debian ``ar`` archive (``debian-binary``, control and data tars)."""
    if not data.startswith(b"!<arch>\n"):
        raise StateError("not a .deb (ar) archive", code="bad_package")
    out: dict[str, bytes] = {}
    pos = 8
    while pos < len(data):
        header = data[pos:pos + 60]
        if len(header) != 60 or header[58:60] != b"`\n":
            raise StateError("corrupt ar header", code="bad_package")
        name = header[:16].decode("ascii", "replace").strip().rstrip("/")
        try:
            size = int(header[48:58].decode("ascii").strip())
        except ValueError as exc:
            raise StateError("corrupt ar member size", code="bad_package") from exc
        start = pos + 60
        if size < 0 or start + size > len(data):
            raise StateError("truncated ar member", code="bad_package")
        out[name] = data[start:start + size]
        pos = start + size + (size & 1)
    return out


def _tar_from(name: str, data: bytes) -> tarfile.TarFile:
    if name.endswith(".xz"):
        raw = lzma.decompress(data)
    elif name.endswith(".tar"):
        raw = data
    else:  # bookworm packages are xz; zstd would need a dependency
        raise StateError(f"unsupported .deb member compression {name}", code="bad_package")
    return tarfile.open(fileobj=io.BytesIO(raw), mode="r:")


def _dropped(path: str) -> bool:
    """Manuals, locales and every document but ``usr/share/doc/<package>/copyright``."""
    parts = path.split("/")
    if parts[:2] != ["usr", "share"] or len(parts) < 3:
        return False
    if parts[2] in _DROP_SHARE:
        return True
    return parts[2] == "doc" and (len(parts) > 5 or (len(parts) == 5 and parts[4] != "copyright"))


def deb_contents(data: bytes) -> tuple[list[oci.Entry], str]:
    """The file system entries of a .deb's data tar (documentation trimmed) and its control text."""
    members = _ar_members(data)
    if members.get("debian-binary", b"").strip() != b"2.0":
        raise StateError("unsupported .deb format", code="bad_package")
    control_name = next((n for n in members if n.startswith("control.tar")), None)
    data_name = next((n for n in members if n.startswith("data.tar")), None)
    if control_name is None or data_name is None:
        raise StateError(".deb lacks control or data", code="bad_package")
    with _tar_from(control_name, members[control_name]) as tf:
        member = tf.extractfile("./control")
        if member is None:
            raise StateError(".deb control file missing", code="bad_package")
        control = member.read(MAX_LOCK_BYTES).decode("utf-8")
    entries: list[oci.Entry] = []
    with _tar_from(data_name, members[data_name]) as tf:
        for info in tf:
            path = info.name[2:] if info.name.startswith("./") else info.name
            path = path.rstrip("/")
            if not path or path == "." or _dropped(path):
                continue
            mode = info.mode & 0o1777  # setuid/setgid dropped: nothing in the image runs as another user
            if info.isdir():
                entries.append(oci.Entry(path, oci.DIR, mode))
            elif info.issym():
                entries.append(oci.Entry(path, oci.SYMLINK, 0o777, target=info.linkname))
            elif info.isreg() or info.islnk():
                fh = tf.extractfile(info)
                if fh is None or info.size > MAX_MEMBER_BYTES:
                    raise StateError(f"cannot read {path} from .deb", code="bad_package")
                entries.append(oci.Entry(path, oci.FILE, mode, fh.read()))
            else:
                raise StateError(f"unexpected member type for {path} in .deb", code="bad_package")
    return entries, control


@dataclasses.dataclass(frozen=True)
class WheelInfo:
    name: str
    version: str
    license_expression: str
    license_name: str
    console_scripts: tuple[tuple[str, str], ...]


def wheel_contents(data: bytes) -> tuple[list[oci.Entry], WheelInfo]:
    """Install a wheel by unpacking it (PEP 427) into :data:`SITE_PACKAGES`.

    ``*.data/purelib`` and ``platlib`` go to site-packages, ``scripts`` to
    :data:`BIN` (``#!python`` rewritten to :data:`PYTHON`); ``headers`` and
    ``data`` are not needed at run time and are left out. Modes: 0755 when the
    archive marks a file executable, else 0644.
    """
    from kedge.release.sbom import _license_of

    entries: list[oci.Entry] = []
    info: WheelInfo | None = None
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        names = zf.namelist()
        metas = [n for n in names if re.fullmatch(r"[^/]+\.dist-info/METADATA", n)]
        if len(metas) != 1:
            raise StateError("wheel has no single METADATA", code="bad_wheel")
        meta = email.parser.Parser().parsestr(zf.read(metas[0]).decode("utf-8"), headersonly=True)
        dist_info = metas[0].split("/")[0]
        data_dir = dist_info[: -len(".dist-info")] + ".data"
        scripts: list[tuple[str, str]] = []
        ep_name = f"{dist_info}/entry_points.txt"
        if ep_name in names:
            import configparser

            parser = configparser.ConfigParser(interpolation=None, delimiters=("=",))
            parser.optionxform = str  # type: ignore[assignment,method-assign]
            parser.read_string(zf.read(ep_name).decode("utf-8"))
            if parser.has_section("console_scripts"):
                scripts = sorted((k.strip(), v.strip()) for k, v in parser.items("console_scripts"))
        expression, lic_name = _license_of(meta)
        info = WheelInfo(str(meta["Name"]), str(meta["Version"]), expression, lic_name, tuple(scripts))
        for zi in zf.infolist():
            if zi.is_dir():
                continue
            name = zi.filename
            if zi.file_size > MAX_MEMBER_BYTES:
                raise StateError(f"{name} too large in wheel", code="bad_wheel")
            executable = bool((zi.external_attr >> 16) & 0o111)
            body = zf.read(zi)
            if name.startswith(data_dir + "/"):
                _, sub, rest = (name.split("/", 2) + ["", ""])[:3]
                if sub in ("purelib", "platlib"):
                    target = f"{SITE_PACKAGES}/{rest}"
                elif sub == "scripts":
                    if body.startswith(b"#!python"):
                        body = b"#!" + PYTHON.encode() + body[len(b"#!python"):]
                    target, executable = f"{BIN}/{rest}", True
                else:
                    continue
            else:
                target = f"{SITE_PACKAGES}/{name}"
            if name == f"{dist_info}/RECORD":
                continue  # describes the wheel, not this installation; INSTALLER says who installed it
            entries.append(oci.Entry(target, oci.FILE, 0o755 if executable else 0o644, body))
        entries.append(oci.Entry(f"{SITE_PACKAGES}/{dist_info}/INSTALLER", oci.FILE, 0o644, b"kedge-release\n"))
    return entries, info


def console_script(module_function: str) -> bytes:
    """A launcher that ignores PYTHON* variables (-E) and user site (-s) and adds kedge's site dir."""
    module, _, func = module_function.partition(":")
    if not re.fullmatch(r"[A-Za-z_][\w.]*", module) or not re.fullmatch(r"[A-Za-z_][\w.]*", func):
        raise StateError(f"bad console script {module_function!r}", code="bad_wheel")
    return (f"#!{PYTHON} -sE\n"
            "import site\nimport sys\n"
            f"site.addsitedir('/{SITE_PACKAGES}')\n"
            f"from {module} import {func.split('.')[0]}\n"
            f"sys.exit({func}())\n").encode("ascii")


def _merge(entries: Iterable[oci.Entry], into: dict[str, oci.Entry], origin: str) -> None:
    for entry in entries:
        seen = into.get(entry.path)
        if seen is None:
            into[entry.path] = entry
        elif seen.kind == oci.DIR and entry.kind == oci.DIR:
            continue
        elif seen != entry:
            raise StateError(f"{entry.path} from {origin} conflicts with an earlier package", code="bad_package")


def base_entries(debs: Sequence[tuple[Pinned, bytes]]) -> list[oci.Entry]:
    """Layer 1: the Debian userland, dpkg status for scanners, users, writable dirs."""
    files: dict[str, oci.Entry] = {}
    for pin, data in debs:
        entries, control = deb_contents(data)
        _merge(entries, files, pin.name)
        status = control.rstrip("\n") + "\nStatus: install ok installed\n"
        # distroless' layout: one control paragraph per package, read by Trivy/Grype/Syft.
        _merge([oci.Entry(f"var/lib/dpkg/status.d/{pin.name}", oci.FILE, 0o644, status.encode("utf-8"))],
               files, pin.name)
    extra = [
        oci.Entry("etc/passwd", oci.FILE, 0o644,
                  b"root:x:0:0:root:/root:/sbin/nologin\n"
                  b"nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n"),
        oci.Entry("etc/group", oci.FILE, 0o644, b"root:x:0:\nnonroot:x:65532:\n"),
        oci.Entry("root", oci.DIR, 0o700),
        oci.Entry("home/nonroot", oci.DIR, 0o700, uid=NONROOT, gid=NONROOT),
        oci.Entry(DATA_DIR, oci.DIR, 0o700, uid=NONROOT, gid=NONROOT),
        oci.Entry("tmp", oci.DIR, 0o1777),
    ]
    for entry in extra:
        if entry.kind == oci.DIR:
            files.pop(entry.path, None)  # ours, with the owner and mode the image needs
        _merge([entry], files, "kedge-release")
    return list(files.values())


def python_entries(wheels: Sequence[tuple[Pinned, bytes]]) -> tuple[list[oci.Entry], list[WheelInfo]]:
    files: dict[str, oci.Entry] = {}
    infos = []
    for pin, data in wheels:
        entries, info = wheel_contents(data)
        _merge(entries, files, pin.name)
        infos.append(info)
    return list(files.values()), infos


# --- the image ------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class BuiltImage:
    name: str  # kedge-cloudcore-<version>.oci.tar
    image: oci.Image
    sbom_name: str
    sbom: bytes
    inputs: tuple[Pinned, ...]  # everything fetched, in layer order


def build_image(
    kedge_wheel: bytes,
    kedge_wheel_sha256: str,
    lock: Lock,
    cache: Path,
    *,
    epoch: int,
    source: str,
    revision: str,
    tool_version: str,
    opener: Callable[[str], Any] | None = None,
) -> BuiltImage:
    debs = [(p, fetch(p, cache, opener=opener)) for p in lock.debs]
    wheels = [(p, fetch(p, cache, opener=opener)) for p in lock.wheels]
    base = oci.layer(base_entries(debs), epoch)
    dep_entries, dep_infos = python_entries(wheels)
    deps = oci.layer(dep_entries, epoch)
    app_files, kedge_info = wheel_contents(kedge_wheel)
    if kedge_info.name != "kedge":
        raise StateError("the application wheel is not kedge", code="bad_wheel")
    locked = {sbom_name(p.name) for p in lock.wheels}
    if sbom_name("kedge") in locked:
        raise ConfigError("the image lock must not pin kedge itself", code="bad_image_lock")
    for name, target in kedge_info.console_scripts:
        app_files.append(oci.Entry(f"{BIN}/{name}", oci.FILE, 0o755, console_script(target)))
    app = oci.layer(app_files, epoch)
    version = kedge_info.version
    labels = {
        "org.opencontainers.image.title": IMAGE_NAME,
        "org.opencontainers.image.description": "kedge cloudcore: the cloud side of kedge",
        "org.opencontainers.image.source": source,
        "org.opencontainers.image.revision": revision,
        "org.opencontainers.image.version": version,
        "org.opencontainers.image.licenses": "Apache-2.0",
        "org.opencontainers.image.created": oci.rfc3339(epoch),
        "org.opencontainers.image.base.name": "debian:bookworm (assembled from provenance/image.lock.json)",
    }
    cfg = oci.ImageConfig(
        entrypoint=(f"/{BIN}/kedge",),
        cmd=("cloudcore", "--data-dir", f"/{DATA_DIR}"),
        user=f"{NONROOT}:{NONROOT}",
        env=(f"PATH=/{BIN}:/usr/bin:/bin", f"PYTHONPATH=/{SITE_PACKAGES}", "PYTHONDONTWRITEBYTECODE=1",
             "PYTHONUNBUFFERED=1", "LANG=C.UTF-8"),
        labels=labels,
        exposed_ports=("6443/tcp", "10000/tcp", "10002/tcp"),
        volumes=(f"/{DATA_DIR}",),
        history=(
            f"kedge-release: Debian {DEBIAN['suite']} base, {len(lock.debs)} packages unpacked from {LOCK_PATH}",
            f"kedge-release: {len(lock.wheels)} Python wheels unpacked from {LOCK_PATH}",
            f"kedge-release: kedge {version} wheel (sha256:{kedge_wheel_sha256})",
        ),
    )
    image = oci.image_archive([base, deps, app], cfg, epoch=epoch, ref_name=version, annotations=labels)
    bom = image_sbom(image, version, kedge_wheel_sha256, lock, dep_infos, epoch=epoch, tool_version=tool_version)
    return BuiltImage(f"{IMAGE_NAME}-{version}{IMAGE_SUFFIX}", image, f"{IMAGE_NAME}-{version}{IMAGE_SBOM_SUFFIX}", bom,
                      (*lock.debs, *lock.wheels))


def resolved_dependencies(inputs: Sequence[Pinned]) -> list[dict[str, Any]]:
    """SLSA ResourceDescriptors for the fetched inputs: purl, download URL, SHA-256."""
    return [{"uri": p.purl, "downloadLocation": p.url, "digest": {"sha256": p.sha256}} for p in inputs]


def sbom_name(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def image_sbom(image: oci.Image, version: str, kedge_sha256: str, lock: Lock, infos: Sequence[WheelInfo], *,
               epoch: int, tool_version: str) -> bytes:
    """CycloneDX 1.5: the image (by manifest digest) and every package in it, with the input's SHA-256."""
    import datetime as dt
    import hashlib
    import uuid

    from cyclonedx.model import HashAlgorithm, HashType
    from cyclonedx.model import component as cdx
    from cyclonedx.model.bom import Bom, BomMetaData
    from cyclonedx.model.license import DisjunctiveLicense, LicenseExpression
    from packageurl import PackageURL

    from kedge.release import sbom as release_sbom

    by_name = {sbom_name(i.name): i for i in infos}

    def component(name: str, version: str, purl: str, sha256: str, info: WheelInfo | None) -> cdx.Component:
        licenses: list[Any] = []
        if info is not None and info.license_expression:
            licenses.append(LicenseExpression(info.license_expression))
        elif info is not None and info.license_name:
            licenses.append(DisjunctiveLicense(name=info.license_name))
        return cdx.Component(
            type=cdx.ComponentType.LIBRARY, bom_ref=purl, name=name, version=version,
            purl=PackageURL.from_string(purl), licenses=licenses,
            hashes=[HashType(alg=HashAlgorithm.SHA_256, content=sha256)],
        )

    components = [component(p.name, p.version, p.purl, p.sha256,
                            by_name.get(sbom_name(p.name)) if p.kind == "wheel" else None)
                  for p in (*lock.debs, *lock.wheels)]
    kedge_cdx = component("kedge", version, f"pkg:pypi/kedge@{version}", kedge_sha256,
                          WheelInfo("kedge", version, "Apache-2.0", "", ()))
    digest = image.manifest_digest
    root = cdx.Component(
        type=cdx.ComponentType.CONTAINER, bom_ref=f"pkg:oci/{IMAGE_NAME}@{digest}", name=IMAGE_NAME,
        version=version, purl=PackageURL("oci", name=IMAGE_NAME, version=digest, qualifiers={"tag": version}),
        hashes=[HashType(alg=HashAlgorithm.SHA_256, content=digest.split(":", 1)[1])],
    )
    bom = Bom(serial_number=uuid.UUID(int=0),
              metadata=BomMetaData(timestamp=dt.datetime.fromtimestamp(epoch, dt.timezone.utc), component=root),
              components=[kedge_cdx, *components])
    bom.metadata.tools.components.add(
        cdx.Component(type=cdx.ComponentType.APPLICATION, name="kedge-release", version=tool_version))
    bom.register_dependency(root, [kedge_cdx, *components])
    doc = json.loads(release_sbom._serialise(bom))
    doc.pop("serialNumber", None)
    content = hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()
    bom.serial_number = uuid.uuid5(uuid.NAMESPACE_URL, f"kedge-image-sbom:{content}")
    return release_sbom.dump(bom)


def read_lock(src: Path) -> tuple[Lock, bytes]:
    path = src / LOCK_PATH
    if path.is_symlink() or not path.is_file():
        raise ConfigError(f"{LOCK_PATH} is missing from the source", code="bad_image_lock")
    data = path.read_bytes()[: MAX_LOCK_BYTES + 1]
    return parse_lock(data), data


# --- pinning a new set (maintainer's command, needs apt and PyPI) ------------------------


def _run(argv: list[str], env: dict[str, str] | None = None) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, timeout=600, check=False, env=env)  # nosec B603 - fixed argv: apt-get or this interpreter's pip
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise StateError(f"{argv[0]} did not run", code="lock_failed") from exc
    if done.returncode != 0:
        detail = done.stderr.decode("utf-8", "replace").strip()[-1000:]
        raise StateError(f"{' '.join(argv[:3])} failed: {detail}", code="lock_failed")
    return done.stdout.decode("utf-8", "replace")


def pin_debs(packages: Sequence[str]) -> list[Pinned]:
    """``apt-get download --print-uris``: URLs and SHA-256 from apt's signed indexes."""
    out = _run(["apt-get", "download", "--print-uris", "--", *packages])
    pins = []
    for line in out.splitlines():
        m = re.fullmatch(r"'(\S+)' (\S+)_(\S+)_(\S+)\.deb \d+ SHA256:([0-9a-f]{64})", line.strip())
        if m is None:
            continue
        url, name, version, arch, digest = m.groups()
        if arch not in (DEBIAN["arch"], "all"):
            raise StateError(f"{name} is for {arch}", code="lock_failed")
        pins.append(Pinned("deb", name, urllib.request.unquote(version), url.replace("http://", "https://", 1),
                           digest))
    if sorted(p.name for p in pins) != sorted(packages):
        raise StateError("apt-get did not print one URI per package", code="lock_failed")
    return sorted(pins, key=lambda p: p.name)


def pin_wheels(requirements: Sequence[str]) -> list[Pinned]:
    """``pip install --dry-run --report`` for the image's target: cp311 manylinux x86_64 wheels."""
    with tempfile.TemporaryDirectory(prefix="kedge-lock-") as tmp:
        req = Path(tmp) / "requirements.txt"
        req.write_text("".join(r + "\n" for r in requirements))
        report = Path(tmp) / "report.json"
        platforms = [f"manylinux_2_{n}_x86_64" for n in range(36, 16, -1)] + ["manylinux2014_x86_64",
                                                                            "manylinux1_x86_64"]
        argv = [sys.executable, "-m", "pip", "--isolated", "install", "--dry-run", "--ignore-installed",
                "--no-deps", "--only-binary", ":all:", "--python-version", PYTHON_TARGET["python"],
                "--implementation", "cp", "--abi", "cp311", "--abi", "abi3", "--abi", "none",
                "--target", str(Path(tmp) / "t"), "--report", str(report), "-q", "-r", str(req)]
        for plat in platforms:
            argv += ["--platform", plat]
        env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "TMPDIR", "SSL_CERT_FILE")}
        env["PIP_CONFIG_FILE"] = os.devnull
        _run(argv, env)
        doc = json.loads(report.read_text())
    pins = []
    for item in doc["install"]:
        info = item["download_info"]
        meta = item["metadata"]
        pins.append(Pinned("wheel", sbom_name(meta["name"]), meta["version"], info["url"],
                           info["archive_info"]["hashes"]["sha256"]))
    return sorted(pins, key=lambda p: p.name)


def make_lock(extras: tuple[str, ...] = ("cloud",)) -> Lock:
    """Pin the Debian packages and the wheels of the installed kedge's runtime closure."""
    import importlib.metadata

    from kedge.release import sbom as release_sbom

    dist = importlib.metadata.distribution("kedge")
    _direct, components = release_sbom.resolve_runtime(dist.requires or [], extras)
    reqs = sorted(f"{c.name}=={c.version}" for c in components)
    return Lock(tuple(pin_debs(DEBIAN_PACKAGES)), tuple(pin_wheels(reqs)))
