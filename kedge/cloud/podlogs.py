"""``kubectl logs``, cloud side: ask the pod's node over its tunnel (see :mod:`kedge.edge.podlogs`).

The answer is the edge's, so it is checked like any peer input: the shape, the base64,
and every size against what was asked for.
"""

from __future__ import annotations

import base64
import binascii
import time
from dataclasses import dataclass
from typing import Any

from kedge.errors import KedgeError, PeerError
from kedge.protocol import message as m

GROUP = "edged"
RESOURCE_TYPE = "podlog"
from kedge.limits import POD_LOG_MAX_CHUNK_BYTES as MAX_LOG_CHUNK_BYTES  # noqa: E402  (the edge serves at most this)
from kedge.limits import POD_LOG_QUERY_TIMEOUT_S as QUERY_TIMEOUT_S  # noqa: E402


class NodeUnavailable(KedgeError):
    """The pod's node has no tunnel to this cloudcore (offline, or served by another replica)."""

    code = "node_unavailable"


@dataclass(frozen=True)
class Chunk:
    data: bytes
    start: int  # file offset of data[0]
    size: int  # the log file's size when read


def _check_answer(content: Any, limit: int) -> Chunk:
    if not isinstance(content, dict) or set(content) != {"data", "start", "size"}:
        raise PeerError("malformed log answer", code="bad_response")
    start, size, data = content["start"], content["size"], content["data"]
    for v in (start, size):
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= 2**53:
            raise PeerError("malformed log answer", code="bad_response")
    if not isinstance(data, str) or len(data) > (limit + 2) // 3 * 4:
        raise PeerError("log answer larger than asked for", code="bad_response")
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise PeerError("log answer is not base64", code="bad_response") from exc
    if len(raw) > limit or start + len(raw) > size:
        raise PeerError("log answer larger than asked for", code="bad_response")
    return Chunk(raw, start, size)


async def fetch(session: Any, namespace: str, pod: str, container: str, *, limit_bytes: int,
                previous: bool = False, offset: int | None = None, timeout: float = QUERY_TIMEOUT_S) -> Chunk:
    """One log query to the node behind ``session`` (a :class:`kedge.cloud.hub.NodeSession`)."""
    if session is None:
        raise NodeUnavailable("the node is not connected")
    limit = max(1, min(limit_bytes, MAX_LOG_CHUNK_BYTES))
    content: dict[str, Any] = {"container": container, "limitBytes": limit, "previous": previous}
    if offset is not None:
        content["offset"] = offset
    msg = m.Message.new(source="cloudstream", destination="edged", group=GROUP, operation=m.QUERY,
                        resource=f"{namespace}/{RESOURCE_TYPE}/{pod}", content=content,
                        now_ms=int(time.time() * 1000), msg_id=session.session.new_msg_id())
    try:
        reply = await session.request(msg, timeout=timeout)
    except TimeoutError as exc:
        raise NodeUnavailable("the node did not answer the log query in time") from exc
    except ConnectionError as exc:
        raise NodeUnavailable("the node's tunnel closed") from exc
    if reply.route.operation == m.ERROR:
        code = reply.content.get("code") if isinstance(reply.content, dict) else None
        try:
            code = m.validate_error_code(code)
        except ValueError:
            code = "bad_response"
        raise PeerError(f"the node refused the log query: {code}", code=code)
    return _check_answer(reply.content, limit)


def tail_lines(data: bytes, n: int) -> bytes:
    """The last ``n`` lines of ``data`` (a trailing newline does not start a line)."""
    if n <= 0:
        return b""
    cut = len(data)
    if data.endswith(b"\n"):
        cut -= 1
    for _ in range(n):
        cut = data.rfind(b"\n", 0, cut)
        if cut < 0:
            return data
    return data[cut + 1:]
