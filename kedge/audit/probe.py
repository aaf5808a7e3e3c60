"""Live probes: connect to each listener and record what it accepts (the I/O shell).

Every connection is bounded in time (``timeout``) and in what is read (a status line,
at most :data:`MAX_RESPONSE_BYTES`). What the probes learn becomes a
:class:`~kedge.audit.facts.ProbeFacts`; deciding pass or fail is left to the checks.
A probe that cannot even connect records ``error`` so the audit reports ERROR (exit 3)
instead of a silent pass.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import socket
import ssl
from urllib.parse import urlsplit

from cryptography import x509

from kedge.audit import _probe_tls
from kedge.audit.facts import CertInfo, ProbeFacts
from kedge.audit.gather import cert_info
from kedge.errors import ConfigError

from kedge.limits import AUDIT_PROBE_MAX_RESPONSE_BYTES as MAX_RESPONSE_BYTES
OVERSIZED_BODY_BYTES = 1024 * 1024
_CHUNK = 64 * 1024
_VERSIONS = (("TLSv1", "TLSv1"), ("TLSv1.1", "TLSv1_1"), ("TLSv1.2", "TLSv1_2"), ("TLSv1.3", "TLSv1_3"))
ROLES = ("hub", "certs", "api", "mqtt", "unknown")
_SCHEMES = {"https": 443, "wss": 443, "mqtts": 8883, "mqtt": 1883}

_MQTT_CONNACK = 0x20  # first byte of the CONNACK a broker answers a CONNECT with
MQTT_DISCONNECT = b"\xe0\x00"


def mqtt_connect_packet(client_id: bytes) -> bytes:
    """An MQTT 3.1.1 CONNECT: clean session, keepalive 60 s, no credentials (ids up to 23 bytes)."""
    cid = client_id[:23]
    return (bytes([0x10, 12 + len(cid)]) + b"\x00\x04MQTT\x04\x02\x00\x3c"
            + len(cid).to_bytes(2, "big") + cid)


def read_connack(sock: socket.socket) -> int | None:
    """The return code of the CONNACK that answers our CONNECT (0: accepted); None when the
    broker answered something else or closed. Reads at most the 4 bytes of a CONNACK."""
    ack = b""
    while len(ack) < 4:
        chunk = sock.recv(4 - len(ack))
        if not chunk:
            return None
        ack += chunk
    return ack[3] if ack[0] == _MQTT_CONNACK else None


_MQTT_CONNECT = mqtt_connect_packet(b"kedge-audit")  # nothing else is ever sent by a probe


@dataclasses.dataclass(frozen=True)
class Target:
    url: str
    role: str
    host: str
    port: int
    explicit: bool = True  # given with --endpoint (False: read from DIR/endpoints.json)

    @classmethod
    def parse(cls, text: str, role: str | None = None) -> "Target":
        """``URL`` or ``ROLE=URL``; schemes https/wss/mqtts/mqtt; the role defaults from the scheme."""
        if "=" in text.split("://", 1)[0]:
            role, text = text.split("=", 1)
        try:
            u = urlsplit(text)
            hostname = u.hostname
        except ValueError as exc:  # e.g. "https://[::1" (unbalanced IPv6 brackets)
            raise ConfigError(f"endpoint {text[:200]!r} is not a URL", code="bad_endpoint") from exc
        if u.scheme not in _SCHEMES or not hostname:
            raise ConfigError(f"endpoint must be https://, wss://, mqtts:// or mqtt://HOST:PORT, not {text!r}",
                              code="bad_endpoint")
        try:
            port = u.port or _SCHEMES[u.scheme]
        except ValueError as exc:
            raise ConfigError(f"bad port in {text!r}", code="bad_endpoint") from exc
        if role is None:
            role = {"wss": "hub", "mqtts": "mqtt", "mqtt": "mqtt"}.get(u.scheme, "unknown")
        if role not in ROLES:
            raise ConfigError(f"endpoint role must be one of {ROLES}, not {role!r}", code="bad_endpoint")
        return cls(url=text, role=role, host=hostname, port=port)


class _ProbeFailed(Exception):
    """The TCP connection itself failed: the probe could not run."""

    def __init__(self, message: str, *, refused: bool = False) -> None:
        super().__init__(message)
        self.refused = refused


def _tcp(t: Target, timeout: float) -> socket.socket:
    try:
        return socket.create_connection((t.host, t.port), timeout=timeout)
    except OSError as exc:
        raise _ProbeFailed(f"{type(exc).__name__}: {exc.strerror or exc}",
                           refused=isinstance(exc, ConnectionRefusedError)) from exc


def _connect(t: Target, ctx: ssl.SSLContext, timeout: float) -> ssl.SSLSocket:
    raw = _tcp(t, timeout)
    try:
        return ctx.wrap_socket(raw, server_hostname=t.host)
    except BaseException:
        raw.close()
        raise


_TLS_HANDSHAKE, _SERVER_HELLO = 0x16, 0x02  # record type, handshake message type


def _server_hello(t: Target, ctx: ssl.SSLContext, timeout: float) -> str:
    """Offer what ``ctx`` allows and read the server's first record.

    A ServerHello means the server picked one of the offered versions/suites: accepted
    -- even on a listener that will then demand a client certificate, which a full
    handshake without one could not tell apart from a refusal. An alert or a close
    before any ServerHello means refused. Nothing beyond the ClientHello is sent.
    """
    try:
        raw = socket.create_connection((t.host, t.port), timeout=timeout)
    except OSError as exc:
        raise _ProbeFailed(f"{type(exc).__name__}: {exc.strerror or exc}",
                           refused=isinstance(exc, ConnectionRefusedError)) from exc
    try:
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        obj = ctx.wrap_bio(incoming, outgoing, server_hostname=t.host)
        try:
            obj.do_handshake()
        except ssl.SSLWantReadError:
            pass
        except ssl.SSLError:
            # This OpenSSL would not build such a ClientHello (no protocols or ciphers left).
            return "unavailable"
        hello = outgoing.read()
        if not hello:
            return "unavailable"
        raw.sendall(hello)
        buf = b""
        while len(buf) < 6:
            chunk = raw.recv(MAX_RESPONSE_BYTES)
            if not chunk:
                break
            buf += chunk
    except OSError:  # includes ssl.SSLError, resets and timeouts: no ServerHello came
        return "refused"
    finally:
        raw.close()
    if len(buf) >= 6 and buf[0] == _TLS_HANDSHAKE and buf[5] == _SERVER_HELLO:
        return "accepted"
    return "refused"


def _fetch_peer_cert(t: Target, timeout: float) -> bytes | None:
    """The served certificate, via a full handshake without a client certificate (None if refused)."""
    try:
        s = _connect(t, _probe_tls.unsafe_probe_context_anonymous(), timeout)
    except _ProbeFailed:
        raise
    except (ssl.SSLError, OSError):
        return None
    try:
        return s.getpeercert(binary_form=True)
    finally:
        s.close()


def _read_status(s: ssl.SSLSocket) -> int | None:
    buf = b""
    while b"\r\n" not in buf and len(buf) < MAX_RESPONSE_BYTES:
        chunk = s.recv(4096)
        if not chunk:
            break
        buf += chunk
    line = buf.split(b"\r\n", 1)[0].split()
    if len(line) >= 2 and line[0].startswith(b"HTTP/") and line[1].isdigit():
        return int(line[1])
    return None


def _client_cert_required(t: Target, timeout: float) -> str:
    """Whether a peer without a client certificate gets an answer (TLS 1.3 rejects after handshake)."""
    try:
        s = _connect(t, _probe_tls.unsafe_probe_context_anonymous(), timeout)
    except ssl.SSLError:
        return "refused"
    except _ProbeFailed:
        raise
    except OSError:
        return "refused"
    try:
        s.sendall(f"GET / HTTP/1.1\r\nHost: {t.host}\r\nConnection: close\r\n\r\n".encode())
        data = s.recv(1)
        return "accepted" if data else "refused"
    except (ssl.SSLError, ConnectionError):
        return "refused"
    except socket.timeout:
        return "accepted"  # kept the connection open without asking for a certificate
    except OSError:
        return "refused"
    finally:
        s.close()


def _mqtt_connack(sock: socket.socket) -> str:
    """Send the CONNECT; "accepted" if a CONNACK comes back (the broker spoke MQTT to us)."""
    try:
        sock.sendall(_MQTT_CONNECT)
        first = sock.recv(1)
    except socket.timeout:
        return "refused"  # silent: no MQTT session was offered
    except OSError:  # includes ssl.SSLError: a TLS alert (certificate required) or a reset
        return "refused"
    return "accepted" if first[:1] == bytes([_MQTT_CONNACK]) else "refused"


def _mqtt_without_client_cert(t: Target, timeout: float) -> str:
    """TLS without a client certificate, then an MQTT CONNECT: must not get a CONNACK."""
    try:
        s = _connect(t, _probe_tls.unsafe_probe_context_anonymous(), timeout)
    except _ProbeFailed:
        raise
    except OSError:  # includes ssl.SSLError: refused during the handshake
        return "refused"
    try:
        return _mqtt_connack(s)
    finally:
        s.close()


def _mqtt_plaintext(t: Target, timeout: float) -> str:
    """An MQTT CONNECT in clear text: a TLS-only broker must not answer it."""
    raw = _tcp(t, timeout)
    try:
        return _mqtt_connack(raw)
    finally:
        raw.close()


def _anonymous_request(t: Target, timeout: float) -> tuple[int | None, str]:
    try:
        s = _connect(t, _probe_tls.unsafe_probe_context_anonymous(), timeout)
    except (ssl.SSLError, OSError) as exc:
        if isinstance(exc, _ProbeFailed):
            raise
        return None, f"handshake refused ({type(exc).__name__})"
    try:
        s.sendall(f"GET /api/v1/namespaces HTTP/1.1\r\nHost: {t.host}\r\nAccept: application/json\r\n"
                  "Connection: close\r\n\r\n".encode())
        return _read_status(s), "ok"
    except (ssl.SSLError, OSError) as exc:
        return None, f"no answer ({type(exc).__name__})"
    finally:
        s.close()


def _unauthenticated_csr(t: Target, timeout: float) -> int | None:
    """POST /edge.crt with no token and no client certificate (and no CSR): must be 401."""
    try:
        s = _connect(t, _probe_tls.unsafe_probe_context_anonymous(), timeout)
    except (ssl.SSLError, OSError) as exc:
        if isinstance(exc, _ProbeFailed):
            raise
        return None
    try:
        s.sendall(f"POST /edge.crt HTTP/1.1\r\nHost: {t.host}\r\nContent-Type: application/x-pem-file\r\n"
                  "Content-Length: 0\r\nConnection: close\r\n\r\n".encode())
        return _read_status(s)
    except (ssl.SSLError, OSError):
        return None
    finally:
        s.close()


def _oversized_post(t: Target, timeout: float) -> str:
    try:
        s = _connect(t, _probe_tls.unsafe_probe_context_anonymous(), timeout)
    except (ssl.SSLError, OSError) as exc:
        if isinstance(exc, _ProbeFailed):
            raise
        return "closed"
    sent_all = False
    try:
        try:
            s.sendall(f"POST /edge.crt HTTP/1.1\r\nHost: {t.host}\r\nContent-Type: application/octet-stream\r\n"
                      f"Content-Length: {OVERSIZED_BODY_BYTES}\r\nConnection: close\r\n\r\n".encode())
            zero = bytes(_CHUNK)
            for _ in range(OVERSIZED_BODY_BYTES // _CHUNK):
                s.sendall(zero)
            sent_all = True
        except (ssl.SSLError, OSError):
            pass  # the server stopped reading: look for its answer below
        try:
            status = _read_status(s)
        except (ssl.SSLError, OSError):
            status = None
    finally:
        s.close()
    if status == 413:
        return "413"
    if status is None:
        return "closed"
    return f"accepted:{status}" if sent_all else f"refused-early:{status}"


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _peer_info(der: bytes | None, ca: x509.Certificate | None) -> CertInfo | None:
    if der is None:
        return None
    try:
        cert = x509.load_der_x509_certificate(der)
    except ValueError:
        return CertInfo(name="served", path="", error="unparseable certificate")
    return cert_info("served", "", cert, ca)


def probe(t: Target, *, ca: x509.Certificate | None, timeout: float = 3.0) -> ProbeFacts:
    """Run every probe that applies to ``t``'s role."""
    try:
        versions: list[tuple[str, str]] = []
        for label, attr in _VERSIONS:
            try:
                ctx = _probe_tls.unsafe_probe_context_version(getattr(ssl.TLSVersion, attr))
            except (ValueError, ssl.SSLError):
                versions.append((label, "unavailable"))
                continue
            versions.append((label, _server_hello(t, ctx, timeout)))
        cbc = non_ecdhe = "n/a"
        if dict(versions).get("TLSv1.2") == "accepted":
            for name, ciphers in (("cbc", _probe_tls.CBC_CIPHERS), ("non_ecdhe", _probe_tls.NON_ECDHE_CIPHERS)):
                try:
                    state = _server_hello(t, _probe_tls.unsafe_probe_context_tls12(ciphers), timeout)
                except ValueError:
                    state = "unavailable"
                if name == "cbc":
                    cbc = state
                else:
                    non_ecdhe = state
        peer_der = _fetch_peer_cert(t, timeout)
        plaintext = "n/a"
        if t.role == "mqtt":
            no_cert = _mqtt_without_client_cert(t, timeout)
            plaintext = _mqtt_plaintext(t, timeout)
        else:
            no_cert = _client_cert_required(t, timeout) if t.role == "hub" else "n/a"
        anon_status, anon_detail = _anonymous_request(t, timeout) if t.role == "api" else (None, "n/a")
        oversized = _oversized_post(t, timeout) if t.role == "certs" else "n/a"
        unauth_csr = _unauthenticated_csr(t, timeout) if t.role == "certs" else None
    except _ProbeFailed as exc:
        stopped = exc.refused and not t.explicit and _is_loopback(t.host)
        return ProbeFacts(url=t.url, role=t.role, host=t.host, error=str(exc), not_running=stopped)
    return ProbeFacts(
        url=t.url, role=t.role, host=t.host, versions=tuple(versions), tls12_cbc=cbc, tls12_non_ecdhe=non_ecdhe,
        no_client_cert=no_cert, peer_cert=_peer_info(peer_der, ca),
        anonymous_status=anon_status, anonymous_detail=anon_detail, oversized=oversized,
        unauthenticated_csr=unauth_csr, plaintext=plaintext,
    )
