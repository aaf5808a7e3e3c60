"""``kedge ca rotate | finish | status``: replace the cluster CA without downtime.

Layout (``DIR/pki``; :mod:`kedge.cloud.trust` reads it):

- ``ca.crt`` keeps meaning "the cluster CA": it is the **trust bundle**, the CA that issues
  now first. Outside a rotation it is one certificate, as always; during one it is the new CA
  followed by the previous one, so every verifier that loads the file (the API server, CloudHub,
  the certificate endpoint, kubectl through ``admin.kubeconfig``, cloudcore's own client) trusts
  both without knowing about rotation. Code that reads "the CA" as the first certificate of the
  file gets the issuing CA, which ``ca.key`` belongs to.
- ``ca-cross.crt`` (rotation only): the new CA certified by the old key and the old CA by the
  new key -- what edges check a bundle against (:func:`kedge.pki.rotation.accept_bundle`).
- ``ca-previous.crt`` (rotation only): the previous CA, for ``status``.
- ``rotation.json``: the phase and fingerprints (:class:`kedge.pki.rotation.RotationRecord`).

``rotate``: a new CA (key 0600 from creation), the bundle, cross-certificates, the admin and
cloudcore client certificates re-certified by the new CA (same keys), the CRL re-signed by it,
``admin.kubeconfig`` with the bundle. From then on node certificates are issued by the new CA
(renewals and joins); cloudcore pushes the bundle to every edge over its tunnel, and with
``--renew-now`` asks edges still on the old CA to renew at once. The serving certificate stays
from the old CA: an edge that was offline trusts only the old CA until it connects again.

``finish``: refused (listing them) while any node's newest valid certificate is not from the
new CA -- a node only accepts such a certificate after it accepted the bundle, so then every
node trusts the new CA. It re-certifies the serving key by the new CA, waits until the running
endpoints present it, then drops the old CA: ``ca.crt`` holds the new CA alone, the cross and
previous files go, ``admin.kubeconfig`` trusts the new CA only. Running servers reload; the
old CA's certificates are refused at the handshake (and on tunnels and API connections that
outlive it); cloudcore pushes the one-CA bundle to the edges.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import socket
import ssl
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml
from cryptography import x509

from kedge import tls
from kedge._internal import fsutil
from kedge.cloud import trust as trust_files
from kedge.cloud.config import CloudDir
from kedge.cloud.init import ADMIN_GROUPS, ADMIN_USER, CLOUDCORE_GROUPS, CLOUDCORE_USER, write_kubeconfig
from kedge.cloud.state import CloudState
from kedge.errors import StateError
from kedge.pki import ca as pki
from kedge.pki import crl as crl_mod
from kedge.pki.rotation import RotationRecord, ca_name, cross_certify

log = logging.getLogger(__name__)

CA_VALIDITY = dt.timedelta(days=3650)
CLIENT_VALIDITY = dt.timedelta(days=365)
SERVER_VALIDITY = dt.timedelta(days=365)
FINISH_WAIT_S = 20.0  # how long finish waits for running endpoints to present the new certificate


class NodesOnPreviousCA(StateError):
    """``finish`` refused: these nodes' newest valid certificates are not from the new CA."""

    code = "nodes_on_previous_ca"

    def __init__(self, nodes: list[str]) -> None:
        super().__init__("nodes still on the previous CA: " + ", ".join(nodes))
        self.nodes = nodes


def _iso(when: dt.datetime) -> str:
    return when.astimezone(dt.timezone.utc).isoformat()


def _save_record(d: CloudDir, rec: RotationRecord) -> None:
    fsutil.atomic_write(trust_files.rotation_path(d), (json.dumps(rec.to_dict(), indent=2) + "\n").encode())


def _kubeconfig_server(d: CloudDir) -> str | None:
    try:
        doc = yaml.safe_load(fsutil.read_bounded(d.kubeconfig, 1024 * 1024))
        return str(doc["clusters"][0]["cluster"]["server"])
    except (OSError, fsutil.FileTooLarge, yaml.YAMLError, KeyError, IndexError, TypeError):
        return None


def _rewrite_kubeconfig(d: CloudDir) -> None:
    server = _kubeconfig_server(d)
    if server is not None and d.admin_key.exists():
        write_kubeconfig(d, server)


def _recertify_client(d: CloudDir, key_path: Path, crt_path: Path, user: str, groups: tuple[str, ...],
                      ca_key: pki.PrivateKey, ca_cert: x509.Certificate, now: dt.datetime) -> None:
    """A new certificate for the key in ``key_path`` (unchanged: the pair never mismatches on disk)."""
    if not key_path.exists():
        return
    key = pki.load_key_file(key_path)
    _, cert = pki.issue_client_cert(ca_key, ca_cert, common_name=user, organizations=groups, now=now,
                                    validity=CLIENT_VALIDITY, public_key=key.public_key())
    fsutil.atomic_write(crt_path, pki.cert_to_pem(cert))


def _resign_crl(d: CloudDir, ca_key: pki.PrivateKey, ca_cert: x509.Certificate, now: dt.datetime) -> None:
    with CloudState(d.state_db) as state:
        crl_mod.write_crl(d.crl, ca_key, ca_cert, state.revoked_serials(now=now), now=now)


def _complete_swap(d: CloudDir) -> None:
    """Install a next CA left in ``ca-next.*`` (idempotent; finishes a rotate that was cut short).

    Order: the bundle first (the new CA is trusted before anything it signs is handed out),
    then the key. Readers that see the two out of step keep their previous view
    (:class:`kedge.cloud.trust.ClusterTrust`)."""
    next_key, next_crt = d.pki / trust_files.NEXT_KEY_FILE, d.pki / trust_files.NEXT_CRT_FILE
    if not next_key.exists():
        return
    new = pki.load_cert_file(next_crt)
    previous = pki.load_cert_file(d.pki / trust_files.PREVIOUS_FILE)
    pki._check_ca_pair(pki.load_key_file(next_key), new)
    fsutil.atomic_write(d.ca_crt, pki.cert_to_pem(new) + pki.cert_to_pem(previous))
    os.replace(next_key, d.ca_key)  # 0600 since its creation
    fsutil.fsync_dir(d.pki)
    next_crt.unlink(missing_ok=True)


def rotate(d: CloudDir, *, now: dt.datetime, renew_now: bool = False) -> RotationRecord:
    """Start a CA rotation (or, during one, ask again for immediate renewals with ``renew_now``)."""
    d.load_config()
    rec = trust_files.load_record(d)
    if rec.phase == "rotating":
        _complete_swap(d)
        if not renew_now:
            raise StateError("a CA rotation is already in progress: run `kedge ca finish` once every node "
                             "holds a certificate of the new CA (`kedge ca status`)", code="rotation_in_progress")
        rec = RotationRecord(**dict(rec.to_dict(), renew_now=True, renew_requested=rec.renew_requested + 1))
        _save_record(d, rec)
        return rec
    bundle = pki.load_cert_bundle_file(d.ca_crt)
    if len(bundle) != 1:
        raise StateError(f"{d.ca_crt} holds {len(bundle)} CAs outside a rotation", code="corrupt_state")
    old_cert, old_key = bundle[0], pki.load_key_file(d.ca_key)
    pki._check_ca_pair(old_key, old_cert)
    new_key, new_cert = pki.create_ca(ca_name(old_cert), now=now, validity=CA_VALIDITY)
    cross = cross_certify(old_key, old_cert, new_cert, now=now), cross_certify(new_key, new_cert, old_cert, now=now)

    next_key = d.pki / trust_files.NEXT_KEY_FILE
    next_key.unlink(missing_ok=True)  # a next CA never installed (rotate failed before the record)
    fsutil.create_exclusive(next_key, pki.key_to_pem(new_key), mode=fsutil.PRIVATE_FILE)
    fsutil.atomic_write(d.pki / trust_files.NEXT_CRT_FILE, pki.cert_to_pem(new_cert))
    fsutil.atomic_write(d.pki / trust_files.PREVIOUS_FILE, pki.cert_to_pem(old_cert))
    fsutil.atomic_write(trust_files.cross_path(d), b"".join(pki.cert_to_pem(c) for c in cross))
    rec = RotationRecord(phase="rotating", current=pki.ca_fingerprint(new_cert),
                         previous=pki.ca_fingerprint(old_cert), started_at=_iso(now), renew_now=renew_now,
                         renew_requested=1 if renew_now else 0)
    _save_record(d, rec)
    _complete_swap(d)

    for key_path, crt_path, user, groups in ((d.admin_key, d.admin_crt, ADMIN_USER, ADMIN_GROUPS),
                                             (d.cloudcore_key, d.cloudcore_crt, CLOUDCORE_USER, CLOUDCORE_GROUPS)):
        _recertify_client(d, key_path, crt_path, user, groups, new_key, new_cert, now)
    _resign_crl(d, new_key, new_cert, now)
    _rewrite_kubeconfig(d)
    log.info("CA rotation started: %s -> %s", rec.previous[:16], rec.current[:16])
    return rec


def nodes_on_previous_ca(d: CloudDir, current_fp: str, *, now: dt.datetime) -> list[str]:
    """Nodes whose newest valid certificate (``state.db``) is not from the CA ``current_fp``."""
    with CloudState(d.state_db) as state:
        newest = state.newest_cert_issuers(now=now)
    return sorted(node for node, issuer in newest.items() if issuer != current_fp)


def _server_sans(cert: x509.Certificate) -> list[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return ["127.0.0.1", "localhost"]
    return [str(v) for v in san.get_values_for_type(x509.IPAddress)] + san.get_values_for_type(x509.DNSName)


def _endpoint_switched(url: str, ctx: ssl.SSLContext) -> bool | None:
    """True if the endpoint presents a certificate ``ctx`` verifies, False if it presents another,
    None if nothing answers there (not running)."""
    parts = urlsplit(url)
    host, port = parts.hostname, parts.port
    if not host or not port:
        return None
    try:
        with socket.create_connection((host, port), timeout=2.0) as sock:
            with ctx.wrap_socket(sock, server_hostname=host):
                return True
    except ssl.SSLCertVerificationError:
        return False
    except (OSError, ssl.SSLError):
        return None


def wait_for_endpoints(d: CloudDir, ca_cert: x509.Certificate, *, timeout_s: float = FINISH_WAIT_S) -> list[str]:
    """Wait until every running endpoint in ``endpoints.json`` presents a certificate of ``ca_cert``;
    the URLs still presenting another one after ``timeout_s`` (empty: all switched)."""
    try:
        endpoints = fsutil.read_json(d.endpoints) or {}
    except (OSError, ValueError):
        endpoints = {}
    ctx = tls.client_context(cadata=pki.cert_to_pem(ca_cert).decode(),
                             cert=d.admin_crt if d.admin_crt.exists() else None,
                             key=d.admin_key if d.admin_key.exists() else None)
    pending = [u for u in (endpoints.get(k) for k in ("api", "hub", "certs")) if isinstance(u, str)]
    deadline = time.monotonic() + timeout_s
    while True:
        pending = [u for u in pending if _endpoint_switched(u, ctx) is False]
        if not pending or time.monotonic() >= deadline:
            return pending
        time.sleep(0.2)


def finish(d: CloudDir, *, now: dt.datetime, wait_s: float = FINISH_WAIT_S) -> RotationRecord:
    """Drop the previous CA once every node holds a certificate of the new one."""
    d.load_config()
    rec = trust_files.load_record(d)
    if rec.phase != "rotating":
        raise StateError("no CA rotation in progress (`kedge ca rotate` starts one)", code="not_rotating")
    _complete_swap(d)
    pending = nodes_on_previous_ca(d, rec.current, now=now)
    if pending:
        raise NodesOnPreviousCA(pending)
    new_cert, new_key = pki.load_cert_file(d.ca_crt), pki.load_key_file(d.ca_key)
    if pki.ca_fingerprint(new_cert) != rec.current:
        raise StateError(f"{d.ca_crt} does not start with the CA the rotation record names", code="corrupt_state")

    # 1. The serving certificate from the new CA (same key), while both CAs are still trusted.
    hub = pki.load_cert_file(d.hub_crt)
    cn = hub.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    _, served = pki.issue_server_cert(new_key, new_cert, common_name=str(cn[0].value) if cn else "kedge-cloudhub",
                                      sans=_server_sans(hub), now=now, validity=SERVER_VALIDITY,
                                      public_key=pki.load_key_file(d.hub_key).public_key())
    fsutil.atomic_write(d.hub_crt, pki.cert_to_pem(served))
    stale = wait_for_endpoints(d, new_cert, timeout_s=wait_s)
    if stale:
        raise StateError("still presenting the previous CA's certificate: " + ", ".join(stale) +
                         " (is that server reloading pki/hub.crt? run `kedge ca finish` again)",
                         code="endpoint_not_switched")

    # 2. Drop the previous CA.
    fsutil.atomic_write(d.ca_crt, pki.cert_to_pem(new_cert))
    done = RotationRecord(phase="finished", current=rec.current, started_at=rec.started_at, finished_at=_iso(now))
    _save_record(d, done)
    for name in (trust_files.CROSS_FILE, trust_files.PREVIOUS_FILE):
        (d.pki / name).unlink(missing_ok=True)
    _resign_crl(d, new_key, new_cert, now)
    _rewrite_kubeconfig(d)
    log.info("CA rotation finished: only %s is trusted", rec.current[:16])
    return done


def _ca_info(cert: x509.Certificate) -> dict[str, str]:
    cn = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    return {"fingerprint": pki.ca_fingerprint(cert), "subject": str(cn[0].value) if cn else "",
            "not_after": _iso(cert.not_valid_after_utc)}


def status(d: CloudDir, *, now: dt.datetime) -> dict[str, Any]:
    """Phase, the CAs with fingerprints and expiry, and the nodes still on the previous CA."""
    d.load_config()
    rec = trust_files.load_record(d)
    bundle = pki.load_cert_bundle_file(d.ca_crt)
    out: dict[str, Any] = {"phase": rec.phase, "current": _ca_info(bundle[0]), "previous": None,
                           "started_at": rec.started_at or None, "finished_at": rec.finished_at or None,
                           "renew_now": rec.renew_now, "nodes_on_previous_ca": []}
    if rec.phase == "rotating":
        prev = d.pki / trust_files.PREVIOUS_FILE
        if prev.exists():
            out["previous"] = _ca_info(pki.load_cert_file(prev))
        out["nodes_on_previous_ca"] = nodes_on_previous_ca(d, rec.current, now=now)
    return out
