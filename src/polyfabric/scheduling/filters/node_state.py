"""Only Active nodes take new work; the reason names the state the node is in."""

from __future__ import annotations

from polyfabric.domain.node_states import SCHEDULABLE_STATES
from polyfabric.scheduling.framework import PASS, CycleState, Scope, Status, Verdict
from polyfabric.scheduling.view import NodeView, TaskRequest

__all__ = ["NodeStateFilter"]


class NodeStateFilter:
    """Cordoned, suspended, draining, down, ... nodes are never candidates (NEVER: preemption on
    them would not help)."""

    name = "node_state"
    scope = Scope.NODE

    def check(self, task: TaskRequest, node: NodeView, cycle: CycleState) -> Verdict:
        if node.state in SCHEDULABLE_STATES:
            return PASS
        return Verdict(
            Status.NEVER,
            self.name,
            f"node {node.name} is {node.state}; only active nodes take new tasks",
            f"not active ({node.state})",
        )
