"""Certificate revocation lists: the decisions, as pure functions, and their two file operations.

A CRL is accepted only if it parses, names the CA as its issuer, carries a valid
signature of that CA, has a ``nextUpdate`` and is inside ``[lastUpdate - skew,
nextUpdate)`` at ``now``. Anything else is a :class:`CrlError` with a stable code, and a
consumer must then refuse every certificate the CA issued (fail closed): a missing CRL
does *not* mean "nothing revoked", an expired one does not mean "the old list still holds".

The issuer keeps its CRL fresh by re-issuing it once it is past half of its lifetime
(:func:`reissue_due`), long before a consumer would call it expired.

Nothing here reads the clock: ``now`` is a parameter.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from kedge._internal import fsutil
from kedge.errors import StateError
from kedge.pki import ca as pki

__all__ = [
    "CRL_LIFETIME",
    "CrlError",
    "CrlKeeper",
    "CrlView",
    "check_crl",
    "load_crl_file",
    "read_crl_bytes",
    "reissue_due",
    "write_crl",
]

log = logging.getLogger(__name__)

#: How long a CRL kedge issues stays valid (its ``nextUpdate``); re-issued at half of it.
CRL_LIFETIME = _dt.timedelta(days=7)
#: A CRL whose ``lastUpdate`` is at most this far in the future is accepted (clock skew).
SKEW = pki.SKEW
MAX_CRL_FILE_BYTES = pki.MAX_PEM_FILE_BYTES


class CrlError(StateError):
    """The CRL cannot be trusted; every certificate of its CA must be refused.

    Codes: ``crl_missing``, ``crl_unreadable``, ``crl_malformed``, ``crl_wrong_issuer``,
    ``crl_bad_signature``, ``crl_no_next_update``, ``crl_not_yet_valid``, ``crl_expired``.
    """

    code = "crl_malformed"


@dataclasses.dataclass(frozen=True)
class CrlView:
    """What an accepted CRL says."""

    serials: frozenset[int]
    entries: tuple[tuple[int, _dt.datetime], ...]  # (serial, revocation date), as listed
    last_update: _dt.datetime
    next_update: _dt.datetime
    number: int | None

    def expired(self, now: _dt.datetime) -> bool:
        return pki._utc(now) >= self.next_update


def check_crl(
    crl_pem: bytes, issuers: Sequence[x509.Certificate], *, now: _dt.datetime, allow_expired: bool = False
) -> CrlView:
    """Accept ``crl_pem`` if one of ``issuers`` (a CA and, during CA rotation, its
    successor) signed it and it is current at ``now``; else raise :class:`CrlError`.

    ``allow_expired`` is for the issuer only, reading its own last CRL in order to replace it."""
    now = pki._utc(now)
    try:
        crl = x509.load_pem_x509_crl(bytes(crl_pem))
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise CrlError("not a PEM CRL", code="crl_malformed") from exc
    candidates = [ca for ca in issuers if ca.subject == crl.issuer]
    if not candidates:
        raise CrlError("the CRL is not issued by the CA", code="crl_wrong_issuer")
    for ca in candidates:
        try:
            ca_key = ca.public_key()
            if not isinstance(ca_key, (ec.EllipticCurvePublicKey, rsa.RSAPublicKey)):
                continue  # kedge CAs are EC or RSA (pki.PrivateKey); nothing else signs a CRL we accept
            if crl.is_signature_valid(ca_key):
                break
        except (ValueError, TypeError, UnsupportedAlgorithm):
            continue
    else:
        raise CrlError("the CRL's signature does not verify with the CA", code="crl_bad_signature")
    next_update = crl.next_update_utc
    if next_update is None:
        raise CrlError("the CRL has no nextUpdate", code="crl_no_next_update")
    last_update = crl.last_update_utc
    if last_update - SKEW > now:
        raise CrlError("the CRL is not valid yet", code="crl_not_yet_valid")
    if now >= next_update and not allow_expired:
        raise CrlError(f"the CRL expired at {next_update.isoformat()}", code="crl_expired")
    try:
        number: int | None = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    except x509.ExtensionNotFound:
        number = None
    entries = tuple((r.serial_number, r.revocation_date_utc) for r in crl)
    return CrlView(frozenset(s for s, _ in entries), entries, last_update, next_update, number)


def reissue_due(view: CrlView, now: _dt.datetime) -> bool:
    """True once ``view`` is past half of its lifetime: time for its issuer to sign a new one."""
    half = (view.next_update - view.last_update) / 2
    return pki._utc(now) >= view.last_update + half


# --------------------------------------------------------------------------- files


def read_crl_bytes(path: str | Path) -> bytes:
    """The CRL file's bytes, bounded; ``crl_missing`` / ``crl_unreadable`` otherwise."""
    try:
        return fsutil.read_bounded(path, MAX_CRL_FILE_BYTES)
    except FileNotFoundError as exc:
        raise CrlError(f"{path} does not exist: revocation cannot be checked", code="crl_missing") from exc
    except OSError as exc:
        raise CrlError(f"{path} cannot be read", code="crl_unreadable") from exc
    except fsutil.FileTooLarge as exc:
        raise CrlError(f"{path} is too large for a CRL", code="crl_malformed") from exc


def load_crl_file(path: str | Path, issuers: Sequence[x509.Certificate], *, now: _dt.datetime,
                  allow_expired: bool = False) -> CrlView:
    return check_crl(read_crl_bytes(path), issuers, now=now, allow_expired=allow_expired)


def write_crl(
    path: str | Path,
    ca_key: pki.PrivateKey,
    ca_cert: x509.Certificate,
    revoked: Iterable[tuple[int, _dt.datetime]],
    *,
    now: _dt.datetime,
    lifetime: _dt.timedelta = CRL_LIFETIME,
) -> CrlView:
    """Sign a CRL listing ``revoked`` and replace ``path`` with it atomically; what it says."""
    from kedge._internal import fsutil

    crl = pki.build_crl(ca_key, ca_cert, revoked, now=now, next_update=lifetime)
    pem = crl.public_bytes(serialization.Encoding.PEM)
    fsutil.atomic_write(path, pem)
    return check_crl(pem, [ca_cert], now=now)


class CrlKeeper:
    """Keeps a CA's CRL file current: re-issues it (same revocations, from ``revoked``) once
    it is past half of its lifetime, so no consumer ever sees it expire while the issuer runs.

    Blocking (file and database I/O): call :meth:`refresh` in a worker thread. ``revoked(now)``
    gives the CA's revocations; ``generation()`` a counter every revocation bumps. A revocation
    committed while the keeper writes is never lost: after writing it reads the counter again
    and, if it moved, writes once more -- whoever revoked writes its own CRL after its commit,
    so the last file written is always at least as new as the last revocation.

    It never creates a CRL that is missing or replaces one that is not signed by the CA:
    that is an operator's problem to see (consumers refuse every certificate meanwhile), not
    one to paper over.
    """

    CHECK_INTERVAL_S = 60.0

    def __init__(
        self,
        path: str | Path,
        *,
        ca_key_path: str | Path,
        ca_cert_path: str | Path,
        revoked: Callable[[_dt.datetime], Iterable[tuple[int, _dt.datetime]]],
        generation: Callable[[], int],
        close: Callable[[], None] | None = None,
        clock: Callable[[], float] = time.time,
        lifetime: _dt.timedelta = CRL_LIFETIME,
    ) -> None:
        self.path = Path(path)
        self.ca_key_path, self.ca_cert_path = Path(ca_key_path), Path(ca_cert_path)
        self.revoked, self.generation = revoked, generation
        self._close = close
        self.clock = clock
        self.lifetime = lifetime
        self._next_check = 0.0
        self.reissued = 0

    def due(self, monotonic_now: float) -> bool:
        """True at most every ``CHECK_INTERVAL_S`` (``monotonic_now`` from a monotonic clock)."""
        if monotonic_now < self._next_check:
            return False
        self._next_check = monotonic_now + self.CHECK_INTERVAL_S
        return True

    def refresh(self, *, allow_expired: bool = False) -> CrlView:
        """Re-issue the CRL if it is due; return what the current file says.

        ``allow_expired``: also replace a CRL that has already expired (at start-up, after
        the issuer was down past its nextUpdate). Raises :class:`CrlError` for a missing or
        untrustworthy CRL (and for an expired one unless ``allow_expired``)."""
        now = _dt.datetime.fromtimestamp(self.clock(), _dt.timezone.utc)
        # The CA file is the trust bundle: the issuing CA first, during a CA rotation followed by
        # the previous one, whose last CRL stays acceptable until the issuing CA re-issues it.
        bundle = pki.load_cert_bundle_file(self.ca_cert_path)
        ca_cert = bundle[0]
        view = load_crl_file(self.path, bundle, now=now, allow_expired=allow_expired)
        if not reissue_due(view, now):
            return view
        ca_key = pki.load_key_file(self.ca_key_path)
        for _ in range(5):
            before = self.generation()
            view = write_crl(self.path, ca_key, ca_cert, self.revoked(now), now=now, lifetime=self.lifetime)
            if self.generation() == before:
                break
        self.reissued += 1
        log.info("re-issued %s before its nextUpdate: %d revoked serial(s), valid until %s",
                 self.path, len(view.serials), view.next_update.isoformat())
        return view

    def close(self) -> None:
        if self._close is not None:
            self._close()
