"""Node conditions computed from heartbeat age, telemetry, health checks and flaps."""

from __future__ import annotations

from typing import Any

import pytest

from polyfabric.domain.conditions import (
    Condition,
    ConditionType,
    DetectorSettings,
    compute_conditions,
    count_flaps,
)
from polyfabric.domain.node_states import NodeState

SETTINGS = DetectorSettings()


def conditions(
    *,
    state: NodeState = NodeState.ACTIVE,
    heartbeat_age: float | None = 1.0,
    telemetry: dict[str, Any] | None = None,
    health: list[dict[str, Any]] | None = None,
    flaps: int = 0,
    settings: DetectorSettings = SETTINGS,
) -> dict[ConditionType, Condition]:
    result = compute_conditions(
        state=state,
        heartbeat_age=heartbeat_age,
        telemetry=telemetry or {},
        health=health or [],
        flaps=flaps,
        settings=settings,
    )
    assert [c.type for c in result] == list(ConditionType), "fixed order, one of each"
    return {c.type: c for c in result}


def test_a_fresh_heartbeat_is_ready() -> None:
    c = conditions(heartbeat_age=1.0)
    assert c[ConditionType.READY].status is True
    assert c[ConditionType.READY].reason == "heartbeating and healthy"
    assert c[ConditionType.UNREACHABLE].status is False
    assert not any(cond.status for t, cond in c.items() if t != ConditionType.READY)


def test_silent_past_unreachable_after_is_unreachable_and_not_ready() -> None:
    c = conditions(heartbeat_age=SETTINGS.unreachable_after + 0.1)
    assert c[ConditionType.UNREACHABLE].status is True
    assert c[ConditionType.READY].status is False
    assert "last heartbeat 5.1s ago (bound 5s)" in c[ConditionType.UNREACHABLE].reason
    assert c[ConditionType.READY].reason == c[ConditionType.UNREACHABLE].reason


def test_the_unreachable_bound_itself_is_still_reachable() -> None:
    c = conditions(heartbeat_age=SETTINGS.unreachable_after)
    assert c[ConditionType.UNREACHABLE].status is False
    assert c[ConditionType.READY].status is True


def test_a_down_node_is_unreachable_whatever_its_age() -> None:
    c = conditions(state=NodeState.DOWN, heartbeat_age=0.5)
    assert c[ConditionType.UNREACHABLE].status is True
    assert c[ConditionType.READY].status is False


def test_no_heartbeat_yet() -> None:
    c = conditions(state=NodeState.PENDING, heartbeat_age=None)
    assert c[ConditionType.READY].status is False
    assert c[ConditionType.READY].reason == "no heartbeat received yet"
    assert c[ConditionType.UNREACHABLE].status is False


def test_memory_at_95_percent_is_memory_pressure() -> None:
    c = conditions(telemetry={"memory_percent": 95})
    assert c[ConditionType.MEMORY_PRESSURE].status is True
    assert c[ConditionType.MEMORY_PRESSURE].reason == "memory 95% used (threshold 90%)"
    assert c[ConditionType.READY].status is True, "pressure alone does not make a node unready"


def test_memory_below_the_threshold_and_missing_telemetry() -> None:
    assert conditions(telemetry={"memory_percent": 50.0})[ConditionType.MEMORY_PRESSURE].status is False
    missing = conditions(telemetry={"memory_percent": "lots"})[ConditionType.MEMORY_PRESSURE]
    assert (missing.status, missing.reason) == (False, "no memory telemetry")


def test_disk_pressure() -> None:
    c = conditions(telemetry={"disk_percent": 91.0})
    assert c[ConditionType.DISK_PRESSURE].status is True
    assert "disk 91% used" in c[ConditionType.DISK_PRESSURE].reason


def test_a_failed_health_check_is_degraded_with_its_message() -> None:
    health = [
        {"name": "disk", "ok": True, "message": "fine"},
        {"name": "gpu", "ok": False, "message": "GPU 0 fell off the bus"},
    ]
    c = conditions(health=health)
    assert c[ConditionType.DEGRADED].status is True
    assert c[ConditionType.DEGRADED].reason == "gpu: GPU 0 fell off the bus"
    assert c[ConditionType.READY].status is False
    assert c[ConditionType.READY].reason == "health checks failing"


def test_passing_health_checks_are_not_degraded() -> None:
    c = conditions(health=[{"name": "disk", "ok": True}])
    assert c[ConditionType.DEGRADED].status is False
    assert c[ConditionType.DEGRADED].reason == "all health checks pass"


@pytest.mark.parametrize("flaps, flapping", [(0, False), (2, False), (3, True), (10, True)])
def test_flaps_at_or_above_the_threshold_are_flapping(flaps: int, flapping: bool) -> None:
    c = conditions(flaps=flaps)
    assert c[ConditionType.FLAPPING].status is flapping
    assert f"went Down {flaps} times within 600s (threshold 3)" == c[ConditionType.FLAPPING].reason


@pytest.mark.parametrize(
    "state, ready",
    [
        (NodeState.ACTIVE, True),
        (NodeState.CORDONED, True),
        (NodeState.DRAINING, True),
        (NodeState.SUSPENDED, False),
        (NodeState.PENDING, False),
        (NodeState.QUARANTINED, False),
        (NodeState.RETIRED, False),
    ],
)
def test_ready_depends_on_the_state(state: NodeState, ready: bool) -> None:
    c = conditions(state=state)
    assert c[ConditionType.READY].status is ready
    if not ready:
        assert c[ConditionType.READY].reason == f"node is {state}"


def test_count_flaps_counts_within_the_window() -> None:
    assert count_flaps([10.0, 500.0, 900.0, 1000.0], now=1000.0, window=600.0) == 3
    assert count_flaps([], now=1000.0, window=600.0) == 0


def test_condition_to_dict() -> None:
    cond = Condition(ConditionType.READY, True, "ok")
    assert cond.to_dict() == {"type": "Ready", "status": True, "reason": "ok"}


def test_default_detector_bounds() -> None:
    s = DetectorSettings()
    assert s.heartbeat_interval < s.unreachable_after < s.down_after
    assert s.down_after + s.check_interval == 8.5
