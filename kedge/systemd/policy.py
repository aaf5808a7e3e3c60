"""The hardening policy for kedge's systemd units, and the unit-file reader it is checked with.

One policy serves two readers: :mod:`kedge.systemd.units` builds units that satisfy it and
``kedge audit`` (KEDGE-CLOUD-022 / KEDGE-EDGE-012) holds installed units -- with every
drop-in an operator added -- to it. Pure: text in, findings out; no file or process I/O.

What the policy demands is the strictest sandbox each process tolerates (the comments in
:mod:`kedge.systemd.units` say why each remaining exposure is there):

* both: ``NoNewPrivileges``, ``ProtectSystem=strict``, ``ProtectHome``, private ``/tmp``,
  devices, mounts and IPC, the kernel/cgroup/clock/hostname protections, no new namespaces,
  no realtime, no SUID/SGID files, locked personality, native system calls only, a
  ``@system-service`` system call allow-list, ``AF_INET``/``AF_INET6``/``AF_UNIX`` sockets
  only, ``UMask=0077``, no ambient capabilities, nothing of the OS tree made writable;
* cloudcore additionally: a non-root user, no capabilities at all, its own user namespace,
  ``/proc`` showing only its own processes, no W+X memory, and neither ``@privileged`` nor
  ``@resources`` system calls;
* edgecore (root: pods run as distinct uids) additionally: a capability bounding set within
  :data:`EDGE_CAPABILITIES`.

``systemd-analyze security`` scores what it knows; the policy is checked too because a
weakened unit can still score well (a drop-in ``CapabilityBoundingSet=CAP_SYS_ADMIN``
after an empty one moves cloudcore's score by 0.5 only).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Sequence

CLOUD = "cloud"
EDGE = "edge"
ROLES = (CLOUD, EDGE)
UNIT_NAMES = {CLOUD: "kedge-cloudcore.service", EDGE: "kedge-edgecore.service"}
COMMANDS = {CLOUD: "cloudcore", EDGE: "edgecore"}
# ``systemd-analyze security --offline=true UNIT``'s overall exposure, at most (DESIGN.md).
EXPOSURE_GOALS = {CLOUD: 2.0, EDGE: 4.0}

# What edgecore does with root (kedge/edge/edged): run each pod as its own uid/gid
# (setresuid/setresgid, setgroups([]), setfsuid/setfsgid to resolve paths as the pod),
# signal pods' process groups, chown pod directories and volumes, and manage files the
# pods own (logs, volumes, clean-up: DAC override; chmod of pod-owned files: FOWNER).
EDGE_CAPABILITIES = ("CAP_SETUID", "CAP_SETGID", "CAP_KILL", "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER")
ADDRESS_FAMILIES = ("AF_INET", "AF_INET6", "AF_UNIX")
SYSCALL_ALLOW = ("@system-service",)
CLOUD_SYSCALL_DENY = ("@privileged", "@resources")

MAX_UNIT_LINES = 10_000
_TRUE = {"1", "yes", "true", "on"}
_FALSE = {"0", "no", "false", "off"}

_YES = ("yes",)
_COMMON: dict[str, tuple[str, ...]] = {
    "NoNewPrivileges": _YES,
    "ProtectSystem": ("strict",),
    "ProtectHome": ("yes", "tmpfs"),  # tmpfs: an empty /home, with BindPaths= for what the unit needs
    "PrivateTmp": _YES,
    "PrivateDevices": _YES,
    "PrivateMounts": _YES,
    "PrivateIPC": _YES,
    "ProtectKernelTunables": _YES,
    "ProtectKernelModules": _YES,
    "ProtectKernelLogs": _YES,
    "ProtectControlGroups": _YES,
    "ProtectClock": _YES,
    "ProtectHostname": _YES,
    "RestrictNamespaces": _YES,
    "RestrictRealtime": _YES,
    "RestrictSUIDSGID": _YES,
    "LockPersonality": _YES,
    "SystemCallArchitectures": ("native",),
}
REQUIRED: dict[str, dict[str, tuple[str, ...]]] = {
    CLOUD: {**_COMMON, "PrivateUsers": _YES, "ProtectProc": ("invisible",), "ProcSubset": ("pid",),
            "MemoryDenyWriteExecute": _YES, "RemoveIPC": _YES},
    EDGE: dict(_COMMON),
}
# Trees no kedge process writes: a ReadWritePaths= entry equal to or under one of these
# (or equal to one of _BROAD) undoes ProtectSystem=strict.
_SYSTEM_TREES = ("/etc", "/usr", "/boot", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/efi", "/proc", "/sys")
_BROAD = ("/", "/var", "/var/lib", "/opt", "/srv", "/run")

_LIST_KEYS = ("SystemCallFilter", "RestrictAddressFamilies", "CapabilityBoundingSet", "AmbientCapabilities",
              "ReadWritePaths")
_EXPOSURE = re.compile(r"Overall exposure level for \S+: ([0-9]+(?:\.[0-9]+)?)")


@dataclasses.dataclass(frozen=True)
class Assignment:
    section: str
    key: str
    value: str
    source: str  # the file it came from


@dataclasses.dataclass(frozen=True)
class FilterList:
    """A systemd allow/deny list (SystemCallFilter=, RestrictAddressFamilies=) after merging."""

    mode: str  # "allow" | "deny"
    allowed: frozenset[str] = frozenset()  # allow mode: what is allowed
    denied: frozenset[str] = frozenset()  # what was taken away (deny mode: the deny-list)


@dataclasses.dataclass(frozen=True)
class CapSet:
    """A capability set after merging: ``everything_but`` means all capabilities except ``caps``."""

    caps: frozenset[str]
    everything_but: bool = False


@dataclasses.dataclass(frozen=True)
class Effective:
    """The ``[Service]`` settings in force after the unit and its drop-ins, as systemd merges them."""

    scalars: dict[str, str]
    syscall_filter: FilterList | None = None
    address_families: FilterList | None = None
    bounding_set: CapSet | None = None  # None: not restricted (every capability)
    ambient: CapSet | None = None  # None: none
    read_write_paths: tuple[str, ...] = ()


class UnitSyntaxError(ValueError):
    """The unit text is not a unit file (or is absurdly long)."""


def parse(text: str, source: str = "") -> list[Assignment]:
    """Assignments of a unit file or drop-in, in order (comments, blank lines dropped).

    Lines ending in a backslash continue on the next line, as in systemd; a line outside
    any section, or a key without ``=``, is a :class:`UnitSyntaxError`.
    """
    lines = text.splitlines()
    if len(lines) > MAX_UNIT_LINES:
        raise UnitSyntaxError(f"more than {MAX_UNIT_LINES} lines")
    out: list[Assignment] = []
    section = ""
    pending = ""
    for raw in lines:
        line = raw.strip()
        if line[:1] in ("#", ";") or (not line and not pending):
            continue  # comments may sit between continuation lines, too
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = (pending + line).strip(), ""
        if not line:
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1].strip()
            continue
        if not section or "=" not in line:
            raise UnitSyntaxError(f"not a unit file line: {line[:60]!r}")
        key, _, value = line.partition("=")
        out.append(Assignment(section, key.strip(), value.strip(), source))
    return out


def _norm(value: str) -> str:
    v = value.strip().lower()
    if v in _TRUE:
        return "yes"
    if v in _FALSE:
        return "no"
    return v


def _items(value: str) -> tuple[bool, list[str]]:
    invert = value.startswith("~")
    body = value[1:] if invert else value
    # SystemCallFilter= entries may carry ":errno"; the name is what matters here.
    return invert, [w.split(":", 1)[0] for w in body.split()]


def _merge_filter(state: FilterList | None, value: str) -> FilterList | None:
    if not value:
        return None
    invert, items = _items(value)
    names = frozenset(i for i in items if i != "none")
    if state is None:
        state = FilterList(mode="deny" if invert else "allow")
    if state.mode == "allow":
        if invert:
            return dataclasses.replace(state, allowed=state.allowed - names, denied=state.denied | names)
        return dataclasses.replace(state, allowed=state.allowed | names, denied=state.denied - names)
    if invert:
        return dataclasses.replace(state, denied=state.denied | names)
    return dataclasses.replace(state, denied=state.denied - names)


def _merge_caps(state: CapSet | None, value: str) -> CapSet:
    if not value:
        return CapSet(frozenset())
    invert, items = _items(value)
    names = frozenset(i.upper() for i in items)
    if not names:  # "~" alone: every capability (systemd replaces the set with the complement of none)
        return CapSet(frozenset(), everything_but=invert)
    if invert:
        if state is None or state.everything_but:
            return CapSet((state.caps if state else frozenset()) | names, everything_but=True)
        return CapSet(state.caps - names)
    if state is None:
        return CapSet(names)
    if state.everything_but:
        return CapSet(state.caps - names, everything_but=True)
    return CapSet(state.caps | names)


def merge(assignments: Iterable[Assignment]) -> Effective:
    """The ``[Service]`` settings in force: the last scalar wins and an empty one resets it;
    list settings accumulate, an empty assignment resets them (systemd.exec(5))."""
    scalars: dict[str, str] = {}
    sc: FilterList | None = None
    af: FilterList | None = None
    bounding: CapSet | None = None
    ambient: CapSet | None = None
    rw: list[str] = []
    for a in assignments:
        if a.section != "Service":
            continue
        if a.key == "SystemCallFilter":
            sc = _merge_filter(sc, a.value)
        elif a.key == "RestrictAddressFamilies":
            af = _merge_filter(af, a.value)
        elif a.key == "CapabilityBoundingSet":
            bounding = _merge_caps(bounding, a.value)
        elif a.key == "AmbientCapabilities":
            ambient = _merge_caps(ambient, a.value) if a.value else None
        elif a.key == "ReadWritePaths":
            rw = [] if not a.value else rw + [p.lstrip("-+") for p in _unquote_words(a.value)]
        elif not a.value:
            scalars.pop(a.key, None)
        else:
            scalars[a.key] = a.value
    return Effective(scalars=scalars, syscall_filter=sc, address_families=af, bounding_set=bounding,
                     ambient=ambient, read_write_paths=tuple(rw))


def _unquote_words(value: str) -> list[str]:
    words: list[str] = []
    for m in re.finditer(r'"((?:[^"\\]|\\.)*)"|(\S+)', value):
        words.append(re.sub(r"\\(.)", r"\1", m.group(1)) if m.group(1) is not None else m.group(2))
    return words


def _under(path: str, tree: str) -> bool:
    return path == tree or path.startswith(tree.rstrip("/") + "/")


def evaluate(role: str, eff: Effective) -> list[str]:
    """Every way ``eff`` falls short of ``role``'s policy (empty: it complies)."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}")
    problems: list[str] = []
    for key, accepted in REQUIRED[role].items():
        got = eff.scalars.get(key)
        if got is None or _norm(got) not in accepted:
            problems.append(f"{key}={'|'.join(accepted)} (is {'unset' if got is None else got!r})")
    umask = eff.scalars.get("UMask")
    try:
        umask_ok = umask is not None and int(umask, 8) & 0o077 == 0o077
    except ValueError:
        umask_ok = False
    if not umask_ok:
        problems.append(f"UMask=0077 (is {umask or 'unset'})")
    if role == CLOUD:
        user = eff.scalars.get("User", "")
        dynamic = _norm(eff.scalars.get("DynamicUser", "no")) == "yes"
        if not dynamic and user in ("", "root", "0"):
            problems.append(f"User= a dedicated non-root user (is {user or 'unset, so root'})")
    problems += _check_syscalls(role, eff.syscall_filter)
    fam = eff.address_families
    if fam is None or fam.mode != "allow" or not fam.allowed <= set(ADDRESS_FAMILIES):
        extra = sorted(fam.allowed - set(ADDRESS_FAMILIES)) if fam and fam.mode == "allow" else []
        problems.append(f"RestrictAddressFamilies= an allow-list within {' '.join(ADDRESS_FAMILIES)}"
                        + (f" (also allows {' '.join(extra)})" if extra else " (is not an allow-list)"))
    allowed_caps = frozenset() if role == CLOUD else frozenset(EDGE_CAPABILITIES)
    b = eff.bounding_set
    if b is None or b.everything_but or not b.caps <= allowed_caps:
        have = "unrestricted" if b is None or b.everything_but else " ".join(sorted(b.caps - allowed_caps))
        problems.append(f"CapabilityBoundingSet={' '.join(sorted(allowed_caps)) or '(empty)'} (has {have})")
    if eff.ambient is not None and (eff.ambient.everything_but or eff.ambient.caps):
        problems.append("AmbientCapabilities= empty (grants " + ("everything" if eff.ambient.everything_but
                                                                 else " ".join(sorted(eff.ambient.caps))) + ")")
    for path in eff.read_write_paths:
        if path in _BROAD or any(_under(path, t) for t in _SYSTEM_TREES):
            problems.append(f"ReadWritePaths= no OS tree (makes {path} writable)")
    return problems


def _check_syscalls(role: str, sc: FilterList | None) -> list[str]:
    if sc is None or sc.mode != "allow":
        return ["SystemCallFilter=@system-service (an allow-list; is "
                + ("unset" if sc is None else "a deny-list") + ")"]
    out = []
    extra = sorted(sc.allowed - set(SYSCALL_ALLOW))
    if extra:
        out.append(f"SystemCallFilter= nothing beyond {' '.join(SYSCALL_ALLOW)} (adds {' '.join(extra)})")
    if not set(SYSCALL_ALLOW) <= sc.allowed:
        out.append(f"SystemCallFilter={' '.join(SYSCALL_ALLOW)} (allows {' '.join(sorted(sc.allowed)) or 'nothing'})")
    if role == CLOUD:
        missing = sorted(set(CLOUD_SYSCALL_DENY) - sc.denied)
        if missing:
            out.append(f"SystemCallFilter=~{' '.join(CLOUD_SYSCALL_DENY)} (does not take away {' '.join(missing)})")
    return out


def check_unit(role: str, texts: Sequence[tuple[str, str]]) -> list[str]:
    """:func:`evaluate` a unit given as ``(source, text)`` pairs: the unit file, then its drop-ins in order."""
    assignments: list[Assignment] = []
    for source, text in texts:
        assignments += parse(text, source)
    return evaluate(role, merge(assignments))


def parse_exposure(output: str) -> float:
    """The overall exposure from ``systemd-analyze security`` output (ValueError if absent)."""
    m = _EXPOSURE.search(output)
    if m is None:
        raise ValueError("no 'Overall exposure level' line")
    return float(m.group(1))
