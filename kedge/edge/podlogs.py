"""``kubectl logs``, edge side: answer the cloud's log queries from edged's log files.

The cloud asks over the tunnel (the only way in: the edge opens no port)::

    route   {"group": "edged", "operation": "query", "resource": "<ns>/podlog/<pod>"}
    content {"container": "<name>", "limitBytes": N, "previous": false, "offset": null|N}

and gets ``{"data": <base64>, "start": <offset of data>, "size": <file size>}``. Without
``offset`` the answer is the last ``limitBytes`` of the file; with one it is at most
``limitBytes`` from that offset (``kubectl logs -f`` polls this way). An ``offset``
beyond the end (the log was rotated) restarts from 0.

Everything in the request is checked here, before any file is touched: names must be
Kubernetes names and are only *matched* against the pods this node runs -- never
joined into a path -- and every size is bounded (:data:`MAX_LOG_CHUNK_BYTES`).
"""

from __future__ import annotations

import base64
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from kedge.errors import PeerError
from kedge.protocol import message as m

GROUP = "edged"
RESOURCE_TYPE = "podlog"
# One answer carries at most this much log (kedge.limits).
from kedge.limits import POD_LOG_MAX_CHUNK_BYTES as MAX_LOG_CHUNK_BYTES  # noqa: E402
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_KEYS = frozenset({"container", "limitBytes", "previous", "offset"})


@dataclass(frozen=True)
class LogQuery:
    namespace: str
    pod: str
    container: str
    limit_bytes: int
    previous: bool = False
    offset: int | None = None


def _int(value: Any, what: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise PeerError(f"{what} must be an integer in [{lo}, {hi}]", code="bad_log_query")
    return value


def parse_query(msg: m.Message) -> LogQuery:
    """Validate a log query message; :class:`PeerError` (``bad_log_query``) otherwise."""
    if msg.route.group != GROUP or msg.route.operation != m.QUERY:
        raise PeerError("log queries are group 'edged', operation 'query'", code="bad_log_query")
    res = m.Resource.parse(msg.route.resource)
    if res.type != RESOURCE_TYPE or res.is_list:
        raise PeerError("resource must be <namespace>/podlog/<pod>", code="bad_log_query")
    c = msg.content
    if not isinstance(c, dict) or not set(c) <= _KEYS:
        raise PeerError("log query content must be an object with known keys", code="bad_log_query")
    container = c.get("container")
    if not isinstance(container, str) or len(container) > 63 or not _DNS_LABEL.fullmatch(container):
        raise PeerError("container must be a DNS-1123 label", code="bad_log_query")
    limit = _int(c.get("limitBytes", MAX_LOG_CHUNK_BYTES), "limitBytes", 1, MAX_LOG_CHUNK_BYTES)
    previous = c.get("previous", False)
    if not isinstance(previous, bool):
        raise PeerError("previous must be a boolean", code="bad_log_query")
    offset = c.get("offset")
    if offset is not None:
        offset = _int(offset, "offset", 0, 2**53)
    return LogQuery(res.namespace, res.name, container, limit, previous, offset)


def read_chunk(path: Path, limit: int, offset: int | None) -> dict[str, Any]:
    """The answer for one log file (missing file: empty log)."""
    try:
        fh = open(path, "rb")  # noqa: SIM115 - closed below
    except FileNotFoundError:
        return {"data": "", "start": 0, "size": 0}
    with fh:
        size = os.fstat(fh.fileno()).st_size
        if offset is None:
            start = max(0, size - limit)
        else:
            start = offset if offset <= size else 0  # beyond the end: the file was rotated
        fh.seek(start)
        data = fh.read(min(limit, max(0, size - start)))
    return {"data": base64.b64encode(data).decode("ascii"), "start": start, "size": size}


def answer(q: LogQuery, log_path: Callable[[str, str, str, bool], Path | None]) -> dict[str, Any]:
    """Serve ``q``; ``log_path(ns, pod, container, previous)`` is edged's lookup (None: no such
    container on this node)."""
    path = log_path(q.namespace, q.pod, q.container, q.previous)
    if path is None:
        raise PeerError(f"container {q.container} of pod {q.namespace}/{q.pod} is not running on this node",
                        code="not_found")
    return read_chunk(path, q.limit_bytes, q.offset)
