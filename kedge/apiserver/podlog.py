"""``GET /api/v1/namespaces/NS/pods/NAME/log``: ``kubectl logs`` for pods on edge nodes.

kube-apiserver proxies this to the kubelet's port on the node; an edge node has no port
the cloud can reach, so the embedded API server asks the node over its tunnel instead
(:mod:`kedge.cloud.podlogs`, answered by :mod:`kedge.edge.podlogs`). Authorization is
the usual one (``get`` on ``pods/log``); nothing here widens it.

Supported: ``container``, ``tailLines``, ``limitBytes``, ``previous``, ``follow``.
``timestamps``, ``sinceSeconds`` and ``sinceTime`` are refused with a 400 rather than
ignored: edged does not record per-line times, and an answer that silently ignored a
filter would mislead. Every response is bounded (:data:`MAX_LOG_RESPONSE_BYTES`); a
follow ends after :data:`MAX_FOLLOW_S` or when the client, the pod or the node goes.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, AsyncIterator, Callable

from kedge.apiserver.status import ApiError
from kedge.cloud import podlogs
from kedge.errors import PeerError
from kedge.limits import POD_LOG_MAX_FOLLOW_S as MAX_FOLLOW_S
from kedge.limits import POD_LOG_MAX_RESPONSE_BYTES as MAX_LOG_RESPONSE_BYTES

FOLLOW_POLL_S = 0.5
_UNSUPPORTED = ("timestamps", "sinceSeconds", "sinceTime")
_TRUE, _FALSE = ("true", "1"), ("false", "0", "")

SessionLookup = Callable[[str], Any]  # node name -> its hub session, or None


@dataclass(frozen=True)
class LogRequest:
    namespace: str
    pod: str
    node: str
    container: str
    tail_lines: int | None
    limit_bytes: int
    previous: bool
    follow: bool


def _bool(query: dict[str, str], key: str) -> bool:
    v = query.get(key, "").lower()
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    raise ApiError(400, f"{key} must be true or false")


def _nonneg(query: dict[str, str], key: str, lo: int) -> int | None:
    v = query.get(key)
    if v is None or v == "":
        return None
    if not (v.isascii() and v.isdigit()) or len(v) > 18 or int(v) < lo:
        raise ApiError(400, f"{key} must be an integer >= {lo}")
    return int(v)


def parse(query: dict[str, str], pod: dict[str, Any]) -> LogRequest:
    """Check the query against the stored pod; ``ApiError`` 400 as kube-apiserver words it."""
    meta, spec = pod.get("metadata") or {}, pod.get("spec") or {}
    name, namespace = str(meta.get("name", "")), str(meta.get("namespace", ""))
    for key in _UNSUPPORTED:
        if query.get(key) not in (None, "", "false"):
            raise ApiError(400, f"{key} is not supported by kedge's edge log stream")
    names = [c.get("name") for c in spec.get("containers") or [] if isinstance(c, dict)]
    container = query.get("container", "")
    if not container:
        if len(names) != 1:
            raise ApiError(400, f"a container name must be specified for pod {name}, "
                                f"choose one of: [{' '.join(str(n) for n in names)}]")
        container = str(names[0])
    elif container not in names:
        raise ApiError(400, f"container {container} is not valid for pod {name}")
    node = spec.get("nodeName")
    if not isinstance(node, str) or not node:
        raise ApiError(400, f"pod {name} does not have a host assigned")
    limit = _nonneg(query, "limitBytes", 1)
    return LogRequest(namespace=namespace, pod=name, node=node, container=container,
                      tail_lines=_nonneg(query, "tailLines", 0),
                      limit_bytes=min(limit or MAX_LOG_RESPONSE_BYTES, MAX_LOG_RESPONSE_BYTES),
                      previous=_bool(query, "previous"), follow=_bool(query, "follow"))


def _unavailable(node: str, exc: Exception) -> ApiError:
    if isinstance(exc, podlogs.NodeUnavailable):
        return ApiError(503, f'node "{node}" is not connected to this cloudcore: {exc}')
    code = getattr(exc, "code", "error")
    if code == "not_found":
        return ApiError(404, "the container is not running on its node (yet)")
    return ApiError(502, f'node "{node}" could not serve the log: {code}')


async def read(lookup: SessionLookup, lr: LogRequest) -> tuple[bytes, int]:
    """The log as ``kubectl logs`` without ``-f`` shows it, and the offset just after it."""
    session = lookup(lr.node)
    try:
        first = await podlogs.fetch(session, lr.namespace, lr.pod, lr.container,
                                    limit_bytes=podlogs.MAX_LOG_CHUNK_BYTES, previous=lr.previous)
        end = first.size
        start = max(0, end - lr.limit_bytes)
        if first.start <= start:
            data = first.data[start - first.start:]
        else:
            # Longer than one answer: read the window [start, end) in chunks.
            parts, at = [], start
            while at < end:
                chunk = await podlogs.fetch(session, lr.namespace, lr.pod, lr.container,
                                            limit_bytes=min(podlogs.MAX_LOG_CHUNK_BYTES, end - at),
                                            previous=lr.previous, offset=at)
                if chunk.start != at or not chunk.data:
                    break  # rotated or truncated meanwhile: what we have is what there is
                parts.append(chunk.data)
                at += len(chunk.data)
            data = b"".join(parts)
    except (PeerError, podlogs.NodeUnavailable) as exc:
        raise _unavailable(lr.node, exc) from exc
    if lr.tail_lines is not None:
        data = podlogs.tail_lines(data, lr.tail_lines)
    return data, end


async def follow(lookup: SessionLookup, lr: LogRequest, offset: int,
                 pod_exists: Callable[[], bool], *, max_s: float = MAX_FOLLOW_S) -> AsyncIterator[bytes]:
    """What is appended after ``offset``, polled until the pod or its node goes, or ``max_s``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + max_s
    while loop.time() < deadline:
        await asyncio.sleep(FOLLOW_POLL_S)
        if not pod_exists():
            return
        try:
            chunk = await podlogs.fetch(lookup(lr.node), lr.namespace, lr.pod, lr.container,
                                        limit_bytes=podlogs.MAX_LOG_CHUNK_BYTES, offset=offset)
        except (PeerError, podlogs.NodeUnavailable):
            return  # the node went away or the container is gone: end the stream as kubelet would
        if chunk.data:
            offset = chunk.start + len(chunk.data)
            yield chunk.data
        elif chunk.start < offset:
            offset = chunk.start  # rotated: follow the new file from its start

