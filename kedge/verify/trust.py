"""The Sigstore trust root ``kedge verify`` uses -- vendored, hash-pinned, offline.

sigstore-python would fetch the root through TUF or take whatever sits in its
local cache unverified. kedge instead ships the public-good instance's
``trusted_root.json`` inside the package and refuses to use it unless its SHA-256
equals :data:`PINNED_SHA256`, so a tampered install cannot widen the set of keys
we trust. ``--trusted-root FILE`` replaces it explicitly (and is then trusted as
given: the operator chose it).
"""

from __future__ import annotations

import hashlib
from importlib import resources
from pathlib import Path

from kedge._internal import fsutil
from kedge.errors import ConfigError, VerificationError
from kedge.verify._limits import DEFAULT, VerifyLimits

#: SHA-256 of kedge/verify/data/trusted_root.json (Sigstore public-good production,
#: as shipped in sigstore-python 4.5.1's package data).
PINNED_SHA256 = "6494e21ea73fa7ee769f85f57d5a3e6a08725eae1e38c755fc3517c9e6bc0b66"


class TrustRootError(VerificationError):
    """The trust root is missing, tampered with or malformed."""

    code = "trusted_root_invalid"


def read_bounded(path: str | Path, max_bytes: int, what: str) -> bytes:
    """Read at most ``max_bytes`` from ``path``; larger files are refused, not truncated."""
    try:
        return fsutil.read_bounded(path, max_bytes)
    except FileNotFoundError as exc:
        raise ConfigError(f"{what} {path} does not exist", code="file_not_found") from exc
    except IsADirectoryError as exc:
        raise ConfigError(f"{what} {path} is a directory", code="file_not_found") from exc
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}", code="file_unreadable") from exc
    except fsutil.FileTooLarge as exc:
        raise VerificationError(f"{what} larger than {max_bytes} bytes", code="limit_exceeded") from exc


def vendored_root_bytes() -> bytes:
    """The vendored production root, after checking it against the pinned hash."""
    data = resources.files("kedge.verify").joinpath("data/trusted_root.json").read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != PINNED_SHA256:
        raise TrustRootError(
            f"vendored trusted root hash {digest} differs from the pinned {PINNED_SHA256}",
            code="trusted_root_hash_mismatch",
        )
    return data


def load_trusted_root(path: str | Path | None = None, limits: VerifyLimits = DEFAULT):  # type: ignore[no-untyped-def]
    """Return a sigstore ``TrustedRoot`` from ``path`` or the pinned vendored copy."""
    from sigstore.errors import Error as SigstoreError

    from kedge.verify import _sigstore_adapter

    if path is None:
        data = vendored_root_bytes()
    else:
        data = read_bounded(path, limits.max_trusted_root_bytes, "trusted root")
    try:
        return _sigstore_adapter.trusted_root_from_json(data)
    except (SigstoreError, ValueError, TypeError, KeyError) as exc:
        raise TrustRootError("trusted root is malformed") from exc
