"""The applier's re-check, and how plans explain themselves."""

from __future__ import annotations

import pytest

from polyfabric.domain.errors import ValidationError
from polyfabric.domain.node_states import NodeState
from polyfabric.scheduling import Placement, Plan, Status, Unplaced, describe_reasons, verify_node

from .builders import node, res, running


def _p(task_id: str, cpu: float, node_id: str = "n1") -> Placement:
    return Placement(task_id, node_id, res(cpu, 1))


def test_everything_that_still_fits_is_accepted() -> None:
    accepted, rejected = verify_node([_p("a", 1), _p("b", 2)], node("n1", cpu=4))
    assert [p.task_id for p in accepted] == ["a", "b"] and rejected == ()


def test_placements_that_no_longer_fit_are_rejected_in_order() -> None:
    fresh = node("n1", cpu=4, running=[running("r", "n1", resources=res(2, 1))])  # 2 cpu left now
    accepted, rejected = verify_node([_p("a", 1.5), _p("b", 1), _p("c", 0.5)], fresh)
    assert [p.task_id for p in accepted] == ["a", "c"]
    assert [(r.placement.task_id, r.reason) for r in rejected] == [("b", "needs 1 cpu, node has 0.5 free of 4")]


def test_node_no_longer_active_rejects_all() -> None:
    accepted, rejected = verify_node([_p("a", 1)], node("n1", state=NodeState.DRAINING))
    assert accepted == ()
    assert rejected[0].reason == "node n1-name is draining; only active nodes take new tasks"


def test_task_cap_and_duplicates() -> None:
    fresh = node("n1", max_tasks=2, running=[running("a", "n1")])
    accepted, rejected = verify_node([_p("a", 1), _p("b", 1), _p("c", 1)], fresh)
    assert [p.task_id for p in accepted] == ["b"]
    assert [r.reason for r in rejected] == ["task a already runs on n1-name", "node n1-name runs 2 of at most 2 tasks"]
    accepted, _ = verify_node([_p("x", 1), _p("y", 1)], node("n1"), per_node_default=1)
    assert [p.task_id for p in accepted] == ["x"]


def test_placements_for_another_node_are_a_bug() -> None:
    with pytest.raises(ValidationError, match="for node n2, not n1"):
        verify_node([_p("a", 1, "n2")], node("n1"))


def test_explanations_read_like_nomads() -> None:
    assert describe_reasons({"cpu exhausted": 997, "not active (cordoned)": 3}) == (
        "997 nodes: cpu exhausted; 3 nodes: not active (cordoned)")
    assert describe_reasons({"missing label zone=eu": 1}) == "1 node: missing label zone=eu"
    u = Unplaced("t", {"cpu exhausted": 2}, "semaphore s full 1/1", Status.NOT_NOW)
    assert u.describe() == "semaphore s full 1/1; 2 nodes: cpu exhausted"
    assert Unplaced("t", {}).describe() == "no reason recorded"


def test_plan_by_node_keeps_plan_order() -> None:
    plan = Plan((_p("a", 1), _p("b", 1, "n2"), _p("c", 1)), (), (), 3)
    assert {k: [p.task_id for p in v] for k, v in plan.by_node().items()} == {"n1": ["a", "c"], "n2": ["b"]}
