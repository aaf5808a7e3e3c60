"""Fuzz the PATCH engines: JSON merge patch, JSON patch and strategic merge patch.

The apiserver decodes a PATCH body as JSON, refuses it if it nests deeper than
``MAX_JSON_DEPTH`` and then applies it to the stored object with one of the three
functions of ``kedge.apiserver.patch``. This target does the same.

Invariant: each function returns or raises ``PatchError`` (code ``invalid_patch``,
``patch_test_failed`` for a failed JSON patch ``test``, or ``patch_too_large`` when a
bound of ``kedge.limits`` on the work of one patch is reached) -- nothing else (no
``ValueError`` from an array index such as ``"/a/\\u00b2"`` or ``"/a/<5000 digits>"``,
no ``RecursionError``, ``TypeError``...). Neither the stored object nor the patch is
ever mutated. Every result is JSON-serialisable and deterministic. And, per
operation:

* merge patch (RFC 7386) is idempotent: applying the same patch twice gives the
  result of applying it once;
* JSON patch (RFC 6902) applies operations in order: applying the first k and then
  the rest gives the same result (or the same refusal) as applying all at once -- unless
  the whole patch was refused for a bound (each half has a budget of its own);
* strategic merge patch agrees with merge patch whenever the patch holds no lists and
  no ``$`` directives (maps merge, ``null`` deletes, scalars replace in both).

Input layout: byte 0 picks the patch type (``% 3``: merge, JSON, strategic); the rest
is ``TARGET \\x00 PATCH`` (two JSON documents) or just ``PATCH``, applied to a fixed
Pod. Inputs that are not JSON or nest too deeply are refused before any patch code
runs, as in the apiserver.

Run: ``.venv/bin/python fuzz/targets/fuzz_api_patch.py -max_total_time=60 /tmp/scratch fuzz/corpus/api_patch``
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path
from typing import Any

try:
    import kedge  # noqa: F401
except ImportError:  # running as a script from a checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from kedge.apiserver.decoding import _depth_ok
from kedge.apiserver.model import MAX_JSON_DEPTH
from kedge.apiserver.patch import PatchError, json_patch, merge_patch, strategic_merge_patch

CODES = {"invalid_patch", "patch_test_failed", "patch_too_large"}
MAX_INPUT_BYTES = 64 * 1024
POD: dict[str, Any] = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"name": "web-0", "namespace": "default", "labels": {"app": "web"},
                 "finalizers": ["kedge.dev/a"], "resourceVersion": "7"},
    "spec": {
        "nodeName": "edge-1",
        "containers": [
            {"name": "app", "image": "nginx", "ports": [{"containerPort": 80, "protocol": "TCP"}],
             "env": [{"name": "A", "value": "1"}]},
            {"name": "side", "image": "busybox"},
        ],
        "volumes": [{"name": "v", "emptyDir": {}}],
        "tolerations": [{"key": "k", "operator": "Exists"}],
    },
    "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]},
}


def _require(ok: bool, what: str) -> None:
    """Like assert, but survives ``python -O``: a violated invariant is a crash."""
    if not ok:
        raise AssertionError(what)


def _decode(raw: bytes) -> tuple[bool, Any]:
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError):
        return False, None
    return _depth_ok(value, MAX_JSON_DEPTH), value


def _apply(fn: Any, target: Any, patch: Any) -> tuple[bool, Any]:
    """(True, result) or (False, error code) -- and the inputs are left untouched."""
    t0, p0 = copy.deepcopy(target), copy.deepcopy(patch)
    try:
        result = fn(target, patch)
    except PatchError as exc:
        _require(exc.code in CODES, f"undocumented code {exc.code}")
        outcome: tuple[bool, Any] = (False, exc.code)
    else:
        json.dumps(result)
        outcome = (True, result)
    _require(target == t0, f"{fn.__name__} mutated the target")
    _require(patch == p0, f"{fn.__name__} mutated the patch")
    return outcome


def _plain(value: Any) -> bool:
    """No lists and no ``$`` keys anywhere: strategic and merge patch must agree."""
    if isinstance(value, list):
        return False
    if isinstance(value, dict):
        return all(not k.startswith("$") and _plain(v) for k, v in value.items())
    return True


def test_one_input(data: bytes) -> None:
    """One fuzz iteration; raises only if the invariant in the module docstring breaks."""
    if not data or len(data) > MAX_INPUT_BYTES:
        return
    mode, rest = data[0] % 3, data[1:]
    if b"\x00" in rest:
        raw_target, raw_patch = rest.split(b"\x00", 1)
        ok, target = _decode(raw_target)
        if not ok:
            return
    else:
        target, raw_patch = POD, rest
    ok, patch = _decode(raw_patch)
    if not ok:
        return
    if mode == 0:
        done, once = _apply(merge_patch, target, patch)
        _require(done, "merge patch refused a JSON value")
        _require(_apply(merge_patch, once, patch) == (True, once), "merge patch is not idempotent")
    elif mode == 1:
        whole = _apply(json_patch, target, patch)
        _require(_apply(json_patch, target, patch) == whole, "JSON patch is not deterministic")
        if isinstance(patch, list) and len(patch) > 1 and whole != (False, "patch_too_large"):
            k = len(patch) // 2
            head = _apply(json_patch, target, patch[:k])
            if head[0]:
                _require(_apply(json_patch, head[1], patch[k:]) == whole, "JSON patch is not sequential")
            else:
                _require(not whole[0], "a prefix failed but the whole patch applied")
    else:
        result = _apply(strategic_merge_patch, target, patch)
        _require(_apply(strategic_merge_patch, target, patch) == result, "strategic merge is not deterministic")
        if isinstance(patch, dict) and _plain(patch):
            _require(result == (True, merge_patch(target if isinstance(target, dict) else {}, patch)),
                     "strategic merge disagrees with merge patch on a list-free patch")


def main() -> None:
    import atheris  # lazily: replaying the corpus in the test suite must not need it

    atheris.instrument_all()
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
