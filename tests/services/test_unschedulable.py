"""Tasks no node may take are parked, and planned again when what ruled the nodes out changes.

A pass that finds every node ruled out for good for a task (NEVER verdicts: labels, policies,
node states; no node merely busy) parks it, like Kubernetes' unschedulable queue: the passes after
it do not plan it again (a coordinator passes every half second; thousands of such tasks were
explained anew each time) until the nodes' declarations, their states, the policies or limits
change, or the minute turns (rules that read the clock). A task waiting for a busy node is never
parked: a finishing task frees its place.

JobRuntime + NodeService + PolicyService over a real store (SQLite), driven by a FakeClock that
starts on the hour (08:00:00 UTC); the worlds of test_policy_test.py. "Planned" is read from the
scheduling-pass histogram, which the runtime observes only when it runs the planner.
"""

from __future__ import annotations

from typing import Any

import pytest

from polyfabric.domain.resources import Resources
from polyfabric.observability import metrics as obs
from polyfabric.security.keys import generate_private_key, public_key_raw
from polyfabric.services.nodes import Registration

from . import test_policy_test as base
from .test_policy_test import ADMIN, World

world = base.world  # a fresh SQLite store per test, domains lab and ops, a join token for lab


def _plans() -> float:
    """How many times a runtime in this process ran the planner."""
    for metric in obs.SCHEDULING_PASS_SECONDS.collect():
        for sample in metric.samples:
            if sample.name.endswith("_count"):
                return sample.value
    raise AssertionError("no pass histogram")


def _submit(world: World, task: dict[str, Any], domain: str = "lab") -> str:
    doc = {"name": "j", "tasks": {"a": {"command": ["true"], **task}}}
    job_id = world.services.runtime.submit(ADMIN, doc, {}, domain)["id"]
    [row] = world.services.jobs.tasks(ADMIN, job_id, status=None, after=None, limit=10)
    return str(row["id"])


def _node_of(world: World, task_id: str) -> str | None:
    return world.services.jobs.task(ADMIN, task_id)["node_id"]


def _pass(world: World, advance: float = 1.0) -> tuple[int, bool]:
    """Move the clock, run a pass: (tasks placed, whether the planner ran)."""
    world.services.ctx.clock.advance(advance)
    before = _plans()
    placed = world.services.runtime.schedule_once()
    return placed, _plans() > before


def _parked(world: World, task_id: str) -> str:
    """Park the task (one pass rules every node out), check that passes leave it alone; its reason."""
    runtime = world.services.runtime
    assert runtime.schedule_once() == 0
    assert runtime.stats()["unschedulable"] == 1
    reason = runtime.pending_reasons[task_id]
    for _ in range(3):
        assert _pass(world) == (0, False)
    assert runtime.pending_reasons[task_id] == reason  # the explanation it was parked with stands
    assert _node_of(world, task_id) is None
    return reason


def test_a_node_joining_with_the_label_a_parked_task_needs_takes_it(world):
    world.join("plain")
    task = _submit(world, {"constraints": {"gpu": "yes"}})
    assert "missing label gpu=yes" in _parked(world, task)
    gpu = world.join("gpu", gpu="yes")
    assert _pass(world) == (1, True)
    assert _node_of(world, task) == gpu
    assert world.services.runtime.stats()["unschedulable"] == 0


def test_a_node_relabelled_by_its_agent_takes_it_and_a_reread_of_unchanged_nodes_does_not_wake_it(world):
    node = world.join("plain")
    task = _submit(world, {"constraints": {"gpu": "yes"}})
    _parked(world, task)
    assert _pass(world, advance=3.0) == (0, False)  # the node list is read again (every 2 s): unchanged
    reg = Registration(public_key=public_key_raw(generate_private_key()), name="plain", labels={"gpu": "yes"},
                       capacity=Resources(cpu_millis=4000, memory_bytes=8 << 30, slots=8))
    world.services.nodes.hello(node, reg)  # the agent reconnects declaring the label
    assert _pass(world) == (1, True)
    assert _node_of(world, task) == node


def test_an_uncordoned_node_takes_the_task_parked_while_it_was_cordoned(world):
    node = world.join("only")
    world.services.nodes.act(ADMIN, node, "cordon", "maintenance")
    task = _submit(world, {})
    assert "not active (cordoned)" in _parked(world, task)
    world.services.nodes.act(ADMIN, node, "uncordon", "done")
    assert _pass(world) == (1, True)
    assert _node_of(world, task) == node


def test_removing_the_policy_that_denied_every_node_places_the_parked_task(world):
    node = world.join("a-node", zone="a")
    world.apply(name="zone-b", kind="placement", allow='node.labels.zone == "b"', reason="b only")
    task = _submit(world, {})
    assert "policy zone-b v1" in _parked(world, task)
    assert world.services.policies is not None
    world.services.policies.remove(ADMIN, "zone-b")
    assert _pass(world) == (1, True)
    assert _node_of(world, task) == node


def test_a_task_parked_by_a_rule_over_the_clock_is_planned_again_when_the_minute_turns(world):
    node = world.join("n")
    world.apply(name="after-nine", kind="placement", allow="now.hour >= 9", reason="not before nine")
    world.services.ctx.clock.advance(3600 - 100)  # 08:58:20
    task = _submit(world, {})
    _parked(world, task)  # the passes move the clock to 08:58:23
    assert _pass(world, advance=30.0) == (0, False)  # 08:58:53: the same minute
    assert _pass(world, advance=10.0) == (0, True)  # 08:59:03: planned again (a new minute), still denied
    assert _pass(world, advance=5.0) == (0, False)  # 08:59:08: parked again
    assert _pass(world, advance=55.0) == (1, True), world.services.runtime.pending_reasons  # 09:00:03
    assert _node_of(world, task) == node


def test_a_node_whose_owner_accepts_work_from_nine_is_offered_the_task_from_nine(world):
    """The owner's advertised hours are read at the pass's time (the coordinator's clock), and
    a task parked outside them is planned again once the minute turns."""
    node = world.join("office", owner={"accept": {"hours": "09:00-17:00"}})
    world.services.ctx.clock.advance(3600 - 100)  # 08:58:20
    task = _submit(world, {})
    assert "policy owner" in _parked(world, task)
    assert _pass(world, advance=100.0) == (1, True)  # 09:00:03
    assert _node_of(world, task) == node


def test_passes_for_other_tasks_leave_a_parked_one_out_and_it_comes_back_when_a_node_fits(world):
    """While parked, a task is out of the queue's order (a pass for other work does not pop it
    again and again); when what ruled it out changes it is planned again."""
    world.join("plain")
    parked = _submit(world, {"constraints": {"gpu": "yes"}})
    _parked(world, parked)
    for _ in range(3):  # other work comes and is placed; the parked task stays as it was
        other = _submit(world, {})
        assert _pass(world) == (1, True)
        assert _node_of(world, other) is not None and _node_of(world, parked) is None
        assert world.services.runtime.stats()["unschedulable"] == 1
    gpu = world.join("gpu", gpu="yes")
    assert _pass(world) == (1, True)
    assert _node_of(world, parked) == gpu


def test_tasks_no_node_may_take_do_not_hold_back_the_work_behind_them(world):
    """A pass plans the head of the queue (at least 64 tasks). 200 tasks no node may take at the
    head filled every pass, so the work behind them never ran (head-of-line blocking); parked
    64 or more a pass, they let it through within a few passes."""
    node = world.join("plain")
    world.services.runtime.submit(ADMIN, {"name": "gpu-work", "tasks": {
        f"g{i}": {"command": ["true"], "constraints": {"gpu": "yes"}} for i in range(200)}}, {}, "lab")
    low = _submit(world, {"priority": -1})
    passes = 0
    while _node_of(world, low) is None:
        passes += 1
        assert passes <= 5, world.services.runtime.stats()
        _pass(world)
    assert _node_of(world, low) == node


def test_a_task_waiting_for_a_busy_node_is_never_parked(world):
    world.join("small", cpu_millis=4000)
    first = _submit(world, {"resources": {"cpu": "3000m"}})
    second = _submit(world, {"resources": {"cpu": "3000m"}})
    runtime = world.services.runtime
    assert runtime.schedule_once() == 1
    waiting = second if _node_of(world, first) else first
    assert "cpu" in runtime.pending_reasons[waiting]
    for _ in range(3):  # it may fit as soon as the other ends: every pass looks again
        assert _pass(world) == (0, True)
        assert runtime.stats()["unschedulable"] == 0


@pytest.mark.parametrize("how", ["cancel", "restart"])
def test_a_parked_task_that_leaves_the_queue_leaves_nothing_behind(world, how):
    world.join("plain")
    task = _submit(world, {"constraints": {"gpu": "yes"}})
    _parked(world, task)
    runtime = world.services.runtime
    if how == "cancel":
        job_id = world.services.jobs.task(ADMIN, task)["job_id"]
        runtime.intervene(ADMIN, job_id, "cancel", "not needed")
        assert runtime.stats()["queued"] == 0
    else:  # a new leader's runtime: nothing parked, the task planned (and parked) again
        runtime.reset()
        runtime.load()
        assert runtime.stats()["queued"] == 1
        assert _pass(world) == (0, True)
    assert runtime.stats()["unschedulable"] == (0 if how == "cancel" else 1)
