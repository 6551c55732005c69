"""The lifecycle of one task instance ("split", "work[3]"): one state machine, one door.

             deps met               placed, lease granted        agent started it
    WAITING ──────────▶ READY ──────────────────────▶ LEASED ──────────────────▶ RUNNING
       │  ▲               ▲ ▲                            │                         │
       │  │               │ └──── PREEMPTED ◀────────────┴─────────────────────────┤
       │  │               │       (not a failure)                                  │
       │  │               └──────── failed attempt, retries left (not_before) ─────┤
       │  │                                                                        ▼
       │  └──────────── operator: retry failed ◀──────── SUCCEEDED / FAILED / CANCELLED
       └──▶ SKIPPED (trigger rule or `when` said no)        (and SKIPPED: terminal)

A failed attempt that has retries left goes straight back to READY with a `not_before` time (the
backoff) instead of passing through a separate "retrying" state: the queue already knows how to
hold work until a time, and FAILED then always means "failed for good". Terminal states are left
only by the operator's "retry failed" (back to WAITING or READY); a new attempt number is
assigned whenever an instance is queued again, so late reports from an old attempt are ignored.

Every change goes through `transition()`, which refuses edges not in `TRANSITIONS`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from polyfabric.domain.errors import InvalidTransition

__all__ = [
    "ACTIVE",
    "IN_FLIGHT",
    "TERMINAL",
    "TRANSITIONS",
    "TaskState",
    "TaskTransition",
    "transition",
]


class TaskState(StrEnum):
    WAITING = "waiting"  # its dependencies are not done yet (or it is held by a concurrency cap)
    READY = "ready"  # queued for scheduling (possibly not before a retry's backoff time)
    LEASED = "leased"  # placed on a node, lease granted, not started yet
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # failed for good: retries used up, or an error retrying cannot fix
    SKIPPED = "skipped"  # its trigger rule or `when` decided it does not run
    CANCELLED = "cancelled"
    PREEMPTED = "preempted"  # taken off its node for more important work; goes back to READY


S = TaskState

TERMINAL = frozenset({S.SUCCEEDED, S.FAILED, S.SKIPPED, S.CANCELLED})
"""States an instance stays in unless an operator retries the workflow."""

IN_FLIGHT = frozenset({S.READY, S.LEASED, S.RUNNING, S.PREEMPTED})
"""Handed to the scheduler and not back yet: these count against concurrency caps."""

ACTIVE = frozenset({S.LEASED, S.RUNNING})
"""Holding resources on a node."""

# from -> the states it may go to.
TRANSITIONS: dict[TaskState, frozenset[TaskState]] = {
    S.WAITING: frozenset({S.READY, S.SKIPPED, S.CANCELLED, S.FAILED}),
    S.READY: frozenset({S.LEASED, S.CANCELLED, S.FAILED, S.WAITING}),
    S.LEASED: frozenset({S.RUNNING, S.PREEMPTED, S.READY, S.SUCCEEDED, S.FAILED, S.CANCELLED}),
    S.RUNNING: frozenset({S.SUCCEEDED, S.FAILED, S.CANCELLED, S.PREEMPTED, S.READY}),
    S.PREEMPTED: frozenset({S.READY, S.CANCELLED}),
    S.SUCCEEDED: frozenset(),
    S.FAILED: frozenset({S.WAITING, S.READY}),
    S.SKIPPED: frozenset({S.WAITING, S.READY}),
    S.CANCELLED: frozenset({S.WAITING, S.READY}),
}
"""READY -> WAITING: a queued instance withdrawn (paused). LEASED -> READY: the lease lapsed
before the task started, or a failed attempt retries. LEASED -> SUCCEEDED/FAILED: a report
that overtook the "started" one."""


@dataclass(frozen=True, slots=True)
class TaskTransition:
    """A recorded lifecycle change of one task instance."""

    task_id: str
    from_state: TaskState
    to_state: TaskState
    cause: str
    at: float


def transition(task_id: str, current: TaskState, target: TaskState, cause: str, now: float) -> TaskTransition:
    """Validate one lifecycle move and return its event; raise InvalidTransition otherwise."""
    if current == target:
        raise InvalidTransition(f"task {task_id} is already {current}")
    allowed = TRANSITIONS[current]
    if target not in allowed:
        raise InvalidTransition(
            f"task {task_id} cannot go from {current} to {target}"
            + (
                f"; from {current} it can go to: {', '.join(sorted(s.value for s in allowed))}"
                if allowed
                else f"; {current} is final"
            )
        )
    return TaskTransition(task_id, current, target, cause, now)
