"""Peer-facing parsers either parse or raise a PeerError -- never anything else (seeded random inputs)."""

from __future__ import annotations

import json
import random

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from kedge.apiserver import satoken
from kedge.apiserver.patch import json_patch, merge_patch, strategic_merge_patch
from kedge.apiserver.protobuf import decode_review
from kedge.apiserver.request import parse_request
from kedge.authz.labels import parse_field_selector, parse_label_selector
from kedge.errors import PeerError

RNG = random.Random(1234)
ALPHABET = "abcxyz=!,() .-_/~:%0123456789\x00\u00e9"


def _text(n: int) -> str:
    return "".join(RNG.choice(ALPHABET) for _ in range(RNG.randint(0, n)))


def _value(depth: int = 0):
    kinds = ["s", "i", "n", "b"] + (["l", "d"] if depth < 4 else [])
    k = RNG.choice(kinds)
    if k == "s":
        return _text(8)
    if k == "i":
        return RNG.randint(-3, 3)
    if k == "n":
        return None
    if k == "b":
        return RNG.random() < 0.5
    if k == "l":
        return [_value(depth + 1) for _ in range(RNG.randint(0, 3))]
    keys = ["a", "b", "$patch", "$retainKeys", "containers", "name", "finalizers", "$setElementOrder/containers",
            "$deleteFromPrimitiveList/finalizers", "op", "path", "value", "from"]
    return {RNG.choice(keys): _value(depth + 1) for _ in range(RNG.randint(0, 4))}


def _ok_or_peer_error(fn, *args, **kw):
    try:
        fn(*args, **kw)
    except PeerError:
        pass


def test_selectors_and_request_lines():
    for _ in range(3000):
        _ok_or_peer_error(parse_label_selector, _text(40))
        _ok_or_peer_error(parse_field_selector, _text(40))
        _ok_or_peer_error(parse_request, RNG.choice(["GET", "POST", "PATCH", "BREW"]), "/" + _text(60))


def test_patches():
    for _ in range(3000):
        target, patch = _value(), _value()
        _ok_or_peer_error(strategic_merge_patch, target, patch)
        _ok_or_peer_error(json_patch, target, [patch] if RNG.random() < 0.7 else patch)
        merge_patch(target, patch)  # total: never raises


def test_protobuf_bodies():
    seeds = [b"k8s\x00", b"k8s\x00\x0a\x02\x0a\x00\x12\x00"]
    for _ in range(3000):
        body = RNG.choice(seeds) + bytes(RNG.randint(0, 255) for _ in range(RNG.randint(0, 40)))
        _ok_or_peer_error(decode_review, body)


def test_tokens():
    key = ec.generate_private_key(ec.SECP256R1())
    good = satoken.issue(key, satoken.TokenClaims("ns", "sa", "u", (satoken.API_AUDIENCE,), 0, 10_000))
    for _ in range(500):
        chars = list(good)
        for _ in range(RNG.randint(1, 5)):
            chars[RNG.randrange(len(chars))] = RNG.choice("ABCxyz._-=")
        _ok_or_peer_error(satoken.verify, "".join(chars), key.public_key(), now=100)
    with pytest.raises(PeerError):
        satoken.verify(json.dumps({"alg": "none"}), key.public_key(), now=100)


def test_api_answers_every_random_body_with_a_status(tmp_path):
    from kedge.apiserver.api import API, Request, User
    from kedge.store.sqlite import Store

    store = Store(tmp_path / "api.db", synchronous="NORMAL")
    api = API(store, clock=lambda: 1_700_000_000.0)
    admin = User("admin", ("system:masters", "system:authenticated"))
    paths = ["/api/v1/namespaces/default/pods", "/api/v1/namespaces/default/configmaps",
             "/api/v1/namespaces/default/secrets", "/api/v1/nodes", "/api/v1/namespaces",
             "/apis/rbac.authorization.k8s.io/v1/namespaces/default/roles",
             "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
             "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
             "/apis/authorization.k8s.io/v1/subjectaccessreviews"]
    ctypes = ["application/json", "application/merge-patch+json", "application/json-patch+json",
              "application/strategic-merge-patch+json"]
    for _ in range(1500):
        base = RNG.choice(paths)
        body = _value()
        if isinstance(body, dict) and RNG.random() < 0.7:
            body["metadata"] = {"name": RNG.choice(["x", "y", "p"]), **(body.get("metadata") if isinstance(
                body.get("metadata"), dict) else {})}
            if RNG.random() < 0.5:
                body["spec"] = _value()
        method = RNG.choice(["POST", "PUT", "PATCH", "DELETE", "GET"])
        path = base if method == "POST" else base + "/" + RNG.choice(["x", "y", "p"]) + RNG.choice(["", "/status"])
        resp = api.handle(Request(method, path, {"content-type": [RNG.choice(ctypes)]},
                                  json.dumps(body).encode(), admin))
        assert 200 <= resp.status < 500, (method, path, body, resp.body[:300])
    store.close()
