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
import re
from collections.abc import Iterable, Mapping
from typing import Any

from kedge.authz.labels import (
    FieldRequirement,
    Selector,
    SelectorError,
    selector_from_struct,
)

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
    """An answer; ``not_found`` names (resource, name) of a role a binding refers to that does not exist.

    Kubernetes answers such a binding with the role lookup's NotFound (HTTP 404), not a 403.
    """

    verdict: Verdict
    reason: str = ""
    not_found: tuple[str, str] | None = None

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
    def from_dict(cls, d: Mapping[str, Any]) -> Rule:
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


def _url_covers(rule_url: str, path: str) -> bool:
    """Kubernetes' non-resource URL test: equal, or a trailing ``*`` (all of them trimmed) is a prefix.

    ``/apis/*`` covers ``/apis/v1`` but not ``/apis``; a ``*`` anywhere else is a literal.
    """
    if rule_url == path:
        return True
    return rule_url.endswith("*") and path.startswith(rule_url.rstrip("*"))


def non_resource_url_matches(rule: Rule, path: str) -> bool:
    return any(u == "*" or _url_covers(u, path) for u in rule.non_resource_urls)


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


_RESOLVED = "\0aggregation-resolved"  # not a valid role name: marks the cache as filled


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
              role_bindings: Iterable[Mapping[str, Any]] = ()) -> Policy:
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
        """Rules of a ClusterRole; an aggregated one's are what the aggregation controller would write.

        Kubernetes' controller replaces an aggregated role's ``rules`` with the de-duplicated
        union of the rules of every other ClusterRole its selectors match -- including roles
        that are themselves aggregated (``admin`` gathers ``edit``, which gathers its pieces),
        and until nothing changes. kedge has no controller writing ``rules`` back, so it
        computes that end state here, once per policy snapshot.
        """
        if _RESOLVED not in self._rule_cache:
            self._rule_cache.update(self._resolve_aggregation())
            self._rule_cache[_RESOLVED] = ()
        cached = self._rule_cache.get(name)
        if cached is not None:
            return cached
        role = self.cluster_roles.get(name)
        return _rules_of(role) if role is not None else ()

    def has_role(self, ref: Mapping[str, Any], binding_ns: str) -> bool:
        """Does the role a roleRef names exist (what Kubernetes' rule resolver looks up)?"""
        kind, name = ref.get("kind"), str(ref.get("name", ""))
        if kind == "ClusterRole":
            return name in self.cluster_roles
        if kind == "Role":
            return bool(binding_ns) and (binding_ns, name) in self.roles
        return False

    def _resolve_aggregation(self) -> dict[str, tuple[Rule, ...]]:
        selectors: dict[str, list[Selector]] = {}
        for name in sorted(self.cluster_roles):
            role = self.cluster_roles[name]
            agg = role.get("aggregationRule")
            if agg is None:
                continue
            sels = _aggregation_selectors(agg)
            if sels is None:
                # A stored role with a malformed aggregationRule grants nothing (fail closed),
                # but it must not turn every authorization that reaches it into a crash.
                _warn_malformed_aggregation(name, role)
                sels = []
            selectors[name] = sels
        current: dict[str, tuple[Rule, ...]] = {name: () for name in selectors}
        if not selectors:
            return current
        labels = {name: _labels_of(role) for name, role in self.cluster_roles.items()}
        members = {name: [other for other in sorted(self.cluster_roles) if other != name and labels[other] is not None
                          and any(sel.matches(labels[other]) for sel in sels)]
                   for name, sels in selectors.items()}
        # Each pass can only add rules; a chain of aggregated roles settles within one pass per link.
        for _ in range(len(selectors) + 1):
            changed = False
            for name in selectors:
                rules: list[Rule] = []
                for other in members[name]:
                    source = current[other] if other in current else _rules_of(self.cluster_roles[other])
                    for r in source:
                        if r not in rules:
                            rules.append(r)
                if tuple(rules) != current[name]:
                    current[name] = tuple(rules)
                    changed = True
            if not changed:
                break
        return current

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
    if not isinstance(name, str):
        return False  # a decoded binding's subject names are strings; anything else names nobody
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
# Kubernetes pkg/registry/rbac/validation/policy_comparator.go (Covers) and
# pkg/registry/rbac/{escalation_check.go, */policybased/storage.go}, re-expressed.

def _has_all(owner: tuple[str, ...], wanted: tuple[str, ...]) -> bool:
    return all(w in owner for w in wanted)


def _resources_cover(owner: tuple[str, ...], wanted: tuple[str, ...]) -> bool:
    if "*" in owner or _has_all(owner, wanted):
        return True
    for res in wanted:
        if res in owner:
            continue
        if "/" not in res or "*/" + res.split("/", 1)[1] not in owner:
            return False
    return True


def _urls_cover(owner: tuple[str, ...], wanted: tuple[str, ...]) -> bool:
    return all(any(_url_covers(o, w) for o in owner) for w in wanted)


def _rule_covers(owner: Rule, piece: Rule) -> bool:
    """Does ``owner`` grant everything the broken-down ``piece`` grants? (every field is compared)"""
    if piece.resource_names:
        names = not owner.resource_names or _has_all(owner.resource_names, piece.resource_names)
    else:
        names = not owner.resource_names
    return (("*" in owner.verbs or _has_all(owner.verbs, piece.verbs))
            and ("*" in owner.api_groups or _has_all(owner.api_groups, piece.api_groups))
            and _resources_cover(owner.resources, piece.resources)
            and _urls_cover(owner.non_resource_urls, piece.non_resource_urls)
            and names)


def _breakdown(rule: Rule) -> list[Rule]:
    """Split a rule into pieces of one group, resource, verb (and name), then one URL and verb each."""
    out: list[Rule] = []
    for g in rule.api_groups:
        for r in rule.resources:
            for v in rule.verbs:
                if rule.resource_names:
                    out.extend(Rule((v,), (g,), (r,), (n,)) for n in rule.resource_names)
                else:
                    out.append(Rule((v,), (g,), (r,)))
    for u in rule.non_resource_urls:
        for v in rule.verbs:
            out.append(Rule((v,), non_resource_urls=(u,)))
    return out


def uncovered(owner_rules: Iterable[Rule], requested: Iterable[Rule]) -> list[Rule]:
    """The pieces of ``requested`` that no owner rule covers (empty list = covered)."""
    owners = list(owner_rules)
    return [piece for rule in requested for piece in _breakdown(rule)
            if not any(_rule_covers(o, piece) for o in owners)]


def _compact(rule: Rule) -> str:
    """A rule the way Kubernetes' CompactString prints it: ``{APIGroups:[""], Resources:["pods"], Verbs:["get"]}``."""
    parts = [f"{label}:[{' '.join(repr_go(v) for v in values)}]" for label, values in (
        ("APIGroups", rule.api_groups), ("Resources", rule.resources), ("NonResourceURLs", rule.non_resource_urls),
        ("ResourceNames", rule.resource_names), ("Verbs", rule.verbs)) if values]
    return "{" + ", ".join(parts) + "}"


def repr_go(value: str) -> str:
    """A string the way Go's %q prints it (ASCII-safe; enough for messages)."""
    out = ['"']
    for ch in value:
        if ch in '"\\':
            out.append("\\" + ch)
        elif " " <= ch <= "~":
            out.append(ch)
        else:
            out.append(ch.encode("unicode_escape").decode("ascii"))
    out.append('"')
    return "".join(out)


def confirm_no_escalation(policy: Policy, user: str, groups: tuple[str, ...], namespace: str,
                          requested: Iterable[Rule]) -> Decision:
    """May this user create a role holding ``requested`` rules (in ``namespace``, '' for cluster)?

    The user's rules are those of every binding naming it cluster-wide plus, with a
    namespace, in that namespace (``RulesFor``); members of system:masters skip the check,
    as every Kubernetes caller of ConfirmNoEscalation does first (``EscalationAllowed``).
    """
    if SYSTEM_MASTERS in groups:
        return ALLOW
    missing = uncovered(applicable_rules(policy, user, groups, namespace), requested)
    if not missing:
        return ALLOW
    shown = "\n".join(_compact(m) for m in missing[:20])
    more = f"\n... and {len(missing) - 20} more" if len(missing) > 20 else ""
    return Decision(Verdict.DENY, f"attempt to grant extra privileges:\n{shown}{more}")


def binding_allowed(policy: Policy, user: str, groups: tuple[str, ...], namespace: str,
                    role_ref: Mapping[str, Any]) -> Decision:
    """May this user write a binding to ``role_ref`` in ``namespace`` ('' for a ClusterRoleBinding)?

    Kubernetes' order: system:masters may; so may a holder of ``bind`` on the referenced
    role (namespace = the binding's, name = the role's, so ``resourceNames`` can narrow
    it); otherwise the role is looked up -- a role that does not exist is refused with
    NotFound (``not_found`` is set), never treated as "no rules" -- and the user must
    already hold every rule it grants.
    """
    if SYSTEM_MASTERS in groups:
        return ALLOW
    if not isinstance(role_ref, Mapping):
        return Decision(Verdict.DENY, "attempt to grant extra privileges: no roleRef")
    kind, name = role_ref.get("kind"), str(role_ref.get("name", ""))
    if kind not in ("Role", "ClusterRole"):
        return Decision(Verdict.DENY, "attempt to grant extra privileges: unsupported roleRef kind")
    resource = "clusterroles" if kind == "ClusterRole" else "roles"
    bind = Attributes(user=user, groups=groups, verb="bind", namespace=namespace,
                      api_group=str(role_ref.get("apiGroup", RBAC_GROUP)), resource=resource, name=name)
    if authorize(bind, policy).allowed:
        return ALLOW
    if not policy.has_role(role_ref, namespace):
        return Decision(Verdict.DENY, f'{resource}.{RBAC_GROUP} "{name}" not found', not_found=(resource, name))
    return confirm_no_escalation(policy, user, groups, namespace, policy.role_ref_rules(role_ref, namespace))


def escalate_allowed(policy: Policy, user: str, groups: tuple[str, ...], namespace: str, kind: str,
                     name: str, requested: Iterable[Rule]) -> Decision:
    """May this user write a Role/ClusterRole with ``requested`` rules?

    ``name`` is the name in the request's URL, as Kubernetes asks the ``escalate`` verb
    with the request's own attributes: empty for a create (POST to the collection), so an
    ``escalate`` rule narrowed by ``resourceNames`` never lets its holder create roles.
    """
    if SYSTEM_MASTERS in groups:
        return ALLOW
    resource = "clusterroles" if kind == "ClusterRole" else "roles"
    esc = Attributes(user=user, groups=groups, verb="escalate", namespace=namespace, api_group=RBAC_GROUP,
                     resource=resource, name=name)
    if authorize(esc, policy).allowed:
        return ALLOW
    return confirm_no_escalation(policy, user, groups, namespace, requested)


FULL_AUTHORITY = (Rule(("*",), ("*",), ("*",)), Rule(("*",), non_resource_urls=("*",)))


def has_aggregation_rule(obj: Mapping[str, Any] | None) -> bool:
    """Kubernetes' hasAggregationRule: an aggregationRule with at least one selector."""
    if not isinstance(obj, Mapping):
        return False
    agg = obj.get("aggregationRule")
    return isinstance(agg, Mapping) and bool(agg.get("clusterRoleSelectors"))


_GC_FIELDS = ("ownerReferences", "finalizers", "selfLink")


def only_gc_fields_change(new: Mapping[str, Any], old: Mapping[str, Any] | None) -> bool:
    """Kubernetes' IsOnlyMutatingGCFields: is an update changing only ownerReferences/finalizers?

    Such updates skip the escalation and bind checks (the garbage collector must be able
    to finish deleting a role or binding whose rules it does not hold).
    """
    if old is None:
        return False
    new_meta = dict(new.get("metadata") or {})
    old_meta = old.get("metadata") or {}
    for key in _GC_FIELDS:
        if key in old_meta:
            new_meta[key] = old_meta[key]
        else:
            new_meta.pop(key, None)
    return _semantic({**new, "metadata": new_meta}) == _semantic(old)


def _semantic(obj: object) -> object:
    """Drop what a Go round-trip would not distinguish: null and empty lists/maps as fields."""
    if isinstance(obj, Mapping):
        return {k: _semantic(v) for k, v in obj.items() if v not in (None, [], {}) and k != "resourceVersion"}
    if isinstance(obj, (list, tuple)):
        return [_semantic(v) for v in obj]
    return obj


# -- validation of written objects (Kubernetes pkg/apis/rbac/validation) ----------------

def validate_rule(raw: Any, *, namespaced: bool) -> list[str]:
    """Field errors of one PolicyRule (ValidatePolicyRule)."""
    if not isinstance(raw, Mapping):
        return ["must be an object"]
    errs = []
    for key in ("verbs", "apiGroups", "resources", "resourceNames", "nonResourceURLs"):
        v = raw.get(key)
        if v is not None and (not isinstance(v, list) or not all(isinstance(x, str) for x in v)):
            errs.append(f"{key}: must be a list of strings")
    if errs:
        return errs
    if not raw.get("verbs"):
        errs.append("verbs: Required value: verbs must contain at least one value")
    if raw.get("nonResourceURLs"):
        if namespaced:
            errs.append("nonResourceURLs: Invalid value: namespaced rules cannot apply to non-resource URLs")
        if raw.get("apiGroups") or raw.get("resources") or raw.get("resourceNames"):
            errs.append("nonResourceURLs: Invalid value: rules cannot apply to both regular resources and "
                        "non-resource URLs")
        return errs
    if not raw.get("apiGroups"):
        errs.append("apiGroups: Required value: resource rules must supply at least one api group")
    if not raw.get("resources"):
        errs.append("resources: Required value: resource rules must supply at least one resource")
    return errs


_SA_NAME = re.compile(r"\A[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\Z")


def default_subject(subject: Any) -> None:
    """rbac/v1 defaulting: a User or Group subject without apiGroup gets rbac.authorization.k8s.io."""
    if isinstance(subject, dict) and not subject.get("apiGroup") and subject.get("kind") in ("User", "Group"):
        subject["apiGroup"] = RBAC_GROUP


def validate_subject(subject: Any, *, namespaced: bool) -> list[str]:
    """Field errors of one binding subject (ValidateRoleBindingSubject)."""
    if not isinstance(subject, Mapping):
        return ["must be an object"]
    for key in ("kind", "name", "apiGroup", "namespace"):
        if subject.get(key) is not None and not isinstance(subject.get(key), str):
            return [f"{key}: must be a string"]
    errs = []
    name, kind, group = subject.get("name") or "", subject.get("kind"), subject.get("apiGroup") or ""
    if not name:
        errs.append("name: Required value")
    if kind == "ServiceAccount":
        if name and (len(name) > 253 or not _SA_NAME.match(name)):
            errs.append(f"name: Invalid value: {repr_go(name)}: a lowercase RFC 1123 subdomain is required")
        if group:
            errs.append(f'apiGroup: Unsupported value: {repr_go(group)}: supported values: ""')
        if not namespaced and not subject.get("namespace"):
            errs.append("namespace: Required value")
    elif kind in ("User", "Group"):
        if group != RBAC_GROUP:
            errs.append(f'apiGroup: Unsupported value: {repr_go(group)}: supported values: "{RBAC_GROUP}"')
    else:
        errs.append(f'kind: Unsupported value: {repr_go(str(kind or ""))}: supported values: "ServiceAccount", '
                    '"User", "Group"')
    return errs
