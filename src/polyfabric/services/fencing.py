"""The fence every upload of a running attempt passes (checkpoints, artifacts).

A node may store something for a task only while it holds the task's current attempt: anything sent
under an attempt that was reassigned, cancelled or finished (a node cut off and declared Down that
comes back late) is refused with 409 and audited once per attempt, never stored.
"""

from __future__ import annotations

from typing import NoReturn

from polyfabric.domain.errors import Conflict
from polyfabric.services.context import ServiceContext
from polyfabric.services.ports import AuditEntry
from polyfabric.services.runtime import JobRuntime

__all__ = ["AttemptFence"]

_REMEMBER = 100_000  # (task, attempt) refusals already audited, before the memory starts over


class AttemptFence:
    def __init__(self, ctx: ServiceContext, runtime: JobRuntime, what: str) -> None:
        self._ctx = ctx
        self._runtime = runtime
        self._what = what  # "checkpoint", "artifact": names the message and the audit action
        self._refused: set[tuple[str, int]] = set()

    def check(self, node_id: str, task_id: str, attempt: int) -> None:
        """Conflict unless `attempt` is the task's current attempt on `node_id`."""
        if not self._runtime.is_current(task_id, attempt, node_id):
            self.refuse(node_id, task_id, attempt, "it is not the task's current attempt on this node")

    def refuse(self, node_id: str, task_id: str, attempt: int, why: str) -> NoReturn:
        message = (f"{self._what} refused: attempt {attempt} of task {task_id} is not current on node {node_id}"
                   f" ({why}; fenced: the task was reassigned, cancelled or finished)")
        if (task_id, attempt) not in self._refused:
            self._refused.add((task_id, attempt))
            if len(self._refused) > _REMEMBER:
                self._refused.clear()
            with self._ctx.store.unit_of_work() as uow:
                uow.audit.append([AuditEntry(actor=f"node:{node_id}", action=f"task.{self._what}_refused",
                                             subject=f"task:{task_id}", cause=message,
                                             details={"attempt": attempt})], self._ctx.clock.now())
                uow.commit()
        raise Conflict(message)
