"""Newest-resourceVersion-wins, as a pure decision (no sqlite3, no clock, no I/O).

The cloud delivers each object change at least once and possibly out of order
(resends after a timeout, a second cloudcore replica, a resync racing a live
watch). The edge therefore keeps, per key ``<namespace>/<type>/<name>``, the
resourceVersion it holds and whether that version is a deletion (a *tombstone*),
and decides every incoming change against it:

===========================  ===================  =========================
stored                       incoming             decision
===========================  ===================  =========================
nothing                      insert/update/patch  APPLY
nothing                      delete               APPLY (writes a tombstone)
live or tombstone, rv < in   any                  APPLY
live or tombstone, rv > in   any                  STALE
live, rv == in               insert/update/patch  DUPLICATE
live, rv == in               delete               APPLY (see below)
tombstone, rv == in          delete               DUPLICATE
tombstone, rv == in          insert/update/patch  STALE (no resurrection) --
                                                  APPLY if ``revivable``
===========================  ===================  =========================

Why a delete at the *same* rv as the live object applies: after a reconnect the
cloud only knows that a key the edge reported is no longer wanted; it has no
deletion rv to send, so it deletes "the version you told me you hold". If a newer
version reached the edge in between, that delete is stale and ignored -- exactly
the newest-wins outcome. A tombstone never lets an insert of an older rv bring the
object back, nor one of the same rv -- except a *revivable* one: the tombstone of
such a release of a configmap or secret (the store decides which) lets the very same
version in again when a pod needs it once more. The cloud has no newer rv to send for
an unchanged object, so without this the edge would refuse it for good. The price: a
late resend of that same version could bring it back after a real deletion the
cloud expressed as a release; the cloud's next pass releases it again.

resourceVersions are compared as integers. Kubernetes calls them opaque, but
kedge's embedded API server (and etcd's revision behind a real one) hands out
increasing integers; anything that is not a canonical decimal in
``1..2**63-1`` is refused with code ``bad_resource_version`` rather than
compared as a string (``"9" > "10"``).

Tombstones cannot be kept forever; :func:`tombstones_to_prune` bounds them by
age and by count. Once pruned, a stale insert older than the deletion could
resurrect the object, so the age bound must exceed the cloud's resend horizon
(minutes); the defaults keep a day and at most 10,000.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Iterable

from kedge.errors import ProtocolError, StateError
from kedge.store import rv as rv_text

__all__ = [
    "WRITE_OPERATIONS",
    "BadResourceVersion",
    "Decision",
    "PrunePolicy",
    "UnsupportedOperation",
    "decide",
    "format_rv",
    "parse_rv",
    "tombstones_to_prune",
]

WRITE_OPERATIONS: frozenset[str] = frozenset({"insert", "update", "patch", "delete"})
MAX_RV = rv_text.MAX_RV


class BadResourceVersion(ProtocolError):
    """The peer sent a resourceVersion kedge cannot order."""

    code = "bad_resource_version"


class UnsupportedOperation(ProtocolError):
    """An operation that does not change an object (or is unknown) was given to the store."""

    code = "unsupported_operation"


class Decision(enum.Enum):
    """What to do with an incoming change; ``value`` is what the ack reports."""

    APPLY = "applied"
    STALE = "stale"
    DUPLICATE = "duplicate"


def parse_rv(rv: object) -> int:
    """A canonical decimal resourceVersion in ``1..2**63-1`` as an int, else BadResourceVersion.

    Canonical (no sign, no leading zero, no spaces) so that ``"7"`` and ``"007"``
    can never be two different versions in an inventory compared by string.
    """
    value = rv_text.parse(rv, canonical=True)
    if value is None:
        raise BadResourceVersion("resourceVersion must be a decimal integer in 1..2**63-1 without leading zeros")
    return value


def format_rv(value: int) -> str:
    """The wire form of a stored rv (inverse of :func:`parse_rv`)."""
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_RV:
        raise StateError("stored resourceVersion out of range", code="edge_store_corrupt")
    return str(value)


def decide(stored: tuple[str, bool] | None, operation: str, rv: str, *, revivable: bool = False) -> Decision:
    """Decide one change. ``stored`` is ``None`` or ``(rv, deleted)`` of what the edge holds.

    Raises :class:`UnsupportedOperation` for anything but insert/update/patch/delete
    and :class:`BadResourceVersion` for an rv that is not a canonical decimal.
    A stored rv that does not parse is our own corruption (:class:`StateError`).
    """
    if operation not in WRITE_OPERATIONS:
        raise UnsupportedOperation("only insert, update, patch and delete change the store")
    incoming = parse_rv(rv)
    if stored is None:
        return Decision.APPLY
    stored_rv, deleted = stored
    try:
        current = parse_rv(stored_rv)
    except BadResourceVersion as exc:
        raise StateError("stored resourceVersion is not canonical", code="edge_store_corrupt") from exc
    if incoming > current:
        return Decision.APPLY
    if incoming < current:
        return Decision.STALE
    is_delete = operation == "delete"
    if deleted:
        if is_delete:
            return Decision.DUPLICATE
        return Decision.APPLY if revivable else Decision.STALE
    return Decision.APPLY if is_delete else Decision.DUPLICATE


@dataclasses.dataclass(frozen=True)
class PrunePolicy:
    """How many tombstones to keep: at most ``max_count``, none older than ``max_age_s``."""

    max_age_s: float = 24 * 3600.0
    max_count: int = 10_000

    def __post_init__(self) -> None:
        if not isinstance(self.max_age_s, (int, float)) or isinstance(self.max_age_s, bool) or self.max_age_s <= 0:
            raise ValueError("max_age_s must be a positive number")
        if not isinstance(self.max_count, int) or isinstance(self.max_count, bool) or self.max_count < 0:
            raise ValueError("max_count must be a non-negative integer")


def tombstones_to_prune(
    tombstones: Iterable[tuple[str, int, float]], *, now: float, policy: PrunePolicy = PrunePolicy()
) -> list[str]:
    """Keys of tombstones ``(key, rv, deleted_at)`` to drop under ``policy`` at time ``now``.

    The newest ``max_count`` (by deletion time, then rv, then key for a total
    order) that are at most ``max_age_s`` old survive; everything else goes.
    """
    ordered = sorted(tombstones, key=lambda t: (-t[2], -t[1], t[0]))
    drop: list[str] = []
    for index, (key, _rv, deleted_at) in enumerate(ordered):
        if index >= policy.max_count or now - deleted_at > policy.max_age_s:
            drop.append(key)
    return drop
