"""Security audit log: one JSON object per line, file 0600.

Callers pass only identifiers (node names, token ids, addresses, reason codes) --
never token secrets or key material; :func:`AuditLog.write` refuses known secret
field names as a second line of defence.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import threading
from pathlib import Path
from typing import Any

_FORBIDDEN_FIELDS = frozenset({"token", "secret", "key", "password", "private_key"})


class AuditLog:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o600)
        self._fh = os.fdopen(fd, "a", encoding="utf-8", buffering=1)

    def write(self, event: str, **fields: Any) -> None:
        bad = _FORBIDDEN_FIELDS.intersection(fields)
        if bad:
            raise ValueError(f"refusing to audit-log secret-looking fields {sorted(bad)}")
        record = {"ts": dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds"),
                  "event": event}
        record.update({k: v for k, v in fields.items() if v is not None})
        line = json.dumps(record, separators=(",", ":"), default=str)
        with self._lock:
            self._fh.write(line + "\n")

    def close(self) -> None:
        with self._lock:
            self._fh.close()
