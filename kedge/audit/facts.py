"""Facts: everything the checks look at, gathered up front by an I/O layer.

These are plain frozen values (no file handles, no sockets), so every check in
:mod:`kedge.audit.checks` is a pure function of them and can be tested by building a
``Facts`` by hand. ``None`` consistently means "this subject is not present" (the check
then SKIPs with that reason), which is different from "present and wrong".
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any


@dataclasses.dataclass(frozen=True)
class FileStat:
    path: str
    exists: bool
    mode: int | None = None  # permission bits only
    uid: int | None = None
    is_dir: bool = False
    is_symlink: bool = False


@dataclasses.dataclass(frozen=True)
class CertInfo:
    """A parsed certificate; ``error`` set when it could not be read or parsed."""

    name: str
    path: str
    error: str | None = None
    subject_cn: str | None = None
    subject_o: tuple[str, ...] = ()
    not_before: dt.datetime | None = None
    not_after: dt.datetime | None = None
    key_type: str | None = None  # "ec" | "rsa" | "ed25519" | "ed448" | "dsa" | other
    key_bits: int | None = None
    curve: str | None = None
    sans: tuple[str, ...] = ()  # "dns:name" / "ip:addr"
    is_ca: bool = False
    key_cert_sign: bool = False
    eku: tuple[str, ...] = ()  # dotted OIDs
    signed_by_ca: bool | None = None  # None: no CA to check against


@dataclasses.dataclass(frozen=True)
class CrlInfo:
    path: str
    exists: bool
    error: str | None = None
    signed_by_ca: bool | None = None
    next_update: dt.datetime | None = None
    revoked: int = 0


@dataclasses.dataclass(frozen=True)
class TokenRow:
    token_id: str
    secret_hash: str | None
    created_at: float | None = None
    expires_at: float | None = None
    used: bool | None = None


@dataclasses.dataclass(frozen=True)
class TokenFacts:
    """Rows of the ``tokens`` table (bounded), or why they could not be read."""

    db_path: str
    error: str | None = None
    rows: tuple[TokenRow, ...] = ()
    truncated: bool = False


@dataclasses.dataclass(frozen=True)
class PlaintextHit:
    """A token-looking string found in a file of the data directory."""

    path: str
    line: int
    kind: str  # "bootstrap-token" | "token-secret"


@dataclasses.dataclass(frozen=True)
class Binding:
    kind: str  # ClusterRoleBinding | RoleBinding
    name: str
    namespace: str | None
    role_kind: str
    role_name: str
    subjects: tuple[tuple[str, str], ...]  # (kind, name)
    path: str


@dataclasses.dataclass(frozen=True)
class RoleRules:
    kind: str  # ClusterRole | Role
    name: str
    namespace: str | None
    rules: tuple[tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]], ...]  # (apiGroups, resources, verbs)
    path: str


@dataclasses.dataclass(frozen=True)
class RbacFacts:
    source: str  # where the objects were read from
    bindings: tuple[Binding, ...] = ()
    roles: tuple[RoleRules, ...] = ()
    errors: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class MqttListener:
    port: int | None
    address: str | None  # None: all interfaces
    socket_path: str | None = None
    tls: bool = False
    require_certificate: bool = False
    allow_anonymous: bool | None = None  # None: not set (mosquitto 2 default false)
    acl_file: str | None = None
    password_file: str | None = None


@dataclasses.dataclass(frozen=True)
class MqttFacts:
    conf_path: str
    error: str | None = None
    listeners: tuple[MqttListener, ...] = ()
    global_allow_anonymous: bool | None = None
    global_acl_file: str | None = None
    per_listener_settings: bool = False


@dataclasses.dataclass(frozen=True)
class SystemdUnitFacts:
    """An installed ``kedge-cloudcore.service``/``kedge-edgecore.service`` and its drop-ins.

    ``files`` are ``(path, text)``: the unit file, then its ``<unit>.d/*.conf`` drop-ins in
    the order systemd applies them. ``exposure`` is ``systemd-analyze security``'s score
    (None with ``analyze_error`` saying why: not installed, failed).
    """

    path: str
    files: tuple[tuple[str, str], ...] = ()
    error: str | None = None  # the unit (or a drop-in) could not be read
    exposure: float | None = None
    analyze_error: str | None = None


@dataclasses.dataclass(frozen=True)
class CloudFacts:
    root: str
    service_uid: int | None
    dirs: tuple[FileStat, ...]
    key_files: tuple[FileStat, ...]
    kubeconfig: FileStat
    state_db: FileStat
    audit_log: FileStat | None
    config: dict[str, Any] | None
    config_error: str | None
    ca: CertInfo | None
    certs: tuple[CertInfo, ...]
    crl: CrlInfo
    tokens: TokenFacts | None  # None: no state.db
    plaintext_hits: tuple[PlaintextHit, ...]
    rbac: RbacFacts | None  # None: no RBAC objects to read yet
    config_path: str = ""
    api_db: FileStat | None = None  # the embedded API server's store (None: not checked)
    secrets_at_rest: "SecretsAtRest | None" = None  # None: no api.db to look into
    extra_logs: tuple[FileStat, ...] = ()  # other audit logs (API server)
    # The installed systemd unit; None: none found (or not looked for).
    systemd_unit: SystemdUnitFacts | None = None
    systemd_dirs: tuple[str, ...] = ()  # where it was looked for


@dataclasses.dataclass(frozen=True)
class SecretsAtRest:
    """What ``api.db`` holds for Secrets: rows sealed (``k8s:enc:aesgcm:v1:``) and rows in plaintext."""

    db_path: str
    config: FileStat  # DIR/pki/encryption.json
    sealed: int = 0
    plain: int = 0
    error: str | None = None


@dataclasses.dataclass(frozen=True)
class EdgeFacts:
    root: str
    service_uid: int | None
    dirs: tuple[FileStat, ...]
    node_key: FileStat
    edge_db: FileStat
    edge_key: FileStat
    config: dict[str, Any] | None
    config_error: str | None
    node_cert: CertInfo | None
    ca: CertInfo | None
    mqtt: MqttFacts | None  # None: no mosquitto config (devices not set up)
    config_path: str = ""
    # MQTT credentials edgecore uses: its own broker's and client's (EDGEDIR/pki/mqtt-*), or
    # those configured for an operator's broker (config mqtt_broker). Empty: none on disk.
    mqtt_keys: tuple[FileStat, ...] = ()
    mqtt_certs: tuple[CertInfo, ...] = ()
    mqtt_external: bool = False
    systemd_unit: SystemdUnitFacts | None = None  # as CloudFacts'
    systemd_dirs: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class ProbeFacts:
    """What a live probe of one listener learnt.

    Each protocol/cipher field is "accepted", "refused", "unavailable" (this Python's
    OpenSSL would not even offer it) or "n/a" (not tried).
    """

    url: str
    role: str  # "hub" | "certs" | "api" | "mqtt" | "unknown"
    error: str | None = None  # the probe could not run (connection refused, timeout)
    not_running: bool = False  # error is "refused on loopback" for an endpoint from endpoints.json
    versions: tuple[tuple[str, str], ...] = ()
    tls12_cbc: str = "n/a"
    tls12_non_ecdhe: str = "n/a"
    no_client_cert: str = "n/a"
    peer_cert: CertInfo | None = None
    host: str = ""
    anonymous_status: int | None = None
    anonymous_detail: str = "n/a"
    oversized: str = "n/a"  # "413" | "closed" | "accepted:<code>" | "refused-early:<code>" | "n/a"
    unauthenticated_csr: int | None = None  # status for POST /edge.crt without token or cert
    plaintext: str = "n/a"  # mqtt: "accepted" if a clear-text CONNECT got a CONNACK, else "refused"

    def version(self, name: str) -> str:
        return dict(self.versions).get(name, "n/a")


@dataclasses.dataclass(frozen=True)
class Facts:
    now: dt.datetime
    version: str
    oldest_supported: str
    cloud: CloudFacts | None = None
    edge: EdgeFacts | None = None
    probes: tuple[ProbeFacts, ...] = ()

    def __post_init__(self) -> None:
        if self.now.tzinfo is None:
            raise ValueError("now must be timezone-aware")
