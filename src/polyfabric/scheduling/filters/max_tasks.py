"""A node runs at most `max_tasks` tasks at once (else the per-node default limit)."""

from __future__ import annotations

from polyfabric.scheduling.framework import PASS, CycleState, Scope, Status, Verdict
from polyfabric.scheduling.view import NodeView, TaskRequest

__all__ = ["MaxTasksFilter"]


class MaxTasksFilter:
    """Counts running tasks plus this plan's placements; a full node is NOT_NOW (tasks finish,
    or preemption frees a place), a node capped at zero is NEVER."""

    name = "max_tasks"
    scope = Scope.CYCLE
    task_fields = ()

    def check(self, task: TaskRequest, node: NodeView, cycle: CycleState) -> Verdict:
        cap = node.max_tasks if node.max_tasks is not None else cycle.limits.per_node
        if cap is None:
            return PASS
        count = cycle.task_count(node.id)
        if count < cap:
            return PASS
        if cap == 0:
            return Verdict(Status.NEVER, self.name, f"node {node.name} takes no tasks (max 0)",
                           "takes no tasks")
        return Verdict(
            Status.NOT_NOW,
            self.name,
            summary="task cap reached",
            detail=lambda: f"node {node.name} runs {count} of at most {cap} tasks",
        )
