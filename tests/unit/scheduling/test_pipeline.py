"""schedule(): order, limits, explanations, plugin scopes and the work it shares."""

from __future__ import annotations

import random
from collections.abc import Hashable

import pytest

from polyfabric.domain.errors import ValidationError
from polyfabric.domain.node_states import NodeState
from polyfabric.scheduling import (
    PASS,
    ConcurrencyLimits,
    CycleState,
    NodeOrder,
    NodeView,
    Profile,
    Scope,
    Status,
    TaskRequest,
    Verdict,
    WeightedScorer,
    builtin_registry,
    default_candidates,
    default_profile,
    schedule,
)

from .builders import node, res, running, task, view


def _plan(v, tasks, profile=None, seed=0, **kw):  # type: ignore[no-untyped-def]
    return schedule(v, tasks, profile or default_profile(), random.Random(seed), **kw)


def _where(plan) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {p.task_id: p.node_id for p in plan.placements}


def test_places_tasks_and_names_the_view_version() -> None:
    plan = _plan(view(node("n1"), node("n2"), version=42), [task("a"), task("b", seq=1)])
    assert set(_where(plan)) == {"a", "b"}
    assert plan.unplaced == () and plan.preemptions == ()
    assert plan.view_version == 42
    assert plan.placements[0].resources == res(1, 1)


def test_higher_priority_wins_the_last_place() -> None:
    v = view(node("n1", slots=1))
    plan = _plan(v, [task("low", priority=1, seq=0), task("high", priority=5, seq=1)])
    assert _where(plan) == {"high": "n1"}
    assert [u.task_id for u in plan.unplaced] == ["low"]


def test_earlier_submission_wins_a_priority_tie() -> None:
    v = view(node("n1", slots=1))
    plan = _plan(v, [task("late", seq=9), task("early", seq=3)])
    assert _where(plan) == {"early": "n1"}


def test_same_seed_same_plan() -> None:
    v = view(*(node(f"n{i}") for i in range(20)))
    tasks = [task(f"t{i}", seq=i, resources=res(1 + i % 3, 1)) for i in range(40)]
    assert _plan(v, tasks, seed=5) == _plan(v, tasks, seed=5)


def test_binpack_fills_one_node_before_the_next() -> None:
    v = view(*(node(f"n{i}", cpu=4, slots=4) for i in range(4)))
    plan = _plan(v, [task(f"t{i}", seq=i) for i in range(8)])
    assert sorted(list(_where(plan).values()).count(n) for n in {"n0", "n1", "n2", "n3"}) == [0, 0, 4, 4]


def test_binpack_prefers_the_partly_used_node() -> None:
    v = view(node("empty"), node("used", running=[running("r", "used", resources=res(2, 4))]))
    assert _where(_plan(v, [task("t")])) == {"t": "used"}


def test_spread_profile_spreads() -> None:
    profile = builtin_registry().profile("spread", scorers={"spread": 1}, node_order=NodeOrder.WORST_FIT)
    v = view(*(node(f"n{i}", cpu=4, slots=4) for i in range(4)))
    plan = _plan(v, [task(f"t{i}", seq=i) for i in range(8)], profile)
    assert sorted(list(_where(plan).values()).count(f"n{i}") for i in range(4)) == [2, 2, 2, 2]
    random_order = builtin_registry().profile("r", scorers={"spread": 1}, node_order="random")
    plan = _plan(v, [task(f"t{i}", seq=i) for i in range(8)], random_order)
    assert sorted(list(_where(plan).values()).count(f"n{i}") for i in range(4)) == [2, 2, 2, 2]


def test_explanation_is_exact() -> None:
    nodes = [node(f"c{i}", state=NodeState.CORDONED) for i in range(3)]
    nodes += [node(f"f{i}", cpu=4, running=[running(f"r{i}", f"f{i}", resources=res(3, 1))]) for i in range(2)]
    nodes += [node("small", cpu=1), node("eu", cpu=2, labels={"zone": "eu"})]
    plan = _plan(view(*nodes), [task("t", resources=res(2, 1), constraints={"zone": "eu"}),
                                task("u", resources=res(2, 1), seq=1)])
    assert _where(plan) == {"t": "eu"}
    (u,) = plan.unplaced
    assert dict(u.reason_summary) == {
        "not active (cordoned)": 3, "cpu exhausted": 3, "cpu capacity too small": 1,
    }
    assert u.status is Status.NOT_NOW and u.blocked_by is None
    assert u.describe() == "3 nodes: cpu exhausted; 3 nodes: not active (cordoned); 1 node: cpu capacity too small"


def test_never_when_no_node_could_ever_take_it() -> None:
    plan = _plan(view(node("n1", cpu=2), node("n2", state=NodeState.DOWN)), [task("t", resources=res(4, 1))])
    (u,) = plan.unplaced
    assert u.status is Status.NEVER
    assert dict(u.reason_summary) == {"cpu capacity too small": 1, "not active (down)": 1}


def test_no_nodes_at_all() -> None:
    (u,) = _plan(view(), [task("t")]).unplaced
    assert (u.status, u.blocked_by, dict(u.reason_summary)) == (Status.NEVER, "no nodes in the cluster view", {})


@pytest.mark.parametrize(
    ("limits", "blocked"),
    [
        (ConcurrencyLimits(global_max=2), "global limit 2/2"),
        (ConcurrencyLimits(per_domain={"acme": 2}), "domain acme cap 2/2"),
        (ConcurrencyLimits(per_workflow={"wf": 2}), "workflow wf cap 2/2"),
        (ConcurrencyLimits(semaphores={"gpu-lab": 2}), "semaphore gpu-lab full 2/2"),
    ],
)
def test_limits_block_with_a_reason(limits: ConcurrencyLimits, blocked: str) -> None:
    v = view(node("n1"), node("n2"), limits=limits)
    tasks = [task(f"t{i}", seq=i, semaphore="gpu-lab") for i in range(3)]
    plan = _plan(v, tasks)
    assert len(plan.placements) == 2
    (u,) = plan.unplaced
    assert (u.task_id, u.blocked_by, u.status, dict(u.reason_summary)) == ("t2", blocked, Status.NOT_NOW, {})


def test_limits_count_running_tasks() -> None:
    v = view(node("n1", running=[running("r", "n1", workflow="wf")]), limits=ConcurrencyLimits(per_workflow={"wf": 1}))
    (u,) = _plan(v, [task("t")]).unplaced
    assert u.blocked_by == "workflow wf cap 1/1"


def test_excluded_nodes_are_avoided_per_task() -> None:
    v = view(node("used", running=[running("r", "used", resources=res(2, 4))]), node("empty"))
    plan = _plan(v, [task("a", excluded=["used"]), task("b", seq=1)])
    assert _where(plan) == {"a": "empty", "b": "used"}
    (u,) = _plan(v, [task("c", excluded=["used", "empty"])]).unplaced
    assert dict(u.reason_summary) == {"excluded for this task": 2}
    assert u.status is Status.NEVER


def test_excluded_task_finds_a_node_outside_the_candidates() -> None:
    nodes = [node(f"n{i}", running=[running(f"r{i}", f"n{i}", resources=res(1 + i % 3, 1))]) for i in range(12)]
    excluded = [f"n{i}" for i in range(11)]
    plan = _plan(view(*nodes), [task("t", excluded=excluded)], max_candidates=2)
    assert _where(plan) == {"t": "n11"}


def test_task_cap_per_node() -> None:
    v = view(node("n1", max_tasks=1), node("n2"), limits=ConcurrencyLimits(per_node=2))
    plan = _plan(v, [task(f"t{i}", seq=i) for i in range(4)])
    assert sorted(_where(plan).values()) == ["n1", "n2", "n2"]
    assert dict(plan.unplaced[0].reason_summary) == {"task cap reached": 2}


def test_tasks_of_a_class_share_work() -> None:
    v = view(*(node(f"n{i}", cpu=8, slots=8) for i in range(100)))
    plan = _plan(v, [task(f"t{i}", seq=i) for i in range(700)])
    assert len(plan.placements) == 700
    assert plan.stats["classes"] == 1
    assert plan.stats["class_checks"] <= 100
    assert plan.stats["cycle_checks"] < 3 * 700
    per_node = sorted(list(_where(plan).values()).count(f"n{i}") for i in range(100))
    assert per_node == [0] * 12 + [4] + [8] * 87  # binpack: whole nodes filled, one partly


def test_a_full_cluster_is_not_walked_per_task() -> None:
    nodes = [node(f"n{i}", cpu=2, slots=2, running=[running(f"r{i}", f"n{i}", resources=res(2, 1))])
             for i in range(500)]
    plan = _plan(view(*nodes, node("free", cpu=64, mem_gi=128, slots=64)), [task(f"t{i}", seq=i) for i in range(100)])
    assert len(plan.placements) == 64
    assert plan.stats["class_checks"] + plan.stats["cycle_checks"] < 400
    assert dict(plan.unplaced[0].reason_summary) == {"cpu exhausted": 501}


def test_validation() -> None:
    with pytest.raises(ValidationError, match="max_candidates"):
        _plan(view(node("n1")), [], max_candidates=0)
    with pytest.raises(ValidationError, match="more than once"):
        _plan(view(node("n1")), [task("a"), task("a", seq=1)])
    assert default_candidates(0) == 2 and default_candidates(1000) == 10 and default_candidates(10_000) == 14


# -- plugin scopes -------------------------------------------------------------------------------


class _Affinity:
    """TASK scorer: a workflow likes the node named after it (as topology scorers will)."""

    name = "affinity"
    scope = Scope.TASK

    def score(self, task: TaskRequest, node: NodeView, cycle: CycleState) -> float:
        return 100.0 if node.labels.get("wf") == task.workflow_id else 0.0

    def nominate(self, task: TaskRequest, cycle: CycleState) -> list[str]:
        return [n.id for n in cycle.view.nodes if n.labels.get("wf") == task.workflow_id]


class _OnePerZone:
    """TASK filter reading other nodes' tallies: at most one task of a workflow per zone."""

    name = "one_per_zone"
    scope = Scope.TASK

    def check(self, task: TaskRequest, node: NodeView, cycle: CycleState) -> Verdict:
        zone = node.labels.get("zone")
        for other in cycle.view.nodes:
            if other.labels.get("zone") == zone and any(
                t.workflow_id == task.workflow_id for t in cycle.placed_on(other.id)
            ):
                return Verdict(Status.NOT_NOW, self.name, f"zone {zone} already runs {task.workflow_id}",
                               "zone already has one")
        return PASS


class _Domain:
    """CLASS filter that reads the task's domain and says so."""

    name = "domain_match"
    scope = Scope.CLASS
    task_fields = ("domain",)
    calls = 0

    def check(self, task: TaskRequest, node: NodeView, cycle: CycleState) -> Verdict:
        _Domain.calls += 1
        if node.domain == task.domain:
            return PASS
        return Verdict(Status.NEVER, self.name, f"node belongs to {node.domain}", "other domain")


def _with(*extra_filters: object, scorers: tuple[WeightedScorer, ...] = ()) -> Profile:
    base = default_profile()
    return Profile("test", (*base.filters, *extra_filters), (*base.scorers, *scorers), base.gates)  # type: ignore[arg-type]


def test_task_scorer_is_asked_per_task() -> None:
    v = view(*(node(f"n{i}", labels={"wf": f"w{i}"}) for i in range(4)))
    profile = _with(scorers=(WeightedScorer(_Affinity(), 10),))
    plan = _plan(v, [task(f"t{i}", seq=i, workflow=f"w{i}") for i in range(4)], profile)
    assert _where(plan) == {f"t{i}": f"n{i}" for i in range(4)}


def test_task_filter_can_read_other_nodes() -> None:
    v = view(*(node(f"n{i}", labels={"zone": "ab"[i % 2]}) for i in range(6)))
    plan = _plan(v, [task(f"t{i}", seq=i) for i in range(3)], _with(_OnePerZone()))
    zones = sorted("ab"[int(p.node_id[1:]) % 2] for p in plan.placements)
    assert zones == ["a", "b"]
    (u,) = plan.unplaced
    assert u.task_id == "t2"
    assert dict(u.reason_summary) == {"zone already has one": 6}
    assert u.status is Status.NOT_NOW


def test_class_filter_declaring_its_fields_is_asked_once_per_group() -> None:
    _Domain.calls = 0
    v = view(*(node(f"n{i}", domain="acme" if i % 2 else "globex") for i in range(10)))
    tasks = [task(f"t{i}", seq=i, resources=res(1 + i % 3, 1), domain="acme") for i in range(30)]
    plan = _plan(v, tasks, _with(_Domain()))
    assert all(p.node_id in {f"n{i}" for i in range(1, 10, 2)} for p in plan.placements)
    assert plan.stats["classes"] == 3
    assert _Domain.calls <= 10  # three resource classes share one group: one call per node


def test_a_plugin_that_does_not_say_what_it_reads_gets_the_safe_key() -> None:
    class Quiet:
        name = "quiet"
        scope = Scope.CYCLE

        def check(self, task: TaskRequest, node: NodeView, cycle: CycleState) -> Verdict:
            return PASS

    tasks = [task(f"t{i}", seq=i, domain="acme" if i % 2 else "globex") for i in range(6)]
    plan = _plan(view(node("n1")), tasks, _with(Quiet()))
    assert plan.stats["classes"] == 2  # the safe key includes the domain


def test_hashable_key_for_mapping_fields() -> None:
    from polyfabric.scheduling import class_key_function

    key = class_key_function(["constraints", "resources"])
    a = key(task("a", constraints={"x": "1", "y": "2"}))
    b = key(task("b", constraints={"y": "2", "x": "1"}))
    assert a == b and isinstance(a, Hashable)
    with pytest.raises(ValidationError, match="do not exist: nope"):
        class_key_function(["nope"])


def test_error_verdicts_refuse_the_node_and_say_why() -> None:
    class Broken:
        name = "broken"
        scope = Scope.CLASS
        task_fields = ()

        def check(self, task: TaskRequest, node: NodeView, cycle: CycleState) -> Verdict:
            if node.id == "bad":
                return Verdict(Status.ERROR, self.name, "label 'arch' is not a string", "plugin error: broken")
            return PASS

    v = view(node("bad"), node("good", cpu=1))
    plan = _plan(v, [task("a"), task("b", seq=1)], _with(Broken()))
    assert _where(plan) == {"a": "good"}
    (u,) = plan.unplaced
    assert dict(u.reason_summary) == {"plugin error: broken": 1, "cpu exhausted": 1}
    assert u.status is Status.NOT_NOW


def test_a_custom_gate_blocks_before_any_node_is_asked() -> None:
    class Quota:
        name = "quota"

        def admit(self, task: TaskRequest, cycle: CycleState) -> Verdict:
            if task.domain == "globex":
                return Verdict(Status.NEVER, self.name, "domain globex has no quota here", "no quota")
            return PASS

    base = default_profile()
    profile = Profile("q", base.filters, base.scorers, (*base.gates, Quota()))
    plan = _plan(view(node("n1")), [task("a", domain="globex"), task("b", seq=1)], profile)
    assert _where(plan) == {"b": "n1"}
    (u,) = plan.unplaced
    assert (u.blocked_by, u.status, plan.stats["classes"]) == ("domain globex has no quota here", Status.NEVER, 1)


def test_nominated_nodes_must_still_pass_the_filters() -> None:
    class Likes:
        name = "likes"
        scope = Scope.TASK

        def score(self, task: TaskRequest, node: NodeView, cycle: CycleState) -> float:
            return 100.0 if node.id in ("full", "far") else 0.0

        def nominate(self, task: TaskRequest, cycle: CycleState) -> list[str]:
            return ["full", "far", "nowhere"]

    nodes = [node("full", cpu=1, running=[running("r", "full")]), node("far", labels={"zone": "b"})]
    nodes += [node(f"n{i}", labels={"zone": "a"}) for i in range(6)]
    profile = _with(scorers=(WeightedScorer(Likes(), 10),))
    plan = _plan(view(*nodes), [task("t", constraints={"zone": "a"}), task("u", seq=1)], profile)
    assert _where(plan)["t"].startswith("n")  # 'full' is full, 'far' is in the wrong zone
    assert _where(plan)["u"] == "far"


def test_stats_show_the_work_done() -> None:
    plan = _plan(view(*(node(f"n{i}") for i in range(10))), [task(f"t{i}", seq=i) for i in range(20)])
    assert set(plan.stats) >= {"tasks", "classes", "nodes", "usable_nodes", "class_checks", "cycle_checks",
                               "explained_nodes", "preemption_searches", "placements", "preemptions", "unplaced"}
    assert (plan.stats["tasks"], plan.stats["placements"], plan.stats["nodes"]) == (20, 20, 10)


def test_plugins_get_the_callers_clock() -> None:
    seen: list[float] = []

    class Clocked:
        name = "clocked"
        scope = Scope.NODE

        def check(self, task: TaskRequest, node: NodeView, cycle: CycleState) -> Verdict:
            seen.append(cycle.now)
            return PASS

    _plan(view(node("n1")), [task("t")], _with(Clocked()), now=1234.5)
    assert seen == [1234.5]
