"""The fabric's shape: region → zone → rack → nodes, from each node's labels (pure).

Every level carries how many nodes it holds, by state, and their capacity and what is free of it,
so `polyfabric topology` answers "where is there room, and what is down" at a glance. Nodes
without a label go under "-" at that level.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from polyfabric.domain.resources import Resources

__all__ = ["LEVELS", "TopologyNode", "build_tree"]

LEVELS = ("region", "zone", "rack")
UNLABELLED = "-"


@dataclass(frozen=True, slots=True)
class TopologyNode:
    """One node as the tree needs it."""

    id: str
    name: str
    state: str
    labels: Mapping[str, str]
    capacity: Resources
    free: Resources


def _resources(r: Resources) -> dict[str, int]:
    return {"cpu_millis": r.cpu_millis, "memory_bytes": r.memory_bytes, "gpus": r.gpus, "slots": r.slots}


def _level(name: str, members: list[TopologyNode], depth: int) -> dict[str, Any]:
    states: dict[str, int] = {}
    capacity = free = Resources()
    for n in members:
        states[n.state] = states.get(n.state, 0) + 1
        capacity = capacity + n.capacity
        if n.state == "active":
            free = free + Resources(max(0, n.free.cpu_millis), max(0, n.free.memory_bytes), 0,
                                    max(0, n.free.gpus), max(0, n.free.slots))
    out: dict[str, Any] = {"name": name, "nodes": len(members), "states": dict(sorted(states.items())),
                           "capacity": _resources(capacity), "free": _resources(free)}
    if depth < len(LEVELS):
        level = LEVELS[depth]
        groups: dict[str, list[TopologyNode]] = {}
        for n in members:
            groups.setdefault(n.labels.get(level) or UNLABELLED, []).append(n)
        out["level"] = level
        out["children"] = [_level(key, groups[key], depth + 1) for key in sorted(groups)]
    else:
        out["members"] = [{"id": n.id, "name": n.name, "state": n.state, "free": _resources(n.free)}
                          for n in sorted(members, key=lambda m: m.name)]
    return out


def build_tree(nodes: Iterable[TopologyNode]) -> dict[str, Any]:
    """The fabric as a tree; free capacity counts Active nodes only (the others take no work)."""
    return _level("fabric", list(nodes), 0)
