"""TLS contexts for *probing* listeners -- the one place outside ``kedge/tls.py`` that builds one.

An audit has to find out whether a listener would accept weak protocol versions and
cipher suites, so it must be able to offer them; :mod:`kedge.tls` deliberately cannot.
These contexts are therefore unsafe by design and are only fit for probing:

* they never carry credentials (no client certificate, no key, nothing secret is sent:
  the probes send at most a fixed HTTP request line and a zero-filled body);
* they do not verify the server (the served certificate is inspected separately and
  compared with the cluster CA by :mod:`kedge.audit.probe`).

Each construct is waived on its line for ``security/lint.py`` (KL001/KL002) with the
reason; nothing else under ``kedge/audit`` builds a context.
"""

from __future__ import annotations

import ssl
import warnings

# Suites without AEAD (CBC and older) and suites without ECDHE key exchange; the
# security level is lowered so that OpenSSL will actually offer them.
CBC_CIPHERS = "ALL:!AESGCM:!CHACHA20:!AESCCM:!ARIAGCM:!aNULL:!eNULL:@SECLEVEL=0"
NON_ECDHE_CIPHERS = "ALL:!kECDHE:!aNULL:!eNULL:@SECLEVEL=0"


def _bare() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # kedge-lint: allow KL002 - audit probes must offer weak TLS
    ctx.check_hostname = False  # kedge-lint: allow KL001 - probe only, the served cert is checked separately
    ctx.verify_mode = ssl.CERT_NONE  # kedge-lint: allow KL001 - probe only, no credentials are ever sent
    return ctx


def unsafe_probe_context_version(version: ssl.TLSVersion) -> ssl.SSLContext:
    """Offer exactly ``version`` (TLS 1.0 .. 1.3). Raises ``ValueError`` if this OpenSSL cannot."""
    ctx = _bare()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TLSv1/TLSv1_1 are deprecated names
        ctx.minimum_version = version
        ctx.maximum_version = version
    if version <= ssl.TLSVersion.TLSv1_2:
        try:
            ctx.set_ciphers("ALL:@SECLEVEL=0")
        except ssl.SSLError as exc:
            raise ValueError("cipher list not supported by this OpenSSL") from exc
    return ctx


def unsafe_probe_context_tls12(ciphers: str) -> ssl.SSLContext:
    """Offer TLS 1.2 only with ``ciphers`` (an OpenSSL cipher string). ``ValueError`` if none usable."""
    ctx = _bare()
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.set_ciphers(ciphers)
    except ssl.SSLError as exc:
        raise ValueError("no such ciphers in this OpenSSL") from exc
    return ctx


def unsafe_probe_context_anonymous() -> ssl.SSLContext:
    """A modern (TLS 1.2+) client context with no client certificate: what an anonymous peer has."""
    ctx = _bare()
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx
