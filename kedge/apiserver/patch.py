"""PATCH bodies: JSON merge patch (RFC 7386), JSON patch (RFC 6902) and the subset of
Kubernetes strategic merge patch that ``kubectl apply``/``edit``/``label`` produce.

Pure functions over JSON values; inputs are never mutated. Every error is a
:class:`PatchError` (a peer error: the client sent a bad patch).

Strategic merge: lists of objects are merged by a per-field merge key (``containers``
by ``name``, container ``ports`` by ``containerPort``, ...), ``finalizers`` merge as a
set, and the directives ``$patch`` (replace/delete/merge), ``$retainKeys``,
``$setElementOrder/<field>`` and ``$deleteFromPrimitiveList/<field>`` are honoured.
Fields without a known strategy are replaced, as Kubernetes does.

The work a patch causes is bounded *while* it is applied (:class:`_Budget`, bounds in
:mod:`kedge.limits`): a small body must not make the server copy gigabytes before a size
check after the fact (CVE-2019-1002100: each JSON patch ``copy`` of a list into itself
doubles it). Past a bound the patch fails at once with :class:`PatchTooLarge`, answered as
kube-apiserver answers it (413 for too many operations, 422 otherwise).
"""

from __future__ import annotations

import collections
import copy
import re
from typing import Any

from kedge.apiserver.status import ApiError
from kedge.errors import PeerError
from kedge.limits import DEFAULT, Limits

MAX_JSON_PATCH_OPS = DEFAULT.max_patch_ops
_ARRAY_INDEX = re.compile(r"0|[1-9][0-9]{0,17}")
# kube-apiserver's message for any JSON patch that fails to apply (a 422 "Invalid").
_REJECTED = "the server rejected our request due to an error in our request"


class PatchError(PeerError):
    code = "invalid_patch"


class PatchTooLarge(PatchError, ApiError):
    """Applying the patch would exceed a bound of :mod:`kedge.limits`.

    An :class:`ApiError` too, so the API server answers it with its own status: 413
    ``RequestEntityTooLarge`` for too many operations, 422 ``Invalid`` for the rest, as
    kube-apiserver does. The message names the bound, never the peer's content.
    """

    def __init__(self, status: int, message: str) -> None:
        ApiError.__init__(self, status, message)
        self.code = "patch_too_large"


class _Budget:
    """What one patch has spent: bytes added by copies, list elements shifted or compared."""

    __slots__ = ("copied", "limits", "work")

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.copied = 0
        self.work = 0

    def charge_copy(self, n: int) -> None:
        self.copied += n
        if self.copied > self.limits.max_patch_copy_bytes:
            raise PatchTooLarge(422, f"{_REJECTED}: the accumulated size increase of copy operations exceeds "
                                     f"the limit of {self.limits.max_patch_copy_bytes} bytes")

    def charge_work(self, n: int) -> None:
        self.work += n
        if self.work > self.limits.max_patch_work:
            raise PatchTooLarge(422, f"{_REJECTED}: the patch moves or compares more than "
                                     f"{self.limits.max_patch_work} list elements")

    def too_deep(self) -> PatchTooLarge:
        return PatchTooLarge(422, f"{_REJECTED}: the patched object would nest deeper than "
                                  f"{self.limits.max_patch_depth} levels")


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


def _add(doc: Any, tokens: list[str], value: Any, budget: _Budget) -> Any:
    if not tokens:
        return value
    parent = _parent(doc, tokens)
    last = tokens[-1]
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        i = _index(parent, last, allow_end=True)
        budget.charge_work(len(parent) - i + 1)  # the elements list.insert shifts
        parent.insert(i, value)
    else:
        raise PatchError("path does not exist")
    return doc


def _remove(doc: Any, tokens: list[str], budget: _Budget) -> Any:
    if not tokens:
        raise PatchError("cannot remove the whole document")
    parent = _parent(doc, tokens)
    last = tokens[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise PatchError("path does not exist")
        del parent[last]
    elif isinstance(parent, list):
        i = _index(parent, last, allow_end=False)
        budget.charge_work(len(parent) - i)
        del parent[i]
    else:
        raise PatchError("path does not exist")
    return doc


def _check_depth(value: Any, base: int, budget: _Budget) -> None:
    """Refuse ``value`` placed under ``base`` path tokens if the document would nest too deep.

    Walks at most what fits (it stops at the first node too deep); each node it visits is
    charged as work, so moving one big subtree around 10,000 times cannot cost 10,000 walks.
    """
    limit = budget.limits.max_patch_depth
    stack = [(value, base + 1)]
    seen = 0
    while stack:
        v, d = stack.pop()
        seen += 1
        if d > limit:
            raise budget.too_deep()
        if type(v) is dict:
            stack.extend((x, d + 1) for x in v.values())
        elif type(v) is list:
            stack.extend((x, d + 1) for x in v)
    budget.charge_work(seen)


def _copy_counted(value: Any, depth: int, budget: _Budget) -> Any:
    """A deep copy of ``value`` (to sit at ``depth``), charging its JSON size as it goes.

    The size is an estimate (strings by length, numbers as 8 bytes), close enough to bound
    the work: the copy stops as soon as the patch's copy budget is spent, so a value that
    doubled forty times is never copied in full.
    """
    if depth > budget.limits.max_patch_depth:
        raise budget.too_deep()
    t = type(value)
    if t is dict:
        budget.charge_copy(2 + sum(len(k) + 4 for k in value))
        return {k: _copy_counted(v, depth + 1, budget) for k, v in value.items()}
    if t is list:
        budget.charge_copy(2 + len(value))
        return [_copy_counted(v, depth + 1, budget) for v in value]
    if t is str:
        budget.charge_copy(len(value) + 2)
        return value
    if t is int or t is float or t is bool or value is None:
        budget.charge_copy(8)
        return value
    budget.charge_copy(8)
    return copy.deepcopy(value)


def json_patch(target: Any, ops: Any, limits: Limits = DEFAULT) -> Any:
    """RFC 6902: add, remove, replace, move, copy, test -- within the bounds of ``limits``."""
    if not isinstance(ops, list):
        raise PatchError("a JSON patch is a list of operations")
    if len(ops) > limits.max_patch_ops:
        raise PatchTooLarge(413, f"Request entity too large: The allowed maximum operations in a JSON patch "
                                 f"is {limits.max_patch_ops}, got {len(ops)}")
    budget = _Budget(limits)
    doc = json_copy(target)
    for op in ops:
        if not isinstance(op, dict) or "op" not in op:
            raise PatchError("invalid JSON patch operation")
        kind = op["op"]
        path = _pointer(op.get("path"))
        if kind == "add":
            if "value" not in op:
                raise PatchError("add needs a value")
            _check_depth(op["value"], len(path), budget)
            doc = _add(doc, path, json_copy(op["value"]), budget)
        elif kind == "remove":
            doc = _remove(doc, path, budget)
        elif kind == "replace":
            if "value" not in op:
                raise PatchError("replace needs a value")
            _get(doc, path)
            _check_depth(op["value"], len(path), budget)
            value = json_copy(op["value"])
            doc = _add(_remove(doc, path, budget), path, value, budget) if path else value
        elif kind == "move":
            src = _pointer(op.get("from"))
            if path[:len(src)] == src and len(path) > len(src):
                raise PatchError("cannot move a value into itself")
            value = _get(doc, src)  # ours (doc is a copy): moved, not copied
            if len(path) > len(src):
                _check_depth(value, len(path), budget)  # it goes deeper than it was
            doc = _add(_remove(doc, src, budget), path, value, budget)
        elif kind == "copy":
            src = _pointer(op.get("from"))
            value = _copy_counted(_get(doc, src), len(path) + 1, budget)
            doc = _add(doc, path, value, budget)
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


def strategic_merge_patch(target: Any, patch: Any, limits: Limits = DEFAULT) -> Any:
    """Apply a strategic merge patch produced by kubectl to ``target``, within ``limits``.

    The target is copied once and merged in place (no copy per level), and list items are
    found through an index by merge key, so the work is linear in target plus patch; what
    cannot be indexed (unhashable values) is compared one by one and charged to the budget.
    """
    if not isinstance(patch, dict):
        raise PatchError("a strategic merge patch is a JSON object")
    return _smp_map(json_copy(target) if isinstance(target, dict) else {}, patch, (), _Budget(limits))


def _smp_map(result: dict[str, Any], patch: dict[str, Any], path: tuple[str, ...], budget: _Budget) -> Any:
    """Merge ``patch`` into ``result`` (our own copy, changed in place); None for ``$patch: delete``."""
    directive = patch.get("$patch")
    if directive == "replace":
        return {k: json_copy(v) for k, v in patch.items() if k != "$patch"}
    if directive == "delete":
        return None
    if directive not in (None, "merge"):
        raise PatchError("unknown $patch directive")
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
                drop = _Members(v, budget)
                result[field] = [x for x in result[field] if x not in drop]
            continue
        if v is None:
            result.pop(k, None)
            continue
        cur = result.get(k)
        if isinstance(v, dict):
            merged = _smp_map(cur if isinstance(cur, dict) else {}, v, path + (k,), budget)
            if merged is None:
                result.pop(k, None)
            else:
                result[k] = merged
        elif isinstance(v, list):
            result[k] = _smp_list(cur if isinstance(cur, list) else [], v, k, path, budget)
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


class _Members:
    """``x in items`` for a list that grows: a set lookup for hashable items (JSON scalars, same
    ``==`` as a list scan), a scan charged to the budget for the unhashable rest (maps, lists)."""

    def __init__(self, items: list[Any], budget: _Budget) -> None:
        self.budget = budget
        self.hashable: set[Any] = set()
        self.other: list[Any] = []
        for x in items:
            self.add(x)

    def add(self, x: Any) -> None:
        try:
            self.hashable.add(x)
        except TypeError:
            self.other.append(x)

    def __contains__(self, x: Any) -> bool:
        try:
            return x in self.hashable
        except TypeError:
            self.budget.charge_work(len(self.other))
            return x in self.other


_GONE = object()


class _ByKey:
    """Positions of a list's map items by merge-key value, first one first (``o.get(key) == value``)."""

    def __init__(self, items: list[Any], key: str, budget: _Budget) -> None:
        self.items, self.key, self.budget = items, key, budget
        self.rebuild()

    def rebuild(self) -> None:
        self.budget.charge_work(len(self.items))
        self.index: dict[Any, collections.deque[int]] = {}
        self.other: list[int] = []  # positions whose key value is unhashable
        for i, o in enumerate(self.items):
            if isinstance(o, dict):
                self.add(o.get(self.key), i)

    def add(self, value: Any, i: int) -> None:
        try:
            self.index.setdefault(value, collections.deque()).append(i)
        except TypeError:
            self.other.append(i)

    def find(self, value: Any) -> int | None:
        try:
            found = self.index.get(value)
            return found[0] if found else None
        except TypeError:
            self.budget.charge_work(len(self.other))
            return next((i for i in self.other if self.items[i].get(self.key) == value), None)

    def drop(self, value: Any, i: int) -> None:
        """Forget position ``i``, the first one :meth:`find` gave for ``value``."""
        self.items[i] = _GONE
        try:
            self.index[value].popleft()
        except TypeError:
            self.other.remove(i)


def _smp_list(orig: list[Any], patch: list[Any], field: str, path: tuple[str, ...],
              budget: _Budget) -> list[Any]:
    strategy, key = _merge_key(field, path)
    if not strategy:
        return [x for x in json_copy(patch) if not (isinstance(x, dict) and x.get("$patch") == "delete")]
    if key is None or not all(isinstance(x, dict) for x in patch):
        if any(isinstance(x, dict) and x.get("$patch") == "replace" for x in patch):
            return [x for x in json_copy(patch) if not isinstance(x, dict)]
        out = orig  # ours: merged as a set, in place
        members = _Members(out, budget)
        for x in patch:
            if x not in members:
                out.append(json_copy(x))
                members.add(x)
        return out
    if any(x.get("$patch") == "replace" for x in patch):
        return [json_copy(x) for x in patch if x.get("$patch") != "replace"]
    out = orig  # ours: merged in place; deleted items are left as _GONE until the end
    by_key = _ByKey(out, key, budget)
    for item in patch:
        if key not in item:
            raise PatchError(f"list item of {field} lacks merge key {key}")
        value = item[key]
        idx = by_key.find(value)
        if item.get("$patch") == "delete":
            if idx is not None:
                by_key.drop(value, idx)
            continue
        if idx is None:
            new = _smp_map({}, item, path + (field,), budget)
            out.append(new)
            if isinstance(new, dict):
                by_key.add(new.get(key), len(out) - 1)
            continue
        merged = _smp_map(out[idx], item, path + (field,), budget)
        if merged is None:
            by_key.drop(value, idx)
            continue
        out[idx] = merged
        if merged.get(key) != value:  # $retainKeys dropped the merge key: index again
            by_key.rebuild()
    return [o for o in out if o is not _GONE]


def _reorder(items: list[Any], order: list[Any], field: str, path: tuple[str, ...]) -> list[Any]:
    _, key = _merge_key(field, path)

    def ident(x: Any) -> Any:
        if key is not None and isinstance(x, dict):
            return x.get(key)
        return x if not isinstance(x, dict) else None

    wanted = [o.get(key) if (key is not None and isinstance(o, dict)) else o for o in order]
    positions: dict[Any, int] = {}
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
