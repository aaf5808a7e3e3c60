"""What a container gets: its environment and its volume files -- pure functions.

(Its user is :mod:`kedge.edge.edged.ids`' decision.)

Inputs are a validated :class:`~kedge.edge.edged.spec.PodDef` and a ``lookup(type,
namespace, name)`` callable returning the ConfigMap/Secret object the node holds (or
``None``). A missing, non-optional reference raises :class:`ContainerConfigError`
(reason ``CreateContainerConfigError``, as kubelet reports it); the container then
waits and is retried.

No I/O here: writing the files is :mod:`kedge.edge.edged.volumes`' job.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable, Mapping
from typing import Any

from kedge.edge.edged.plan import CONFIG_ERROR
from kedge.edge.edged.spec import ContainerDef, PodDef, VolumeDef
from kedge.errors import PeerError

Lookup = Callable[[str, str, str], "dict[str, Any] | None"]

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
from kedge.limits import POD_VOLUME_MAX_BYTES as MAX_VOLUME_BYTES  # noqa: E402  (one configMap/secret volume)
_ENV_KEY = re.compile(r"\A[-._a-zA-Z][-._a-zA-Z0-9]*\Z")
_FILE_KEY = re.compile(r"\A[-._a-zA-Z0-9]{1,253}\Z")
_REF = re.compile(r"\$\$|\$\(([-._a-zA-Z][-._a-zA-Z0-9]*)\)")


class ContainerConfigError(PeerError):
    """The container cannot be set up from what the node holds (yet)."""

    code = "container_config"

    def __init__(self, message: str, *, reason: str = CONFIG_ERROR) -> None:
        super().__init__(message)
        self.reason = reason


def env_var_suffix(name: str) -> str:
    return re.sub(r"[^A-Z0-9]", "_", name.upper())


def _object(lookup: Lookup, kind: str, namespace: str, name: str, optional: bool) -> dict[str, Any] | None:
    obj = lookup(kind, namespace, name)
    if obj is None or not isinstance(obj, dict):
        if optional:
            return None
        raise ContainerConfigError(f"{kind} {name!r} not found")
    return obj


def object_data(kind: str, obj: Mapping[str, Any]) -> dict[str, bytes]:
    """Key -> bytes of a ConfigMap (``data`` + ``binaryData``) or Secret (``data``, base64)."""
    out: dict[str, bytes] = {}
    data = obj.get("data") or {}
    if not isinstance(data, dict):
        raise ContainerConfigError(f"{kind} data is not an object")
    for key, value in data.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise ContainerConfigError(f"{kind} data holds a non-string")
        if kind == "secret":
            try:
                out[key] = base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError) as exc:
                raise ContainerConfigError("secret data is not base64") from exc
        else:
            out[key] = value.encode()
    extra = obj.get("binaryData" if kind == "configmap" else "stringData") or {}
    if not isinstance(extra, dict):
        raise ContainerConfigError(f"{kind} data is not an object")
    for key, value in extra.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise ContainerConfigError(f"{kind} data holds a non-string")
        try:
            out[key] = base64.b64decode(value, validate=True) if kind == "configmap" else value.encode()
        except (binascii.Error, ValueError) as exc:
            raise ContainerConfigError("configmap binaryData is not base64") from exc
    return out


def _text(value: bytes, what: str) -> str:
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ContainerConfigError(f"{what} is not UTF-8 text") from exc
    if "\x00" in text:
        raise ContainerConfigError(f"{what} contains NUL")
    return text


def expand(value: str, env: Mapping[str, str]) -> str:
    """Kubernetes ``$(VAR)`` expansion: known names replaced, ``$$`` escapes, unknown kept."""

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        return env.get(m.group(1), m.group(0))

    return _REF.sub(sub, value)


def _field(pod: PodDef, path: str, host_ip: str) -> str:
    fields = {"metadata.name": pod.name, "metadata.namespace": pod.namespace, "metadata.uid": pod.uid,
              "spec.nodeName": pod.node_name, "status.hostIP": host_ip, "status.podIP": host_ip}
    if path not in fields:
        raise ContainerConfigError(f"fieldRef {path!r} is not supported")
    return fields[path]


def resolve_env(pod: PodDef, c: ContainerDef, lookup: Lookup, *, volume_paths: Mapping[str, str],
                host_ip: str = "127.0.0.1") -> dict[str, str]:
    """The container's whole environment (nothing inherited from edgecore)."""
    env: dict[str, str] = {"PATH": DEFAULT_PATH, "HOSTNAME": pod.name}
    for src in c.env_from:
        obj = _object(lookup, src.kind, pod.namespace, src.name, src.optional)
        if obj is None:
            continue
        for key, value in sorted(object_data(src.kind, obj).items()):
            name = src.prefix + key
            # kubelet skips keys that are not valid names; binary values cannot be env either.
            if _ENV_KEY.match(name):
                try:
                    env[name] = _text(value, f"{src.kind} {src.name}/{key}")
                except ContainerConfigError:
                    continue
    for var in c.env:
        if var.source == "":
            env[var.name] = expand(var.value, env)
        elif var.source == "field":
            env[var.name] = _field(pod, var.key, host_ip)
        else:
            obj = _object(lookup, var.source, pod.namespace, var.source_name, var.optional)
            if obj is None:
                continue
            data = object_data(var.source, obj)
            if var.key not in data:
                if var.optional:
                    continue
                raise ContainerConfigError(f"key {var.key!r} not found in {var.source} {var.source_name!r}")
            env[var.name] = _text(data[var.key], f"{var.source} {var.source_name}/{var.key}")
    for name, path in volume_paths.items():
        env[f"KEDGE_VOLUME_{env_var_suffix(name)}"] = path
    return env


def volume_files(pod: PodDef, vol: VolumeDef, lookup: Lookup) -> dict[str, tuple[bytes, int]] | None:
    """Relative path -> (bytes, mode) of a configMap/secret volume; ``None`` for emptyDir.

    Secret files default to 0400, configmap files to 0444: the files belong to the pod's
    user and only it can traverse the volume directory (0700) anyway.
    """
    if vol.kind == "emptydir":
        return None
    default = vol.default_mode if vol.default_mode is not None else (0o400 if vol.kind == "secret"
                                                                     else 0o444)
    obj = _object(lookup, vol.kind, pod.namespace, vol.source_name, vol.optional)
    if obj is None:
        return {}
    data = object_data(vol.kind, obj)
    files: dict[str, tuple[bytes, int]] = {}
    if vol.items:
        for key, path, mode in vol.items:
            if key not in data:
                if vol.optional:
                    continue
                raise ContainerConfigError(f"key {key!r} not found in {vol.kind} {vol.source_name!r}")
            files[path] = (data[key], mode if mode is not None else default)
    else:
        for key, value in data.items():
            # Keys become file names: skip anything that is not a plain name
            # (kubelet reserves "..data" and friends).
            if not _FILE_KEY.match(key) or key.startswith(".."):
                continue
            files[key] = (value, default)
    if sum(len(v) for v, _ in files.values()) > MAX_VOLUME_BYTES:
        raise ContainerConfigError(f"volume {vol.name!r} is too large")
    # Paths must not nest under one another as both file and directory.
    names = sorted(files)
    for a, b in zip(names, names[1:], strict=False):
        if b.startswith(a + "/"):
            raise ContainerConfigError(f"volume {vol.name!r}: {a!r} is both a file and a directory")
    return files
