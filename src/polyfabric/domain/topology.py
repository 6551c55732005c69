"""The fabric's shape: region → zone → rack → nodes, from each node's labels (pure).

Every level carries how many nodes it holds, by state, and their capacity and what is free of it,
so `polyfabric topology` answers "where is there room, and what is down" at a glance. Nodes
without a label go under "-" at that level.
"""

from __future__ import annotations

import random
import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from polyfabric.domain.errors import ValidationError
from polyfabric.domain.resources import Resources
from polyfabric.domain.vivaldi import Coordinate

__all__ = ["LATENCY_GROUPS", "LATENCY_SAMPLE", "LEVELS", "TopologyNode", "build_tree", "latency_matrix"]

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


# -- latency between regions, zones and racks (the UI's topology page) --------------------------------

LATENCY_GROUPS = 30  # groups in the matrix at most (the ones with most nodes)
LATENCY_SAMPLE = 8  # nodes of each group whose coordinates are compared, by default

def _group(labels: Mapping[str, str], level: str) -> tuple[str, ...]:
    depth = LEVELS.index(level) + 1
    return tuple(labels.get(name) or UNLABELLED for name in LEVELS[:depth])

def latency_matrix(rows: Iterable[Mapping[str, Any]], level: str, sample: int = LATENCY_SAMPLE,
                   most: int = LATENCY_GROUPS, rng: random.Random | None = None) -> dict[str, Any]:
    """Median estimated round trip between the nodes of each pair of groups at `level` (a group
    with itself: between its own nodes), from at most `sample` nodes a group and `most` groups:
    at most most² · sample² / 2 distances, whatever the fabric's size. `rows` as
    GET /v1/topology/coordinates gives them (labels, coords)."""
    if level not in LEVELS:
        raise ValidationError(f"level must be one of {', '.join(LEVELS)}, got {level!r}")
    rng = rng or random.Random(0)  # the same sample each time for the same fabric
    groups: dict[tuple[str, ...], list[Coordinate]] = {}
    for row in rows:
        try:
            coord = Coordinate.from_dict(row["coords"])
        except (ValidationError, KeyError, TypeError):
            continue
        groups.setdefault(_group(row.get("labels") or {}, level), []).append(coord)
    kept = sorted(sorted(groups, key=lambda k: -len(groups[k]))[:most])
    sampled = {k: (rng.sample(groups[k], sample) if len(groups[k]) > sample else groups[k]) for k in kept}
    matrix: list[list[dict[str, Any] | None]] = []
    for i, a in enumerate(kept):
        line: list[dict[str, Any] | None] = []
        for j, b in enumerate(kept):
            if j < i:
                line.append(matrix[j][i])
                continue
            xs, ys = sampled[a], sampled[b]
            if i == j:
                rtts = [x.distance(y) for n, x in enumerate(xs) for y in xs[n + 1:] if x.compatible(y)]
            else:
                rtts = [x.distance(y) for x in xs for y in ys if x.compatible(y)]
            line.append({"median_ms": round(statistics.median(rtts) * 1000.0, 3),
                         "min_ms": round(min(rtts) * 1000.0, 3), "max_ms": round(max(rtts) * 1000.0, 3),
                         "pairs": len(rtts)} if rtts else None)
        matrix.append(line)
    return {"level": level, "sample": sample,
            "groups": [{"name": "/".join(k), "nodes": len(groups[k]), "sampled": len(sampled[k])} for k in kept],
            "groups_left_out": len(groups) - len(kept), "matrix": matrix}
