"""RBAC write checks: a role or binding may grant only what its writer holds (escalate / bind)."""

from __future__ import annotations

from typing import Any

from kedge.apiserver.model import User
from kedge.apiserver.request import RequestInfo
from kedge.apiserver.resources import ResourceType
from kedge.apiserver.status import ApiError, invalid, not_found
from kedge.authz.labels import (
    SelectorError,
    selector_from_struct,
)
from kedge.authz.rbac import (
    FULL_AUTHORITY,
    RBAC_GROUP,
    Decision,
    Rule,
    binding_allowed,
    default_subject,
    escalate_allowed,
    has_aggregation_rule,
    only_gc_fields_change,
    repr_go,
    validate_rule,
    validate_subject,
)


class RbacAdmission:
    """Escalation checks on role and binding writes (a mixin of :class:`kedge.apiserver.api.API`)."""

    def _validate_rbac(self, rt: ResourceType, obj: dict[str, Any], old: dict[str, Any] | None, user: User,
                       info: RequestInfo, name: str, ns: str) -> None:
        """Kubernetes' RBAC validation, then its escalation checks (rbac policybased storage)."""
        def refuse(reason: str) -> ApiError:
            return ApiError(403, f'{rt.resource}.{rt.group} "{name}" is forbidden: {reason}',
                            details={"name": name, "group": rt.group, "kind": rt.resource})

        def grant_refused(d: Decision) -> ApiError:
            groups = " ".join(repr_go(g) for g in user.groups)
            return refuse(f"user {repr_go(user.name)} (groups=[{groups}]) is attempting to grant RBAC permissions "
                          f"not currently held: {d.reason}")

        gc_only = only_gc_fields_change(obj, old)
        if rt.resource in ("roles", "clusterroles"):
            rules_raw = obj.get("rules") or []
            if not isinstance(rules_raw, list):
                raise invalid(rt.kind, name, "rules must be a list", rt.group)
            for i, raw in enumerate(rules_raw):
                errs = validate_rule(raw, namespaced=rt.resource == "roles")
                if errs:
                    raise invalid(rt.kind, name, f"rules[{i}].{errs[0]}", rt.group)
            rules = [Rule.from_dict(r) for r in rules_raw]
            agg = obj.get("aggregationRule")
            if rt.resource == "clusterroles" and agg is not None:
                sels = agg.get("clusterRoleSelectors") if isinstance(agg, dict) else None
                if not isinstance(sels, list):
                    raise invalid(rt.kind, name, "aggregationRule.clusterRoleSelectors must be a list", rt.group)
                if not sels:
                    raise invalid(rt.kind, name, "aggregationRule.clusterRoleSelectors: Required value: at least "
                                  "one clusterRoleSelector required if aggregationRule is non-nil", rt.group)
                for sel in sels:
                    try:
                        selector_from_struct(sel)
                    except SelectorError as exc:
                        raise invalid(rt.kind, name, "aggregationRule.clusterRoleSelectors: invalid selector",
                                      rt.group) from exc
            if gc_only:
                return
            # The escalate verb is asked with the request's own name: none on a create.
            d = escalate_allowed(self.policy, user.name, user.groups, ns, rt.kind, info.name, rules)
            if not d.allowed:
                raise grant_refused(d)
            if rt.resource == "clusterroles" and (has_aggregation_rule(obj) or has_aggregation_rule(old)):
                # An aggregation rule can gather any role's rules (and, on an old role, keep
                # them from tightening): setting, changing or keeping one needs * on *.*
                d = escalate_allowed(self.policy, user.name, user.groups, ns, rt.kind, info.name, FULL_AUTHORITY)
                if not d.allowed:
                    raise refuse("must have cluster-admin privileges to use the aggregationRule")
            return
        ref = obj.get("roleRef")
        if isinstance(ref, dict) and not ref.get("apiGroup"):
            ref["apiGroup"] = RBAC_GROUP  # rbac/v1 defaulting, as for subjects below
        if not isinstance(ref, dict) or ref.get("kind") not in ("Role", "ClusterRole") or \
                ref.get("apiGroup") != RBAC_GROUP or not ref.get("name"):
            raise invalid(rt.kind, name, "roleRef: a Role or ClusterRole reference is required", rt.group)
        if rt.resource == "clusterrolebindings" and ref["kind"] != "ClusterRole":
            raise invalid(rt.kind, name, "roleRef.kind: Unsupported value", rt.group)
        if old is not None and old.get("roleRef") != ref:
            raise invalid(rt.kind, name, "roleRef: Invalid value: cannot change roleRef", rt.group)
        subjects = obj.get("subjects") or []
        if not isinstance(subjects, list) or not all(isinstance(s, dict) for s in subjects):
            raise invalid(rt.kind, name, "subjects must be a list of objects", rt.group)
        for i, subject in enumerate(subjects):
            default_subject(subject)
            errs = validate_subject(subject, namespaced=rt.resource == "rolebindings")
            if errs:
                raise invalid(rt.kind, name, f"subjects[{i}].{errs[0]}", rt.group)
        if gc_only:
            return
        d = binding_allowed(self.policy, user.name, user.groups, ns, ref)
        if d.not_found is not None:
            # Kubernetes: the role lookup's NotFound, as it is (a binding to a role that does
            # not exist yet needs bind on it, or system:masters).
            raise not_found(d.not_found[0], d.not_found[1], RBAC_GROUP)
        if not d.allowed:
            raise grant_refused(d)
