"""Fuzz the edge metamanager: frames from the cloud applied to an in-memory edge store.

Invariant: any frame fed to MetaManager.handle either applies, is ignored as
stale/duplicate, or raises a PeerError -- the store stays readable and newest-wins
holds. Concretely, for every input line:

1. A line that is not a valid tunnel frame raises only ``ProtocolError`` in
   ``Message.from_bytes`` (not this target's concern beyond that).
2. ``MetaManager.process`` (what ``handle`` runs in a worker thread) returns
   ``{"ack", "result", "stored"}`` with ``result`` in applied/stale/duplicate and
   ``ack`` the message's rv, answers a query, or raises a ``PeerError`` whose code
   is a stable ``[a-z][a-z0-9_]*`` code -- and a refused message changes nothing.
3. Newest wins: after every acknowledged change the rv the store holds for the key
   is the largest rv ever acknowledged for it; ``applied`` means the stored rv is
   the message's; ``stale`` means the store holds something newer (or a tombstone
   at that rv); the object is live exactly when the last applied change was not a
   delete, and a live object's ``metadata.resourceVersion`` is the stored rv.
4. At the end every key and every type lists and reads back (secrets decrypt).

Input: ``\\n``-separated lines. A line starting with ``{`` is one frame (JSON). Any
other line is a compact program, 3 bytes per message -- operation, key index,
rv -- that builds well-formed messages over a few keys (a ``0x80`` bit in the first
byte makes the object name the wrong object), so the fuzzer reaches the ordering
logic without having to invent JSON. No clock, disk or network: the store is
SQLite ``:memory:`` and ``now`` is fixed.

Run: ``.venv/bin/python fuzz/targets/fuzz_edge_apply.py -max_total_time=60 /tmp/fuzz-edge_apply fuzz/corpus/edge_apply``
"""

from __future__ import annotations

import re
import sys
from typing import Any

from kedge.edge.metamanager.handler import MetaManager
from kedge.edge.metamanager.store import MetaStore
from kedge.errors import PeerError, ProtocolError
from kedge.limits import Limits
from kedge.protocol.message import Message, Resource

LIMITS = Limits()
KEY = bytes(range(32))
NOW = 1_700_000_000.0
MAX_LINES = 48
OPS = ("insert", "update", "patch", "delete", "query", "delete", "update", "keepalive")
KEYS = ("default/pod/a", "default/secret/s", "kube-system/configmap/c", "default/node/n",
        "default/serviceaccounttoken/t", "default/pod/b")
_CODE_RE = re.compile(r"[a-z][a-z0-9_]{0,63}")


def _object_for(key: str, rv: str, wrong: bool) -> dict[str, Any]:
    res = Resource.parse(key)
    meta: dict[str, Any] = {"name": ("x" + res.name) if wrong else res.name, "resourceVersion": rv}
    if res.type != "node":
        meta["namespace"] = res.namespace
    return {"metadata": meta, "data": {"v": rv}}


def _program(line: bytes) -> list[Message]:
    out = []
    for i in range(0, len(line) - 2, 3):
        op = OPS[line[i] & 0x07]
        key = KEYS[line[i + 1] % len(KEYS)]
        rv = str(1 + line[i + 2] % 24)
        content = None if op in ("query", "keepalive") or (op == "delete" and line[i] & 0x40) else \
            _object_for(key, rv, bool(line[i] & 0x80))
        out.append(Message.new(source="edgecontroller", destination="metamanager", group="resource",
                               operation=op, resource=key, content=content, now_ms=0,
                               resourceversion="" if line[i] & 0x20 else rv, msg_id=f"m{i}"))
    return out


def _messages(data: bytes) -> list[Message]:
    out: list[Message] = []
    for line in data.split(b"\n")[:MAX_LINES]:
        if line.startswith(b"{"):
            try:
                out.append(Message.from_bytes(line, LIMITS))
            except ProtocolError:
                continue
        else:
            out.extend(_program(line[:96]))
    return out


def _check_key(store: MetaStore, key: str, acked_max: dict[str, int], live: dict[str, bool]) -> None:
    record = store.record(key)
    if key not in acked_max:
        assert record is None, (key, record)
        return
    assert record is not None, key
    assert int(record[0]) == acked_max[key], (key, record, acked_max[key])
    assert record[1] == (not live[key]), (key, record)
    got = store.get(key)
    if live[key]:
        assert got is not None and got["metadata"]["resourceVersion"] == record[0], (key, got)
    else:
        assert got is None


def test_one_input(data: bytes) -> None:
    """One fuzz iteration; raises only if the invariant in the module docstring breaks."""
    store = MetaStore.in_memory(KEY)
    mm = MetaManager(store, node="edge-1", limits=LIMITS, clock=lambda: NOW)
    acked_max: dict[str, int] = {}
    live: dict[str, bool] = {}
    try:
        for msg in _messages(data):
            before = store.snapshot()
            try:
                reply = mm.process(msg)
            except PeerError as exc:
                assert _CODE_RE.fullmatch(exc.code), exc.code
                assert store.snapshot() == before, "a refused message changed the store"
                continue
            key = str(Resource.parse(msg.route.resource))
            if msg.route.operation == "query":
                record = store.record(key)
                assert reply["rv"] == (record[0] if record else None)
                assert reply["deleted"] == (bool(record[1]) if record else False)
                assert (reply["object"] is None) == (record is None or record[1])
                continue
            result, ack, stored = reply["result"], int(reply["ack"]), int(reply["stored"])
            expected_ack = msg.header.resourceversion or msg.content["metadata"]["resourceVersion"]
            assert reply["ack"] == expected_ack, (reply, msg)
            previous = acked_max.get(key)
            if result == "applied":
                assert previous is None or ack >= previous, (previous, reply)
                assert stored == ack
                live[key] = msg.route.operation != "delete"
            elif result == "stale":
                assert previous is not None and (stored > ack or (stored == ack and not live[key])), (previous, reply)
            else:
                assert result == "duplicate", reply
                assert previous == ack == stored, (previous, reply)
            acked_max[key] = max(previous or 0, ack)
            assert stored == acked_max[key], (stored, acked_max[key])
            _check_key(store, key, acked_max, live)
        for key in set(acked_max) | set(KEYS):
            _check_key(store, key, acked_max, live)
        inventory = store.inventory()
        assert set(inventory) == set(acked_max) and all(int(v) == acked_max[k] for k, v in inventory.items())
        for kind in ("pod", "secret", "configmap", "node", "serviceaccounttoken", "device"):
            for o in store.list(kind):
                assert isinstance(o, dict)
    finally:
        store.close()


def main() -> None:
    import atheris  # only the fuzzing run needs it; the replay test does not

    atheris.instrument_all()
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
