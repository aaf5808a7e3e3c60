"""edgecore's Prometheus metrics (``kedge edgecore --metrics-address 127.0.0.1:P``), loopback only.

Everything is read at scrape time from attributes edgecore keeps anyway (the tunnel's state
and connect count, pending requests, the last pod statuses, the devicetwin counters, the
store file's size), so nothing is counted on a hot path for it, and ``prometheus_client``
is imported only when the endpoint is on (:func:`start`): edgecore without
``--metrics-address`` never loads it. Labels come from fixed sets: pod phases and the
devicetwin's own reason codes, never pod or device names.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any, Iterator

from kedge._internal import metrics as mx
from kedge.errors import ConfigError

if TYPE_CHECKING:
    from kedge.edge.core import EdgeCore

log = logging.getLogger(__name__)

POD_PHASES = frozenset({"Pending", "Running", "Succeeded", "Failed", "Unknown"})
MAX_REJECT_CODES = 32


def check_address(address: str) -> tuple[str, int]:
    """``HOST:PORT`` on a loopback address, or ``ConfigError`` (edges serve metrics to the node only)."""
    host, port = mx.parse_address(address)
    if not mx.is_loopback(host):
        raise ConfigError(f"edgecore serves metrics on a loopback address only, not {host}", code="usage")
    return host, port


def _file_bytes(path: Any) -> int:
    total = 0
    for suffix in ("", "-wal"):
        try:
            total += os.stat(f"{path}{suffix}").st_size
        except OSError:
            pass
    return total


class EdgeCollector:
    def __init__(self, core: "EdgeCore") -> None:
        self.core = core

    def describe(self) -> list[Any]:
        return []  # unchecked collector: families are produced at scrape time

    def collect(self) -> Iterator[Any]:
        core = self.core
        hub = core.hub
        yield mx.gauge("kedge_edge_tunnel_connected", "1 while the tunnel to CloudHub is up, else 0.",
                       1 if hub.connected.is_set() else 0)
        yield mx.counter("kedge_edge_tunnel_connects", "Tunnels established since edgecore started.", hub.connects)
        yield mx.counter("kedge_edge_tunnel_reconnects", "Tunnels established after the first one "
                         "(reconnects, including certificate rotations).", max(0, hub.connects - 1))
        yield mx.counter("kedge_edge_certificate_rotations", "Node certificate renewals.", hub.rotations)
        yield mx.gauge("kedge_edge_requests_pending", "Requests sent to the cloud awaiting their response "
                       "(the upstream queue).", len(hub.waiters))
        phases: dict[str, int] = dict.fromkeys(sorted(POD_PHASES), 0)
        for status in list(core._pod_status.values()):
            phase = mx.bounded(str((status or {}).get("phase", "Unknown")), POD_PHASES)
            phases[phase] = phases.get(phase, 0) + 1
        yield mx.gauge("kedge_edge_pods", "Pods on this node by phase (their last reported status).", 0,
                       ("phase",), [((p,), n) for p, n in sorted(phases.items())])
        yield mx.gauge("kedge_edge_store_bytes", "Size of the edge store (edge.db and its WAL) in bytes.",
                       _file_bytes(core.store.path))
        twin = getattr(core, "devicetwin", None)
        if twin is not None:
            engine = twin.engine
            yield mx.counter("kedge_edge_device_reports", "Device twin/state reports accepted from mappers.",
                             engine.accepted)
            rejects = mx.Tally()
            for code, n in sorted(dict(engine.rejects).items()):
                key = code if len(rejects.counts) < MAX_REJECT_CODES else mx.OTHER
                rejects.inc((key,), n)
            yield mx.counter_family("kedge_edge_device_reports_refused", "Device inputs refused, by code.",
                                    ("code",), rejects)
            yield mx.counter("kedge_edge_device_reports_uploaded", "Device reports sent to the cloud.",
                             twin.uploaded)
            yield mx.gauge("kedge_edge_device_backlog", "Broker messages queued for the devicetwin worker.",
                           twin.backlog)


async def start(core: "EdgeCore", address: str) -> tuple[Any, str]:
    """Serve ``core``'s metrics on ``address`` (loopback); returns the server and its URL."""
    host, port = check_address(address)
    registry = mx.new_registry(EdgeCollector(core))
    server = await mx.serve(registry, host, port, limits=core.hub.limits)
    url = mx.bound_url(server, tls=False)
    log.info("metrics on %s", url, extra={"event": "metrics.listening", "node": core.node})
    return server, url
