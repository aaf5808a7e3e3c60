"""The cloud data directory: paths and ``config.json``."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

from kedge._internal import fsutil, migrate
from kedge.errors import ConfigError, StateError
from kedge.limits import DEFAULT as DEFAULT_LIMITS
from kedge.limits import Limits

NODE_AUTHZ_MODES = ("enforce",)
POD_SECURITY_LEVELS = ("privileged", "baseline", "restricted")  # kedge.apiserver.podsecurity.LEVELS
MIN_MQTT_CERT_VALIDITY_S = 45
# The key file that seals Secrets at rest in api.db (kedge.store.sealing), under pki/; written by
# `kedge init`, read by the API server.
ENCRYPTION_CONFIG = "encryption.json"
# config.json's "schema_version" (kedge._internal.migrate); absent: 1, the first release's
# format. 2: the same keys, with the version recorded.
CONFIG_SCHEMA_VERSION = 2
_CONFIG_MIGRATIONS = {1: lambda data: data}


def _render(data: dict[str, Any]) -> bytes:
    """config.json's bytes: the version first, then the settings."""
    return (json.dumps({migrate.CONFIG_VERSION_KEY: CONFIG_SCHEMA_VERSION, **data}, indent=2) + "\n").encode()


@dataclasses.dataclass(frozen=True)
class CloudConfig:
    advertise_addresses: tuple[str, ...] = ("127.0.0.1",)
    api_port: int = 6443
    hub_port: int = 10000
    cert_port: int = 10002
    bind_address: str = "127.0.0.1"
    allow_tls12: bool = False
    node_cert_validity_s: int = 30 * 24 * 3600
    # Edge MQTT broker/client certificates from the device CA; edges renew them in time.
    mqtt_cert_validity_s: int = 90 * 24 * 3600
    token_default_ttl_s: int = 15 * 60
    node_authorization: str = "enforce"
    audit_log: str = "audit.log"
    evict_pods_on_node_lost: bool = False
    # A node whose status heartbeat is older than this is marked Ready=Unknown (its pods stay).
    node_monitor_grace_s: int = 40
    # Pod Security Standards level enforced in namespaces without a pod-security.kubernetes.io/enforce
    # label (`kedge init --pod-security`): privileged, baseline or restricted.
    pod_security: str = "baseline"
    limits: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.advertise_addresses:
            raise ConfigError("advertise_addresses must not be empty")
        for port in (self.api_port, self.hub_port, self.cert_port):
            if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
                raise ConfigError(f"invalid port {port!r}")
        if not all(isinstance(a, str) for a in self.advertise_addresses):
            raise ConfigError("advertise_addresses must be a list of strings")
        for name in ("bind_address", "audit_log", "node_authorization", "pod_security"):
            if not isinstance(getattr(self, name), str):
                raise ConfigError(f"{name} must be a string")
        for name in ("allow_tls12", "evict_pods_on_node_lost"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be true or false")
        for name in ("node_cert_validity_s", "mqtt_cert_validity_s", "token_default_ttl_s", "node_monitor_grace_s"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{name} must be a positive integer")
        if self.mqtt_cert_validity_s < MIN_MQTT_CERT_VALIDITY_S:
            # Certificates are back-dated by a minute for clock skew; edges renew a third of the
            # lifetime before expiry: anything shorter would be due again as soon as issued.
            raise ConfigError(f"mqtt_cert_validity_s must be at least {MIN_MQTT_CERT_VALIDITY_S}")
        if not isinstance(self.limits, dict):
            raise ConfigError("limits must be an object")
        if self.evict_pods_on_node_lost:
            raise ConfigError("evict_pods_on_node_lost is not implemented: kedge keeps pods of lost nodes "
                              "(edge autonomy)", code="not_implemented")
        if self.pod_security not in POD_SECURITY_LEVELS:
            raise ConfigError(f"pod_security must be one of {', '.join(POD_SECURITY_LEVELS)}, "
                              f"not {self.pod_security!r}")
        if self.node_authorization not in NODE_AUTHZ_MODES:
            # Node authorization cannot be switched off; a config that asks for it is refused.
            raise ConfigError(
                f"node_authorization must be one of {NODE_AUTHZ_MODES}, not {self.node_authorization!r}"
            )
        self.build_limits()

    def build_limits(self) -> Limits:
        known = {f.name for f in dataclasses.fields(Limits)}
        unknown = set(self.limits) - known
        if unknown:
            raise ConfigError(f"unknown limits in config: {sorted(unknown)}")
        for name, value in self.limits.items():
            # Limits accepts any positive number; a config may not say NaN, Infinity or 1.5 items.
            if isinstance(value, float) and not math.isfinite(value):
                raise ConfigError(f"invalid limits: {name} must be finite")
            if isinstance(value, float) and isinstance(getattr(DEFAULT_LIMITS, name), int):
                raise ConfigError(f"invalid limits: {name} must be an integer")
        try:
            return Limits(**self.limits)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"invalid limits: {exc}") from exc

    @classmethod
    def from_dict(cls, data: Any) -> "CloudConfig":
        if not isinstance(data, dict):
            raise ConfigError("config.json must hold a JSON object")
        # A file from a newer kedge is refused (schema_too_new) before its keys are judged.
        values, _ = migrate.migrate_dict(data, CONFIG_SCHEMA_VERSION, _CONFIG_MIGRATIONS, what="config.json")
        del values[migrate.CONFIG_VERSION_KEY]
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ConfigError(f"unknown keys in config.json: {sorted(unknown)}")
        if "advertise_addresses" in values:
            if not isinstance(values["advertise_addresses"], list):
                raise ConfigError("advertise_addresses must be a list of strings")
            values["advertise_addresses"] = tuple(values["advertise_addresses"])
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["advertise_addresses"] = list(self.advertise_addresses)
        return d


class CloudDir:
    """Paths inside a cloud data directory (see DESIGN.md)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.pki = self.root / "pki"
        self.ca_crt = self.pki / "ca.crt"
        self.ca_key = self.pki / "ca.key"
        self.hub_crt = self.pki / "hub.crt"
        self.hub_key = self.pki / "hub.key"
        self.admin_crt = self.pki / "admin.crt"
        self.admin_key = self.pki / "admin.key"
        self.cloudcore_crt = self.pki / "cloudcore.crt"
        self.cloudcore_key = self.pki / "cloudcore.key"
        self.crl = self.pki / "crl.pem"
        self.config = self.root / "config.json"
        self.state_db = self.root / "state.db"
        self.endpoints = self.root / "endpoints.json"
        self.kubeconfig = self.root / "admin.kubeconfig"
        self.connected = self.root / "connected.json"

    def load_config(self) -> CloudConfig:
        if not self.ca_crt.exists() or not self.config.exists():
            raise StateError(f"{self.root} is not an initialised kedge data dir (run `kedge init`)",
                             code="not_initialised")
        try:
            data = fsutil.read_json(self.config)
        except RecursionError as exc:  # json's C decoder: nesting deeper than the recursion limit
            raise StateError(f"{self.config} is not valid JSON", code="corrupt_state") from exc
        cfg = CloudConfig.from_dict(data)
        # Valid (and not from a newer kedge): an older file is backed up and rewritten at this version.
        migrate.upgrade_json_file(self.config, data, CONFIG_SCHEMA_VERSION, _CONFIG_MIGRATIONS, render=_render,
                                  mode=fsutil.PRIVATE_FILE)
        return cfg

    def save_config(self, cfg: CloudConfig) -> None:
        fsutil.atomic_write(self.config, _render(cfg.to_dict()), mode=fsutil.PRIVATE_FILE)

    def audit_log_path(self, cfg: CloudConfig) -> Path:
        p = Path(cfg.audit_log)
        return p if p.is_absolute() else self.root / p
