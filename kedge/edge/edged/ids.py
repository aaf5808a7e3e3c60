"""Which uid/gid a pod runs as -- pure decisions.

The process runtime confines pods to one another only by identity: every pod gets a
uid (and a gid of the same number) of its own, taken from the node's configured range
(edge config ``pod_uid_range``, default :data:`DEFAULT_POD_UID_RANGE`). Distinct uids
are what keep one pod from reading another's files, ``/proc/<pid>/environ`` and
memory, and from signalling or ptracing it.

Rules, each a refusal with a reason on the pod's status rather than a silent fix:

- edgecore must be root: without it pods could only run as edgecore's own user, which
  can read the node's key and store (:data:`RUNTIME_NEEDS_ROOT`);
- ``runAsUser``, ``runAsGroup`` and ``fsGroup`` must lie inside the range -- so never 0,
  never a system group such as ``disk`` (6) or ``shadow`` (42) -- and ``runAsNonRoot:
  false`` (a request for root) is refused; so are ``supplementalGroups`` (a pod runs with
  no supplementary groups at all) (:data:`RUN_AS_REFUSED`);
- a pod has one identity: containers asking for different users, or an ``fsGroup`` other
  than the pod's group, are refused (the runtime has no supplementary groups to give);
- an id another live pod holds is not given out, requested or not; the pod waits
  (``CreateContainerConfigError``) until it is free.

Pure: no I/O, no clock. Reading ``/etc/passwd`` and friends is the caller's job; the
parsers here take their text.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Collection, Iterable, Sequence

from kedge.edge.edged.content import ContainerConfigError
from kedge.edge.edged.plan import CONFIG_ERROR, RUN_AS_REFUSED, RUNTIME_NEEDS_ROOT
from kedge.edge.edged.spec import PodDef

# 65536 ids above every 16-bit id (system users, human users, nobody, systemd's dynamic
# users) and below systemd-nspawn's first automatic container range (524288).
DEFAULT_POD_UID_RANGE = "200000-265535"
MIN_POD_ID = 65536  # 0..65535 hold root, system and human accounts, nobody (65534) and -1 (65535)
MAX_POD_ID = 2**31 - 2  # ids must stay positive in a signed 32-bit int; 2**32-1 is (uid_t)-1
_RANGE = re.compile(r"([1-9][0-9]{0,9})-([1-9][0-9]{0,9})")


class IdRefused(ContainerConfigError):
    """The pod asks for an identity this node will not give it (``reason`` goes on its status)."""

    code = "pod_identity_refused"

    def __init__(self, message: str, *, reason: str = RUN_AS_REFUSED) -> None:
        super().__init__(message, reason=reason)


@dataclasses.dataclass(frozen=True)
class IdRange:
    """An inclusive range of ids for pods, ``first-last``."""

    first: int
    last: int

    def __post_init__(self) -> None:
        if not MIN_POD_ID <= self.first <= self.last <= MAX_POD_ID:
            raise ValueError(f"a pod id range must satisfy {MIN_POD_ID} <= first <= last <= {MAX_POD_ID}")

    def __contains__(self, value: object) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and self.first <= value <= self.last

    @property
    def size(self) -> int:
        return self.last - self.first + 1

    def __str__(self) -> str:
        return f"{self.first}-{self.last}"


def parse_id_range(text: object) -> IdRange:
    """``"FIRST-LAST"`` (decimal, no sign, no spaces, no leading zeros) -> :class:`IdRange`.

    Raises ``ValueError`` for anything else, and for ranges that reach below
    :data:`MIN_POD_ID` or above :data:`MAX_POD_ID`.
    """
    if not isinstance(text, str):
        raise ValueError("a pod id range must be a string FIRST-LAST")
    m = _RANGE.fullmatch(text)
    if m is None:
        raise ValueError(f"a pod id range must look like {DEFAULT_POD_UID_RANGE!r}")
    return IdRange(int(m.group(1)), int(m.group(2)))


@dataclasses.dataclass(frozen=True)
class IdRequest:
    """What a pod's securityContexts ask for, once checked (``None``: allocate)."""

    uid: int | None = None
    gid: int | None = None


def _check_id(value: int | None, what: str, rng: IdRange) -> None:
    if value is None:
        return
    if value == 0:
        raise IdRefused(f"{what} 0 (root) is refused: pods never run as root on this node")
    if value not in rng:
        raise IdRefused(f"{what} {value} is outside this node's pod id range {rng}")


def pod_request(pod: PodDef, rng: IdRange) -> IdRequest:
    """The identity ``pod`` asks for, or :class:`IdRefused` saying why it cannot have it."""
    users = {c.run_as_user for c in pod.containers}
    groups = {c.run_as_group for c in pod.containers}
    for c in pod.containers:
        _check_id(c.run_as_user, f"container {c.name}: runAsUser", rng)
        _check_id(c.run_as_group, f"container {c.name}: runAsGroup", rng)
        if c.run_as_non_root is False:
            raise IdRefused(f"container {c.name}: runAsNonRoot: false asks for root, which this node "
                            "never gives")
    _check_id(pod.fs_group, "fsGroup", rng)
    if pod.supplemental_groups:
        raise IdRefused("supplementalGroups are refused: pods run without supplementary groups")
    if len(users) > 1 or len(groups) > 1:
        raise IdRefused("containers of one pod ask for different users or groups: the process "
                        "runtime gives a pod one identity")
    uid, gid = users.pop(), groups.pop()
    if pod.fs_group is not None and pod.fs_group != (gid if gid is not None else uid):
        if gid is not None or uid is not None:
            raise IdRefused(f"fsGroup {pod.fs_group} differs from the pod's group: the process runtime "
                            "has no supplementary groups to give")
        gid = pod.fs_group  # only fsGroup given: it becomes the pod's group
    return IdRequest(uid, gid)


def check_runtime(euid: int) -> None:
    """Pods run only under a root edgecore (which can give each its own uid)."""
    if euid != 0:
        raise IdRefused(
            f"edgecore runs as uid {euid}, not root: the process runtime confines each pod to a uid "
            "of its own and needs root for that; this node runs no pods until edgecore runs as root",
            reason=RUNTIME_NEEDS_ROOT)


def _blocked(value: int, held: Collection[int], excluded: Sequence[tuple[int, int]]) -> int | None:
    """``None`` if ``value`` is free, else the last id of the block it falls in."""
    if value in held:
        return value
    for lo, hi in excluded:
        if lo <= value <= hi:
            return hi
    return None


def allocate(rng: IdRange, held: Collection[int], *, after: int | None = None,
             excluded: Sequence[tuple[int, int]] = ()) -> int | None:
    """The first id of ``rng`` after ``after`` (wrapping) that is neither ``held`` nor
    ``excluded`` (inclusive ``(lo, hi)`` blocks), or ``None`` if there is none.

    Allocating after the last id handed out (rather than the lowest free one) delays the
    reuse of a deleted pod's uid as long as the range allows: files it left where any
    user may write (``/tmp``, ``/dev/shm``) would belong to the next pod given its uid.
    """
    start = after + 1 if after is not None and after in rng and after < rng.last else rng.first
    excluded = sorted((max(lo, rng.first), min(hi, rng.last)) for lo, hi in excluded
                      if hi >= rng.first and lo <= rng.last)
    value, wrapped = start, False
    while True:
        if value > rng.last:
            if wrapped:
                return None
            value, wrapped = rng.first, True
        if wrapped and value >= start:
            return None
        block_end = _blocked(value, held, excluded)
        if block_end is None:
            return value
        value = block_end + 1


def choose_ids(request: IdRequest, current: tuple[int, int] | None, others: Collection[int],
               rng: IdRange, *, after: int | None = None,
               excluded: Sequence[tuple[int, int]] = ()) -> tuple[int, int]:
    """The pod's (uid, gid): what it already has, else what it asked for, else a fresh id.

    ``current`` is the identity the pod was given before (kept across edgecore restarts);
    it never changes -- as in Kubernetes, where a pod's securityContext is immutable -- so
    a request that differs from it is refused. ``others`` are the ids every other live
    pod holds (as uid or gid: the numbers are one pool); an id another pod holds is never
    given out, and a request for one waits (``CreateContainerConfigError``) until it is free.
    """
    if current is not None:
        uid = request.uid if request.uid is not None else current[0]
        gid = request.gid if request.gid is not None else uid
        if (uid, gid) != current:
            raise IdRefused(f"the pod runs as {current[0]}:{current[1]} and a pod's identity does not "
                            f"change (asked for {uid}:{gid})")
    elif request.uid is not None:
        uid = request.uid
    else:
        fresh = allocate(rng, set(others) | ({request.gid} if request.gid is not None else set()),
                         after=after, excluded=excluded)
        if fresh is None:
            raise IdRefused(f"no free id left in this node's pod id range {rng}", reason=CONFIG_ERROR)
        uid = fresh
    gid = request.gid if request.gid is not None else uid
    for what, value in (("user", uid), ("group", gid)):
        if any(lo <= value <= hi for lo, hi in excluded):
            raise IdRefused(f"{what} id {value} belongs to a local account or subordinate id range "
                            "(/etc/passwd, /etc/group, /etc/subuid, /etc/subgid)")
        if value in others:
            raise IdRefused(f"{what} id {value} is held by another pod on this node", reason=CONFIG_ERROR)
    return uid, gid


# --- local account databases (text in, ids out) ----------------------------------------


def passwd_ids(text: str) -> set[int]:
    """uids (``/etc/passwd``) or gids (``/etc/group``) named in an account file: the third field."""
    out = set()
    for line in text.splitlines():
        parts = line.split(":")
        if len(parts) >= 3 and parts[2].isdigit():
            out.add(int(parts[2]))
    return out


def subid_blocks(text: str) -> list[tuple[int, int]]:
    """Inclusive blocks of ``/etc/subuid`` / ``/etc/subgid`` (``name:first:count``)."""
    out = []
    for line in text.splitlines():
        parts = line.strip().split(":")
        if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit() and int(parts[2]) > 0:
            first = int(parts[1])
            out.append((first, first + int(parts[2]) - 1))
    return out


def excluded_blocks(ids: Iterable[int], blocks: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """Single ids and blocks, as one sorted list of inclusive blocks."""
    return sorted({(i, i) for i in ids} | set(blocks))
