"""Node conditions: what the coordinator concludes from heartbeats, telemetry and health checks.

Conditions are observations, not states: a node can be Active and under MemoryPressure at once.
The failure detector turns a long silence into the Down *state*; before that, Unreachable is the
condition that warns. Each condition carries a reason a person can read.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from polyfabric.domain.node_states import NodeState

__all__ = ["Condition", "ConditionType", "DetectorSettings", "compute_conditions", "count_flaps"]


class ConditionType(StrEnum):
    READY = "Ready"
    MEMORY_PRESSURE = "MemoryPressure"
    DISK_PRESSURE = "DiskPressure"
    DEGRADED = "Degraded"
    UNREACHABLE = "Unreachable"
    FLAPPING = "Flapping"


@dataclass(frozen=True, slots=True)
class DetectorSettings:
    """Bounds of the failure detector and the thresholds of the conditions (seconds, percent).

    Defaults: agents heartbeat every 2 s; a node silent 5 s is Unreachable; silent 8 s, Down.
    The detector checks every 0.5 s, so a dead node is Down at most 8.5 s after its last heartbeat.
    """

    heartbeat_interval: float = 2.0
    unreachable_after: float = 5.0
    down_after: float = 8.0
    check_interval: float = 0.5
    memory_pressure_percent: float = 90.0
    disk_pressure_percent: float = 90.0
    flap_window: float = 600.0
    flap_threshold: int = 3


@dataclass(frozen=True, slots=True)
class Condition:
    type: ConditionType
    status: bool
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type.value, "status": self.status, "reason": self.reason}


def count_flaps(down_times: list[float], now: float, window: float) -> int:
    """How many times the node went Down within the window ending now."""
    return sum(1 for t in down_times if now - t <= window)


def compute_conditions(
    *,
    state: NodeState,
    heartbeat_age: float | None,
    telemetry: dict[str, Any],
    health: list[dict[str, Any]],
    flaps: int,
    settings: DetectorSettings,
) -> list[Condition]:
    """All conditions of one node, in a fixed order. Pure: the age and counts come in."""
    out: list[Condition] = []

    unreachable = state == NodeState.DOWN or (
        heartbeat_age is not None and heartbeat_age > settings.unreachable_after
    )
    if heartbeat_age is None:
        reach_reason = "no heartbeat received yet"
    elif unreachable:
        reach_reason = f"last heartbeat {heartbeat_age:.1f}s ago (bound {settings.unreachable_after:g}s)"
    else:
        reach_reason = f"last heartbeat {heartbeat_age:.1f}s ago"

    mem = _percent(telemetry, "memory_percent")
    mem_pressure = mem is not None and mem >= settings.memory_pressure_percent
    disk = _percent(telemetry, "disk_percent")
    disk_pressure = disk is not None and disk >= settings.disk_pressure_percent
    failed = [h for h in health if not h.get("ok", True)]
    degraded = bool(failed)
    flapping = flaps >= settings.flap_threshold

    ready = (
        state in (NodeState.ACTIVE, NodeState.CORDONED, NodeState.DRAINING)
        and heartbeat_age is not None
        and not unreachable
        and not degraded
    )
    if ready:
        ready_reason = "heartbeating and healthy"
    elif heartbeat_age is None:
        ready_reason = "no heartbeat received yet"
    elif unreachable:
        ready_reason = reach_reason
    elif degraded:
        ready_reason = "health checks failing"
    else:
        ready_reason = f"node is {state}"

    out.append(Condition(ConditionType.READY, ready, ready_reason))
    out.append(Condition(
        ConditionType.MEMORY_PRESSURE, mem_pressure,
        f"memory {mem:.0f}% used (threshold {settings.memory_pressure_percent:g}%)" if mem is not None
        else "no memory telemetry",
    ))
    out.append(Condition(
        ConditionType.DISK_PRESSURE, disk_pressure,
        f"disk {disk:.0f}% used (threshold {settings.disk_pressure_percent:g}%)" if disk is not None
        else "no disk telemetry",
    ))
    out.append(Condition(
        ConditionType.DEGRADED, degraded,
        "; ".join(f"{h.get('name', '?')}: {h.get('message', 'failed')}" for h in failed)
        if failed else "all health checks pass",
    ))
    out.append(Condition(ConditionType.UNREACHABLE, unreachable, reach_reason))
    out.append(Condition(
        ConditionType.FLAPPING, flapping,
        f"went Down {flaps} times within {settings.flap_window:g}s (threshold {settings.flap_threshold})",
    ))
    return out


def _percent(telemetry: dict[str, Any], key: str) -> float | None:
    value = telemetry.get(key)
    return float(value) if isinstance(value, int | float) else None
