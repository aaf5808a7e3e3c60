"""Threat: a YAML request body freezes the API server for every client.

Red-team finding: a 3 MiB ``application/yaml`` body (300,000 short lines) posted by any
authenticated identity -- a node, a service account -- to selfsubjectaccessreviews kept the API
server's event loop busy for ~19 s: every other request waited. YAML bodies are now bounded
(API_MAX_YAML_BODY_BYTES) and decoded in a worker thread, one at a time.
"""

from __future__ import annotations

import http.client
import threading
import time
from pathlib import Path

import pytest

from kedge import tls
from kedge.apiserver import decoding
from kedge.apiserver.status import ApiError
from kedge.limits import API_MAX_YAML_BODY_BYTES
from support.cluster import Cloud
from support.fixtures import cloud  # noqa: F401 - pytest fixture

SSAR = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"


def _yaml(size: int) -> bytes:
    lines, i = ["x:"], 0
    total = 3
    while total < size - 16:
        line = f"  k{i}: v"
        lines.append(line)
        total += len(line) + 1
        i += 1
    return ("\n".join(lines) + "\n").encode()


def _client(cloud: Cloud, edge: Path | None = None) -> http.client.HTTPSConnection:
    host, port = cloud.endpoints()["api"].removeprefix("https://").rsplit(":", 1)
    if edge is None:
        pki = cloud.dir / "pki"
        ctx = tls.client_context(pki / "ca.crt", pki / "admin.crt", pki / "admin.key")
    else:
        pki = edge / "pki"
        ctx = tls.client_context(pki / "ca.crt", pki / "node.crt", pki / "node.key")
    return http.client.HTTPSConnection(host, int(port), timeout=60, context=ctx)


def _post_yaml(cloud: Cloud, edge: Path, body: bytes) -> int:
    conn = _client(cloud, edge)
    try:
        conn.request("POST", SSAR, body=body, headers={"Content-Type": "application/yaml"})
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


@pytest.mark.threat("K-YAML-BODY-DOS")
def test_oversized_yaml_body_is_refused_before_it_is_parsed(cloud: Cloud, tmp_path: Path):
    assert cloud.join("yaml-1", tmp_path / "e").returncode == 0
    t0 = time.monotonic()
    assert _post_yaml(cloud, tmp_path / "e", _yaml(3 * 1024 * 1024)) == 413
    assert time.monotonic() - t0 < 10


@pytest.mark.threat("K-YAML-BODY-DOS")
def test_yaml_bodies_do_not_stall_other_clients(cloud: Cloud, tmp_path: Path):
    assert cloud.join("yaml-2", tmp_path / "e").returncode == 0
    body = _yaml(API_MAX_YAML_BODY_BYTES - 64)
    statuses: list[int] = []

    def flood() -> None:
        for _ in range(3):
            statuses.append(_post_yaml(cloud, tmp_path / "e", body))

    workers = [threading.Thread(target=flood) for _ in range(4)]
    for w in workers:
        w.start()
    slowest, asked = 0.0, 0
    admin = _client(cloud)
    try:
        deadline = time.monotonic() + 90
        while any(w.is_alive() for w in workers) and time.monotonic() < deadline:
            t0 = time.monotonic()
            admin.request("GET", "/api/v1/namespaces/default")
            resp = admin.getresponse()
            resp.read()
            assert resp.status == 200
            slowest = max(slowest, time.monotonic() - t0)
            asked += 1
    finally:
        admin.close()
        for w in workers:
            w.join(120)
    # Every body was decoded in full (then refused as an invalid review: 422), while the admin
    # kept being answered: before, each body held the event loop ~1.3 s, four at once ~5 s.
    assert len(statuses) == 12 and set(statuses) == {422}, statuses
    assert asked >= 3
    assert slowest < 1.5, f"an admin request waited {slowest:.2f}s behind YAML bodies"


def test_yaml_anchors_and_aliases_are_refused_by_the_fast_path():
    for doc in (b"a: &x [1, 2]\nb: *x\n", b"a: &x 1\n"):
        with pytest.raises(ApiError) as info:
            decoding.decode_yaml(doc)
        assert info.value.status == 400
    assert decoding.decode_yaml(b"a: [1, 2]\nb: {c: d}\n") == {"a": [1, 2], "b": {"c": "d"}}
    with pytest.raises(ApiError) as info:
        decoding.decode_yaml(b"a: b\n" + b"#" * API_MAX_YAML_BODY_BYTES)
    assert info.value.status == 413
