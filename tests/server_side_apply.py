"""Server-side apply as the Kubernetes documentation specifies it ("Server-Side Apply"), for
the emulator (tests/emulator.py): the fields each manager set, conflicts, and the removal of
the fields a manager stops applying that no other manager set. Maps and the items of the
built-in kinds' associative lists (containers, env, volumes, ports, ... by their keys) are
merged field by field; every other list is atomic.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
from collections.abc import Mapping
from typing import Any

# Metadata the API server keeps itself; no manager owns it.
IDENTITY = {
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "managedFields",
    "selfLink",
}
FieldPath = tuple["str | Keyed", ...]
_MISSING = object()


@dataclasses.dataclass(frozen=True, slots=True)
class Keyed:
    """An item of an associative list, by the values of its keys (`k:{...}` in managedFields):
    managers own the fields of items, not the list."""

    keys: tuple[tuple[str, Any], ...]

    def matches(self, item: Any) -> bool:
        return isinstance(item, dict) and all(item.get(k) == v for k, v in self.keys)

    def __str__(self) -> str:
        return "k:{" + ",".join(f"{k}={v}" for k, v in self.keys) + "}"


# The associative lists (x-kubernetes-list-type: map) of the kinds the operator writes, by
# the field name that holds them, and their keys; every other list is atomic.
ASSOCIATIVE = {
    "containers": ("name",),
    "initContainers": ("name",),
    "env": ("name",),
    "volumes": ("name",),
    "imagePullSecrets": ("name",),
    "volumeMounts": ("mountPath",),
    "ownerReferences": ("uid",),
    "topologySpreadConstraints": ("topologyKey", "whenUnsatisfiable"),
}


def _list_keys(name: str, items: list[Any]) -> tuple[str, ...] | None:
    if not items or not all(isinstance(item, dict) for item in items):
        return None
    if name == "ports":  # a container's by containerPort, a Service's by port
        keys: tuple[str, ...] | None = (
            ("containerPort", "protocol") if "containerPort" in items[0] else ("port", "protocol")
        )
    else:
        keys = ASSOCIATIVE.get(name)
    if keys is None or not all(keys[0] in item for item in items):
        return None
    return keys


def fields(obj: Mapping[str, Any], prefix: FieldPath = ()) -> dict[FieldPath, Any]:
    """Every field a manager can own, by path: maps and the items of associative lists are
    walked; atomic lists and values are leaves."""
    found: dict[FieldPath, Any] = {}
    for key, value in obj.items():
        here = (*prefix, key)
        if not prefix and key in ("apiVersion", "kind", "status"):
            continue
        if prefix == ("metadata",) and key in IDENTITY:
            continue
        if isinstance(value, dict) and value:
            found.update(fields(value, here))
        elif isinstance(value, list) and (keys := _list_keys(key, value)):
            for item in value:
                keyed = Keyed(tuple((k, item.get(k)) for k in keys))
                found.update(fields(item, (*here, keyed)))
        else:
            found[here] = value
    return found


def _child(node: Any, key: str | Keyed) -> Any:
    if isinstance(key, Keyed):
        if not isinstance(node, list):
            return _MISSING
        return next((item for item in node if key.matches(item)), _MISSING)
    if not isinstance(node, dict) or key not in node:
        return _MISSING
    return node[key]


def value_at(obj: Any, path: FieldPath) -> Any:
    for key in path:
        obj = _child(obj, key)
        if obj is _MISSING:
            return obj
    return obj


def _set(obj: dict[str, Any], path: FieldPath, value: Any) -> None:
    node: Any = obj
    for key, after in itertools.pairwise(path):
        child = _child(node, key)
        wanted = list if isinstance(after, Keyed) else dict
        if not isinstance(child, wanted):
            child = wanted()
            if isinstance(key, Keyed):
                child = dict(key.keys)  # a new item of the list, by its keys
                node.append(child)
            else:
                node[key] = child
        node = child
    last = path[-1]
    if isinstance(last, Keyed):
        node[:] = [item for item in node if not last.matches(item)] + [copy.deepcopy(value)]
    else:
        node[last] = copy.deepcopy(value)


def _remove(obj: dict[str, Any], path: FieldPath) -> None:
    """Remove the field, and the maps, items and lists its removal leaves empty."""
    chain: list[tuple[Any, str | Keyed, Any]] = []
    node: Any = obj
    for key in path[:-1]:
        child = _child(node, key)
        if child is _MISSING:
            return
        chain.append((node, key, child))
        node = child
    last = path[-1]
    if isinstance(last, Keyed):
        node[:] = [item for item in node if not last.matches(item)]
    else:
        node.pop(last, None)
    for parent, key, child in reversed(chain):
        if child:
            return
        if isinstance(key, Keyed):  # an item left empty (its keys went last)
            parent[:] = [item for item in parent if item is not child]
        else:
            del parent[key]


def _order_like(found: Any, applied: Any) -> None:
    """The items of associative lists an apply gives, in its order, in the places they hold;
    the items of other managers stay where they are."""
    if not (isinstance(found, dict) and isinstance(applied, dict)):
        return
    for key, value in applied.items():
        here = found.get(key)
        if isinstance(value, dict):
            _order_like(here, value)
        elif (
            isinstance(value, list) and isinstance(here, list) and (keys := _list_keys(key, value))
        ):
            ranks = [Keyed(tuple((k, item.get(k)) for k in keys)) for item in value]

            def rank(item: Any, ranks: list[Keyed] = ranks) -> int:
                return next((i for i, keyed in enumerate(ranks) if keyed.matches(item)), len(ranks))

            slots = [i for i, item in enumerate(here) if rank(item) < len(ranks)]
            for i, item in zip(slots, sorted((here[i] for i in slots), key=rank), strict=True):
                here[i] = item
            for item in here:
                given = next(
                    (g for g, keyed in zip(value, ranks, strict=True) if keyed.matches(item)), None
                )
                _order_like(item, given)


def _is_key_field(path: FieldPath) -> bool:
    """A key of an associative list's item: removed after the item's other fields (deeper
    ones first), which are found by it."""
    return len(path) >= 2 and isinstance(path[-2], Keyed) and path[-1] in dict(path[-2].keys)


def merge_patch(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON merge patch (kmock's patch) that turns `old` into `new`."""
    patch: dict[str, Any] = {key: None for key in old if key not in new}
    for key, value in new.items():
        if isinstance(value, dict) and isinstance(old.get(key), dict):
            if sub := merge_patch(old[key], value):
                patch[key] = sub
        elif old.get(key, _MISSING) != value:
            patch[key] = value
    return patch


class ApplyConflict(Exception):
    pass


def apply(
    live: Mapping[str, Any],
    applied: Mapping[str, Any],
    managed: dict[str, set[FieldPath]],
    *,
    manager: str,
    force: bool,
) -> dict[str, Any]:
    """Server-side apply of `applied` by `manager` to `live` ({} when absent): the new
    object; `managed` (fields by manager) is updated to match."""
    wanted = fields(applied)
    others = {name: owned for name, owned in managed.items() if name != manager}
    differing = {path for path, value in wanted.items() if value_at(live, path) != value}
    if not force:
        conflicts = sorted(
            f"{'.'.join(map(str, path))} (owned by {name})"
            for name, owned in others.items()
            for path in differing & owned
        )
        if conflicts:
            raise ApplyConflict("; ".join(conflicts))
    found = copy.deepcopy(dict(live))
    for path in sorted(
        managed.get(manager, set()) - wanted.keys(), key=lambda p: (-len(p), _is_key_field(p))
    ):
        if not any(path in owned for owned in others.values()):
            # The keys of an item no other manager keeps: the item goes (its other fields
            # of this manager went before, being deeper or ordered first).
            _remove(found, path[:-1] if _is_key_field(path) else path)
    for path, value in wanted.items():
        _set(found, path, value)
    _order_like(found, applied)
    for key in ("apiVersion", "kind"):
        if key in applied:
            found[key] = applied[key]
    for key in ("name", "namespace"):
        if key in applied.get("metadata", {}):
            found.setdefault("metadata", {})[key] = applied["metadata"][key]
    for owned in others.values():
        owned -= {p for p in owned if any(p[: len(d)] == d for d in differing)}
    managed[manager] = set(wanted)
    return found


def record_update(
    old: Mapping[str, Any], new: Mapping[str, Any], managed: dict[str, set[FieldPath]], manager: str
) -> None:
    """Any other write: its manager owns the fields it changed; removed fields have no owner."""
    before, after = fields(old), fields(new)
    changed = {path for path, value in after.items() if before.get(path, _MISSING) != value}
    gone = before.keys() - after.keys()
    for owned in managed.values():
        owned -= changed | gone
    managed.setdefault(manager, set()).update(changed)
    for name in [name for name, owned in managed.items() if not owned]:
        del managed[name]
