"""The one place kedge reaches into sigstore-python's private members.

Everything else in :mod:`kedge.verify` uses sigstore-python's public API
(``Bundle``, ``TrustedRoot``, ``Verifier.verify_dsse`` / ``verify_artifact``,
``VerificationPolicy``) and the public ``sigstore_models`` / ``rfc3161_client``
packages. sigstore-python 4.5 has no public way to do four things kedge needs:

1. treat a TSA's ``validFor`` as the *closed* interval the trusted-root spec
   defines (sigstore-python rejects a timestamp equal to ``validFor.end``;
   sigstore-conformance ``trust-root-tsa-validity-end-inclusive``): done by
   overriding ``Verifier._verify_signed_timestamp``, which returns a
   ``sigstore._internal.timestamp.TimestampVerificationResult`` and reads the
   ``sigstore._internal.trust.CertificateAuthority`` objects
   ``TrustedRoot.get_timestamp_authorities()`` returns;
2. verify one RFC 3161 timestamp of a managed-key bundle (sigstore-python only
   verifies certificate-bearing bundles): the same method, called directly;
3. verify a managed-key bundle's log entry (inclusion proof, signed checkpoint,
   signed entry timestamp): ``TransparencyLogEntry(entry)._verify`` (a constructor
   documented ``@private``) with
   ``TrustedRoot.rekor_keyring(sigstore._internal.trust.KeyringPurpose.VERIFY)``;
4. build a ``TrustedRoot`` from bytes kedge has already bounded and hash-checked
   (the public ``TrustedRoot.from_file`` would read the file a second time):
   the ``TrustedRoot(inner)`` constructor, documented ``@api private``.

:data:`PRIVATE_MEMBERS` lists each of them. pyproject.toml pins sigstore to the
minor version they were read from, :func:`check_compatible` refuses to run (code
``sigstore_incompatible``, naming the member) when one is missing or its
signature changed, and ``tests/unit/verify/test_sigstore_adapter.py`` fails with
the same message, so an upgrade cannot silently change what kedge verifies.
"""

from __future__ import annotations

import importlib
import inspect
from datetime import datetime
from typing import Any

from rfc3161_client import VerificationError as Rfc3161VerificationError
from rfc3161_client import VerifierBuilder
from sigstore.models import TransparencyLogEntry, TrustedRoot
from sigstore.verify import Verifier
from sigstore_models.trustroot.v1 import TrustedRoot as TrustedRootModel

from kedge.errors import VerificationError

#: (module, dotted attribute, parameter names or None for a non-callable) -- every
#: private sigstore-python member kedge uses, and the shape it relies on.
PRIVATE_MEMBERS: tuple[tuple[str, str, tuple[str, ...] | None], ...] = (
    ("sigstore.verify.verifier", "Verifier._verify_signed_timestamp", ("self", "timestamp_response", "message")),
    ("sigstore.verify.verifier", "Verifier._verify_timestamp_authority", ("self", "bundle")),
    ("sigstore.models", "TransparencyLogEntry.__init__", ("self", "inner")),
    ("sigstore.models", "TransparencyLogEntry._verify", ("self", "keyring")),
    ("sigstore.models", "TrustedRoot.__init__", ("self", "inner")),
    ("sigstore.models", "TrustedRoot.rekor_keyring", ("self", "purpose")),
    ("sigstore._internal.trust", "KeyringPurpose.VERIFY", None),
    ("sigstore._internal.trust", "CertificateAuthority.certificates", ("self", "allow_expired")),
    ("sigstore._internal.trust", "CertificateAuthority.validity_period_start", None),
    ("sigstore._internal.trust", "CertificateAuthority.validity_period_end", None),
    ("sigstore._internal.timestamp", "TimestampSource.TIMESTAMP_AUTHORITY", None),
    ("sigstore._internal.timestamp", "TimestampVerificationResult", ("source", "time")),
)


class SigstoreIncompatible(VerificationError):
    """The installed sigstore-python lacks a private member kedge was written against."""

    code = "sigstore_incompatible"


def _resolve(module: str, dotted: str) -> Any:
    obj: Any = importlib.import_module(module)
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def member_problem(module: str, dotted: str, params: tuple[str, ...] | None) -> str | None:
    """Why ``module.dotted`` is not what kedge expects, or None if it is."""
    name = f"{module}.{dotted}"
    try:
        obj = _resolve(module, dotted)
    except (ImportError, AttributeError):
        return f"sigstore-python private member {name} is gone"
    if params is None:
        return None
    try:
        got = tuple(inspect.signature(obj).parameters)
    except (TypeError, ValueError):
        return f"sigstore-python private member {name} is no longer callable"
    if got != params:
        return f"sigstore-python private member {name} takes {got}, kedge expects {params}"
    return None


_checked: list[bool] = []


def check_compatible() -> None:
    """Raise :class:`SigstoreIncompatible` naming the first private member that changed."""
    if _checked:
        return
    for module, dotted, params in PRIVATE_MEMBERS:
        problem = member_problem(module, dotted, params)
        if problem is not None:
            raise SigstoreIncompatible(problem + " (kedge/verify/_sigstore_adapter.py)")
    _checked.append(True)


def _tsa_time(trusted_root: Any, timestamp_response: Any, message: bytes) -> datetime | None:
    """The timestamp's time if a trusted TSA signed it within its closed validity window."""
    when = timestamp_response.tst_info.gen_time
    for authority in trusted_root.get_timestamp_authorities():
        chain = authority.certificates(allow_expired=True)
        if len(chain) < 2:  # need at least the TSA leaf and a root
            continue
        builder = VerifierBuilder().tsa_certificate(chain[0]).add_root_certificate(chain[-1])
        for intermediate in chain[1:-1]:
            builder = builder.add_intermediate_certificate(intermediate)
        try:
            builder.build().verify_message(timestamp_response, message)
        except Rfc3161VerificationError:
            continue
        start, end = authority.validity_period_start, authority.validity_period_end
        if start <= when and (end is None or when <= end):
            return when
    return None


class _ClosedRangeTsaVerifier(Verifier):
    """``Verifier`` whose TSA validity check is the spec's closed interval; all else unchanged."""

    def __init__(self, *, trusted_root: Any) -> None:
        super().__init__(trusted_root=trusted_root)
        self._kedge_root = trusted_root

    def _verify_signed_timestamp(self, timestamp_response, message):  # type: ignore[no-untyped-def]
        from sigstore._internal.timestamp import (
            TimestampSource,
            TimestampVerificationResult,
        )

        when = _tsa_time(self._kedge_root, timestamp_response, message)
        if when is None:
            return None
        return TimestampVerificationResult(source=TimestampSource.TIMESTAMP_AUTHORITY, time=when)


def make_verifier(trusted_root: Any) -> Verifier:
    """An offline sigstore-python ``Verifier`` over ``trusted_root`` (closed TSA windows)."""
    check_compatible()
    return _ClosedRangeTsaVerifier(trusted_root=trusted_root)


def timestamp_time(trusted_root: Any, timestamp_response: Any, message: bytes) -> datetime | None:
    """Verify one RFC 3161 timestamp over ``message``; its time, or None if no trusted TSA signed it."""
    check_compatible()
    return _tsa_time(trusted_root, timestamp_response, message)


def verify_log_entry(entry_model: Any, trusted_root: Any) -> None:
    """Inclusion proof, signed checkpoint and SET of one ``sigstore_models`` log entry.

    Raises sigstore's ``InvalidBundle`` (entry lacks a proof) or
    ``VerificationError`` (a proof does not verify against the root's Rekor keys).
    """
    check_compatible()
    from sigstore._internal.trust import KeyringPurpose

    entry = TransparencyLogEntry(entry_model)
    entry._verify(trusted_root.rekor_keyring(KeyringPurpose.VERIFY))


def trusted_root_from_json(data: bytes) -> TrustedRoot:
    """A sigstore ``TrustedRoot`` from JSON bytes (raises ``ValueError`` or sigstore's ``Error``)."""
    check_compatible()
    return TrustedRoot(TrustedRootModel.from_json(data))
