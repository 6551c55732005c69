"""Draining a node: it takes no new work, waits for what runs on it, then retires by itself.

Pure: the lifecycle controller (`controllers/node_lifecycle.py`) asks `drain_step` on every pass
for each Draining node and applies the answer:

* `RETIRE` — no attempt is left on the node: Draining -> Retired (trigger `system`, audited).
* `MOVE` — the drain's deadline (`polyfabric node drain ID --deadline 5m`) has passed and
  attempts are still there: they are stopped and queued again for other nodes, as attempts the
  node lost (counted in the task's `lost`, never in its `failures`, using up no retry). Today an
  attempt moved this way starts over; `MoveMode.STOP_AFTER_CHECKPOINT` is the hook for the
  checkpoint work (ask the task to checkpoint, then stop it, then resume elsewhere from it).
* `WAIT` — attempts are still running and there is no deadline, or it has not passed.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["DrainStep", "MoveMode", "drain_step", "move_reason"]


class DrainStep(StrEnum):
    WAIT = "wait"
    MOVE = "move"
    RETIRE = "retire"


class MoveMode(StrEnum):
    """How attempts leave a node whose drain deadline passed."""

    REQUEUE = "requeue"  # stop now; the next attempt starts from the beginning (what exists today)
    STOP_AFTER_CHECKPOINT = "stop after checkpoint"  # ask for a checkpoint, stop, resume elsewhere from it


def drain_step(*, attempts: int, deadline: float | None, now: float) -> DrainStep:
    if attempts <= 0:
        return DrainStep.RETIRE
    if deadline is not None and now >= deadline:
        return DrainStep.MOVE
    return DrainStep.WAIT


def move_reason(node_id: str, deadline: float, mode: MoveMode = MoveMode.REQUEUE) -> str:
    how = ("stopped and queued again for another node" if mode is MoveMode.REQUEUE else
           f"{mode.value}: asked to checkpoint, then stopped and queued again for another node, resuming "
           "from its checkpoint")
    return f"drain deadline of node {node_id} passed ({deadline:.0f}): {how}"
