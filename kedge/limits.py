"""Every bound on peer-controlled input, in one place.

Parsers take a :class:`Limits` (or use :data:`DEFAULT`); exceeding a bound raises
:class:`kedge.errors.LimitExceeded` with a specific code.
"""

from __future__ import annotations

import dataclasses
import math

KIB = 1024
MIB = 1024 * KIB


@dataclasses.dataclass(frozen=True)
class Limits:
    # Tunnel (one JSON message per WebSocket frame).
    max_frame_bytes: int = 1 * MIB
    max_json_depth: int = 32
    max_string_bytes: int = 256 * KIB
    max_list_items: int = 10_000
    max_object_keys: int = 10_000
    max_resource_bytes: int = 512
    # Bootstrap / certificate endpoint (HTTPS).
    max_http_body_bytes: int = 64 * KIB
    max_http_header_bytes: int = 16 * KIB
    http_read_timeout_s: float = 10.0
    # CloudHub.
    handshake_timeout_s: float = 10.0
    idle_timeout_s: float = 45.0
    keepalive_interval_s: float = 15.0
    max_nodes: int = 20_000
    outbound_queue_items: int = 1_000
    upstream_qps: float = 50.0
    upstream_burst: int = 100
    # Bootstrap failures per source address.
    bootstrap_fail_burst: int = 10
    bootstrap_fail_per_s: float = 0.5

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 < value < math.inf:
                raise ValueError(f"limit {field.name} must be a positive finite number, got {value!r}")
            if isinstance(field.default, int) and not isinstance(value, int) and not float(value).is_integer():
                raise ValueError(f"limit {field.name} counts something: it must be a whole number, got {value!r}")
            if isinstance(field.default, int) and isinstance(value, float):
                object.__setattr__(self, field.name, int(value))  # 2048.0 from a JSON config is 2048


DEFAULT = Limits()
