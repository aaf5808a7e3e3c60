"""edged: the edge's pod runtime.

Pods bound to this node run as local processes (:class:`ProcessRuntime`) supervised by
:class:`PodManager`; the decisions live in the pure :mod:`~kedge.edge.edged.plan`.
Imports stdlib (+ kedge) only: edgecore must stay small and never load ``kubernetes``.

Process-runtime limits, on purpose and documented: there are no images (a container
without ``command`` is refused with reason ``NoCommand``; ``image`` is only
reported), no namespaces and no bind mounts (a ``volumeMount`` is exposed to the
process as ``KEDGE_VOLUME_<VOLUME NAME>`` = the volume's directory, plus ``subPath``),
and the pod's network is the node's loopback (probes go to 127.0.0.1). Each container
runs under a ``/bin/sh`` shim that records its exit code in ``run/<container>.exit`` so
the code survives an edgecore restart (skipped for env names a shell cannot carry).
When edgecore is root, pods run as ``runAsUser`` or ``nobody``; every directory above
``root`` then needs o+x (0711) so that user can reach its pod directory.
"""

from kedge.edge.edged.content import ContainerConfigError, RunAsPolicy
from kedge.edge.edged.manager import PodManager
from kedge.edge.edged.plan import Action, BackoffPolicy, ContainerState, PodState, plan, pod_status
from kedge.edge.edged.runtime import ContainerHandle, ContainerSpec, ProcessRuntime, Runtime, StartError
from kedge.edge.edged.spec import PodDef, PodSpecError, parse_pod

__all__ = [
    "Action", "BackoffPolicy", "ContainerConfigError", "ContainerHandle", "ContainerSpec",
    "ContainerState", "PodDef", "PodManager", "PodSpecError", "PodState", "ProcessRuntime",
    "RunAsPolicy", "Runtime", "StartError", "parse_pod", "plan", "pod_status",
]
