"""What a real Kubernetes cluster needs before ``kedge cloudcore --kubeconfig`` can run.

Pure core: plain dicts in, plain dicts / text out; no clock, no I/O. The CLI shell
(:mod:`kedge.cli.manifests`) only parses flags and prints.

The objects, in the order ``kubectl apply`` needs them:

- the ``kedge-system`` Namespace (cloudcore's home in the cluster);
- the ``devices.kubeedge.io/v1beta1`` CRDs (DeviceModel, Device), taken from the
  devicecontroller so the embedded API server and a real one serve the same schema;
- ClusterRole ``kedge-cloudcore``: exactly the rules of the embedded bootstrap role
  ``system:kedge-cloudcore`` (taken from :mod:`kedge.authz.bootstrap`, never restated),
  so cloudcore holds the same read/write set in both modes -- in particular no
  secrets or configmaps as itself: it reads those only while impersonating the node
  whose pod references them, and the cluster's Node authorizer decides;
- ClusterRole ``kedge-cloudcore-impersonate-nodes``: the RBAC approximation of the
  embedded server's built-in rule "cloudcore may impersonate ``system:node:*``".
  RBAC ``resourceNames`` are exact strings, so the users rule lists one
  ``system:node:<name>`` per ``--node``. Without nodes there is *no* users rule at all:
  a wildcard would let cloudcore act as any user, cluster-admins included, which is
  precisely what the built-in rule exists to prevent. Groups are limited to
  ``system:nodes`` and ``system:authenticated`` (what an impersonated node carries);
- one ClusterRoleBinding per role for the cloudcore identity.

The caller must therefore re-generate and re-apply when nodes join -- the header
comment and the CLI's stderr note say so.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import re
from typing import Any

import yaml

from kedge.errors import ConfigError
from kedge.pki.ca import validate_node_name

RBAC_GROUP = "rbac.authorization.k8s.io"
NODE_USER_PREFIX = "system:node:"
NODES_GROUP = "system:nodes"
AUTHENTICATED_GROUP = "system:authenticated"
SERVICEACCOUNT_PREFIX = "system:serviceaccount:"

DEFAULT_NAMESPACE = "kedge-system"
DEFAULT_CLOUDCORE_USER = "system:kedge:cloudcore"
CLOUDCORE_ROLE = "kedge-cloudcore"
IMPERSONATE_ROLE = "kedge-cloudcore-impersonate-nodes"
PART_OF = {"app.kubernetes.io/part-of": "kedge", "app.kubernetes.io/managed-by": "kedge-manifests"}

#: More nodes than this in one RBAC rule is a sign of a mistake (and a very large object).
MAX_NODES = 10_000

# Kubernetes namespace names are DNS-1123 labels.
_DNS1123_LABEL = re.compile(r"[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?")

# Order in which kubectl apply must see the kinds (namespace and CRDs before users of them).
_KIND_ORDER = {"Namespace": 0, "CustomResourceDefinition": 1, "ServiceAccount": 2, "ClusterRole": 3,
               "ClusterRoleBinding": 4}

FORMATS = ("yaml", "json")


@dataclasses.dataclass(frozen=True)
class ManifestOptions:
    """Validated inputs of the generator.

    ``nodes`` is kept sorted and de-duplicated so the output depends only on the *set*
    of nodes, never on the order of ``--node`` flags.
    """

    nodes: tuple[str, ...] = ()
    namespace: str = DEFAULT_NAMESPACE
    cloudcore_user: str = DEFAULT_CLOUDCORE_USER

    def __post_init__(self) -> None:
        if isinstance(self.nodes, str) or not isinstance(self.nodes, (tuple, list)):
            raise ConfigError("nodes must be a sequence of node names", code="bad_node_name")
        if len(self.nodes) > MAX_NODES:
            raise ConfigError(f"at most {MAX_NODES} nodes", code="too_many_nodes")
        nodes = tuple(sorted({validate_node_name(n) for n in self.nodes}))
        object.__setattr__(self, "nodes", nodes)
        if not isinstance(self.namespace, str) or not _DNS1123_LABEL.fullmatch(self.namespace):
            raise ConfigError(f"invalid namespace {self.namespace!r}: must be a DNS-1123 label",
                              code="bad_namespace")
        check_user_name(self.cloudcore_user)
        sa = self.service_account
        if sa is not None and sa[0] != self.namespace:
            # The ServiceAccount is created here, in the namespace these manifests create.
            raise ConfigError(f"service account {self.cloudcore_user!r} must live in --namespace {self.namespace!r}",
                              code="bad_user")

    @property
    def service_account(self) -> tuple[str, str] | None:
        """(namespace, name) when the cloudcore user is a service account's user name."""
        if not self.cloudcore_user.startswith(SERVICEACCOUNT_PREFIX):
            return None
        ns, _, name = self.cloudcore_user[len(SERVICEACCOUNT_PREFIX):].partition(":")
        return ns, name


def check_user_name(user: str) -> str:
    """A user name fit to be an RBAC subject for cloudcore.

    Refused: empty or non-printable names; ``system:node:*`` and ``system:anonymous``
    (binding cloudcore's powers to a node or to nobody-in-particular would hand them to
    that identity); malformed ``system:serviceaccount:`` names.
    """
    if not isinstance(user, str) or not 0 < len(user) <= 253 or not user.isprintable() or user != user.strip():
        raise ConfigError(f"invalid cloudcore user {user!r}", code="bad_user")
    if user.startswith(NODE_USER_PREFIX) or user in ("system:anonymous", "system:unauthenticated"):
        raise ConfigError(f"refusing to grant cloudcore's permissions to {user!r}", code="bad_user")
    if user.startswith(SERVICEACCOUNT_PREFIX):
        ns, sep, name = user[len(SERVICEACCOUNT_PREFIX):].partition(":")
        if not sep or not _DNS1123_LABEL.fullmatch(ns):
            raise ConfigError(f"invalid service account user {user!r}", code="bad_user")
        try:
            validate_node_name(name)  # service account names follow the same DNS-1123 subdomain rule
        except ConfigError as exc:
            raise ConfigError(f"invalid service account user {user!r}", code="bad_user") from exc
    return user


def _meta(name: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "labels": dict(PART_OF), **extra}


def _cloudcore_rules() -> list[dict[str, Any]]:
    """The embedded ``system:kedge-cloudcore`` rules, read from the bootstrap policy."""
    from kedge.authz.bootstrap import CLOUDCORE_ROLE as EMBEDDED_ROLE
    from kedge.authz.bootstrap import bootstrap_cluster_roles

    for role in bootstrap_cluster_roles():
        if role["metadata"]["name"] == EMBEDDED_ROLE:
            return copy.deepcopy(role["rules"])
    raise ConfigError("the embedded cloudcore role is missing", code="internal_error")  # pragma: no cover


def impersonation_rules(nodes: tuple[str, ...]) -> list[dict[str, Any]]:
    """``impersonate`` on the node groups and, per node, on ``system:node:<name>`` only."""
    rules: list[dict[str, Any]] = [{
        "apiGroups": [""], "resources": ["groups"], "verbs": ["impersonate"],
        "resourceNames": sorted([AUTHENTICATED_GROUP, NODES_GROUP]),
    }]
    if nodes:
        rules.append({"apiGroups": [""], "resources": ["users"], "verbs": ["impersonate"],
                      "resourceNames": [NODE_USER_PREFIX + n for n in nodes]})
    return rules


def _subject(opts: ManifestOptions) -> dict[str, Any]:
    sa = opts.service_account
    if sa is not None:
        return {"kind": "ServiceAccount", "namespace": sa[0], "name": sa[1]}
    return {"apiGroup": RBAC_GROUP, "kind": "User", "name": opts.cloudcore_user}


def _binding(name: str, role: str, opts: ManifestOptions) -> dict[str, Any]:
    return {"apiVersion": f"{RBAC_GROUP}/v1", "kind": "ClusterRoleBinding", "metadata": _meta(name),
            "roleRef": {"apiGroup": RBAC_GROUP, "kind": "ClusterRole", "name": role},
            "subjects": [_subject(opts)]}


def build_objects(opts: ManifestOptions) -> list[dict[str, Any]]:
    """Every object, in apply order (kind order, then name): deterministic for equal options."""
    from kedge.cloud.devicecontroller.crds import CRDS

    objs: list[dict[str, Any]] = [{"apiVersion": "v1", "kind": "Namespace", "metadata": _meta(opts.namespace)}]
    for crd in CRDS:
        crd = copy.deepcopy(crd)
        crd["metadata"].setdefault("labels", {}).update(PART_OF)
        objs.append(crd)
    sa = opts.service_account
    if sa is not None:
        objs.append({"apiVersion": "v1", "kind": "ServiceAccount",
                     "metadata": _meta(sa[1], namespace=sa[0])})
    objs.append({"apiVersion": f"{RBAC_GROUP}/v1", "kind": "ClusterRole",
                 "metadata": _meta(CLOUDCORE_ROLE), "rules": _cloudcore_rules()})
    objs.append({"apiVersion": f"{RBAC_GROUP}/v1", "kind": "ClusterRole",
                 "metadata": _meta(IMPERSONATE_ROLE, annotations={
                     "kedge/note": "regenerate with every node as --node and re-apply when nodes join"}),
                 "rules": impersonation_rules(opts.nodes)})
    objs.append(_binding(CLOUDCORE_ROLE, CLOUDCORE_ROLE, opts))
    objs.append(_binding(IMPERSONATE_ROLE, IMPERSONATE_ROLE, opts))
    objs.sort(key=lambda o: (_KIND_ORDER[o["kind"]], o["metadata"].get("namespace", ""), o["metadata"]["name"]))
    return objs


def missing_nodes_note() -> str:
    return ("no --node given: the impersonation ClusterRole has no users rule, so cloudcore cannot act "
            "for any edge node yet. List every node (--node NAME, repeatable) and re-apply when nodes join; "
            "kedge never grants impersonation of arbitrary users.")


def render(opts: ManifestOptions, fmt: str = "yaml") -> str:
    """The manifests as a multi-document YAML stream or a JSON ``List``; sorted keys, stable bytes."""
    if fmt not in FORMATS:
        raise ConfigError(f"format must be one of {FORMATS}", code="bad_format")
    # A JSON round trip gives every object its own copy of shared sub-dicts, so the YAML has
    # no anchors/aliases (which API servers, kedge's included, rightly refuse).
    objs = json.loads(json.dumps(build_objects(opts)))
    if fmt == "json":
        return json.dumps({"apiVersion": "v1", "kind": "List", "metadata": {}, "items": objs},
                          indent=2, sort_keys=True) + "\n"
    header = ["# kedge manifests: CRDs and least-privilege RBAC for `kedge cloudcore --kubeconfig`.",
              f"# cloudcore user: {opts.cloudcore_user}",
              f"# nodes cloudcore may impersonate: {', '.join(opts.nodes) if opts.nodes else '(none)'}"]
    if not opts.nodes:
        header += ["# WARNING: " + line for line in _wrap(missing_nodes_note(), 90)]
    docs = [yaml.safe_dump(o, sort_keys=True, default_flow_style=False, allow_unicode=False) for o in objs]
    return "\n".join(header) + "\n---\n" + "---\n".join(docs)


def _wrap(text: str, width: int) -> list[str]:
    lines, cur = [], ""
    for word in text.split():
        if cur and len(cur) + 1 + len(word) > width:
            lines.append(cur)
            cur = word
        else:
            cur = f"{cur} {word}" if cur else word
    if cur:
        lines.append(cur)
    return lines
