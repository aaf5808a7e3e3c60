"""Fuzz RBAC policy parsing and rule evaluation (``kedge.authz.rbac``).

The API server builds its ``Policy`` from every stored Role, ClusterRole, RoleBinding
and ClusterRoleBinding (``Policy.build`` over the stored JSON) and asks ``authorize``
on every request; writes to roles and bindings go through ``escalate_allowed`` /
``binding_allowed`` / ``confirm_no_escalation``. Stored objects were validated when
written, but the policy code must not depend on it: objects written by an older
version, a restored backup, or a validation gap must grant nothing rather than turn
every authorization into a crash (a 500 on every request is a denial of service).

Invariant: none of these functions raises -- for any JSON in ``rules``, ``subjects``,
``roleRef``, ``aggregationRule`` and ``metadata.labels``. And:

* ``authorize`` answers ALLOW or NO_OPINION (RBAC never denies explicitly), and the
  same answer twice, and the same answer from a freshly built policy (the per-policy
  rule cache changes nothing);
* a user that no binding names (a name that appears nowhere in the input, no groups)
  is never allowed anything;
* widening every rule (adding ``*`` to each of its lists) never turns an ALLOW into
  NO_OPINION: a wildcard rule's decisions are a superset of the narrower rule's;
* a user may always create a role holding exactly the rules it already holds
  (``confirm_no_escalation`` with ``applicable_rules`` allows), and a DENY from it
  always names what is missing;
* ``binding_allowed`` / ``escalate_allowed`` return a Decision (never raise).

Input layout: a JSON object ``{"clusterroles": [...], "roles": [...],
"clusterrolebindings": [...], "rolebindings": [...], "requests": [...]}``. Items
that are not objects are dropped, and ``metadata`` is reduced to a string
``name``/``namespace`` plus the raw ``labels`` (the store only holds objects, each
with such metadata). A request is ``{"user", "groups", "verb", "namespace",
"apiGroup", "resource", "subresource", "name", "path", "nonResource"}``; without
requests a fixed set is asked for every subject named in the bindings.

Run: ``fuzz/run.sh rbac 60``
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

try:
    import kedge  # noqa: F401
except ImportError:  # running as a script from a checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from kedge.authz import rbac as R

MAX_JSON_BYTES = 64 * 1024
MAX_OBJECTS = 32
MAX_REQUESTS = 16
_DEFAULT_REQUESTS: tuple[dict[str, Any], ...] = (
    {"verb": "get", "resource": "pods", "namespace": "default"},
    {"verb": "list", "resource": "secrets", "namespace": "kube-system"},
    {"verb": "create", "apiGroup": "rbac.authorization.k8s.io", "resource": "clusterroles"},
    {"verb": "get", "resource": "pods", "subresource": "log", "namespace": "default", "name": "web"},
    {"verb": "get", "nonResource": True, "path": "/healthz"},
)


def _require(ok: bool, what: str) -> None:
    """Like assert, but survives ``python -O``: a violated invariant is a crash."""
    if not ok:
        raise AssertionError(what)


def _s(value: Any, default: str = "") -> str:
    return value if isinstance(value, str) else default


def _stored(obj: Any) -> dict[str, Any] | None:
    """What the store can hold: an object with string name/namespace (labels left raw)."""
    if not isinstance(obj, dict):
        return None
    out = dict(obj)
    meta = obj.get("metadata")
    new_meta: dict[str, Any] = {}
    if isinstance(meta, dict):
        for key in ("name", "namespace"):
            if isinstance(meta.get(key), str):
                new_meta[key] = meta[key]
        if "labels" in meta:
            new_meta["labels"] = meta["labels"]
    out["metadata"] = new_meta
    return out


def _objects(doc: dict[str, Any], key: str) -> list[dict[str, Any]]:
    raw = doc.get(key)
    if not isinstance(raw, list):
        return []
    return [o for o in (_stored(x) for x in raw[:MAX_OBJECTS]) if o is not None]


def _widen_rules(obj: dict[str, Any]) -> dict[str, Any]:
    """``obj`` with ``*`` added to every list of every (well-formed) rule."""
    rules = obj.get("rules")
    if not isinstance(rules, list):
        return obj
    wide = []
    for r in rules:
        if isinstance(r, dict):
            r = dict(r)
            for key in ("verbs", "apiGroups", "resources", "nonResourceURLs"):
                v = r.get(key)
                if isinstance(v, list):
                    r[key] = [*v, "*"]
                elif v is None and key == "verbs":
                    r[key] = ["*"]
        wide.append(r)
    return {**obj, "rules": wide}


def _build(parts: dict[str, list[dict[str, Any]]]) -> R.Policy:
    return R.Policy.build(cluster_roles=parts["clusterroles"], roles=parts["roles"],
                          cluster_role_bindings=parts["clusterrolebindings"],
                          role_bindings=parts["rolebindings"])


def _subjects(parts: dict[str, list[dict[str, Any]]]) -> list[tuple[str, tuple[str, ...]]]:
    out: list[tuple[str, tuple[str, ...]]] = []
    for b in parts["clusterrolebindings"] + parts["rolebindings"]:
        subjects = b.get("subjects")
        if not isinstance(subjects, list):
            continue
        ns = _s(b["metadata"].get("namespace"))
        for s in subjects[:4]:
            if not isinstance(s, dict) or not isinstance(s.get("name"), str):
                continue
            if s.get("kind") == "Group":
                out.append(("someone", (s["name"],)))
            elif s.get("kind") == "ServiceAccount":
                out.append((f"system:serviceaccount:{_s(s.get('namespace')) or ns}:{s['name']}", ()))
            else:
                out.append((s["name"], ()))
    return out[:8]


def _attributes(req: dict[str, Any], user: str, groups: tuple[str, ...]) -> R.Attributes:
    verb = _s(req.get("verb")) or "get"
    if req.get("nonResource") is True:
        return R.Attributes(user=user, groups=groups, verb=verb, resource_request=False,
                            path=_s(req.get("path"), "/"))
    return R.Attributes(user=user, groups=groups, verb=verb, namespace=_s(req.get("namespace")),
                        api_group=_s(req.get("apiGroup")), resource=_s(req.get("resource")),
                        subresource=_s(req.get("subresource")), name=_s(req.get("name")))


def _check_decision(d: Any, where: str) -> None:
    _require(isinstance(d, R.Decision) and isinstance(d.verdict, R.Verdict), f"{where}: not a Decision: {d!r}")


def test_one_input(data: bytes) -> None:
    """One fuzz iteration; raises only if the invariant in the module docstring breaks."""
    if len(data) > MAX_JSON_BYTES:
        return
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError):
        return  # not JSON: the store never holds it
    if not isinstance(doc, dict):
        return
    parts = {k: _objects(doc, k) for k in ("clusterroles", "roles", "clusterrolebindings", "rolebindings")}
    policy = _build(parts)
    wide_parts = dict(parts, clusterroles=[_widen_rules(o) for o in parts["clusterroles"]],
                      roles=[_widen_rules(o) for o in parts["roles"]])
    wide = _build(wide_parts)

    raw_requests = doc.get("requests")
    requests = [r for r in raw_requests[:MAX_REQUESTS] if isinstance(r, dict)] \
        if isinstance(raw_requests, list) else []
    asked: list[R.Attributes] = []
    if requests:
        for r in requests:
            groups = r.get("groups")
            g = tuple(x for x in groups[:8] if isinstance(x, str)) if isinstance(groups, list) else ()
            asked.append(_attributes(r, _s(r.get("user"), "someone"), g))
    else:
        for user, groups in _subjects(parts) or [("someone", ())]:
            asked += [_attributes(r, user, groups) for r in _DEFAULT_REQUESTS]

    nobody = "unbound-" + hashlib.sha256(data).hexdigest()
    for attrs in asked:
        d = R.authorize(attrs, policy)
        _check_decision(d, "authorize")
        _require(d.verdict in (R.Verdict.ALLOW, R.Verdict.NO_OPINION), f"authorize answered {d.verdict}")
        _require(R.authorize(attrs, policy) == d, "authorize is not deterministic")
        _require(R.authorize(attrs, _build(parts)).verdict is d.verdict, "a fresh policy answers differently")
        if d.allowed:
            _require(R.authorize(attrs, wide).allowed, f"widening the rules revoked {attrs}")
        stranger = dataclasses.replace(attrs, user=nobody, groups=())
        _require(not R.authorize(stranger, policy).allowed, f"an unbound user was allowed: {stranger}")
        _require(not R.authorize(stranger, wide).allowed, "an unbound user was allowed by the widened policy")

        held = R.applicable_rules(policy, attrs.user, attrs.groups, attrs.namespace)
        _require(all(isinstance(r, R.Rule) for r in held), "applicable_rules returned a non-Rule")
        own = R.confirm_no_escalation(policy, attrs.user, attrs.groups, attrs.namespace, held)
        _require(own.allowed, f"a user may not grant the rules it holds: {own.reason}")
        for obj in (parts["clusterroles"] + parts["roles"])[:4]:
            requested = R._rules_of(obj)
            esc = R.escalate_allowed(policy, attrs.user, attrs.groups, attrs.namespace, "Role",
                                     _s(obj["metadata"].get("name")), requested)
            _check_decision(esc, "escalate_allowed")
            if esc.verdict is R.Verdict.DENY:
                _require("extra privileges" in esc.reason, "a DENY that names nothing")
        for b in (parts["clusterrolebindings"] + parts["rolebindings"])[:4]:
            ref = b.get("roleRef")
            if isinstance(ref, dict):
                _check_decision(R.binding_allowed(policy, attrs.user, attrs.groups, attrs.namespace, ref),
                                "binding_allowed")


def main() -> None:
    import atheris  # lazily: replaying the corpus in the test suite must not need it

    atheris.instrument_all()
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
