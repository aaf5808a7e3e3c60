"""Fuzz the apiserver's request-line parser (``RequestInfo`` from method + request target).

Invariant: ``kedge.apiserver.request.parse_request`` either returns a ``RequestInfo``
or raises ``BadRequest`` (code ``bad_request``) or ``SelectorError`` (code
``invalid_selector``, from the field selector) -- nothing else. In particular a
target with too many query parameters or a malformed authority is a ``BadRequest``,
not a ``ValueError``. What it returns is what the authorizer may rely on:

* a resource request has ``api_prefix`` ``api`` (core, empty group) or ``apis``
  and a Kubernetes verb (get, list, watch, create, update, patch,
  delete, deletecollection); any other request is a
  non-resource request whose verb is the lower-cased method;
* no path segment it reports is ``.`` or ``..`` or contains NUL, so a
  name cannot walk to another object and a non-resource URL cannot be normalised
  into a different one after authorization (a name taken from a
  ``metadata.name=`` field selector is a selector value and may be any string);
* at most ``MAX_QUERY_PARAMS`` query parameters; ``field_selector`` is exactly the
  parsed ``fieldSelector`` parameter, and a name comes from the URL or, for a
  list/watch only, from a ``metadata.name=<x>`` selector -- from nowhere else;
* parsing is deterministic.

Input layout: the bytes up to the first space are the method, decoded as ASCII with
replacement, the rest is the request target, decoded as latin-1 -- as the HTTP shell
decodes them (no space: method ``GET``, all bytes the target).

Run: ``.venv/bin/python fuzz/targets/fuzz_api_request.py -max_total_time=60 /tmp/scratch fuzz/corpus/api_request``
"""

from __future__ import annotations

import sys
from pathlib import Path
from urllib.parse import unquote

try:
    import kedge  # noqa: F401
except ImportError:  # running as a script from a checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from kedge.apiserver.request import MAX_QUERY_PARAMS, BadRequest, parse_request
from kedge.authz.labels import SelectorError, parse_field_selector

VERBS = {"get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"}


def _require(ok: bool, what: str) -> None:
    """Like assert, but survives ``python -O``: a violated invariant is a crash."""
    if not ok:
        raise AssertionError(what)


def test_one_input(data: bytes) -> None:
    """One fuzz iteration; raises only if the invariant in the module docstring breaks."""
    raw_method, sep, raw_target = data.partition(b" ")
    if not sep:
        raw_method, raw_target = b"GET", data
    method, target = raw_method.decode("ascii", "replace"), raw_target.decode("latin-1")
    try:
        info = parse_request(method, target)
    except BadRequest as exc:
        _require(exc.code == "bad_request", f"undocumented code {exc.code}")
        return
    except SelectorError as exc:
        _require(exc.code == "invalid_selector", f"undocumented code {exc.code}")
        return
    _require(len(info.query) <= MAX_QUERY_PARAMS, "too many query parameters accepted")
    segments = [unquote(p) for p in info.path.split("/")]
    _require(not any(s in (".", "..") or "\x00" in s for s in segments), f"unsafe path {info.path!r}")
    if info.resource_request:
        _require(info.verb in VERBS, f"resource verb {info.verb!r}")
        _require(info.api_prefix in ("api", "apis"), "api prefix")
        _require(info.api_prefix == "apis" or info.api_group == "", "the core prefix names a group")
        # An empty segment (``/api/v1//x``) gives an empty resource, as in Kubernetes; the
        # router answers 404 for it, so it is not checked here.
        url_parts = [unquote(p) for p in info.path.strip("/").split("/")]
        url_names = [info.name] if info.name in url_parts else []  # a selector's value may be anything
        for part in (info.namespace, info.resource, info.subresource, info.api_group, info.api_version,
                     *url_names):
            _require(part not in (".", "..") and "\x00" not in part, f"unsafe segment {part!r}")
        _require(info.field_selector == parse_field_selector(info.query.get("fieldSelector")),
                 "field selector differs from the query's")
        named = [r.value for r in info.field_selector if r.field == "metadata.name" and r.op == "="]
        _require(not info.name or info.name in url_parts or (info.verb in ("list", "watch") and info.name in named),
                 "a name that is neither in the URL nor a list/watch's metadata.name selector")
    else:
        _require(info.verb == method.lower(), "non-resource verb is not the method")
        _require(info.resource == info.name == info.namespace == "", "non-resource request names a resource")
    _require(parse_request(method, target) == info, "parsing is not deterministic")


def main() -> None:
    import atheris  # lazily: replaying the corpus in the test suite must not need it

    atheris.instrument_all()
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
