"""The device CA: ``DIR/pki/device-ca.crt`` / ``device-ca.key`` in the *cloud* data dir.

A CA of its own, separate from the cluster CA, so a device credential can never be a
node or admin credential (the API server and CloudHub trust only the cluster CA) and
a node credential is never accepted by an edge broker (mosquitto trusts only this CA).
Created on first use, key 0600 from creation, never overwritten.

It issues:
- device client certificates, CN ``device:<ns>/<name>`` (``kedge device credentials``);
- per edge node, on the node's request over its authenticated tunnel and for keys the
  node generated itself (two CSRs): the broker's server certificate (SAN 127.0.0.1,
  localhost) and edgecore's MQTT client certificate (CN ``edgecore:<node>``; the node
  name comes from the tunnel certificate). No private key is made here or sent.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from kedge._internal import fsutil
from kedge.edge.broker import admin_username, device_username
from kedge.errors import StateError
from kedge.pki import ca as pki

DEVICE_CA_CRT = "device-ca.crt"
DEVICE_CA_KEY = "device-ca.key"
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
    return {
        "ca": pki.cert_to_pem(ca_cert).decode(),  # type: ignore[arg-type]
        "serverCert": pki.cert_to_pem(scert).decode(),
        "clientCert": pki.cert_to_pem(ccert).decode(),
    }
