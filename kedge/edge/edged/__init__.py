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
Pods run only when edgecore is root, each as a uid/gid of its own from the node's pod id
range (:mod:`~kedge.edge.edged.ids`); every directory above ``root`` needs o+x (0711) so
that user can reach its pod directory. That identity is the only confinement: what it
cannot isolate is listed in :mod:`~kedge.edge.edged.runtime`.
"""

from kedge.edge.edged.content import ContainerConfigError
from kedge.edge.edged.ids import DEFAULT_POD_UID_RANGE, IdRange, IdRefused, parse_id_range
from kedge.edge.edged.manager import PodManager
from kedge.edge.edged.plan import Action, BackoffPolicy, ContainerState, PodState, plan, pod_status
from kedge.edge.edged.runtime import ContainerHandle, ContainerSpec, ProcessRuntime, Runtime, StartError
from kedge.edge.edged.spec import PodDef, PodSpecError, parse_pod

__all__ = [
    "DEFAULT_POD_UID_RANGE", "Action", "BackoffPolicy", "ContainerConfigError", "ContainerHandle",
    "ContainerSpec", "ContainerState", "IdRange", "IdRefused", "PodDef", "PodManager", "PodSpecError",
    "PodState", "ProcessRuntime", "Runtime", "StartError", "parse_id_range", "parse_pod", "plan", "pod_status",
]
