"""Free resources (capacity − allocated − what this plan took) must cover the request.

NEVER when the node's whole capacity is too small (no amount of waiting or preemption helps);
NOT_NOW when it is busy. The reason names the dimension and the numbers:
"needs 2 cpu, node has 1.5 free of 4".
"""

from __future__ import annotations

from polyfabric.domain.resources import Resources, format_bytes
from polyfabric.scheduling.framework import PASS, CycleState, Scope, Status, Verdict
from polyfabric.scheduling.view import NodeView, TaskRequest

__all__ = ["DIMENSIONS", "CapacityFilter", "amount", "describe_shortfall"]

DIMENSIONS = ("cpu", "memory", "disk", "gpu", "slots")
"""Resource dimensions in the order reasons name them (the names `Resources.shortfall` uses)."""

_EXHAUSTED = {dim: f"{dim} exhausted" for dim in DIMENSIONS}


def amount(dimension: str, resources: Resources) -> int:
    if dimension == "cpu":
        return resources.cpu_millis
    if dimension == "memory":
        return resources.memory_bytes
    if dimension == "disk":
        return resources.disk_bytes
    if dimension == "gpu":
        return resources.gpus
    return resources.slots


def _show(dimension: str, value: int) -> str:
    if dimension == "cpu":
        return f"{value / 1000:g}"
    if dimension in ("memory", "disk"):
        return format_bytes(value) if value >= 0 else "-" + format_bytes(-value)
    return str(value)


def _unit(dimension: str, request: Resources) -> str:
    return "slot" if dimension == "slots" and request.slots == 1 else dimension


def describe_shortfall(dimension: str, request: Resources, free: Resources, capacity: Resources) -> str:
    """'needs 2 cpu, node has 1.5 free of 4'."""
    return (
        f"needs {_show(dimension, amount(dimension, request))} {_unit(dimension, request)}, node has "
        f"{_show(dimension, amount(dimension, free))} free of {_show(dimension, amount(dimension, capacity))}"
    )


class CapacityFilter:
    """Every dimension of the request must fit in what is free on the node now."""

    name = "capacity"
    scope = Scope.CYCLE
    task_fields = ("resources",)

    def requires(self, task: TaskRequest) -> Resources:
        """Nodes whose free resources do not cover this are refused (the pipeline may skip them)."""
        return task.resources

    def check(self, task: TaskRequest, node: NodeView, cycle: CycleState) -> Verdict:
        req = task.resources
        free = cycle.free(node.id)
        if (
            req.cpu_millis <= free.cpu_millis
            and req.memory_bytes <= free.memory_bytes
            and req.slots <= free.slots
            and req.gpus <= free.gpus
            and req.disk_bytes <= free.disk_bytes
        ):
            return PASS
        cap = node.capacity
        too_small = cap.shortfall(req)
        if too_small:
            dim = too_small[0]
            return Verdict(
                Status.NEVER,
                self.name,
                f"needs {_show(dim, amount(dim, req))} {_unit(dim, req)}, node {node.name} has only "
                f"{_show(dim, amount(dim, cap))} in all",
                f"{dim} capacity too small",
            )
        short = free.shortfall(req)
        return Verdict(
            Status.NOT_NOW,
            self.name,
            summary=_EXHAUSTED[short[0]],
            detail=lambda: "; ".join([describe_shortfall(dim, req, free, cap) for dim in short]),
        )
