"""Prefer fuller nodes, so whole nodes stay free for big tasks and idle nodes can be suspended.

Nomad's best-fit formula over the fraction of cpu and memory (and GPUs, for GPU tasks) that would
be left free after placing the task: each dimension adds 10^free_fraction (1 when full, 10 when
empty); the mean maps to 100 (full) … 0 (empty). The exponent rewards nodes that end up nearly
full in every dimension over nodes that are lopsided.
"""

from __future__ import annotations

from polyfabric.domain.resources import Resources
from polyfabric.scheduling.framework import CycleState, Scope
from polyfabric.scheduling.view import NodeView, TaskRequest

__all__ = ["BinPackScorer", "fullness"]


def _term(free: int, want: int, capacity: int) -> float:
    frac = (free - want) / capacity
    if frac <= 0.0:
        return 1.0
    if frac >= 1.0:
        return 10.0
    return float(10.0**frac)


def fullness(request: Resources, free: Resources, capacity: Resources) -> float:
    """0 (node would stay empty) … 100 (node would be full) after placing `request`."""
    total = 0.0
    dims = 0
    if capacity.cpu_millis > 0:
        total += _term(free.cpu_millis, request.cpu_millis, capacity.cpu_millis)
        dims += 1
    if capacity.memory_bytes > 0:
        total += _term(free.memory_bytes, request.memory_bytes, capacity.memory_bytes)
        dims += 1
    if request.gpus and capacity.gpus > 0:
        total += _term(free.gpus, request.gpus, capacity.gpus)
        dims += 1
    if dims == 0:
        return 0.0
    return (10.0 - total / dims) * (100.0 / 9.0)


class BinPackScorer:
    """The default scorer: fill nodes up before starting on empty ones."""

    name = "binpack"
    scope = Scope.CYCLE

    def score(self, task: TaskRequest, node: NodeView, cycle: CycleState) -> float:
        return fullness(task.resources, cycle.free(node.id), node.capacity)
