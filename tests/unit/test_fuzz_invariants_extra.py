"""The API and release fuzz targets' invariants have teeth.

A fuzz target whose checks can never fail finds nothing. Each test here swaps the
parser under a target for a subtly broken one (one that accepts what the real one
must refuse) and shows that ``test_one_input`` then raises -- exactly what libFuzzer
would report as a crash. The real parsers are restored after each test.
"""

from __future__ import annotations

import base64
import dataclasses
import importlib.util
import json
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TARGETS = ROOT / "fuzz" / "targets"
CORPUS = ROOT / "fuzz" / "corpus"


def _target(name: str) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(f"kedge_fuzz_extra_{name}", TARGETS / f"fuzz_{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _seed(name: str, file: str) -> bytes:
    return (CORPUS / name / file).read_bytes()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_satoken_target_catches_a_verifier_that_skips_the_signature(monkeypatch):
    t = _target("api_satoken")
    issued = _seed("api_satoken", "issued_valid.txt").decode()
    header, body, _ = issued.split(".")
    claims = json.loads(base64.urlsafe_b64decode(body + "=="))
    claims["sub"] = "system:serviceaccount:kube-system:admin"
    claims["kubernetes.io"] = {"namespace": "kube-system", "serviceaccount": {"name": "admin", "uid": "u"}}
    forged = f"{header}.{_b64(json.dumps(claims).encode())}.{_b64(bytes(64))}"
    t.test_one_input(forged.encode())  # the real verifier refuses the forgery: no finding

    def no_signature_check(token, public_key, *, now, audiences):
        h64, b64, _ = token.split(".")
        body = json.loads(base64.urlsafe_b64decode(b64 + "=" * (-len(b64) % 4)))
        sa = body["kubernetes.io"]
        return t.satoken.TokenClaims(namespace=sa["namespace"], name=sa["serviceaccount"]["name"], uid="u",
                                     audiences=tuple(body["aud"]), issued_at=body["iat"], expires_at=body["exp"])

    monkeypatch.setattr(t.satoken, "verify", no_signature_check)
    with pytest.raises(AssertionError, match="never signed"):
        t.test_one_input(forged.encode())


def test_satoken_target_reaches_the_accepting_branch_with_tokens_it_signs():
    t = _target("api_satoken")
    token, signed = t._token(_seed("api_satoken", "signed_claims.bin"))
    claims = t.satoken.verify(token, t.PUBLIC, now=t.NOW, audiences=t.AUDIENCES)
    assert token.rsplit(".", 1)[0] == signed
    assert claims.username == "system:serviceaccount:default:builder"


def test_bootstrap_token_target_catches_a_lenient_parser(monkeypatch):
    t = _target("api_bootstrap_token")
    valid = _seed("api_bootstrap_token", "valid.txt")
    real = t.tokens.parse_token
    t.test_one_input(valid + b"\n")
    monkeypatch.setattr(t.tokens, "parse_token", lambda s: real(s.strip()))
    with pytest.raises(AssertionError, match="non-canonical"):
        t.test_one_input(valid + b"\n")


def test_sums_target_catches_a_path_in_a_file_name(monkeypatch):
    t = _target("release_sums")
    data = _seed("release_sums", "path_traversal.txt")
    t.test_one_input(data)
    monkeypatch.setattr(t.sums, "check_name", lambda name: name)
    with pytest.raises(AssertionError, match="unsafe file name"):
        t.test_one_input(data)


def test_statement_target_catches_a_reader_that_skips_the_type_check(monkeypatch):
    t = _target("release_statement")
    data = _seed("release_statement", "slsa_v02.json")
    t.test_one_input(data)
    monkeypatch.setattr(t.provenance, "parse_statement", json.loads)
    with pytest.raises(AssertionError, match="predicateType"):
        t.test_one_input(data)


def test_request_target_catches_a_dot_dot_name(monkeypatch):
    t = _target("api_request")
    data = _seed("api_request", "dotdot_encoded.txt")
    real = t.parse_request
    t.test_one_input(data)

    def walks(method, target):
        return dataclasses.replace(real(method, target.replace("%2e%2e", "x")), name="..")

    monkeypatch.setattr(t, "parse_request", walks)
    with pytest.raises(AssertionError, match="neither in the URL"):
        t.test_one_input(data)

    def walks_in_path(method, target):
        info = real(method, target.replace("%2e%2e", "x"))
        return dataclasses.replace(info, path=info.path.replace("/x/", "/%2e%2e/"), name="..")

    monkeypatch.setattr(t, "parse_request", walks_in_path)
    with pytest.raises(AssertionError, match="unsafe"):
        t.test_one_input(data)


def test_patch_target_catches_a_merge_patch_that_mutates_the_stored_object(monkeypatch):
    t = _target("api_patch")
    data = _seed("api_patch", "merge_labels.bin")
    real = t.merge_patch
    t.test_one_input(data)

    def mutating(target, patch):
        if isinstance(target, dict):
            target["touched"] = True
        return real(target, patch)

    mutating.__name__ = "merge_patch"
    monkeypatch.setattr(t, "merge_patch", mutating)
    with pytest.raises(AssertionError, match="mutated the target"):
        t.test_one_input(data)


def test_protobuf_target_catches_a_field_of_the_wrong_shape(monkeypatch):
    t = _target("api_protobuf")
    data = _seed("api_protobuf", "configmap.pb")
    t.test_one_input(data)
    monkeypatch.setattr(t.pb, "decode_review",
                        lambda body: {"apiVersion": "v1", "kind": "ConfigMap", "data": {"k": 1}})
    with pytest.raises(AssertionError, match="string map"):
        t.test_one_input(data)


def test_selectors_target_catches_an_accepted_invalid_key(monkeypatch):
    t = _target("api_selectors")
    data = _seed("api_selectors", "bad_key.txt")
    t.test_one_input(data)
    monkeypatch.setattr(t.L, "parse_label_selector",
                        lambda text: t.L.Selector((t.L.Requirement("-a", "=", ("b",)),)) if text else t.L.Selector())
    with pytest.raises(AssertionError, match="invalid key"):
        t.test_one_input(data)
