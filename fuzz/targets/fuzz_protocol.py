"""Fuzz the tunnel protocol: bounded JSON, the model.Message envelope and the Session.

Invariant:

1. ``Message.from_bytes`` on arbitrary bytes either parses or raises
   :class:`kedge.errors.ProtocolError` (``LimitExceeded`` included) -- never
   ``RecursionError``, ``UnicodeError``, ``KeyError``, ``TypeError`` or anything
   else -- and it returns within the time the bound implies.
2. A parsed message re-encodes, and the re-encoded bytes parse to an equal
   message whose encoding is byte-identical (encoding is a fixed point).
3. A :class:`~kedge.protocol.session.Session` fed the input as frames (split on
   ``\\n``; a line ``!x`` expires requests instead) never raises, ends CONNECTED
   or FAILED, and when FAILED it emitted exactly one ``ProtocolFailed`` whose
   code is a stable code and queued exactly one notice carrying only that code.
   Every frame it queues parses as a message. Two requests (msg ids ``req-1``,
   ``req-2``) are pending at the start so responses can correlate.

Run: ``.venv/bin/python fuzz/targets/fuzz_protocol.py -max_total_time=60 fuzz/corpus/protocol``
(the test suite replays every file of ``fuzz/corpus/protocol`` and
``fuzz/regressions/protocol`` through :func:`test_one_input`).
"""

from __future__ import annotations

import dataclasses
import re
import sys

from kedge.errors import ProtocolError
from kedge.limits import Limits
from kedge.protocol.message import ERROR, QUERY, Message
from kedge.protocol.session import (
    ConnectionClosed,
    MessageReceived,
    ProtocolFailed,
    ResponseReceived,
    Session,
    State,
)

LIMITS = Limits()
# Re-encoding may grow a frame (e.g. ``1e5`` becomes ``100000.0``), so the
# re-parse allows a larger frame; every other bound stays the same.
REPARSE_LIMITS = dataclasses.replace(LIMITS, max_frame_bytes=LIMITS.max_frame_bytes * 8)
MAX_FRAMES = 32
_CODE_RE = re.compile(r"[a-z][a-z0-9_]{0,63}")


def _check_message(data: bytes) -> None:
    try:
        msg = Message.from_bytes(data, LIMITS)
    except ProtocolError:
        return
    wire = msg.to_bytes()
    again = Message.from_bytes(wire, REPARSE_LIMITS)
    assert again == msg, (msg, again)
    assert again.to_bytes() == wire


def _check_session(data: bytes) -> None:
    s = Session(role="cloud", local="cloudhub", peer="edge-1", limits=LIMITS, max_pending_requests=8)
    s.connection_made()
    for i in (1, 2):
        s.send_request(group="resource", operation=QUERY, resource="default/pod", content=None,
                       now_ms=0, msg_id=f"req-{i}")
    s.data_to_send()
    now = 0
    for frame in data.split(b"\n")[:MAX_FRAMES]:
        now += 1
        if frame == b"!x":
            s.expire_requests(now_ms=now * 1000, timeout_ms=500)
        else:
            s.receive_data(frame, now_ms=now)
    assert s.state in (State.CONNECTED, State.FAILED), s.state
    events = s.events_received()
    failures = [e for e in events if isinstance(e, ProtocolFailed)]
    for event in events:
        assert isinstance(event, (MessageReceived, ResponseReceived, ProtocolFailed)), event
        assert not isinstance(event, ConnectionClosed)
    out = s.data_to_send()
    for frame in out:
        Message.from_bytes(frame, LIMITS)
    if s.state is State.FAILED:
        assert len(failures) == 1 and failures[0] is events[-1]
        code = s.failure_code
        assert code is not None and _CODE_RE.fullmatch(code), code
        assert len(out) == 1
        notice = Message.from_bytes(out[0], LIMITS)
        assert notice.route.operation == ERROR and notice.content == {"code": code}
    else:
        assert not failures and not out and s.failure_code is None


def test_one_input(data: bytes) -> None:
    """One fuzz iteration; raises only if the invariant in the module docstring breaks."""
    _check_message(data)
    _check_session(data)


def main() -> None:
    import atheris  # only the fuzzing run needs it; the replay test does not

    atheris.instrument_all()
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
