"""The device CA: ``DIR/pki/device-ca.crt`` / ``device-ca.key`` in the *cloud* data dir.

A CA of its own, separate from the cluster CA, so a device credential can never be a
node or admin credential (the API server and CloudHub trust only the cluster CA) and
a node credential is never accepted by an edge broker (mosquitto trusts only this CA).
Created on first use, key 0600 from creation, never overwritten.

Every certificate it issues is recorded in ``DIR/pki/device-certs.json`` (serial, CN,
expiry; written atomically under a lock file) so that it can be revoked: ``kedge device
revoke`` marks a device's certificates revoked, and every MQTT certificate bundle a node
receives carries a CRL of the device CA built from that record (``crl``), valid as long as
the bundle's certificates, which the node's mosquitto enforces (``crlfile``).

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
from kedge.errors import StateError
from kedge.pki import ca as pki

DEVICE_CA_CRT = "device-ca.crt"
DEVICE_CA_KEY = "device-ca.key"
DEVICE_CERTS = "device-certs.json"
DEVICE_LOCK = ".device-ca.lock"
KEEP_EXPIRED = dt.timedelta(days=7)  # an expired certificate's record is dropped this long after
DEVICE_CERT_VALIDITY = dt.timedelta(days=365)
BROKER_CERT_VALIDITY = dt.timedelta(days=90)


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


def _record(data_dir: str | Path, certs: list[x509.Certificate], *, now: dt.datetime) -> None:
    with _locked(data_dir) as path:
        record = _load_record(path)
        for serial in [s for s, e in record.items() if dt.datetime.fromisoformat(e["not_after"]) < now - KEEP_EXPIRED]:
            del record[serial]
        for cert in certs:
            cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
            record[format(cert.serial_number, "x")] = {"cn": str(cn), "not_after": cert.not_valid_after_utc.isoformat(),
                                                       "revoked_at": None}
        fsutil.write_private(path, (json.dumps(record, indent=1, sort_keys=True) + "\n").encode())


def revoke_device(data_dir: str | Path, ns: str, name: str, *, now: dt.datetime) -> int:
    """Mark every certificate of device ``ns/name`` revoked; the number newly revoked. Nodes
    get the new CRL with their next certificate bundle or CRL refresh (``devicecrl``)."""
    cn = device_username(ns, name)
    with _locked(data_dir) as path:
        record = _load_record(path)
        count = 0
        for entry in record.values():
            if entry.get("cn") == cn and entry.get("revoked_at") is None:
                entry["revoked_at"] = now.isoformat()
                count += 1
        fsutil.write_private(path, (json.dumps(record, indent=1, sort_keys=True) + "\n").encode())
    return count


def device_crl_pem(data_dir: str | Path, *, now: dt.datetime, lifetime: dt.timedelta) -> str:
    """A CRL of the device CA listing every revoked device certificate, valid for ``lifetime``."""
    ca_key, ca_cert = ensure_device_ca(data_dir, now=now)
    with _locked(data_dir) as path:
        record = _load_record(path)
    revoked = [(int(serial, 16), dt.datetime.fromisoformat(e["revoked_at"]))
               for serial, e in record.items() if e.get("revoked_at")]
    crl = pki.build_crl(ca_key, ca_cert, revoked, now=now, next_update=lifetime)  # type: ignore[arg-type]
    return crl.public_bytes(serialization.Encoding.PEM).decode()


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
                       now: dt.datetime, validity: dt.timedelta = BROKER_CERT_VALIDITY) -> dict[str, str]:
    """Certificates for node ``node``'s broker (server) and edgecore's MQTT client, for the
    keys in the node's two CSRs -- the keys never leave the edge. Each CSR must prove
    possession of an accepted key (:func:`kedge.pki.ca.check_node_csr`: bounded PEM, SHA-2
    self-signature, EC P-256/P-384 or RSA 2048+); the two keys must differ. Names come from
    the tunnel's node identity, never from the CSRs. Returns PEM strings ``ca``,
    ``serverCert``, ``clientCert``. Refusals are :class:`kedge.pki.ca.CsrError`."""
    server_pub = pki.check_node_csr(server_csr)
    client_pub = pki.check_node_csr(client_csr)
    if server_pub == client_pub:
        raise pki.CsrError("the broker and the client need keys of their own", code="csr_key_reused")
    ca_key, ca_cert = ensure_device_ca(data_dir, now=now)
    _, scert = pki.issue_server_cert(ca_key, ca_cert, common_name=f"mqtt-broker:{node}"[:64],  # type: ignore[arg-type]
                                     sans=["127.0.0.1", "localhost"], now=now, validity=validity,
                                     public_key=server_pub)
    _, ccert = pki.issue_client_cert(ca_key, ca_cert, common_name=admin_username(node),  # type: ignore[arg-type]
                                     organizations=["kedge:edgecore"], now=now, validity=validity,
                                     public_key=client_pub)
    _record(data_dir, [scert, ccert], now=now)
    return {
        "ca": pki.cert_to_pem(ca_cert).decode(),  # type: ignore[arg-type]
        "serverCert": pki.cert_to_pem(scert).decode(),
        "clientCert": pki.cert_to_pem(ccert).decode(),
        # Valid as long as these certificates: the broker never outlives its CRL.
        "crl": device_crl_pem(data_dir, now=now, lifetime=validity),
    }
