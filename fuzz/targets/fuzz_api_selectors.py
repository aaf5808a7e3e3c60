"""Fuzz label and field selector parsing (``kedge.authz.labels``).

Selectors reach kedge from peers three ways: the ``labelSelector`` and
``fieldSelector`` query parameters of list/watch/deletecollection, the raw selectors
inside a SubjectAccessReview, and ``metav1.LabelSelector`` structs inside objects a
client writes (ClusterRole ``aggregationRule.clusterRoleSelectors``), which the RBAC
resolver evaluates for every authorization that touches the role.

Invariant: each parser returns or raises ``SelectorError`` (code
``invalid_selector``) -- nothing else; in particular ``selector_from_struct`` on any
JSON value (``matchLabels`` a list, ``matchExpressions`` a number, an unhashable
``operator``...) raises ``SelectorError``, not ``AttributeError``/``TypeError``,
because its callers catch only ``SelectorError``. And:

* a parsed label selector has at most ``MAX_REQUIREMENTS`` terms, each with a valid
  key and operator; rendering it back to text (written here) parses to an equal
  selector;
* matching never raises, and the operator pairs are complements on every label set
  tried: ``=``/``!=`` (as sets: ``in``/``notin``) and ``exists``/``!exists``;
* a parsed field selector has at most ``MAX_REQUIREMENTS`` terms, each a valid field
  path with operator ``=`` or ``!=`` and a value without ``,``;
* ``selector_from_struct`` returns ``None`` only for ``null``.

Input layout: the bytes decoded as UTF-8 (invalid sequences replaced, as the query
parser does) go through both text parsers; if the bytes are a JSON document they also
go through ``selector_from_struct``.

Run: ``.venv/bin/python fuzz/targets/fuzz_api_selectors.py -max_total_time=60 /tmp/scratch fuzz/corpus/api_selectors``
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

try:
    import kedge  # noqa: F401
except ImportError:  # running as a script from a checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from kedge.authz import labels as L

OPS = {"=", "!=", "in", "notin", "exists", "!exists"}
COMPLEMENT = {"=": "!=", "!=": "=", "in": "notin", "notin": "in", "exists": "!exists", "!exists": "exists"}
_FIELD = re.compile(r"[A-Za-z][A-Za-z0-9.]{0,127}")
MAX_JSON_BYTES = 64 * 1024


def _require(ok: bool, what: str) -> None:
    """Like assert, but survives ``python -O``: a violated invariant is a crash."""
    if not ok:
        raise AssertionError(what)


def render(sel: L.Selector) -> str:
    """Kubernetes selector text for ``sel`` (the inverse of ``parse_label_selector``)."""
    terms = []
    for r in sel.requirements:
        if r.op in ("=", "!="):
            terms.append(f"{r.key}{r.op}{r.values[0]}")
        elif r.op in ("in", "notin"):
            terms.append(f"{r.key} {r.op} ({','.join(r.values)})")
        elif r.op == "exists":
            terms.append(r.key)
        else:
            terms.append("!" + r.key)
    return ",".join(terms)


def _label_sets(sel: L.Selector) -> list[dict[str, str]]:
    sets: list[dict[str, str]] = [{}]
    for r in sel.requirements[:8]:
        sets.append({r.key: "zz-none-of-these"})
        sets.extend({r.key: v} for v in r.values[:4])
    sets.append({k: v for s in sets for k, v in s.items()})
    return sets


def _check_selector(sel: L.Selector, where: str) -> None:
    _require(len(sel.requirements) <= L.MAX_REQUIREMENTS, f"{where}: too many terms")
    for r in sel.requirements:
        _require(r.op in OPS, f"{where}: operator {r.op!r}")
        _require(bool(L._KEY.match(r.key)), f"{where}: invalid key {r.key!r}")
        _require(all(isinstance(v, str) for v in r.values), f"{where}: non-string value")
        if r.op in ("=", "!="):
            _require(len(r.values) == 1, f"{where}: {r.op} with {len(r.values)} values")
        elif r.op in ("in", "notin"):
            _require(len(r.values) >= 1, f"{where}: set operator without values")
        else:
            _require(not r.values, f"{where}: exists with values")
    for labels in _label_sets(sel):
        result = sel.matches(labels)
        _require(isinstance(result, bool), "matches() is not a bool")
        for r in sel.requirements:
            twin = L.Requirement(r.key, COMPLEMENT[r.op], r.values)
            _require(r.matches(labels) != twin.matches(labels), f"{where}: {r.op} and its complement agree")


def _check_label_text(text: str) -> None:
    try:
        sel = L.parse_label_selector(text)
    except L.SelectorError as exc:
        _require(exc.code == "invalid_selector", f"undocumented code {exc.code}")
        return
    _check_selector(sel, "label selector")
    _require(L.parse_label_selector(render(sel)) == sel, f"render does not round-trip: {render(sel)!r}")


def _check_field_text(text: str) -> None:
    try:
        reqs = L.parse_field_selector(text)
    except L.SelectorError as exc:
        _require(exc.code == "invalid_selector", f"undocumented code {exc.code}")
        return
    _require(len(reqs) <= L.MAX_REQUIREMENTS, "too many field terms")
    for r in reqs:
        _require(bool(_FIELD.fullmatch(r.field)), f"invalid field {r.field!r}")
        _require(r.op in ("=", "!="), f"field operator {r.op!r}")
        _require("," not in r.value and r.value == r.value.strip(), f"field value {r.value!r}")
    obj: dict[str, Any] = {"metadata": {"name": "n"}, "spec": {"nodeName": "edge-1"}}
    _require(isinstance(L.fields_match(obj, reqs), bool), "fields_match() is not a bool")


def _check_struct(data: bytes) -> None:
    if len(data) > MAX_JSON_BYTES:
        return
    try:
        value = json.loads(data)
    except (ValueError, RecursionError):
        return  # not JSON: the object decoder refuses it before any selector is read
    try:
        sel = L.selector_from_struct(value)
    except L.SelectorError as exc:
        _require(exc.code == "invalid_selector", f"undocumented code {exc.code}")
        return
    if sel is None:
        _require(value is None, "selector_from_struct returned None for a non-null value")
        return
    _check_selector(sel, "LabelSelector struct")


def test_one_input(data: bytes) -> None:
    """One fuzz iteration; raises only if the invariant in the module docstring breaks."""
    text = data.decode("utf-8", "replace")
    _check_label_text(text)
    _check_field_text(text)
    _check_struct(data)


def main() -> None:
    import atheris  # lazily: replaying the corpus in the test suite must not need it

    atheris.instrument_all()
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
