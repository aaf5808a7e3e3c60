"""Pod Security Admission: the Pod Security Standards as Kubernetes defines and enforces them.

Pure: a pod's metadata and spec (JSON as stored) and the namespace's labels in, a decision out.
No I/O, no clock, no store; the admission shell (:mod:`kedge.apiserver.admission`) feeds it.

What is ported (written anew from the semantics of Kubernetes' ``pod-security-admission``
module -- ``policy/check_*.go``, ``policy/registry.go``, ``api/helpers.go`` and
``admission/admission.go``):

- the three levels ``privileged`` < ``baseline`` < ``restricted`` and every check of the
  baseline and restricted profiles, each with its versions (a namespace pinned to
  ``v1.X`` is judged by the checks as they were in that version; ``latest`` and any version
  newer than :data:`MAX_MINOR` by the newest), including the restricted checks that replace a
  baseline one (``capabilities``, ``seccompProfile``, ``hostPath`` volumes, ``procMount``);
- the forbidden reasons and details word for word, in Kubernetes' order (baseline checks by
  id, then restricted ones), so that messages read as a real API server's;
- the namespace labels ``pod-security.kubernetes.io/{enforce,audit,warn}[-version]`` with the
  same defaulting (warn follows an explicitly stricter enforce) and the same treatment of
  invalid values (an unreadable enforce level means ``restricted``; an unreadable audit or
  warn level means ``privileged``; an unreadable version means ``latest``);
- which pod updates are evaluated (:func:`is_significant_pod_update`) and the warnings a
  new enforce level on a namespace gives about the pods already in it.

kedge's defaults: no exemptions (no user, namespace or runtime class is exempt -- Kubernetes'
own default), and the cluster's default policy is ``enforce=<cluster level>:latest`` (from
``kedge init --pod-security``, baseline unless told otherwise) with ``audit`` and ``warn``
privileged, as an AdmissionConfiguration ``defaults`` stanza would say.

Where the JSON holds something Kubernetes' typed decoder would have refused (a field of the
wrong type, a volume with two sources), a check fails closed: it counts as a violation.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

PRIVILEGED, BASELINE, RESTRICTED = "privileged", "baseline", "restricted"
LEVELS = (PRIVILEGED, BASELINE, RESTRICTED)

LABEL_PREFIX = "pod-security.kubernetes.io/"
ENFORCE_LABEL = LABEL_PREFIX + "enforce"
ENFORCE_VERSION_LABEL = LABEL_PREFIX + "enforce-version"
AUDIT_LABEL = LABEL_PREFIX + "audit"
AUDIT_VERSION_LABEL = LABEL_PREFIX + "audit-version"
WARN_LABEL = LABEL_PREFIX + "warn"
WARN_VERSION_LABEL = LABEL_PREFIX + "warn-version"

# Audit annotations (the keys Kubernetes' API server writes into its audit events).
ENFORCE_POLICY_ANNOTATION = LABEL_PREFIX + "enforce-policy"
AUDIT_VIOLATIONS_ANNOTATION = LABEL_PREFIX + "audit-violations"
ERROR_ANNOTATION = LABEL_PREFIX + "error"

# The newest policy version whose checks are defined here (the minor of Kubernetes v1.37).
MAX_MINOR = 37
# A new enforce level on a namespace is tried on at most this many of its pods (Kubernetes'
# default for the same check).
NAMESPACE_MAX_PODS_TO_CHECK = 3000
# The reason given for a check that refused without saying why (never expected).
UNKNOWN_REASON = "unknown forbidden reason"

Obj = Mapping[str, Any]


# -- levels, versions, policies --------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Version:
    """A policy version: ``v1.<minor>``, or ``latest`` (``minor`` None)."""

    minor: int | None = None

    def __str__(self) -> str:
        return "latest" if self.minor is None else f"v1.{self.minor}"

    @property
    def effective_minor(self) -> int:
        """The minor whose checks apply: ``latest`` and future versions are judged as the newest."""
        return MAX_MINOR if self.minor is None else min(self.minor, MAX_MINOR)


LATEST = Version()


@dataclasses.dataclass(frozen=True)
class LevelVersion:
    level: str
    version: Version = LATEST

    def __str__(self) -> str:
        return f"{self.level}:{self.version}"

    def equivalent(self, other: LevelVersion) -> bool:
        return (self.level == PRIVILEGED and other.level == PRIVILEGED) or self == other


@dataclasses.dataclass(frozen=True)
class Policy:
    enforce: LevelVersion
    audit: LevelVersion = LevelVersion(PRIVILEGED)
    warn: LevelVersion = LevelVersion(PRIVILEGED)

    @property
    def fully_privileged(self) -> bool:
        return self.enforce.level == self.audit.level == self.warn.level == PRIVILEGED


def default_policy(level: str) -> Policy:
    """The cluster default: ``enforce=<level>:latest``, audit and warn privileged."""
    if level not in LEVELS:
        raise ValueError(f"pod security level must be one of {', '.join(LEVELS)}, not {level!r}")
    return Policy(enforce=LevelVersion(level))


@dataclasses.dataclass(frozen=True)
class LabelError:
    """A pod-security label whose value cannot be read (reported as Kubernetes' field error)."""

    label: str
    value: str
    message: str

    def __str__(self) -> str:
        return f"metadata.labels[{self.label}]: Invalid value: {go_quote(self.value)}: {self.message}"


def parse_level(text: str) -> tuple[str, str | None]:
    """``(level, error)``: an unknown level reads as ``restricted`` (with an error)."""
    if text in LEVELS:
        return text, None
    return RESTRICTED, "must be one of " + ", ".join(LEVELS)


_VERSION = re.compile(r"v1\.(0|[1-9][0-9]*)")


def parse_version(text: str) -> tuple[Version, str | None]:
    """``(version, error)``: ``latest`` or ``v1.<minor>``; anything else reads as latest (with an error)."""
    if text == "latest":
        return LATEST, None
    m = _VERSION.fullmatch(text)
    # Go's Atoi refuses what does not fit an int; a minor that long is not a version either.
    if m is None or len(m.group(1)) > 18:
        return LATEST, 'must be "latest" or "v1.x"'
    return Version(int(m.group(1))), None


def compare_levels(a: str, b: str) -> int:
    """-1, 0 or 1 as ``a`` is less strict than, as strict as, or stricter than ``b``."""
    return (LEVELS.index(a) > LEVELS.index(b)) - (LEVELS.index(a) < LEVELS.index(b))


def policy_to_evaluate(labels: Mapping[str, Any] | None, defaults: Policy) -> tuple[Policy, list[LabelError]]:
    """The namespace's effective policy from its labels over ``defaults``, and the unreadable labels.

    A policy is always returned: an unreadable enforce level enforces ``restricted`` (fail
    closed), an unreadable audit or warn level is ``privileged`` (fail open, as those only
    report), an unreadable version is ``latest``. When enforce is set explicitly to a level
    stricter than warn and warn is not set, warn follows enforce.
    """
    errors: list[LabelError] = []
    if not labels:
        return defaults, errors
    enforce, audit, warn = defaults.enforce, defaults.audit, defaults.warn

    def text(key: str) -> str | None:
        value = labels.get(key)
        return None if value is None else str(value)

    def level_of(key: str, current: LevelVersion, fail_open: bool) -> tuple[LevelVersion, bool]:
        value = text(key)
        if value is None:
            return current, False
        level, err = parse_level(value)
        if err is not None:
            errors.append(LabelError(key, value, err))
            level = PRIVILEGED if fail_open else level
        return dataclasses.replace(current, level=level), err is None

    def version_of(key: str, current: LevelVersion) -> tuple[LevelVersion, bool]:
        value = text(key)
        if value is None:
            return current, False
        version, err = parse_version(value)
        if err is not None:
            errors.append(LabelError(key, value, err))
        return dataclasses.replace(current, version=version), True

    enforce, has_enforce_level = level_of(ENFORCE_LABEL, enforce, fail_open=False)
    enforce, _ = version_of(ENFORCE_VERSION_LABEL, enforce)
    audit, _ = level_of(AUDIT_LABEL, audit, fail_open=True)
    audit, _ = version_of(AUDIT_VERSION_LABEL, audit)
    has_warn_level = text(WARN_LABEL) is not None
    warn, _ = level_of(WARN_LABEL, warn, fail_open=True)
    warn, has_warn_version = version_of(WARN_VERSION_LABEL, warn)
    if not has_warn_level and has_enforce_level and compare_levels(enforce.level, warn.level) > 0:
        warn = LevelVersion(enforce.level, warn.version if has_warn_version else enforce.version)
    return Policy(enforce, audit, warn), errors


# -- check results ---------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Violation:
    """One check's refusal: a short reason, and details naming what was refused (may be empty)."""

    reason: str
    detail: str = ""


@dataclasses.dataclass(frozen=True)
class Result:
    """Every check's verdict on one pod at one level and version."""

    violations: tuple[Violation, ...] = ()

    @property
    def allowed(self) -> bool:
        return not self.violations

    def forbidden_reason(self) -> str:
        """``host ports, privileged`` -- the reasons only (namespace-wide warnings)."""
        return ", ".join(v.reason for v in self.violations)

    def forbidden_detail(self) -> str:
        """``hostPort (container "c" uses hostPort 80), privileged (...)`` -- reasons with details."""
        return ", ".join(f"{v.reason} ({v.detail})" if v.detail else v.reason for v in self.violations)


# -- helpers over pod JSON -------------------------------------------------------------------------


def _obj(value: Any) -> Obj:
    return value if isinstance(value, Mapping) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _set(value: Any) -> bool:
    """Whether an optional field is present (Go: the pointer is not nil)."""
    return value is not None


def _containers(spec: Obj) -> Iterator[Obj]:
    """Init containers, containers, then ephemeral containers (Kubernetes' visiting order)."""
    for key in ("initContainers", "containers", "ephemeralContainers"):
        for c in _list(spec.get(key)):
            yield _obj(c)


def _name(container: Obj) -> str:
    return _str(container.get("name"))


def _security_context(container: Obj) -> Obj | None:
    sc = container.get("securityContext")
    return None if sc is None else _obj(sc)


def _plural(singular: str, plural: str, count: int) -> str:
    return singular if count == 1 else plural


def _join_quote(items: Iterable[str]) -> str:
    items = list(items)
    return '"' + '", "'.join(items) + '"' if items else ""


def _is_windows(spec: Obj) -> bool:
    return _obj(spec.get("os")).get("name") == "windows"


def _user_namespaced(spec: Obj) -> bool:
    """The pod runs in a user namespace (``hostUsers: false``): some restricted checks relax."""
    return spec.get("hostUsers") is False


def _is_zero(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == 0


_ESCAPES = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\v": "\\v",
            "\\": "\\\\", '"': '\\"'}


def go_quote(text: str) -> str:
    """Go's ``%q`` of a string: double-quoted, with control and non-printable characters escaped."""
    out = ['"']
    for ch in text:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ch.isprintable():
            out.append(ch)
        elif ord(ch) < 0x80:
            out.append(f"\\x{ord(ch):02x}")
        elif 0xD800 <= ord(ch) <= 0xDFFF:  # a lone surrogate: Go sees invalid UTF-8, the replacement rune
            out.append("\\ufffd")
        elif ord(ch) <= 0xFFFF:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(f"\\U{ord(ch):08x}")
    out.append('"')
    return "".join(out)


def _setters(pod_bad: bool, containers: Sequence[str]) -> list[str]:
    """``["pod", 'containers "a", "b"']`` -- who set a forbidden value."""
    out = ["pod"] if pod_bad else []
    if containers:
        out.append(f"{_plural('container', 'containers', len(containers))} {_join_quote(containers)}")
    return out


CheckFn = Callable[[Obj, Obj], "Violation | None"]


# -- baseline checks -------------------------------------------------------------------------------

_APPARMOR_ANNOTATION_PREFIX = "container.apparmor.security.beta.kubernetes.io/"


def _apparmor_profile(meta: Obj, spec: Obj) -> Violation | None:
    def bad_type(profile: Any) -> str | None:
        t = _obj(profile).get("type")
        return None if t in ("RuntimeDefault", "Localhost") else _str(t)

    bad_values: set[str] = set()
    pod_bad = False
    pod_profile = _obj(spec.get("securityContext")).get("appArmorProfile")
    if _set(pod_profile):
        t = bad_type(pod_profile)
        if t is not None:
            pod_bad = True
            bad_values.add(t)
    bad_containers = []
    for c in _containers(spec):
        sc = _security_context(c)
        if sc is not None and _set(sc.get("appArmorProfile")):
            t = bad_type(sc.get("appArmorProfile"))
            if t is not None:
                bad_containers.append(_name(c))
                bad_values.add(t)
    setters = _setters(pod_bad, bad_containers)
    values = sorted(bad_values)
    annotations = sorted(
        f"{k}={go_quote(_str(v))}" for k, v in _obj(meta.get("annotations")).items()
        if isinstance(k, str) and k.startswith(_APPARMOR_ANNOTATION_PREFIX)
        and not (_str(v) in ("", "runtime/default") or _str(v).startswith("localhost/")))
    if annotations:
        values += annotations
        setters.append(_plural("annotation", "annotations", len(annotations)))
    if not setters:
        return None
    return Violation(_plural("forbidden AppArmor profile", "forbidden AppArmor profiles", len(values)),
                     f"{' and '.join(setters)} must not set AppArmor profile type to {_join_quote(values)}")


_DEFAULT_CAPABILITIES = frozenset({
    "AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD", "NET_BIND_SERVICE",
    "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT"})


def _capabilities(container: Obj) -> Obj | None:
    sc = _security_context(container)
    caps = None if sc is None else sc.get("capabilities")
    return None if caps is None else _obj(caps)


def _capabilities_baseline(meta: Obj, spec: Obj) -> Violation | None:
    bad_containers, added = [], set()
    for c in _containers(spec):
        caps = _capabilities(c)
        if caps is None:
            continue
        bad = {str(cap) for cap in _list(caps.get("add")) if _str(cap) not in _DEFAULT_CAPABILITIES}
        if bad:
            bad_containers.append(_name(c))
            added |= bad
    if not bad_containers:
        return None
    return Violation("non-default capabilities",
                     f"{_plural('container', 'containers', len(bad_containers))} {_join_quote(bad_containers)} "
                     f"must not include {_join_quote(sorted(added))} in securityContext.capabilities.add")


def _host_namespaces(meta: Obj, spec: Obj) -> Violation | None:
    used = [f"{key}=true" for key in ("hostNetwork", "hostPID", "hostIPC") if spec.get(key) is True]
    return Violation("host namespaces", ", ".join(used)) if used else None


def _host_path_volumes(meta: Obj, spec: Obj) -> Violation | None:
    names = [_str(_obj(v).get("name")) for v in _list(spec.get("volumes")) if _set(_obj(v).get("hostPath"))]
    if not names:
        return None
    return Violation("hostPath volumes", f"{_plural('volume', 'volumes', len(names))} {_join_quote(names)}")


def _host_ports(meta: Obj, spec: Obj) -> Violation | None:
    bad_containers, ports = [], set()
    for c in _containers(spec):
        bad = False
        for port in _list(c.get("ports")):
            hp = _obj(port).get("hostPort")
            if hp is not None and not _is_zero(hp):
                bad = True
                ports.add(str(int(hp)) if isinstance(hp, (int, float)) and not isinstance(hp, bool) else str(hp))
        if bad:
            bad_containers.append(_name(c))
    if not bad_containers:
        return None
    return Violation("hostPort", " ".join((
        _plural("container", "containers", len(bad_containers)), _join_quote(bad_containers),
        _plural("uses", "use", len(bad_containers)), _plural("hostPort", "hostPorts", len(ports)),
        ", ".join(sorted(ports)))))


def _handler_hosts(handler: Any) -> list[str]:
    h = _obj(handler)
    return [host for host in (_obj(h.get("httpGet")).get("host"), _obj(h.get("tcpSocket")).get("host"))
            if host is not None and host != ""]


def _host_probes_and_lifecycle(meta: Obj, spec: Obj) -> Violation | None:
    bad_containers: set[str] = set()
    hosts: set[str] = set()
    for c in _containers(spec):
        lifecycle = _obj(c.get("lifecycle"))
        for handler in (c.get("livenessProbe"), c.get("readinessProbe"), c.get("startupProbe"),
                        lifecycle.get("postStart"), lifecycle.get("preStop")):
            found = _handler_hosts(handler)
            if found:
                bad_containers.add(_name(c))
                hosts.update(str(h) for h in found)
    if not bad_containers:
        return None
    return Violation("probe or lifecycle host", " ".join((
        _plural("container", "containers", len(bad_containers)), _join_quote(sorted(bad_containers)),
        _plural("uses", "use", len(bad_containers)),
        _plural("probe or lifecycle host", "probe or lifecycle hosts", len(hosts)), _join_quote(sorted(hosts)))))


def _privileged(meta: Obj, spec: Obj) -> Violation | None:
    bad = [_name(c) for c in _containers(spec) if (_security_context(c) or {}).get("privileged") is True]
    if not bad:
        return None
    return Violation("privileged", f"{_plural('container', 'containers', len(bad))} {_join_quote(bad)} "
                                   "must not set securityContext.privileged=true")


def _proc_mount_1_0(meta: Obj, spec: Obj) -> Violation | None:
    bad, types = [], set()
    for c in _containers(spec):
        pm = (_security_context(c) or {}).get("procMount")
        if pm is not None and pm != "Default":
            bad.append(_name(c))
            types.add(_str(pm))
    if not bad:
        return None
    return Violation("procMount", f"{_plural('container', 'containers', len(bad))} {_join_quote(bad)} "
                                  f"must not set securityContext.procMount to {_join_quote(sorted(types))}")


def _proc_mount_1_35(meta: Obj, spec: Obj) -> Violation | None:
    return None if _user_namespaced(spec) else _proc_mount_1_0(meta, spec)


_SELINUX_TYPES_1_0 = frozenset({"", "container_t", "container_init_t", "container_kvm_t"})
_SELINUX_TYPES_1_31 = _SELINUX_TYPES_1_0 | {"container_engine_t"}


def _selinux_options(allowed: frozenset[str]) -> CheckFn:
    def check(meta: Obj, spec: Obj) -> Violation | None:
        bad_types: set[str] = set()
        flags = {"user": False, "role": False}

        def valid(opts: Obj) -> bool:
            ok = True
            t = opts.get("type")
            if t is not None and not (isinstance(t, str) and t in allowed):
                ok = False
                bad_types.add(_str(t))
            for key in ("user", "role"):
                if opts.get(key) is not None and opts.get(key) != "":
                    ok = False
                    flags[key] = True
            return ok

        pod_opts = _obj(spec.get("securityContext")).get("seLinuxOptions")
        pod_bad = _set(pod_opts) and not valid(_obj(pod_opts))
        bad_containers = []
        for c in _containers(spec):
            opts = (_security_context(c) or {}).get("seLinuxOptions")
            if _set(opts) and not valid(_obj(opts)):
                bad_containers.append(_name(c))
        setters = _setters(pod_bad, bad_containers)
        if not setters:
            return None
        data = []
        if bad_types:
            data.append(f"{_plural('type', 'types', len(bad_types))} {_join_quote(sorted(bad_types))}")
        data += [f"{key} may not be set" for key in ("user", "role") if flags[key]]
        return Violation("seLinuxOptions", f"{' and '.join(setters)} set forbidden securityContext.seLinuxOptions: "
                                           f"{'; '.join(data)}")
    return check


_SECCOMP_POD_ANNOTATION = "seccomp.security.alpha.kubernetes.io/pod"
_SECCOMP_CONTAINER_ANNOTATION_PREFIX = "container.seccomp.security.alpha.kubernetes.io/"
_VALID_SECCOMP_TYPES = ("Localhost", "RuntimeDefault")


def _seccomp_annotation_ok(value: Any) -> bool:
    v = _str(value)
    return v in ("runtime/default", "docker/default") or v.startswith("localhost/")


def _seccomp_baseline_1_0(meta: Obj, spec: Obj) -> Violation | None:
    """Before v1.19 seccomp was set by annotations."""
    annotations = _obj(meta.get("annotations"))
    keys = [_SECCOMP_POD_ANNOTATION] + [_SECCOMP_CONTAINER_ANNOTATION_PREFIX + _name(c) for c in _containers(spec)]
    bad = sorted({f"{k}={go_quote(_str(annotations[k]))}" for k in keys
                  if k in annotations and not _seccomp_annotation_ok(annotations[k])})
    if not bad:
        return None
    return Violation("seccompProfile",
                     f"forbidden {_plural('annotation', 'annotations', len(bad))} {', '.join(bad)}")


def _seccomp_type(profile: Any) -> str:
    return _str(_obj(profile).get("type"))


def _seccomp_baseline_1_19(meta: Obj, spec: Obj) -> Violation | None:
    bad_values: set[str] = set()
    pod_profile = _obj(spec.get("securityContext")).get("seccompProfile")
    pod_bad = _set(pod_profile) and _seccomp_type(pod_profile) not in _VALID_SECCOMP_TYPES
    if pod_bad:
        bad_values.add(_seccomp_type(pod_profile))
    bad_containers = []
    for c in _containers(spec):
        profile = (_security_context(c) or {}).get("seccompProfile")
        if _set(profile) and _seccomp_type(profile) not in _VALID_SECCOMP_TYPES:
            bad_containers.append(_name(c))
            bad_values.add(_seccomp_type(profile))
    setters = _setters(pod_bad, bad_containers)
    if not setters:
        return None
    return Violation("seccompProfile", f"{' and '.join(setters)} must not set securityContext.seccompProfile.type "
                                       f"to {_join_quote(sorted(bad_values))}")


_SYSCTLS_1_0 = frozenset({"kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.tcp_syncookies",
                          "net.ipv4.ping_group_range", "net.ipv4.ip_unprivileged_port_start"})
_SYSCTLS_1_27 = _SYSCTLS_1_0 | {"net.ipv4.ip_local_reserved_ports"}
_SYSCTLS_1_29 = _SYSCTLS_1_27 | {"net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout",
                                 "net.ipv4.tcp_keepalive_intvl", "net.ipv4.tcp_keepalive_probes"}
_SYSCTLS_1_32 = _SYSCTLS_1_29 | {"net.ipv4.tcp_rmem", "net.ipv4.tcp_wmem"}
_SYSCTLS_1_37 = _SYSCTLS_1_32 | {"net.ipv4.tcp_slow_start_after_idle", "net.ipv4.tcp_notsent_lowat"}


def _sysctls(allowed: frozenset[str]) -> CheckFn:
    def check(meta: Obj, spec: Obj) -> Violation | None:
        bad = [_str(_obj(s).get("name")) for s in _list(_obj(spec.get("securityContext")).get("sysctls"))
               if _str(_obj(s).get("name")) not in allowed]
        return Violation("forbidden sysctls", ", ".join(bad)) if bad else None
    return check


def _windows_host_process(meta: Obj, spec: Obj) -> Violation | None:
    def host_process(sc: Obj | None) -> bool:
        return sc is not None and _obj(sc.get("windowsOptions")).get("hostProcess") is True

    pod_bad = host_process(_obj(spec.get("securityContext")))
    setters = _setters(pod_bad, [_name(c) for c in _containers(spec) if host_process(_security_context(c))])
    if not setters:
        return None
    return Violation("hostProcess", f"{' and '.join(setters)} must not set securityContext.windowsOptions.hostProcess=true")


# -- restricted checks -----------------------------------------------------------------------------


def _windows_exempt(check: CheckFn) -> CheckFn:
    """From v1.25 a pod that says it is a Windows pod is exempt (the API refuses those fields on it)."""
    def exempt(meta: Obj, spec: Obj) -> Violation | None:
        return None if _is_windows(spec) else check(meta, spec)
    return exempt


def _user_namespace_exempt(check: CheckFn) -> CheckFn:
    """From v1.35 a pod in a user namespace (``hostUsers: false``) is exempt."""
    def exempt(meta: Obj, spec: Obj) -> Violation | None:
        return None if _user_namespaced(spec) else check(meta, spec)
    return exempt


def _allow_privilege_escalation(meta: Obj, spec: Obj) -> Violation | None:
    bad = [_name(c) for c in _containers(spec)
           if (_security_context(c) or {}).get("allowPrivilegeEscalation") is not False]
    if not bad:
        return None
    return Violation("allowPrivilegeEscalation != false",
                     f"{_plural('container', 'containers', len(bad))} {_join_quote(bad)} "
                     "must set securityContext.allowPrivilegeEscalation=false")


def _capabilities_restricted(meta: Obj, spec: Obj) -> Violation | None:
    missing_drop, adding, added = [], [], set()
    for c in _containers(spec):
        caps = _capabilities(c)
        if caps is None:
            missing_drop.append(_name(c))
            continue
        if "ALL" not in _list(caps.get("drop")):
            missing_drop.append(_name(c))
        bad = {str(cap) for cap in _list(caps.get("add")) if cap != "NET_BIND_SERVICE"}
        if bad:
            adding.append(_name(c))
            added |= bad
    details = []
    if missing_drop:
        details.append(f"{_plural('container', 'containers', len(missing_drop))} {_join_quote(missing_drop)} "
                       'must set securityContext.capabilities.drop=["ALL"]')
    if adding:
        details.append(f"{_plural('container', 'containers', len(adding))} {_join_quote(adding)} must not include "
                       f"{_join_quote(sorted(added))} in securityContext.capabilities.add")
    return Violation("unrestricted capabilities", "; ".join(details)) if details else None


_ALLOWED_VOLUME_SOURCES = frozenset({"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "image",
                                     "persistentVolumeClaim", "projected", "secret"})
# Restricted volume sources, in the order Kubernetes names the first one a volume has.
_RESTRICTED_VOLUME_SOURCES = (
    ("hostPath", "hostPath"), ("gcePersistentDisk", "gcePersistentDisk"),
    ("awsElasticBlockStore", "awsElasticBlockStore"), ("gitRepo", "gitRepo"), ("nfs", "nfs"), ("iscsi", "iscsi"),
    ("glusterfs", "glusterfs"), ("rbd", "rbd"), ("flexVolume", "flexVolume"), ("cinder", "cinder"),
    ("cephfs", "cephfs"), ("flocker", "flocker"), ("fc", "fc"), ("azureFile", "azureFile"),
    ("vsphereVolume", "vsphereVolume"), ("quobyte", "quobyte"), ("azureDisk", "azureDisk"),
    ("photonPersistentDisk", "photonPersistentDisk"), ("portworxVolume", "portworxVolume"),
    ("scaleIO", "scaleIO"), ("storageos", "storageos"))


def _restricted_volumes(meta: Obj, spec: Obj) -> Violation | None:
    bad, types = [], set()
    for raw in _list(spec.get("volumes")):
        volume = _obj(raw)
        sources = {k for k, v in volume.items() if k != "name" and v is not None}
        # Sources of allowed types only. A volume without a source is an emptyDir (Kubernetes'
        # defaulting makes it one before admission). Kubernetes' validation refuses a volume with
        # several sources; one that slipped through is judged by its worst, not by its first.
        if sources <= _ALLOWED_VOLUME_SOURCES:
            continue
        bad.append(_str(volume.get("name")))
        types.add(next((name for key, name in _RESTRICTED_VOLUME_SOURCES if key in sources), "unknown"))
    if not bad:
        return None
    return Violation("restricted volume types", " ".join((
        _plural("volume", "volumes", len(bad)), _join_quote(bad), _plural("uses", "use", len(bad)),
        _plural("restricted volume type", "restricted volume types", len(types)), _join_quote(sorted(types)))))


def _run_as_non_root(meta: Obj, spec: Obj) -> Violation | None:
    pod_value = _obj(spec.get("securityContext")).get("runAsNonRoot")
    pod_bad = pod_value is not None and pod_value is not True
    pod_non_root = pod_value is True
    explicit, implicit = [], []
    for c in _containers(spec):
        value = (_security_context(c) or {}).get("runAsNonRoot")
        if value is not None:
            if value is not True:
                explicit.append(_name(c))
        elif not pod_non_root:
            implicit.append(_name(c))
    setters = _setters(pod_bad, explicit)
    if setters:
        return Violation("runAsNonRoot != true",
                         f"{' and '.join(setters)} must not set securityContext.runAsNonRoot=false")
    if implicit:
        return Violation("runAsNonRoot != true",
                         f"pod or {_plural('container', 'containers', len(implicit))} {_join_quote(implicit)} "
                         "must set securityContext.runAsNonRoot=true")
    return None


def _run_as_user(meta: Obj, spec: Obj) -> Violation | None:
    pod_bad = _is_zero(_obj(spec.get("securityContext")).get("runAsUser"))
    setters = _setters(pod_bad, [_name(c) for c in _containers(spec)
                                 if _is_zero((_security_context(c) or {}).get("runAsUser"))])
    return Violation("runAsUser=0", f"{' and '.join(setters)} must not set runAsUser=0") if setters else None


def _seccomp_restricted(meta: Obj, spec: Obj) -> Violation | None:
    bad_values: set[str] = set()
    pod_profile = _obj(spec.get("securityContext")).get("seccompProfile")
    pod_bad = _set(pod_profile) and _seccomp_type(pod_profile) not in _VALID_SECCOMP_TYPES
    pod_set = _set(pod_profile) and not pod_bad
    if pod_bad:
        bad_values.add(_seccomp_type(pod_profile))
    explicit, implicit = [], []
    for c in _containers(spec):
        profile = (_security_context(c) or {}).get("seccompProfile")
        if _set(profile):
            if _seccomp_type(profile) not in _VALID_SECCOMP_TYPES:
                explicit.append(_name(c))
                bad_values.add(_seccomp_type(profile))
        elif not pod_set:
            implicit.append(_name(c))
    setters = _setters(pod_bad, explicit)
    if setters:
        return Violation("seccompProfile", f"{' and '.join(setters)} must not set securityContext.seccompProfile.type "
                                           f"to {_join_quote(sorted(bad_values))}")
    if implicit:
        return Violation("seccompProfile",
                         f"pod or {_plural('container', 'containers', len(implicit))} {_join_quote(implicit)} must set "
                         'securityContext.seccompProfile.type to "RuntimeDefault" or "Localhost"')
    return None


# -- the registry ----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class VersionedCheck:
    minimum_minor: int
    check: CheckFn
    overrides: tuple[str, ...] = ()  # baseline check ids this restricted check replaces


@dataclasses.dataclass(frozen=True)
class Check:
    id: str
    level: str
    versions: tuple[VersionedCheck, ...]

    def at(self, minor: int) -> VersionedCheck | None:
        """The version of this check that applies to policy version ``v1.<minor>``, or None."""
        found = None
        for v in self.versions:
            if v.minimum_minor <= minor:
                found = v
        return found


CHECKS: tuple[Check, ...] = (
    Check("appArmorProfile", BASELINE, (VersionedCheck(0, _apparmor_profile),)),
    Check("capabilities_baseline", BASELINE, (VersionedCheck(0, _capabilities_baseline),)),
    Check("hostNamespaces", BASELINE, (VersionedCheck(0, _host_namespaces),)),
    Check("hostPathVolumes", BASELINE, (VersionedCheck(0, _host_path_volumes),)),
    Check("hostPorts", BASELINE, (VersionedCheck(0, _host_ports),)),
    Check("hostProbesAndHostLifecycle", BASELINE, (VersionedCheck(34, _host_probes_and_lifecycle),)),
    Check("privileged", BASELINE, (VersionedCheck(0, _privileged),)),
    Check("procMount", BASELINE, (VersionedCheck(0, _proc_mount_1_0), VersionedCheck(35, _proc_mount_1_35))),
    Check("seLinuxOptions", BASELINE, (VersionedCheck(0, _selinux_options(_SELINUX_TYPES_1_0)),
                                       VersionedCheck(31, _selinux_options(_SELINUX_TYPES_1_31)))),
    Check("seccompProfile_baseline", BASELINE, (VersionedCheck(0, _seccomp_baseline_1_0),
                                                VersionedCheck(19, _seccomp_baseline_1_19))),
    Check("sysctls", BASELINE, tuple(VersionedCheck(m, _sysctls(s)) for m, s in (
        (0, _SYSCTLS_1_0), (27, _SYSCTLS_1_27), (29, _SYSCTLS_1_29), (32, _SYSCTLS_1_32), (37, _SYSCTLS_1_37)))),
    Check("windowsHostProcess", BASELINE, (VersionedCheck(0, _windows_host_process),)),
    Check("allowPrivilegeEscalation", RESTRICTED, (
        VersionedCheck(8, _allow_privilege_escalation),
        VersionedCheck(25, _windows_exempt(_allow_privilege_escalation)))),
    Check("capabilities_restricted", RESTRICTED, (
        VersionedCheck(22, _capabilities_restricted, ("capabilities_baseline",)),
        VersionedCheck(25, _windows_exempt(_capabilities_restricted), ("capabilities_baseline",)))),
    Check("procMount_restricted", RESTRICTED, (VersionedCheck(35, _proc_mount_1_0, ("procMount",)),)),
    Check("restrictedVolumes", RESTRICTED, (VersionedCheck(0, _restricted_volumes, ("hostPathVolumes",)),)),
    Check("runAsNonRoot", RESTRICTED, (VersionedCheck(0, _run_as_non_root),
                                       VersionedCheck(35, _user_namespace_exempt(_run_as_non_root)))),
    Check("runAsUser", RESTRICTED, (VersionedCheck(23, _run_as_user),
                                    VersionedCheck(35, _user_namespace_exempt(_run_as_user)))),
    Check("seccompProfile_restricted", RESTRICTED, (
        VersionedCheck(19, _seccomp_restricted, ("seccompProfile_baseline",)),
        VersionedCheck(25, _windows_exempt(_seccomp_restricted), ("seccompProfile_baseline",)))),
)

# Kubernetes reports baseline checks first, then restricted ones, each group ordered by id.
_ORDER = sorted((c for c in CHECKS if c.level == BASELINE), key=lambda c: c.id) + \
    sorted((c for c in CHECKS if c.level == RESTRICTED), key=lambda c: c.id)


def checks_for(lv: LevelVersion) -> list[tuple[str, CheckFn]]:
    """``(check id, check)`` run for ``lv``, in reporting order."""
    if lv.level == PRIVILEGED:
        return []
    minor = lv.version.effective_minor
    chosen = [(c, c.at(minor)) for c in _ORDER if c.level == BASELINE or lv.level == RESTRICTED]
    overridden = {o for c, v in chosen if v is not None and c.level == RESTRICTED for o in v.overrides}
    return [(c.id, v.check) for c, v in chosen if v is not None and c.id not in overridden]


def evaluate_pod(lv: LevelVersion, metadata: Any, spec: Any) -> Result:
    """Every check of ``lv`` on a pod (or pod template): its metadata and spec as JSON."""
    meta, pod_spec = _obj(metadata), _obj(spec)
    violations = []
    for _, check in checks_for(lv):
        v = check(meta, pod_spec)
        if v is not None:
            violations.append(v if v.reason else Violation(UNKNOWN_REASON, v.detail))
    return Result(tuple(violations))


# -- admission decisions ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Decision:
    """What admission does with a request: refuse (``message``), warn, annotate the audit record."""

    allowed: bool
    message: str = ""
    warnings: tuple[str, ...] = ()
    audit_annotations: tuple[tuple[str, str], ...] = ()


ALLOWED = Decision(True)

# Pod subresources that cannot change what runs (Kubernetes' PodSecurity ignores them); any other
# pod subresource (ephemeralcontainers, resize, ...) is evaluated, so one added later fails safe.
IGNORED_POD_SUBRESOURCES = frozenset({"exec", "attach", "binding", "eviction", "log", "portforward", "proxy",
                                      "status"})


def is_significant_pod_update(new: Obj, old: Obj) -> bool:
    """Whether a pod update is evaluated: only a change of what runs is (containers added or
    removed, an image changed, an ephemeral container added or changed); a metadata-only or
    status update of a pod admitted before is not."""
    spec, old_spec = _obj(new.get("spec")), _obj(old.get("spec"))
    for key in ("containers", "initContainers"):
        now, was = _list(spec.get(key)), _list(old_spec.get(key))
        if len(now) != len(was):
            return True
        if any(_obj(a).get("image") != _obj(b).get("image") for a, b in zip(now, was, strict=True)):
            return True
    old_ephemeral = {_name(_obj(c)): _obj(c) for c in reversed(_list(old_spec.get("ephemeralContainers")))}
    for c in _list(spec.get("ephemeralContainers")):
        before = old_ephemeral.get(_name(_obj(c)))
        if before is None or before.get("image") != _obj(c).get("image"):
            return True
    return False


def decide_pod(policy: Policy, label_errors: Sequence[LabelError], metadata: Any, spec: Any, *,
               resource: str = "pods", name: str = "") -> Decision:
    """Kubernetes' PodSecurity on a pod create (or significant update) in a namespace with ``policy``."""
    if not label_errors and policy.fully_privileged:
        return Decision(True, audit_annotations=((ENFORCE_POLICY_ANNOTATION, str(LevelVersion(PRIVILEGED))),))
    annotations: dict[str, str] = {}
    if label_errors:
        annotations[ERROR_ANNOTATION] = "Failed to parse policy: " + _aggregate(label_errors)
    annotations[ENFORCE_POLICY_ANNOTATION] = str(policy.enforce)
    cache: dict[LevelVersion, Result] = {}

    def result(lv: LevelVersion) -> Result:
        if lv not in cache:
            cache[lv] = evaluate_pod(lv, metadata, spec)
        return cache[lv]

    enforced = result(policy.enforce)
    message = ""
    if not enforced.allowed:
        message = (f'{resource} "{name}" is forbidden: violates PodSecurity "{policy.enforce}": '
                   f"{enforced.forbidden_detail()}")
    audited = result(policy.audit)
    if not audited.allowed:
        annotations[AUDIT_VIOLATIONS_ANNOTATION] = (f'would violate PodSecurity "{policy.audit}": '
                                                    f"{audited.forbidden_detail()}")
    warnings: tuple[str, ...] = ()
    if enforced.allowed:
        warned = result(policy.warn)
        if not warned.allowed:
            warnings = (f'would violate PodSecurity "{policy.warn}": {warned.forbidden_detail()}',)
    return Decision(enforced.allowed, message, warnings, tuple(sorted(annotations.items())))


def _aggregate(errors: Sequence[LabelError]) -> str:
    """Kubernetes' aggregate of field errors: one as is, several as ``[a, b]``."""
    texts = [str(e) for e in errors]
    return texts[0] if len(texts) == 1 else "[" + ", ".join(texts) + "]"


def decide_namespace(op: str, name: str, labels: Mapping[str, Any] | None, old_labels: Mapping[str, Any] | None,
                     defaults: Policy, pods: Callable[[], Sequence[Obj]]) -> Decision:
    """A namespace create or update: its pod-security labels must be readable (on update, only if
    they changed; ``message`` is then the field errors of a 422); a stricter enforce level warns
    about the pods already there that violate it.

    ``pods`` is called only when the pods must be evaluated.
    """
    policy, errors = policy_to_evaluate(labels, defaults)
    if op == "CREATE":
        if errors:
            return Decision(False, _aggregate(errors))
        return ALLOWED
    if op != "UPDATE":
        return ALLOWED
    old_policy, old_errors = policy_to_evaluate(old_labels, defaults)
    if errors and (not old_errors or errors != old_errors):
        return Decision(False, _aggregate(errors))
    new, old = policy.enforce, old_policy.enforce
    if new == old or new.level == PRIVILEGED or (new.version == old.version and
                                                 compare_levels(new.level, old.level) < 1):
        return ALLOWED
    return Decision(True, warnings=tuple(namespace_pod_warnings(name, new, pods())))


def namespace_pod_warnings(namespace: str, enforce: LevelVersion, pods: Sequence[Obj]) -> list[str]:
    """The warnings a new enforce level gives about the pods already in the namespace."""
    # One pod per controller first (replicas share a spec), the rest after, as Kubernetes does.
    first, rest, seen = [], [], set()
    for pod in pods:
        owner = next((_obj(r) for r in _list(_obj(pod.get("metadata")).get("ownerReferences"))
                      if _obj(r).get("controller") is True), None)
        if owner is None:
            first.append(pod)
        elif owner.get("uid") in seen:
            rest.append(pod)
        else:
            seen.add(owner.get("uid"))
            first.append(pod)
    ordered = first + rest
    checked = ordered[:NAMESPACE_MAX_PODS_TO_CHECK]
    counts: dict[str, list[Any]] = {}  # reasons -> [lexically first pod name, count]
    order: list[str] = []
    for pod in checked:
        r = evaluate_pod(enforce, pod.get("metadata"), pod.get("spec"))
        if r.allowed:
            continue
        reason, pod_name = r.forbidden_reason(), _str(_obj(pod.get("metadata")).get("name"))
        if reason not in counts:
            counts[reason] = [pod_name, 0]
            order.append(reason)
        elif pod_name < counts[reason][0]:
            counts[reason][0] = pod_name
        counts[reason][1] += 1
    warnings = []
    if len(checked) < len(ordered):
        warnings.append(f"new PodSecurity enforce level only checked against the first {len(checked)} of "
                        f"{len(ordered)} existing pods")
    if order:
        warnings.append(f'existing pods in namespace "{namespace}" violate the new PodSecurity enforce level '
                        f'"{enforce}"')
    decorated = []
    for reason in order:
        pod_name, n = counts[reason]
        who = pod_name if n == 1 else f"{pod_name} (and 1 other pod)" if n == 2 else f"{pod_name} (and {n - 1} other pods)"
        decorated.append(f"{who}: {reason}")
    return warnings + sorted(decorated)


__all__ = [
    "ALLOWED", "AUDIT_LABEL", "AUDIT_VERSION_LABEL", "AUDIT_VIOLATIONS_ANNOTATION", "BASELINE", "CHECKS", "Decision",
    "ENFORCE_LABEL", "ENFORCE_POLICY_ANNOTATION", "ENFORCE_VERSION_LABEL", "ERROR_ANNOTATION",
    "IGNORED_POD_SUBRESOURCES", "LATEST", "LEVELS", "LabelError", "LevelVersion", "MAX_MINOR", "PRIVILEGED",
    "Policy", "RESTRICTED", "Result", "UNKNOWN_REASON", "Version", "Violation", "WARN_LABEL", "WARN_VERSION_LABEL", "checks_for",
    "decide_namespace", "decide_pod", "default_policy", "evaluate_pod", "go_quote", "is_significant_pod_update",
    "namespace_pod_warnings", "parse_level", "parse_version", "policy_to_evaluate",
]
