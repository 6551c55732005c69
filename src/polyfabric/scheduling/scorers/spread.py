"""Prefer emptier nodes: the mirror of binpack, for latency-sensitive work that should not share.

Not in the default profile: spreading keeps every node partly busy, which defeats suspending idle
nodes and leaves no room for big tasks.
"""

from __future__ import annotations

from polyfabric.scheduling.framework import CycleState, Scope
from polyfabric.scheduling.scorers.binpack import fullness
from polyfabric.scheduling.view import NodeView, TaskRequest

__all__ = ["SpreadScorer"]


class SpreadScorer:
    name = "spread"
    scope = Scope.CYCLE
    task_fields = ("resources",)

    def score(self, task: TaskRequest, node: NodeView, cycle: CycleState) -> float:
        return 100.0 - fullness(task.resources, cycle.free(node.id), node.capacity)
