"""CycloneDX 1.5 JSON SBOM of kedge's runtime dependencies (cyclonedx-python-lib).

Two halves: :func:`make_bom` is pure (components in, a cyclonedx-python-lib
``Bom`` out, timestamp a parameter, serial number derived from the content) so
two builds from the same inputs write identical bytes; and
:func:`resolve_runtime` walks ``Requires-Dist`` of the built wheel through the
installed distributions (``importlib.metadata``) -- the versions that were actually
resolved next to the build, not the ranges in ``pyproject.toml``. A requirement
that is not installed is an error: an SBOM with holes would be worse than none.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import email.parser
import hashlib
import importlib.metadata
import json
import re
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

from cyclonedx.model import HashAlgorithm, HashType
from cyclonedx.model import component as cdx
from cyclonedx.model.bom import Bom, BomMetaData
from cyclonedx.model.license import DisjunctiveLicense, LicenseExpression
from cyclonedx.output.json import JsonV1Dot5
from packageurl import PackageURL

from kedge.errors import ConfigError, StateError

SPEC_VERSION = "1.5"
MAX_COMPONENTS = 500
_SCOPES = ("required", "optional")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")
_VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9.+!_-]{0,99}")
_HEX64 = re.compile(r"[0-9a-f]{64}")


def canonical_name(name: str) -> str:
    """PEP 503 normalisation, which is also the purl form for ``pkg:pypi``."""
    return re.sub(r"[-_.]+", "-", name).lower()


def purl(name: str, version: str) -> str:
    return f"pkg:pypi/{canonical_name(name)}@{version}"


@dataclasses.dataclass(frozen=True)
class Component:
    """One resolved Python distribution."""

    name: str
    version: str
    scope: str = "required"
    license_expression: str = ""
    license_name: str = ""
    depends_on: tuple[str, ...] = ()  # canonical names

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.fullmatch(self.name):
            raise ConfigError(f"bad component name {self.name!r}", code="bad_sbom_input")
        if not isinstance(self.version, str) or not _VERSION.fullmatch(self.version):
            raise ConfigError(f"bad version for {self.name}", code="bad_sbom_input")
        if self.scope not in _SCOPES:
            raise ConfigError(f"bad scope for {self.name}", code="bad_sbom_input")

    @property
    def ref(self) -> str:
        return purl(self.name, self.version)

    def to_cyclonedx(self, *, with_scope: bool = True) -> cdx.Component:
        licenses: list[Any] = []
        if self.license_expression:
            licenses.append(LicenseExpression(self.license_expression))
        elif self.license_name:
            licenses.append(DisjunctiveLicense(name=self.license_name))
        return cdx.Component(
            type=cdx.ComponentType.LIBRARY,
            bom_ref=self.ref,
            name=canonical_name(self.name),
            version=self.version,
            purl=PackageURL(type="pypi", name=canonical_name(self.name), version=self.version),
            scope=(cdx.ComponentScope.REQUIRED if self.scope == "required" else cdx.ComponentScope.OPTIONAL)
            if with_scope
            else None,
            licenses=licenses,
        )


#: Stands in for the serial number while the content it is derived from is hashed.
_PLACEHOLDER_SERIAL = uuid.UUID(int=0)


def make_bom(
    root: Component,
    root_sha256: str,
    components: Sequence[Component],
    *,
    timestamp: int,
    tool_version: str,
) -> Bom:
    """The CycloneDX BOM for ``root`` (the built wheel) and its dependencies.

    Built with cyclonedx-python-lib. ``serialNumber`` is a UUIDv5 of the rest of
    the content, so it is unique per distinct SBOM yet reproducible;
    ``metadata.timestamp`` is ``SOURCE_DATE_EPOCH``.
    """
    if not _HEX64.fullmatch(root_sha256):
        raise ConfigError("bad root sha256", code="bad_sbom_input")
    if len(components) > MAX_COMPONENTS:
        raise ConfigError("too many components", code="bad_sbom_input")
    by_name = {canonical_name(c.name): c for c in components}
    if len(by_name) != len(components):
        raise ConfigError("duplicate component", code="bad_sbom_input")
    for comp in [root, *components]:
        missing = [d for d in comp.depends_on if d not in by_name]
        if missing:
            raise ConfigError(f"{comp.name} depends on unresolved {missing}", code="bad_sbom_input")
    root_cdx = root.to_cyclonedx(with_scope=False)
    root_cdx.hashes.add(HashType(alg=HashAlgorithm.SHA_256, content=root_sha256))
    cdx_of = {key: comp.to_cyclonedx() for key, comp in sorted(by_name.items())}
    bom = Bom(
        serial_number=_PLACEHOLDER_SERIAL,
        metadata=BomMetaData(
            timestamp=dt.datetime.fromtimestamp(timestamp, dt.timezone.utc),
            component=root_cdx,
        ),
        components=cdx_of.values(),
    )
    bom.metadata.tools.components.add(
        cdx.Component(type=cdx.ComponentType.APPLICATION, name="kedge-release", version=tool_version)
    )
    bom.register_dependency(root_cdx, [cdx_of[d] for d in root.depends_on])
    for key, comp in by_name.items():
        bom.register_dependency(cdx_of[key], [cdx_of[d] for d in comp.depends_on])
    doc = json.loads(_serialise(bom))
    doc.pop("serialNumber", None)
    digest = hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()
    bom.serial_number = uuid.uuid5(uuid.NAMESPACE_URL, f"kedge-sbom:{digest}")
    return bom


def _serialise(bom: Bom) -> str:
    return JsonV1Dot5(bom).output_as_string()


def dump(bom: Bom) -> bytes:
    """The SBOM file's bytes: CycloneDX 1.5 JSON, keys sorted, ASCII, one trailing newline."""
    doc = json.loads(_serialise(bom))
    return (json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=True) + "\n").encode("ascii")


# --- shell: what is installed ------------------------------------------------------


def wheel_metadata(metadata_text: str) -> tuple[str, str, list[str], list[str]]:
    """(name, version, Requires-Dist lines, Provides-Extra) from a wheel's METADATA."""
    msg = email.parser.Parser().parsestr(metadata_text, headersonly=True)
    name, version = msg.get("Name"), msg.get("Version")
    if not name or not version:
        raise StateError("wheel METADATA lacks Name/Version", code="bad_wheel")
    return str(name), str(version), list(msg.get_all("Requires-Dist") or []), list(msg.get_all("Provides-Extra") or [])


def _license_of(meta: Any) -> tuple[str, str]:
    expression = meta.get("License-Expression") or ""
    if expression:
        return str(expression).strip(), ""
    name = (meta.get("License") or "").strip()
    if name and "\n" not in name and len(name) <= 80 and name.upper() != "UNKNOWN":
        return "", name
    for classifier in meta.get_all("Classifier") or []:
        if classifier.startswith("License :: "):
            return "", classifier.rsplit(" :: ", 1)[-1]
    return "", ""


def _applicable(requirement: str, extras: Iterable[str]) -> Any | None:
    """The parsed requirement if its marker holds for one of ``extras`` (or none)."""
    from packaging.requirements import InvalidRequirement, Requirement

    try:
        req = Requirement(requirement)
    except InvalidRequirement as exc:
        raise StateError(f"unparseable requirement {requirement!r}", code="bad_requirement") from exc
    if req.marker is None:
        return req
    for extra in ("", *extras):
        if req.marker.evaluate({"extra": extra}):
            return req
    return None


def resolve_runtime(
    requires_dist: Sequence[str],
    optional_extras: Sequence[str] = (),
) -> tuple[tuple[str, ...], list[Component]]:
    """Walk requirements transitively through installed distributions.

    Returns the root's direct dependency names and every component reached. A
    component reachable without any of ``optional_extras`` is ``required``;
    one reached only through them is ``optional``.
    """
    found: dict[str, dict[str, Any]] = {}

    def walk(requirements: Sequence[str], extras: Sequence[str], scope: str) -> list[str]:
        direct = []
        queue: list[tuple[str, tuple[str, ...]]] = [(r, tuple(extras)) for r in requirements]
        first = len(queue)
        index = 0
        while index < len(queue):
            if len(found) > MAX_COMPONENTS:
                raise StateError("dependency graph too large", code="bad_requirement")
            requirement, active = queue[index]
            is_direct = index < first
            index += 1
            req = _applicable(requirement, active)
            if req is None:
                continue
            key = canonical_name(req.name)
            if is_direct:
                direct.append(key)
            if key in found:
                if scope == "required":
                    found[key]["scope"] = "required"
                if not set(req.extras) <= found[key]["extras"]:
                    found[key]["extras"] |= set(req.extras)
                else:
                    continue
            try:
                dist = importlib.metadata.distribution(req.name)
            except importlib.metadata.PackageNotFoundError as exc:
                raise StateError(f"runtime dependency {req.name} is not installed", code="unresolved_dependency") from exc
            if key not in found:
                found[key] = {"dist": dist, "scope": scope, "extras": set(req.extras), "deps": set()}
            for sub in dist.requires or []:
                subreq = _applicable(sub, tuple(found[key]["extras"]))
                if subreq is not None:
                    found[key]["deps"].add(canonical_name(subreq.name))
                    queue.append((sub, tuple(found[key]["extras"])))
        return direct

    direct = walk([r for r in requires_dist if _applicable(r, ()) is not None], (), "required")
    if optional_extras:
        direct += walk([r for r in requires_dist if _applicable(r, ()) is None], optional_extras, "optional")
    components = []
    for key, entry in found.items():
        meta = entry["dist"].metadata
        expression, lic_name = _license_of(meta)
        components.append(Component(
            name=key,
            version=str(entry["dist"].version),
            scope=entry["scope"],
            license_expression=expression,
            license_name=lic_name,
            depends_on=tuple(sorted(entry["deps"])),
        ))
    return tuple(sorted(set(direct))), components
