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
    # Successful node certificate renewals per node and hour (the cert endpoint refuses more with
    # renewal_rate_limited; never below four times what the node certificate validity needs).
    renewals_per_node_per_hour: int = 12
    # API server PATCH (checked while the patch is applied, not after: CVE-2019-1002100 class).
    # Operations in one JSON patch (kube-apiserver's maxJSONPatchOperations; more is a 413).
    max_patch_ops: int = 10_000
    # Bytes the copy operations of one JSON patch may add, counted as they copy (kube-apiserver's
    # JSONPatchMaxCopyBytes, 3 MiB); no more than the API request body limit (3 MiB).
    max_patch_copy_bytes: int = 3 * MIB
    # List elements one patch may shift (JSON patch insert/remove in a list) or compare (strategic
    # merge of lists without a usable merge key): what keeps 10,000 inserts at the head of a
    # million-element list, or a quadratic list merge, from holding the event loop for seconds.
    max_patch_work: int = 64 * MIB
    # Nesting of the patched object (the API server refuses deeper bodies: MAX_JSON_DEPTH).
    max_patch_depth: int = 64

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
