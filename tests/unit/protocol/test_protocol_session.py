"""The Session protocol object, bytes in / bytes out: the state table, correlation, expiry."""

from __future__ import annotations

import ast
import itertools
import json
from pathlib import Path

import pytest

from kedge.errors import LocalError, ProtocolError
from kedge.limits import Limits
from kedge.protocol.message import ERROR, INSERT, KEEPALIVE, QUERY, RESPONSE, Message
from kedge.protocol.session import (
    TRANSITIONS,
    ConnectionClosed,
    Input,
    MessageReceived,
    MessageTooLarge,
    ProtocolFailed,
    ResponseReceived,
    Session,
    SessionStateError,
    State,
    TooManyPending,
)

PROTOCOL_DIR = Path(__file__).resolve().parents[3] / "kedge" / "protocol"


def _session(**kw) -> Session:
    kw.setdefault("role", "cloud")
    kw.setdefault("local", "cloudhub")
    kw.setdefault("peer", "edge-1")
    return Session(**kw)


def _peer_msg(operation: str = INSERT, parent: str = "", msg_id: str | None = None, content=None) -> Message:
    return Message.new(
        source="edge-1",
        destination="cloudhub",
        group="resource",
        operation=operation,
        resource="default/pod/x",
        content=content,
        now_ms=10,
        parent_msg_id=parent,
        msg_id=msg_id,
    )


def _in_state(state: State) -> Session:
    s = _session()
    if state is State.CONNECTING:
        return s
    s.connection_made()
    if state is State.CLOSING:
        s.close()
    elif state is State.CLOSED:
        s.receive_eof()
    elif state is State.FAILED:
        s.receive_data(b"not json", now_ms=1)
    s.events_received()
    s.data_to_send()
    assert s.state is state
    return s


def _apply(s: Session, inp: Input) -> None:
    if inp is Input.CONNECTION_MADE:
        s.connection_made()
    elif inp is Input.FRAME:
        s.receive_data(_peer_msg().to_bytes(), now_ms=20)
    elif inp is Input.EOF:
        s.receive_eof()
    elif inp is Input.PEER_ERROR:
        s.receive_data(b"{", now_ms=20)
    elif inp is Input.SEND:
        s.send_message(_peer_msg())
    elif inp is Input.CLOSE:
        s.close()
    else:  # pragma: no cover - every Input is listed above
        raise AssertionError(inp)


def _error_codes(frames: list[bytes]) -> list[str]:
    out = []
    for frame in frames:
        msg = Message.from_bytes(frame)
        assert msg.operation == ERROR
        assert msg.content.keys() == {"code"}  # the code and nothing else
        out.append(msg.content["code"])
    return out


# -- the state table ---------------------------------------------------------


@pytest.mark.parametrize("key", sorted(TRANSITIONS, key=lambda k: (k[0].value, k[1].value)), ids=str)
def test_every_state_table_entry_is_what_the_session_does(key):
    state, inp = key
    s = _in_state(state)
    _apply(s, inp)
    assert s.state is TRANSITIONS[key]


MISSING = [
    (state, inp)
    for state, inp in itertools.product(State, Input)
    if (state, inp) not in TRANSITIONS
]


@pytest.mark.parametrize("key", MISSING, ids=str)
def test_every_missing_state_table_entry_is_refused(key):
    state, inp = key
    s = _in_state(state)
    if inp in (Input.CONNECTION_MADE, Input.SEND, Input.CLOSE):
        # Our own misuse: raised to us, never blamed on the peer.
        with pytest.raises(SessionStateError) as info:
            _apply(s, inp)
        assert info.value.code == "invalid_state"
        assert s.state is state
        assert s.data_to_send() == []
    elif state in (State.CLOSED, State.FAILED):
        # Terminal: peer input is ignored, nothing more happens.
        _apply(s, inp)
        assert s.state is state
        assert s.events_received() == []
        assert s.data_to_send() == []
    else:
        # Peer input with no entry is a protocol error.
        _apply(s, inp)
        assert s.state is State.FAILED
        assert s.events_received() == [ProtocolFailed(s.failure_code)]
        assert _error_codes(s.data_to_send()) == [s.failure_code]


def test_frame_before_connection_made_fails_the_session():
    s = _session()
    s.receive_data(_peer_msg().to_bytes(), now_ms=1)
    assert s.state is State.FAILED
    assert s.failure_code == "unexpected_frame"


def test_sending_before_connection_made_raises():
    with pytest.raises(SessionStateError):
        _session().send_message(_peer_msg())


def test_close_is_idempotent_and_sends_nothing():
    s = _in_state(State.CONNECTED)
    s.close("going_away")
    s.close()
    assert s.state is State.CLOSING
    assert s.data_to_send() == []


def test_close_refuses_free_text_codes():
    with pytest.raises(ValueError):
        _in_state(State.CONNECTED).close("Connection reset by peer")


def test_eof_reports_eof_when_the_peer_hangs_up():
    s = _in_state(State.CONNECTED)
    s.receive_eof()
    assert s.state is State.CLOSED
    assert s.events_received() == [ConnectionClosed("eof")]


def test_eof_after_our_close_reports_our_code():
    s = _in_state(State.CONNECTED)
    s.close("going_away")
    s.receive_eof()
    assert s.events_received() == [ConnectionClosed("going_away")]


def test_frames_still_arrive_while_closing():
    s = _in_state(State.CONNECTED)
    req = s.send_request(group="resource", operation=QUERY, resource="default/pod", content=None, now_ms=1)
    s.close()
    reply = Message.from_bytes(s.data_to_send()[0]).reply("OK", now_ms=2)
    s.receive_data(reply.to_bytes(), now_ms=3)
    assert s.events_received() == [ResponseReceived(message=reply, request=req)]
    assert s.state is State.CLOSING
    with pytest.raises(SessionStateError):
        s.send_response(reply, "x", now_ms=4)


# -- malformed input ---------------------------------------------------------


@pytest.mark.parametrize(
    "frame, code",
    [
        (b"not json", "malformed_json"),
        (b"\xff", "malformed_json"),
        (b"[" * 100_000 + b"]" * 100_000, "depth_exceeded"),
        (b" " * (1024 * 1024 + 1), "frame_too_large"),
        (b'{"header":{},"header":{}}', "duplicate_key"),
        (b"[]", "invalid_envelope"),
        (b'{"header":{"msg_id":"a","timestamp":1},"route":{"operation":"exec"},"content":null}', "unknown_operation"),
        (b'{"header":{"msg_id":"a","timestamp":1},"route":{"operation":"query"},"content":null,"x":1}', "unknown_field"),
    ],
)
def test_malformed_frame_fails_the_session_and_tells_the_peer_only_the_code(frame, code):
    s = _in_state(State.CONNECTED)
    s.receive_data(frame, now_ms=1)
    assert s.state is State.FAILED
    assert s.failure_code == code
    assert s.events_received() == [ProtocolFailed(code)]
    out = s.data_to_send()
    assert _error_codes(out) == [code]
    notice = Message.from_bytes(out[0])
    assert notice.route.source == "cloudhub" and notice.route.destination == "edge-1"
    assert b"Traceback" not in out[0] and b"Error" not in out[0]


def test_nothing_is_accepted_after_failure():
    s = _in_state(State.FAILED)
    s.receive_data(_peer_msg().to_bytes(), now_ms=1)
    s.receive_eof()
    assert s.events_received() == [] and s.data_to_send() == []
    with pytest.raises(SessionStateError):
        s.send_message(_peer_msg())
    with pytest.raises(SessionStateError):
        s.send_request(group="g", operation=QUERY, resource="r", content=None, now_ms=1)
    with pytest.raises(SessionStateError):
        s.send_error(None, "internal_error", now_ms=1)
    assert s.state is State.FAILED


def test_session_uses_its_limits():
    s = _session(limits=Limits(max_frame_bytes=64))
    s.connection_made()
    s.receive_data(_peer_msg().to_bytes(), now_ms=1)
    assert s.failure_code == "frame_too_large"


# -- requests, responses, correlation ----------------------------------------


def _connected_pair() -> tuple[Session, Session]:
    cloud = _session()
    edge = Session(role="edge", local="edge-1", peer="cloudhub")
    cloud.connection_made()
    edge.connection_made()
    return cloud, edge


def _pump(src: Session, dst: Session, now_ms: int = 100) -> list:
    for frame in src.data_to_send():
        dst.receive_data(frame, now_ms=now_ms)
    return dst.events_received()


def test_request_response_round_trip_between_two_sessions():
    cloud, edge = _connected_pair()
    req = cloud.send_request(
        group="resource", operation=INSERT, resource="default/pod/x", content={"a": 1}, now_ms=50,
        resourceversion="7",
    )
    assert req.route.source == "cloudhub" and req.route.destination == "edge-1"
    assert req.header.sync is True
    assert cloud.pending_count == 1
    (got,) = _pump(cloud, edge)
    assert got == MessageReceived(req)
    edge.send_response(got.message, "OK", now_ms=60)
    (resp,) = _pump(edge, cloud)
    assert isinstance(resp, ResponseReceived)
    assert resp.request == req
    assert resp.message.content == "OK"
    assert resp.message.route.source == "edge-1"
    assert cloud.pending_count == 0


def test_error_response_is_correlated_and_carries_only_the_code():
    cloud, edge = _connected_pair()
    req = cloud.send_request(group="resource", operation=QUERY, resource="default/secret/s", content=None, now_ms=1)
    (got,) = _pump(cloud, edge)
    edge.send_error(got.message, "forbidden", now_ms=2)
    (resp,) = _pump(edge, cloud)
    assert isinstance(resp, ResponseReceived) and resp.request == req
    assert resp.message.operation == ERROR
    assert resp.message.content == {"code": "forbidden"}


def test_send_error_refuses_exception_text():
    s = _in_state(State.CONNECTED)
    with pytest.raises(ValueError):
        s.send_error(_peer_msg(), "ValueError: /etc/kedge/pki/ca.key missing", now_ms=1)
    with pytest.raises(ValueError):
        s.send_error(None, "no such file", now_ms=1)
    assert s.data_to_send() == []


def test_uncorrelated_error_reaches_the_peer_as_a_plain_message():
    cloud, edge = _connected_pair()
    cloud.send_error(None, "rate_limited", now_ms=1)
    (got,) = _pump(cloud, edge)
    assert isinstance(got, MessageReceived)
    assert got.message.operation == ERROR and got.message.content == {"code": "rate_limited"}
    assert edge.state is State.CONNECTED


def test_forged_response_to_a_request_never_sent_fails_the_session():
    s = _in_state(State.CONNECTED)
    forged = _peer_msg(operation=RESPONSE, parent="00000000-0000-4000-8000-000000000000")
    s.receive_data(forged.to_bytes(), now_ms=1)
    assert s.state is State.FAILED
    assert s.failure_code == "unexpected_response"
    (notice,) = s.data_to_send()
    assert Message.from_bytes(notice).header.parent_msg_id == forged.msg_id


def test_forged_response_with_our_id_prefix_but_unissued_counter_fails():
    s = _in_state(State.CONNECTED)
    issued = s.new_msg_id()
    prefix, _, seq = issued.rpartition("-")
    for parent in (f"{prefix}-{int(seq) + 1}", f"{prefix}-0{seq}", f"{prefix}-x"):
        t = _in_state(State.CONNECTED)
        t._id_prefix = prefix  # same prefix, so only the counter decides
        t._next_seq = 1
        t.receive_data(_peer_msg(operation=RESPONSE, parent=parent).to_bytes(), now_ms=1)
        assert t.failure_code == "unexpected_response", parent


def test_duplicate_response_is_dropped_as_late_not_delivered_twice():
    cloud, edge = _connected_pair()
    cloud.send_request(group="g", operation=QUERY, resource="default/pod", content=None, now_ms=1)
    (got,) = _pump(cloud, edge)
    reply = got.message.reply("OK", now_ms=2)
    cloud.receive_data(reply.to_bytes(), now_ms=3)
    cloud.receive_data(reply.to_bytes(), now_ms=4)
    events = cloud.events_received()
    assert len(events) == 1 and isinstance(events[0], ResponseReceived)
    assert cloud.late_responses == 1
    assert cloud.state is State.CONNECTED


def test_late_response_after_expiry_is_dropped_and_counted():
    cloud, edge = _connected_pair()
    req = cloud.send_request(group="g", operation=QUERY, resource="default/pod", content=None, now_ms=1000)
    (got,) = _pump(cloud, edge)
    assert cloud.expire_requests(now_ms=1000 + 5000, timeout_ms=5000) == [req]
    cloud.receive_data(got.message.reply("OK", now_ms=7000).to_bytes(), now_ms=7000)
    assert cloud.events_received() == []
    assert cloud.late_responses == 1
    assert cloud.state is State.CONNECTED


def test_ack_for_a_message_sent_without_expecting_one_is_tolerated():
    cloud, edge = _connected_pair()
    own = Message.new(source="cloudhub", destination="edge-1", group="g", operation=INSERT,
                      resource="default/pod/a", content=None, now_ms=1, msg_id=cloud.new_msg_id())
    foreign = Message.new(source="cloudhub", destination="edge-1", group="g", operation=INSERT,
                          resource="default/pod/b", content=None, now_ms=1)  # uuid4 id
    cloud.send_message(own)
    cloud.send_message(foreign)
    for got in _pump(cloud, edge):
        edge.send_response(got.message, "OK", now_ms=2)
    assert _pump(edge, cloud) == []
    assert cloud.late_responses == 2
    assert cloud.state is State.CONNECTED


def test_memory_of_foreign_ids_is_bounded():
    cloud = _session(max_pending_requests=4)
    cloud.connection_made()
    sent = []
    for i in range(5):
        msg = Message.new(source="cloudhub", destination="edge-1", group="g", operation=INSERT,
                          resource="default/pod/a", content=i, now_ms=1)
        cloud.send_message(msg)
        sent.append(msg)
    assert len(cloud._recent) == 4
    cloud.receive_data(sent[-1].reply("OK", now_ms=2).to_bytes(), now_ms=2)
    assert cloud.state is State.CONNECTED
    cloud.receive_data(sent[0].reply("OK", now_ms=2).to_bytes(), now_ms=2)  # forgotten
    assert cloud.failure_code == "unexpected_response"


def test_own_format_ids_cost_no_memory():
    s = _in_state(State.CONNECTED)
    for _ in range(100):
        s.send_request(group="g", operation=QUERY, resource="r", content=None, now_ms=1)
    s.abandon_pending()
    assert len(s._recent) == 0


def test_response_with_empty_parent_is_delivered_uncorrelated():
    s = _in_state(State.CONNECTED)
    msg = _peer_msg(operation=RESPONSE)
    s.receive_data(msg.to_bytes(), now_ms=1)
    assert s.events_received() == [MessageReceived(msg)]
    assert s.state is State.CONNECTED


def test_keepalive_is_delivered_to_the_shell():
    s = _in_state(State.CONNECTED)
    ping = _peer_msg(operation=KEEPALIVE, content="ping")
    s.receive_data(ping.to_bytes(), now_ms=1)
    assert s.events_received() == [MessageReceived(ping)]


# -- bounds and local errors -------------------------------------------------


def test_too_many_pending_requests_are_refused():
    s = _session(max_pending_requests=3)
    s.connection_made()
    for _ in range(3):
        s.send_request(group="g", operation=QUERY, resource="r", content=None, now_ms=1)
    s.data_to_send()
    with pytest.raises(TooManyPending) as info:
        s.send_request(group="g", operation=QUERY, resource="r", content=None, now_ms=1)
    assert info.value.code == "too_many_pending"
    assert isinstance(info.value, LocalError)
    assert s.pending_count == 3
    assert s.data_to_send() == []
    # not a request: still allowed
    s.send_message(_peer_msg())
    assert len(s.data_to_send()) == 1


def test_duplicate_pending_msg_id_is_refused():
    s = _in_state(State.CONNECTED)
    s.send_request(group="g", operation=QUERY, resource="r", content=None, now_ms=1, msg_id="same")
    with pytest.raises(SessionStateError):
        s.send_request(group="g", operation=QUERY, resource="r", content=None, now_ms=1, msg_id="same")
    assert s.pending_count == 1


def test_oversized_outgoing_message_is_refused_before_queueing():
    s = _session(limits=Limits(max_frame_bytes=200))
    s.connection_made()
    with pytest.raises(MessageTooLarge) as info:
        s.send_request(group="g", operation=INSERT, resource="r", content="x" * 300, now_ms=1)
    assert info.value.code == "frame_too_large"
    assert s.pending_count == 0 and s.data_to_send() == []


def test_each_queued_item_is_exactly_one_message():
    s = _in_state(State.CONNECTED)
    s.send_message(_peer_msg(content=1))
    s.send_message(_peer_msg(content=2))
    frames = s.data_to_send()
    assert [Message.from_bytes(f).content for f in frames] == [1, 2]
    assert s.data_to_send() == []


# -- expiry ------------------------------------------------------------------


def test_expire_requests_returns_only_timed_out_ones():
    s = _in_state(State.CONNECTED)
    old = s.send_request(group="g", operation=QUERY, resource="r", content=1, now_ms=1000)
    mid = s.send_request(group="g", operation=QUERY, resource="r", content=2, now_ms=2000)
    new = s.send_request(group="g", operation=QUERY, resource="r", content=3, now_ms=3000)
    assert s.expire_requests(now_ms=3999, timeout_ms=2000) == [old]
    assert s.expire_requests(now_ms=3999, timeout_ms=2000) == []
    assert s.expire_requests(now_ms=4000, timeout_ms=2000) == [mid]
    assert s.pending_count == 1
    assert s.abandon_pending() == [new]
    assert s.pending_count == 0


def test_expire_requests_refuses_negative_timeout():
    with pytest.raises(ValueError):
        _in_state(State.CONNECTED).expire_requests(now_ms=1, timeout_ms=-1)


def test_expiry_works_after_the_session_ends():
    s = _in_state(State.CONNECTED)
    req = s.send_request(group="g", operation=QUERY, resource="r", content=None, now_ms=1)
    s.receive_eof()
    assert s.abandon_pending() == [req]


# -- construction and purity -------------------------------------------------


@pytest.mark.parametrize(
    "kw",
    [dict(role="server"), dict(local="cloud\nhub"), dict(peer="edge\x00"), dict(max_pending_requests=0)],
)
def test_bad_session_parameters_are_refused(kw):
    with pytest.raises((ValueError, ProtocolError)):
        _session(**kw)


def test_protocol_core_imports_no_io_and_reads_no_clock():
    forbidden = {"asyncio", "ssl", "socket", "sqlite3", "time", "datetime", "websockets", "os"}
    for path in sorted(PROTOCOL_DIR.glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                names = {(node.module or "").split(".")[0]}
            else:
                continue
            assert not names & forbidden, f"{path.name} imports {names & forbidden}"


def test_error_notice_is_valid_kubeedge_json():
    s = _in_state(State.CONNECTED)
    s.receive_data(b"{", now_ms=1234)
    (frame,) = s.data_to_send()
    obj = json.loads(frame)
    assert obj["route"]["operation"] == "error"
    assert obj["header"]["timestamp"] == 1234
    assert obj["content"] == {"code": "malformed_json"}


def test_cancelled_request_frees_its_slot_and_its_late_reply_is_dropped():
    cloud = _session(max_pending_requests=1)
    cloud.connection_made()
    foreign = Message.new(source="cloudhub", destination="edge-1", group="g", operation=QUERY,
                          resource="default/pod", content=None, now_ms=1)  # uuid4 id, as a shell builds it
    cloud.send_message(foreign, expect_response=True)
    with pytest.raises(TooManyPending):
        cloud.send_request(group="g", operation=QUERY, resource="r", content=None, now_ms=1)
    assert cloud.cancel_request(foreign.msg_id) == foreign
    assert cloud.cancel_request(foreign.msg_id) is None
    assert cloud.pending_count == 0
    cloud.send_request(group="g", operation=QUERY, resource="r", content=None, now_ms=2)
    cloud.receive_data(foreign.reply("late", now_ms=3).to_bytes(), now_ms=3)
    assert cloud.events_received() == []
    assert cloud.late_responses == 1 and cloud.state is State.CONNECTED
