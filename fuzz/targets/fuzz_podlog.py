"""Fuzz the ``kubectl logs`` path: the three places it parses untrusted input.

* ``kedge.edge.podlogs.parse_query`` -- the edge reads a log query the cloud sent over
  the tunnel (a ``model.Message``); it decides which container's file is read and how
  much, so nothing in it may reach a path or an unbounded read.
* ``kedge.cloud.podlogs._check_answer`` -- the cloud reads the edge's answer (the
  edge is a peer, and a compromised node must not make cloudcore allocate or return
  more than it asked for).
* ``kedge.apiserver.podlog.parse`` -- the API server reads the client's
  ``pods/NAME/log`` query against the stored pod.

Invariant: each returns or raises its documented error -- nothing else:

* ``parse_query``: a ``LogQuery`` or ``PeerError``/``ProtocolError`` with code
  ``bad_log_query`` or ``bad_resource``. A query it returns has a DNS-1123 container
  name (<= 63), ``1 <= limit_bytes <= MAX_LOG_CHUNK_BYTES``, a boolean ``previous``, an
  ``offset`` that is ``None`` or in ``[0, 2**53]``, and came from group ``edged``,
  operation ``query``, resource ``<ns>/podlog/<pod>`` with both names valid.
* ``_check_answer(content, limit)``: a ``Chunk`` whose data is the base64 the edge sent,
  at most ``limit`` bytes, with ``0 <= start`` and ``start + len(data) <= size <= 2**53``;
  or ``PeerError`` code ``bad_response``. An answer accepted under a limit is accepted
  under every larger one. ``tail_lines`` of the data is a suffix with at most the lines
  asked for.
* ``parse(query, pod)``: a ``LogRequest`` or ``ApiError`` 400. A request it returns names
  one of the pod's containers, a non-empty node, ``1 <= limit_bytes <=
  MAX_LOG_RESPONSE_BYTES``, ``tail_lines`` ``None`` or ``>= 0``, and was asked without
  ``timestamps``/``sinceSeconds``/``sinceTime``.

Input layout: every input is tried as all three. The bytes are decoded as a tunnel
frame (``Message.from_bytes``) for ``parse_query``; as JSON, the value is an edge answer
for ``_check_answer`` under several limits; a JSON object with ``"pod"`` and
``"query"`` (an object of strings, or a query string parsed as the API server does) is
an API request. Pods that the API server would not have stored (no containers, a
container without name or image) are skipped.

Run: ``fuzz/run.sh podlog 60``
"""

from __future__ import annotations

import base64
import json
import re
import sys
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

try:
    import kedge  # noqa: F401
except ImportError:  # running as a script from a checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from kedge.apiserver import podlog as api_podlog
from kedge.apiserver.status import ApiError
from kedge.cloud import podlogs as cloud_podlogs
from kedge.edge import podlogs as edge_podlogs
from kedge.errors import PeerError
from kedge.protocol import message as m

MAX_JSON_BYTES = 64 * 1024
LIMITS = (1, 2, 3, 4, 5, 1024, cloud_podlogs.MAX_LOG_CHUNK_BYTES)
QUERY_CODES = {"bad_log_query", "bad_resource"}
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


def _require(ok: bool, what: str) -> None:
    """Like assert, but survives ``python -O``: a violated invariant is a crash."""
    if not ok:
        raise AssertionError(what)


def _check_query(data: bytes) -> None:
    try:
        msg = m.Message.from_bytes(data)
    except PeerError:
        return  # not a frame: the tunnel refuses it before edged sees it (fuzz_protocol's job)
    try:
        q = edge_podlogs.parse_query(msg)
    except PeerError as exc:
        _require(exc.code in QUERY_CODES, f"parse_query: undocumented code {exc.code}")
        return
    _require(msg.route.group == "edged" and msg.route.operation == m.QUERY, "accepted another route")
    _require(msg.route.resource == f"{q.namespace}/podlog/{q.pod}", f"resource {msg.route.resource!r}")
    _require(len(q.namespace) <= 63 and bool(_DNS_LABEL.fullmatch(q.namespace)), f"namespace {q.namespace!r}")
    _require(len(q.pod) <= 253 and bool(_DNS_SUBDOMAIN.fullmatch(q.pod)), f"pod {q.pod!r}")
    _require(isinstance(q.container, str) and len(q.container) <= 63 and bool(_DNS_LABEL.fullmatch(q.container)),
             f"container {q.container!r}")
    _require(type(q.limit_bytes) is int and 1 <= q.limit_bytes <= edge_podlogs.MAX_LOG_CHUNK_BYTES,
             f"limit {q.limit_bytes!r}")
    _require(type(q.previous) is bool, "previous is not a bool")
    _require(q.offset is None or (type(q.offset) is int and 0 <= q.offset <= 2**53), f"offset {q.offset!r}")


def _check_tail(data: bytes) -> None:
    for n in (0, 1, 2, 5):
        out = cloud_podlogs.tail_lines(data, n)
        _require(data.endswith(out), "tail_lines is not a suffix")
        if n == 0:
            _require(out == b"", "tail_lines(0) is not empty")
        else:
            body = out[:-1] if out.endswith(b"\n") else out
            _require(body.count(b"\n") <= n - 1, f"tail_lines({n}) returned more lines")


def _check_answer(value: Any) -> None:
    accepted_at: int | None = None
    for limit in LIMITS:
        try:
            chunk = cloud_podlogs._check_answer(value, limit)
        except PeerError as exc:
            _require(exc.code == "bad_response", f"_check_answer: undocumented code {exc.code}")
            _require(accepted_at is None, f"accepted under limit {accepted_at} but not under {limit}")
            continue
        accepted_at = limit if accepted_at is None else accepted_at
        _require(isinstance(chunk.data, bytes) and len(chunk.data) <= limit, "chunk larger than the limit")
        _require(type(chunk.start) is int and type(chunk.size) is int, "start/size are not ints")
        _require(0 <= chunk.start and chunk.start + len(chunk.data) <= chunk.size <= 2**53, "sizes")
        _require(chunk.data == base64.b64decode(value["data"]), "data is not the answer's base64")
        if limit == LIMITS[-1]:
            _check_tail(chunk.data)


def _stored_pod(pod: Any) -> dict[str, Any] | None:
    """The pod if the API server's write validation would have stored it, else None."""
    if not isinstance(pod, dict) or not isinstance(pod.get("metadata", {}), dict):
        return None
    spec = pod.get("spec")
    if not isinstance(spec, dict) or not isinstance(spec.get("containers"), list) or not spec["containers"]:
        return None
    if not all(isinstance(c, dict) and c.get("name") and c.get("image") for c in spec["containers"]):
        return None
    return pod


def _query(raw: Any) -> dict[str, str] | None:
    if isinstance(raw, str):
        try:
            return {k: v[-1] for k, v in parse_qs(raw, keep_blank_values=True, max_num_fields=100).items()}
        except ValueError:
            return None  # the API server answers 400 before the handler runs
    if isinstance(raw, dict):
        return {k: v for k, v in raw.items() if isinstance(v, str)}
    return None


def _check_api(doc: Any) -> None:
    if not isinstance(doc, dict) or "pod" not in doc or "query" not in doc:
        return
    pod, query = _stored_pod(doc["pod"]), _query(doc["query"])
    if pod is None or query is None:
        return
    try:
        lr = api_podlog.parse(query, pod)
    except ApiError as exc:
        _require(exc.status == 400, f"parse answered {exc.status}")
        return
    names = [c.get("name") for c in pod["spec"]["containers"]]
    _require(lr.container in names or (len(names) == 1 and lr.container == str(names[0])),
             f"container {lr.container!r} is not the pod's")
    _require(isinstance(lr.node, str) and bool(lr.node), "no node")
    _require(1 <= lr.limit_bytes <= api_podlog.MAX_LOG_RESPONSE_BYTES, f"limit {lr.limit_bytes}")
    _require(lr.tail_lines is None or (type(lr.tail_lines) is int and lr.tail_lines >= 0), "tail_lines")
    _require(type(lr.previous) is bool and type(lr.follow) is bool, "previous/follow")
    for key in ("timestamps", "sinceSeconds", "sinceTime"):
        _require(query.get(key) in (None, "", "false"), f"accepted {key}")


def test_one_input(data: bytes) -> None:
    """One fuzz iteration; raises only if the invariant in the module docstring breaks."""
    _check_query(data)
    if len(data) > MAX_JSON_BYTES:
        return
    try:
        value = json.loads(data)
    except (ValueError, RecursionError):
        return  # the tunnel / HTTP decoders refuse it first
    _check_answer(value)
    _check_api(value)


def main() -> None:
    import atheris  # lazily: replaying the corpus in the test suite must not need it

    atheris.instrument_all()
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
