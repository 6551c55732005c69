"""Intervention on a job at the runtime, over a real store (SQLite and PostgreSQL), with the
simulated agents of test_job_runtime.py.

set-priority re-orders the live queue (the runtime's heap), keeps the priority a task declares
itself, and a running task's new priority is the one preemption sees.
"""

from __future__ import annotations

import pytest

from polyfabric.domain.access import Principal, Role

from . import test_job_runtime as base
from .test_job_runtime import DOMAIN, Lease, World, fn

# The fixtures of test_job_runtime.py (one migrated database per backend, wiped per test).
migrated_url = base.migrated_url
world = base.world

OPERATOR = Principal("token", "at-ops", "ops", Role.OPERATOR, (DOMAIN,))


# -- set-priority re-orders the live queue -------------------------------------------------------


def _block(world: World, agent: base.Agent, priority: int = 100) -> Lease:
    """Fill the agent's only slot with a running task that nothing here may preempt."""
    job = world.submit({"name": "blocker", "priority": priority, "tasks": {"b": fn()}})
    assert world.runtime.schedule_once() == 1
    [lease] = agent.poll()[0]
    assert lease["job_id"] == job
    agent.start([lease])
    return lease


def _lease_order(world: World, agent: base.Agent, count: int) -> list[tuple[str, str]]:
    """Free the slot `count` times; which (job name, key) is leased next each time."""
    order = []
    for _ in range(count):
        assert world.runtime.schedule_once() == 1
        [lease] = agent.poll()[0]
        agent.start([lease])
        order.append((world.job(lease["job_id"])["name"], lease["key"]))
        agent.finish(lease)
    return order


@pytest.mark.parametrize(("change", "expected"), [
    (None, [("first", "a"), ("second", "a[0]"), ("second", "a[1]")]),  # submission order
    (("second", 5), [("second", "a[0]"), ("second", "a[1]"), ("first", "a")]),  # the later job raised
    (("first", -3), [("second", "a[0]"), ("second", "a[1]"), ("first", "a")]),  # the earlier one lowered
])
def test_set_priority_reorders_the_queued_tasks(world: World, change: tuple[str, int] | None,
                                                expected: list[tuple[str, str]]) -> None:
    agent = world.join("n0", slots=1)
    blocker = _block(world, agent)
    jobs = {"first": world.submit({"name": "first", "tasks": {"a": fn()}}),
            "second": world.submit({"name": "second", "tasks": {"a": fn(foreach=[0, 1])}})}
    assert world.runtime.schedule_once() == 0  # the node is full and nobody outranks the blocker
    if change is not None:
        name, priority = change
        out = world.runtime.intervene(OPERATOR, jobs[name], "priority", "", priority=priority)
        assert out["priority"] == priority
        assert {t["priority"] for t in world.tasks(jobs[name]).values() if not t["is_group"]} == {priority}
        assert world.runtime.schedule_once() == 0  # still full: the change evicts nobody
        assert agent.poll() == ([], [])
    agent.finish(blocker)
    assert _lease_order(world, agent, 3) == expected
    assert world.all_final(list(jobs.values()))


def test_set_priority_keeps_a_tasks_own_priority(world: World) -> None:
    """A task that declares its priority keeps it when its job's priority changes (the engine's
    rule): the live queue must agree with the task rows, as it does after a restart."""
    agent = world.join("n0", slots=1)
    blocker = _block(world, agent)
    pinned = world.submit({"name": "pinned", "tasks": {"own": fn(priority=1), "inherits": fn()}})
    other = world.submit({"name": "other", "priority": 5, "tasks": {"x": fn()}})
    world.runtime.intervene(OPERATOR, pinned, "priority", "", priority=9)
    rows = world.tasks(pinned)
    assert (rows["own"]["priority"], rows["inherits"]["priority"]) == (1, 9)
    agent.finish(blocker)
    # inherits (9) before other (5) before own (1), in memory as in the rows
    assert _lease_order(world, agent, 3) == [("pinned", "inherits"), ("other", "x"), ("pinned", "own")]
    assert world.all_final([pinned, other])


def test_a_running_tasks_raised_priority_protects_it_from_preemption(world: World) -> None:
    """Preemption compares priorities: a running task whose job was raised counts with the new one,
    in memory as in its row (which is what a restarted coordinator would use)."""
    agent = world.join("n0", slots=1)
    lease = _block(world, agent, priority=0)
    world.runtime.intervene(OPERATOR, lease["job_id"], "priority", "keep it", priority=10)
    assert world.task(lease["job_id"], "b")["priority"] == 10
    urgent = world.submit({"name": "urgent", "priority": 5, "tasks": {"u": fn()}})
    assert world.runtime.schedule_once() == 0
    assert agent.poll() == ([], [])  # no cancel: 5 does not outrank 10
    assert world.audit("task.preempted") == []
    agent.finish(lease)
    assert _lease_order(world, agent, 1) == [("urgent", "u")]
    assert world.all_final([lease["job_id"], urgent])
