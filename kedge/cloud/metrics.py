"""cloudcore's Prometheus metrics (``kedge cloudcore --metrics-address H:P``).

What is counted where:

* CloudHub keeps plain counters (:class:`kedge._internal.metrics.Tally`) of tunnel messages;
  the controllers keep theirs (resyncs, refused pushes); :class:`CloudCollector` reads them,
  and the live sessions, at scrape time.
* Security events are counted from the audit stream: :class:`ObservedAudit` wraps cloudcore's
  :class:`AuditLog` (the file and its format are unchanged) and counts refused tunnel
  handshakes, disconnects, revoked sessions and certificate-endpoint outcomes by code, and
  logs the important ones under a stable ``event`` name (``--log-format json``).
* The embedded API server reports each request (verb, status, seconds) and its store each
  commit (seconds) through a callback into a histogram.

Cardinality: every label value comes from a fixed set (:func:`kedge._internal.metrics.bounded`)
or from kedge's own reason codes (a few dozen literals in the code, capped at
``MAX_CODES`` per family anyway). There are no per-pod or per-object labels and no per-node
labels either: certificate expiry is reported as the earliest expiry among connected nodes
and as counts of nodes expiring within 1 h / 1 d / 7 d / 30 d -- enough to alert on, a
constant number of series however many nodes there are (up to ``limits.max_nodes``);
which node it is, ``kedge`` and the audit log say.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from typing import TYPE_CHECKING, Any, Iterator

from kedge._internal import metrics as mx

if TYPE_CHECKING:
    from kedge.cloud.core import CloudCore

log = logging.getLogger(__name__)

MAX_CODES = 64
_CODE = re.compile(r"[a-z][a-z0-9_]{0,47}")

# Kubernetes API verbs (the audit record's ``verb``); anything else is "other".
API_VERBS = frozenset({"get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"})
# Message operations (kedge.protocol.message) and the resource types the tunnel carries.
OPERATIONS = frozenset({"insert", "update", "patch", "delete", "query", "response", "error", "keepalive"})
RESOURCES = frozenset({
    "pod", "podstatus", "configmap", "secret", "serviceaccounttoken", "node", "nodestatus", "lease",
    "inventory", "device", "devicemodel", "devicestatus", "devicecrl", "mqttcerts", "hubinfo", "keepalive",
    "log", "podlog",
})
EXPIRY_WINDOWS = (("1h", 3600), ("1d", 86400), ("7d", 7 * 86400), ("30d", 30 * 86400))
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def message_labels(operation: str, resource: str) -> tuple[str, str]:
    """``(type, resource)`` labels of a tunnel message, from fixed sets."""
    parts = resource.split("/")
    kind = parts[1] if len(parts) == 3 else ""
    return mx.bounded(operation, OPERATIONS), mx.bounded(kind, RESOURCES)


class Codes(mx.Tally):
    """A :class:`Tally` whose last label is a reason code: kept to code-shaped values, at most MAX_CODES."""

    def inc_code(self, prefix: tuple[str, ...], code: Any) -> None:
        text = code if isinstance(code, str) and _CODE.fullmatch(code) else mx.OTHER
        key = (*prefix, text)
        if key not in self.counts and len(self.counts) >= MAX_CODES:
            key = (*prefix, mx.OTHER)
        self.inc(key)


class ObservedAudit:
    """cloudcore's audit log, counted and (for the important events) logged as it is written."""

    def __init__(self, audit: Any) -> None:
        self._audit = audit
        self.refused = Codes()  # tunnel handshakes refused, by code
        self.disconnects = Codes()  # tunnel closes, by code
        self.cert_requests = Codes()  # certificate endpoint: (kind, result, code)
        self.revoked_sessions = 0
        self.protocol_errors = Codes()

    @property
    def path(self) -> Any:
        return self._audit.path

    def close(self) -> None:
        self._audit.close()

    def write(self, event: str, **fields: Any) -> None:
        self._audit.write(event, **fields)
        try:
            self._observe(event, fields)
        except Exception:  # noqa: BLE001 - counting must never break what is audited
            log.exception("counting audit event %s", event)

    def _observe(self, event: str, f: dict[str, Any]) -> None:
        node, peer, code = f.get("node"), f.get("peer"), f.get("code")
        ctx = {"node": node, "peer": peer, "code": code}
        if event == "connect":
            if f.get("result") == "refused":
                self.refused.inc_code((), code)
                log.warning("tunnel refused: %s", code, extra={"event": "tunnel.refused", **ctx})
            else:
                log.info("tunnel connected: %s from %s", node, peer, extra={"event": "tunnel.connected", **ctx})
        elif event == "disconnect":
            self.disconnects.inc_code((), code)
            log.info("tunnel disconnected: %s (%s)", node, code, extra={"event": "tunnel.disconnected", **ctx})
        elif event == "revoked_session_closed":
            self.revoked_sessions += 1
            log.warning("revoked node's tunnel closed: %s", node,
                        extra={"event": "node.revoked_session_closed", **ctx, "code": "revoked"})
        elif event == "protocol_error":
            self.protocol_errors.inc_code((), code)
            log.warning("tunnel protocol error from %s: %s", node, code, extra={"event": "tunnel.protocol_error", **ctx})
        elif event in ("bootstrap", "renewal"):
            result = "accepted" if f.get("result") == "accepted" else "refused"
            self.cert_requests.inc_code((event, result), "ok" if result == "accepted" else code)
            level = logging.INFO if result == "accepted" else logging.WARNING
            log.log(level, "%s %s for %s: %s", event, result, node or peer, code or "ok",
                    extra={"event": f"{event}.{result}", **ctx})


class CloudCollector:
    """Reads cloudcore's state at scrape time (cheap: counters and lengths, one pass over sessions)."""

    def __init__(self, core: "CloudCore", audit: ObservedAudit) -> None:
        self.core = core
        self.audit = audit

    def describe(self) -> list[Any]:
        return []  # unchecked collector: families are produced at scrape time

    def collect(self) -> Iterator[Any]:
        core, audit = self.core, self.audit
        hub = core.hub
        sessions = list(hub.sessions.values()) if hub is not None else []
        yield mx.gauge("kedge_cloudhub_connected_edges", "Edge nodes with a live tunnel.", len(sessions))
        yield mx.gauge("kedge_cloudhub_acks_pending", "Messages sent to edges and not yet acknowledged.",
                       sum(len(ns.waiters) for ns in sessions))
        yield mx.gauge("kedge_cloudhub_outbound_queued_frames", "Frames queued for edges, not yet written.",
                       sum(ns.outbox.qsize() for ns in sessions))
        if hub is not None:
            yield mx.counter_family("kedge_cloudhub_messages", "Tunnel messages by direction, type (operation) "
                                    "and resource type.", ("direction", "type", "resource"), hub.messages)
        yield mx.counter_family("kedge_cloudhub_connections_refused", "Tunnel handshakes refused, by code.",
                                ("code",), audit.refused)
        yield mx.counter_family("kedge_cloudhub_disconnects", "Tunnels closed, by code.", ("code",),
                                audit.disconnects)
        yield mx.counter_family("kedge_cloudhub_protocol_errors", "Tunnels failed by a protocol error, by code.",
                                ("code",), audit.protocol_errors)
        yield mx.counter("kedge_revoked_sessions_closed", "Live tunnels closed because the node's "
                         "certificate was revoked.", audit.revoked_sessions)
        yield mx.counter_family("kedge_certificate_requests", "Certificate endpoint requests by kind "
                                "(bootstrap, renewal), result and code (ok when accepted).",
                                ("kind", "result", "code"), audit.cert_requests)
        controller = core.controller
        if controller is not None:
            yield mx.counter("kedge_cloud_resyncs", "Edge resyncs started (an edge's inventory received "
                             "after it connected).", getattr(controller, "resyncs_total", 0))
            yield mx.counter("kedge_cloud_sync_passes", "Periodic full sync passes finished (all nodes).",
                             getattr(controller, "full_passes_total", 0))
            yield mx.counter("kedge_cloud_pushes_refused", "Pushes to edges the tunnel refused to carry.",
                             controller.refused_total)
        now = dt.datetime.now(dt.timezone.utc)
        expiries = [ns.ident.not_after for ns in sessions]
        if expiries:
            yield mx.gauge("kedge_node_certificate_earliest_expiry_timestamp_seconds",
                           "Earliest notAfter (Unix time) among connected nodes' certificates.",
                           min(expiries).timestamp())
        left = [(t - now).total_seconds() for t in expiries]
        yield mx.gauge("kedge_node_certificates_expiring", "Connected nodes whose certificate expires within "
                       "the window.", 0, ("within",),
                       [((name,), sum(1 for s in left if s <= secs)) for name, secs in EXPIRY_WINDOWS])
        api = core.api_server
        if api is not None:
            watches = sum(1 for c in list(api._streams) if getattr(c, "stream_kind", "watch") == "watch")
            yield mx.gauge("kedge_apiserver_watches_open", "Open watches on the embedded API server.", watches)
            yield mx.gauge("kedge_apiserver_connections_open", "Open connections to the embedded API server.",
                           len(api._conns))


class CloudMetrics:
    """The registry, the histogram hooks and the endpoint of one cloudcore."""

    def __init__(self, core: "CloudCore", audit: ObservedAudit) -> None:
        from prometheus_client import Counter, Histogram

        self.registry = mx.new_registry(CloudCollector(core, audit))
        self.api_requests = Counter("kedge_apiserver_requests", "Embedded API server requests by verb and "
                                    "HTTP status.", ("verb", "code"), registry=self.registry)
        self.api_latency = Histogram("kedge_apiserver_request_duration_seconds", "Time to answer an API request "
                                     "(for a watch: until it is established), by verb.", ("verb",),
                                     buckets=LATENCY_BUCKETS, registry=self.registry)
        self.store_commit = Histogram("kedge_store_commit_duration_seconds", "Embedded API store: time of "
                                      "one write transaction (group commit).", buckets=LATENCY_BUCKETS,
                                      registry=self.registry)
        self.server: Any = None

    def observe_request(self, verb: str, status: int, seconds: float) -> None:
        verb = mx.bounded(verb, API_VERBS)
        code = str(status) if 100 <= status <= 599 else mx.OTHER
        self.api_requests.labels(verb, code).inc()
        self.api_latency.labels(verb).observe(seconds)

    def observe_commit(self, seconds: float) -> None:
        self.store_commit.observe(seconds)

    async def start(self, core: "CloudCore", address: str) -> str:
        """Listen on ``address``; returns the URL written to ``endpoints.json`` as ``metrics``."""
        from kedge import tls

        host, port = mx.parse_address(address)
        ssl_ctx, authorize = None, None
        if not mx.is_loopback(host):
            d = core.dir
            # Follows `kedge ca rotate|finish` as the hub and API server do: the serving certificate
            # and the trusted CAs are re-read when their files change.
            ssl_ctx = tls.ReloadingServerContext(d.hub_crt, d.hub_key, d.ca_crt, client_cert="required",
                                                 allow_tls12=core.cfg.allow_tls12).context
            authorize = _scraper_authorizer(core)
        self.server = await mx.serve(self.registry, host, port, limits=core.limits, ssl_ctx=ssl_ctx,
                                     authorize=authorize)
        url = mx.bound_url(self.server, tls=ssl_ctx is not None)
        log.info("metrics on %s", url, extra={"event": "metrics.listening"})
        return url

    def stop(self) -> None:
        if self.server is not None:
            self.server.close()


#: Who may read metrics over mutual TLS: the cluster admins and Kubernetes' monitoring group.
SCRAPER_GROUPS = frozenset({"system:masters", "system:monitoring"})


def _scraper_authorizer(core: "CloudCore") -> mx.Authorize:
    """Off loopback: a client certificate of the cluster CA (TLS checked that), in SCRAPER_GROUPS,
    not revoked (the CA's CRL, fail closed). Node certificates are refused."""
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    from kedge.apiserver.http import RevocationList

    crl = RevocationList(core.dir.crl, core.dir.ca_crt)

    def authorize(req: Any) -> bool:
        if not req.peer_cert_der:
            return False
        cert = x509.load_der_x509_certificate(req.peer_cert_der)
        groups = {str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)}
        issuer = [str(a.value) for a in cert.issuer.get_attributes_for_oid(NameOID.COMMON_NAME)]
        # A CA retired by `kedge ca finish` vouches for nothing, on connections that outlive it too.
        return bool(groups & SCRAPER_GROUPS) and not crl.refuses(cert.serial_number,
                                                                  issuer[0] if issuer else None)

    return authorize

