"""Reports of edgecore's short-lived children (kedge.edge.child): a success is returned, a
reported error is raised with its kind and code, anything else is a LocalError."""

from __future__ import annotations

import asyncio
import json

import pytest

from kedge.edge import child
from kedge.errors import LocalError, PeerError


def test_a_success_is_returned_only_with_exit_0():
    line = json.dumps({"ok": True, "x": 1}).encode()
    assert child.parse_report(b"noise\n" + line + b"\n", 0, what="w", code="c")["x"] == 1
    with pytest.raises(LocalError) as exc:
        child.parse_report(line, 1, what="w", code="c")
    assert exc.value.code == "c"


@pytest.mark.parametrize("data", [b"", b"not json", b"[1, 2]", b"\xff" * 10])
def test_no_usable_report_is_a_local_error_with_the_callers_code(data):
    with pytest.raises(LocalError) as exc:
        child.parse_report(data, 1, what="w", code="c")
    assert exc.value.code == "c"


def test_a_reported_error_keeps_its_kind_and_code():
    line = json.dumps({"ok": False, "kind": "peer", "code": "csr_weak_key", "message": "m"}).encode()
    with pytest.raises(PeerError) as exc:
        child.parse_report(line, 1, what="w", code="c")
    assert exc.value.code == "csr_weak_key"


def test_a_child_that_runs_too_long_is_killed():
    async def go():
        with pytest.raises(TimeoutError):
            await child.run_module("http.server", "--bind", "127.0.0.1", "0", timeout_s=1.0, code="c")
        out, rc = await child.run_module("json.tool", "--help", timeout_s=30, code="c")
        return out, rc

    out, rc = asyncio.run(go())
    assert rc == 0 and b"json" in out.lower()
