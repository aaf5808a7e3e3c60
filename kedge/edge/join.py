"""``kedge join``: discover and pin the cluster CA, then bootstrap this node's identity."""

from __future__ import annotations

import datetime as dt
import hmac
import logging
from pathlib import Path

from cryptography import x509

from kedge import tls
from kedge._internal import fsutil, httpclient
from kedge.edge.config import EdgeConfig, EdgeDir
from kedge.errors import ConfigError, PeerError, StateError, VerificationError
from kedge.pki import ca as pki
from kedge.pki import tokens

log = logging.getLogger(__name__)


def parse_cloud(cloud: str) -> str:
    """``HOST:PORT`` (or ``[v6]:PORT``, or a full https URL) -> base URL."""
    if cloud.startswith("https://"):
        return cloud.rstrip("/")
    host, sep, port = cloud.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"--cloud must be HOST:PORT, got {cloud!r}", code="bad_cloud_address")
    return f"https://{host}:{port}"


def fetch_pinned_ca(base: str, ca_hash: str) -> bytes:
    """Fetch ``/ca.crt`` and accept it only if it holds the CA whose SHA-256 the token pins.

    During a CA rotation ``/ca.crt`` is a bundle of two CAs (the issuing one first); the token
    pins one of them, and the other is accepted only if ``/ca-cross.crt`` holds a
    cross-certificate by which the pinned CA's key vouches for it
    (:func:`kedge.pki.rotation.accept_bundle`). Returns the PEM to pin."""
    from kedge.pki.rotation import accept_bundle_pem

    data = httpclient.request(base + "/ca.crt", tls.unsafe_discovery_context())
    try:
        bundle = pki.load_cert_bundle_pem(data)
    except Exception as exc:  # noqa: BLE001 - any parse failure means "not our CA"
        raise VerificationError("the cloud sent no valid CA certificate", code="ca_invalid") from exc
    pinned = [ca for ca in bundle if hmac.compare_digest(pki.ca_fingerprint(ca), ca_hash)]
    if not pinned:
        got = pki.ca_fingerprint(bundle[0])
        raise VerificationError(
            f"the cloud's CA (sha256 {got}) does not match the token's pin {ca_hash}; refusing to join",
            code="ca_pin_mismatch")
    pinned_pem = pki.cert_to_pem(pinned[0])
    if len(bundle) == 1:
        return pinned_pem
    # Unauthenticated like /ca.crt (the server's certificate may be the other CA's): each
    # cross-certificate is checked against the pinned CA's key instead.
    cross = httpclient.request(base + "/ca-cross.crt", tls.unsafe_discovery_context())
    return accept_bundle_pem(pinned_pem, b"".join(pki.cert_to_pem(c) for c in bundle), cross,
                          now=dt.datetime.now(dt.timezone.utc))


def join(*, cloud: str, token: str, node: str, edge_dir: str | Path,
         mqtt_broker: dict[str, str] | None = None) -> EdgeConfig:
    node = pki.validate_node_name(node)
    if mqtt_broker is not None:
        from kedge.edge.config import check_mqtt_broker

        check_mqtt_broker(mqtt_broker)  # before the token is spent
    tok = tokens.parse_token(token)
    base = parse_cloud(cloud)
    d = EdgeDir(edge_dir)
    if d.config.exists():
        existing = EdgeConfig.from_dict(fsutil.read_json(d.config))
        if existing.node_name != node:
            raise StateError(f"{d.root} already belongs to node {existing.node_name!r}", code="exists")
    ca_pem = fetch_pinned_ca(base, tok.ca_hash)
    # From here on the server is authenticated by the pinned CA.
    ctx = tls.client_context(cadata=ca_pem.decode())
    key = pki.generate_key()
    csr = pki.make_csr(key, node)
    try:
        resp = httpclient.request_json(
            base + "/edge.crt", ctx, method="POST", body=csr,
            headers={"Authorization": f"Bearer {tokens.format_token(tok)}",
                     "Content-Type": "application/pkcs10", tokens.NODE_HEADER: node})
    except httpclient.HTTPError as exc:
        raise PeerError(f"the cloud refused to join node {node}: {exc.code}", code=exc.code) from exc
    cert = check_issued(resp, ca_pem, key, node)
    hub = resp.get("hub")
    if not isinstance(hub, str) or not hub.startswith("wss://"):
        raise PeerError("the cloud did not say where its hub is", code="bad_response")
    fsutil.make_private_dir(d.root)
    fsutil.make_private_dir(d.pki)
    fsutil.atomic_write(d.ca_crt, ca_pem)
    d.install_identity(pki.key_to_pem(key), pki.cert_to_pem(cert))
    cfg = EdgeConfig(node_name=node, certs=base, hub=hub, mqtt_broker=mqtt_broker)
    d.save_config(cfg)
    log.info("joined as node %s (certificate valid until %s)", node, cert.not_valid_after_utc.isoformat())
    return cfg


def check_issued(resp, ca_pem: bytes, key, node: str) -> x509.Certificate:
    """Check what the cloud issued: signed by the pinned CA, for our key and our node."""
    if not isinstance(resp, dict) or not isinstance(resp.get("certificate"), str):
        raise PeerError("malformed certificate response", code="bad_response")
    from kedge.pki.rotation import issuer_of

    cert = pki.load_cert_pem(resp["certificate"].encode())
    if issuer_of(cert, pki.load_cert_bundle_pem(ca_pem)) is None:  # the pinned CA, or a CA of its bundle
        raise VerificationError("issued certificate is not signed by the pinned CA", code="bad_certificate")
    if cert.public_key().public_numbers() != key.public_key().public_numbers():
        raise VerificationError("issued certificate is not for our key", code="bad_certificate")
    issued_for = pki.node_name_from_cert(cert)
    if issued_for != node:
        raise PeerError(f"the token is for node {issued_for!r}, not {node!r}", code="token_node_mismatch")
    return cert
