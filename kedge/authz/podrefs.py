"""What a Pod references in the Kubernetes API, read from any JSON value without failing.

One walker for everything that follows a pod's references: the Node authorizer's graph
(:class:`kedge.authz.node.NodeGraph`), NodeRestriction's refusal of mirror pods that
reference API objects, and the edgecontroller's list of configmaps and secrets to send
a node. The facts follow Kubernetes (``pkg/api/pod`` ``VisitPodSecretNames``,
``VisitPodConfigmapNames``, ``HasAPIObjectReference``; the node authorizer's
``Graph.AddPod``; ``pkg/api/v1/persistentvolume`` ``VisitPVSecretNames``).

Every function here is total: it takes any JSON value (a pod that never passed
validation, a stored object of an older shape, a fuzzer's output) and never raises.
A part of the wrong type is ignored by the reference walkers -- it names nothing -- and
counts against the pod in :func:`api_reference`, which fails closed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from typing import Any

MIRROR_POD_ANNOTATION = "kubernetes.io/config.mirror"

_CONTAINER_LISTS = ("initContainers", "containers", "ephemeralContainers")

# Volume sources whose secret reference Kubernetes' VisitPodSecretNames follows, in the
# order of its switch (a valid volume has exactly one source; the first present wins).
_SECRET_SOURCES: tuple[tuple[str, str], ...] = (
    ("azureFile", "secretName"), ("cephfs", "secretRef"), ("cinder", "secretRef"),
    ("flexVolume", "secretRef"), ("projected", ""), ("rbd", "secretRef"), ("secret", "secretName"),
    ("scaleIO", "secretRef"), ("iscsi", "secretRef"), ("storageos", "secretRef"),
    ("csi", "nodePublishSecretRef"),
)

# Volume sources that need nothing from the API (HasAPIObjectReference lets them through).
_LOCAL_SOURCES = frozenset({
    "awsElasticBlockStore", "azureDisk", "cephfs", "cinder", "downwardAPI", "emptyDir", "fc", "flexVolume",
    "flocker", "gcePersistentDisk", "gitRepo", "hostPath", "image", "iscsi", "nfs", "photonPersistentDisk",
    "portworxVolume", "quobyte", "rbd", "scaleIO", "storageos", "vsphereVolume",
})
# Volume sources that do, with the resource HasAPIObjectReference names for them.
_API_SOURCES: tuple[tuple[str, str], ...] = (
    ("configMap", "configmaps (via configmap volumes)"),
    ("secret", "secrets (via secret volumes)"),
    ("csi", "csidrivers (via CSI volumes)"),
    ("glusterfs", "endpoints (via glusterFS volumes)"),
    ("persistentVolumeClaim", "persistentvolumeclaims"),
    ("ephemeral", "persistentvolumeclaims (via ephemeral volumes)"),
    ("azureFile", "secrets (via azureFile volumes)"),
)
_PROJECTED_API_SOURCES: tuple[tuple[str, str], ...] = (
    ("configMap", "configmaps (via projected volumes)"),
    ("secret", "secrets (via projected volumes)"),
    ("serviceAccountToken", "serviceaccounts (via projected volumes)"),
    ("clusterTrustBundle", "clustertrustbundles"),
    ("podCertificate", "podcertificates"),
)


@dataclasses.dataclass(frozen=True)
class PodRefs:
    """The API objects one pod names, all in the pod's own namespace.

    ``secrets`` are the ones its containers consume (image pull, env, secret and
    projected volumes); ``driver_secrets`` the ones a volume plugin reads for it (CSI
    node-publish, flexVolume, rbd, ...). The Node authorizer grants both.
    """

    service_account: str = ""
    secrets: frozenset[str] = frozenset()
    driver_secrets: frozenset[str] = frozenset()
    configmaps: frozenset[str] = frozenset()
    pvcs: frozenset[str] = frozenset()
    resource_claims: frozenset[str] = frozenset()

    def edges(self) -> frozenset[tuple[str, str]]:
        """``{(resource, name)}`` the Node authorizer's graph links to the pod."""
        out = {("secrets", n) for n in self.secrets | self.driver_secrets}
        out |= {("configmaps", n) for n in self.configmaps}
        out |= {("persistentvolumeclaims", n) for n in self.pvcs}
        out |= {("resourceclaims", n) for n in self.resource_claims}
        if self.service_account:
            out.add(("serviceaccounts", self.service_account))
        return frozenset(out)


def _map(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _name(value: Any, key: str = "name") -> str:
    """``value[key]`` when ``value`` is a mapping and that is a non-empty string, else ''."""
    name = _map(value).get(key)
    return name if isinstance(name, str) else ""


def _present(source: Mapping[str, Any], key: str) -> bool:
    """A volume source is set, as Go's ``!= nil`` sees it after decoding: present and not null."""
    return source.get(key) is not None


def _spec(pod: Any) -> Mapping[str, Any]:
    return _map(_map(pod).get("spec"))


def _containers(spec: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    for key in _CONTAINER_LISTS:
        for c in _list(spec.get(key)):
            if isinstance(c, Mapping):
                yield c


def _volumes(spec: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    for v in _list(spec.get("volumes")):
        if isinstance(v, Mapping):
            yield v


def is_mirror_pod(pod: Any) -> bool:
    """The pod carries the mirror annotation (any value, as Kubernetes checks only the key)."""
    annotations = _map(_map(_map(pod).get("metadata")).get("annotations"))
    return MIRROR_POD_ANNOTATION in annotations


def service_account_name(pod: Any) -> str:
    """``spec.serviceAccountName``, or the deprecated ``spec.serviceAccount`` alias when that is empty."""
    spec = _spec(pod)
    return _name(spec, "serviceAccountName") or _name(spec, "serviceAccount")


def _container_secrets(spec: Mapping[str, Any]) -> set[str]:
    out: set[str] = set()
    for ref in _list(spec.get("imagePullSecrets")):
        out.add(_name(ref))
    for c in _containers(spec):
        for env_from in _list(c.get("envFrom")):
            out.add(_name(_map(env_from).get("secretRef")))
        for env in _list(c.get("env")):
            out.add(_name(_map(_map(env).get("valueFrom")).get("secretKeyRef")))
    return out


def _container_configmaps(spec: Mapping[str, Any]) -> set[str]:
    out: set[str] = set()
    for c in _containers(spec):
        for env_from in _list(c.get("envFrom")):
            out.add(_name(_map(env_from).get("configMapRef")))
        for env in _list(c.get("env")):
            out.add(_name(_map(_map(env).get("valueFrom")).get("configMapKeyRef")))
    return out


def _volume_secrets(volume: Mapping[str, Any]) -> tuple[set[str], set[str]]:
    """(consumed, driver) secret names of one volume, following the first source present."""
    for key, field in _SECRET_SOURCES:
        if not _present(volume, key):
            continue
        source = _map(volume.get(key))
        if key == "projected":
            return {_name(_map(s).get("secret")) for s in _list(source.get("sources"))}, set()
        if key == "secret":
            return {_name(source, "secretName")}, set()
        if key == "azureFile":
            return set(), {_name(source, "secretName")}
        return set(), {_name(source.get(field))}
    return set(), set()


def _volume_configmaps(volume: Mapping[str, Any]) -> set[str]:
    if _present(volume, "projected"):
        return {_name(_map(s).get("configMap")) for s in _list(_map(volume.get("projected")).get("sources"))}
    if _present(volume, "configMap"):
        return {_name(volume.get("configMap"))}
    return set()


def _claim_name(pod: Any, volume: Mapping[str, Any]) -> str:
    if _present(volume, "persistentVolumeClaim"):
        return _name(volume.get("persistentVolumeClaim"), "claimName")
    if _present(volume, "ephemeral"):
        pod_name, vol_name = _name(_map(pod).get("metadata")), _name(volume)
        return f"{pod_name}-{vol_name}" if pod_name and vol_name else ""
    return ""


def _resource_claims(pod: Any, spec: Mapping[str, Any]) -> set[str]:
    status = _map(_map(pod).get("status"))
    generated: dict[str, str] = {}
    for entry in _list(status.get("resourceClaimStatuses")):
        if _name(entry):
            generated.setdefault(_name(entry), _name(entry, "resourceClaimName"))
    out: set[str] = set()
    for claim in _list(spec.get("resourceClaims")):
        direct = _name(claim, "resourceClaimName")
        if direct:
            out.add(direct)
        elif _name(claim, "resourceClaimTemplateName"):
            out.add(generated.get(_name(claim), ""))
    out.add(_name(status.get("extendedResourceClaimStatus"), "resourceClaimName"))
    return out


def pod_refs(pod: Any) -> PodRefs:
    """Everything ``pod`` names, whatever it is a mirror pod or not (see :func:`graph_refs`)."""
    spec = _spec(pod)
    secrets, driver, configmaps, pvcs = _container_secrets(spec), set(), _container_configmaps(spec), set()
    for volume in _volumes(spec):
        consumed, by_driver = _volume_secrets(volume)
        secrets |= consumed
        driver |= by_driver
        configmaps |= _volume_configmaps(volume)
        pvcs.add(_claim_name(pod, volume))
    return PodRefs(service_account=service_account_name(pod), secrets=frozenset(secrets - {""}),
                   driver_secrets=frozenset(driver - {""}), configmaps=frozenset(configmaps - {""}),
                   pvcs=frozenset(pvcs - {""}), resource_claims=frozenset(_resource_claims(pod, spec) - {""}))


def graph_refs(pod: Any) -> PodRefs:
    """What the Node authorizer's graph links to ``pod``: nothing at all for a mirror pod.

    Kubernetes' ``Graph.AddPod`` adds only the pod -> node edge for a mirror pod, so a
    node can never gain access to an object by creating a pod (defence in depth behind
    NodeRestriction, which refuses such mirror pods outright).
    """
    return PodRefs() if is_mirror_pod(pod) else pod_refs(pod)


def api_reference(pod: Any) -> str:
    """The API resource ``pod`` references ('' if none), as Kubernetes' ``HasAPIObjectReference`` names it.

    Fails closed: a volume of no known source, an unknown projected source, or a part
    of the wrong type where a reference could sit is reported as a reference.
    """
    spec = _spec(pod)
    if service_account_name(pod):
        return "serviceaccounts"
    refs = pod_refs(pod)
    if refs.secrets or refs.driver_secrets:
        return "secrets"
    if refs.configmaps:
        return "configmaps"
    if spec.get("resourceClaims") not in (None, []):
        return "resourceclaims"
    raw_volumes = spec.get("volumes")
    if raw_volumes is not None and not isinstance(raw_volumes, list):
        return "volumes of an unknown type"
    for volume in _list(raw_volumes):
        found = _volume_api_reference(volume)
        if found:
            return found
    return ""


def _volume_api_reference(volume: Any) -> str:
    if not isinstance(volume, Mapping):
        return "volumes of an unknown type"
    for key, resource in _API_SOURCES:
        if _present(volume, key):
            return resource
    if _present(volume, "projected"):
        sources = _map(volume.get("projected")).get("sources")
        if sources is not None and not isinstance(sources, list):
            return "projected volume sources of an unknown type"
        for source in _list(sources):
            if not isinstance(source, Mapping):
                return "projected volume sources of an unknown type"
            for key, resource in _PROJECTED_API_SOURCES:
                if _present(source, key):
                    return resource
            if not _present(source, "downwardAPI"):
                return "projected volume sources of an unknown type"
        return ""
    if any(_present(volume, key) for key in _LOCAL_SOURCES):
        return ""
    return "volumes of an unknown type"


def pv_secret_refs(pv: Any) -> frozenset[tuple[str, str]]:
    """``{(namespace, name)}`` of the secrets a node may read through a PersistentVolume.

    Kubernetes' ``VisitPVSecretNames`` with ``kubeletVisible``: the CSI controller-publish
    and controller-expand secrets are for the controller, never the node. A secret
    reference without a namespace means the bound claim's namespace (``spec.claimRef``)
    for azureFile, cephfs, flexVolume, rbd, scaleIO and iscsi; cinder and storageos take
    the reference's own namespace as it is.
    """
    spec = _map(_map(pv).get("spec"))
    claim_ns = _name(spec.get("claimRef"), "namespace")
    out: set[tuple[str, str]] = set()
    if _present(spec, "azureFile"):
        az = _map(spec.get("azureFile"))
        out.add((_name(az, "secretNamespace") or claim_ns, _name(az, "secretName")))
    else:
        for key, falls_back in (("cephfs", True), ("cinder", False), ("flexVolume", True), ("rbd", True),
                                ("scaleIO", True), ("iscsi", True), ("storageos", False)):
            if _present(spec, key):
                ref = _map(_map(spec.get(key)).get("secretRef"))
                out.add((_name(ref, "namespace") or (claim_ns if falls_back else ""), _name(ref)))
                break
        else:
            csi = _map(spec.get("csi"))
            for key in ("nodePublishSecretRef", "nodeStageSecretRef", "nodeExpandSecretRef"):
                ref = _map(csi.get(key))
                out.add((_name(ref, "namespace"), _name(ref)))
    return frozenset((ns, name) for ns, name in out if name)


def pv_claim(pv: Any) -> tuple[str, str] | None:
    """``(namespace, name)`` of the claim a PersistentVolume is bound to (its ``spec.claimRef``)."""
    ref = _map(_map(pv).get("spec")).get("claimRef")
    if not isinstance(ref, Mapping):
        return None
    return _name(ref, "namespace"), _name(ref)


__all__ = [
    "MIRROR_POD_ANNOTATION", "PodRefs", "api_reference", "graph_refs", "is_mirror_pod", "pod_refs",
    "pv_claim", "pv_secret_refs", "service_account_name",
]
