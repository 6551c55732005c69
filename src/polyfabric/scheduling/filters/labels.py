"""A task's constraints are labels the node must carry, with exactly those values."""

from __future__ import annotations

from polyfabric.scheduling.framework import PASS, CycleState, Scope, Status, Verdict
from polyfabric.scheduling.view import NodeView, TaskRequest

__all__ = ["LabelsFilter"]


class LabelsFilter:
    """Every required label must match; the reason names the first one that does not."""

    name = "labels"
    scope = Scope.CLASS
    task_fields = ("constraints",)

    def check(self, task: TaskRequest, node: NodeView, cycle: CycleState) -> Verdict:
        constraints = task.constraints
        if not constraints:
            return PASS
        labels = node.labels
        for key in sorted(constraints):
            wanted = constraints[key]
            have = labels.get(key)
            if have == wanted:
                continue
            if have is None:
                reason = f"node {node.name} has no label {key} (task needs {key}={wanted})"
            else:
                reason = f"node {node.name} has {key}={have}, task needs {key}={wanted}"
            return Verdict(Status.NEVER, self.name, reason, f"missing label {key}={wanted}")
        return PASS
