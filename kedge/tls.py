"""The only place in kedge that builds an ``ssl.SSLContext``.

Defaults: TLS 1.3 minimum, certificate verification on, hostname/identity checked.
TLS 1.2 is available only by explicit configuration and then only with ECDHE key
exchange and AEAD ciphers.
"""

from __future__ import annotations

import logging
import ssl
from pathlib import Path

log = logging.getLogger(__name__)

# ECDHE key exchange with AEAD bulk ciphers only (used when TLS 1.2 is allowed).
TLS12_AEAD_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"


def _base(purpose: ssl.Purpose, allow_tls12: bool) -> ssl.SSLContext:
    ctx = ssl.create_default_context(purpose)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2 if allow_tls12 else ssl.TLSVersion.TLSv1_3
    ctx.maximum_version = ssl.TLSVersion.TLSv1_3
    ctx.set_ciphers(TLS12_AEAD_CIPHERS)
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    return ctx


def server_context(
    cert: str | Path,
    key: str | Path,
    client_ca: str | Path | None,
    *,
    client_cert: str = "required",
    allow_tls12: bool = False,
) -> ssl.SSLContext:
    """Server-side context.

    ``client_cert`` is ``"required"`` (the hub), ``"optional"`` (the certificate
    endpoint: bootstrap has no client certificate yet, renewal presents one) or
    ``"none"``. A presented certificate is always verified against ``client_ca``.
    """
    ctx = _base(ssl.Purpose.CLIENT_AUTH, allow_tls12)
    ctx.load_cert_chain(str(cert), str(key))
    if client_cert not in ("required", "optional", "none"):
        raise ValueError(f"client_cert must be required|optional|none, not {client_cert!r}")
    if client_cert != "none":
        if client_ca is None:
            raise ValueError("client certificate verification needs a CA")
        ctx.load_verify_locations(cafile=str(client_ca))
        ctx.verify_mode = ssl.CERT_REQUIRED if client_cert == "required" else ssl.CERT_OPTIONAL
    return ctx


def client_context(
    ca: str | Path | None = None,
    cert: str | Path | None = None,
    key: str | Path | None = None,
    *,
    cadata: str | None = None,
    allow_tls12: bool = False,
) -> ssl.SSLContext:
    """Client-side context that trusts only ``ca`` (or ``cadata``) and checks the host name."""
    if ca is None and cadata is None:
        raise ValueError("a client context needs a pinned CA")
    ctx = _base(ssl.Purpose.SERVER_AUTH, allow_tls12)
    # Trust only the pinned cluster CA, never the system store.
    ctx.load_verify_locations(cafile=str(ca) if ca else None, cadata=cadata)
    ctx.check_hostname = True
    ctx.verify_mode = ssl.CERT_REQUIRED
    if cert is not None:
        ctx.load_cert_chain(str(cert), str(key) if key else None)
    return ctx


def unsafe_discovery_context() -> ssl.SSLContext:
    """Context for fetching ``/ca.crt`` *before* the CA is known (kubeadm-style discovery).

    The server is not authenticated by TLS here; the body is authenticated afterwards by
    comparing its SHA-256 with the pin carried in the bootstrap token, and nothing secret
    is sent on this connection. Every other connection uses :func:`client_context`.
    """
    log.info("unsafe discovery context: fetching the cluster CA before pin verification")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # nosec B501 - body is pinned by hash afterwards (see docstring)
    return ctx
