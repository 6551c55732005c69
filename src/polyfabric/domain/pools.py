"""Elastic node pools: what a pool is, and the autoscaler's decision for one pool in one pass.

Pure: `plan_scaling` reads a pool, its members as they are now, the demand that waits for
capacity and the domain's quota, and answers how many nodes to add and which members to drain,
with the reason and the demand signal that the audit chain records. The controller
(`controllers/autoscaler.py`) gathers the inputs and carries the answer out through a provider.

The rules, in the order they apply:

* never more than `max_nodes` members alive (starting, active or draining), never fewer than
  `min_nodes` (below min: start nodes even without demand); a pool resized below its size drains
  its idle nodes at once and its busy ones as they become idle;
* scale up when tasks that would fit one of the pool's nodes have waited longer than
  `scale_up_after_s`: one node per `slots` such tasks, minus the nodes already starting (they
  will take them), capped by `max_nodes` and by what is left of the domain's node quota;
* scale down only members that are Active, hold no attempt, and have been idle for `idle_s`,
  never below `min_nodes`, never while demand waits, one pass at a time; a member is drained
  (no new work; it retires by itself once empty, so a task that arrives meanwhile still finishes)
  and its process stopped once Retired;
* a member that does not come up within `start_timeout_s` is given up (stopped, counted failed),
  so a broken provider cannot hold the pool at its maximum forever.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from polyfabric.domain.errors import ValidationError
from polyfabric.domain.resources import Resources

__all__ = [
    "MemberState",
    "PoolMember",
    "PoolSpec",
    "ScalingDecision",
    "WaitingTask",
    "fits_pool",
    "plan_scaling",
    "validate_pool",
]

PROVIDERS = ("local", "ssh")
_NAME_RE = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")


class MemberState(StrEnum):
    STARTING = "starting"  # the provider started an agent; its node has not become Active yet
    ACTIVE = "active"  # its node is Active (or Cordoned/Suspended: alive, counted)
    DRAINING = "draining"  # asked to leave: takes no new work, retires once empty
    STOPPED = "stopped"  # retired and its process stopped (kept for history)
    FAILED = "failed"  # never came up, or its node was lost; process stopped

    @property
    def alive(self) -> bool:
        return self in (MemberState.STARTING, MemberState.ACTIVE, MemberState.DRAINING)


@dataclass(frozen=True, slots=True)
class PoolSpec:
    name: str
    domain: str
    provider: str
    min_nodes: int
    max_nodes: int
    labels: Mapping[str, str] = field(default_factory=dict)
    idle_s: float = 300.0
    scale_up_after_s: float = 5.0
    start_timeout_s: float = 120.0
    slots: int = 4
    capacity: Resources = field(default_factory=lambda: Resources(cpu_millis=4000, memory_bytes=8 * 2**30, slots=4))
    paused: bool = False


@dataclass(frozen=True, slots=True)
class PoolMember:
    id: str
    state: MemberState
    started_at: float
    node_id: str | None = None
    node_active: bool = False  # its node is Active now
    attempts: int = 0  # attempts its node holds (leased or running)
    idle_since: float | None = None  # when its node last held no attempt (None: busy or not up)


@dataclass(frozen=True, slots=True)
class WaitingTask:
    """A ready task the scheduler could not place, and for how long it has waited."""

    task_id: str
    domain: str
    resources: Resources
    constraints: Mapping[str, str]
    waited_s: float


@dataclass(frozen=True, slots=True)
class ScalingDecision:
    add: int = 0
    drain: tuple[str, ...] = ()  # member ids
    give_up: tuple[str, ...] = ()  # member ids that never came up
    target: int = 0  # the alive size this decision aims at
    reason: str = "steady"
    signal: Mapping[str, object] = field(default_factory=dict)

    @property
    def changes(self) -> bool:
        return bool(self.add or self.drain or self.give_up)


def validate_pool(spec: PoolSpec) -> None:
    """ValidationError naming the field, for a pool that could not work."""
    if not _NAME_RE.fullmatch(spec.name):
        raise ValidationError(f"pool name {spec.name!r} must be 1-63 lowercase letters, digits or '-'")
    if spec.provider not in PROVIDERS:
        raise ValidationError(f"--provider must be one of {', '.join(PROVIDERS)}, got {spec.provider!r}")
    if spec.min_nodes < 0:
        raise ValidationError(f"--min must be >= 0, got {spec.min_nodes}")
    if spec.max_nodes < spec.min_nodes:
        raise ValidationError(f"--max must be >= --min, got min {spec.min_nodes}, max {spec.max_nodes}")
    for name, value in (("--idle", spec.idle_s), ("--scale-up-after", spec.scale_up_after_s),
                        ("--start-timeout", spec.start_timeout_s)):
        if not math.isfinite(value) or value < 0:
            raise ValidationError(f"{name} must be a duration >= 0")
    if spec.slots < 1:
        raise ValidationError(f"--slots must be >= 1, got {spec.slots}")


def fits_pool(task: WaitingTask, spec: PoolSpec) -> bool:
    """Would this task fit one of the pool's (empty) nodes: resources and required labels."""
    cap, need = spec.capacity, task.resources
    if need.cpu_millis > cap.cpu_millis or need.memory_bytes > cap.memory_bytes or need.gpus > cap.gpus:
        return False
    if need.slots > spec.slots:
        return False
    return all(spec.labels.get(key) == value for key, value in task.constraints.items())


def plan_scaling(spec: PoolSpec, members: Sequence[PoolMember], waiting: Sequence[WaitingTask], *,
                 now: float, quota_left: int | None) -> ScalingDecision:
    """The autoscaler's decision for one pool now. `quota_left`: how many more nodes the pool's
    domain may have (None: no quota)."""
    give_up = tuple(m.id for m in members
                    if m.state is MemberState.STARTING and now - m.started_at > spec.start_timeout_s)
    alive = [m for m in members if m.state.alive and m.id not in give_up]
    size = len(alive)
    starting = sum(1 for m in alive if m.state is MemberState.STARTING)
    draining = sum(1 for m in alive if m.state is MemberState.DRAINING)
    demand = [t for t in waiting if t.waited_s >= spec.scale_up_after_s and fits_pool(t, spec)]
    signal: dict[str, object] = {
        "waiting_tasks": len(demand), "oldest_wait_s": round(max((t.waited_s for t in demand), default=0.0), 3),
        "alive": size, "starting": starting, "draining": draining, "min": spec.min_nodes, "max": spec.max_nodes,
        "quota_left": quota_left,
    }
    room = spec.max_nodes - size
    if quota_left is not None:
        room = min(room, quota_left)
    room = max(room, 0)

    if spec.paused:
        return ScalingDecision(give_up=give_up, target=size, reason="paused", signal=signal)

    if size - draining < spec.min_nodes:  # draining members are on their way out
        add = min(spec.min_nodes - (size - draining), room)
        why = f"below the minimum of {spec.min_nodes}"
        if add < spec.min_nodes - (size - draining):
            why += f" (held back by the domain's node quota: {quota_left} left)"
        return ScalingDecision(add=add, give_up=give_up, target=size + add, reason=why, signal=signal)

    if demand:
        wanted = math.ceil(len(demand) / spec.slots) - starting
        add = max(min(wanted, room), 0)
        if add:
            reason = (f"{len(demand)} task(s) fitting this pool waited over {spec.scale_up_after_s:g}s "
                      f"(oldest {signal['oldest_wait_s']}s): +{add} node(s)")
        elif wanted > 0:
            limit = "the domain's node quota" if quota_left is not None and quota_left <= spec.max_nodes - size \
                else f"the pool's maximum of {spec.max_nodes}"
            reason = f"{len(demand)} task(s) wait but the pool is at {limit}"
        else:
            reason = f"{len(demand)} task(s) wait; {starting} node(s) already starting"
        return ScalingDecision(add=add, give_up=give_up, target=size + add, reason=reason, signal=signal)

    excess = size - draining - spec.max_nodes  # the pool was resized down: idle nodes go first, at once
    if excess > 0:
        spare = sorted((m for m in alive if m.state is MemberState.ACTIVE and m.node_active and m.attempts == 0),
                       key=lambda m: (m.idle_since or now, m.id))
        drain = tuple(m.id for m in spare[:excess])
        reason = f"{size - draining} node(s) above the maximum of {spec.max_nodes}: drain {len(drain)} idle node(s)"
        if not drain:
            reason = f"{size - draining} node(s) above the maximum of {spec.max_nodes}; waiting for busy nodes"
        return ScalingDecision(drain=drain, give_up=give_up, target=size - len(drain), reason=reason, signal=signal)

    idle = sorted((m for m in alive if m.state is MemberState.ACTIVE and m.node_active and m.attempts == 0
                   and m.idle_since is not None and now - m.idle_since >= spec.idle_s),
                  key=lambda m: (m.idle_since, m.id))
    removable = max(size - draining - spec.min_nodes, 0)
    drain = tuple(m.id for m in idle[:removable])
    if drain:
        reason = f"{len(drain)} node(s) idle for over {spec.idle_s:g}s and no task waits: drain"
        return ScalingDecision(drain=drain, give_up=give_up, target=size - len(drain), reason=reason, signal=signal)
    return ScalingDecision(give_up=give_up, target=size, reason="steady" if not give_up else
                           f"{len(give_up)} node(s) did not come up within {spec.start_timeout_s:g}s",
                           signal=signal)
