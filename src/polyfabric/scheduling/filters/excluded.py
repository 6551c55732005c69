"""A node that declined or failed a task does not get it again."""

from __future__ import annotations

from polyfabric.scheduling.framework import PASS, CycleState, Scope, Status, Verdict
from polyfabric.scheduling.view import NodeView, TaskRequest

__all__ = ["ExcludedFilter"]


class ExcludedFilter:
    """The task's `excluded_nodes` (filled by declines and failures) are off limits for it.

    TASK-scoped: asked per task on its best candidates only, so tasks that differ just in their
    exclusions still share every other answer with their class.
    """

    name = "excluded"
    scope = Scope.TASK
    monotone = True  # the same answer all pass (the pipeline memoizes only tasks excluding nothing)

    def check(self, task: TaskRequest, node: NodeView, cycle: CycleState) -> Verdict:
        if node.id not in task.excluded_nodes:
            return PASS
        return Verdict(
            Status.NEVER,
            self.name,
            f"node {node.name} declined or failed task {task.task_id} before",
            "excluded for this task",
        )
