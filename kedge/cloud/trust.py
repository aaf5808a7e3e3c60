"""The cluster CA(s) as cloudcore sees them now, following ``kedge ca rotate|finish``.

Files (``DIR/pki``; see :mod:`kedge.cloud.carotation` for how they change):

- ``ca.crt``: the trust bundle -- the CA that issues now first, during a rotation followed by
  the previous CA. Every verifier loads the whole file, so both are trusted during the overlap.
- ``ca.key``: the key of the first certificate in ``ca.crt``.
- ``ca-cross.crt``: during a rotation, the two cross-certificates (new CA by the old key, old
  CA by the new key) that let an edge check a bundle against the CA it already trusts.
- ``rotation.json``: the phase (:class:`kedge.pki.rotation.RotationRecord`).

:class:`ClusterTrust` reloads them when one changes (a ``stat`` each per call). Files that do
not fit together -- a rotation caught between two writes, a key that does not match -- are
not taken: the previous view stays and the next call tries again.
"""

from __future__ import annotations

import logging
from pathlib import Path

from cryptography import x509

from kedge._internal import fsutil
from kedge.cloud.config import CloudDir
from kedge.errors import KedgeError, StateError
from kedge.pki import ca as pki
from kedge.pki.rotation import RotationRecord, issuer_of

log = logging.getLogger(__name__)

CROSS_FILE = "ca-cross.crt"
PREVIOUS_FILE = "ca-previous.crt"
ROTATION_FILE = "rotation.json"
NEXT_KEY_FILE = "ca-next.key"
NEXT_CRT_FILE = "ca-next.crt"


def rotation_path(d: CloudDir) -> Path:
    return d.pki / ROTATION_FILE


def cross_path(d: CloudDir) -> Path:
    return d.pki / CROSS_FILE


def load_record(d: CloudDir) -> RotationRecord:
    """The rotation record; ``none`` for a cluster that was never rotated."""
    path = rotation_path(d)
    if not path.exists():
        return RotationRecord()
    try:
        data = fsutil.read_json(path)
    except (ValueError, OSError, RecursionError) as exc:
        raise StateError(f"{path} is not valid JSON", code="corrupt_state") from exc
    return RotationRecord.from_dict(data)


class ClusterTrust:
    """What cloudcore issues with and trusts, reloaded from ``DIR/pki`` as it changes."""

    def __init__(self, d: CloudDir) -> None:
        self.dir = d
        self._paths = (d.ca_crt, d.ca_key, cross_path(d), rotation_path(d))
        self._stamp: tuple[tuple[int, int, int], ...] | None = None
        self.version = 0
        if not self.refresh():
            raise StateError(f"the cluster CA in {d.pki} cannot be loaded", code="ca_unreadable")

    @classmethod
    def fixed(cls, key: pki.PrivateKey, cert: x509.Certificate) -> "ClusterTrust":
        """One CA that never changes (tests and callers without a data directory)."""
        self = cls.__new__(cls)
        self._paths, self._stamp, self.version = (), (), 1
        self._set([cert], key, [], RotationRecord())
        return self

    def _set(self, bundle: list[x509.Certificate], key: pki.PrivateKey, cross: list[x509.Certificate],
             record: RotationRecord) -> None:
        self.bundle: list[x509.Certificate] = bundle
        self.issuing_cert: x509.Certificate = bundle[0]
        self.issuing_key: pki.PrivateKey = key
        self.issuing_fp = pki.ca_fingerprint(bundle[0])
        self.fingerprints = frozenset(pki.ca_fingerprint(c) for c in bundle)
        self.bundle_pem = b"".join(pki.cert_to_pem(c) for c in bundle)
        self.cross: list[x509.Certificate] = cross if len(bundle) > 1 else []
        self.cross_pem = b"".join(pki.cert_to_pem(c) for c in self.cross)
        self.record = record

    def refresh(self) -> bool:
        """Reload if a file changed and the files fit together; True if the view changed."""
        stamp = fsutil.file_stamp(self._paths)
        if stamp == self._stamp:
            return False
        d = self.dir
        try:
            bundle = pki.load_cert_bundle_file(d.ca_crt)
            key = pki.load_key_file(d.ca_key)
            pki._check_ca_pair(key, bundle[0])
            cross_file = cross_path(d)
            cross = pki.load_cert_bundle_file(cross_file) if cross_file.exists() else []
            record = load_record(d)
        except (KedgeError, OSError) as exc:
            log.warning("cluster CA files in %s do not fit together yet (%s); keeping the previous view",
                        d.pki, getattr(exc, "code", exc))
            return False
        self._stamp = stamp
        self._set(bundle, key, cross, record)
        self.version += 1
        log.info("cluster trust: %d CA(s), issuing with %s (phase %s)", len(bundle), self.issuing_fp[:16],
                 record.phase)
        return True

    def issuer_fp(self, cert: x509.Certificate) -> str | None:
        """Fingerprint of the trusted CA that signed ``cert``, or None (no longer trusted)."""
        ca = issuer_of(cert, self.bundle)
        return None if ca is None else pki.ca_fingerprint(ca)

    def bundle_message(self) -> dict[str, str]:
        """What an edge needs to replace its pinned CA bundle (:mod:`kedge.edge.cabundle`)."""
        return {"bundle": self.bundle_pem.decode(), "cross": self.cross_pem.decode()}
