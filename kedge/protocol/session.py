"""The tunnel protocol object: frames in, events and frames out (sans-I/O).

The asyncio shell (cloudhub or edgehub) owns the socket and does only this::

    session.connection_made()                     # after the WebSocket handshake
    session.receive_data(frame, now_ms=...)       # one WebSocket message payload
    for event in session.events_received(): ...   # dispatch
    for frame in session.data_to_send(): ...      # one WebSocket message each
    session.receive_eof()                         # peer went away

Nothing here touches a socket or a clock; time comes in as ``now_ms``.

State machine (a table, :data:`TRANSITIONS`; h11-style)::

    CONNECTING --connection_made--> CONNECTED --close--> CLOSING --eof--> CLOSED
        |  \\--close/eof--> CLOSED       |  \\--eof--> CLOSED     |
        |                                \\--peer error--> FAILED <-- peer error
        \\--frame (too early)--> FAILED

* An input with no entry in the table is a protocol error when the *peer* caused
  it (a frame while CONNECTING): the session fails. When *we* caused it
  (sending while CLOSING, ``connection_made`` twice) it raises
  :class:`SessionStateError` and the state does not change -- our bug must not
  be blamed on the peer.
* On malformed or out-of-order input the session queues one ``error`` message
  whose content is ``{"code": <code>}`` (so the peer learns the code and
  nothing else), emits :class:`ProtocolFailed`, and goes FAILED. FAILED and
  CLOSED are terminal: further ``receive_data``/``receive_eof`` calls are
  *ignored* (frames already in flight when we failed are not the peer's new
  fault, and the shell should not need a guard); every ``send_*`` raises
  :class:`SessionStateError`; ``close`` is idempotent.
* While CLOSING we still accept frames (responses in flight) but send nothing.

Request/response correlation: a message sent with ``expect_response=True`` is
*pending* until a ``response``/``error`` whose ``parent_msg_id`` is its id
arrives (:class:`ResponseReceived`), :meth:`Session.expire_requests` times it
out, or :meth:`Session.cancel_request` gives up on it. At most ``max_pending_requests`` are pending (``too_many_pending``).

Late responses: a response whose parent we *did* send -- a request that expired
or was already answered, or a message sent without ``expect_response`` (KubeEdge
acks those) -- is dropped silently and counted in :attr:`Session.late_responses`;
KubeEdge itself tolerates late replies after a timeout and failing the whole
tunnel for one would be hostile. A response whose parent we never issued is the
peer lying: ``unexpected_response``.

"Did we issue it" costs O(1) memory per session, which matters at 10,000 edges:
messages the session builds (``send_request``, ``send_response``,
``send_error``, :meth:`Session.new_msg_id`) get ids ``<random 16 hex>-<n>``
with a per-session random prefix and a counter, so any id with our prefix and
``n`` below the counter is ours. Ids from elsewhere (``Message.new``'s UUIDs)
are remembered in a small LRU (256) once they stop being pending; beyond that a
late reply to such a message counts as unexpected. Use :meth:`new_msg_id` when
building messages by hand to avoid that.

A ``response``/``error`` with an empty ``parent_msg_id`` is not correlated and
is delivered as a plain :class:`MessageReceived` (KubeEdge's ``NewErrorMessage``
can produce one).

A shell that times requests out itself must tell the session
(:meth:`Session.cancel_request`), or call :meth:`Session.expire_requests`
periodically; otherwise timed-out requests keep their pending slots.
"""

from __future__ import annotations

import collections
import dataclasses
import enum
import secrets
from typing import Any, Union

from kedge.errors import LocalError, ProtocolError
from kedge.limits import DEFAULT, Limits
from kedge.protocol.message import (
    ERROR,
    KEEPALIVE,
    Message,
    Route,
    validate_error_code,
)

__all__ = [
    "TRANSITIONS",
    "ConnectionClosed",
    "Event",
    "Input",
    "MessageReceived",
    "MessageTooLarge",
    "ProtocolFailed",
    "ResponseReceived",
    "Session",
    "SessionStateError",
    "State",
    "TooManyPending",
]


class State(enum.Enum):
    CONNECTING = "connecting"
    CONNECTED = "connected"
    CLOSING = "closing"
    CLOSED = "closed"
    FAILED = "failed"


class Input(enum.Enum):
    """What can happen to a session; the second half of a TRANSITIONS key."""

    CONNECTION_MADE = "connection_made"  # local
    FRAME = "frame"  # peer: a well-formed message arrived
    EOF = "eof"  # peer: the transport ended
    PEER_ERROR = "peer_error"  # peer: malformed or out-of-order input
    SEND = "send"  # local
    CLOSE = "close"  # local


_LOCAL_INPUTS = frozenset({Input.CONNECTION_MADE, Input.SEND, Input.CLOSE})

TRANSITIONS: dict[tuple[State, Input], State] = {
    (State.CONNECTING, Input.CONNECTION_MADE): State.CONNECTED,
    (State.CONNECTING, Input.EOF): State.CLOSED,
    (State.CONNECTING, Input.CLOSE): State.CLOSED,
    (State.CONNECTING, Input.PEER_ERROR): State.FAILED,
    (State.CONNECTED, Input.FRAME): State.CONNECTED,
    (State.CONNECTED, Input.SEND): State.CONNECTED,
    (State.CONNECTED, Input.CLOSE): State.CLOSING,
    (State.CONNECTED, Input.EOF): State.CLOSED,
    (State.CONNECTED, Input.PEER_ERROR): State.FAILED,
    (State.CLOSING, Input.FRAME): State.CLOSING,
    (State.CLOSING, Input.CLOSE): State.CLOSING,
    (State.CLOSING, Input.EOF): State.CLOSED,
    (State.CLOSING, Input.PEER_ERROR): State.FAILED,
    (State.CLOSED, Input.CLOSE): State.CLOSED,
    (State.FAILED, Input.CLOSE): State.FAILED,
}
"""(state, input) -> next state. Anything absent is refused (see module doc)."""

TERMINAL_STATES = frozenset({State.CLOSED, State.FAILED})


class SessionStateError(LocalError):
    """We called a method the current state does not allow (e.g. send after close)."""

    code = "invalid_state"


class TooManyPending(LocalError):
    """``max_pending_requests`` requests are already waiting for a response."""

    code = "too_many_pending"


class MessageTooLarge(LocalError):
    """We tried to send a frame the peer would refuse as larger than ``max_frame_bytes``."""

    code = "frame_too_large"


@dataclasses.dataclass(frozen=True)
class MessageReceived:
    """A request or notification from the peer."""

    message: Message


@dataclasses.dataclass(frozen=True)
class ResponseReceived:
    """The peer answered one of our pending requests (correlated by parent_msg_id)."""

    message: Message
    request: Message


@dataclasses.dataclass(frozen=True)
class ProtocolFailed:
    """The peer broke the protocol; the session is FAILED. ``code`` was sent to the peer."""

    code: str


@dataclasses.dataclass(frozen=True)
class ConnectionClosed:
    """The transport ended: ``"eof"`` if the peer hung up, else the code we closed with."""

    code: str


Event = Union[MessageReceived, ResponseReceived, ProtocolFailed, ConnectionClosed]


@dataclasses.dataclass(frozen=True)
class _Pending:
    request: Message
    sent_ms: int


_RECENT_FOREIGN_IDS = 256


class Session:
    """One tunnel connection's protocol state. Not thread-safe; one per connection."""

    def __init__(
        self,
        *,
        role: str,
        local: str,
        peer: str,
        limits: Limits = DEFAULT,
        max_pending_requests: int = 1024,
    ) -> None:
        if role not in ("cloud", "edge"):
            raise ValueError("role must be 'cloud' or 'edge'")
        if not isinstance(max_pending_requests, int) or max_pending_requests <= 0:
            raise ValueError("max_pending_requests must be a positive int")
        # local/peer go into every route we build: validate them once, up front.
        Route(source=local, destination=peer, group="", operation=KEEPALIVE, resource="")
        self.role = role
        self.local = local
        self.peer = peer
        self.limits = limits
        self.max_pending_requests = max_pending_requests
        self.state = State.CONNECTING
        self.late_responses = 0
        self._failure_code: str | None = None
        self._close_code = "normal"
        self._events: list[Event] = []
        self._outgoing: list[bytes] = []
        self._pending: collections.OrderedDict[str, _Pending] = collections.OrderedDict()
        # Ids of our own making: "<prefix>-<n>" for n < _next_seq (see module doc).
        self._id_prefix = secrets.token_hex(8)
        self._next_seq = 0
        # Foreign-format ids we sent whose responses we no longer wait for.
        self._recent: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._recent_max = min(_RECENT_FOREIGN_IDS, max_pending_requests)

    # -- state table -------------------------------------------------------

    def _next_state(self, inp: Input) -> State | None:
        return TRANSITIONS.get((self.state, inp))

    def _transition(self, inp: Input) -> None:
        """Apply a *local* input; refuse one with no table entry."""
        nxt = self._next_state(inp)
        if nxt is None:
            raise SessionStateError(f"{inp.value} not allowed in state {self.state.value}")
        self.state = nxt

    @property
    def failure_code(self) -> str | None:
        """The code this session failed with, or None."""
        return self._failure_code

    @property
    def pending_count(self) -> int:
        return len(self._pending)

    def new_msg_id(self) -> str:
        """A fresh msg_id this session will recognise as its own (see module doc)."""
        seq = self._next_seq
        self._next_seq = seq + 1
        return f"{self._id_prefix}-{seq}"

    def _issued(self, msg_id: str) -> bool:
        """Did this session send a message with this id (and no longer await it)?"""
        prefix, sep, seq = msg_id.rpartition("-")
        if sep and prefix == self._id_prefix and seq.isdigit() and seq.isascii():
            return str(int(seq)) == seq and int(seq) < self._next_seq
        return msg_id in self._recent

    # -- peer side ---------------------------------------------------------

    def connection_made(self) -> None:
        """The WebSocket is open: CONNECTING -> CONNECTED."""
        self._transition(Input.CONNECTION_MADE)

    def receive_data(self, data: bytes, *, now_ms: int) -> None:
        """Feed one whole frame payload. Ignored once CLOSED or FAILED."""
        if self.state in TERMINAL_STATES:
            return
        if self._next_state(Input.FRAME) is None:
            self._fail("unexpected_frame", now_ms=now_ms)
            return
        try:
            msg = Message.from_bytes(data, self.limits)
        except ProtocolError as exc:  # LimitExceeded is a ProtocolError
            self._fail(exc.code, now_ms=now_ms)
            return
        if msg.is_response:
            parent = msg.header.parent_msg_id
            pending = self._pending.pop(parent, None)
            if pending is not None:
                self._remember(parent)
                self._events.append(ResponseReceived(message=msg, request=pending.request))
            elif self._issued(parent):
                self.late_responses += 1
            else:
                self._fail("unexpected_response", now_ms=now_ms, parent_msg_id=msg.msg_id)
                return
        else:
            self._events.append(MessageReceived(message=msg))
        self.state = TRANSITIONS[(self.state, Input.FRAME)]

    def receive_eof(self) -> None:
        """The transport ended. Ignored once CLOSED or FAILED."""
        if self.state in TERMINAL_STATES:
            return
        closing = self.state is State.CLOSING
        self.state = TRANSITIONS[(self.state, Input.EOF)]
        self._events.append(ConnectionClosed(self._close_code if closing else "eof"))

    def _fail(self, code: str, *, now_ms: int, parent_msg_id: str = "") -> None:
        """Peer fault: tell the peer the code, emit ProtocolFailed, go FAILED."""
        self.state = TRANSITIONS[(self.state, Input.PEER_ERROR)]
        self._failure_code = code
        notice = Message.new(
            source=self.local,
            destination=self.peer,
            group="",
            operation=ERROR,
            resource="",
            content={"code": validate_error_code(code)},
            now_ms=max(0, now_ms),
            parent_msg_id=parent_msg_id,
            msg_id=self.new_msg_id(),
        )
        self._outgoing.append(notice.to_bytes())
        self._events.append(ProtocolFailed(code))

    # -- local side --------------------------------------------------------

    def send_message(self, msg: Message, *, expect_response: bool = False) -> None:
        """Queue one message as one frame; with *expect_response*, track it as pending."""
        if not isinstance(msg, Message):
            raise TypeError("send_message takes a Message")
        if self._next_state(Input.SEND) is None:
            raise SessionStateError(f"cannot send in state {self.state.value}")
        if expect_response:
            if msg.msg_id in self._pending:
                raise SessionStateError("a request with this msg_id is already pending")
            if len(self._pending) >= self.max_pending_requests:
                raise TooManyPending(f"{self.max_pending_requests} requests already pending")
        frame = msg.to_bytes()
        if len(frame) > self.limits.max_frame_bytes:
            raise MessageTooLarge(f"frame of {len(frame)} bytes exceeds max_frame_bytes")
        self._transition(Input.SEND)
        if expect_response:
            self._pending[msg.msg_id] = _Pending(msg, msg.header.timestamp)
        else:
            self._remember(msg.msg_id)
        self._outgoing.append(frame)

    def send_request(
        self,
        *,
        group: str,
        operation: str,
        resource: str,
        content: Any,
        now_ms: int,
        resourceversion: str = "",
        sync: bool = True,
        msg_id: str | None = None,
    ) -> Message:
        """Build a message from ``local`` to ``peer``, send it expecting a response, return it."""
        msg = Message.new(
            source=self.local,
            destination=self.peer,
            group=group,
            operation=operation,
            resource=resource,
            content=content,
            now_ms=now_ms,
            resourceversion=resourceversion,
            sync=sync,
            msg_id=self.new_msg_id() if msg_id is None else msg_id,
        )
        self.send_message(msg, expect_response=True)
        return msg

    def send_response(self, request: Message, content: Any, *, now_ms: int) -> None:
        """Answer a request from the peer."""
        self.send_message(request.reply(content, now_ms=now_ms, msg_id=self.new_msg_id()))

    def send_error(self, request: Message | None, code: str, *, now_ms: int) -> None:
        """Tell the peer a request failed, by code only (``[a-z][a-z0-9_]*``).

        With ``request=None`` the error is not tied to a message (parent empty).
        """
        if request is not None:
            validate_error_code(code)
            self.send_message(request.error_reply(code, now_ms=now_ms, msg_id=self.new_msg_id()))
            return
        self.send_message(
            Message.new(
                source=self.local,
                destination=self.peer,
                group="",
                operation=ERROR,
                resource="",
                content={"code": validate_error_code(code)},
                now_ms=now_ms,
                msg_id=self.new_msg_id(),
            )
        )

    def close(self, code: str = "normal") -> None:
        """Start closing: CONNECTED -> CLOSING (idempotent once closing or done).

        The shell then closes the WebSocket and calls :meth:`receive_eof` when
        the transport is gone. Nothing is sent after this.
        """
        validate_error_code(code)
        if self.state is State.CONNECTED or self.state is State.CONNECTING:
            self._close_code = code
        self._transition(Input.CLOSE)

    # -- draining ----------------------------------------------------------

    def events_received(self) -> list[Event]:
        """Return and forget the events produced since the last call."""
        events, self._events = self._events, []
        return events

    def data_to_send(self) -> list[bytes]:
        """Return and forget the frames to send; each item is ONE WebSocket message."""
        frames, self._outgoing = self._outgoing, []
        return frames

    # -- timeouts ----------------------------------------------------------

    def expire_requests(self, *, now_ms: int, timeout_ms: int) -> list[Message]:
        """Remove and return pending requests sent (header timestamp) >= timeout_ms ago.

        A response that still arrives for one of them later is dropped and
        counted in :attr:`late_responses`, not treated as a protocol error.
        """
        if timeout_ms < 0:
            raise ValueError("timeout_ms must be >= 0")
        expired = [
            msg_id
            for msg_id, pending in self._pending.items()
            if now_ms - pending.sent_ms >= timeout_ms
        ]
        out = []
        for msg_id in expired:
            out.append(self._pending.pop(msg_id).request)
            self._remember(msg_id)
        return out

    def cancel_request(self, msg_id: str) -> Message | None:
        """Stop waiting for the response to request *msg_id*; return it, or None if not pending.

        For a shell that times a request out itself (``asyncio.timeout``): without
        this (or :meth:`expire_requests`) the entry would stay pending and count
        against ``max_pending_requests`` forever. A response that still arrives
        later is dropped as late, not treated as a protocol error.
        """
        pending = self._pending.pop(msg_id, None)
        if pending is None:
            return None
        self._remember(msg_id)
        return pending.request

    def abandon_pending(self) -> list[Message]:
        """Remove and return every pending request (e.g. to resend after a reconnect)."""
        out = [p.request for p in self._pending.values()]
        for msg_id in list(self._pending):
            self._remember(msg_id)
        self._pending.clear()
        return out

    def _remember(self, msg_id: str) -> None:
        """Keep a foreign-format id we sent, so a late reply to it is tolerated."""
        if self._issued_own_format(msg_id):
            return  # recognised from the counter; costs nothing to remember
        recent = self._recent
        recent[msg_id] = None
        recent.move_to_end(msg_id)
        while len(recent) > self._recent_max:
            recent.popitem(last=False)

    def _issued_own_format(self, msg_id: str) -> bool:
        prefix, sep, _ = msg_id.rpartition("-")
        return bool(sep) and prefix == self._id_prefix
