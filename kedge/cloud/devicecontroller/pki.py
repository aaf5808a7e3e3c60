"""The device CA: ``DIR/pki/device-ca.crt`` / ``device-ca.key`` in the *cloud* data dir.

A CA of its own, separate from the cluster CA, so a device credential can never be a
node or admin credential (the API server and CloudHub trust only the cluster CA) and
a node credential is never accepted by an edge broker (mosquitto trusts only this CA).
Created on first use, key 0600 from creation, never overwritten.

Every certificate it issues is recorded in ``DIR/pki/device-certs.json`` (serial, CN,
expiry, issue time and -- for a node's pair -- the node; written atomically under a lock
file) so that it can be revoked: ``kedge device revoke`` marks a device's certificates
revoked, ``kedge node revoke`` a node's MQTT pairs (:func:`revoke_node_certs`), and every
MQTT certificate bundle a node receives carries a CRL of the device CA built from that
record (``crl``), valid as long as the bundle's certificates, which the node's mosquitto
enforces (``crlfile``).

A node's MQTT pairs are bounded (:func:`pair_refusal`, a pure decision on the record): at most
``Limits.device_cert_pairs_per_hour`` issued in any hour, and at most
``Limits.device_cert_pairs_per_node`` unexpired pairs on record (valid or superseded); a pair
issued to a node supersedes (revokes) every older pair of that node except the one just before
it -- the pair its broker may still be running with until the new one is installed. So a node
holds at most two valid pairs, and its share of the record and of the CRL every edge downloads
stays bounded. The whole record is bounded too (``DEVICE_CA_MAX_RECORDS``; expired entries are
dropped ``KEEP_EXPIRED`` after expiry).

It issues:
- device client certificates, CN ``device:<ns>/<name>`` (``kedge device credentials``);
- per edge node, on the node's request over its authenticated tunnel and for keys the
  node generated itself (two CSRs): the broker's server certificate (SAN 127.0.0.1,
  localhost) and edgecore's MQTT client certificate (CN ``edgecore:<node>``; the node
  name comes from the tunnel certificate). No private key is made here or sent.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from kedge._internal import fsutil
from kedge.edge.broker import admin_username, device_username
from kedge.errors import RateLimited, StateError
from kedge.limits import DEFAULT, DEVICE_CA_MAX_RECORDS, Limits
from kedge.pki import ca as pki

DEVICE_CA_CRT = "device-ca.crt"
DEVICE_CA_KEY = "device-ca.key"
DEVICE_CERTS = "device-certs.json"
DEVICE_LOCK = ".device-ca.lock"
KEEP_EXPIRED = dt.timedelta(days=7)  # an expired certificate's record is dropped this long after
DEVICE_CERT_VALIDITY = dt.timedelta(days=365)
BROKER_CERT_VALIDITY = dt.timedelta(days=90)
PAIR_WINDOW = dt.timedelta(hours=1)  # the window Limits.device_cert_pairs_per_hour counts in
# Why an entry was revoked (kept in the record; a node revocation does not count against the
# node's pair budget, so a node that was revoked and re-joined starts afresh).
SUPERSEDED, NODE_REVOKED, DEVICE_REVOKED = "superseded", "node_revoked", "device_revoked"


def _paths(data_dir: str | Path) -> tuple[Path, Path]:
    d = Path(data_dir) / "pki"
    return d / DEVICE_CA_CRT, d / DEVICE_CA_KEY


def ensure_device_ca(data_dir: str | Path, *, now: dt.datetime) -> tuple[object, object]:
    """Load the device CA, creating it on first use (the key first, exclusively, 0600)."""
    crt, key = _paths(data_dir)
    if not crt.parent.is_dir():
        raise StateError(f"{data_dir} is not an initialised cloud data dir (run `kedge init`)", code="not_initialised")
    if not key.exists():
        ca_key, ca_cert = pki.create_ca("kedge device CA", now=now)
        try:
            fsutil.create_exclusive(key, pki.key_to_pem(ca_key))
        except StateError:
            pass  # another process created it first: use theirs
        else:
            fsutil.atomic_write(crt, pki.cert_to_pem(ca_cert))
    if not crt.exists():
        raise StateError(f"{key} exists without {crt}; restore it or remove both", code="corrupt_state")
    return pki.load_key_file(key), pki.load_cert_file(crt)


@contextlib.contextmanager
def _locked(data_dir: str | Path) -> Iterator[Path]:
    """The device CA's record, held exclusively (cloudcore and the CLI both write it)."""
    d = Path(data_dir) / "pki"
    fd = os.open(d / DEVICE_LOCK, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield d / DEVICE_CERTS
    finally:
        os.close(fd)


def _load_record(path: Path) -> dict[str, dict[str, Any]]:
    data = fsutil.read_json(path, {})
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise StateError(f"{path} is not a device certificate record", code="corrupt_state")
    return data


def _save_record(path: Path, record: dict[str, dict[str, Any]]) -> None:
    fsutil.write_private(path, (json.dumps(record, sort_keys=True, separators=(",", ":")) + "\n").encode())


def _drop_expired(record: dict[str, dict[str, Any]], now: dt.datetime) -> None:
    for serial in [s for s, e in record.items() if dt.datetime.fromisoformat(e["not_after"]) < now - KEEP_EXPIRED]:
        del record[serial]


def _entry(cert: x509.Certificate, *, now: dt.datetime, node: str | None = None) -> dict[str, Any]:
    cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    entry: dict[str, Any] = {"cn": str(cn), "not_after": cert.not_valid_after_utc.isoformat(),
                             "issued_at": now.isoformat(), "revoked_at": None}
    if node is not None:
        entry["node"] = node
    return entry


def _broker_cn(node: str) -> str:
    return f"mqtt-broker:{node}"[:64]


def _of_node(entry: dict[str, Any], node: str) -> bool:
    """Whether ``entry`` is one of ``node``'s MQTT pair. Entries recorded before they named their
    node are matched by CN: edgecore's (unique per node), or the broker's when not shortened."""
    if "node" in entry:
        return bool(entry["node"] == node)
    cn = entry.get("cn")
    return cn == admin_username(node) or (cn == f"mqtt-broker:{node}" and len(cn) <= 64)


def _pair_key(entry: dict[str, Any]) -> tuple[int, dt.datetime]:
    """Issue order of a node's pairs: both certificates of a pair share it; entries recorded
    before issue times were (ordered by expiry) come before every dated one."""
    issued = entry.get("issued_at")
    if isinstance(issued, str):
        return (1, dt.datetime.fromisoformat(issued))
    return (0, dt.datetime.fromisoformat(entry["not_after"]))


def pair_refusal(record: dict[str, dict[str, Any]], node: str, *, now: dt.datetime,
                 per_hour: int, per_node: int, max_records: int | None = None) -> str | None:
    """Why ``node`` may not be issued another MQTT pair now (a refusal code), or None.

    ``device_certs_rate_limited``: ``per_hour`` pairs were issued to it within the last hour.
    ``device_certs_exhausted``: it has ``per_node`` unexpired pairs on record, valid or
    superseded (entries revoked with the node do not count: a revoked node that re-joins starts
    afresh). ``device_ca_full``: the record holds ``max_records`` (``DEVICE_CA_MAX_RECORDS``)
    entries. ``record`` must have
    had its expired entries dropped. Pure: reads no clock, no file."""
    mine = [e for e in record.values() if _of_node(e, node)]
    recent = {key for key in map(_pair_key, mine) if key[0] == 1 and key[1] > now - PAIR_WINDOW}
    if len(recent) >= per_hour:
        return "device_certs_rate_limited"
    held = {_pair_key(e) for e in mine
            if e.get("reason") != NODE_REVOKED and dt.datetime.fromisoformat(e["not_after"]) > now}
    if len(held) >= per_node:
        return "device_certs_exhausted"
    if len(record) + 2 > (DEVICE_CA_MAX_RECORDS if max_records is None else max_records):
        return "device_ca_full"
    return None


def supersede(record: dict[str, dict[str, Any]], node: str, new: set[str], *, now: dt.datetime) -> list[str]:
    """Revoke ``node``'s valid MQTT pairs older than the newest one before ``new`` (the serials
    just issued): that one may be what its broker runs with until the new pair is installed.
    Returns the serials revoked. Pure."""
    valid = [(s, e) for s, e in record.items() if s not in new and e.get("revoked_at") is None and _of_node(e, node)]
    if not valid:
        return []
    keep = max(_pair_key(e) for _, e in valid)
    revoked = []
    for serial, entry in valid:
        if _pair_key(entry) < keep:
            entry.update(revoked_at=now.isoformat(), reason=SUPERSEDED)
            revoked.append(serial)
    return revoked


def _record(data_dir: str | Path, certs: list[x509.Certificate], *, now: dt.datetime) -> None:
    with _locked(data_dir) as path:
        record = _load_record(path)
        _drop_expired(record, now)
        if len(record) + len(certs) > DEVICE_CA_MAX_RECORDS:
            raise RateLimited("the device CA's certificate record is full", code="device_ca_full")
        for cert in certs:
            record[format(cert.serial_number, "x")] = _entry(cert, now=now)
        _save_record(path, record)


def revoke_device(data_dir: str | Path, ns: str, name: str, *, now: dt.datetime) -> int:
    """Mark every certificate of device ``ns/name`` revoked; the number newly revoked. Nodes
    get the new CRL with their next certificate bundle or CRL refresh (``devicecrl``)."""
    cn = device_username(ns, name)
    with _locked(data_dir) as path:
        record = _load_record(path)
        count = 0
        for entry in record.values():
            if entry.get("cn") == cn and entry.get("revoked_at") is None:
                entry.update(revoked_at=now.isoformat(), reason=DEVICE_REVOKED)
                count += 1
        _save_record(path, record)
    return count


def revoke_node_certs(data_dir: str | Path, node: str, *, now: dt.datetime) -> list[int]:
    """Mark every MQTT certificate issued to ``node`` (its broker's and edgecore's) revoked;
    the serials newly revoked. ``kedge node revoke`` calls this after revoking the node in the
    cloud state; edges get the new CRL with their next CRL refresh (``devicecrl``)."""
    if not (Path(data_dir) / "pki" / DEVICE_CERTS).exists():
        return []  # no device CA record yet: nothing was ever issued
    with _locked(data_dir) as path:
        record = _load_record(path)
        serials = []
        for serial, entry in record.items():
            if _of_node(entry, node) and entry.get("revoked_at") is None:
                entry.update(revoked_at=now.isoformat(), reason=NODE_REVOKED)
                serials.append(int(serial, 16))
        if serials:
            _save_record(path, record)
    return serials


def _crl_pem(ca_key: object, ca_cert: object, record: dict[str, dict[str, Any]], *, now: dt.datetime,
             lifetime: dt.timedelta) -> str:
    revoked = [(int(serial, 16), dt.datetime.fromisoformat(e["revoked_at"]))
               for serial, e in record.items() if e.get("revoked_at")]
    crl = pki.build_crl(ca_key, ca_cert, revoked, now=now, next_update=lifetime)  # type: ignore[arg-type]
    return crl.public_bytes(serialization.Encoding.PEM).decode()


def device_crl_pem(data_dir: str | Path, *, now: dt.datetime, lifetime: dt.timedelta) -> str:
    """A CRL of the device CA listing every revoked device certificate, valid for ``lifetime``."""
    ca_key, ca_cert = ensure_device_ca(data_dir, now=now)
    with _locked(data_dir) as path:
        record = _load_record(path)
    return _crl_pem(ca_key, ca_cert, record, now=now, lifetime=lifetime)


def device_ca_pem(data_dir: str | Path, *, now: dt.datetime) -> bytes:
    _, cert = ensure_device_ca(data_dir, now=now)
    return pki.cert_to_pem(cert)  # type: ignore[arg-type]


def issue_device_credentials(data_dir: str | Path, ns: str, name: str, *,
                             now: dt.datetime) -> tuple[bytes, bytes, bytes]:
    """(cert PEM, key PEM, CA PEM) for device ``ns/name``."""
    ca_key, ca_cert = ensure_device_ca(data_dir, now=now)
    key, cert = pki.issue_client_cert(ca_key, ca_cert, common_name=device_username(ns, name),  # type: ignore[arg-type]
                                      organizations=["kedge:devices"], now=now, validity=DEVICE_CERT_VALIDITY)
    assert key is not None  # nosec B101 - issue_client_cert generates a key when none is given
    _record(data_dir, [cert], now=now)  # type: ignore[list-item]
    return pki.cert_to_pem(cert), pki.key_to_pem(key), pki.cert_to_pem(ca_cert)  # type: ignore[arg-type]


def issue_broker_certs(data_dir: str | Path, node: str, server_csr: bytes, client_csr: bytes, *,
                       now: dt.datetime, validity: dt.timedelta = BROKER_CERT_VALIDITY,
                       limits: Limits = DEFAULT) -> dict[str, str]:
    """Certificates for node ``node``'s broker (server) and edgecore's MQTT client, for the
    keys in the node's two CSRs -- the keys never leave the edge. Each CSR must prove
    possession of an accepted key (:func:`kedge.pki.ca.check_node_csr`: bounded PEM, SHA-2
    self-signature, EC P-256/P-384 or RSA 2048+); the two keys must differ. Names come from
    the tunnel's node identity, never from the CSRs. Returns PEM strings ``ca``,
    ``serverCert``, ``clientCert`` and the device CRL ``crl`` (which lists the pairs this one
    superseded). Refusals are :class:`kedge.pki.ca.CsrError`, or ``RateLimited`` with the code
    of :func:`pair_refusal`; the pair budget is checked, the pair recorded and older pairs
    superseded under one hold of the record's lock, so concurrent requests cannot overrun it."""
    server_pub = pki.check_node_csr(server_csr)
    client_pub = pki.check_node_csr(client_csr)
    if server_pub == client_pub:
        raise pki.CsrError("the broker and the client need keys of their own", code="csr_key_reused")
    ca_key, ca_cert = ensure_device_ca(data_dir, now=now)
    with _locked(data_dir) as path:
        record = _load_record(path)
        _drop_expired(record, now)
        refusal = pair_refusal(record, node, now=now, per_hour=limits.device_cert_pairs_per_hour,
                               per_node=limits.device_cert_pairs_per_node)
        if refusal is not None:
            raise RateLimited("no more MQTT certificates for this node now", code=refusal)
        _, scert = pki.issue_server_cert(ca_key, ca_cert, common_name=_broker_cn(node),  # type: ignore[arg-type]
                                         sans=["127.0.0.1", "localhost"], now=now, validity=validity,
                                         public_key=server_pub)
        _, ccert = pki.issue_client_cert(ca_key, ca_cert, common_name=admin_username(node),  # type: ignore[arg-type]
                                         organizations=["kedge:edgecore"], now=now, validity=validity,
                                         public_key=client_pub)
        new = {format(c.serial_number, "x"): _entry(c, now=now, node=node) for c in (scert, ccert)}
        record.update(new)
        supersede(record, node, set(new), now=now)
        _save_record(path, record)
        crl = _crl_pem(ca_key, ca_cert, record, now=now, lifetime=validity)
    return {
        "ca": pki.cert_to_pem(ca_cert).decode(),  # type: ignore[arg-type]
        "serverCert": pki.cert_to_pem(scert).decode(),
        "clientCert": pki.cert_to_pem(ccert).decode(),
        # Valid as long as these certificates: the broker never outlives its CRL.
        "crl": crl,
    }
