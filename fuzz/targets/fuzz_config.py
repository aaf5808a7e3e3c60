"""Fuzz configuration loading: ``config.json`` of the cloud and of the edge data dirs.

cloudcore and edgecore read ``DIR/config.json`` at start (``CloudDir.load_config``,
``EdgeDir.load_config``). The file is local, but it is written by hand, by scripts and
by older versions; a config that loads must be one the process can run with, and a bad
one must be refused with a clear, stable error -- not a traceback from deep inside the
start-up code (``TypeError`` from ``Limits(**limits)``, ``AttributeError`` from
``certs.startswith``...).

Invariant: each loader returns its config or raises ``ConfigError`` / ``StateError``
with a documented code (``config_error``, ``not_implemented``, ``corrupt_state``) --
nothing else, not even for 3000 nested brackets. And a config that loads:

* has every field of its declared type (ints are ints, not booleans; strings are
  strings; ``advertise_addresses`` a non-empty tuple of strings; ``limits`` an object);
* builds its ``Limits`` (edge: as ``edge.hub`` does, ``Limits(**cfg.limits)``), every
  limit positive and finite, counts (int defaults) ints -- no NaN timeout, no 1.5 items;
* survives ``to_dict`` -> JSON -> ``from_dict`` unchanged;
* (edge) has ``certs`` ``https://...`` and ``hub`` ``wss://...``, a non-empty node name
  and a positive finite keepalive interval; (cloud) node authorization ``enforce``.

Input layout: the bytes are the file, written to ``config.json`` of a throw-away cloud
and edge data dir (created once per process under the temp dir; the only disk this
target touches) and loaded through both loaders.

Not covered yet: ``endpoints.json`` (read by ``kedge audit`` and by the device twin at
edge start) -- see ``fuzz/README.md``.

Run: ``fuzz/run.sh config 60``
"""

from __future__ import annotations

import atexit
import dataclasses
import json
import math
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

try:
    import kedge  # noqa: F401
except ImportError:  # running as a script from a checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from kedge.cloud.config import CloudConfig, CloudDir
from kedge.edge.config import EdgeConfig, EdgeDir
from kedge.errors import ConfigError, StateError
from kedge.limits import DEFAULT as DEFAULT_LIMITS
from kedge.limits import Limits

MAX_BYTES = 64 * 1024
CODES = {"config_error", "not_implemented", "corrupt_state"}
_dirs: tuple[CloudDir, EdgeDir] | None = None


def _require(ok: bool, what: str) -> None:
    """Like assert, but survives ``python -O``: a violated invariant is a crash."""
    if not ok:
        raise AssertionError(what)


def _data_dirs() -> tuple[CloudDir, EdgeDir]:
    global _dirs
    if _dirs is None:
        shm = "/dev/shm"  # noqa: S108 - a private mkdtemp inside it; memory-backed keeps exec/s up
        base = shm if os.path.isdir(shm) and os.access(shm, os.W_OK) else None
        root = Path(tempfile.mkdtemp(prefix="kedge-fuzz-config-", dir=base))
        atexit.register(shutil.rmtree, root, True)
        cloud, edge = CloudDir(root / "cloud"), EdgeDir(root / "edge")
        cloud.pki.mkdir(parents=True)
        edge.pki.mkdir(parents=True)
        cloud.ca_crt.write_bytes(b"placeholder: load_config only checks that it exists\n")
        edge.node_crt.write_bytes(b"placeholder: load_config only checks that it exists\n")
        _dirs = (cloud, edge)
    return _dirs


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _check_limits(limits: Any) -> None:
    _require(isinstance(limits, Limits), "limits did not build")
    for f in dataclasses.fields(Limits):
        value, default = getattr(limits, f.name), getattr(DEFAULT_LIMITS, f.name)
        _require(value > 0 and (not isinstance(value, float) or math.isfinite(value)), f"limit {f.name} = {value!r}")
        if isinstance(default, int):
            _require(_is_int(value), f"limit {f.name} (a count) = {value!r}")


def _check_cloud(cfg: CloudConfig, cloud: CloudDir) -> None:
    _require(isinstance(cfg.advertise_addresses, tuple) and len(cfg.advertise_addresses) > 0
             and all(isinstance(a, str) for a in cfg.advertise_addresses), "advertise_addresses")
    for name in ("api_port", "hub_port", "cert_port", "node_cert_validity_s", "token_default_ttl_s",
                 "node_monitor_grace_s"):
        _require(_is_int(getattr(cfg, name)), f"{name} is not an int: {getattr(cfg, name)!r}")
    for name in ("bind_address", "audit_log"):
        _require(isinstance(getattr(cfg, name), str), f"{name} is not a string")
    for name in ("allow_tls12", "evict_pods_on_node_lost"):
        _require(isinstance(getattr(cfg, name), bool), f"{name} is not a boolean")
    _require(cfg.node_authorization == "enforce", "node authorization is not enforced")
    _require(isinstance(cfg.limits, dict), "limits is not an object")
    _check_limits(cfg.build_limits())
    _require(isinstance(cloud.audit_log_path(cfg), Path), "audit_log_path")
    again = CloudConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    _require(again == cfg, "cloud config does not round-trip")


def _check_edge(cfg: EdgeConfig) -> None:
    for name in ("node_name", "certs", "hub"):
        _require(isinstance(getattr(cfg, name), str), f"{name} is not a string")
    _require(bool(cfg.node_name), "empty node name")
    _require(cfg.certs.startswith("https://") and cfg.hub.startswith("wss://"), "endpoint schemes")
    k = cfg.keepalive_interval_s
    _require(isinstance(k, (int, float)) and not isinstance(k, bool) and math.isfinite(k) and k > 0,
             f"keepalive_interval_s {k!r}")
    _require(isinstance(cfg.limits, dict), "limits is not an object")
    _check_limits(Limits(**cfg.limits))
    again = EdgeConfig.from_dict(json.loads(json.dumps(dataclasses.asdict(cfg))))
    _require(again == cfg, "edge config does not round-trip")


def test_one_input(data: bytes) -> None:
    """One fuzz iteration; raises only if the invariant in the module docstring breaks."""
    if len(data) > MAX_BYTES:
        return
    cloud, edge = _data_dirs()
    cloud.config.write_bytes(data)
    edge.config.write_bytes(data)
    try:
        ccfg = cloud.load_config()
    except (ConfigError, StateError) as exc:
        _require(exc.code in CODES, f"cloud: undocumented code {exc.code}")
    else:
        _check_cloud(ccfg, cloud)
    try:
        ecfg = edge.load_config()
    except (ConfigError, StateError) as exc:
        _require(exc.code in CODES, f"edge: undocumented code {exc.code}")
    else:
        _check_edge(ecfg)


def main() -> None:
    import atheris  # lazily: replaying the corpus in the test suite must not need it

    atheris.instrument_all()
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
