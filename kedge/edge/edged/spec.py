"""Pod objects from the cloud, parsed into strict frozen models.

A Pod reaches the edge from the cloud over the tunnel, so every field here is peer
input: names become path components (``<namespace>_<name>_<uid>``), strings become
argv and environment. :func:`parse_pod` validates shapes and bounds once and raises
:class:`PodSpecError` (a :class:`~kedge.errors.PeerError`) for anything it refuses;
the rest of edged works on the frozen result only.

Pure: no I/O, no clock.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from typing import Any, TypedDict

from kedge.errors import PeerError

# Bounds on one pod: kedge.limits.
from kedge.limits import POD_MAX_ARGV as MAX_ARGV
from kedge.limits import POD_MAX_CONTAINERS as MAX_CONTAINERS
from kedge.limits import POD_MAX_ENV as MAX_ENV
from kedge.limits import POD_MAX_ENV_FROM as MAX_ENV_FROM
from kedge.limits import POD_MAX_GRACE_S as MAX_GRACE_S
from kedge.limits import POD_MAX_GROUPS as MAX_GROUPS
from kedge.limits import POD_MAX_ITEMS as MAX_ITEMS
from kedge.limits import POD_MAX_MOUNTS as MAX_MOUNTS
from kedge.limits import POD_MAX_PORTS as MAX_PORTS
from kedge.limits import POD_MAX_PROBE_HEADERS as MAX_HEADERS
from kedge.limits import POD_MAX_PROBE_S as MAX_PROBE_S
from kedge.limits import POD_MAX_STRING as MAX_STRING
from kedge.limits import POD_MAX_VOLUMES as MAX_VOLUMES

_DNS_LABEL = re.compile(r"\A[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\Z")
_DNS_SUBDOMAIN = re.compile(r"\A[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?\Z")
_UID = re.compile(r"\A[A-Za-z0-9][-A-Za-z0-9]{0,63}\Z")
_ENV_NAME = re.compile(r"\A[-._a-zA-Z][-._a-zA-Z0-9]{0,255}\Z")
_KEY = re.compile(r"\A[-._a-zA-Z0-9]{1,253}\Z")
_HEADER_NAME = re.compile(r"\A[!#$%&'*+.^_`|~0-9A-Za-z-]{1,128}\Z")

RESTART_POLICIES = ("Always", "OnFailure", "Never")
# A pod directory's name (see pod_dir_name): within a file name's 255 bytes with room to
# spare (its temp files live inside it, not beside it). 63 + 1 + 1 + 1 + 32 + 1 + 64 <= 200:
# namespace, at least one character of the name, the digest and the uid always fit.
MAX_DIR_NAME = 200
DIR_NAME_DIGEST = 32  # hex digits of SHA-256 (128 bits) in a shortened name


class PodSpecError(PeerError):
    """A pod (or a part of it) the edge refuses to run."""

    code = "invalid_pod"


def _fail(msg: str) -> PodSpecError:
    return PodSpecError(msg)


def _str(value: Any, what: str, *, required: bool = False, max_len: int = MAX_STRING) -> str:
    if value is None:
        if required:
            raise _fail(f"{what} is required")
        return ""
    if not isinstance(value, str):
        raise _fail(f"{what} must be a string")
    if len(value) > max_len:
        raise _fail(f"{what} is too long")
    if "\x00" in value:
        raise _fail(f"{what} contains NUL")
    return value


def _int(value: Any, what: str, *, default: int, lo: int, hi: int) -> int:
    if value is None:
        return default
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise _fail(f"{what} must be an integer in [{lo}, {hi}]")
    return value


def _opt_int(value: Any, what: str, *, lo: int, hi: int) -> int | None:
    if value is None:
        return None
    return _int(value, what, default=0, lo=lo, hi=hi)


def _dict(value: Any, what: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _fail(f"{what} must be an object")
    return value


def _list(value: Any, what: str, max_items: int) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise _fail(f"{what} must be a list")
    if len(value) > max_items:
        raise _fail(f"{what} has too many items")
    return value


def _bool(value: Any, what: str) -> bool:
    if value is None:
        return False
    if not isinstance(value, bool):
        raise _fail(f"{what} must be a boolean")
    return value


def check_rel_path(path: str, what: str) -> str:
    """A relative path that cannot climb out of its base directory."""
    if not path or path.startswith("/") or len(path) > 4096:
        raise _fail(f"{what} must be a non-empty relative path")
    parts = path.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise _fail(f"{what} must not contain empty, '.' or '..' components")
    return path


@dataclasses.dataclass(frozen=True)
class ProbeDef:
    """A liveness or readiness probe (Kubernetes ``Probe``)."""

    kind: str  # "exec" | "http" | "tcp"
    command: tuple[str, ...] = ()
    host: str = ""
    port: int | str = 0
    path: str = "/"
    scheme: str = "HTTP"
    headers: tuple[tuple[str, str], ...] = ()
    initial_delay_s: float = 0.0
    period_s: float = 10.0
    timeout_s: float = 1.0
    failure_threshold: int = 3
    success_threshold: int = 1

    def __post_init__(self) -> None:
        if self.kind not in ("exec", "http", "tcp"):
            raise _fail("probe kind must be exec, http or tcp")
        if self.period_s <= 0 or self.timeout_s <= 0 or self.initial_delay_s < 0:
            raise _fail("probe periods must be positive")
        if self.failure_threshold < 1 or self.success_threshold < 1:
            raise _fail("probe thresholds must be >= 1")


@dataclasses.dataclass(frozen=True)
class EnvVarDef:
    name: str
    value: str = ""
    source: str = ""  # "" | "configmap" | "secret" | "field"
    source_name: str = ""
    key: str = ""
    optional: bool = False


@dataclasses.dataclass(frozen=True)
class EnvFromDef:
    kind: str  # "configmap" | "secret"
    name: str
    prefix: str = ""
    optional: bool = False


@dataclasses.dataclass(frozen=True)
class MountDef:
    name: str
    mount_path: str
    sub_path: str = ""
    read_only: bool = False


@dataclasses.dataclass(frozen=True)
class VolumeDef:
    name: str
    kind: str  # "configmap" | "secret" | "emptydir"
    source_name: str = ""
    items: tuple[tuple[str, str, int | None], ...] = ()  # (key, path, mode)
    default_mode: int | None = None
    optional: bool = False


@dataclasses.dataclass(frozen=True)
class ContainerDef:
    name: str
    image: str
    command: tuple[str, ...] | None
    args: tuple[str, ...]
    env: tuple[EnvVarDef, ...]
    env_from: tuple[EnvFromDef, ...]
    working_dir: str
    mounts: tuple[MountDef, ...]
    ports: tuple[tuple[str, int], ...]
    run_as_user: int | None
    run_as_group: int | None
    run_as_non_root: bool | None  # None: not set anywhere (False: explicitly set false)
    liveness: ProbeDef | None
    readiness: ProbeDef | None
    spec_hash: str

    def port_number(self, port: int | str) -> int | None:
        """Resolve a probe's port (number or named container port)."""
        if isinstance(port, int):
            return port if 0 < port < 65536 else None
        for name, number in self.ports:
            if name == port:
                return number
        return None


def pod_dir_name(namespace: str, name: str, uid: str) -> str:
    """The name of a pod's directory: ``<namespace>_<name>_<uid>``, bounded.

    Unambiguous since none of the parts may hold ``_``. Kubernetes allows 63 + 253 + 64
    characters, more than a file name may have (255 bytes): a name that would make it
    longer than :data:`MAX_DIR_NAME` keeps a prefix (for people reading ``ls``) and gets
    ``~`` and 32 hex digits of the SHA-256 of ``<namespace>/<name>/<uid>``. No pod name
    holds ``~``, so a shortened name never equals another pod's full one. Pure and stable:
    a restarted edgecore computes the same name from ``state.json``. Names within the bound
    are what they always were; a directory made before the bound with a longer (<= 255)
    name is still re-adopted under it (see the manager's ``_load``).
    """
    full = f"{namespace}_{name}_{uid}"
    if len(full) <= MAX_DIR_NAME:
        return full
    digest = hashlib.sha256(f"{namespace}/{name}/{uid}".encode()).hexdigest()[:DIR_NAME_DIGEST]
    keep = MAX_DIR_NAME - len(namespace) - len(uid) - DIR_NAME_DIGEST - 3  # '_', '~', '_'
    return f"{namespace}_{name[:max(keep, 1)]}~{digest}_{uid}"


@dataclasses.dataclass(frozen=True)
class PodDef:
    uid: str
    namespace: str
    name: str
    node_name: str
    containers: tuple[ContainerDef, ...]
    volumes: tuple[VolumeDef, ...]
    restart_policy: str
    grace_period_s: float
    deleting: bool
    fs_group: int | None = None
    supplemental_groups: tuple[int, ...] = ()

    @property
    def dir_name(self) -> str:
        """The pod's directory name: see :func:`pod_dir_name`."""
        return pod_dir_name(self.namespace, self.name, self.uid)

    def volume(self, name: str) -> VolumeDef | None:
        for v in self.volumes:
            if v.name == name:
                return v
        return None


class _ProbeTiming(TypedDict):
    """The ``ProbeDef`` fields every probe kind shares."""

    initial_delay_s: float
    period_s: float
    timeout_s: float
    failure_threshold: int
    success_threshold: int


def _parse_probe(raw: Any, what: str) -> ProbeDef | None:
    if raw is None:
        return None
    raw = _dict(raw, what)
    timing = _ProbeTiming(
        initial_delay_s=float(_int(raw.get("initialDelaySeconds"), f"{what}.initialDelaySeconds",
                                   default=0, lo=0, hi=MAX_PROBE_S)),
        period_s=float(_int(raw.get("periodSeconds"), f"{what}.periodSeconds", default=10, lo=1,
                            hi=MAX_PROBE_S)),
        timeout_s=float(_int(raw.get("timeoutSeconds"), f"{what}.timeoutSeconds", default=1, lo=1,
                             hi=MAX_PROBE_S)),
        failure_threshold=_int(raw.get("failureThreshold"), f"{what}.failureThreshold", default=3,
                               lo=1, hi=1000),
        success_threshold=_int(raw.get("successThreshold"), f"{what}.successThreshold", default=1,
                               lo=1, hi=1000),
    )
    handlers = [k for k in ("exec", "httpGet", "tcpSocket") if raw.get(k) is not None]
    if len(handlers) != 1:
        raise _fail(f"{what} must have exactly one of exec, httpGet, tcpSocket")
    if "exec" in handlers:
        cmd = _list(_dict(raw["exec"], f"{what}.exec").get("command"), f"{what}.exec.command", MAX_ARGV)
        if not cmd:
            raise _fail(f"{what}.exec.command is required")
        return ProbeDef("exec", command=tuple(_str(c, f"{what}.exec.command") for c in cmd), **timing)
    key = handlers[0]
    sub = _dict(raw[key], f"{what}.{key}")
    port = sub.get("port")
    if isinstance(port, bool) or not isinstance(port, (int, str)):
        raise _fail(f"{what}.{key}.port must be a number or a port name")
    if isinstance(port, str) and port.isdigit():
        port = int(port)
    if isinstance(port, int) and not 0 < port < 65536:
        raise _fail(f"{what}.{key}.port out of range")
    host = _str(sub.get("host"), f"{what}.{key}.host", max_len=253)
    if key == "tcpSocket":
        return ProbeDef("tcp", host=host, port=port, **timing)
    path = _str(sub.get("path"), f"{what}.httpGet.path", max_len=2048) or "/"
    if not path.startswith("/") or any(ch in path for ch in " \r\n\t"):
        raise _fail(f"{what}.httpGet.path must be an absolute path without whitespace")
    scheme = _str(sub.get("scheme"), f"{what}.httpGet.scheme", max_len=8) or "HTTP"
    if scheme not in ("HTTP", "HTTPS"):
        raise _fail(f"{what}.httpGet.scheme must be HTTP or HTTPS")
    headers = []
    for i, h in enumerate(_list(sub.get("httpHeaders"), f"{what}.httpGet.httpHeaders", MAX_HEADERS)):
        h = _dict(h, f"{what}.httpGet.httpHeaders[{i}]")
        name = _str(h.get("name"), "header name", required=True, max_len=128)
        value = _str(h.get("value"), "header value", max_len=4096)
        if not _HEADER_NAME.match(name) or any(ch in value for ch in "\r\n"):
            raise _fail(f"{what}.httpGet.httpHeaders[{i}] is not a valid header")
        headers.append((name, value))
    return ProbeDef("http", host=host, port=port, path=path, scheme=scheme, headers=tuple(headers),
                    **timing)


def _parse_env(raw: Any, what: str) -> EnvVarDef:
    raw = _dict(raw, what)
    name = _str(raw.get("name"), f"{what}.name", required=True, max_len=256)
    if not _ENV_NAME.match(name):
        raise _fail(f"{what}.name is not a valid environment variable name")
    if raw.get("valueFrom") is None:
        return EnvVarDef(name, value=_str(raw.get("value"), f"{what}.value"))
    vf = _dict(raw["valueFrom"], f"{what}.valueFrom")
    for key, source in (("configMapKeyRef", "configmap"), ("secretKeyRef", "secret")):
        if vf.get(key) is not None:
            ref = _dict(vf[key], f"{what}.valueFrom.{key}")
            ref_name = _str(ref.get("name"), f"{what}.valueFrom.{key}.name", required=True, max_len=253)
            ref_key = _str(ref.get("key"), f"{what}.valueFrom.{key}.key", required=True, max_len=253)
            if not _DNS_SUBDOMAIN.match(ref_name) or not _KEY.match(ref_key):
                raise _fail(f"{what}.valueFrom.{key} names an invalid object or key")
            return EnvVarDef(name, source=source, source_name=ref_name, key=ref_key,
                             optional=_bool(ref.get("optional"), f"{what}.optional"))
    if vf.get("fieldRef") is not None:
        ref = _dict(vf["fieldRef"], f"{what}.valueFrom.fieldRef")
        field = _str(ref.get("fieldPath"), f"{what}.valueFrom.fieldRef.fieldPath", required=True,
                     max_len=256)
        return EnvVarDef(name, source="field", key=field)
    raise _fail(f"{what}.valueFrom: only configMapKeyRef, secretKeyRef and fieldRef are supported")


def _parse_env_from(raw: Any, what: str) -> EnvFromDef:
    raw = _dict(raw, what)
    prefix = _str(raw.get("prefix"), f"{what}.prefix", max_len=256)
    for key, kind in (("configMapRef", "configmap"), ("secretRef", "secret")):
        if raw.get(key) is not None:
            ref = _dict(raw[key], f"{what}.{key}")
            name = _str(ref.get("name"), f"{what}.{key}.name", required=True, max_len=253)
            if not _DNS_SUBDOMAIN.match(name):
                raise _fail(f"{what}.{key}.name is invalid")
            return EnvFromDef(kind, name, prefix, _bool(ref.get("optional"), f"{what}.optional"))
    raise _fail(f"{what} must have configMapRef or secretRef")


def _parse_volume(raw: Any, what: str) -> VolumeDef:
    raw = _dict(raw, what)
    name = _str(raw.get("name"), f"{what}.name", required=True, max_len=63)
    if not _DNS_LABEL.match(name):
        raise _fail(f"{what}.name is not a DNS label")
    if raw.get("emptyDir") is not None:
        return VolumeDef(name, "emptydir")
    for key, kind, name_field in (("configMap", "configmap", "name"), ("secret", "secret", "secretName")):
        if raw.get(key) is None:
            continue
        src = _dict(raw[key], f"{what}.{key}")
        src_name = _str(src.get(name_field), f"{what}.{key}.{name_field}", required=True, max_len=253)
        if not _DNS_SUBDOMAIN.match(src_name):
            raise _fail(f"{what}.{key}.{name_field} is invalid")
        default_mode = _opt_int(src.get("defaultMode"), f"{what}.defaultMode", lo=0, hi=0o777)
        items = []
        for i, item in enumerate(_list(src.get("items"), f"{what}.{key}.items", MAX_ITEMS)):
            item = _dict(item, f"{what}.{key}.items[{i}]")
            k = _str(item.get("key"), f"{what}.items[{i}].key", required=True, max_len=253)
            if not _KEY.match(k):
                raise _fail(f"{what}.items[{i}].key is invalid")
            p = check_rel_path(_str(item.get("path"), f"{what}.items[{i}].path", required=True,
                                    max_len=4096), f"{what}.items[{i}].path")
            items.append((k, p, _opt_int(item.get("mode"), f"{what}.items[{i}].mode", lo=0, hi=0o777)))
        return VolumeDef(name, kind, src_name, tuple(items), default_mode,
                         _bool(src.get("optional"), f"{what}.optional"))
    raise _fail(f"{what}: only configMap, secret and emptyDir volumes are supported")


def _security(ctx: dict[str, Any], what: str) -> tuple[int | None, int | None, bool | None]:
    user = _opt_int(ctx.get("runAsUser"), f"{what}.runAsUser", lo=0, hi=2**31 - 1)
    group = _opt_int(ctx.get("runAsGroup"), f"{what}.runAsGroup", lo=0, hi=2**31 - 1)
    non_root = ctx.get("runAsNonRoot")
    if non_root is not None and not isinstance(non_root, bool):
        raise _fail(f"{what}.runAsNonRoot must be a boolean")
    return user, group, non_root


def _pod_groups(ctx: dict[str, Any]) -> tuple[int | None, tuple[int, ...]]:
    """``fsGroup`` and ``supplementalGroups`` of a pod's securityContext (whether edged
    gives them is :mod:`~kedge.edge.edged.ids`' decision, reported on the pod's status)."""
    fs_group = _opt_int(ctx.get("fsGroup"), "spec.securityContext.fsGroup", lo=0, hi=2**31 - 1)
    groups = tuple(_int(g, "spec.securityContext.supplementalGroups[]", default=0, lo=0, hi=2**31 - 1)
                   for g in _list(ctx.get("supplementalGroups"), "spec.securityContext.supplementalGroups",
                                  MAX_GROUPS))
    return fs_group, groups


def _hash(obj: Any) -> str:
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _parse_container(raw: Any, what: str, pod_sec: tuple[int | None, int | None, bool | None],
                     volumes: dict[str, dict[str, Any]],
                     pod_groups: tuple[int | None, tuple[int, ...]] = (None, ())) -> ContainerDef:
    raw = _dict(raw, what)
    name = _str(raw.get("name"), f"{what}.name", required=True, max_len=63)
    if not _DNS_LABEL.match(name):
        raise _fail(f"{what}.name is not a DNS label")
    image = _str(raw.get("image"), f"{what}.image", max_len=1024)
    command = None
    if raw.get("command") is not None:
        command = tuple(_str(c, f"{what}.command") for c in _list(raw["command"], f"{what}.command",
                                                                     MAX_ARGV))
    args = tuple(_str(a, f"{what}.args") for a in _list(raw.get("args"), f"{what}.args", MAX_ARGV))
    env = tuple(_parse_env(e, f"{what}.env[{i}]")
                for i, e in enumerate(_list(raw.get("env"), f"{what}.env", MAX_ENV)))
    env_from = tuple(_parse_env_from(e, f"{what}.envFrom[{i}]")
                     for i, e in enumerate(_list(raw.get("envFrom"), f"{what}.envFrom", MAX_ENV_FROM)))
    working_dir = _str(raw.get("workingDir"), f"{what}.workingDir", max_len=4096)
    if working_dir and not working_dir.startswith("/"):
        check_rel_path(working_dir, f"{what}.workingDir")
    mounts = []
    for i, m in enumerate(_list(raw.get("volumeMounts"), f"{what}.volumeMounts", MAX_MOUNTS)):
        m = _dict(m, f"{what}.volumeMounts[{i}]")
        mname = _str(m.get("name"), f"{what}.volumeMounts[{i}].name", required=True, max_len=63)
        if mname not in volumes:
            raise _fail(f"{what}.volumeMounts[{i}] names no volume of the pod")
        sub = _str(m.get("subPath"), f"{what}.volumeMounts[{i}].subPath", max_len=4096)
        if sub:
            check_rel_path(sub, f"{what}.volumeMounts[{i}].subPath")
        mounts.append(MountDef(mname, _str(m.get("mountPath"), "mountPath", required=True, max_len=4096),
                               sub, _bool(m.get("readOnly"), "readOnly")))
    ports = []
    for i, p in enumerate(_list(raw.get("ports"), f"{what}.ports", MAX_PORTS)):
        p = _dict(p, f"{what}.ports[{i}]")
        ports.append((_str(p.get("name"), "port name", max_len=15),
                      _int(p.get("containerPort"), "containerPort", default=0, lo=1, hi=65535)))
    user, group, non_root = _security(_dict(raw.get("securityContext"), f"{what}.securityContext"),
                                      f"{what}.securityContext")
    user = user if user is not None else pod_sec[0]
    group = group if group is not None else pod_sec[1]
    non_root = non_root if non_root is not None else pod_sec[2]
    # What a change restarts the container for (kubelet hashes the container spec): the
    # process's identity and inputs. Probes are applied live; configmap/secret *contents*
    # reach volumes in place and are not part of the hash.
    relevant = {k: raw.get(k) for k in ("image", "command", "args", "env", "envFrom", "workingDir",
                                        "volumeMounts", "ports")}
    relevant["user"] = [user, group, bool(non_root)]
    if pod_groups != (None, ()):  # only when set: the hashes of pods without them stay as they were
        relevant["groups"] = [pod_groups[0], list(pod_groups[1])]
    relevant["volumes"] = {m.name: volumes[m.name] for m in mounts}
    return ContainerDef(
        name=name, image=image, command=command, args=args, env=env, env_from=env_from,
        working_dir=working_dir, mounts=tuple(mounts), ports=tuple(ports), run_as_user=user,
        run_as_group=group, run_as_non_root=non_root,
        liveness=_parse_probe(raw.get("livenessProbe"), f"{what}.livenessProbe"),
        readiness=_parse_probe(raw.get("readinessProbe"), f"{what}.readinessProbe"),
        spec_hash=_hash(relevant),
    )


def parse_pod(obj: Any) -> PodDef:
    """Validate a Kubernetes Pod object (a dict from JSON) into a :class:`PodDef`."""
    obj = _dict(obj, "pod")
    meta = _dict(obj.get("metadata"), "metadata")
    spec = _dict(obj.get("spec"), "spec")
    uid = _str(meta.get("uid"), "metadata.uid", required=True, max_len=64)
    namespace = _str(meta.get("namespace"), "metadata.namespace", max_len=63) or "default"
    name = _str(meta.get("name"), "metadata.name", required=True, max_len=253)
    if not _UID.match(uid) or not _DNS_LABEL.match(namespace) or not _DNS_SUBDOMAIN.match(name):
        raise _fail("metadata.uid, namespace or name is not valid")
    raw_volumes = _list(spec.get("volumes"), "spec.volumes", MAX_VOLUMES)
    volumes = tuple(_parse_volume(v, f"spec.volumes[{i}]") for i, v in enumerate(raw_volumes))
    if len({v.name for v in volumes}) != len(volumes):
        raise _fail("spec.volumes has duplicate names")
    raw_by_name = {v.name: raw for v, raw in zip(volumes, raw_volumes, strict=True)}
    pod_ctx = _dict(spec.get("securityContext"), "spec.securityContext")
    pod_sec = _security(pod_ctx, "spec.securityContext")
    pod_groups = _pod_groups(pod_ctx)
    raw_containers = _list(spec.get("containers"), "spec.containers", MAX_CONTAINERS)
    if not raw_containers:
        raise _fail("spec.containers must not be empty")
    containers = tuple(_parse_container(c, f"spec.containers[{i}]", pod_sec, raw_by_name, pod_groups)
                       for i, c in enumerate(raw_containers))
    if len({c.name for c in containers}) != len(containers):
        raise _fail("spec.containers has duplicate names")
    policy = _str(spec.get("restartPolicy"), "spec.restartPolicy", max_len=16) or "Always"
    if policy not in RESTART_POLICIES:
        raise _fail("spec.restartPolicy must be Always, OnFailure or Never")
    grace = _int(spec.get("terminationGracePeriodSeconds"), "spec.terminationGracePeriodSeconds",
                 default=30, lo=0, hi=MAX_GRACE_S)
    meta_grace = meta.get("deletionGracePeriodSeconds")
    if meta_grace is not None:
        grace = min(grace, _int(meta_grace, "metadata.deletionGracePeriodSeconds", default=grace, lo=0,
                                hi=MAX_GRACE_S))
    return PodDef(uid=uid, namespace=namespace, name=name,
                  node_name=_str(spec.get("nodeName"), "spec.nodeName", max_len=253),
                  containers=containers, volumes=volumes, restart_policy=policy,
                  grace_period_s=float(grace), deleting=meta.get("deletionTimestamp") is not None,
                  fs_group=pod_groups[0], supplemental_groups=pod_groups[1])
