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

_FIELDS = {"cpu": "cpu_millis", "memory": "memory_bytes", "disk": "disk_bytes", "gpu": "gpus",
           "slots": "slots"}


def amount(dimension: str, resources: Resources) -> int:
    return getattr(resources, _FIELDS[dimension])  # type: ignore[no-any-return]


def _show(dimension: str, value: int) -> str:
    if dimension == "cpu":
        return f"{value / 1000:g}"
    if dimension in ("memory", "disk"):
        return format_bytes(value) if value >= 0 else "-" + format_bytes(-value)
    return str(value)


def describe_shortfall(dimension: str, request: Resources, free: Resources, capacity: Resources) -> str:
    """'needs 2 cpu, node has 1.5 free of 4'."""
    unit = "slot" if dimension == "slots" and request.slots == 1 else dimension
    return (
        f"needs {_show(dimension, amount(dimension, request))} {unit}, node has "
        f"{_show(dimension, amount(dimension, free))} free of {_show(dimension, amount(dimension, capacity))}"
    )


class CapacityFilter:
    """Every dimension of the request must fit in what is free on the node now."""

    name = "capacity"
    scope = Scope.CYCLE

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
            unit = "slot" if dim == "slots" and req.slots == 1 else dim
            return Verdict(
                Status.NEVER,
                self.name,
                f"needs {_show(dim, amount(dim, req))} {unit}, node {node.name} has only "
                f"{_show(dim, amount(dim, cap))} in all",
                f"{dim} capacity too small",
            )
        short = free.shortfall(req)
        return Verdict(
            Status.NOT_NOW,
            self.name,
            "; ".join(describe_shortfall(dim, req, free, cap) for dim in short),
            f"{short[0]} exhausted",
        )
