"""Label and field selectors (Kubernetes syntax), as pure functions.

Used by list/watch filtering, RBAC aggregation rules and the Node authorizer's
selector checks. Parsing is bounded: a selector string longer than
``MAX_SELECTOR_BYTES`` or with more than ``MAX_REQUIREMENTS`` terms is refused.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any

from kedge.errors import PeerError

from kedge.limits import LABEL_SELECTOR_MAX_BYTES as MAX_SELECTOR_BYTES
from kedge.limits import LABEL_SELECTOR_MAX_REQUIREMENTS as MAX_REQUIREMENTS

# Kubernetes ``IsQualifiedName`` / ``IsValidLabelValue``. The optional prefix is a
# DNS-1123 subdomain (lower case, at most 253 characters), the name at most 63
# characters. Checked with ``fullmatch`` (``$`` would also match before a final newline);
# the ``\Z`` in the look-ahead bounds the name part to 63 characters.
_DNS_LABEL = r"[a-z0-9](?:[-a-z0-9]*[a-z0-9])?"
_KEY = re.compile(
    rf"(?:(?=[-a-z0-9.]{{1,253}}/){_DNS_LABEL}(?:\.{_DNS_LABEL})*/)?"
    r"(?=[-A-Za-z0-9_.]{1,63}\Z)[A-Za-z0-9](?:[-A-Za-z0-9_.]*[A-Za-z0-9])?\Z"
)
_VALUE = re.compile(r"(?:[A-Za-z0-9](?:[-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?\Z")
_FIELD = re.compile(r"[A-Za-z][A-Za-z0-9.]{0,127}")


class SelectorError(PeerError):
    code = "invalid_selector"


@dataclasses.dataclass(frozen=True)
class Requirement:
    """One term: ``op`` is =, !=, in, notin, exists, !exists."""

    key: str
    op: str
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        if self.op == "exists":
            return present
        if self.op == "!exists":
            return not present
        if self.op in ("=", "in"):
            return present and labels[self.key] in self.values
        if self.op in ("!=", "notin"):
            return not present or labels[self.key] not in self.values
        return False


@dataclasses.dataclass(frozen=True)
class Selector:
    """A conjunction of requirements; the empty selector matches everything."""

    requirements: tuple[Requirement, ...] = ()

    def matches(self, labels: Mapping[str, str] | None) -> bool:
        labels = labels or {}
        return all(r.matches(labels) for r in self.requirements)

    @property
    def empty(self) -> bool:
        return not self.requirements


def _split_top(text: str) -> list[str]:
    parts: list[str] = []
    cur: list[str] = []
    depth = 0
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth < 0:
                raise SelectorError("unbalanced parentheses")
        if ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    if depth:
        raise SelectorError("unbalanced parentheses")
    parts.append("".join(cur))
    return parts


def is_qualified_name(key: object) -> bool:
    """Kubernetes' ``IsQualifiedName``: label and annotation keys, finalizer names."""
    return isinstance(key, str) and _KEY.fullmatch(key) is not None


def is_label_value(value: object) -> bool:
    """Kubernetes' ``IsValidLabelValue``."""
    return isinstance(value, str) and _VALUE.fullmatch(value) is not None


def _check_key(key: object) -> str:
    if not isinstance(key, str) or not _KEY.fullmatch(key):
        raise SelectorError("invalid label key")
    return key


def _check_value(value: object) -> str:
    if not isinstance(value, str) or not _VALUE.fullmatch(value):
        raise SelectorError("invalid label value")
    return value


def parse_label_selector(text: str | None) -> Selector:
    """Parse ``a=b,c!=d,e in (x,y),!f,g`` into a :class:`Selector`."""
    if not text:
        return Selector()
    if len(text.encode()) > MAX_SELECTOR_BYTES:
        raise SelectorError("selector too long")
    reqs: list[Requirement] = []
    for raw in _split_top(text):
        term = raw.strip()
        if not term:
            raise SelectorError("empty selector term")
        m = re.fullmatch(r"(\S+?)\s+(in|notin)\s*\((.*)\)", term)
        if m:
            values = tuple(_check_value(v.strip()) for v in m.group(3).split(",")) if m.group(3).strip() else ()
            if not values:
                raise SelectorError("set requirement needs values")
            reqs.append(Requirement(_check_key(m.group(1)), m.group(2), values))
        elif term.startswith("!"):
            reqs.append(Requirement(_check_key(term[1:].strip()), "!exists"))
        elif "!=" in term:
            k, v = term.split("!=", 1)
            reqs.append(Requirement(_check_key(k.strip()), "!=", (_check_value(v.strip()),)))
        elif "==" in term or "=" in term:
            k, v = term.split("==", 1) if "==" in term else term.split("=", 1)
            reqs.append(Requirement(_check_key(k.strip()), "=", (_check_value(v.strip()),)))
        else:
            reqs.append(Requirement(_check_key(term), "exists"))
        if len(reqs) > MAX_REQUIREMENTS:
            raise SelectorError("too many selector terms")
    return Selector(tuple(reqs))


_STRUCT_OPS = {"In": "in", "NotIn": "notin", "Exists": "exists", "DoesNotExist": "!exists"}


def selector_from_struct(obj: Any) -> Selector | None:
    """Convert a ``metav1.LabelSelector`` (matchLabels / matchExpressions).

    Returns ``None`` for a null selector (matches nothing); ``{}`` matches everything.
    The struct comes from an object a client wrote (e.g. a ClusterRole's
    ``aggregationRule``), so every field is type-checked and every key and value is
    validated as Kubernetes' ``LabelSelectorAsSelector`` does: anything malformed is a
    :class:`SelectorError`, which is all callers catch -- never ``TypeError`` and friends.
    """
    if obj is None:
        return None
    if not isinstance(obj, Mapping):
        raise SelectorError("label selector must be an object")
    match_labels = obj.get("matchLabels")
    if match_labels is None:
        match_labels = {}
    if not isinstance(match_labels, Mapping):
        raise SelectorError("matchLabels must be an object")
    exprs = obj.get("matchExpressions")
    if exprs is None:
        exprs = []
    if not isinstance(exprs, (list, tuple)):
        raise SelectorError("matchExpressions must be a list")
    if len(match_labels) + len(exprs) > MAX_REQUIREMENTS:
        raise SelectorError("too many selector terms")  # before any per-term work
    labels = [(_check_key(k), _check_value(v)) for k, v in match_labels.items()]
    reqs = [Requirement(k, "=", (v,)) for k, v in sorted(labels)]
    for expr in exprs:
        if not isinstance(expr, Mapping):
            raise SelectorError("invalid match expression")
        operator = expr.get("operator")
        if not isinstance(operator, str) or operator not in _STRUCT_OPS:
            raise SelectorError("invalid match expression operator")
        op = _STRUCT_OPS[operator]
        raw_values = expr.get("values")
        if raw_values is None:
            raw_values = []
        if not isinstance(raw_values, (list, tuple)):
            raise SelectorError("match expression values must be a list")
        values = tuple(_check_value(v) for v in raw_values)
        if op in ("in", "notin") and not values:
            raise SelectorError("In/NotIn need values")
        if op in ("exists", "!exists") and values:
            raise SelectorError("Exists/DoesNotExist take no values")
        reqs.append(Requirement(_check_key(expr.get("key")), op, values))
    return Selector(tuple(reqs))


@dataclasses.dataclass(frozen=True)
class FieldRequirement:
    field: str
    op: str  # "=" or "!="
    value: str


def parse_field_selector(text: str | None) -> tuple[FieldRequirement, ...]:
    """Parse ``spec.nodeName=n1,metadata.name!=x`` (only = / == / !=, like Kubernetes)."""
    if not text:
        return ()
    if len(text.encode()) > MAX_SELECTOR_BYTES:
        raise SelectorError("selector too long")
    out: list[FieldRequirement] = []
    for raw in text.split(","):
        term = raw.strip()
        if "!=" in term:
            f, v = term.split("!=", 1)
            op = "!="
        elif "==" in term:
            f, v = term.split("==", 1)
            op = "="
        elif "=" in term:
            f, v = term.split("=", 1)
            op = "="
        else:
            raise SelectorError("field selector terms need an operator")
        f = f.strip()
        if not _FIELD.fullmatch(f):
            raise SelectorError("invalid field name")
        out.append(FieldRequirement(f, op, v.strip()))
        if len(out) > MAX_REQUIREMENTS:
            raise SelectorError("too many selector terms")
    return tuple(out)


def field_value(obj: Mapping[str, Any], path: str) -> str:
    """Value of a dotted field path as a string ('' when absent)."""
    cur: Any = obj
    for part in path.split("."):
        if not isinstance(cur, Mapping):
            return ""
        cur = cur.get(part)
    if cur is None:
        return ""
    if isinstance(cur, bool):
        return "true" if cur else "false"
    return str(cur)


def fields_match(obj: Mapping[str, Any], reqs: tuple[FieldRequirement, ...]) -> bool:
    for r in reqs:
        v = field_value(obj, r.field)
        if (v == r.value) != (r.op == "="):
            return False
    return True
