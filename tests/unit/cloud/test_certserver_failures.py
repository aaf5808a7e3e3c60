"""Failed attempts at the certificate endpoint cannot deny others (red-team finding 3): what a
failure is charged to depends on what the request proved (kedge.cloud.certserver).

The gate is tested as a pure object; the endpoint's decisions with the real CertService, a
real cloud data dir and SQLite state, fed Requests in-process (no sockets) with a fake clock.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from kedge._internal.auditlog import AuditLog
from kedge._internal.http11 import Request
from kedge.cloud.certserver import BootstrapGate, CertService
from kedge.cloud.init import init_cloud
from kedge.cloud.state import CloudState
from kedge.limits import Limits
from kedge.pki import ca as pki
from kedge.pki import tokens

T0 = 1_800_000_000.0
LIMITS = Limits(bootstrap_fail_burst=3, bootstrap_fail_per_s=0.01, bootstrap_fail_global_burst=8,
                bootstrap_fail_global_per_s=0.01)


# -- the gate (pure) ---------------------------------------------------------------------------


def test_anonymous_failures_exhaust_their_source_only_and_never_a_usable_token():
    gate = BootstrapGate(LIMITS, now=T0)
    for _ in range(3):
        assert gate.allowed(source="10.0.0.1", credential=None, now=T0)
        gate.failed(source="10.0.0.1", credential=None, now=T0)
    assert not gate.allowed(source="10.0.0.1", credential=None, now=T0)
    assert gate.allowed(source="10.0.0.2", credential=None, now=T0)  # another address
    assert gate.allowed(source="10.0.0.1", credential="token:abc123", now=T0)  # a usable token from the same one


def test_failures_naming_a_usable_token_exhaust_that_token_only():
    gate = BootstrapGate(LIMITS, now=T0)
    for i in range(3):  # from three addresses: the bucket is the token's
        gate.failed(source=f"10.0.0.{i}", credential="token:abc123", now=T0)
    assert not gate.allowed(source="10.9.9.9", credential="token:abc123", now=T0)
    assert gate.allowed(source="10.0.0.0", credential="token:zzz999", now=T0)
    assert gate.allowed(source="10.0.0.0", credential=None, now=T0)


def test_anonymous_failures_from_many_addresses_meet_the_global_bucket_but_usable_tokens_do_not():
    gate = BootstrapGate(LIMITS, now=T0)
    for i in range(8):
        gate.failed(source=f"10.1.0.{i}", credential=None, now=T0)
    assert not gate.allowed(source="10.2.0.1", credential=None, now=T0)  # a fresh address: global cap
    assert gate.allowed(source="10.2.0.1", credential="token:abc123", now=T0)
    assert gate.allowed(source="10.2.0.1", credential=None, now=T0 + 100 / LIMITS.bootstrap_fail_global_per_s)


# -- the endpoint ------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = dt.datetime.now(dt.timezone.utc).timestamp()

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def svc(tmp_path: Path):
    d = init_cloud(tmp_path / "cloud", api_port=0)
    state = CloudState(d.state_db)
    audit = AuditLog(tmp_path / "audit.log")
    service = CertService(ca_key=pki.load_key_file(d.ca_key), ca_cert=pki.load_cert_file(d.ca_crt), state=state,
                          audit=audit, limits=LIMITS, node_cert_validity=dt.timedelta(hours=1),
                          hub_url=lambda: "wss://127.0.0.1:1", clock=Clock())
    yield service
    state.close()
    audit.close()


def token(svc: CertService, node: str) -> str:
    tok = tokens.generate(svc.ca_hash)
    now = svc._now()
    svc.state.add_token(token_id=tok.token_id, node=node, secret_hash=tokens.hash_secret(tok.token_id, tok.secret),
                        expires_at=now + dt.timedelta(hours=1), created_at=now)
    return tokens.format_token(tok)


def csr(node: str) -> bytes:
    return pki.make_csr(pki.generate_key(), node)


def post(svc: CertService, *, bearer: str | None = None, body: bytes = b"-", cert_der: bytes | None = None,
         peer: str = "127.0.0.1:40000", node: str | None = None) -> tuple[int, dict]:
    headers = {"authorization": f"Bearer {bearer}"} if bearer is not None else {}
    if node is not None:
        headers[tokens.NODE_HEADER] = node
    resp = asyncio.run(svc.handle(Request("POST", "/edge.crt", headers, body, peer, cert_der)))
    return resp.status, json.loads(resp.body or b"{}")


def flood(svc: CertService, n: int = 14, peer: str = "127.0.0.1:40001") -> list[tuple[int, str]]:
    out = []
    for _ in range(n):
        status, body = post(svc, bearer="bad.bad.bad", peer=peer)
        out.append((status, body["error"]))
    return out


def codes(results: list[tuple[int, str]]) -> list[int]:
    return [status for status, _ in results]


def test_bad_token_flood_from_an_address_does_not_refuse_a_valid_join_from_it(svc):
    refused = flood(svc)
    assert refused == [(401, "token_malformed")] * 3 + [(429, "rate_limited")] * 11
    status, body = post(svc, bearer=token(svc, "edge-a"), body=csr("edge-a"), node="edge-a")
    assert status == 200 and body["node"] == "edge-a"
    assert codes(flood(svc, 2)) == [429, 429]  # the flood itself stays refused


def test_bad_token_flood_from_an_address_does_not_refuse_a_renewal_from_it(svc):
    status, body = post(svc, bearer=token(svc, "edge-r"), body=csr("edge-r"), node="edge-r")
    assert status == 200
    der = pki.load_cert_pem(body["certificate"].encode()).public_bytes(serialization.Encoding.DER)
    flood(svc)
    status, body = post(svc, cert_der=der, body=csr("edge-r"))
    assert status == 200 and body["node"] == "edge-r"


def test_renewal_failures_make_only_that_certificate_wait(svc):
    ders = []
    for node in ("edge-x", "edge-y"):
        status, body = post(svc, bearer=token(svc, node), body=csr(node), node=node)
        ders.append(pki.load_cert_pem(body["certificate"].encode()).public_bytes(serialization.Encoding.DER))
    assert [post(svc, cert_der=ders[0], body=b"not a csr")[0] for _ in range(4)] == [400, 400, 400, 429]
    # Another node from the same address renews; the address can still make anonymous mistakes
    # (none of those counted against it); a join from it works.
    assert post(svc, cert_der=ders[1], body=csr("edge-y"))[0] == 200
    assert codes(flood(svc, 3, peer="127.0.0.1:1")) == [401, 401, 401]
    assert post(svc, bearer=token(svc, "edge-z"), body=csr("edge-z"), node="edge-z")[0] == 200


def test_wrong_secrets_for_a_usable_token_exhaust_that_token_only(svc):
    good = token(svc, "edge-t")
    wrong = good[:-43] + tokens.format_token(tokens.generate(svc.ca_hash))[-43:]
    results = [post(svc, bearer=wrong, body=csr("edge-t"), peer=f"10.0.0.{i}:1")[0] for i in range(5)]
    assert results == [401, 401, 401, 429, 429]
    assert post(svc, bearer=good, body=csr("edge-t"), node="edge-t")[0] == 429  # that token waits...
    other = token(svc, "edge-o")
    assert post(svc, bearer=other, body=csr("edge-o"), node="edge-o", peer="10.0.0.0:1")[0] == 200  # ...no other
    svc.clock.now += 1000  # type: ignore[attr-defined]
    assert post(svc, bearer=good, body=csr("edge-t"), node="edge-t")[0] == 200


def test_a_spent_token_is_anonymous_noise(svc):
    good = token(svc, "edge-s")
    assert post(svc, bearer=good, body=csr("edge-s"), node="edge-s")[0] == 200
    replays = [post(svc, bearer=good, body=csr("edge-s"), peer="10.3.0.1:1")[0] for _ in range(4)]
    assert replays == [401, 401, 401, 429]
