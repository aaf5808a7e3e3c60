"""One error hierarchy for kedge.

``PeerError`` means the other side did something wrong (bad bytes, bad credentials,
too much data); ``LocalError`` means we did (bad configuration, broken state). Each
error carries a stable ``code`` -- that code, never the exception text, is what a
peer is told.
"""

from __future__ import annotations


class KedgeError(Exception):
    """Root of every error kedge raises on purpose."""

    code: str = "internal_error"

    def __init__(self, message: str = "", *, code: str | None = None) -> None:
        super().__init__(message or self.__class__.__name__)
        if code is not None:
            self.code = code


class PeerError(KedgeError):
    """The peer sent something we refuse."""

    code = "bad_request"


class LocalError(KedgeError):
    """Something on our side is wrong (configuration, files, state)."""

    code = "local_error"


class ProtocolError(PeerError):
    """Malformed, oversized or out-of-order protocol input."""

    code = "protocol_error"


class LimitExceeded(ProtocolError):
    """A bound from :mod:`kedge.limits` was exceeded."""

    code = "limit_exceeded"


class AuthenticationError(PeerError):
    """Credentials are missing, invalid, expired, revoked or already used."""

    code = "unauthenticated"


class AuthorizationError(PeerError):
    """Authenticated, but not allowed to do this."""

    code = "forbidden"


class RateLimited(PeerError):
    """Too many requests or failed attempts."""

    code = "rate_limited"


class ConfigError(LocalError):
    """Invalid configuration or command-line input."""

    code = "config_error"


class StateError(LocalError):
    """On-disk state is missing, inconsistent or would be overwritten."""

    code = "state_error"


class VerificationError(KedgeError):
    """A signature, provenance or pinning check failed."""

    code = "verification_failed"


class UnsupportedFormat(VerificationError):
    """The input is in a format kedge cannot verify offline."""

    code = "unsupported_format"
