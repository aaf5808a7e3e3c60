"""The edge data directory. Imports nothing heavy: edgecore must stay small."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from kedge._internal import fsutil, migrate
from kedge.errors import ConfigError, StateError

# config.json's "schema_version" (kedge._internal.migrate); absent: 1, the first release's
# format. 2: the same keys, with the version recorded.
CONFIG_SCHEMA_VERSION = 2
_CONFIG_MIGRATIONS = {1: lambda data: data}


def _render(data: dict[str, Any]) -> bytes:
    """config.json's bytes: the version first, then the settings."""
    return (json.dumps({migrate.CONFIG_VERSION_KEY: CONFIG_SCHEMA_VERSION, **data}, indent=2) + "\n").encode()


@dataclasses.dataclass(frozen=True)
class EdgeConfig:
    node_name: str
    certs: str  # https://H:P of the certificate endpoint
    hub: str  # wss://H:P of CloudHub
    keepalive_interval_s: float = 15.0
    limits: dict[str, Any] = dataclasses.field(default_factory=dict)
    # An operator's MQTT broker instead of the mosquitto edgecore runs: {"url": "mqtts://H:P",
    # "ca": file, "cert": file, "key": file} (edgecore's client identity there). Checked live
    # at every start (kedge.edge.brokercheck); device management stays off if it falls short.
    mqtt_broker: dict[str, str] | None = None
    # The uids/gids pods run as, one (or a requested one) per pod: "FIRST-LAST", inclusive,
    # within 65536..2147483646 (kedge.edge.edged.ids). Ids of local accounts and of
    # /etc/subuid, /etc/subgid ranges inside it are skipped.
    pod_uid_range: str = "200000-265535"

    @classmethod
    def from_dict(cls, data: Any) -> "EdgeConfig":
        if not isinstance(data, dict):
            raise ConfigError("edge config.json must hold a JSON object")
        # A file from a newer kedge is refused (schema_too_new) before its keys are judged.
        values, _ = migrate.migrate_dict(data, CONFIG_SCHEMA_VERSION, _CONFIG_MIGRATIONS, what="edge config.json")
        del values[migrate.CONFIG_VERSION_KEY]
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ConfigError(f"unknown keys in edge config.json: {sorted(unknown)}")
        try:
            cfg = cls(**values)
        except TypeError as exc:
            raise ConfigError(f"invalid edge config: {exc}") from exc
        if not all(isinstance(v, str) for v in (cfg.node_name, cfg.certs, cfg.hub)) or not cfg.node_name:
            raise ConfigError("edge config: node_name, certs and hub must be non-empty strings")
        if not cfg.certs.startswith("https://") or not cfg.hub.startswith("wss://"):
            raise ConfigError("edge config: certs must be https:// and hub wss://")
        k = cfg.keepalive_interval_s
        if not isinstance(k, (int, float)) or isinstance(k, bool) or not 0 < k < float("inf"):
            raise ConfigError("edge config: keepalive_interval_s must be a positive number")
        _check_limits(cfg.limits)
        if cfg.mqtt_broker is not None:
            check_mqtt_broker(cfg.mqtt_broker)
        check_pod_uid_range(cfg.pod_uid_range)
        return cfg

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


MQTT_BROKER_KEYS = ("url", "ca", "cert", "key")


def check_pod_uid_range(raw: Any) -> None:
    """``pod_uid_range`` parses strictly (decimal ``FIRST-LAST``, no root, system or human ids)."""
    from kedge.edge.edged.ids import parse_id_range

    try:
        parse_id_range(raw)
    except ValueError as exc:
        raise ConfigError(f"edge config: pod_uid_range: {exc}") from exc


def check_mqtt_broker(raw: Any) -> None:
    """An external broker: ``mqtts://HOST:PORT`` (TLS only) and absolute paths of edgecore's
    CA, certificate and key files there."""
    from urllib.parse import urlsplit

    if not isinstance(raw, dict) or set(raw) != set(MQTT_BROKER_KEYS) \
            or not all(isinstance(v, str) and v for v in raw.values()):
        raise ConfigError(f"edge config: mqtt_broker must be an object with exactly {list(MQTT_BROKER_KEYS)} (strings)")
    try:
        u = urlsplit(raw["url"])
        port = u.port
    except ValueError as exc:
        raise ConfigError("edge config: mqtt_broker.url is not a URL") from exc
    if u.scheme != "mqtts" or not u.hostname or not port or u.path not in ("", "/") or u.query or u.username:
        raise ConfigError("edge config: mqtt_broker.url must be mqtts://HOST:PORT (TLS only)")
    for name in ("ca", "cert", "key"):
        if not raw[name].startswith("/") or "\n" in raw[name]:
            raise ConfigError(f"edge config: mqtt_broker.{name} must be an absolute path")


def _check_limits(raw: Any) -> None:
    """The ``limits`` object must build the Limits edge.hub makes of it (``Limits(**limits)``)."""
    from kedge.limits import DEFAULT, Limits

    if not isinstance(raw, dict):
        raise ConfigError("edge config: limits must be an object")
    for name, value in raw.items():
        if isinstance(value, float) and (not 0 < value < float("inf") or isinstance(getattr(DEFAULT, name, 0), int)):
            raise ConfigError(f"edge config: limit {name} must be a positive finite number (an integer for counts)")
    try:
        Limits(**raw)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"edge config: invalid limits: {exc}") from exc


class EdgeDir:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.pki = self.root / "pki"
        self.ca_crt = self.pki / "ca.crt"
        self.node_crt = self.pki / "node.crt"
        self.node_key = self.pki / "node.key"
        self.next_crt = self.pki / "node.crt.next"
        self.next_key = self.pki / "node.key.next"
        self.config = self.root / "config.json"
        self.db = self.root / "edge.db"
        self.endpoints = self.root / "endpoints.json"

    def load_config(self) -> EdgeConfig:
        if not self.config.exists() or not self.node_crt.exists():
            raise StateError(f"{self.root} holds no joined node (run `kedge join`)", code="not_joined")
        try:
            data = fsutil.read_json(self.config)
        except RecursionError as exc:  # json's C decoder: nesting deeper than the recursion limit
            raise StateError(f"{self.config} is not valid JSON", code="corrupt_state") from exc
        cfg = EdgeConfig.from_dict(data)
        # Valid (and not from a newer kedge): an older file is backed up and rewritten at this version.
        migrate.upgrade_json_file(self.config, data, CONFIG_SCHEMA_VERSION, _CONFIG_MIGRATIONS, render=_render,
                                  mode=fsutil.PUBLIC_FILE)
        return cfg

    def save_config(self, cfg: EdgeConfig) -> None:
        fsutil.atomic_write(self.config, _render(cfg.to_dict()))

    def install_identity(self, key_pem: bytes, cert_pem: bytes) -> None:
        """Replace node.key/node.crt as a pair, recoverably.

        Both are written to ``*.next`` first; then the key, then the certificate, are
        renamed into place. :meth:`recover_identity` finishes an interrupted swap.
        """
        fsutil.write_private(self.next_key, key_pem)
        fsutil.atomic_write(self.next_crt, cert_pem)
        import os

        os.replace(self.next_key, self.node_key)
        os.replace(self.next_crt, self.node_crt)

    def recover_identity(self) -> None:
        import os

        if self.next_crt.exists() and not self.next_key.exists():
            # The key was already moved into place: finish with the certificate.
            os.replace(self.next_crt, self.node_crt)
        elif self.next_key.exists():
            # Interrupted before the key moved: the old pair is intact; drop the half-written new one.
            for p in (self.next_key, self.next_crt):
                try:
                    p.unlink()
                except FileNotFoundError:
                    pass
