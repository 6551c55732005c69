"""`locality: near(tasks.NAME)`: prefer nodes close to where an upstream task ran, so the data it
passes on travels least. Close means the smallest round trip the nodes' measured network
coordinates (Vivaldi) estimate; where a node has no coordinates yet, the shared topology labels
stand in (same rack, then zone, then region).

A TASK scorer: the answer depends on the task's own `near` set. It also nominates the upstream
nodes and the few nodes nearest to them, which the capacity walk would otherwise rarely meet.
"""

from __future__ import annotations

from polyfabric.scheduling.framework import CycleState, Scope
from polyfabric.scheduling.view import NodeView, TaskRequest

__all__ = ["LocalityScorer", "label_closeness"]

_LEVELS = (("rack", 75.0), ("zone", 50.0), ("region", 25.0))


def label_closeness(a: NodeView, b: NodeView) -> float:
    """100 for the same node; 75 / 50 / 25 sharing rack (within the zone) / zone / region; else 0."""
    if a.id == b.id:
        return 100.0
    la, lb = a.labels, b.labels
    for level, score in _LEVELS:
        value = la.get(level)
        if value is not None and value == lb.get(level):
            if level == "rack" and la.get("zone") != lb.get("zone"):
                continue  # racks are named within a zone
            return score
    return 0.0


class LocalityScorer:
    """100 on an upstream node, then 100 / (1 + rtt / scale): a node `scale` seconds away (5 ms
    by default) scores 50, ten times that about 9."""

    name = "locality"
    scope = Scope.TASK
    task_fields = ("near",)

    def __init__(self, scale_s: float = 0.005, nominate: int = 4, pool: int = 128) -> None:
        if not scale_s > 0:
            raise ValueError("locality scale_s must be positive")
        self.scale_s = float(scale_s)
        self.nominate_count = int(nominate)
        self.pool_size = int(pool)

    def score(self, task: TaskRequest, node: NodeView, cycle: CycleState) -> float:
        near = task.near
        if not near:
            return 0.0
        if node.id in near:
            return 100.0
        view = cycle.view
        best = 0.0
        coords = node.coords
        for nid in near:
            if nid not in view:
                continue
            other = view.node(nid)
            if coords is not None and other.coords is not None and coords.compatible(other.coords):
                value = 100.0 / (1.0 + coords.distance(other.coords) / self.scale_s)
            else:
                value = label_closeness(node, other) * 0.9  # an estimate by labels never beats a measurement of 0
            if value > best:
                best = value
        return best

    def nominate(self, task: TaskRequest, cycle: CycleState) -> list[str]:
        """The upstream nodes and the nodes nearest to them (computed once per pass per set)."""
        near = task.near
        if not near:
            return []
        cache = cycle.scratch.setdefault(self.name, {})
        found = cache.get(near)
        if found is None:
            found = cache[near] = self._nearest(near, cycle)
        return found

    def _nearest(self, near: frozenset[str], cycle: CycleState) -> list[str]:
        """The upstream nodes, then the few nearest to them among the nodes that share an
        upstream node's zone (else region, else any): at most `pool` (128) per upstream node are
        measured (an even sample of 8x that without labels), so a pass stays fast on 10,000 nodes;
        nomination is a hint, the score decides."""
        view = cycle.view
        anchors = [view.node(nid) for nid in sorted(near) if nid in view]
        out = [a.id for a in anchors]
        coords = [a.coords for a in anchors if a.coords is not None]
        if self.nominate_count <= 0 or not coords:
            return out
        ranked: list[tuple[float, str]] = []
        dims = len(coords[0].vec)
        coords = [a for a in coords if len(a.vec) == dims]
        for node in self._pool(anchors, cycle):
            c = node.coords
            if c is None or node.id in near or len(c.vec) != dims:
                continue
            best = c.distance(coords[0])
            for a in coords[1:]:
                d = c.distance(a)
                if d < best:
                    best = d
            ranked.append((best, node.id))
        ranked.sort()
        out.extend(nid for _, nid in ranked[: self.nominate_count])
        return out

    def _pool(self, anchors: list[NodeView], cycle: CycleState) -> list[NodeView]:
        scratch = cycle.scratch.setdefault(self.name, {})
        index = scratch.get("index")
        if index is None:
            index = {}
            for node in cycle.view.nodes:
                for level in ("zone", "region"):
                    value = node.labels.get(level)
                    if value is not None:
                        index.setdefault((level, value), []).append(node)
            scratch["index"] = index
        for level in ("zone", "region"):
            pool: list[NodeView] = []
            for anchor in anchors:
                value = anchor.labels.get(level)
                if value is not None:
                    pool.extend(index.get((level, value), ())[: self.pool_size])
            if len(pool) > len(anchors):
                return pool
        nodes = cycle.view.nodes  # no labels to go by: every node, or an even sample of large views
        step = max(1, len(nodes) // (8 * self.pool_size))
        return list(nodes[::step])
