"""Offline signing of a release directory with a local ECDSA P-256 key.

``sign_release`` verifies before it signs: every artifact must match
``SHA256SUMS``, every Statement must speak only about those artifacts with those
digests, every artifact must be covered, and the in-toto links must be signed by
the build's functionary. Only then are DSSE envelopes and the root layout written
(each atomically), so the key never vouches for a directory someone has edited.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from kedge._internal.fsutil import PUBLIC_FILE, FileTooLarge, atomic_write, create_exclusive, read_bounded, sha256_file
from kedge.errors import ConfigError, VerificationError
from kedge.release import intoto, oci, provenance, sums
from kedge.release.image import IMAGE_NAME, IMAGE_SBOM_SUFFIX, IMAGE_SUFFIX
from kedge.verify.dsse import sign_envelope

MAX_KEY_BYTES = 16 * 1024
STATEMENT_SUFFIX = ".intoto.json"
ENVELOPE_SUFFIX = ".intoto.dsse.json"



def public_path_for(private_path: Path) -> Path:
    """``KEY.pem`` -> ``KEY.pub``; any other name gets ``.pub`` appended."""
    if private_path.suffix == ".pem":
        return private_path.with_suffix(".pub")
    return private_path.with_name(private_path.name + ".pub")


def keygen(out: Path) -> Path:
    """Create a new P-256 key at ``out`` (0600 from creation) and its public half.

    Refuses to overwrite either file: replacing a release key silently would orphan
    every signature made with the old one.
    """
    pub_path = public_path_for(out)
    if pub_path.exists():
        raise ConfigError(f"{pub_path} already exists; refusing to overwrite it", code="exists")
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    create_exclusive(out, pem)  # 0600 from the first byte; StateError("exists") if present
    create_exclusive(pub_path, public_pem(key.public_key()), mode=PUBLIC_FILE)
    return pub_path


def public_pem(key: ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def _read_bounded(path: Path) -> bytes:
    try:
        return read_bounded(path, MAX_KEY_BYTES)
    except OSError as exc:
        raise ConfigError(f"cannot read key {path}", code="bad_key") from exc
    except FileTooLarge as exc:
        raise ConfigError(f"{path} is too large to be a key", code="bad_key") from exc


def load_private_key(path: Path) -> ec.EllipticCurvePrivateKey:
    """Load an unencrypted PEM private key and insist on ECDSA P-256."""
    try:
        key = serialization.load_pem_private_key(_read_bounded(path), password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{path} is not an unencrypted PEM private key", code="bad_key") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise ConfigError(f"{path} is not an ECDSA P-256 key", code="bad_key")
    return key


def load_public_key(path: Path) -> ec.EllipticCurvePublicKey:
    try:
        key = serialization.load_pem_public_key(_read_bounded(path))
    except ValueError as exc:
        raise ConfigError(f"{path} is not a PEM public key", code="bad_key") from exc
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise ConfigError(f"{path} is not an ECDSA P-256 key", code="bad_key")
    return key


@dataclasses.dataclass(frozen=True)
class SignResult:
    envelopes: tuple[Path, ...]
    layout: Path
    keyid: str


def _regular_file(directory: Path, name: str) -> Path:
    path = directory / sums.check_name(name)
    if path.is_symlink() or not path.is_file():
        raise VerificationError(f"{name} is missing or not a regular file", code="artifact_missing")
    return path


def check_release_dir(directory: Path) -> tuple[dict[str, str], dict[Path, bytes]]:
    """Verify artifacts against SHA256SUMS and Statements against both.

    Returns the digests and ``{statement path: exact bytes}`` to be signed.
    """
    sums_path = _regular_file(directory, sums.SUMS_NAME)
    digests = sums.parse_sums(sums_path.read_bytes()[: sums.MAX_SUMS_BYTES + 1])
    for name, digest in digests.items():
        if sha256_file(_regular_file(directory, name)) != digest:
            raise VerificationError(f"{name} does not match SHA256SUMS", code="digest_mismatch")
    statements: dict[Path, bytes] = {}
    covered: set[str] = set()
    for path in sorted(directory.glob("*" + STATEMENT_SUFFIX)):
        if path.is_symlink() or not path.is_file():
            raise VerificationError(f"{path.name} is not a regular file", code="malformed_statement")
        data = path.read_bytes()[: provenance.MAX_STATEMENT_BYTES + 1]
        doc = provenance.parse_statement(data)
        subjects = provenance.subject_digests(doc)
        for name, digest in subjects.items():
            if name == IMAGE_NAME and name not in digests:
                # An image's second subject: its manifest digest, which must be the manifest
                # in the archive this same statement names (and SHA256SUMS lists).
                archives = [n for n in subjects if n.endswith(IMAGE_SUFFIX) and digests.get(n) == subjects[n]]
                if len(archives) != 1 or _manifest_hex(directory / archives[0]) != digest:
                    raise VerificationError(f"{path.name} names an image manifest not in the archive",
                                            code="digest_mismatch")
                continue
            if digests.get(name) != digest:
                raise VerificationError(f"{path.name} names {name} with a digest not in SHA256SUMS",
                                        code="digest_mismatch")
            covered.add(name)
        statements[path] = data
    missing = sorted(set(digests) - covered)
    if missing:
        raise VerificationError(f"no provenance statement for {missing}", code="missing_provenance")
    return digests, statements


def _manifest_hex(archive: Path) -> str:
    with archive.open("rb") as fh:
        return oci.read_archive(fh).manifest_digest.split(":", 1)[1]


def _artifact_names(digests: dict[str, str]) -> tuple[str, str, str, tuple[str, str] | None]:
    """(wheel, sdist, SBOM, (image archive, image SBOM) or None)."""
    images = [n for n in digests if n.endswith(IMAGE_SUFFIX)]
    image_sboms = [n for n in digests if n.endswith(IMAGE_SBOM_SUFFIX)]
    wheels = [n for n in digests if n.endswith(".whl")]
    sdists = [n for n in digests if n.endswith(".tar.gz")]
    sboms = [n for n in digests if n.endswith(".cdx.json") and n not in image_sboms]
    image = (images[0], image_sboms[0]) if len(images) == 1 and len(image_sboms) == 1 else None
    expected = 5 if image else 3
    if len(wheels) != 1 or len(sdists) != 1 or len(sboms) != 1 or len(digests) != expected \
            or len(images) != len(image_sboms):
        raise VerificationError("a release holds exactly one wheel, one sdist and one SBOM "
                                "(and optionally one OCI image archive and its SBOM)", code="unexpected_artifacts")
    return wheels[0], sdists[0], sboms[0], image


def sign_release(
    directory: Path,
    private_key: ec.EllipticCurvePrivateKey,
    *,
    now: dt.datetime,
    layout_days: int = 365,
    expected_functionary: ec.EllipticCurvePublicKey | None = None,
) -> SignResult:
    """DSSE-sign every Statement and sign the in-toto root layout; verify first.

    Without ``expected_functionary`` the release key vouches for whatever functionary
    key the build left in ``in-toto/`` (an ephemeral one, normally) -- fine when signing
    right after a build you ran; pass the key the build used (``--link-key``) to pin it
    when the directory travelled through hands you do not trust.
    """
    if not 1 <= layout_days <= 3650:
        raise ConfigError("layout validity must be 1..3650 days", code="bad_layout_expiry")
    digests, statements = check_release_dir(directory)
    wheel, sdist, sbom_name, image = _artifact_names(digests)
    link_dir = directory / intoto.LINK_DIR
    functionary = intoto.load_functionary(link_dir)
    if expected_functionary is not None and public_pem(functionary) != public_pem(expected_functionary):
        raise VerificationError("the links were not signed by the expected functionary key",
                                code="unexpected_functionary")
    steps = intoto.STEP_NAMES + ((intoto.IMAGE_STEP,) if image else ())
    links = intoto.check_links(link_dir, functionary, steps)
    built = {**links["build"].products, **links["sbom"].products,
             **(links[intoto.IMAGE_STEP].products if image else {})}
    for name in (wheel, sdist, sbom_name, *(image or ())):
        if built.get(name, {}).get("sha256") != digests[name]:
            raise VerificationError(f"{name} is not what the recorded build step produced",
                                    code="digest_mismatch")

    keyid = intoto.keyid_of(private_key.public_key())
    envelopes = []
    for path, payload in statements.items():
        env = sign_envelope(private_key, payload, provenance.PAYLOAD_TYPE, keyid)
        out = path.with_name(path.name[: -len(STATEMENT_SUFFIX)] + ENVELOPE_SUFFIX)
        atomic_write(out, (json.dumps(env, indent=2, sort_keys=True) + "\n").encode("ascii"))
        envelopes.append(out)
    layout = intoto.make_layout(functionary, wheel, sdist, sbom_name,
                                expires=now + dt.timedelta(days=layout_days), image=image)
    layout_path = directory / intoto.LAYOUT_NAME
    tmp = directory / f".{intoto.LAYOUT_NAME}.{os.getpid()}.tmp"
    try:
        intoto.sign_layout(layout, private_key, tmp)
        os.replace(tmp, layout_path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return SignResult(tuple(envelopes), layout_path, keyid)
