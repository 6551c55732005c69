"""Preemption: which victims, on which node, and what it never does."""

from __future__ import annotations

import random
from dataclasses import replace

from polyfabric.domain.node_states import NodeState
from polyfabric.scheduling import (
    ConcurrencyLimits,
    NodeView,
    RunningTask,
    Status,
    TaskRequest,
    choose_victims,
    default_profile,
    schedule,
)

from .builders import cycle, node, res, running, task, view


def _plan(v, tasks, profile=None, **kw):  # type: ignore[no-untyped-def]
    return schedule(v, tasks, profile or default_profile(), random.Random(0), **kw)


def _victims(plan) -> list[str]:  # type: ignore[no-untyped-def]
    return sorted(p.victim_task_id for p in plan.preemptions)


def _full(node_id: str, *victims: RunningTask, cpu: float = 4, **kw) -> NodeView:  # type: ignore[no-untyped-def]
    return node(node_id, cpu=cpu, running=victims, **kw)


def test_lowest_priority_level_first_then_fewest() -> None:
    n = _full("n1", running("a", "n1", priority=1, resources=res(1, 1)),
              running("b", "n1", priority=3, resources=res(2, 1)),
              running("c", "n1", priority=5, resources=res(1, 1)))
    plan = _plan(view(n), [task("t", priority=10, resources=res(2, 1))])
    assert _victims(plan) == ["b"]  # p1 alone frees too little; within p<=3, one victim is enough


def test_only_the_lowest_level_when_it_suffices() -> None:
    n = _full("n1", *(running(f"s{i}", "n1", priority=1, resources=res(0.5, 1)) for i in range(4)),
              running("big", "n1", priority=2, resources=res(2, 1)))
    plan = _plan(view(n), [task("t", priority=10, resources=res(2, 1))])
    assert _victims(plan) == ["s0", "s1", "s2", "s3"]  # four of priority 1 beat one of priority 2


def test_fewest_victims_within_a_level() -> None:
    n = _full("n1", *(running(f"s{i}", "n1", priority=1, resources=res(0.5, 1)) for i in range(4)),
              running("big", "n1", priority=1, resources=res(2, 1)))
    plan = _plan(view(n), [task("t", priority=5, resources=res(2, 1))])
    assert _victims(plan) == ["big"]


def test_least_waste_among_equally_few() -> None:
    n = _full("n1", running("x", "n1", priority=1, resources=res(2, 1)),
              running("y", "n1", priority=1, resources=res(3, 1)), cpu=5)
    plan = _plan(view(n), [task("t", priority=5, resources=res(2, 1))])
    assert _victims(plan) == ["x"]


def test_never_equal_or_higher_priority_nor_non_preemptible() -> None:
    equal = _full("n1", running("a", "n1", priority=5, resources=res(4, 1)))
    pinned = _full("n2", running("b", "n2", priority=1, resources=res(4, 1), preemptible=False))
    higher = _full("n3", running("c", "n3", priority=9, resources=res(4, 1)))
    plan = _plan(view(equal, pinned, higher), [task("t", priority=5, resources=res(2, 1))])
    assert plan.preemptions == ()
    (u,) = plan.unplaced
    assert u.waiting_for == () and u.blocked_by is None
    assert dict(u.reason_summary) == {"cpu exhausted": 3}


def test_the_plan_records_who_waits_for_whom() -> None:
    n = _full("n1", running("a", "n1", priority=1, resources=res(4, 1)))
    plan = _plan(view(n), [task("t", priority=5, resources=res(2, 1))])
    (p,) = plan.preemptions
    assert (p.victim_task_id, p.node_id, p.for_task_id) == ("a", "n1", "t")
    assert p.reason == "preempted for task t (priority 5 > 1): needs 2 cpu, node has 0 free of 4"
    (u,) = plan.unplaced
    assert u.blocked_by == "waiting for 1 preempted task on node n1-name"
    assert u.waiting_for == ("a",)
    assert u.status is Status.NOT_NOW
    assert dict(u.reason_summary) == {"cpu exhausted": 1}


def test_best_node_has_the_lowest_victims() -> None:
    a = _full("a", running("pa", "a", priority=3, resources=res(4, 1)))
    b = _full("b", running("pb", "b", priority=1, resources=res(4, 1)))
    c = _full("c", running("pc1", "c", priority=1, resources=res(2, 1)), running("pc2", "c", priority=1,
              resources=res(2, 1)))
    plan = _plan(view(a, b, c), [task("t", priority=5, resources=res(3, 1))])
    assert _victims(plan) == ["pb"]


def test_task_cap_can_be_freed_by_preemption() -> None:
    n = node("n1", max_tasks=2, running=[running("a", "n1", priority=1, resources=res(0.5, 1)),
                                         running("b", "n1", priority=2, resources=res(0.5, 1))])
    plan = _plan(view(n), [task("t", priority=5, resources=res(0.5, 1))])
    assert _victims(plan) == ["a"]


def test_what_the_victims_do_not_free_is_held_for_the_waiting_task() -> None:
    n = _full("n1", running("a", "n1", priority=1, resources=res(3, 1)))  # 1 cpu free
    plan = _plan(view(n), [task("t", priority=5, resources=res(3.5, 1)), task("low", priority=0, seq=1)])
    assert _victims(plan) == ["a"]
    assert plan.placements == ()  # 'low' would have taken the free cpu the waiting task needs
    low = next(u for u in plan.unplaced if u.task_id == "low")
    assert dict(low.reason_summary) == {"cpu exhausted": 1}


def test_two_waiting_tasks_never_share_a_victim() -> None:
    n = _full("n1", running("a", "n1", priority=1, resources=res(2, 1)), running("b", "n1", priority=1,
              resources=res(2, 1)))
    plan = _plan(view(n), [task("t1", priority=5, resources=res(2, 1)),
                           task("t2", priority=5, resources=res(2, 1), seq=1),
                           task("t3", priority=5, resources=res(2, 1), seq=2)])
    assert _victims(plan) == ["a", "b"]
    assert {p.for_task_id for p in plan.preemptions} == {"t1", "t2"}
    t3 = next(u for u in plan.unplaced if u.task_id == "t3")
    assert t3.waiting_for == ()


def test_preemption_respects_the_limits() -> None:
    n = _full("n1", running("a", "n1", priority=1, resources=res(4, 1), workflow="w"))
    limits = ConcurrencyLimits(global_max=2)
    plan = _plan(view(n, limits=limits), [task("t", priority=5, resources=res(2, 1)),
                                          task("u", priority=4, resources=res(2, 1), seq=1)])
    assert _victims(plan) == ["a"]
    u = next(x for x in plan.unplaced if x.task_id == "u")
    assert u.blocked_by == "global limit 2/2"  # the victim still counts, and so does 't'
    blocked = _plan(view(n, limits=ConcurrencyLimits(per_workflow={"w": 1})),
                    [task("t", priority=5, resources=res(2, 1), workflow="w")])
    assert blocked.preemptions == ()
    assert blocked.unplaced[0].blocked_by == "workflow w cap 1/1"


def test_nodes_that_could_never_take_the_task_are_not_candidates() -> None:
    small = _full("small", running("a", "small", priority=1, resources=res(1, 1)), cpu=1)
    cordoned = _full("off", running("b", "off", priority=1, resources=res(4, 1)), state=NodeState.CORDONED)
    plan = _plan(view(small, cordoned), [task("t", priority=5, resources=res(2, 1))])
    assert plan.preemptions == ()
    assert plan.unplaced[0].status is Status.NEVER


def test_profile_can_turn_preemption_off_and_filter_victims() -> None:
    n = _full("n1", running("a", "n1", priority=1, resources=res(4, 1), domain="globex"))
    off = replace(default_profile(), preemption=False)
    assert _plan(view(n), [task("t", priority=5, resources=res(2, 1))], off).preemptions == ()

    class SameDomain:
        name = "same_domain"

        def allows(self, task: TaskRequest, victim: RunningTask, node: NodeView) -> bool:
            return victim.domain == task.domain

    guarded = replace(default_profile(), victim_filters=(SameDomain(),))
    assert _plan(view(n), [task("t", priority=5, resources=res(2, 1))], guarded).preemptions == ()
    assert _victims(_plan(view(n), [task("t", priority=5, resources=res(2, 1), domain="globex")], guarded)) == ["a"]


def test_greedy_fallback_still_frees_enough() -> None:
    victims = [running(f"v{i}", "n1", priority=1, resources=res(0.5 * (1 + i % 3), 1)) for i in range(9)]
    n = _full("n1", *victims, cpu=9)
    c = cycle(n)
    t = task("t", priority=5, resources=res(3, 1))
    exact = choose_victims(t, n, c)
    greedy = choose_victims(t, n, c, budget=0)
    assert exact is not None and greedy is not None
    for choice in (exact, greedy):
        assert sum(v.resources.cpu_millis for v in choice.victims) >= 3000
    assert len(exact.victims) == 2  # two 1.5-cpu victims
    assert len(greedy.victims) >= len(exact.victims)
