"""What a pass decides, and the one check the applier makes before committing it.

A `Plan` is a proposal made on a snapshot (`view_version`). One serialized applier (Nomad's plan
applier) commits plans: for every node it calls `verify_node` with the node's fresh state, commits
what still fits and hands the rest back to the next pass. Schedulers may therefore plan in
parallel on stale views without ever overcommitting a node.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from polyfabric.domain.errors import ValidationError
from polyfabric.domain.node_states import SCHEDULABLE_STATES
from polyfabric.domain.resources import Resources
from polyfabric.scheduling.filters.capacity import describe_shortfall
from polyfabric.scheduling.framework import Status
from polyfabric.scheduling.view import NodeView

__all__ = ["Placement", "Plan", "Preemption", "Rejection", "Unplaced", "describe_reasons", "verify_node"]


@dataclass(frozen=True, slots=True)
class Placement:
    """Run `task_id` on `node_id`, holding `resources` there."""

    task_id: str
    node_id: str
    resources: Resources


@dataclass(frozen=True, slots=True)
class Preemption:
    """Stop `victim_task_id` on `node_id` so that `for_task_id` fits there in a later pass."""

    victim_task_id: str
    node_id: str
    for_task_id: str
    reason: str


def describe_reasons(summary: Mapping[str, int]) -> str:
    """'997 nodes: cpu exhausted; 3 nodes: not active (cordoned)' (most nodes first)."""
    parts = sorted(summary.items(), key=lambda item: (-item[1], item[0]))
    return "; ".join(f"{n} node{'s' if n != 1 else ''}: {reason}" for reason, n in parts)


@dataclass(frozen=True, slots=True)
class Unplaced:
    """A task this plan could not place, and why (Nomad's AllocMetric).

    `reason_summary` counts nodes by the first reason each refused the task. `blocked_by` names
    what held the task back before any node was asked (a limit), or the preemption it waits for.
    `status` is NOT_NOW when the task may fit later (busy nodes, full limits, waiting for victims)
    and NEVER when no node of this view could ever take it. `waiting_for` lists the tasks this
    plan preempts for it: the applier stops them and a later pass places the task.
    """

    task_id: str
    reason_summary: Mapping[str, int]
    blocked_by: str | None = None
    status: Status = Status.NOT_NOW
    waiting_for: tuple[str, ...] = ()

    def describe(self) -> str:
        parts = [p for p in (self.blocked_by, describe_reasons(self.reason_summary)) if p]
        return "; ".join(parts) or "no reason recorded"


@dataclass(frozen=True, slots=True)
class Plan:
    """Placements, preemptions and unplaced tasks of one pass, made on view `view_version`.
    `stats` counts the work the pass did (classes, plugin calls, ...), for tuning and tests."""

    placements: tuple[Placement, ...]
    preemptions: tuple[Preemption, ...]
    unplaced: tuple[Unplaced, ...]
    view_version: int
    stats: Mapping[str, int] = field(default_factory=dict)

    def by_node(self) -> dict[str, list[Placement]]:
        """Placements grouped per node, in plan order: what the applier verifies node by node."""
        out: dict[str, list[Placement]] = {}
        for placement in self.placements:
            out.setdefault(placement.node_id, []).append(placement)
        return out


@dataclass(frozen=True, slots=True)
class Rejection:
    """A placement the applier refused, and why."""

    placement: Placement
    reason: str


def verify_node(
    placements: Sequence[Placement],
    node: NodeView,
    *,
    per_node_default: int | None = None,
) -> tuple[tuple[Placement, ...], tuple[Rejection, ...]]:
    """Re-check one node's placements against its fresh state, in plan order.

    Accepts each placement that still fits (the node is active, its task cap has room, free
    resources cover it) and counts it before the next; rejects the rest with a reason. A later,
    smaller placement may still be accepted after a bigger one was rejected.
    """
    accepted: list[Placement] = []
    rejected: list[Rejection] = []
    for placement in placements:
        if placement.node_id != node.id:
            raise ValidationError(f"placement of task {placement.task_id} is for node "
                                  f"{placement.node_id}, not {node.id}")
    if node.state not in SCHEDULABLE_STATES:
        reason = f"node {node.name} is {node.state}; only active nodes take new tasks"
        return (), tuple(Rejection(p, reason) for p in placements)
    free = node.capacity - node.allocated
    count = len(node.running)
    cap = node.max_tasks if node.max_tasks is not None else per_node_default
    present = {task.task_id for task in node.running}
    for placement in placements:
        request = placement.resources
        if placement.task_id in present:
            rejected.append(Rejection(placement, f"task {placement.task_id} already runs on {node.name}"))
            continue
        if cap is not None and count >= cap:
            rejected.append(Rejection(placement, f"node {node.name} runs {count} of at most {cap} tasks"))
            continue
        short = free.shortfall(request)
        if short:
            reason = "; ".join(describe_shortfall(dim, request, free, node.capacity) for dim in short)
            rejected.append(Rejection(placement, reason))
            continue
        accepted.append(placement)
        present.add(placement.task_id)
        free = free - request
        count += 1
    return tuple(accepted), tuple(rejected)
