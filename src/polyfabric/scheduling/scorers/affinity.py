"""`affinity`: preferred node labels with weights (negative: rather not). Hard requirements are
`constraints` (the labels filter); this only ranks the nodes that pass.

score = 50 · (1 + Σ weight of the matching terms / Σ |weight|): 100 when every preferred label
matches and no unwanted one does, 50 when nothing is said either way, 0 at worst. It nominates a
few nodes that carry the heaviest preferred label, which the capacity walk may not reach.
"""

from __future__ import annotations

from typing import Any

from polyfabric.scheduling.framework import CycleState, Scope
from polyfabric.scheduling.view import NodeView, TaskRequest

__all__ = ["AffinityScorer"]


class AffinityScorer:
    name = "affinity"
    scope = Scope.TASK
    task_fields = ("affinity",)

    def __init__(self, nominate: int = 2) -> None:
        self.nominate_count = int(nominate)

    def score(self, task: TaskRequest, node: NodeView, cycle: CycleState) -> float:
        terms = task.affinity
        if not terms:
            return 0.0
        labels = node.labels
        total = 0.0
        matched = 0.0
        for key, value, weight in terms:
            total += abs(weight)
            if labels.get(key) == value:
                matched += weight
        if total == 0.0:
            return 50.0
        return 50.0 * (1.0 + matched / total)

    def nominate(self, task: TaskRequest, cycle: CycleState) -> list[str]:
        terms = [t for t in task.affinity if t[2] > 0]
        if not terms or self.nominate_count <= 0:
            return []
        key, value, _ = max(terms, key=lambda t: (t[2], t[0], t[1]))
        scratch: dict[Any, Any] = cycle.scratch.setdefault(self.name, {})
        entry = scratch.get((key, value))
        if entry is None:
            entry = scratch[(key, value)] = [[n.id for n in cycle.view.nodes if n.labels.get(key) == value], 0]
        nodes, turn = entry
        if not nodes:
            return []
        entry[1] = turn + 1
        return [nodes[(turn + i) % len(nodes)] for i in range(min(self.nominate_count, len(nodes)))]
