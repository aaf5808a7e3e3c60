"""The JSON types of every nested field of a built-in kind, as Kubernetes' decoder enforces them.

Kubernetes decodes a request body into Go structs: ``volumes: [{name: v, configMap: "oops"}]``
is refused with 400 before anything is stored ("cannot be handled as a Pod"). kedge keeps
objects as JSON, so without this check an ill-typed nested field would be stored and every
reader of the object (node graph, edge sync, printers) would meet it later.

The type information comes from the ``kubernetes`` client's generated models (their
``openapi_types`` and ``attribute_map`` class attributes, generated from the upstream
OpenAPI document), not from hand-written tables. Kinds the client does not model (custom
resources) are not checked here.

The check is deliberately a little more lenient than Go's decoder where Kubernetes itself
accepts more than one JSON type (quantities and int-or-string fields accept numbers or
strings): it refuses what would make a reader meet an object where it expects a list, a
list where it expects a string, and so on -- never a valid Kubernetes object.
"""

from __future__ import annotations

import functools
import re
from typing import Any

from kedge.apiserver.status import ApiError

# Generated type strings: ``List[V1Volume]`` / ``Dict[str, str]`` (older clients: ``list[...]``,
# ``dict(str, ...)``).
_LIST = re.compile(r"[Ll]ist\[(.+)\]")
_DICT = re.compile(r"(?:dict\(str, (.+)\)|Dict\[str, (.+)\])")
_MAX_ERRORS = 1  # the first error, as Go's decoder reports it


@functools.cache
def _models() -> Any:
    import kubernetes.client.models as models  # the cloud extra; imported on first use only

    return models


@functools.cache
def model_for(api_version: str, kind: str) -> Any:
    """The client model class of ``apiVersion``/``kind``, or None when the client has none."""
    version = api_version.rsplit("/", 1)[-1]
    if not version or not kind.isidentifier():
        return None
    cls = getattr(_models(), version[:1].upper() + version[1:] + kind, None)
    return cls if isinstance(getattr(cls, "openapi_types", None), dict) else None


@functools.cache
def _fields(cls: Any) -> dict[str, str]:
    """JSON field name -> type string of a model class."""
    return {cls.attribute_map[attr]: typ for attr, typ in cls.openapi_types.items()}


def _type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return "null"


def _check(value: Any, typ: str, path: str) -> str | None:
    """The first type error at ``path`` (a message), or None."""
    if value is None or typ == "object":
        return None
    m = _LIST.fullmatch(typ)
    if m:
        if not isinstance(value, list):
            return f"{path}: expected a list, got {_type_name(value)}"
        for i, item in enumerate(value):
            err = _check(item, m.group(1), f"{path}[{i}]")
            if err:
                return err
        return None
    m = _DICT.fullmatch(typ)
    if m:
        if not isinstance(value, dict):
            return f"{path}: expected an object, got {_type_name(value)}"
        inner = m.group(1) or m.group(2)
        for k, v in value.items():
            # map values of type string are quantities in most of the API: numbers are accepted.
            if inner == "str" and isinstance(v, (int, float)) and not isinstance(v, bool):
                continue
            err = _check(v, inner, f"{path}[{k}]")
            if err:
                return err
        return None
    if typ in ("str", "datetime", "date", "bytes"):
        # strings; quantities and int-or-string fields typed "str" also take numbers.
        if isinstance(value, str) or (isinstance(value, (int, float)) and not isinstance(value, bool)):
            return None
        return f"{path}: expected a string, got {_type_name(value)}"
    if typ == "int":
        if isinstance(value, int) and not isinstance(value, bool):
            return None
        if isinstance(value, float) and value.is_integer():
            return None
        return f"{path}: expected an integer, got {_type_name(value)}"
    if typ == "float":
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return None
        return f"{path}: expected a number, got {_type_name(value)}"
    if typ == "bool":
        return None if isinstance(value, bool) else f"{path}: expected a boolean, got {_type_name(value)}"
    cls = getattr(_models(), typ, None)
    if cls is None or not isinstance(getattr(cls, "openapi_types", None), dict):
        return None  # a type the client describes only by name: not checked
    if not isinstance(value, dict):
        return f"{path}: expected an object, got {_type_name(value)}"
    fields = _fields(cls)
    for key, item in value.items():
        sub = fields.get(key)
        if sub is not None:
            err = _check(item, sub, f"{path}.{key}" if path else key)
            if err:
                return err
    return None


def type_error(obj: dict[str, Any]) -> str | None:
    """The first nested type error of a built-in object (``spec.volumes[0].configMap: ...``), or None."""
    cls = model_for(str(obj.get("apiVersion") or ""), str(obj.get("kind") or ""))
    if cls is None:
        return None
    return _check(obj, cls.__name__, "")


def check_types(obj: dict[str, Any]) -> None:
    """Raise 400 as Kubernetes' decoder does when a nested field has the wrong JSON type."""
    err = type_error(obj)
    if err is not None:
        kind, api_version = str(obj.get("kind")), str(obj.get("apiVersion"))
        raise ApiError(400, f'{kind} in version "{api_version.rsplit("/", 1)[-1]}" cannot be handled as a '
                            f"{kind}: {err}")
