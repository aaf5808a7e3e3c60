"""The API server's request/response types, shared constants and small JSON helpers."""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import unicodedata
from collections.abc import Iterable
from typing import Any

from kedge.apiserver import podlog
from kedge.apiserver.status import ApiError

# Bounds on client input (kedge.limits), under the names the api modules import from here.
from kedge.limits import (
    API_MAX_JSON_DEPTH as MAX_JSON_DEPTH,  # noqa: F401
    API_MAX_JSON_NODES as MAX_JSON_NODES,  # noqa: F401
    API_MAX_LIST_LIMIT as MAX_LIST_LIMIT,  # noqa: F401
    WATCH_DEFAULT_TIMEOUT_S as DEFAULT_WATCH_TIMEOUT_S,  # noqa: F401
    WATCH_MAX_BACKLOG as MAX_WATCH_BACKLOG,  # noqa: F401
    WATCH_MAX_BACKLOG_BYTES as MAX_WATCH_BACKLOG_BYTES,  # noqa: F401
    WATCH_MAX_TIMEOUT_S as MAX_WATCH_TIMEOUT_S,  # noqa: F401
)

BOOTSTRAP_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")


JSON = "application/json"


@dataclasses.dataclass(frozen=True)
class User:
    name: str
    groups: tuple[str, ...]
    uid: str = ""


@dataclasses.dataclass
class Request:
    method: str
    target: str
    headers: dict[str, list[str]]  # lower-cased names
    body: bytes
    user: User
    # A YAML body decoded ahead, off the event loop (API.handle_async): ("ok", value) or ("error", ApiError).
    decoded_yaml: tuple[str, Any] | None = None

    def header(self, name: str) -> str | None:
        v = self.headers.get(name.lower())
        return v[-1] if v else None


@dataclasses.dataclass
class Response:
    status: int
    body: bytes
    content_type: str = JSON
    audit: dict[str, Any] = dataclasses.field(default_factory=dict)
    # Admission warnings for the client (HTTP ``Warning`` headers; kubectl prints them).
    warnings: list[str] = dataclasses.field(default_factory=list)


# Kubernetes' bounds on a response's warnings: once their text passes WARNING_TOTAL_RUNES in
# all, every one is cut to WARNING_ITEM_RUNES characters.
WARNING_TOTAL_RUNES = 4 * 1024
WARNING_ITEM_RUNES = 256


def warning_header_values(texts: Iterable[str]) -> list[bytes]:
    """``Warning`` header values as Kubernetes' API server writes them: ``299 - "text"``.

    Duplicates are dropped, as is a text that cannot be sent (control characters, lone
    surrogates); quotes and backslashes are escaped; bounded as above."""
    unique = [t for t in dict.fromkeys(texts) if t and _sendable(t)]
    if sum(len(t) for t in unique) > WARNING_TOTAL_RUNES:
        unique = [t[:WARNING_ITEM_RUNES] for t in unique]
    return [('299 - "' + t.replace("\\", "\\\\").replace('"', '\\"') + '"').encode() for t in unique]


def _sendable(text: str) -> bool:
    return not any(unicodedata.category(ch) in ("Cc", "Cs") for ch in text)


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def rfc3339(ts: float) -> str:
    return _dt.datetime.fromtimestamp(int(ts), tz=_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_rfc3339(s: str) -> float | None:
    try:
        return _dt.datetime.strptime(s, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=_dt.timezone.utc).timestamp()
    except (TypeError, ValueError):
        return None


def _meta(obj: dict[str, Any]) -> dict[str, Any]:
    m = obj.get("metadata")
    if not isinstance(m, dict):
        m = {}
        obj["metadata"] = m
    return m


def _without(obj: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if k not in keys}


@dataclasses.dataclass
class LogFetch:
    """``pods/NAME/log``, checked and authorized; the node is asked in :meth:`API.handle_async`."""

    request: podlog.LogRequest
    storage_key: str
    audit: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class LogStream:
    """``kubectl logs -f``: what the log held, then what is appended (the HTTP shell streams it)."""

    initial: bytes
    chunks: Any  # AsyncIterator[bytes]
    audit: dict[str, Any] = dataclasses.field(default_factory=dict)


def _wants_table(req: Request) -> bool:
    accept = req.header("accept") or ""
    return "as=Table" in accept


def _int_param(value: str | None, lo: int, hi: int) -> int:
    if value is None or value == "":
        return 0
    # ASCII digits only: ``str.isdigit`` alone accepts "²" (which int() then refuses
    # with ValueError) and other scripts' digits; at most 12, so int() stays cheap.
    if not (value.isascii() and value.isdigit()) or len(value) > 12:
        raise ApiError(400, "invalid integer parameter")
    return max(lo, min(hi, int(value)))


def _safe_message(exc: Exception) -> str:
    """Messages of our own peer errors are written by us and safe to return."""
    return str(exc)[:512]


def iter_lines(lines: Iterable[bytes]) -> bytes:
    return b"".join(lines)
