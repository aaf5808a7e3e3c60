"""Service-account tokens: TokenRequest and bearer authentication."""

from __future__ import annotations

from kedge.apiserver import satoken
from kedge.apiserver.model import Request, Response, User, _dumps, _meta, rfc3339
from kedge.apiserver.request import RequestInfo
from kedge.apiserver.resources import ResourceType
from kedge.apiserver.status import ApiError, invalid


class Tokens:
    """Service-account tokens (a mixin of :class:`kedge.apiserver.api.API`)."""

    def _token_request(self, req: Request, info: RequestInfo, rt: ResourceType, user: User) -> Response:
        if rt.storage_key != "/serviceaccounts" or self.sa_key is None:
            raise ApiError(404, "the server could not find the requested resource")
        sa = self._load(rt, info.namespace, info.name)
        body = self._object_body(req, info, rt)
        spec = body.get("spec") if isinstance(body.get("spec"), dict) else {}
        ref = spec.get("boundObjectRef") if isinstance(spec.get("boundObjectRef"), dict) else None
        ref_name = ref.get("name") if ref is not None and isinstance(ref.get("name"), str) else ""
        pod = self.store.get("/pods", info.namespace, ref_name) if ref_name else None
        # NodeRestriction: a node's token must be bound to a pod on it (uid given and matching).
        self._admit(user, "CREATE", rt, "token", info.name, body, None, namespace=info.namespace, bound_pod=pod)
        audiences = spec.get("audiences") or [satoken.API_AUDIENCE]
        if not isinstance(audiences, list) or not all(isinstance(a, str) and 0 < len(a) <= 256 for a in audiences) \
                or len(audiences) > 16:
            raise invalid("TokenRequest", info.name, "spec.audiences: Invalid value", "authentication.k8s.io")
        expiry = spec.get("expirationSeconds", satoken.DEFAULT_EXPIRATION_S)
        if not isinstance(expiry, int) or isinstance(expiry, bool) or expiry < satoken.MIN_EXPIRATION_S:
            raise invalid("TokenRequest", info.name, "spec.expirationSeconds: may not specify a duration less "
                          "than 10 minutes", "authentication.k8s.io")
        expiry = min(expiry, satoken.MAX_EXPIRATION_S)
        pod_name = pod_uid = ""
        if ref is not None:
            if ref.get("kind") != "Pod":
                raise invalid("TokenRequest", info.name, "spec.boundObjectRef.kind: only Pod is supported",
                              "authentication.k8s.io")
            if pod is None or (ref.get("uid") and ref["uid"] != _meta(pod).get("uid")):
                raise ApiError(404, f'pods "{ref_name}" not found')
            pod_name, pod_uid = _meta(pod)["name"], _meta(pod)["uid"]
            # As Kubernetes' token REST: the pod must run as exactly this service account
            # (a pod naming none -- a mirror pod -- runs as none, never as "default").
            from kedge.authz.podrefs import service_account_name

            if service_account_name(pod) != info.name:
                raise ApiError(400, f"cannot bind token for serviceaccount {info.name!r} to pod running with "
                                    "different serviceaccount name.")
        now = int(self.clock())
        claims = satoken.TokenClaims(namespace=info.namespace, name=info.name, uid=_meta(sa).get("uid", ""),
                                     audiences=tuple(audiences), issued_at=now, expires_at=now + expiry,
                                     pod_name=pod_name, pod_uid=pod_uid)
        token = satoken.issue(self.sa_key, claims)
        body["kind"], body["apiVersion"] = "TokenRequest", "authentication.k8s.io/v1"
        body.setdefault("metadata", {}).update({"name": info.name, "namespace": info.namespace,
                                                "creationTimestamp": None})
        body["spec"] = dict(spec, audiences=audiences, expirationSeconds=expiry)
        body["status"] = {"token": token, "expirationTimestamp": rfc3339(now + expiry)}
        return Response(201, _dumps(body))

    def authenticate_bearer(self, token: str) -> User | None:
        """A service-account token, still backed by its service account (and pod): the user; else None."""
        if self.sa_key is None:
            return None
        try:
            claims = satoken.verify(token, self.sa_key.public_key(), now=self.clock())
        except satoken.TokenError:
            return None
        sa = self.store.get("/serviceaccounts", claims.namespace, claims.name)
        if sa is None or _meta(sa).get("uid") != claims.uid:
            return None
        if claims.pod_name:
            pod = self.store.get("/pods", claims.namespace, claims.pod_name)
            if pod is None or _meta(pod).get("uid") != claims.pod_uid or _meta(pod).get("deletionTimestamp"):
                return None
        return User(claims.username, claims.groups, claims.uid)
