"""Waivers: accepted risks that turn a FAIL into a recorded WARN until they expire.

File format (YAML)::

    waivers:
      - id: KEDGE-CLOUD-011          # check id (required)
        scope: cloud                 # optional: cloud | edge | cluster
        reason: "TLS 1.2 clients until the fleet upgrade"   # required
        expires: 2026-12-31          # required, inclusive (UTC date)

Parsing is strict (unknown keys, missing fields, bad dates are errors) and applying
is a pure function of ``now``: a waiver past its expiry no longer suppresses anything,
and the result records that an expired waiver was found.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path
from typing import Any, Iterable

import yaml

from kedge.audit.model import CHECK_ID, SCOPES, Outcome, Result, Status, Waiver
from kedge._internal import fsutil
from kedge.errors import ConfigError

MAX_WAIVER_BYTES = 256 * 1024
MAX_WAIVERS = 1000
_KEYS = {"id", "scope", "reason", "expires"}


def _date(value: Any, where: str) -> str:
    if isinstance(value, dt.datetime):
        value = value.date()
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, str):
        try:
            return dt.date.fromisoformat(value.strip()).isoformat()
        except ValueError:
            pass
    raise ConfigError(f"{where}: expires must be a date (YYYY-MM-DD)", code="bad_waiver")


def from_dict(data: Any) -> tuple[Waiver, ...]:
    if data is None:
        return ()
    if not isinstance(data, dict) or set(data) != {"waivers"} or not isinstance(data["waivers"], list):
        raise ConfigError("waiver file must be a mapping with one key 'waivers' holding a list", code="bad_waiver")
    items = data["waivers"]
    if len(items) > MAX_WAIVERS:
        raise ConfigError(f"more than {MAX_WAIVERS} waivers", code="bad_waiver")
    out = []
    for n, item in enumerate(items, 1):
        where = f"waiver #{n}"
        if not isinstance(item, dict) or set(item) - _KEYS or not {"id", "reason", "expires"} <= set(item):
            raise ConfigError(f"{where}: needs id, reason, expires (and optional scope) only", code="bad_waiver")
        cid, reason, scope = item["id"], item["reason"], item.get("scope")
        if not isinstance(cid, str) or not CHECK_ID.fullmatch(cid):
            raise ConfigError(f"{where}: bad check id {cid!r}", code="bad_waiver")
        if not isinstance(reason, str) or not reason.strip():
            raise ConfigError(f"{where}: reason must be non-empty text", code="bad_waiver")
        if scope is not None and scope not in SCOPES:
            raise ConfigError(f"{where}: scope must be one of {SCOPES}", code="bad_waiver")
        out.append(Waiver(check_id=cid, reason=reason.strip(), expires=_date(item["expires"], where), scope=scope))
    return tuple(out)


def load(path: str | Path) -> tuple[Waiver, ...]:
    p = Path(path)
    try:
        raw = fsutil.read_bounded(p, MAX_WAIVER_BYTES)
    except OSError as exc:
        raise ConfigError(f"cannot read waiver file {p}", code="bad_waiver") from exc
    except fsutil.FileTooLarge as exc:
        raise ConfigError(f"waiver file {p} is too large", code="bad_waiver") from exc
    try:
        return from_dict(yaml.safe_load(raw))
    except yaml.YAMLError as exc:
        raise ConfigError(f"waiver file {p} is not valid YAML", code="bad_waiver") from exc


def apply(results: Iterable[Result], waivers: Iterable[Waiver], now: dt.datetime) -> tuple[Result, ...]:
    """Suppress each FAIL that has an unexpired matching waiver into a WARN carrying it."""
    today = now.astimezone(dt.timezone.utc).date()
    ws = list(waivers)
    out = []
    for r in results:
        matching = [w for w in ws if w.check_id == r.check.id and (w.scope is None or w.scope == r.check.scope)]
        if r.status is not Status.FAIL or not matching:
            out.append(r)
            continue
        live = [w for w in matching if dt.date.fromisoformat(w.expires) >= today]
        if live:
            w = max(live, key=lambda x: x.expires)
            outcome = dataclasses.replace(
                r.outcome, status=Status.WARN,
                actual=f"{r.outcome.actual} [waived until {w.expires}: {w.reason}]")
            out.append(dataclasses.replace(r, outcome=outcome, waiver=w))
        else:
            out.append(dataclasses.replace(r, expired_waiver=max(matching, key=lambda x: x.expires)))
    return tuple(out)


__all__ = ["Outcome", "apply", "from_dict", "load"]
