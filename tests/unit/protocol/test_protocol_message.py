"""The model.Message envelope: KubeEdge-shaped JSON in and out, and every refusal."""

from __future__ import annotations

import json

import pytest

from kedge.errors import LimitExceeded, ProtocolError
from kedge.limits import Limits
from kedge.protocol import message as m
from kedge.protocol.message import (
    ERROR,
    INSERT,
    KEEPALIVE,
    OPERATIONS,
    QUERY,
    RESPONSE,
    UPDATE,
    Header,
    Message,
    NodeResource,
    Resource,
    Route,
)

# What KubeEdge's edgecontroller puts on the wire for a pod update, written the way
# Go's encoding/json serialises model.Message: struct field order, omitempty fields
# absent, "<" and "&" HTML-escaped as \u003c / \u0026.
GO_POD_UPDATE = (
    b'{"header":{"msg_id":"2b6f0cc9-0f0a-4d26-9b8c-4c1f7f3b1e7e","timestamp":1700000000123,'
    b'"resourceversion":"4711"},"route":{"source":"edgecontroller","group":"resource",'
    b'"operation":"update","resource":"node/edge-1/default/pod/nginx"},'
    b'"content":{"metadata":{"name":"nginx","namespace":"default",'
    b'"annotations":{"note":"a\\u003cb\\u0026c"}},"spec":{"nodeName":"edge-1"}}}'
)
# The edge's metamanager acknowledging it (model.NewRespByMessage).
GO_EDGE_RESPONSE = (
    b'{"header":{"msg_id":"9a1d4f8e-5b7c-4e21-8f0a-1c2d3e4f5a6b",'
    b'"parent_msg_id":"2b6f0cc9-0f0a-4d26-9b8c-4c1f7f3b1e7e","timestamp":1700000000200},'
    b'"route":{"source":"metaManager","group":"resource","operation":"response",'
    b'"resource":"default/pod/nginx"},"content":"OK"}'
)
# edgehub's keepalive: BuildRouter("edgehub", "resource", "node", "keepalive").FillBody("ping")
GO_KEEPALIVE = (
    b'{"header":{"msg_id":"0f8e7d6c-5b4a-4938-8271-605f4e3d2c1b","timestamp":1700000000300},'
    b'"route":{"source":"edgehub","group":"resource","operation":"keepalive","resource":"node"},'
    b'"content":"ping"}'
)
# A sync request with a context type, all header fields present.
GO_SYNC_QUERY = (
    b'{"header":{"msg_id":"11111111-2222-4333-8444-555555555555","parent_msg_id":"p-1",'
    b'"timestamp":0,"resourceversion":"1","sync":true,"type":"channel"},'
    b'"route":{"source":"edged","destination":"cloudhub","group":"meta","operation":"query",'
    b'"resource":"default/configmap/app"},"content":null}'
)


def _msg(**overrides) -> Message:
    fields = dict(
        source="cloudhub",
        destination="edge-1",
        group="resource",
        operation=INSERT,
        resource="default/pod/nginx",
        content={"spec": {"containers": [{"name": "c"}]}},
        now_ms=1_700_000_000_000,
        msg_id="11111111-2222-4333-8444-555555555555",
    )
    fields.update(overrides)
    return Message.new(**fields)


def _env(**header_or_route) -> dict:
    env = json.loads(GO_POD_UPDATE)
    for key, value in header_or_route.items():
        section, _, name = key.partition("__")
        if value is _DELETE:
            del env[section][name]
        else:
            env[section][name] = value
    return env


_DELETE = object()


def _code(data: bytes | dict, limits: Limits | None = None) -> str:
    limits = limits or Limits()
    with pytest.raises(ProtocolError) as info:
        if isinstance(data, dict):
            Message.from_dict(data, limits)
        else:
            Message.from_bytes(data, limits)
    return info.value.code


# -- KubeEdge interop --------------------------------------------------------


def test_kubeedge_pod_update_parses():
    msg = Message.from_bytes(GO_POD_UPDATE)
    assert msg.header == Header(
        msg_id="2b6f0cc9-0f0a-4d26-9b8c-4c1f7f3b1e7e",
        timestamp=1700000000123,
        resourceversion="4711",
    )
    assert msg.route == Route("edgecontroller", "", "resource", UPDATE, "node/edge-1/default/pod/nginx")
    assert msg.content["metadata"]["annotations"]["note"] == "a<b&c"
    assert not msg.is_response
    node_res = NodeResource.parse(msg.route.resource)
    assert node_res.node == "edge-1"
    assert node_res.resource == Resource("default", "pod", "nginx")


def test_kubeedge_response_parses_and_is_a_response():
    msg = Message.from_bytes(GO_EDGE_RESPONSE)
    assert msg.is_response
    assert msg.header.parent_msg_id == "2b6f0cc9-0f0a-4d26-9b8c-4c1f7f3b1e7e"
    assert msg.content == "OK"
    assert Resource.parse(msg.route.resource) == Resource("default", "pod", "nginx")


def test_kubeedge_keepalive_parses():
    msg = Message.from_bytes(GO_KEEPALIVE)
    assert msg.operation == KEEPALIVE
    assert msg.route.resource == "node"
    assert msg.content == "ping"


def test_every_header_field_parses_and_reencodes_byte_identically():
    msg = Message.from_bytes(GO_SYNC_QUERY)
    assert msg.header.sync is True
    assert msg.header.message_type == "channel"
    assert msg.content is None
    assert msg.to_bytes() == GO_SYNC_QUERY


@pytest.mark.parametrize("wire", [GO_EDGE_RESPONSE, GO_KEEPALIVE, GO_SYNC_QUERY])
def test_go_shaped_messages_reencode_to_the_same_bytes(wire):
    assert Message.from_bytes(wire).to_bytes() == wire


def test_encoding_follows_go_field_order_and_omitempty():
    msg = _msg(content=None)
    assert msg.to_bytes() == (
        b'{"header":{"msg_id":"11111111-2222-4333-8444-555555555555","timestamp":1700000000000},'
        b'"route":{"source":"cloudhub","destination":"edge-1","group":"resource",'
        b'"operation":"insert","resource":"default/pod/nginx"},"content":null}'
    )


def test_empty_route_fields_are_omitted_but_route_object_is_kept():
    msg = Message.new(
        source="", destination="", group="", operation=KEEPALIVE, resource="", content="", now_ms=0, msg_id="a"
    )
    assert msg.to_dict() == {"header": {"msg_id": "a", "timestamp": 0}, "route": {"operation": "keepalive"}, "content": ""}


def test_explicit_empty_optional_fields_are_accepted_like_go_does():
    env = _env(header__parent_msg_id="", header__sync=False, route__destination="")
    assert Message.from_dict(env) == Message.from_bytes(GO_POD_UPDATE)


# -- round trips -------------------------------------------------------------


def test_round_trip_preserves_every_field():
    msg = _msg(parent_msg_id="p", resourceversion="42", sync=True, message_type="channel",
               content={"a": [1, 2.5, None, True, "\u00e9"]})
    assert Message.from_bytes(msg.to_bytes()) == msg
    assert Message.from_dict(msg.to_dict()) == msg


def test_new_defaults_to_a_uuid4_msg_id():
    a = Message.new(source="s", destination="d", group="g", operation=QUERY, resource="r", content=None, now_ms=1)
    b = Message.new(source="s", destination="d", group="g", operation=QUERY, resource="r", content=None, now_ms=1)
    assert a.msg_id != b.msg_id
    assert len(a.msg_id) == 36 and a.msg_id[14] == "4"


def test_reply_swaps_route_and_links_parent():
    req = _msg(message_type="channel")
    rep = req.reply({"ok": True}, now_ms=5)
    assert rep.header.parent_msg_id == req.msg_id
    assert rep.route == Route("edge-1", "cloudhub", "resource", RESPONSE, "default/pod/nginx")
    assert rep.header.timestamp == 5
    assert rep.header.message_type == "channel"
    assert rep.msg_id != req.msg_id
    assert rep.is_response


def test_error_reply_carries_only_the_code():
    rep = _msg().error_reply("bad_resource", now_ms=6)
    assert rep.operation == ERROR
    assert rep.content == {"code": "bad_resource"}
    assert rep.is_response


@pytest.mark.parametrize("text", ["KeyError: 'x'", "Traceback (most recent call last)", "", "a" * 65, "bad code"])
def test_error_reply_refuses_free_text_so_exceptions_cannot_leak(text):
    with pytest.raises(ValueError):
        _msg().error_reply(text, now_ms=6)


@pytest.mark.parametrize(
    "op, parent, expected",
    [(RESPONSE, "p", True), (ERROR, "p", True), (RESPONSE, "", False), (ERROR, "", False), (INSERT, "p", False)],
)
def test_is_response_needs_a_parent_and_a_response_operation(op, parent, expected):
    assert _msg(operation=op, parent_msg_id=parent).is_response is expected


def test_operations_are_the_documented_eight():
    assert OPERATIONS == {"insert", "update", "patch", "delete", "query", "response", "error", "keepalive"}


# -- refusals ----------------------------------------------------------------


def test_message_that_is_not_an_object_is_refused():
    assert _code(b"[]") == "invalid_envelope"
    assert _code(b'"x"') == "invalid_envelope"


@pytest.mark.parametrize("missing", ["header", "route", "content"])
def test_missing_top_level_field_is_refused(missing):
    env = json.loads(GO_POD_UPDATE)
    del env[missing]
    assert _code(env) == "invalid_envelope"


@pytest.mark.parametrize("missing", ["msg_id", "timestamp"])
def test_missing_required_header_field_is_refused(missing):
    assert _code(_env(**{f"header__{missing}": _DELETE})) == "invalid_envelope"


def test_smuggled_top_level_field_is_refused():
    env = json.loads(GO_POD_UPDATE)
    env["node"] = "edge-2"
    assert _code(env) == "unknown_field"


def test_smuggled_header_field_is_refused():
    assert _code(_env(header__node_id="edge-2")) == "unknown_field"


def test_smuggled_route_field_is_refused():
    assert _code(_env(route__node="edge-2")) == "unknown_field"


def test_case_variant_field_names_are_refused_unlike_go():
    env = json.loads(GO_POD_UPDATE)
    env["Header"] = env.pop("header")
    assert _code(env) == "unknown_field"


@pytest.mark.parametrize(
    "field, value",
    [
        ("header__timestamp", 1.7e12),
        ("header__timestamp", "1700000000123"),
        ("header__timestamp", True),
        ("header__timestamp", -1),
        ("header__timestamp", 2**63),
        ("header__timestamp", None),
        ("header__sync", "true"),
        ("header__sync", 1),
        ("header__msg_id", 7),
        ("header__msg_id", ""),
        ("header__msg_id", "a" * 65),
        ("header__msg_id", "has space"),
        ("header__msg_id", "new\nline"),
        ("header__parent_msg_id", 7),
        ("header__parent_msg_id", "x\u00e9"),
        ("header__resourceversion", 4711),
        ("header__resourceversion", "v" * 129),
        ("header__type", ["channel"]),
        ("route__source", 1),
        ("route__resource", None),
        ("route__group", {"a": 1}),
    ],
)
def test_mistyped_or_malformed_header_and_route_fields_are_refused(field, value):
    assert _code(_env(**{field: value})) == "invalid_envelope"


def test_header_and_route_must_be_objects():
    env = json.loads(GO_POD_UPDATE)
    env["header"] = []
    assert _code(env) == "invalid_envelope"
    env = json.loads(GO_POD_UPDATE)
    env["route"] = "x"
    assert _code(env) == "invalid_envelope"


def test_timestamp_bounds_are_int64():
    assert Message.from_dict(_env(header__timestamp=2**63 - 1)).header.timestamp == 2**63 - 1
    assert Message.from_dict(_env(header__timestamp=0)).header.timestamp == 0


@pytest.mark.parametrize("op", ["upload", "INSERT", "", "exec", "insert "])
def test_unknown_operation_is_refused(op):
    assert _code(_env(route__operation=op)) == "unknown_operation"


def test_missing_operation_is_refused():
    assert _code(_env(route__operation=_DELETE)) == "unknown_operation"


@pytest.mark.parametrize(
    "value",
    ["a\x00b", "a\nb", "a\rb", "a\x1bb", "a\x7fb", "a\x85b", "a\u202eb", "a\u2028b", "a\u2066b"],
)
def test_control_and_bidi_characters_in_route_fields_are_refused(value):
    assert _code(_env(route__source=value)) == "invalid_envelope"
    assert _code(_env(route__resource=value)) == "invalid_envelope"


def test_oversized_route_field_is_refused():
    with pytest.raises(LimitExceeded) as info:
        Message.from_dict(_env(route__resource="a" * 513))
    assert info.value.code == "field_too_long"
    # the bound counts UTF-8 bytes: 200 characters, 600 bytes
    assert _code(_env(route__group="\u4e2d" * 200)) == "field_too_long"
    assert Message.from_dict(_env(route__resource="a" * 512)).route.resource == "a" * 512


def test_route_bound_follows_the_limits_passed():
    tight = Limits(max_resource_bytes=8)
    assert _code(_env(route__group="resource9"), tight) == "field_too_long"
    assert _code(GO_POD_UPDATE, tight) == "field_too_long"


def test_codec_errors_surface_through_from_bytes():
    assert _code(b'{"header":{},"header":{}}') == "duplicate_key"
    assert _code(b"[" * 1000 + b"]" * 1000) == "depth_exceeded"
    assert _code(b"{" * 3) == "malformed_json"


def test_local_construction_is_validated_too():
    with pytest.raises(ProtocolError):
        _msg(operation="exec")
    with pytest.raises(ProtocolError):
        _msg(msg_id="")
    with pytest.raises(ProtocolError):
        _msg(now_ms=-1)
    with pytest.raises(ProtocolError):
        Route("s", "d", "g", INSERT, "x" * (m.MAX_ROUTE_FIELD_BYTES + 1))
    with pytest.raises(ProtocolError):
        Message(header="h", route=None, content=None)  # type: ignore[arg-type]


# -- resources ---------------------------------------------------------------


@pytest.mark.parametrize(
    "text, parsed",
    [
        ("default/pod/nginx", Resource("default", "pod", "nginx")),
        ("kube-system/configmap/kube-proxy.v1", Resource("kube-system", "configmap", "kube-proxy.v1")),
        ("default/pod", Resource("default", "pod", "")),
        ("default/serviceaccounttoken/default", Resource("default", "serviceaccounttoken", "default")),
        ("a/podstatus/" + "n" * 253, Resource("a", "podstatus", "n" * 253)),
    ],
)
def test_resource_strings_parse_and_print_back(text, parsed):
    assert Resource.parse(text) == parsed
    assert str(parsed) == text


def test_list_style_resource_has_no_name():
    assert Resource.parse("default/pod").is_list
    assert not Resource.parse("default/pod/x").is_list


@pytest.mark.parametrize(
    "text",
    [
        "",
        "pod",
        "/pod/x",  # leading slash: empty namespace
        "default//x",  # empty type
        "default/pod/",  # trailing slash: not the canonical list form
        "default/pod/x/y",  # KubeEdge's edge parser takes 2 or 3 segments only
        "default/pod/../secret",
        "default/pod/..",
        "../pod/x",
        "default/../x",
        "default/pod/.",
        "default/pod/x\x00",
        "default/pod/x\n",
        "Default/pod/x",
        "default/Pod/x",
        "default/pod/X",
        "default/pod/-x",
        "default/pod/x_y",
        "default/po d/x",
        "default/1pod/x",
        "n" * 64 + "/pod/x",
        "default/pod/" + "n" * 254,
        "node/edge-1/default/pod/x",  # the cloud form is NodeResource, not Resource
    ],
)
def test_path_traversal_and_malformed_resources_are_refused(text):
    with pytest.raises(ProtocolError) as info:
        Resource.parse(text)
    assert info.value.code == "bad_resource"


def test_resource_longer_than_the_bound_is_refused():
    with pytest.raises(ProtocolError) as info:
        Resource.parse("default/pod/abc", Limits(max_resource_bytes=10))
    assert info.value.code == "bad_resource"


def test_resource_parse_refuses_non_strings():
    with pytest.raises(ProtocolError):
        Resource.parse(None)  # type: ignore[arg-type]


def test_node_resource_round_trips():
    text = "node/edge-1/default/pod/nginx"
    parsed = NodeResource.parse(text)
    assert parsed == NodeResource("edge-1", Resource("default", "pod", "nginx"))
    assert str(parsed) == text
    assert NodeResource.parse("node/edge-1/default/pod").resource.is_list


@pytest.mark.parametrize(
    "text",
    ["nodes/edge-1/default/pod/x", "node//default/pod/x", "node/../default/pod/x", "node/edge-1",
     "node/Edge/default/pod/x", "node/edge-1/default/pod/x/y", "node/edge-1/../pod/x"],
)
def test_malformed_node_resources_are_refused(text):
    with pytest.raises(ProtocolError) as info:
        NodeResource.parse(text)
    assert info.value.code == "bad_resource"
