"""Each filter alone: what it lets through, what it refuses, and that the reason reads well."""

from __future__ import annotations

import pytest

from polyfabric.domain.node_states import NodeState
from polyfabric.scheduling import PASS, ConcurrencyLimits, Scope, Status, Verdict
from polyfabric.scheduling.filters import (
    CapacityFilter,
    ExcludedFilter,
    LabelsFilter,
    MaxTasksFilter,
    NodeStateFilter,
)

from .builders import cycle, node, res, running, task


class TestNodeState:
    def test_active_passes(self) -> None:
        n = node("n1")
        assert NodeStateFilter().check(task("t"), n, cycle(n)) is PASS

    @pytest.mark.parametrize("state", [s for s in NodeState if s is not NodeState.ACTIVE])
    def test_every_other_state_is_never_and_named(self, state: NodeState) -> None:
        n = node("n1", state=state)
        verdict = NodeStateFilter().check(task("t"), n, cycle(n))
        assert verdict.status is Status.NEVER
        assert verdict.plugin == "node_state"
        assert verdict.reason == f"node n1-name is {state}; only active nodes take new tasks"
        assert verdict.summary == f"not active ({state})"

    def test_scope_is_node(self) -> None:
        assert NodeStateFilter.scope is Scope.NODE


class TestCapacity:
    def test_fits(self) -> None:
        n = node("n1", cpu=4, mem_gi=8)
        assert CapacityFilter().check(task("t", resources=res(4, 8)), n, cycle(n)) is PASS

    def test_busy_node_is_not_now_with_the_numbers(self) -> None:
        n = node("n1", cpu=4, mem_gi=16, running=[running("r", "n1", resources=res(2.5, 1))])
        verdict = CapacityFilter().check(task("t", resources=res(2, 1)), n, cycle(n))
        assert verdict.status is Status.NOT_NOW
        assert verdict.reason == "needs 2 cpu, node has 1.5 free of 4"
        assert verdict.summary == "cpu exhausted"

    def test_every_short_dimension_is_named(self) -> None:
        n = node("n1", cpu=4, mem_gi=8, running=[running("r", "n1", resources=res(3, 6))])
        verdict = CapacityFilter().check(task("t", resources=res(2, 4)), n, cycle(n))
        assert verdict.reason == ("needs 2 cpu, node has 1 free of 4; "
                                  "needs 4.0Gi memory, node has 2.0Gi free of 8.0Gi")
        assert verdict.summary == "cpu exhausted"

    def test_too_small_is_never(self) -> None:
        n = node("n1", cpu=4)
        verdict = CapacityFilter().check(task("t", resources=res(8, 1)), n, cycle(n))
        assert verdict.status is Status.NEVER
        assert verdict.reason == "needs 8 cpu, node n1-name has only 4 in all"
        assert verdict.summary == "cpu capacity too small"

    def test_gpu_and_slot_reasons(self) -> None:
        n = node("n1", gpus=0, slots=1, running=[running("r", "n1", resources=res(0.5, 1))])
        gpu = CapacityFilter().check(task("t", resources=res(1, 1, gpus=1)), n, cycle(n))
        assert (gpu.status, gpu.summary) == (Status.NEVER, "gpu capacity too small")
        slot = CapacityFilter().check(task("t", resources=res(1, 1)), n, cycle(n))
        assert slot.status is Status.NOT_NOW
        assert slot.reason == "needs 1 slot, node has 0 free of 1"
        assert slot.summary == "slots exhausted"

    def test_counts_what_the_plan_already_took(self) -> None:
        n = node("n1", cpu=4)
        c = cycle(n)
        c.commit(task("a", resources=res(3, 1)), "n1")
        verdict = CapacityFilter().check(task("t", resources=res(2, 1)), n, c)
        assert verdict.status is Status.NOT_NOW
        assert verdict.reason == "needs 2 cpu, node has 1 free of 4"

    def test_declares_what_it_reads_and_requires(self) -> None:
        f = CapacityFilter()
        assert f.scope is Scope.CYCLE
        assert f.task_fields == ("resources",)
        assert f.requires(task("t", resources=res(2, 1))) == res(2, 1)


class TestLabels:
    def test_no_constraints_pass(self) -> None:
        n = node("n1")
        assert LabelsFilter().check(task("t"), n, cycle(n)) is PASS

    def test_matching_labels_pass(self) -> None:
        n = node("n1", labels={"zone": "eu", "arch": "arm64"})
        t = task("t", constraints={"zone": "eu", "arch": "arm64"})
        assert LabelsFilter().check(t, n, cycle(n)) is PASS

    def test_wrong_value(self) -> None:
        n = node("n1", labels={"zone": "us"})
        verdict = LabelsFilter().check(task("t", constraints={"zone": "eu"}), n, cycle(n))
        assert verdict.status is Status.NEVER
        assert verdict.reason == "node n1-name has zone=us, task needs zone=eu"
        assert verdict.summary == "missing label zone=eu"

    def test_missing_label(self) -> None:
        n = node("n1")
        verdict = LabelsFilter().check(task("t", constraints={"gpu": "h100"}), n, cycle(n))
        assert verdict.reason == "node n1-name has no label gpu (task needs gpu=h100)"


class TestExcluded:
    def test_other_nodes_pass(self) -> None:
        n = node("n1")
        assert ExcludedFilter().check(task("t", excluded=["n2"]), n, cycle(n)) is PASS

    def test_excluded_node_is_never(self) -> None:
        n = node("n1")
        verdict = ExcludedFilter().check(task("t", excluded=["n1"]), n, cycle(n))
        assert verdict.status is Status.NEVER
        assert verdict.reason == "node n1-name declined or failed task t before"
        assert verdict.summary == "excluded for this task"

    def test_is_asked_per_task(self) -> None:
        assert ExcludedFilter.scope is Scope.TASK


class TestMaxTasks:
    def test_no_cap_passes(self) -> None:
        n = node("n1", running=[running(f"r{i}", "n1", resources=res(0, 0, slots=0)) for i in range(50)])
        assert MaxTasksFilter().check(task("t"), n, cycle(n)) is PASS

    def test_node_cap(self) -> None:
        n = node("n1", max_tasks=2, running=[running("r1", "n1"), running("r2", "n1")])
        verdict = MaxTasksFilter().check(task("t"), n, cycle(n))
        assert verdict.status is Status.NOT_NOW
        assert verdict.reason == "node n1-name runs 2 of at most 2 tasks"
        assert verdict.summary == "task cap reached"

    def test_per_node_default_applies_without_own_cap(self) -> None:
        n = node("n1", running=[running("r1", "n1")])
        c = cycle(n, limits=ConcurrencyLimits(per_node=1))
        assert MaxTasksFilter().check(task("t"), n, c).status is Status.NOT_NOW
        own = node("n2", max_tasks=3, running=[running("r2", "n2")])
        assert MaxTasksFilter().check(task("t"), own, cycle(own, limits=ConcurrencyLimits(per_node=1))) is PASS

    def test_counts_placements_of_the_plan(self) -> None:
        n = node("n1", max_tasks=1)
        c = cycle(n)
        assert MaxTasksFilter().check(task("t"), n, c) is PASS
        c.commit(task("a"), "n1")
        assert MaxTasksFilter().check(task("t"), n, c).status is Status.NOT_NOW

    def test_zero_cap_is_never(self) -> None:
        n = node("n1", max_tasks=0)
        verdict = MaxTasksFilter().check(task("t"), n, cycle(n))
        assert (verdict.status, verdict.reason) == (Status.NEVER, "node n1-name takes no tasks (max 0)")


class TestVerdict:
    def test_lazy_detail_is_built_once_on_read(self) -> None:
        calls = []

        def detail() -> str:
            calls.append(1)
            return "built"

        verdict = Verdict(Status.NOT_NOW, "p", summary="s", detail=detail)
        assert calls == []
        assert verdict.reason == "built"
        assert verdict.reason == "built"
        assert calls == [1]
        assert verdict == Verdict(Status.NOT_NOW, "p", "built", "s")

    def test_is_immutable(self) -> None:
        with pytest.raises(AttributeError):
            PASS.status = Status.NEVER  # type: ignore[misc]

    def test_key_falls_back_to_reason_then_plugin(self) -> None:
        assert Verdict(Status.NEVER, "p", "why").key == "why"
        assert Verdict(Status.NEVER, "p").key == "p: never"
        assert Verdict(Status.NEVER, "p", "why", "short").key == "short"
