"""RequestInfo parsing and the bounded protobuf reader."""

from __future__ import annotations

import pytest

from kedge.apiserver.protobuf import ProtobufError, _varint, decode_review
from kedge.apiserver.request import MAX_QUERY_PARAMS, BadRequest, parse_request
from kedge.errors import PeerError


@pytest.mark.parametrize("method,target,expect", [
    ("GET", "/api/v1/namespaces/ns/pods/p", dict(verb="get", namespace="ns", resource="pods", name="p")),
    ("GET", "/api/v1/namespaces/ns/pods", dict(verb="list", namespace="ns", resource="pods", name="")),
    ("GET", "/api/v1/pods?watch=true", dict(verb="watch", namespace="", resource="pods")),
    ("GET", "/api/v1/namespaces/ns/pods?watch=1&fieldSelector=metadata.name%3Dp",
     dict(verb="watch", name="p", resource="pods")),
    ("DELETE", "/api/v1/namespaces/ns/pods", dict(verb="deletecollection")),
    ("PUT", "/api/v1/namespaces/ns/pods/p/status", dict(verb="update", subresource="status", name="p")),
    ("GET", "/api/v1/namespaces/ns", dict(verb="get", resource="namespaces", name="ns", namespace="")),
    ("PUT", "/api/v1/namespaces/ns/finalize", dict(resource="namespaces", name="ns", subresource="finalize")),
    ("POST", "/apis/rbac.authorization.k8s.io/v1/namespaces/a/roles",
     dict(verb="create", api_group="rbac.authorization.k8s.io", namespace="a", resource="roles")),
    ("PATCH", "/apis/example.com/v1/widgets/w", dict(verb="patch", api_group="example.com", name="w")),
])
def test_resource_requests(method, target, expect):
    info = parse_request(method, target)
    assert info.resource_request
    for k, v in expect.items():
        assert getattr(info, k) == v, k


@pytest.mark.parametrize("target", ["/version", "/api", "/api/v1", "/apis", "/apis/apps", "/apis/apps/v1",
                                    "/healthz", "/openapi/v3/api/v1"])
def test_non_resource_requests(target):
    info = parse_request("GET", target)
    assert not info.resource_request and info.verb == "get" and info.path == target


@pytest.mark.parametrize("target", ["/api/v1/namespaces/../secrets", "http://evil/api/v1/pods",
                                    "/api/v1/pods/%00x", "/api/v1/pods?fieldSelector=nofield"])
def test_bad_targets(target):
    with pytest.raises(PeerError):  # BadRequest or SelectorError
        parse_request("GET", target)


def _ld(num: int, payload: bytes) -> bytes:
    return bytes([num << 3 | 2, len(payload)]) + payload


def _ssar(verb: bytes, resource: bytes, name: bytes = b"") -> bytes:
    attrs = _ld(2, verb) + _ld(5, resource) + (_ld(7, name) if name else b"")
    raw = _ld(2, _ld(1, attrs))
    type_meta = _ld(1, b"authorization.k8s.io/v1") + _ld(2, b"SelfSubjectAccessReview")
    return b"k8s\x00" + _ld(1, type_meta) + _ld(2, raw)


def test_decode_self_subject_access_review():
    obj = decode_review(_ssar(b"create", b"pods", b"x"))
    assert obj["kind"] == "SelfSubjectAccessReview"
    assert obj["spec"]["resourceAttributes"] == {"verb": "create", "resource": "pods", "name": "x"}


def test_decode_configmap_maps():
    entry = _ld(1, b"k") + _ld(2, b"v")
    raw = _ld(1, _ld(1, b"cm")) + _ld(2, entry)
    body = b"k8s\x00" + _ld(1, _ld(1, b"v1") + _ld(2, b"ConfigMap")) + _ld(2, raw)
    assert decode_review(body) == {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm"},
                                   "data": {"k": "v"}}


@pytest.mark.parametrize("body", [b"", b"k8s\x00\x0a\xff", b"no-magic",
                                  b"k8s\x00" + _ld(1, _ld(1, b"v1") + _ld(2, b"Pod")),
                                  b"k8s\x00\x0f", b"k8s\x00" + b"\x80" * 20])
def test_protobuf_garbage_is_refused(body):
    with pytest.raises(ProtobufError):
        decode_review(body)


# -- fuzzing regressions ---------------------------------------------------------

@pytest.mark.parametrize("query", [
    "&".join(f"k{i}=v" for i in range(MAX_QUERY_PARAMS + 1)),
    "&" * 200,  # parse_qs counts separators, even of empty fields
])
def test_more_than_64_query_fields_is_bad_request_not_a_crash(query):
    with pytest.raises(BadRequest) as err:
        parse_request("GET", "/api/v1/pods?" + query)
    assert err.value.code == "bad_request"


def test_exactly_64_query_fields_are_accepted():
    info = parse_request("GET", "/api/v1/pods?" + "&".join(f"k{i}=v" for i in range(MAX_QUERY_PARAMS)))
    assert len(info.query) == MAX_QUERY_PARAMS


def test_varint_with_a_tenth_byte_above_one_is_refused_as_overflow():
    # Go's protowire: the tenth byte may only carry bit 63
    assert _varint(b"\xff" * 9 + b"\x01", 0) == (2**64 - 1, 10)
    for tenth in (b"\x02", b"\x7f", b"\x80\x00"):
        with pytest.raises(ProtobufError):
            _varint(b"\x80" * 9 + tenth, 0)
    # the fuzzer's input: TokenRequest.spec.expirationSeconds of ten bytes ending 0x24 (2**63 * 0x24)
    crash = (b"k8s\x00\n(\n\x18authentication.k8s.io/v1\x12\x0cTokenRequest"
             b"\x12\r\x12\x0b \x80\x80\x80\x80\x80\x80\x80\x80\x80$")
    with pytest.raises(ProtobufError):
        decode_review(crash)
