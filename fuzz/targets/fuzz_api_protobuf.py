"""Fuzz the apiserver's protobuf body reader (``application/vnd.kubernetes.protobuf``).

Invariant:

1. ``kedge.apiserver.protobuf.fields`` on arbitrary bytes returns at most
   ``MAX_FIELDS`` ``(number, wire type, value)`` triples or raises ``ProtobufError``
   (code ``invalid_protobuf``). What it returns re-encodes (with a minimal encoder
   written here) to bytes that parse to the same triples.
2. ``decode_review`` either raises ``ProtobufError`` (code ``invalid_protobuf``) or
   returns a JSON-serialisable dict whose ``kind`` is one of ``KIND_SCHEMAS`` and whose
   every other field has exactly the shape the kind's schema declares (strings are
   ``str``, string lists are lists of ``str``, maps map ``str`` to ``str``, binary
   maps hold valid base64, ints fit in 64 bits, nested messages are dicts of their
   own schema) -- nothing else, so the handlers that read the dict see only shapes a
   JSON body of that kind could have.

Input layout: a first byte of 0x00 means "wrap the rest": byte 1 picks a kind from
``KIND_SCHEMAS`` (sorted), the envelope ``k8s\\0`` + TypeMeta is built here and the
remaining bytes are the raw object, so the fuzzer spends its time on the object
schemas; any other input is passed as-is.

Run: ``.venv/bin/python fuzz/targets/fuzz_api_protobuf.py -max_total_time=60 /tmp/scratch fuzz/corpus/api_protobuf``
"""

from __future__ import annotations

import base64
import binascii
import json
import sys
from pathlib import Path
from typing import Any

try:
    import kedge  # noqa: F401
except ImportError:  # running as a script from a checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from kedge.apiserver import protobuf as pb

KINDS = sorted(pb.KIND_SCHEMAS)


def _require(ok: bool, what: str) -> None:
    """Like assert, but survives ``python -O``: a violated invariant is a crash."""
    if not ok:
        raise AssertionError(what)


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _encode(triples: list[tuple[int, int, Any]]) -> bytes:
    out = bytearray()
    for num, wt, val in triples:
        out += _varint(num << 3 | wt)
        if wt == 0:
            out += _varint(val)
        elif wt == 2:
            out += _varint(len(val)) + val
        else:
            out += val
    return bytes(out)


def envelope(kind: str, raw: bytes, api_version: str = "v1") -> bytes:
    """``k8s\\0`` + Unknown{typeMeta{apiVersion, kind}, raw} -- what client-go sends."""
    type_meta = _encode([(1, 2, api_version.encode()), (2, 2, kind.encode())])
    return pb.MAGIC + _encode([(1, 2, type_meta), (2, 2, raw)])


def _input(data: bytes) -> bytes:
    if data[:1] == b"\x00" and len(data) >= 2:
        return envelope(KINDS[data[1] % len(KINDS)], data[2:])
    return data


def _check_shape(obj: Any, schema: pb.Schema, where: str) -> None:
    _require(isinstance(obj, dict), f"{where} is not an object")
    by_name = {name: kind for name, kind in schema.values()}
    for key, value in obj.items():
        _require(key in by_name, f"{where}.{key} is not in the schema")
        kind = by_name[key]
        at = f"{where}.{key}"
        if kind == "str":
            _require(isinstance(value, str), f"{at} not a string")
        elif kind == "strs":
            _require(isinstance(value, list) and all(isinstance(v, str) for v in value), f"{at} not strings")
        elif kind == "bool":
            _require(isinstance(value, bool), f"{at} not a bool")
        elif kind == "int":
            _require(type(value) is int and 0 <= value < 2**64, f"{at} not a uint64")
        elif kind in ("map", "bmap"):
            _require(isinstance(value, dict), f"{at} not a map")
            for k, v in value.items():
                _require(isinstance(k, str) and isinstance(v, str), f"{at} not a string map")
                if kind == "bmap":
                    try:
                        base64.b64decode(v, validate=True)
                    except (binascii.Error, ValueError) as exc:
                        raise AssertionError(f"{at}[{k!r}] is not base64") from exc
        elif isinstance(kind, tuple):
            _require(isinstance(value, list), f"{at} not a list")
            for i, item in enumerate(value):
                _check_shape(item, kind[1], f"{at}[{i}]")
        else:
            _check_shape(value, kind, at)


def _check_fields(data: bytes) -> None:
    try:
        triples = pb.fields(data)
    except pb.ProtobufError as exc:
        _require(exc.code == "invalid_protobuf", f"undocumented code {exc.code}")
        return
    _require(len(triples) <= pb.MAX_FIELDS, "more fields than MAX_FIELDS")
    _require(pb.fields(_encode(triples)) == triples, "fields do not round-trip")


def test_one_input(data: bytes) -> None:
    """One fuzz iteration; raises only if the invariant in the module docstring breaks."""
    _check_fields(data)
    body = _input(data)
    try:
        obj = pb.decode_review(body)
    except pb.ProtobufError as exc:
        _require(exc.code == "invalid_protobuf", f"undocumented code {exc.code}")
        return
    kind = obj.get("kind")
    _require(kind in pb.KIND_SCHEMAS, f"decoded an unsupported kind {kind!r}")
    _require(isinstance(obj.get("apiVersion"), str), "apiVersion is not a string")
    rest = {k: v for k, v in obj.items() if k not in ("kind", "apiVersion")}
    _check_shape(rest, pb.KIND_SCHEMAS[kind], kind)
    json.dumps(obj, ensure_ascii=False).encode("utf-8")
    _require(pb.decode_review(body) == obj, "decoding is not deterministic")


def main() -> None:
    import atheris  # lazily: replaying the corpus in the test suite must not need it

    atheris.instrument_all()
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
