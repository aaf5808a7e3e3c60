"""TokenReview, SubjectAccessReview and friends: the virtual review resources."""

from __future__ import annotations

from kedge.apiserver.model import Request, Response, User
from kedge.apiserver.request import RequestInfo
from kedge.apiserver.resources import ResourceType
from kedge.apiserver.status import ApiError, invalid
from kedge.authz.labels import (
    FieldRequirement,
    parse_field_selector,
)
from kedge.authz.rbac import (
    Attributes,
    applicable_rules,
)


class Reviews:
    """The review resources (a mixin of :class:`kedge.apiserver.api.API`)."""

    def _review(self, req: Request, info: RequestInfo, rt: ResourceType, user: User) -> Response:
        if info.verb != "create":
            raise ApiError(405, "method not allowed")
        body = self._object_body(req, info, rt)
        spec = body.get("spec") if isinstance(body.get("spec"), dict) else {}
        if rt.resource == "selfsubjectreviews":
            body["status"] = {"userInfo": {"username": user.name, "groups": list(user.groups),
                                           **({"uid": user.uid} if user.uid else {})}}
            return self._ok(201, body)
        if rt.resource == "selfsubjectrulesreview" or rt.resource == "selfsubjectrulesreviews":
            ns = str(spec.get("namespace", ""))
            rules = applicable_rules(self.policy, user.name, user.groups, ns)
            res_rules = [{"verbs": list(r.verbs), "apiGroups": list(r.api_groups), "resources": list(r.resources),
                          **({"resourceNames": list(r.resource_names)} if r.resource_names else {})}
                         for r in rules if not r.non_resource_urls]
            nr_rules = [{"verbs": list(r.verbs), "nonResourceURLs": list(r.non_resource_urls)}
                        for r in rules if r.non_resource_urls]
            body["status"] = {"resourceRules": res_rules, "nonResourceRules": nr_rules, "incomplete": True}
            return self._ok(201, body)
        if rt.resource == "selfsubjectaccessreviews":
            subject = user
        else:
            sname = spec.get("user") or ""
            sgroups = spec.get("groups") or []
            if not isinstance(sname, str) or not isinstance(sgroups, list) or \
                    not all(isinstance(g, str) for g in sgroups):
                raise invalid(rt.kind, "", "spec.user/spec.groups are invalid", rt.group)
            if not sname and not sgroups:
                raise invalid(rt.kind, "", "spec.user or spec.groups: at least one is required", rt.group)
            subject = User(sname, tuple(sgroups))
        ra, nra = spec.get("resourceAttributes"), spec.get("nonResourceAttributes")
        if isinstance(ra, dict) == isinstance(nra, dict):
            raise invalid(rt.kind, "", "exactly one of resourceAttributes or nonResourceAttributes is required",
                          rt.group)
        if isinstance(ra, dict):
            ns = str(ra.get("namespace", ""))
            if rt.resource == "localsubjectaccessreviews" and ns != info.namespace:
                raise ApiError(400, "spec.resourceAttributes.namespace must match the request namespace")
            fsel: tuple[FieldRequirement, ...] = ()
            fs = ra.get("fieldSelector")
            if isinstance(fs, dict):
                if fs.get("rawSelector"):
                    fsel = parse_field_selector(str(fs["rawSelector"]))
                else:
                    reqs = []
                    for r in fs.get("requirements") or []:
                        if isinstance(r, dict) and r.get("operator") in ("In", "NotIn") and \
                                len(r.get("values") or []) == 1:
                            reqs.append(FieldRequirement(str(r.get("key")), "=" if r["operator"] == "In" else "!=",
                                                         str(r["values"][0])))
                    fsel = tuple(reqs)
            attrs = Attributes(user=subject.name, groups=subject.groups, verb=str(ra.get("verb", "")) or "get",
                               namespace=ns, api_group=str(ra.get("group", "")),
                               resource=str(ra.get("resource", "")), subresource=str(ra.get("subresource", "")),
                               name=str(ra.get("name", "")), field_selector=fsel)
        else:
            attrs = Attributes(user=subject.name, groups=subject.groups, verb=str(nra.get("verb", "")),
                               resource_request=False, path=str(nra.get("path", "")))
        decision = self.authorize(attrs)
        body["status"] = {"allowed": decision.allowed}
        if decision.reason:
            body["status"]["reason"] = decision.reason
        return self._ok(201, body)
