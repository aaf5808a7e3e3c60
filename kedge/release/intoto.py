"""in-toto links for the release steps and the root layout that binds them.

The build records one signed link per step (``checkout``, ``build``, ``sbom``) with
the in-toto library's own artifact recorder, signed by a *functionary* key -- an
ephemeral per-build key unless one is given. ``kedge release sign`` then writes the
root layout, signed by the release key, which names that functionary for every step
and states how artifacts must flow: the build consumes exactly what checkout
produced, the sbom step consumes exactly the wheel the build produced, and the
final inspection (run by ``in-toto-verify`` in the release directory) requires the
wheel, sdist and SBOM on disk to be byte-for-byte those products. Anything changed
after its step fails verification.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from kedge.errors import VerificationError

LINK_DIR = "in-toto"
FUNCTIONARY_PUB = "functionary.pub"
LAYOUT_NAME = "root.layout"
STEP_NAMES = ("checkout", "build", "sbom")
#: The cloudcore image step, present when the release holds the image.
IMAGE_STEP = "image"
IMAGE_LOCK = "provenance/image.lock.json"
INSPECTION_NAME = "check-release"
#: Excluded from every recorded artifact list: VCS data and interpreter droppings.
EXCLUDE = [".git", "*.pyc", "__pycache__", "*.link*"]


def signer_for(private_key: ec.EllipticCurvePrivateKey) -> Any:
    """A securesystemslib signer around a cryptography ECDSA P-256 key."""
    from securesystemslib.signer import CryptoSigner

    return CryptoSigner(private_key)


def key_dict(public_key: ec.EllipticCurvePublicKey) -> dict[str, Any]:
    """The in-toto key dict (with ``keyid``) for ``public_key``."""
    from securesystemslib.signer import SSlibKey

    key = SSlibKey.from_crypto(public_key)
    out = key.to_dict()
    out["keyid"] = key.keyid
    return out


def keyid_of(public_key: ec.EllipticCurvePublicKey) -> str:
    return str(key_dict(public_key)["keyid"])


def record(paths: Sequence[str], base_path: Path) -> dict[str, Any]:
    """Hash ``paths`` (files or directories) relative to ``base_path`` with in-toto."""
    from in_toto.runlib import record_artifacts_as_dict

    if not paths:
        return {}
    return dict(record_artifacts_as_dict(list(paths), exclude_patterns=EXCLUDE, base_path=str(base_path),
                                         follow_symlink_dirs=False))


def write_link(
    link_dir: Path,
    name: str,
    command: Sequence[str],
    materials: dict[str, Any],
    products: dict[str, Any],
    signer: Any,
) -> Path:
    """Sign a link for step ``name`` and write it as ``NAME.KEYID8.link``."""
    from in_toto.models.link import FILENAME_FORMAT, Link
    from in_toto.models.metadata import Metablock

    link = Link(name=name, materials=materials, products=products, command=list(command),
                byproducts={}, environment={})
    block = Metablock(signed=link)
    signature = block.create_signature(signer)
    path = link_dir / FILENAME_FORMAT.format(step_name=name, keyid=signature.keyid)
    block.dump(str(path))
    return path


def make_layout(
    functionary: ec.EllipticCurvePublicKey,
    wheel: str,
    sdist: str,
    sbom: str,
    *,
    expires: dt.datetime,
    sums_name: str = "SHA256SUMS",
    image: tuple[str, str] | None = None,
) -> Any:
    """The root layout for one release (artifact names are fixed into its rules).

    ``image`` is ``(oci archive, image SBOM)``: an ``image`` step that consumes
    exactly the built wheel and the image lock of the checkout and creates those two.
    """
    from in_toto.models.layout import Inspection, Layout, Step

    fkey = key_dict(functionary)
    keyid = fkey["keyid"]
    checkout = Step(name="checkout", pubkeys=[keyid], threshold=1,
                    expected_command=["git", "clone"],
                    expected_materials=[["DISALLOW", "*"]],
                    expected_products=[["CREATE", "*"], ["DISALLOW", "*"]])
    build = Step(name="build", pubkeys=[keyid], threshold=1,
                 expected_command=["python", "-m", "hatchling", "build", "-t", "sdist", "-t", "wheel"],
                 expected_materials=[["MATCH", "*", "WITH", "PRODUCTS", "FROM", "checkout"], ["DISALLOW", "*"]],
                 expected_products=[["CREATE", wheel], ["CREATE", sdist], ["DISALLOW", "*"]])
    sbom_step = Step(name="sbom", pubkeys=[keyid], threshold=1,
                     expected_command=["kedge-release", "sbom"],
                     expected_materials=[["MATCH", wheel, "WITH", "PRODUCTS", "FROM", "build"], ["DISALLOW", "*"]],
                     expected_products=[["CREATE", sbom], ["DISALLOW", "*"]])
    steps = [checkout, build, sbom_step]
    made = [(wheel, "build"), (sdist, "build"), (sbom, "sbom")]
    if image is not None:
        steps.append(Step(
            name=IMAGE_STEP, pubkeys=[keyid], threshold=1,
            expected_command=["kedge-release", "image"],
            expected_materials=[["MATCH", wheel, "WITH", "PRODUCTS", "FROM", "build"],
                                ["MATCH", IMAGE_LOCK, "WITH", "PRODUCTS", "FROM", "checkout"],
                                ["DISALLOW", "*"]],
            expected_products=[["CREATE", image[0]], ["CREATE", image[1]], ["DISALLOW", "*"]]))
        made += [(image[0], IMAGE_STEP), (image[1], IMAGE_STEP)]
    inspection = Inspection(
        name=INSPECTION_NAME,
        run=["sha256sum", "--check", "--strict", "--quiet", sums_name],
        expected_materials=[
            *(["REQUIRE", name] for name, _ in made),
            *(["MATCH", name, "WITH", "PRODUCTS", "FROM", step] for name, step in made),
            # Whatever is still unmatched differs from what its step made.
            *(["DISALLOW", name] for name, _ in made),
            ["ALLOW", "*"],
        ],
        expected_products=[["ALLOW", "*"]],
    )
    return Layout(
        steps=steps,
        inspect=[inspection],
        keys={keyid: fkey},
        expires=expires.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        readme="kedge release: clean checkout -> hatchling sdist+wheel -> CycloneDX SBOM"
               + (" -> cloudcore OCI image + image SBOM" if image else ""),
    )


def sign_layout(layout: Any, private_key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    from in_toto.models.metadata import Metablock

    block = Metablock(signed=layout)
    block.create_signature(signer_for(private_key))
    block.dump(str(path))


def load_functionary(link_dir: Path) -> ec.EllipticCurvePublicKey:
    """The build's functionary public key, as the build wrote it."""
    path = link_dir / FUNCTIONARY_PUB
    try:
        data = path.read_bytes()[: 16 * 1024]
        key = serialization.load_pem_public_key(data)
    except (OSError, ValueError) as exc:
        raise VerificationError(f"cannot read {path}", code="bad_functionary_key") from exc
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise VerificationError("functionary key must be ECDSA P-256", code="bad_functionary_key")
    return key


def check_links(link_dir: Path, functionary: ec.EllipticCurvePublicKey,
                steps: tuple[str, ...] = STEP_NAMES) -> dict[str, Any]:
    """Load each step's link and verify its signature; return ``{step: Link}``.

    Run before the release key vouches for the functionary in a layout: a link dir
    with a missing or foreign-signed link is refused at signing time already.
    """
    from in_toto.models.link import FILENAME_FORMAT
    from in_toto.models.metadata import Metablock
    from securesystemslib.signer import SSlibKey

    key = SSlibKey.from_crypto(functionary)
    out = {}
    for step in steps:
        path = link_dir / FILENAME_FORMAT.format(step_name=step, keyid=key.keyid)
        try:
            block = Metablock.load(str(path))
            block.verify_signature(key_dict(functionary))
        except Exception as exc:  # in-toto raises a zoo of types; any of them means "no"
            raise VerificationError(f"link for step {step} missing or not signed by the functionary",
                                    code="bad_link") from exc
        link = block.signed
        if link.name != step:
            raise VerificationError(f"link {path.name} is for step {link.name!r}", code="bad_link")
        out[step] = link
    return out


def verify_in_cwd(layout_path: Path, layout_key: ec.EllipticCurvePublicKey, link_dir: Path) -> None:
    """Run in-toto's final-product verification; the caller has chdir'd into the release.

    in-toto runs the layout's inspection in the current directory, so only a CLI
    process (which owns its cwd) should call this. Any in-toto failure becomes a
    :class:`VerificationError` whose code names the stage that failed.
    """
    from in_toto import exceptions as itx
    from in_toto.models.metadata import Metadata
    from in_toto.verifylib import in_toto_verify

    key = key_dict(layout_key)
    try:
        layout = Metadata.load(str(layout_path))
    except Exception as exc:  # unreadable or malformed layout, whatever in-toto raises
        raise VerificationError("root layout unreadable", code="bad_layout") from exc
    codes = [
        (itx.SignatureVerificationError, "layout_signature_invalid"),
        (itx.LayoutExpiredError, "layout_expired"),
        (itx.ThresholdVerificationError, "link_signature_invalid"),
        (itx.LinkNotFoundError, "link_missing"),
        (itx.RuleVerificationError, "artifact_rule_failed"),
        (itx.BadReturnValueError, "inspection_failed"),
    ]
    try:
        in_toto_verify(layout, {key["keyid"]: key}, link_dir_path=str(link_dir), persist_inspection_links=False)
    except Exception as exc:
        for cls, code in codes:
            if isinstance(exc, cls):
                first = (str(exc).splitlines() or [""])[0][:300]
                raise VerificationError(f"in-toto verification failed: {first}", code=code) from exc
        raise VerificationError(f"in-toto verification failed: {type(exc).__name__}", code="intoto_failed") from exc
