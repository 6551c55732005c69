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


def fullness(request: Resources, free: Resources, capacity: Resources) -> float:
    """0 (node would stay empty) … 100 (node would be full) after placing `request`."""
    total = 0.0
    dims = 0
    cap = capacity.cpu_millis
    if cap > 0:
        frac = (free.cpu_millis - request.cpu_millis) / cap
        total += 1.0 if frac <= 0.0 else 10.0 if frac >= 1.0 else 10.0**frac
        dims += 1
    cap = capacity.memory_bytes
    if cap > 0:
        frac = (free.memory_bytes - request.memory_bytes) / cap
        total += 1.0 if frac <= 0.0 else 10.0 if frac >= 1.0 else 10.0**frac
        dims += 1
    cap = capacity.gpus
    if request.gpus and cap > 0:
        frac = (free.gpus - request.gpus) / cap
        total += 1.0 if frac <= 0.0 else 10.0 if frac >= 1.0 else 10.0**frac
        dims += 1
    if dims == 0:
        return 0.0
    return (10.0 - total / dims) * (100.0 / 9.0)


class BinPackScorer:
    """The default scorer: fill nodes up before starting on empty ones."""

    name = "binpack"
    scope = Scope.CYCLE
    task_fields = ("resources",)

    def score(self, task: TaskRequest, node: NodeView, cycle: CycleState) -> float:
        return fullness(task.resources, cycle.free(node.id), node.capacity)
