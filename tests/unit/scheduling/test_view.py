"""The snapshot: usage is derived from what runs, and bad input is refused early."""

from __future__ import annotations

import pytest

from polyfabric.domain.errors import NotFound, ValidationError
from polyfabric.domain.node_states import NodeState
from polyfabric.domain.nodes import Node
from polyfabric.domain.resources import Resources
from polyfabric.scheduling import ConcurrencyLimits, NodeView, TaskRequest

from .builders import node, res, running, view


def test_usage_counts_running_tasks_every_way() -> None:
    v = view(
        node("n1", running=[running("a", "n1", workflow="w1", semaphore="s"), running("b", "n1", domain="globex")]),
        node("n2", running=[running("c", "n2", workflow="w1")]),
        node("n3"),
    )
    assert v.usage.total == 3
    assert v.usage.by_domain == {"acme": 2, "globex": 1}
    assert v.usage.by_workflow == {"w1": 2, "wf-run": 1}
    assert v.usage.by_semaphore == {"s": 1}
    assert v.usage.by_node == {"n1": 2, "n2": 1, "n3": 0}


def test_lookup_and_duplicates() -> None:
    v = view(node("n1"))
    assert v.node("n1").id == "n1"
    assert "n1" in v and "n2" not in v
    with pytest.raises(NotFound, match="n2"):
        v.node("n2")
    with pytest.raises(ValidationError, match="more than once: n1"):
        view(node("n1"), node("n1"))


def test_task_defaults_to_one_slot() -> None:
    t = TaskRequest("t", "w", "acme", 0, 0)
    assert t.resources == Resources(slots=1)
    assert t.constraints == {} and t.excluded_nodes == frozenset() and t.semaphore is None


def test_negative_amounts_are_refused() -> None:
    with pytest.raises(ValidationError):
        TaskRequest("t", "w", "acme", 0, 0, Resources(cpu_millis=-1))
    with pytest.raises(ValidationError):
        node("n1", max_tasks=-1)
    with pytest.raises(ValidationError):
        ConcurrencyLimits(global_max=-1)
    with pytest.raises(ValidationError, match="semaphore"):
        ConcurrencyLimits(semaphores={"s": -2})


def test_node_view_of_a_domain_node() -> None:
    n = Node("n-x", "box", "acme", b"k" * 32, {"zone": "a"}, res(4, 8), NodeState.CORDONED, 0.0, 0.0)
    nv = NodeView.of(n, allocated=res(1, 1), max_tasks=3)
    assert (nv.id, nv.name, nv.domain, nv.state, nv.labels, nv.max_tasks) == (
        "n-x", "box", "acme", NodeState.CORDONED, {"zone": "a"}, 3)
    assert nv.free == res(3, 7, slots=0)
