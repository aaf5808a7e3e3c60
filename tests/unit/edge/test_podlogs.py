"""Edge side of ``kubectl logs``: query validation and bounded reads from a real file."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from kedge.edge import podlogs
from kedge.errors import PeerError
from kedge.protocol import message as m


def query(content, resource="default/podlog/web", group="edged", operation=m.QUERY) -> m.Message:
    return m.Message.new(source="cloudstream", destination="edged", group=group, operation=operation,
                         resource=resource, content=content, now_ms=0)


def test_a_valid_query_is_parsed_with_defaults():
    q = podlogs.parse_query(query({"container": "app"}))
    assert (q.namespace, q.pod, q.container) == ("default", "web", "app")
    assert q.limit_bytes == podlogs.MAX_LOG_CHUNK_BYTES and q.previous is False and q.offset is None


@pytest.mark.parametrize("content, resource, group, op", [
    ({"container": "app"}, "default/pod/web", "edged", m.QUERY),          # wrong type
    ({"container": "app"}, "default/podlog", "edged", m.QUERY),           # list form
    ({"container": "app"}, "default/podlog/web", "resource", m.QUERY),    # wrong group
    ({"container": "app"}, "default/podlog/web", "edged", m.UPDATE),      # wrong operation
    ({"container": "../etc"}, "default/podlog/web", "edged", m.QUERY),    # not a name
    ({"container": "App"}, "default/podlog/web", "edged", m.QUERY),
    ({"container": "a" * 64}, "default/podlog/web", "edged", m.QUERY),
    ({}, "default/podlog/web", "edged", m.QUERY),
    ({"container": "app", "limitBytes": 0}, "default/podlog/web", "edged", m.QUERY),
    ({"container": "app", "limitBytes": podlogs.MAX_LOG_CHUNK_BYTES + 1}, "default/podlog/web", "edged", m.QUERY),
    ({"container": "app", "limitBytes": True}, "default/podlog/web", "edged", m.QUERY),
    ({"container": "app", "offset": -1}, "default/podlog/web", "edged", m.QUERY),
    ({"container": "app", "offset": 1.5}, "default/podlog/web", "edged", m.QUERY),
    ({"container": "app", "previous": "yes"}, "default/podlog/web", "edged", m.QUERY),
    ({"container": "app", "path": "/etc/shadow"}, "default/podlog/web", "edged", m.QUERY),  # unknown key
    (["app"], "default/podlog/web", "edged", m.QUERY),
])
def test_malformed_queries_are_refused_with_a_stable_code(content, resource, group, op):
    with pytest.raises(PeerError) as exc:
        podlogs.parse_query(query(content, resource, group, op))
    assert exc.value.code in ("bad_log_query", "bad_resource")


def _decode(a: dict) -> bytes:
    return base64.b64decode(a["data"])


def test_tail_and_offset_reads_are_bounded(tmp_path: Path):
    log = tmp_path / "app.log"
    log.write_bytes(b"".join(b"line %d\n" % i for i in range(1000)))
    size = log.stat().st_size
    tail = podlogs.read_chunk(log, 100, None)
    assert _decode(tail) == log.read_bytes()[-100:] and tail["start"] == size - 100 and tail["size"] == size
    head = podlogs.read_chunk(log, 64, 0)
    assert _decode(head) == log.read_bytes()[:64] and head["start"] == 0
    # Following: from the end there is nothing new until the file grows.
    assert _decode(podlogs.read_chunk(log, 64, size)) == b""
    with log.open("ab") as fh:
        fh.write(b"new\n")
    assert _decode(podlogs.read_chunk(log, 64, size)) == b"new\n"
    # An offset beyond the end means the file was rotated: start again from 0.
    log.write_bytes(b"fresh\n")
    again = podlogs.read_chunk(log, 64, size)
    assert again["start"] == 0 and _decode(again) == b"fresh\n"
    assert podlogs.read_chunk(tmp_path / "missing.log", 64, None) == {"data": "", "start": 0, "size": 0}


def test_unknown_container_is_not_found_and_never_becomes_a_path(tmp_path: Path):
    seen = []

    def lookup(ns, pod, container, previous):
        seen.append((ns, pod, container, previous))
        return tmp_path / "x.log" if (ns, pod, container) == ("default", "web", "app") else None

    with pytest.raises(PeerError) as exc:
        podlogs.answer(podlogs.parse_query(query({"container": "other"})), lookup)
    assert exc.value.code == "not_found"
    assert podlogs.answer(podlogs.parse_query(query({"container": "app"})), lookup)["size"] == 0
    assert seen == [("default", "web", "other", False), ("default", "web", "app", False)]
