"""Run an audit: gather facts (I/O), evaluate every catalogue check (pure), apply waivers."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path
from typing import Iterable, Sequence

from kedge import __version__
from kedge.audit import catalogue as catalogue_mod
from kedge.audit import gather, probe, waivers as waivers_mod
from kedge.audit.catalogue import Catalogue
from kedge.audit.checks import REGISTRY
from kedge.audit.facts import Facts
from kedge.audit.model import Outcome, Report, Result, Status, Waiver
from kedge.errors import ConfigError
from kedge.systemd.policy import CLOUD, EDGE, UNIT_NAMES


def evaluate(facts: Facts, cat: Catalogue, waivers: Iterable[Waiver] = (),
             targets: Sequence[tuple[str, str]] = ()) -> Report:
    """Pure: one result per catalogue check, in catalogue order, waivers applied."""
    ids = [c.id for c in cat.checks]
    missing = sorted(set(ids) - set(REGISTRY))
    extra = sorted(set(REGISTRY) - set(ids))
    if missing or extra:
        raise ConfigError(f"catalogue and check code disagree: no code for {missing}, not catalogued {extra}",
                          code="bad_catalogue")
    results = []
    for c in cat.checks:
        try:
            outcome = REGISTRY[c.id](facts)
        except Exception as exc:  # a broken check must show up, never pass silently
            outcome = Outcome(Status.ERROR, "check runs", f"check crashed: {type(exc).__name__}")
        results.append(Result(check=c, outcome=outcome))
    applied = waivers_mod.apply(results, waivers, facts.now)
    return Report(results=applied, generated_at=facts.now.isoformat(timespec="seconds"),
                  version=facts.version, targets=tuple(targets))


def default_targets(data_dir: str | Path | None) -> list[probe.Target]:
    """Every listener ``DIR/endpoints.json`` names, with its role."""
    if data_dir is None:
        return []
    data, err = gather.read_json_config(Path(data_dir) / "endpoints.json")
    if err:
        raise ConfigError(f"{data_dir}/endpoints.json: {err}", code="bad_endpoints")
    out = []
    for role in ("api", "hub", "certs"):
        url = (data or {}).get(role)
        if isinstance(url, str) and url:
            out.append(dataclasses.replace(probe.Target.parse(url, role=role), explicit=False))
    return out


def edge_targets(edge_data_dir: str | Path | None) -> list[probe.Target]:
    """The MQTT broker ``EDGEDIR/endpoints.json`` names (edgecore writes it once mosquitto runs)."""
    if edge_data_dir is None or not (Path(edge_data_dir) / "endpoints.json").exists():
        return []
    data, err = gather.read_json_config(Path(edge_data_dir) / "endpoints.json")
    if err:
        raise ConfigError(f"{edge_data_dir}/endpoints.json: {err}", code="bad_endpoints")
    url = (data or {}).get("mqtt")
    if isinstance(url, str) and url:
        return [dataclasses.replace(probe.Target.parse(url, role="mqtt"), explicit=False)]
    return []


def resolve_targets(endpoints: Sequence[str], data_dir: str | Path | None,
                    edge_data_dir: str | Path | None = None) -> list[probe.Target]:
    known = {t.url: t.role for t in default_targets(data_dir)} if data_dir is not None else {}
    if not endpoints:
        return default_targets(data_dir) + edge_targets(edge_data_dir)
    out = []
    for text in endpoints:
        t = probe.Target.parse(text)
        if t.role in ("unknown", "hub") and t.url in known and "=" not in text.split("://", 1)[0]:
            t = probe.Target.parse(t.url, role=known[t.url])
        out.append(t)
    return out


def run_audit(
    *,
    data_dir: str | Path | None = None,
    edge_data_dir: str | Path | None = None,
    endpoints: Sequence[str] = (),
    waiver_file: str | Path | None = None,
    catalogue_path: str | Path | None = None,
    now: dt.datetime | None = None,
    probe_timeout: float = 3.0,
    systemd_dirs: Sequence[str] = (),
) -> Report:
    cat = catalogue_mod.load(catalogue_path)
    ws = waivers_mod.load(waiver_file) if waiver_file is not None else ()
    for d in systemd_dirs:
        if not Path(d).is_dir():
            raise ConfigError(f"--systemd-dir {d} is not a directory", code="no_such_dir")
    for d, flag in ((data_dir, "--data-dir"), (edge_data_dir, "--edge-data-dir")):
        if d is not None and not Path(d).is_dir():
            raise ConfigError(f"{flag} {d} is not a directory", code="no_such_dir")
        # A directory that holds neither config.json nor pki/ is a wrong path, not a
        # deployment with every check failing.
        if d is not None and not (Path(d) / "config.json").exists() and not (Path(d) / "pki").is_dir():
            raise ConfigError(f"{flag} {d} is not a kedge data directory (no config.json, no pki/)",
                              code="not_initialised")
    targets = resolve_targets(endpoints, data_dir, edge_data_dir)
    now = now or dt.datetime.now(dt.timezone.utc)
    cloud = gather.gather_cloud(data_dir) if data_dir is not None else None
    edge = gather.gather_edge(edge_data_dir) if edge_data_dir is not None else None
    # The installed units (kedge systemd), from --systemd-dir or where systemd looks for them.
    unit_dirs = tuple(str(d) for d in systemd_dirs) or gather.SYSTEMD_DIRS
    if cloud is not None:
        cloud = dataclasses.replace(cloud, systemd_dirs=unit_dirs,
                                    systemd_unit=gather.read_systemd_unit(UNIT_NAMES[CLOUD], unit_dirs))
    if edge is not None:
        edge = dataclasses.replace(edge, systemd_dirs=unit_dirs,
                                   systemd_unit=gather.read_systemd_unit(UNIT_NAMES[EDGE], unit_dirs))
    ca = None
    for root in (data_dir, edge_data_dir):
        if root is not None and ca is None:
            ca, _ = gather.load_cert(Path(root) / "pki" / "ca.crt")
    probes = tuple(probe.probe(t, ca=ca, timeout=probe_timeout) for t in targets)
    facts = Facts(now=now, version=__version__, oldest_supported=cat.oldest_supported,
                  cloud=cloud, edge=edge, probes=probes)
    listed: list[tuple[str, str]] = []
    if data_dir is not None:
        listed.append(("cloud", str(data_dir)))
    if edge_data_dir is not None:
        listed.append(("edge", str(edge_data_dir)))
    listed += [("endpoint", f"{t.role}={t.url}") for t in targets]
    return evaluate(facts, cat, ws, listed)
