"""The tunnel's message envelope, in KubeEdge beehive ``model.Message`` JSON.

Wire shape (field names and omission rules as Go's ``encoding/json`` writes
KubeEdge's structs)::

    {"header": {"msg_id": "...",            always
                "parent_msg_id": "...",     omitted when empty
                "timestamp": 1700000000000, always, ms since the epoch
                "resourceversion": "...",   omitted when empty
                "sync": true,               omitted when false
                "type": "..."},             omitted when empty (KubeEdge's context type)
     "route":  {"source", "destination", "group", "operation", "resource"},
                                            each omitted when empty; the object itself
                                            is always written (omitempty has no effect
                                            on a Go struct)
     "content": <any JSON value, null included>}

Decisions, all on the strict side because the peer is untrusted:

* **Unknown fields are rejected** (code ``unknown_field``) at the top level and in
  ``header``/``route``. Preserving them would mean forwarding bytes nobody
  validated; dropping them silently would make what we act on differ from what
  was sent. KubeEdge's own ``header.type`` is known and kept.
* Field names are matched exactly (Go matches case-insensitively; we do not), and
  ``header``, ``route`` and ``content`` must all be present (Go always writes
  them). Missing or mistyped fields: ``invalid_envelope``.
* ``timestamp`` must be a JSON integer in ``[0, 2**63-1]`` (Go's ``int64``; a
  float such as ``1.7e12`` is refused as Go refuses it).
* ``operation`` must be one of :data:`OPERATIONS` (``unknown_operation``). KubeEdge
  also has ``upload``; kedge does not use it, so it is refused like any other
  unknown verb.
* Route fields are at most ``limits.max_resource_bytes`` UTF-8 bytes when parsed
  from a peer (``field_too_long``) and never contain control or bidi characters.
  ``route.resource`` is kept as a string because KubeEdge uses several resource
  grammars (``ns/type/name`` on the edge, ``node/<node>/ns/type/name`` in the
  cloud); parse it with :meth:`Resource.parse` or :meth:`NodeResource.parse`.
* ``route.source``/``destination`` are whatever the peer claims. They are labels,
  never identity: the node a message came from is the certificate's node.

Everything here is pure: ``now_ms`` is a parameter, never read from a clock.
"""

from __future__ import annotations

import dataclasses
import re
import uuid
from typing import Any, Mapping

from kedge.errors import LimitExceeded, ProtocolError
from kedge.limits import DEFAULT, Limits
from kedge.protocol.codec import decode_json, encode_json

__all__ = [
    "DELETE",
    "ERROR",
    "INSERT",
    "KEEPALIVE",
    "OPERATIONS",
    "PATCH",
    "QUERY",
    "RESPONSE",
    "UPDATE",
    "Header",
    "Message",
    "NodeResource",
    "Resource",
    "Route",
    "validate_error_code",
]

INSERT = "insert"
UPDATE = "update"
PATCH = "patch"
DELETE = "delete"
QUERY = "query"
RESPONSE = "response"
ERROR = "error"
KEEPALIVE = "keepalive"
OPERATIONS: frozenset[str] = frozenset(
    {INSERT, UPDATE, PATCH, DELETE, QUERY, RESPONSE, ERROR, KEEPALIVE}
)

# Bounds on message fields (kedge.limits). MAX_ROUTE_FIELD_BYTES is a sanity cap applied on
# construction; a peer's input is held to the (smaller) ``limits.max_resource_bytes`` by
# :meth:`Message.from_dict`.
from kedge.limits import MSG_MAX_ID_CHARS as MAX_MSG_ID_CHARS  # noqa: E402
from kedge.limits import MSG_MAX_RESOURCE_VERSION_CHARS as MAX_RESOURCE_VERSION_CHARS  # noqa: E402
from kedge.limits import MSG_MAX_ROUTE_FIELD_BYTES as MAX_ROUTE_FIELD_BYTES  # noqa: E402
from kedge.limits import MSG_MAX_TYPE_CHARS as MAX_TYPE_CHARS  # noqa: E402

INT64_MAX = 2**63 - 1

_TOP_FIELDS = frozenset({"header", "route", "content"})
_HEADER_FIELDS = frozenset(
    {"msg_id", "parent_msg_id", "timestamp", "resourceversion", "sync", "type"}
)
_ROUTE_FIELDS = ("source", "destination", "group", "operation", "resource")

# Printable ASCII, no space: UUIDs and any sane id.
_TOKEN_RE = re.compile(r"[\x21-\x7e]+")
# C0/C1 controls, DEL, line/paragraph separators and bidi overrides/isolates:
# characters that corrupt logs or hide text from a human reader.
_UNSAFE_CHARS_RE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_ERROR_CODE_RE = re.compile(r"[a-z][a-z0-9_]{0,63}")

_DNS_LABEL_RE = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS_SUBDOMAIN_RE = re.compile(
    r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
)
_RESOURCE_TYPE_RE = re.compile(r"[a-z][a-z0-9]*")


def _invalid(detail: str, code: str = "invalid_envelope") -> ProtocolError:
    return ProtocolError(detail, code=code)


def _check_token(value: object, what: str, max_chars: int, *, allow_empty: bool) -> None:
    if not isinstance(value, str):
        raise _invalid(f"{what} must be a string")
    if not value:
        if allow_empty:
            return
        raise _invalid(f"{what} must not be empty")
    if len(value) > max_chars or not _TOKEN_RE.fullmatch(value):
        raise _invalid(f"{what} must be 1..{max_chars} printable ASCII characters")


def _check_text(value: object, what: str, max_bytes: int) -> None:
    """A free-form label: a str with no control/bidi characters, bounded in UTF-8 bytes."""
    if not isinstance(value, str):
        raise _invalid(f"{what} must be a string")
    if len(value) > max_bytes:
        raise LimitExceeded(f"{what} longer than {max_bytes} bytes", code="field_too_long")
    if _UNSAFE_CHARS_RE.search(value):
        raise _invalid(f"{what} contains control characters")
    if not value.isascii():
        try:
            n = len(value.encode("utf-8"))
        except UnicodeEncodeError as exc:
            raise _invalid(f"{what} is not valid Unicode") from exc
        if n > max_bytes:
            raise LimitExceeded(f"{what} longer than {max_bytes} bytes", code="field_too_long")


def validate_error_code(code: object) -> str:
    """Return *code* if it is a stable error code (``[a-z][a-z0-9_]{0,63}``).

    Only such codes go on the wire, so free text (exception messages, paths,
    tracebacks) cannot leak to a peer by accident.
    """
    if not isinstance(code, str) or not _ERROR_CODE_RE.fullmatch(code):
        raise ValueError("error code must match [a-z][a-z0-9_]{0,63}")
    return code


@dataclasses.dataclass(frozen=True)
class Header:
    """``model.MessageHeader``: identity, correlation, time and sync flag."""

    msg_id: str
    timestamp: int
    parent_msg_id: str = ""
    resourceversion: str = ""
    sync: bool = False
    message_type: str = ""  # JSON "type"; KubeEdge's delivery-context type

    def __post_init__(self) -> None:
        _check_token(self.msg_id, "msg_id", MAX_MSG_ID_CHARS, allow_empty=False)
        _check_token(self.parent_msg_id, "parent_msg_id", MAX_MSG_ID_CHARS, allow_empty=True)
        if (
            not isinstance(self.timestamp, int)
            or isinstance(self.timestamp, bool)
            or not 0 <= self.timestamp <= INT64_MAX
        ):
            raise _invalid("timestamp must be an integer in [0, 2**63-1] (ms)")
        _check_token(
            self.resourceversion, "resourceversion", MAX_RESOURCE_VERSION_CHARS, allow_empty=True
        )
        if not isinstance(self.sync, bool):
            raise _invalid("sync must be a boolean")
        _check_token(self.message_type, "type", MAX_TYPE_CHARS, allow_empty=True)

    def to_dict(self) -> dict[str, Any]:
        """Go field order, with KubeEdge's omitempty fields left out when empty."""
        out: dict[str, Any] = {"msg_id": self.msg_id}
        if self.parent_msg_id:
            out["parent_msg_id"] = self.parent_msg_id
        out["timestamp"] = self.timestamp
        if self.resourceversion:
            out["resourceversion"] = self.resourceversion
        if self.sync:
            out["sync"] = True
        if self.message_type:
            out["type"] = self.message_type
        return out

    @classmethod
    def from_dict(cls, obj: object) -> Header:
        if not isinstance(obj, dict):
            raise _invalid("header must be an object")
        unknown = obj.keys() - _HEADER_FIELDS
        if unknown:
            raise _invalid("unknown header field", code="unknown_field")
        if "msg_id" not in obj or "timestamp" not in obj:
            raise _invalid("header needs msg_id and timestamp")
        return cls(
            msg_id=obj["msg_id"],
            timestamp=obj["timestamp"],
            parent_msg_id=obj.get("parent_msg_id", ""),
            resourceversion=obj.get("resourceversion", ""),
            sync=obj.get("sync", False),
            message_type=obj.get("type", ""),
        )


@dataclasses.dataclass(frozen=True)
class Route:
    """``model.MessageRoute``: who sent it, to whom, and what it does to which resource."""

    source: str
    destination: str
    group: str
    operation: str
    resource: str

    def __post_init__(self) -> None:
        for name in _ROUTE_FIELDS:
            _check_text(getattr(self, name), f"route.{name}", MAX_ROUTE_FIELD_BYTES)
        if self.operation not in OPERATIONS:
            raise _invalid("unknown operation", code="unknown_operation")

    def to_dict(self) -> dict[str, str]:
        return {name: getattr(self, name) for name in _ROUTE_FIELDS if getattr(self, name)}

    @classmethod
    def from_dict(cls, obj: object, limits: Limits = DEFAULT) -> Route:
        if not isinstance(obj, dict):
            raise _invalid("route must be an object")
        if obj.keys() - set(_ROUTE_FIELDS):
            raise _invalid("unknown route field", code="unknown_field")
        values = {name: obj.get(name, "") for name in _ROUTE_FIELDS}
        for name, value in values.items():
            _check_text(value, f"route.{name}", limits.max_resource_bytes)
        return cls(**values)


@dataclasses.dataclass(frozen=True)
class Resource:
    """An edge resource string ``<namespace>/<type>[/<name>]``.

    Grammar (KubeEdge's edge ``ParseResourceEdge`` accepts exactly 3 segments,
    or 2 for list-style query/response such as ``default/pod``); kedge adds
    Kubernetes' own name rules so no segment can be ``..``, empty, upper case,
    or carry a separator or control character:

    * namespace -- DNS-1123 label (``[a-z0-9]([-a-z0-9]*[a-z0-9])?``, <= 63);
    * type -- ``[a-z][a-z0-9]*`` (<= 63), e.g. ``pod``, ``configmap``, ``podstatus``;
    * name -- DNS-1123 subdomain (<= 253), or empty for the 2-segment list form.

    Anything else is ``bad_resource``.
    """

    namespace: str
    type: str
    name: str = ""

    def __post_init__(self) -> None:
        for value in (self.namespace, self.type, self.name):
            if not isinstance(value, str):
                raise _invalid("resource segments must be strings", code="bad_resource")
        if len(self.namespace) > 63 or not _DNS_LABEL_RE.fullmatch(self.namespace):
            raise _invalid("bad resource namespace", code="bad_resource")
        if len(self.type) > 63 or not _RESOURCE_TYPE_RE.fullmatch(self.type):
            raise _invalid("bad resource type", code="bad_resource")
        if self.name and (len(self.name) > 253 or not _DNS_SUBDOMAIN_RE.fullmatch(self.name)):
            raise _invalid("bad resource name", code="bad_resource")

    @classmethod
    def parse(cls, s: str, limits: Limits = DEFAULT) -> Resource:
        """Parse ``ns/type/name`` or ``ns/type``; refuse everything else."""
        if not isinstance(s, str):
            raise _invalid("resource must be a string", code="bad_resource")
        if len(s) > limits.max_resource_bytes:
            raise _invalid("resource too long", code="bad_resource")
        parts = s.split("/")
        if len(parts) == 2:
            return cls(parts[0], parts[1], "")
        if len(parts) == 3 and parts[2]:
            return cls(parts[0], parts[1], parts[2])
        raise _invalid("resource must be <namespace>/<type>[/<name>]", code="bad_resource")

    @property
    def is_list(self) -> bool:
        """True for the 2-segment form that names a collection."""
        return not self.name

    def __str__(self) -> str:
        if self.name:
            return f"{self.namespace}/{self.type}/{self.name}"
        return f"{self.namespace}/{self.type}"


@dataclasses.dataclass(frozen=True)
class NodeResource:
    """The cloud-side form ``node/<node>/<namespace>/<type>[/<name>]``.

    KubeEdge's edgecontroller addresses a message to a node by prefixing the
    edge resource with ``node/<nodeID>``; the node name is a DNS-1123 subdomain.
    """

    node: str
    resource: Resource

    def __post_init__(self) -> None:
        if (
            not isinstance(self.node, str)
            or len(self.node) > 253
            or not _DNS_SUBDOMAIN_RE.fullmatch(self.node)
        ):
            raise _invalid("bad node name", code="bad_resource")
        if not isinstance(self.resource, Resource):
            raise _invalid("resource must be a Resource", code="bad_resource")

    @classmethod
    def parse(cls, s: str, limits: Limits = DEFAULT) -> NodeResource:
        if not isinstance(s, str) or len(s) > limits.max_resource_bytes:
            raise _invalid("bad node resource", code="bad_resource")
        parts = s.split("/", 2)
        if len(parts) != 3 or parts[0] != "node":
            raise _invalid("resource must start with node/<node>/", code="bad_resource")
        return cls(parts[1], Resource.parse(parts[2], limits))

    def __str__(self) -> str:
        return f"node/{self.node}/{self.resource}"


def _new_msg_id() -> str:
    return str(uuid.uuid4())


@dataclasses.dataclass(frozen=True)
class Message:
    """One ``model.Message``. Build with :meth:`new`, parse with :meth:`from_bytes`.

    ``content`` is any JSON value. The dataclass is frozen but a dict/list
    content is not deep-frozen: treat it as read-only.
    """

    header: Header
    route: Route
    content: Any

    def __post_init__(self) -> None:
        if not isinstance(self.header, Header) or not isinstance(self.route, Route):
            raise _invalid("message needs a Header and a Route")

    # -- construction ------------------------------------------------------

    @classmethod
    def new(
        cls,
        *,
        source: str,
        destination: str,
        group: str,
        operation: str,
        resource: str,
        content: Any,
        now_ms: int,
        parent_msg_id: str = "",
        resourceversion: str = "",
        sync: bool = False,
        msg_id: str | None = None,
        message_type: str = "",
    ) -> Message:
        """A fresh message; ``msg_id`` defaults to a random UUID4 string."""
        return cls(
            header=Header(
                msg_id=_new_msg_id() if msg_id is None else msg_id,
                timestamp=now_ms,
                parent_msg_id=parent_msg_id,
                resourceversion=resourceversion,
                sync=sync,
                message_type=message_type,
            ),
            route=Route(
                source=source,
                destination=destination,
                group=group,
                operation=operation,
                resource=resource,
            ),
            content=content,
        )

    def reply(
        self,
        content: Any,
        *,
        now_ms: int,
        operation: str = RESPONSE,
        msg_id: str | None = None,
    ) -> Message:
        """A response to this message: parent is our id, source/destination swapped."""
        return Message.new(
            source=self.route.destination,
            destination=self.route.source,
            group=self.route.group,
            operation=operation,
            resource=self.route.resource,
            content=content,
            now_ms=now_ms,
            parent_msg_id=self.header.msg_id,
            message_type=self.header.message_type,
            msg_id=msg_id,
        )

    def error_reply(self, code: str, *, now_ms: int, msg_id: str | None = None) -> Message:
        """An ``error`` response carrying only ``{"code": code}`` -- never exception text."""
        return self.reply(
            {"code": validate_error_code(code)}, now_ms=now_ms, operation=ERROR, msg_id=msg_id
        )

    # -- properties --------------------------------------------------------

    @property
    def msg_id(self) -> str:
        return self.header.msg_id

    @property
    def operation(self) -> str:
        return self.route.operation

    @property
    def is_response(self) -> bool:
        """A reply to one of our requests: has a parent and is ``response``/``error``."""
        return bool(self.header.parent_msg_id) and self.route.operation in (RESPONSE, ERROR)

    # -- wire --------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "header": self.header.to_dict(),
            "route": self.route.to_dict(),
            "content": self.content,
        }

    def to_bytes(self) -> bytes:
        """Compact UTF-8 JSON; raises :class:`~kedge.protocol.codec.EncodeError` if unencodable."""
        return encode_json(self.to_dict())

    @classmethod
    def from_dict(cls, obj: Mapping[str, Any] | object, limits: Limits = DEFAULT) -> Message:
        """Validate an already-decoded JSON object (see module doc for the rules)."""
        if not isinstance(obj, dict):
            raise _invalid("message must be a JSON object")
        if obj.keys() - _TOP_FIELDS:
            raise _invalid("unknown top-level field", code="unknown_field")
        if not _TOP_FIELDS <= obj.keys():
            raise _invalid("message needs header, route and content")
        return cls(
            header=Header.from_dict(obj["header"]),
            route=Route.from_dict(obj["route"], limits),
            content=obj["content"],
        )

    @classmethod
    def from_bytes(cls, data: bytes, limits: Limits = DEFAULT) -> Message:
        """Parse one frame payload; raises only ProtocolError/LimitExceeded."""
        return cls.from_dict(decode_json(data, limits), limits)
