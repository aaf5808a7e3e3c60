"""Kubernetes RBAC as pure functions.

``authorize(attrs, policy)`` answers the way Kubernetes' RBAC authorizer does: allow
if any rule reachable from a binding that names the user (or one of its groups, or
its service account) allows the request, otherwise no opinion (which the chain turns
into a denial -- RBAC never grants by default). ``confirm_no_escalation`` and
``binding_allowed`` implement the privilege-escalation checks that guard writes to
roles and bindings: a user may only grant what it already holds, unless it holds
the ``escalate`` (roles) or ``bind`` (bindings) verb.

Objects are the plain JSON dicts of ``rbac.authorization.k8s.io/v1``; nothing here
touches I/O or the clock.
"""

from __future__ import annotations

import dataclasses
import enum
import logging
from collections.abc import Iterable, Mapping
from typing import Any

from kedge.authz.labels import FieldRequirement, Selector, SelectorError, selector_from_struct

log = logging.getLogger(__name__)

RBAC_GROUP = "rbac.authorization.k8s.io"
SYSTEM_MASTERS = "system:masters"
AUTHENTICATED = "system:authenticated"


class Verdict(enum.Enum):
    ALLOW = "allow"
    DENY = "deny"
    NO_OPINION = "no_opinion"


@dataclasses.dataclass(frozen=True)
class Decision:
    verdict: Verdict
    reason: str = ""

    @property
    def allowed(self) -> bool:
        return self.verdict is Verdict.ALLOW


ALLOW = Decision(Verdict.ALLOW)
NO_OPINION = Decision(Verdict.NO_OPINION)


@dataclasses.dataclass(frozen=True)
class Attributes:
    """What a request asks for (Kubernetes ``authorizer.Attributes``)."""

    user: str
    groups: tuple[str, ...] = ()
    verb: str = ""
    resource_request: bool = True
    namespace: str = ""
    api_group: str = ""
    resource: str = ""
    subresource: str = ""
    name: str = ""
    path: str = ""
    field_selector: tuple[FieldRequirement, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.groups, tuple):
            object.__setattr__(self, "groups", tuple(self.groups))
        if self.resource_request and not self.verb:
            raise ValueError("a resource request needs a verb")


@dataclasses.dataclass(frozen=True)
class Rule:
    """A normalised PolicyRule."""

    verbs: tuple[str, ...]
    api_groups: tuple[str, ...] = ()
    resources: tuple[str, ...] = ()
    resource_names: tuple[str, ...] = ()
    non_resource_urls: tuple[str, ...] = ()

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Rule":
        def strs(key: str) -> tuple[str, ...]:
            v = d.get(key) or ()
            if not isinstance(v, (list, tuple)) or not all(isinstance(x, str) for x in v):
                raise ValueError(f"rule field {key} must be a list of strings")
            return tuple(v)

        return cls(strs("verbs"), strs("apiGroups"), strs("resources"), strs("resourceNames"),
                   strs("nonResourceURLs"))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"verbs": list(self.verbs)}
        if self.api_groups or self.resources:
            out["apiGroups"] = list(self.api_groups)
            out["resources"] = list(self.resources)
        if self.resource_names:
            out["resourceNames"] = list(self.resource_names)
        if self.non_resource_urls:
            out["nonResourceURLs"] = list(self.non_resource_urls)
        return out


# -- rule matching (Kubernetes rbac/validation semantics) ---------------------

def verb_matches(rule: Rule, verb: str) -> bool:
    return "*" in rule.verbs or verb in rule.verbs


def api_group_matches(rule: Rule, group: str) -> bool:
    return "*" in rule.api_groups or group in rule.api_groups


def resource_matches(rule: Rule, resource: str, subresource: str) -> bool:
    combined = f"{resource}/{subresource}" if subresource else resource
    for r in rule.resources:
        if r == "*" or r == combined:
            return True
        if subresource and r == "*/" + subresource:
            return True
    return False


def resource_name_matches(rule: Rule, name: str) -> bool:
    return not rule.resource_names or name in rule.resource_names


def non_resource_url_matches(rule: Rule, path: str) -> bool:
    for u in rule.non_resource_urls:
        if u == "*" or u == path or (u.endswith("*") and path.startswith(u[:-1])):
            return True
    return False


def rule_allows(attrs: Attributes, rule: Rule) -> bool:
    if attrs.resource_request:
        return (verb_matches(rule, attrs.verb) and api_group_matches(rule, attrs.api_group)
                and resource_matches(rule, attrs.resource, attrs.subresource)
                and resource_name_matches(rule, attrs.name))
    return verb_matches(rule, attrs.verb) and non_resource_url_matches(rule, attrs.path)


def rules_allow(attrs: Attributes, rules: Iterable[Rule]) -> bool:
    return any(rule_allows(attrs, r) for r in rules)


# -- policy -------------------------------------------------------------------

def _name(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("name", ""))


def _ns(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("namespace", ""))


def _rules_of(obj: Mapping[str, Any]) -> tuple[Rule, ...]:
    out = []
    rules = obj.get("rules")
    for r in rules if isinstance(rules, (list, tuple)) else ():
        try:
            out.append(Rule.from_dict(r))
        except (ValueError, AttributeError):
            continue  # a malformed stored rule grants nothing
    return tuple(out)


@dataclasses.dataclass(frozen=True)
class Policy:
    """A snapshot of every Role, ClusterRole and binding (plain JSON objects)."""

    cluster_roles: Mapping[str, Mapping[str, Any]]
    roles: Mapping[tuple[str, str], Mapping[str, Any]]
    cluster_role_bindings: tuple[Mapping[str, Any], ...]
    role_bindings: Mapping[str, tuple[Mapping[str, Any], ...]]
    _rule_cache: dict[str, tuple[Rule, ...]] = dataclasses.field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def build(cls, *, cluster_roles: Iterable[Mapping[str, Any]] = (), roles: Iterable[Mapping[str, Any]] = (),
              cluster_role_bindings: Iterable[Mapping[str, Any]] = (),
              role_bindings: Iterable[Mapping[str, Any]] = ()) -> "Policy":
        rb: dict[str, list[Mapping[str, Any]]] = {}
        for b in role_bindings:
            rb.setdefault(_ns(b), []).append(b)
        return cls(
            cluster_roles={_name(r): r for r in cluster_roles},
            roles={(_ns(r), _name(r)): r for r in roles},
            cluster_role_bindings=tuple(cluster_role_bindings),
            role_bindings={k: tuple(v) for k, v in rb.items()},
        )

    def cluster_role_rules(self, name: str) -> tuple[Rule, ...]:
        """Rules of a ClusterRole, resolving ``aggregationRule`` selectors (one level, like the controller)."""
        cached = self._rule_cache.get(name)
        if cached is None:
            cached = self._rule_cache[name] = self._resolve_cluster_role(name)
        return cached

    def _resolve_cluster_role(self, name: str) -> tuple[Rule, ...]:
        role = self.cluster_roles.get(name)
        if role is None:
            return ()
        agg = role.get("aggregationRule")
        if agg is None:
            return _rules_of(role)
        selectors = _aggregation_selectors(agg)
        if selectors is None:
            # A stored role with a malformed aggregationRule grants nothing (fail closed),
            # but it must not turn every authorization that reaches it into a crash.
            _warn_malformed_aggregation(name, role)
            return ()
        rules: list[Rule] = []
        for other_name in sorted(self.cluster_roles):
            if other_name == name:
                continue
            other = self.cluster_roles[other_name]
            labels = _labels_of(other)
            if labels is not None and any(sel.matches(labels) for sel in selectors):
                for r in _rules_of(other):
                    if r not in rules:
                        rules.append(r)
        return tuple(rules)

    def role_ref_rules(self, ref: Mapping[str, Any], binding_ns: str) -> tuple[Rule, ...]:
        if not isinstance(ref, Mapping) or ref.get("apiGroup", RBAC_GROUP) != RBAC_GROUP:
            return ()
        kind, name = ref.get("kind"), str(ref.get("name", ""))
        if kind == "ClusterRole":
            return self.cluster_role_rules(name)
        if kind == "Role" and binding_ns:
            role = self.roles.get((binding_ns, name))
            return _rules_of(role) if role else ()
        return ()


# -- aggregation rules -----------------------------------------------------------

_MAX_WARNED = 256
_warned_aggregations: set[tuple[str, str]] = set()


def _aggregation_selectors(agg: Any) -> list[Selector] | None:
    """The selectors of an ``aggregationRule``; ``None`` if any part of it is malformed.

    Like the Kubernetes aggregation controller (``LabelSelectorAsSelector`` errors stop
    the whole role), one bad selector voids the rule, rather than aggregating by the
    rest. A null selector selects nothing, as in Kubernetes; an empty one (``{}``)
    would select every ClusterRole, cluster-admin included, so it is ignored.
    """
    if not isinstance(agg, Mapping):
        return None
    raw = agg.get("clusterRoleSelectors")
    if raw is None:
        return []
    if not isinstance(raw, (list, tuple)):
        return None
    selectors: list[Selector] = []
    for s in raw:
        try:
            sel = selector_from_struct(s)
        except SelectorError:
            return None
        if sel is not None and not sel.empty:
            selectors.append(sel)
    return selectors


def _labels_of(obj: Mapping[str, Any]) -> Mapping[str, str] | None:
    """A role's labels, or ``None`` when they are not a string map (then nothing selects it)."""
    meta = obj.get("metadata")
    if meta is None:
        return {}
    if not isinstance(meta, Mapping):
        return None
    labels = meta.get("labels")
    if labels is None:
        return {}
    if not isinstance(labels, Mapping) or not all(isinstance(k, str) and isinstance(v, str)
                                                  for k, v in labels.items()):
        return None
    return labels


def _warn_malformed_aggregation(name: str, role: Mapping[str, Any]) -> None:
    """Log a malformed aggregationRule once per role version, not once per authorization."""
    meta = role.get("metadata")
    version = str(meta.get("resourceVersion", "")) if isinstance(meta, Mapping) else ""
    key = (name[:253], version[:64])
    if key in _warned_aggregations:
        return
    if len(_warned_aggregations) >= _MAX_WARNED:
        _warned_aggregations.clear()
    _warned_aggregations.add(key)
    log.warning("ClusterRole %r (resourceVersion %r) has a malformed aggregationRule; it grants nothing",
                key[0], key[1])


def subject_applies(subject: Mapping[str, Any], user: str, groups: tuple[str, ...], binding_ns: str) -> bool:
    """Does a binding subject name this user (Kubernetes ``appliesToUser``)?"""
    if not isinstance(subject, Mapping):
        return False
    kind, name = subject.get("kind"), subject.get("name", "")
    if kind == "User":
        return name == user
    if kind == "Group":
        return name in groups
    if kind == "ServiceAccount":
        ns = subject.get("namespace") or binding_ns
        return bool(ns) and user == f"system:serviceaccount:{ns}:{name}"
    return False


def _subjects_of(binding: Mapping[str, Any]) -> tuple[Any, ...] | list[Any]:
    """A stored binding's subjects; anything but a list names nobody (fail closed, never crash)."""
    subjects = binding.get("subjects")
    return subjects if isinstance(subjects, (list, tuple)) else ()


def _ref_of(binding: Mapping[str, Any]) -> Mapping[str, Any]:
    """A stored binding's roleRef; anything but an object refers to nothing."""
    ref = binding.get("roleRef")
    return ref if isinstance(ref, Mapping) else {}


def applicable_rules(policy: Policy, user: str, groups: tuple[str, ...], namespace: str) -> list[Rule]:
    """Every rule the user holds cluster-wide plus, if given, in ``namespace``."""
    rules: list[Rule] = []
    for b in policy.cluster_role_bindings:
        if any(subject_applies(s, user, groups, "") for s in _subjects_of(b)):
            ref = _ref_of(b)
            if ref.get("kind") == "ClusterRole":
                rules.extend(policy.role_ref_rules(ref, ""))
    if namespace:
        for b in policy.role_bindings.get(namespace, ()):
            if any(subject_applies(s, user, groups, namespace) for s in _subjects_of(b)):
                rules.extend(policy.role_ref_rules(_ref_of(b), namespace))
    return rules


def authorize(attrs: Attributes, policy: Policy) -> Decision:
    """RBAC authorizer: ALLOW or NO_OPINION (never an explicit deny)."""
    for b in policy.cluster_role_bindings:
        if not any(subject_applies(s, attrs.user, attrs.groups, "") for s in _subjects_of(b)):
            continue
        ref = _ref_of(b)
        if ref.get("kind") == "ClusterRole" and rules_allow(attrs, policy.role_ref_rules(ref, "")):
            return Decision(Verdict.ALLOW, f"allowed by ClusterRoleBinding {_name(b)!r}")
    if attrs.resource_request and attrs.namespace:
        for b in policy.role_bindings.get(attrs.namespace, ()):
            if not any(subject_applies(s, attrs.user, attrs.groups, attrs.namespace) for s in _subjects_of(b)):
                continue
            if rules_allow(attrs, policy.role_ref_rules(_ref_of(b), attrs.namespace)):
                return Decision(Verdict.ALLOW, f"allowed by RoleBinding {_name(b)!r} in {attrs.namespace!r}")
    return NO_OPINION


# -- escalation prevention ------------------------------------------------------

def _covers_resource(owner: Rule, resource: str) -> bool:
    if "*" in owner.resources or resource in owner.resources:
        return True
    if "/" in resource:
        sub = resource.split("/", 1)[1]
        return "*/" + sub in owner.resources
    return False


def _covers_url(owner: Rule, url: str) -> bool:
    for u in owner.non_resource_urls:
        if u == "*" or u == url or (u.endswith("*") and url.startswith(u[:-1])):
            return True
    return False


def _rule_covers(owner: Rule, servant: Rule) -> bool:
    """Does ``owner`` grant everything the single-valued ``servant`` rule grants?"""
    if not all("*" in owner.verbs or v in owner.verbs for v in servant.verbs):
        return False
    if servant.non_resource_urls:
        return all(_covers_url(owner, u) for u in servant.non_resource_urls)
    if not all("*" in owner.api_groups or g in owner.api_groups for g in servant.api_groups):
        return False
    if not all(_covers_resource(owner, r) for r in servant.resources):
        return False
    if owner.resource_names:
        if not servant.resource_names:
            return False
        return all(n in owner.resource_names for n in servant.resource_names)
    return True


def _breakdown(rule: Rule) -> list[Rule]:
    """Split a rule into single-verb, single-group, single-resource(, single-name) rules."""
    out: list[Rule] = []
    if rule.non_resource_urls:
        for u in rule.non_resource_urls:
            for v in rule.verbs:
                out.append(Rule((v,), non_resource_urls=(u,)))
    for g in rule.api_groups:
        for r in rule.resources:
            for v in rule.verbs:
                if rule.resource_names:
                    for n in rule.resource_names:
                        out.append(Rule((v,), (g,), (r,), (n,)))
                else:
                    out.append(Rule((v,), (g,), (r,)))
    return out


def uncovered(owner_rules: Iterable[Rule], requested: Iterable[Rule]) -> list[Rule]:
    """The parts of ``requested`` that no owner rule covers (empty list = covered)."""
    owners = list(owner_rules)
    missing = []
    for rule in requested:
        for piece in _breakdown(rule):
            if not any(_rule_covers(o, piece) for o in owners):
                missing.append(piece)
    return missing


def confirm_no_escalation(policy: Policy, user: str, groups: tuple[str, ...], namespace: str,
                          requested: Iterable[Rule]) -> Decision:
    """May this user create a role holding ``requested`` rules (in ``namespace``, '' for cluster)?"""
    if SYSTEM_MASTERS in groups:
        return ALLOW
    missing = uncovered(applicable_rules(policy, user, groups, namespace), requested)
    if not missing:
        return ALLOW
    return Decision(Verdict.DENY, f"attempt to grant extra privileges: {[m.to_dict() for m in missing[:5]]}")


def binding_allowed(policy: Policy, user: str, groups: tuple[str, ...], namespace: str,
                    role_ref: Mapping[str, Any]) -> Decision:
    """May this user create a binding to ``role_ref`` in ``namespace`` ('' for a ClusterRoleBinding)?

    Allowed if the user holds ``bind`` on the referenced role, or already holds every
    permission the role grants (in that namespace) -- Kubernetes' rule.
    """
    kind, name = role_ref.get("kind"), str(role_ref.get("name", ""))
    resource = "clusterroles" if kind == "ClusterRole" else "roles"
    bind = Attributes(user=user, groups=groups, verb="bind", namespace=namespace if kind == "Role" else namespace,
                      api_group=RBAC_GROUP, resource=resource, name=name)
    if authorize(bind, policy).allowed:
        return ALLOW
    return confirm_no_escalation(policy, user, groups, namespace, policy.role_ref_rules(role_ref, namespace))


def escalate_allowed(policy: Policy, user: str, groups: tuple[str, ...], namespace: str, kind: str,
                     name: str, requested: Iterable[Rule]) -> Decision:
    """May this user write a Role/ClusterRole with ``requested`` rules?"""
    resource = "clusterroles" if kind == "ClusterRole" else "roles"
    esc = Attributes(user=user, groups=groups, verb="escalate", namespace=namespace, api_group=RBAC_GROUP,
                     resource=resource, name=name)
    if authorize(esc, policy).allowed:
        return ALLOW
    return confirm_no_escalation(policy, user, groups, namespace, requested)
