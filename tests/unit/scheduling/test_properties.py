"""Properties of any plan, on random clusters and task sets.

No node goes over capacity or its task cap, no concurrency limit is exceeded (counting tasks that
wait for preempted victims), a task loses only to tasks ordered before it, every unplaced task is
explained, preemption only evicts strictly lower-priority preemptible tasks and picks the fewest
lowest-priority ones, and the applier's re-check rejects exactly what no longer fits.
"""

from __future__ import annotations

import random
from collections import Counter
from itertools import combinations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from polyfabric.domain.node_states import NodeState
from polyfabric.domain.resources import Resources
from polyfabric.scheduling import (
    ClusterView,
    ConcurrencyLimits,
    NodeOrder,
    NodeView,
    Placement,
    Plan,
    Profile,
    RunningTask,
    TaskRequest,
    builtin_registry,
    default_profile,
    schedule,
    verify_node,
)

from .builders import GI, clusters, small_resources, task_sets

SETTINGS = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ZERO = Resources()
PROFILES = [
    default_profile(),
    builtin_registry().profile("spread", scorers={"spread": 1}, node_order=NodeOrder.WORST_FIT),
    builtin_registry().profile("random", scorers={"binpack": 1, "spread": 2}, node_order=NodeOrder.RANDOM),
]


def _add(a: Resources, b: Resources) -> Resources:
    return a + b


def _le(a: Resources, b: Resources) -> bool:
    return b.fits(a)


def _positive(r: Resources) -> Resources:
    return Resources(*(max(0, x) for x in (r.cpu_millis, r.memory_bytes, r.disk_bytes, r.gpus, r.slots)))


@st.composite
def scenarios(draw):  # type: ignore[no-untyped-def]
    view = draw(clusters())
    tasks = draw(task_sets(node_ids=tuple(n.id for n in view.nodes)))
    profile = draw(st.sampled_from(PROFILES))
    k = draw(st.sampled_from([None, 1, 2, 50]))
    return view, tasks, profile, k, draw(st.integers(0, 2**16))


def _run(view: ClusterView, tasks: list[TaskRequest], profile: Profile, k: int | None, seed: int) -> Plan:
    return schedule(view, tasks, profile, random.Random(seed), max_candidates=k)


class _Facts:
    """What the plan did, indexed the ways the properties need."""

    def __init__(self, view: ClusterView, tasks: list[TaskRequest], plan: Plan) -> None:
        self.view = view
        self.plan = plan
        self.by_id = {t.task_id: t for t in tasks}
        self.order = {t.task_id: i for i, t in enumerate(sorted(tasks, key=lambda t: (-t.priority, t.submitted_seq)))}
        self.running = {r.task_id: r for n in view.nodes for r in n.running}
        self.placed = {p.task_id: p for p in plan.placements}
        self.unplaced = {u.task_id: u for u in plan.unplaced}
        self.victims_of: dict[str, list[RunningTask]] = {}
        self.preempt_node: dict[str, str] = {}
        for p in plan.preemptions:
            self.victims_of.setdefault(p.for_task_id, []).append(self.running[p.victim_task_id])
            self.preempt_node[p.for_task_id] = p.node_id
        # what each waiting task holds now: its request less what its victims free
        self.reserve: dict[str, Resources] = {}
        for tid, victims in self.victims_of.items():
            freed = ZERO
            for v in victims:
                freed = freed + v.resources
            self.reserve[tid] = _positive(self.by_id[tid].resources - freed)

    def new_tasks(self) -> list[TaskRequest]:
        """Placed tasks and tasks waiting for victims: both count against the limits."""
        return [self.by_id[t] for t in (*self.placed, *self.victims_of)]


def _cap(node: NodeView, limits: ConcurrencyLimits) -> int | None:
    return node.max_tasks if node.max_tasks is not None else limits.per_node


@SETTINGS
@given(scenarios())
def test_plans_are_safe_and_complete(scenario) -> None:  # type: ignore[no-untyped-def]
    view, tasks, profile, k, seed = scenario
    plan = _run(view, tasks, profile, k, seed)
    f = _Facts(view, tasks, plan)
    limits = view.limits

    # Every task is either placed or unplaced, exactly once; the plan names its view.
    assert plan.view_version == view.version
    assert sorted([*f.placed, *f.unplaced]) == sorted(f.by_id)
    assert len(plan.placements) == len(f.placed) and len(plan.unplaced) == len(f.unplaced)

    for node in view.nodes:
        here = [p for p in plan.placements if p.node_id == node.id]
        waiting = [t for t, nid in f.preempt_node.items() if nid == node.id]
        taken = ZERO
        for p in here:
            taken = taken + p.resources
        held = ZERO
        for t in waiting:
            held = held + f.reserve[t]
        free = node.capacity - node.allocated
        # Capacity: placements and what waiting tasks hold fit in what was free.
        assert _le(_add(taken, held), free), node.id
        # Once the victims are gone, every waiting task fits too.
        freed = ZERO
        for t in waiting:
            for v in f.victims_of[t]:
                freed = freed + v.resources
        need = ZERO
        for t in waiting:
            need = need + f.by_id[t].resources
        assert _le(need, free - taken + freed)
        # Only active nodes, matching labels, not excluded.
        for p in here:
            t = f.by_id[p.task_id]
            assert node.state is NodeState.ACTIVE
            assert all(node.labels.get(key) == value for key, value in t.constraints.items())
            assert node.id not in t.excluded_nodes
            assert p.resources == t.resources
        # Task cap, now and once the victims are gone.
        cap = _cap(node, limits)
        if cap is not None and here:
            assert len(node.running) + len(here) <= cap
        if cap is not None and waiting:
            gone = sum(len(f.victims_of[t]) for t in waiting)
            assert len(node.running) - gone + len(here) + len(waiting) <= cap

    # Concurrency limits, counting running tasks, placements and waiting tasks.
    new = f.new_tasks()
    run = list(f.running.values())
    if new and limits.global_max is not None:
        assert len(run) + len(new) <= limits.global_max
    for attr, table in (("domain", limits.per_domain), ("workflow_id", limits.per_workflow),
                        ("semaphore", limits.semaphores)):
        for key, size in table.items():
            added = sum(1 for t in new if getattr(t, attr) == key)
            if added:
                already = sum(1 for r in run if getattr(r, attr) == key)
                assert already + added <= size, (attr, key)

    # Every unplaced task says why; explanations count every node once.
    for u in plan.unplaced:
        assert u.blocked_by or u.reason_summary
        if u.reason_summary:
            assert sum(u.reason_summary.values()) == len(view.nodes)
        if u.waiting_for:
            assert sorted(u.waiting_for) == sorted(v.task_id for v in f.victims_of[u.task_id])


@SETTINGS
@given(scenarios())
def test_a_task_only_loses_to_tasks_ordered_before_it(scenario) -> None:  # type: ignore[no-untyped-def]
    view, tasks, profile, k, seed = scenario
    plan = _run(view, tasks, profile, k, seed)
    f = _Facts(view, tasks, plan)
    limits = view.limits
    for u in plan.unplaced:
        if u.waiting_for:
            continue
        h = f.by_id[u.task_id]
        later = [t for t in (*f.placed, *f.victims_of) if f.order[t] > f.order[h.task_id]]
        blocked = u.blocked_by or ""
        if blocked.startswith("global limit"):
            assert not later
            continue
        for prefix, attr in (("domain ", "domain"), ("workflow ", "workflow_id"), ("semaphore ", "semaphore")):
            if blocked.startswith(prefix):
                assert not [t for t in later if getattr(f.by_id[t], attr) == getattr(h, attr)]
                break
        else:
            # No node took it: on every node it could use, even giving back what later tasks
            # got there would not have made room for it.
            for node in view.nodes:
                if (node.state is not NodeState.ACTIVE or node.id in h.excluded_nodes
                        or any(node.labels.get(a) != b for a, b in h.constraints.items())
                        or not node.capacity.fits(h.resources)):
                    continue
                free = node.capacity - node.allocated
                count = len(node.running)
                for p in plan.placements:
                    if p.node_id == node.id and f.order[p.task_id] < f.order[h.task_id]:
                        free = free - p.resources
                        count += 1
                for t, nid in f.preempt_node.items():
                    if nid == node.id and f.order[t] < f.order[h.task_id]:
                        free = free - f.reserve[t]
                cap = _cap(node, limits)
                assert not free.fits(h.resources) or (cap is not None and count >= cap), (h.task_id, node.id)


@SETTINGS
@given(scenarios())
def test_preemption_never_touches_equal_or_higher_priority(scenario) -> None:  # type: ignore[no-untyped-def]
    view, tasks, profile, k, seed = scenario
    plan = _run(view, tasks, profile, k, seed)
    f = _Facts(view, tasks, plan)
    victims = Counter(p.victim_task_id for p in plan.preemptions)
    assert all(n == 1 for n in victims.values())
    for p in plan.preemptions:
        victim = f.running[p.victim_task_id]
        assert victim.preemptible
        assert victim.priority < f.by_id[p.for_task_id].priority
        assert victim.node_id == p.node_id
        assert any(r.task_id == victim.task_id for r in view.node(p.node_id).running)
        assert p.for_task_id in f.unplaced


@SETTINGS
@given(scenarios())
def test_same_seed_same_plan(scenario) -> None:  # type: ignore[no-untyped-def]
    view, tasks, profile, k, seed = scenario
    assert _run(view, tasks, profile, k, seed) == _run(view, list(reversed(tasks)), profile, k, seed)


@st.composite
def one_node_preemption(draw):  # type: ignore[no-untyped-def]
    capacity = Resources(draw(st.integers(4, 8)) * 500, draw(st.integers(2, 8)) * GI, 0, draw(st.integers(0, 2)),
                         draw(st.sampled_from([2, 16, 16])))
    allocated = ZERO
    victims = []
    for i in range(draw(st.integers(1, 10))):
        want = draw(small_resources(max_cpu=2, max_mem=2))
        if not capacity.fits(allocated + want):
            continue
        allocated = allocated + want
        victims.append(RunningTask(f"r{i}", "w", "acme", draw(st.integers(0, 6)), want, None, "n1",
                                   draw(st.integers(0, 4)) > 0))
    node = NodeView("n1", "one", "acme", NodeState.ACTIVE, {}, capacity, allocated, tuple(victims),
                    draw(st.sampled_from([None, None, len(victims), len(victims) + 1])))
    request = draw(small_resources(max_cpu=draw(st.sampled_from([2, 4, 6])), max_mem=draw(st.sampled_from([2, 8]))))
    return node, TaskRequest("t", "w", "acme", draw(st.integers(1, 7)), 0, request)


@settings(max_examples=400, deadline=None)
@given(one_node_preemption())
def test_preemption_picks_the_fewest_lowest_priority_victims(case) -> None:  # type: ignore[no-untyped-def]
    node, t = case
    view = ClusterView((node,), 1, ConcurrencyLimits())
    plan = schedule(view, [t], default_profile(), random.Random(0))
    free = node.capacity - node.allocated
    cap = node.max_tasks
    if free.fits(t.resources) and (cap is None or len(node.running) < cap):
        assert [p.task_id for p in plan.placements] == ["t"]
        return
    eligible = [v for v in node.running if v.preemptible and v.priority < t.priority]
    valid = []
    for size in range(1, len(eligible) + 1):
        for subset in combinations(eligible, size):
            freed = ZERO
            for v in subset:
                freed = freed + v.resources
            if (free + freed).fits(t.resources) and (cap is None or len(node.running) - size + 1 <= cap):
                valid.append(subset)
    chosen = [v for v in node.running if v.task_id in {p.victim_task_id for p in plan.preemptions}]
    if not valid or not node.capacity.fits(t.resources):
        assert chosen == []
        return
    assert chosen, "a valid victim set exists but none was chosen"
    assert any({v.task_id for v in s} == {v.task_id for v in chosen} for s in valid)

    def order(s):  # type: ignore[no-untyped-def]
        return (max(v.priority for v in s), len(s), sum(v.priority for v in s))

    assert order(chosen) == min(order(s) for s in valid)


@st.composite
def applier_cases(draw):  # type: ignore[no-untyped-def]
    capacity = Resources(draw(st.integers(1, 8)) * 500, draw(st.integers(1, 8)) * GI, 0, draw(st.integers(0, 2)),
                         draw(st.integers(1, 6)))
    allocated = draw(small_resources(max_cpu=2, max_mem=4))
    if not capacity.fits(allocated):
        allocated = ZERO
    running_count = draw(st.integers(0, 3))
    running = tuple(RunningTask(f"r{i}", "w", "acme", 0, ZERO, None, "n1") for i in range(running_count))
    state = draw(st.sampled_from([NodeState.ACTIVE, NodeState.ACTIVE, NodeState.CORDONED]))
    node = NodeView("n1", "one", "acme", state, {}, capacity, allocated, running,
                    draw(st.sampled_from([None, 1, 2, 4])))
    placements = [Placement(f"p{i}", "n1", draw(small_resources(max_cpu=3, max_mem=4)))
                  for i in range(draw(st.integers(0, 6)))]
    return placements, node


@settings(max_examples=300, deadline=None)
@given(applier_cases())
def test_verify_node_rejects_what_no_longer_fits(case) -> None:  # type: ignore[no-untyped-def]
    placements, node = case
    accepted, rejected = verify_node(placements, node)
    assert sorted(p.task_id for p in (*accepted, *(r.placement for r in rejected))) == sorted(
        p.task_id for p in placements)
    if node.state is not NodeState.ACTIVE:
        assert accepted == ()
        return
    free = node.capacity - node.allocated
    count = len(node.running)
    taken = {p.task_id for p in accepted}
    for p in placements:  # replay in plan order
        fits = free.fits(p.resources) and (node.max_tasks is None or count < node.max_tasks)
        assert (p.task_id in taken) == fits
        if fits:
            free = free - p.resources
            count += 1
    total = ZERO
    for p in accepted:
        total = total + p.resources
    assert (node.capacity - node.allocated).fits(total)
    assert all(r.reason for r in rejected)
