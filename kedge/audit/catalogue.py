"""Load and validate the check catalogue (``security/audit-checks.yaml``).

The catalogue is data so that security teams can read ids, severities and references
without reading code; the code only supplies one pure function per id
(:mod:`kedge.audit.checks`). Loading fails closed: an unknown key, a duplicate id or a
malformed reference is a :class:`~kedge.errors.ConfigError`, never a silently shorter audit.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import yaml

from kedge.audit.model import REFERENCE_KEYS, Check, Severity
from kedge._internal import fsutil
from kedge.errors import ConfigError

MAX_CATALOGUE_BYTES = 1024 * 1024
_CHECK_KEYS = {"id", "title", "scope", "severity", "automated", "remediation", "references"}
_TOP_KEYS = {"catalogue_version", "cis_benchmark", "support", "checks"}


@dataclasses.dataclass(frozen=True)
class Catalogue:
    checks: tuple[Check, ...]
    cis_benchmark: str
    oldest_supported: str

    def by_id(self) -> dict[str, Check]:
        return {c.id: c for c in self.checks}


def default_path() -> Path:
    """Where the catalogue lives: shipped inside the package (wheel) or in the source tree."""
    here = Path(__file__).resolve().parent
    packaged = here / "audit-checks.yaml"
    if packaged.is_file():
        return packaged
    return here.parents[1] / "security" / "audit-checks.yaml"


def load(path: str | Path | None = None) -> Catalogue:
    p = Path(path) if path is not None else default_path()
    try:
        raw = fsutil.read_bounded(p, MAX_CATALOGUE_BYTES)
    except OSError as exc:
        raise ConfigError(f"cannot read check catalogue {p}", code="no_catalogue") from exc
    except fsutil.FileTooLarge as exc:
        raise ConfigError(f"check catalogue {p} is too large", code="bad_catalogue") from exc
    try:
        data = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise ConfigError(f"check catalogue {p} is not valid YAML", code="bad_catalogue") from exc
    return from_dict(data)


def from_dict(data: Any) -> Catalogue:
    if not isinstance(data, dict) or set(data) - _TOP_KEYS or "checks" not in data:
        raise ConfigError("catalogue must be a mapping with a 'checks' list", code="bad_catalogue")
    items = data["checks"]
    if not isinstance(items, list) or not items:
        raise ConfigError("catalogue 'checks' must be a non-empty list", code="bad_catalogue")
    checks: list[Check] = []
    seen: set[str] = set()
    for item in items:
        if not isinstance(item, dict) or set(item) - _CHECK_KEYS or not {"id", "title", "scope", "severity",
                                                                        "automated", "remediation"} <= set(item):
            raise ConfigError(f"bad catalogue entry {item!r:.80}", code="bad_catalogue")
        refs = item.get("references") or {}
        if not isinstance(refs, dict) or set(refs) - set(REFERENCE_KEYS):
            raise ConfigError(f"{item.get('id')}: bad references", code="bad_catalogue")
        check = Check(
            id=item["id"],
            title=item["title"],
            scope=item["scope"],
            severity=Severity.parse(item["severity"]),
            automated=item["automated"],
            remediation=item["remediation"],
            references=tuple((k, str(v)) for k, v in refs.items()),
        )
        if check.id in seen:
            raise ConfigError(f"duplicate check id {check.id}", code="bad_catalogue")
        seen.add(check.id)
        checks.append(check)
    support = data.get("support") or {}
    oldest = support.get("oldest_supported", "0") if isinstance(support, dict) else "0"
    return Catalogue(checks=tuple(checks), cis_benchmark=str(data.get("cis_benchmark", "")),
                     oldest_supported=str(oldest))
