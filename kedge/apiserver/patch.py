"""PATCH bodies: JSON merge patch (RFC 7386), JSON patch (RFC 6902) and the subset of
Kubernetes strategic merge patch that ``kubectl apply``/``edit``/``label`` produce.

Pure functions over JSON values; inputs are never mutated. Every error is a
:class:`PatchError` (a peer error: the client sent a bad patch).

Strategic merge: lists of objects are merged by a per-field merge key (``containers``
by ``name``, container ``ports`` by ``containerPort``, ...), ``finalizers`` merge as a
set, and the directives ``$patch`` (replace/delete/merge), ``$retainKeys``,
``$setElementOrder/<field>`` and ``$deleteFromPrimitiveList/<field>`` are honoured.
Fields without a known strategy are replaced, as Kubernetes does.
"""

from __future__ import annotations

import copy
import re
from typing import Any

from kedge.errors import PeerError

MAX_JSON_PATCH_OPS = 10_000
_ARRAY_INDEX = re.compile(r"0|[1-9][0-9]{0,17}")


class PatchError(PeerError):
    code = "invalid_patch"


def json_copy(value: Any) -> Any:
    """A deep copy of a JSON value (dicts, lists, scalars) -- several times faster than
    ``copy.deepcopy``, which it falls back to for anything else (YAML may give dates)."""
    t = type(value)
    if t is dict:
        return {k: json_copy(v) for k, v in value.items()}
    if t is list:
        return [json_copy(v) for v in value]
    if t is str or t is int or t is float or t is bool or value is None:
        return value
    return copy.deepcopy(value)


# -- JSON merge patch ----------------------------------------------------------

def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386."""
    if not isinstance(patch, dict):
        return json_copy(patch)
    result = json_copy(target) if isinstance(target, dict) else {}
    _merge_into(result, patch)
    return result


def _merge_into(result: dict[str, Any], patch: dict[str, Any]) -> None:
    """Merge ``patch`` into ``result`` (our own copy) in place."""
    for k, v in patch.items():
        if v is None:
            result.pop(k, None)
        elif isinstance(v, dict):
            cur = result.get(k)
            if not isinstance(cur, dict):
                cur = {}
            result[k] = cur
            _merge_into(cur, v)
        else:
            result[k] = json_copy(v)


# -- JSON patch ------------------------------------------------------------------

def _pointer(path: Any) -> list[str]:
    if not isinstance(path, str) or (path and not path.startswith("/")):
        raise PatchError("invalid JSON pointer")
    if path == "":
        return []
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _index(container: list[Any], token: str, *, allow_end: bool) -> int:
    if token == "-" and allow_end:
        return len(container)
    # ASCII digits only, no leading zero (RFC 6901), at most 18 digits: ``str.isdigit``
    # also accepts "²" and Arabic-Indic digits, and int() of thousands of digits raises.
    if not _ARRAY_INDEX.fullmatch(token):
        raise PatchError("invalid array index")
    i = int(token)
    if i > len(container) or (i == len(container) and not allow_end):
        raise PatchError("array index out of range")
    return i


def _parent(doc: Any, tokens: list[str]) -> Any:
    cur = doc
    for t in tokens[:-1]:
        if isinstance(cur, dict):
            if t not in cur:
                raise PatchError("path does not exist")
            cur = cur[t]
        elif isinstance(cur, list):
            cur = cur[_index(cur, t, allow_end=False)]
        else:
            raise PatchError("path does not exist")
    return cur


def _get(doc: Any, tokens: list[str]) -> Any:
    if not tokens:
        return doc
    parent = _parent(doc, tokens)
    last = tokens[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise PatchError("path does not exist")
        return parent[last]
    if isinstance(parent, list):
        return parent[_index(parent, last, allow_end=False)]
    raise PatchError("path does not exist")


def _add(doc: Any, tokens: list[str], value: Any) -> Any:
    if not tokens:
        return value
    parent = _parent(doc, tokens)
    last = tokens[-1]
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        parent.insert(_index(parent, last, allow_end=True), value)
    else:
        raise PatchError("path does not exist")
    return doc


def _remove(doc: Any, tokens: list[str]) -> Any:
    if not tokens:
        raise PatchError("cannot remove the whole document")
    parent = _parent(doc, tokens)
    last = tokens[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise PatchError("path does not exist")
        del parent[last]
    elif isinstance(parent, list):
        del parent[_index(parent, last, allow_end=False)]
    else:
        raise PatchError("path does not exist")
    return doc


def json_patch(target: Any, ops: Any) -> Any:
    """RFC 6902: add, remove, replace, move, copy, test."""
    if not isinstance(ops, list):
        raise PatchError("a JSON patch is a list of operations")
    if len(ops) > MAX_JSON_PATCH_OPS:
        raise PatchError("too many JSON patch operations")
    doc = json_copy(target)
    for op in ops:
        if not isinstance(op, dict) or "op" not in op:
            raise PatchError("invalid JSON patch operation")
        kind = op["op"]
        path = _pointer(op.get("path"))
        if kind == "add":
            if "value" not in op:
                raise PatchError("add needs a value")
            doc = _add(doc, path, json_copy(op["value"]))
        elif kind == "remove":
            doc = _remove(doc, path)
        elif kind == "replace":
            if "value" not in op:
                raise PatchError("replace needs a value")
            _get(doc, path)
            doc = _add(_remove(doc, path), path, json_copy(op["value"])) if path else json_copy(op["value"])
        elif kind in ("move", "copy"):
            src = _pointer(op.get("from"))
            value = json_copy(_get(doc, src))
            if kind == "move":
                if path[:len(src)] == src and len(path) > len(src):
                    raise PatchError("cannot move a value into itself")
                doc = _remove(doc, src)
            doc = _add(doc, path, value)
        elif kind == "test":
            if _get(doc, path) != op.get("value"):
                raise PatchError("test operation failed", code="patch_test_failed")
        else:
            raise PatchError("unknown JSON patch operation")
    return doc


# -- strategic merge patch -------------------------------------------------------

# field name -> merge key (None = merge primitive list as a set)
_MERGE_KEYS: dict[str, str | None] = {
    "containers": "name", "initContainers": "name", "ephemeralContainers": "name",
    "env": "name", "volumes": "name", "volumeMounts": "mountPath", "volumeDevices": "devicePath",
    "imagePullSecrets": "name", "hostAliases": "ip", "conditions": "type", "ownerReferences": "uid",
    "finalizers": None, "topologySpreadConstraints": "topologyKey", "resourceClaims": "name",
    "addresses": "type", "taints": "key", "ports": "containerPort",
}


def _merge_key(field: str, parent_path: tuple[str, ...]) -> tuple[bool, str | None]:
    """(has a merge strategy, merge key) for list ``field`` under ``parent_path``."""
    if field == "ports":
        # container ports merge by containerPort, Service ports by port
        return True, "containerPort" if "containers" in parent_path or "initContainers" in parent_path else "port"
    if field == "addresses" and parent_path[-1:] != ("status",):
        return False, None
    if field in _MERGE_KEYS:
        return True, _MERGE_KEYS[field]
    return False, None


def strategic_merge_patch(target: Any, patch: Any) -> Any:
    """Apply a strategic merge patch produced by kubectl to ``target``."""
    if not isinstance(patch, dict):
        raise PatchError("a strategic merge patch is a JSON object")
    return _smp_map(target if isinstance(target, dict) else {}, patch, ())


def _smp_map(orig: dict[str, Any], patch: dict[str, Any], path: tuple[str, ...]) -> Any:
    directive = patch.get("$patch")
    if directive == "replace":
        return {k: json_copy(v) for k, v in patch.items() if k != "$patch"}
    if directive == "delete":
        return None
    if directive not in (None, "merge"):
        raise PatchError("unknown $patch directive")
    result = json_copy(orig)
    orders: dict[str, list[Any]] = {}
    retain = patch.get("$retainKeys")
    for k, v in patch.items():
        if k in ("$patch", "$retainKeys"):
            continue
        if k.startswith("$setElementOrder/"):
            if isinstance(v, list):
                orders[k.split("/", 1)[1]] = v
            continue
        if k.startswith("$deleteFromPrimitiveList/"):
            field = k.split("/", 1)[1]
            if isinstance(result.get(field), list) and isinstance(v, list):
                result[field] = [x for x in result[field] if x not in v]
            continue
        if v is None:
            result.pop(k, None)
            continue
        cur = result.get(k)
        if isinstance(v, dict):
            merged = _smp_map(cur if isinstance(cur, dict) else {}, v, path + (k,))
            if merged is None:
                result.pop(k, None)
            else:
                result[k] = merged
        elif isinstance(v, list):
            result[k] = _smp_list(cur if isinstance(cur, list) else [], v, k, path)
        else:
            result[k] = json_copy(v)
    for field, order in orders.items():
        if isinstance(result.get(field), list):
            result[field] = _reorder(result[field], order, field, path)
    if retain is not None:
        if not isinstance(retain, list) or not all(isinstance(k, str) for k in retain):
            raise PatchError("$retainKeys must be a list of strings")
        keep = set(retain)
        result = {k: v for k, v in result.items() if k in keep}
    return result


def _smp_list(orig: list[Any], patch: list[Any], field: str, path: tuple[str, ...]) -> list[Any]:
    strategy, key = _merge_key(field, path)
    if not strategy:
        return [x for x in json_copy(patch) if not (isinstance(x, dict) and x.get("$patch") == "delete")]
    if key is None or not all(isinstance(x, dict) for x in patch):
        if any(isinstance(x, dict) and x.get("$patch") == "replace" for x in patch):
            return [x for x in json_copy(patch) if not isinstance(x, dict)]
        out = json_copy(orig)
        for x in patch:
            if x not in out:
                out.append(json_copy(x))
        return out
    if any(x.get("$patch") == "replace" for x in patch):
        return [json_copy(x) for x in patch if x.get("$patch") != "replace"]
    out = json_copy(orig)
    for item in patch:
        if key not in item:
            raise PatchError(f"list item of {field} lacks merge key {key}")
        idx = next((i for i, o in enumerate(out) if isinstance(o, dict) and o.get(key) == item[key]), None)
        if item.get("$patch") == "delete":
            if idx is not None:
                del out[idx]
            continue
        if idx is None:
            out.append(_smp_map({}, item, path + (field,)))
        else:
            merged = _smp_map(out[idx], item, path + (field,))
            if merged is None:
                del out[idx]
            else:
                out[idx] = merged
    return out


def _reorder(items: list[Any], order: list[Any], field: str, path: tuple[str, ...]) -> list[Any]:
    _, key = _merge_key(field, path)

    def ident(x: Any) -> Any:
        if key is not None and isinstance(x, dict):
            return x.get(key)
        return x if not isinstance(x, dict) else None

    wanted = [o.get(key) if (key is not None and isinstance(o, dict)) else o for o in order]
    positions = {}
    for i, w in enumerate(wanted):
        try:
            positions.setdefault(w, i)
        except TypeError:
            continue

    def sort_key(pair: tuple[int, Any]) -> tuple[int, int]:
        i, x = pair
        try:
            return (positions.get(ident(x), len(wanted)), i)
        except TypeError:
            return (len(wanted), i)

    return [x for _, x in sorted(enumerate(items), key=sort_key)]
