"""`spread: zone`: spread the instances of a fan-out across the values of a label (zones by
default), so losing one zone loses the fewest of them.

A TASK scorer: it counts the group's instances per label value, running ones from the view and
the ones this pass placed (resolved through `CycleState.node_of`), and gives 100 to the values
with the fewest, less for each instance more. It nominates nodes of the least-used values, which
the capacity walk might never reach.
"""

from __future__ import annotations

from typing import Any

from polyfabric.scheduling.framework import CycleState, Scope
from polyfabric.scheduling.view import NodeView, TaskRequest

__all__ = ["ZoneSpreadScorer"]


class _Group:
    __slots__ = ("counts", "last", "turn")

    def __init__(self, counts: dict[str, int]) -> None:
        self.counts = counts
        self.last: str | None = None  # the sibling scored before: resolved when the next one comes
        self.turn = 0


class ZoneSpreadScorer:
    name = "zone_spread"
    scope = Scope.TASK
    task_fields = ("spread", "group")

    def __init__(self, nominate: int = 2) -> None:
        self.nominate_count = int(nominate)

    def score(self, task: TaskRequest, node: NodeView, cycle: CycleState) -> float:
        key = task.spread
        if key is None:
            return 0.0
        value = node.labels.get(key)
        if value is None:
            return 0.0
        counts = self._group(task, key, cycle).counts
        fewest = min(counts.values()) if counts else 0
        return 100.0 / (1.0 + counts.get(value, 0) - fewest)

    def nominate(self, task: TaskRequest, cycle: CycleState) -> list[str]:
        key = task.spread
        if key is None or self.nominate_count <= 0:
            return []
        group = self._group(task, key, cycle)
        by_value = self._by_value(key, cycle)
        counts = group.counts
        if not counts:
            return []
        fewest = min(counts.values())
        out: list[str] = []
        group.turn += 1
        for value in sorted(v for v, c in counts.items() if c == fewest):
            nodes = by_value[value]
            for i in range(min(self.nominate_count, len(nodes))):
                out.append(nodes[(group.turn + i) % len(nodes)])
        return out

    # -- per-pass state ------------------------------------------------------------------------

    def _by_value(self, key: str, cycle: CycleState) -> dict[str, list[str]]:
        """label value -> node ids carrying it, once per pass."""
        scratch: dict[Any, Any] = cycle.scratch.setdefault(self.name, {})
        by_value = scratch.get(("values", key))
        if by_value is None:
            by_value = {}
            for node in cycle.view.nodes:
                value = node.labels.get(key)
                if value is not None:
                    by_value.setdefault(value, []).append(node.id)
            scratch[("values", key)] = by_value
        return by_value  # type: ignore[no-any-return]

    def _running(self, key: str, cycle: CycleState) -> dict[str, dict[str, int]]:
        """group -> label value -> running instances, from one scan of the view per pass."""
        scratch: dict[Any, Any] = cycle.scratch.setdefault(self.name, {})
        running = scratch.get(("running", key))
        if running is None:
            running = {}
            for node in cycle.view.nodes:
                value = node.labels.get(key)
                if value is None:
                    continue
                for task in node.running:
                    if task.group is not None:
                        per = running.setdefault(task.group, {})
                        per[value] = per.get(value, 0) + 1
            scratch[("running", key)] = running
        return running  # type: ignore[no-any-return]

    def _group(self, task: TaskRequest, key: str, cycle: CycleState) -> _Group:
        scratch: dict[Any, Any] = cycle.scratch.setdefault(self.name, {})
        name = task.group or task.task_id
        group: _Group | None = scratch.get(("group", key, name))
        if group is None:
            counts = dict.fromkeys(self._by_value(key, cycle), 0)
            for value, n in self._running(key, cycle).get(name, {}).items():
                counts[value] = counts.get(value, 0) + n
            group = scratch[("group", key, name)] = _Group(counts)
        if group.last != task.task_id:
            if group.last is not None:
                where = cycle.node_of(group.last)
                placed = cycle.view.node(where).labels.get(key) if where is not None else None
                if placed is not None:
                    group.counts[placed] = group.counts.get(placed, 0) + 1
            group.last = task.task_id
        return group
