"""The only place in kedge that builds an ``ssl.SSLContext``.

Defaults: TLS 1.3 minimum, certificate verification on, hostname/identity checked.
TLS 1.2 is available only by explicit configuration and then only with ECDHE key
exchange and AEAD ciphers.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import logging
import ssl
from pathlib import Path
from typing import NamedTuple

from kedge._internal import fsutil
from kedge._internal.der import DerError, der_item, der_time
from kedge.errors import StateError

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


class ReloadingServerContext:
    """A server context that follows its files: certificate, key and client CA bundle.

    CA rotation (``kedge ca rotate|finish``) replaces ``pki/ca.crt`` (the trust bundle) and
    re-certifies the server key while cloudcore and the API server keep listening. A listening
    socket keeps the context it was created with, so :attr:`context` is a front whose SNI
    callback -- OpenSSL runs it for every ClientHello, with or without a server name -- puts
    the context built from the files' current contents on the connection (certificate, key and
    verify store all come from it). The files are ``stat``-ed per handshake and re-read only
    when one changed; if they do not load together (a rotation between two writes), the
    previous context stays and the next handshake tries again.

    No session tickets are issued: a resumed session skips certificate verification, so a
    session from before ``finish`` would outlive the CA it was verified against.
    """

    def __init__(
        self,
        cert: str | Path,
        key: str | Path,
        client_ca: str | Path | None,
        *,
        client_cert: str = "required",
        allow_tls12: bool = False,
    ) -> None:
        self._files = tuple(Path(p) for p in (cert, key, client_ca) if p is not None)
        self._build = lambda: self._no_tickets(server_context(cert, key, client_ca, client_cert=client_cert,
                                                              allow_tls12=allow_tls12))
        self._stamp = fsutil.file_stamp(self._files)
        self.current = self._build()
        self.reloads = 0
        self.context = self._build()
        self.context.sni_callback = self._pick

    @staticmethod
    def _no_tickets(ctx: ssl.SSLContext) -> ssl.SSLContext:
        ctx.num_tickets = 0
        ctx.options |= ssl.OP_NO_TICKET
        return ctx

    def refresh(self) -> bool:
        """Rebuild from the files if one changed; True if the context was replaced."""
        stamp = fsutil.file_stamp(self._files)
        if stamp == self._stamp:
            return False
        try:
            fresh = self._build()
        except (OSError, ssl.SSLError, ValueError) as exc:
            log.warning("TLS files %s do not load (%s); keeping the previous context",
                        ", ".join(map(str, self._files)), exc)
            return False
        self._stamp, self.current = stamp, fresh
        self.reloads += 1
        log.info("TLS server context reloaded from %s", ", ".join(map(str, self._files)))
        return True

    def _pick(self, sslobj: ssl.SSLObject | ssl.SSLSocket, server_name: str | None,
              ctx: ssl.SSLContext) -> int | None:
        try:
            self.refresh()
            sslobj.context = self.current
        except Exception:  # noqa: BLE001 - fail this handshake, never serve the front's stale trust
            log.exception("TLS context switch failed; refusing the handshake")
            return ssl.ALERT_DESCRIPTION_INTERNAL_ERROR
        return None


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


# -- validity of our own certificate files, without loading ``cryptography`` ----------
#
# A running edge only needs *when* its certificates expire (to renew on time); parsing
# them with ``cryptography`` would keep its ~8 MiB native module resident in every idle
# edgecore. These files were verified when installed (join/renewal check them with
# ``cryptography``) and OpenSSL parses them again whenever a context loads them; this
# reader only walks the DER to the validity field, strictly and within bounds.

MAX_CERT_FILE_BYTES = 64 * 1024
_PEM_BEGIN = b"-----BEGIN CERTIFICATE-----"
_PEM_END = b"-----END CERTIFICATE-----"


class CertValidity(NamedTuple):
    not_valid_before_utc: dt.datetime
    not_valid_after_utc: dt.datetime


class BadCertificateFile(StateError):
    """A certificate file of ours is missing, unreadable or not a well-formed X.509 certificate."""

    code = "bad_pem"


def cert_validity_der(der: bytes) -> CertValidity:
    """notBefore/notAfter of a DER X.509 certificate (Certificate -> TBSCertificate -> validity)."""
    try:
        return _cert_validity(der)
    except DerError as exc:
        raise BadCertificateFile(f"malformed certificate: {exc}") from exc


def _cert_validity(der: bytes) -> CertValidity:
    tag, start, end = der_item(der, 0, len(der))
    if tag != 0x30 or end != len(der):
        raise BadCertificateFile("not a DER certificate")
    tag, pos, tbs_end = der_item(der, start, end)
    if tag != 0x30:
        raise BadCertificateFile("no TBSCertificate")
    tag, contents, stop = der_item(der, pos, tbs_end)
    if tag == 0xA0:  # [0] EXPLICIT version
        tag, contents, stop = der_item(der, stop, tbs_end)
    for want in (0x02, 0x30, 0x30):  # serialNumber, signature AlgorithmIdentifier, issuer Name
        if tag != want:
            raise BadCertificateFile("unexpected TBSCertificate layout")
        tag, contents, stop = der_item(der, stop, tbs_end)
    if tag != 0x30:
        raise BadCertificateFile("no certificate validity")
    nb_tag, nb_start, nb_end = der_item(der, contents, stop)
    na_tag, na_start, na_end = der_item(der, nb_end, stop)
    if na_end != stop:
        raise BadCertificateFile("trailing data in certificate validity")
    return CertValidity(der_time(nb_tag, der[nb_start:nb_end]), der_time(na_tag, der[na_start:na_end]))


def load_cert_validity(path: str | Path) -> CertValidity:
    """Validity of the first certificate in the PEM file ``path`` (ours: node, broker, CA)."""
    try:
        data = fsutil.read_bounded(path, MAX_CERT_FILE_BYTES)
    except FileNotFoundError as exc:
        raise BadCertificateFile(f"{path} does not exist", code="missing") from exc
    except OSError as exc:
        raise BadCertificateFile(f"{path} cannot be read", code="unreadable") from exc
    except fsutil.FileTooLarge as exc:
        raise BadCertificateFile(f"{path} is too large for a certificate file") from exc
    begin = data.find(_PEM_BEGIN)
    end = data.find(_PEM_END, begin + 1) if begin >= 0 else -1
    if begin < 0 or end < 0:
        raise BadCertificateFile(f"{path} holds no PEM certificate")
    try:
        der = base64.b64decode(b"".join(data[begin + len(_PEM_BEGIN):end].split()), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BadCertificateFile(f"{path} holds a malformed PEM certificate") from exc
    return cert_validity_der(der)
