"""The concurrency gate: global, per-domain, per-workflow and semaphore limits, checked per task.

Counts are what runs (from the view) plus what this plan placed or reserved for preemption, so a
plan never takes a limit past its size. The per-node limit is a node question and lives in the
`max_tasks` filter. A blocked task is NOT_NOW: it waits for running tasks to finish.
"""

from __future__ import annotations

from polyfabric.scheduling.framework import PASS, CycleState, Status, Verdict
from polyfabric.scheduling.view import TaskRequest

__all__ = ["ConcurrencyGate"]


class ConcurrencyGate:
    """Refuses a task whose global, domain, workflow or semaphore limit is reached; the reason
    names the limit and its count ("semaphore gpu-lab full 2/2")."""

    name = "concurrency"

    def admit(self, task: TaskRequest, cycle: CycleState) -> Verdict:
        limits = cycle.limits
        cap = limits.global_max
        if cap is not None and cycle.total >= cap:
            return self._blocked(f"global limit {cycle.total}/{cap}", "global limit")
        if limits.per_domain:
            cap = limits.per_domain.get(task.domain)
            if cap is not None:
                used = cycle.by_domain.get(task.domain, 0)
                if used >= cap:
                    return self._blocked(f"domain {task.domain} cap {used}/{cap}", "domain cap")
        if limits.per_workflow:
            cap = limits.per_workflow.get(task.workflow_id)
            if cap is not None:
                used = cycle.by_workflow.get(task.workflow_id, 0)
                if used >= cap:
                    return self._blocked(f"workflow {task.workflow_id} cap {used}/{cap}", "workflow cap")
        if task.semaphore is not None:
            cap = limits.semaphores.get(task.semaphore)
            if cap is not None:
                used = cycle.by_semaphore.get(task.semaphore, 0)
                if used >= cap:
                    return self._blocked(f"semaphore {task.semaphore} full {used}/{cap}", "semaphore full")
        return PASS

    def _blocked(self, reason: str, summary: str) -> Verdict:
        return Verdict(Status.NOT_NOW, self.name, reason, summary)
