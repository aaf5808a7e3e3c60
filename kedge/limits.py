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
    # API server: connections without a client certificate (bearer tokens, anonymous) share a budget
    # inside API_MAX_CONNECTIONS, and one source address gets a part of it, so idle anonymous
    # sockets cannot take the slots of nodes, controllers and users with certificates.
    api_max_certless_connections: int = 256
    api_max_certless_per_source: int = 32
    # CloudHub.
    handshake_timeout_s: float = 10.0
    idle_timeout_s: float = 45.0
    keepalive_interval_s: float = 15.0
    max_nodes: int = 20_000
    outbound_queue_items: int = 1_000
    upstream_qps: float = 50.0
    upstream_burst: int = 100
    # Failed attempts at the cert endpoint: per source address for requests that prove nothing,
    # and per credential a request proved -- a usable bootstrap token or a verified client
    # certificate -- from all sources together. A request is refused only by the bucket its own
    # failures go to, so a flood of bad tokens never refuses a join or renewal (kedge.cloud.certserver).
    bootstrap_fail_burst: int = 10
    bootstrap_fail_per_s: float = 0.5
    # Bootstrap failures naming no usable token, from all sources together: what bounds token
    # guessing from many addresses. A request naming a usable token is never refused by it.
    bootstrap_fail_global_burst: int = 200
    bootstrap_fail_global_per_s: float = 20.0
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
    # Device certificate revocation (edge): the device CA's CRL the cloud sends (with MQTT
    # certificates and on request), and how often an edge asks for a fresh one -- a revocation
    # reaches the edge's broker within this (edgecore keeps it within 1 s .. 1 h).
    max_device_crl_bytes: int = 512 * KIB
    device_crl_poll_s: float = 300.0
    # MQTT (device CA) certificate pairs per node (devicecerts, kedge.cloud.devicecontroller.pki):
    # at most this many issued in any hour (more: device_certs_rate_limited), and at most this
    # many unexpired on record, valid or superseded (more: device_certs_exhausted) -- what bounds
    # one node's share of the device CA's record and of the CRL every edge downloads. A healthy
    # edge needs one pair per certificate lifetime, plus a retry or two.
    device_cert_pairs_per_hour: int = 4
    device_cert_pairs_per_node: int = 32

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


# --------------------------------------------------------------------------------------------
# Fixed bounds on peer-controlled input (not configurable). Modules import them from here,
# usually under their historical local name (``from kedge.limits import API_MAX_JSON_DEPTH as
# MAX_JSON_DEPTH``), and read that module global at call time: a test that monkeypatches the
# reading module's name still changes what is enforced.

# API server: HTTP (kedge.apiserver.http).
API_MAX_BODY_BYTES = 3 * MIB  # one request body (kube-apiserver's limit); more is a 413
API_MAX_YAML_BODY_BYTES = 256 * KIB  # one YAML body: decoded ~100x slower than JSON, so kept small (clients send JSON)
API_MAX_CONNECTIONS = 2048  # open client connections; more are closed at accept
API_MAX_HEADERS = 256  # header fields in one request
API_BODY_TIMEOUT_S = 60.0  # a whole request body (at most 3 MiB) must arrive within this
API_WRITE_TIMEOUT_S = 30.0  # a client must take each response write within this
API_IDLE_KEEPALIVE_S = 90.0  # an idle keep-alive connection is closed after this
API_LINGER_S = 2.0  # after an error response, the client's unread bytes are drained this long...
API_LINGER_MAX_BYTES = 4 * MIB  # ...and at most this many of them

# API server: request parsing and decoding (kedge.apiserver.model, request, protobuf).
API_MAX_QUERY_PARAMS = 64  # query fields in one request URL
API_MAX_JSON_DEPTH = 64  # nesting of a decoded body (JSON, YAML or protobuf) and of a patched object
API_MAX_JSON_NODES = 1_000_000  # values in one decoded body
API_MAX_LIST_LIMIT = 10_000  # ?limit= is clamped to this
PROTOBUF_MAX_FIELDS = 4096  # fields in one protobuf review body
PROTOBUF_MAX_DEPTH = 8  # nesting of one protobuf review body

# API server: watches (kedge.apiserver.model, watch).
WATCH_MAX_BACKLOG = 10_000  # events queued for one slow watcher before it is ended (410)
WATCH_MAX_BACKLOG_BYTES = 64 * MIB  # bytes queued for one slow watcher before it is ended
WATCH_DEFAULT_TIMEOUT_S = 1800  # a watch without timeoutSeconds ends after this
WATCH_MAX_TIMEOUT_S = 3600  # timeoutSeconds is clamped to this

# API server: service-account bearer tokens (kedge.apiserver.satoken); bounded before parsing.
SA_TOKEN_MAX_BYTES = 8192  # a whole token
SA_TOKEN_MAX_HEADER_BYTES = 1024  # its decoded JOSE header (kedge's own is ~80 bytes)
SA_TOKEN_MAX_JSON_DEPTH = 8  # nesting of its header and claims (kedge's own nest 3 deep)

# API server: pod logs (kedge.apiserver.podlog).
POD_LOG_MAX_RESPONSE_BYTES = 8 * MIB  # one log response (limitBytes is clamped to it)
POD_LOG_MAX_FOLLOW_S = 3600.0  # a follow stream ends after this

# Label selectors in requests (kedge.authz.labels).
LABEL_SELECTOR_MAX_BYTES = 4096
LABEL_SELECTOR_MAX_REQUIREMENTS = 64

# The device CA's certificate record (kedge.cloud.devicecontroller.pki): entries kept at once
# (expired ones are dropped first); more is refused with device_ca_full.
DEVICE_CA_MAX_RECORDS = 200_000

# Certificate signing requests (kedge.pki.ca, kedge.cloud.devicecontroller).
MAX_CSR_BYTES = 16 * KIB  # one PEM CSR
CSR_MAX_RSA_BITS = 8192  # largest RSA modulus in a CSR: no arbitrarily expensive big-number work

# CA rotation (kedge.pki.rotation, kedge.edge.cabundle): a trust bundle or its cross-certificates
# offered to an edge (over the tunnel, at join or renewal) hold at most this many certificates each
# (a rotation needs two), in at most this many bytes of PEM.
CA_BUNDLE_MAX_CERTS = 4
CA_BUNDLE_MAX_BYTES = 32 * KIB

# Tunnel messages (kedge.protocol.message); frame size and JSON bounds are in Limits above.
MSG_MAX_ID_CHARS = 64
MSG_MAX_RESOURCE_VERSION_CHARS = 128
MSG_MAX_TYPE_CHARS = 64
# Sanity cap applied on construction; a peer's input is held to the (smaller)
# Limits.max_resource_bytes by Message.from_dict.
MSG_MAX_ROUTE_FIELD_BYTES = 4096

# CloudHub and the cloud controllers (kedge.cloud).
HUB_MAX_CONCURRENT_REQUESTS = 4  # requests of one node handled at once (kedge.cloud.hub explains)
EDGE_INVENTORY_MAX_PAGES = 1_000  # pages of one inventory snapshot an edge reports...
EDGE_INVENTORY_MAX_ENTRIES = 200_000  # ...and entries over all its pages
EDGE_ACK_TIMEOUT_S = 30.0  # an edge must acknowledge a pushed change within this
KUBEAPI_MAX_WATCH_LINE = 4 * MIB  # one watch event line from the API server
DEVICE_MAX_MISSES = 100_000  # devices an edge named but does not own, remembered (rate-limits reads)
HTTP_CLIENT_MAX_RESPONSE_BYTES = 256 * KIB  # one response to kedge's HTTPS client (join, renewal)

# Pod logs through the tunnel (kedge.edge.podlogs serves, kedge.cloud.podlogs asks).
# One answer carries at most this much log (base64 makes the frame 4/3 of it; the tunnel's
# frame limit is 1 MiB).
POD_LOG_MAX_CHUNK_BYTES = 512 * KIB
POD_LOG_QUERY_TIMEOUT_S = 15.0  # the cloud waits this long for an edge's answer

# Edge: pods the cloud sends (kedge.edge.edged.spec, content, prober).
POD_MAX_CONTAINERS = 32
POD_MAX_ENV = 512
POD_MAX_ENV_FROM = 32
POD_MAX_ARGV = 1024
POD_MAX_STRING = 32 * KIB
POD_MAX_VOLUMES = 64
POD_MAX_MOUNTS = 64
POD_MAX_ITEMS = 256
POD_MAX_PORTS = 64
POD_MAX_PROBE_HEADERS = 32
POD_MAX_GROUPS = 32
POD_MAX_GRACE_S = 3600
POD_MAX_PROBE_S = 3600
POD_VOLUME_MAX_BYTES = 8 * MIB  # total bytes of one configMap/secret volume
PROBE_MAX_STATUS_LINE = 4096  # the status line of an HTTP probe's response from a container

# Edge: the MQTT broker devices connect to (kedge.edge.broker).
MQTT_MAX_PACKET_BYTES = 64 * KIB  # twin payloads are bounded far below this (devicetwin model)

# kedge audit's network probes (kedge.audit.probe).
AUDIT_PROBE_MAX_RESPONSE_BYTES = 16 * KIB

# Peer JSON parsed outside the tunnel codec and the API server's request body, each through the
# one bounded loader (kedge._internal.jsonutil: size, nesting, NaN/Infinity refused).
API_CONTINUE_MAX_CHARS = 2048  # a ?continue= token (base64 of the small object kedge issued)...
API_CONTINUE_MAX_JSON_DEPTH = 2  # ...which nests one level: {"v": 1, "ns": ..., "n": ...}
# Responses of the Kubernetes API server (kedge.cloud.edgecontroller.kubeapi, and the embedded
# one in-process, kedge.cloud.devicecontroller): an object nests at most API_MAX_JSON_DEPTH deep
# (as kedge's API server accepts it), a list or a watch event wraps it in two more levels.
KUBEAPI_MAX_RESPONSE_BYTES = 256 * MIB  # one (list) response; a watch line is KUBEAPI_MAX_WATCH_LINE
KUBEAPI_MAX_JSON_DEPTH = API_MAX_JSON_DEPTH + 4
HTTP_CLIENT_MAX_JSON_DEPTH = 16  # a JSON response to kedge's HTTPS client (the cert endpoint's nest 2 deep)
TWIN_MAX_JSON_DEPTH = 16  # an MQTT twin payload between a device (mapper) and the edge (KubeEdge's nest 5 deep)
