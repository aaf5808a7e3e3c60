"""Process logging for the long-running commands: ``--log-format text|json``.

``json`` writes one object per line with stable fields -- ``ts`` (UTC, RFC 3339 with
milliseconds), ``level``, ``logger``, ``event``, ``msg`` -- plus ``node``, ``code``,
``peer`` when a call passes them with ``extra=``. ``event`` is a stable name (e.g.
``tunnel.connected``) for the lines that matter to operators and their alerting; other
lines carry ``event: "log"``. Change an event name only as a breaking change.

Every line, in either format, goes through :class:`RedactingFilter` first: whatever the
message text, known secret shapes -- bootstrap tokens, bearer tokens and JWTs, PEM private
keys -- are replaced by ``[REDACTED]``. Callers must not log secrets anyway; this is the
second line of defence (as :class:`kedge._internal.auditlog.AuditLog` refuses secret field
names). The security audit logs keep their own formats and files.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import sys
from typing import Any, TextIO

FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

#: Structured fields a call may pass with ``extra=`` and that the JSON line then carries.
CONTEXT_FIELDS = ("node", "code", "peer")

REDACTED = "[REDACTED]"

_SECRETS = (
    # PEM private keys (PKCS#8, RSA, EC, encrypted), also cut off without their END line.
    re.compile(r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----.*?(?:-----END [A-Z0-9 ]*PRIVATE KEY-----|\Z)", re.S),
    # kedge bootstrap tokens: <ca sha256 hex>.<id>.<secret> (kedge.pki.tokens), also with a short
    # or mangled secret part, so a token that failed to parse is hidden too.
    re.compile(r"\b[0-9a-fA-F]{64}\.[a-z0-9]{6}\.[A-Za-z0-9_-]+"),
    # JWTs (service-account tokens), wherever they appear.
    re.compile(r"\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*"),
)
# "Bearer X" anywhere; "authorization: X"; "token=X", "secret=X", "password=X" (query and
# key=value styles; "token: <code>" in prose stays readable).
_BEARER = re.compile(r"\b((?i:bearer)|Basic)(\s+)(?!\[REDACTED\])([A-Za-z0-9._~+/=-]{8,})")
_KEYED = re.compile(r"(?i)\b(authorization\s*[:=]|(?:access_|id_|refresh_)?token=|secret=|password=)(\s*)"
                    r"(?!bearer\b|basic\b|\[REDACTED\])([^\s\"',;&]+)")


def redact(text: str) -> str:
    """``text`` with every known secret shape replaced by ``[REDACTED]``."""
    for pattern in _SECRETS:
        text = pattern.sub(REDACTED, text)
    for keyed in (_BEARER, _KEYED):
        text = keyed.sub(lambda mo: f"{mo.group(1)}{mo.group(2)}{REDACTED}", text)
    return text


class RedactingFilter(logging.Filter):
    """Renders each record's message once, redacted; drops the arguments (they are in it)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a bad format string must not lose the line
            message = f"{record.msg!r} {record.args!r}"
        record.msg, record.args = redact(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        for field in CONTEXT_FIELDS:
            value = getattr(record, field, None)
            if isinstance(value, str):
                setattr(record, field, redact(value))
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``ts level logger event msg`` and the context fields present."""

    def format(self, record: logging.LogRecord) -> str:
        ts = dt.datetime.fromtimestamp(record.created, dt.timezone.utc)
        obj: dict[str, Any] = {
            "ts": ts.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": getattr(record, "event", None) or "log",
            "msg": record.getMessage(),
        }
        for field in CONTEXT_FIELDS:
            value = getattr(record, field, None)
            if value is not None:
                obj[field] = value if isinstance(value, (str, int, float, bool)) else str(value)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            obj["exc"] = record.exc_text
        return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, default=str)


def setup(fmt: str = "text", *, verbose: bool = False, stream: TextIO | None = None) -> None:
    """(Re)configure the root logger: one stderr handler in ``fmt``, redacting, replacing any other."""
    if fmt not in FORMATS:
        raise ValueError(f"log format must be one of {FORMATS}, not {fmt!r}")
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.addFilter(RedactingFilter())
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, handlers=[handler], force=True)


def add_argument(parser: Any) -> None:
    """``--log-format text|json`` on a long-running command's parser."""
    parser.add_argument("--log-format", choices=FORMATS, default="text",
                        help="stderr log lines: text (default) or json (one object per line: ts, level, logger, "
                             "event, msg, and node/code/peer when known; secrets redacted in both)")


def apply(args: Any) -> None:
    """Configure logging from a parsed command line (``--log-format``, the global ``--verbose``)."""
    setup(getattr(args, "log_format", None) or "text", verbose=bool(getattr(args, "verbose", False)))
