"""Prometheus metrics endpoint shared by cloudcore and edgecore (``--metrics-address H:P``).

The exposition format is ``prometheus_client``'s (``generate_latest``), never written by
hand. Each process builds its own :class:`prometheus_client.CollectorRegistry` (no global
default registry, no process/GC collectors of the library's own), and most figures are
read from the components' plain attributes at scrape time by a collector, so the hot
paths count with an ``int`` and the library is imported only when the endpoint is on:
edgecore stays small when it is off (``prometheus_client`` costs about 1.5 MiB).

Cardinality is bounded by construction: label values come from fixed sets
(:func:`bounded`) -- never pod, object or (except where the set is bounded by
``limits.max_nodes`` and said so) node names.

The endpoint is HTTP on a loopback address. Anything else must be served over TLS with
client certificates required (cloudcore: the cluster CA; see :func:`serve`); edgecore
refuses a non-loopback address altogether.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import ssl
from typing import TYPE_CHECKING, Any, Callable, Iterable

from kedge.errors import ConfigError
from kedge.limits import Limits

if TYPE_CHECKING:
    from kedge._internal.http11 import Request, Response

log = logging.getLogger(__name__)

OTHER = "other"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def parse_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` for IPv6; port 0 = a free port) -> ``(host, port)``."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"metrics address must be HOST:PORT, not {text!r}", code="usage")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not host or any(c in host for c in "[]/ "):
        raise ConfigError(f"metrics address must be HOST:PORT, not {text!r}", code="usage")
    return host, int(port)


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address (``localhost`` counts; other names do not)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bounded(value: str, allowed: frozenset[str]) -> str:
    """``value`` if it is one of ``allowed``, else ``"other"``: a label value from a fixed set."""
    return value if value in allowed else OTHER


class Tally:
    """Counts by a tuple of label values from fixed sets: ``inc(("in", "update", "pod"))``.

    Plain dict arithmetic on the hot path (the event loop's thread); a scrape reads a copy.
    """

    __slots__ = ("counts",)

    def __init__(self) -> None:
        self.counts: dict[tuple[str, ...], int] = {}

    def inc(self, key: tuple[str, ...], n: int = 1) -> None:
        self.counts[key] = self.counts.get(key, 0) + n

    def items(self) -> list[tuple[tuple[str, ...], int]]:
        return sorted(self.counts.items())


def new_registry(*collectors: Any) -> Any:
    """A dedicated registry holding ``collectors`` (the library's own default ones are left out)."""
    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry(auto_describe=False)
    for collector in collectors:
        registry.register(collector)
    return registry


def counter_family(name: str, doc: str, labels: Iterable[str], tally: Tally) -> Any:
    """A counter family for a :class:`Tally` (``name`` without the ``_total`` suffix)."""
    from prometheus_client.core import CounterMetricFamily

    family = CounterMetricFamily(name, doc, labels=list(labels))
    for key, value in tally.items():
        family.add_metric(list(key), value)
    return family


def gauge(name: str, doc: str, value: float, labels: Iterable[str] = (),
          samples: Iterable[tuple[Iterable[str], float]] = ()) -> Any:
    from prometheus_client.core import GaugeMetricFamily

    labels = list(labels)
    if not labels:
        return GaugeMetricFamily(name, doc, value=value)
    family = GaugeMetricFamily(name, doc, labels=labels)
    for label_values, v in samples:
        family.add_metric(list(label_values), v)
    return family


def counter(name: str, doc: str, value: float) -> Any:
    from prometheus_client.core import CounterMetricFamily

    return CounterMetricFamily(name, doc, value=value)


Authorize = Callable[["Request"], bool]


async def serve(registry: Any, host: str, port: int, *, limits: Limits, ssl_ctx: ssl.SSLContext | None = None,
                authorize: Authorize | None = None) -> asyncio.Server:
    """Serve ``GET /metrics`` (and ``/healthz``) from ``registry`` on ``host:port``.

    Off loopback, ``ssl_ctx`` must require client certificates and ``authorize`` decide who
    may read: refused with ``ConfigError`` otherwise (fail closed). One request per
    connection, every read bounded (:mod:`kedge._internal.http11`).
    """
    from prometheus_client import generate_latest

    from kedge._internal.http11 import Response, serve_connection

    if not is_loopback(host):
        if ssl_ctx is None or ssl_ctx.verify_mode != ssl.CERT_REQUIRED or authorize is None:
            raise ConfigError(f"metrics on the non-loopback address {host} need mutual TLS (client certificates "
                              "of the cluster CA); refusing to serve them in the clear", code="metrics_need_tls")

    async def handle(req: "Request") -> "Response":
        path = req.target.split("?", 1)[0]
        if req.method not in ("GET", "HEAD"):
            return Response.error(405, "method_not_allowed")
        if authorize is not None and not authorize(req):
            return Response.error(403, "forbidden")
        if path == "/healthz":
            return Response(200, b"ok\n", content_type="text/plain")
        if path != "/metrics":
            return Response.error(404, "not_found")
        # The collectors read plain attributes of the running components: on this loop, no thread hop.
        return Response(200, generate_latest(registry), content_type=CONTENT_TYPE)

    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await serve_connection(reader, writer, handle, limits)
        except asyncio.CancelledError:
            writer.close()
        except Exception:  # noqa: BLE001 - one bad scrape must never take the endpoint down
            log.exception("metrics endpoint: unexpected error")
            writer.close()

    return await asyncio.start_server(on_client, host, port, ssl=ssl_ctx,
                                      ssl_handshake_timeout=limits.handshake_timeout_s if ssl_ctx else None,
                                      limit=limits.max_http_header_bytes)


def bound_url(server: asyncio.Server, *, tls: bool) -> str:
    """``http(s)://HOST:PORT`` of a started endpoint, as ``endpoints.json`` lists endpoints (no path)."""
    host, port = server.sockets[0].getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    return f"{'https' if tls else 'http'}://{shown}:{port}"
