"""The workflow engine: random DAGs driven by random outcomes, plus worked examples."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from polyfabric.domain.errors import Conflict, InternalFault, ValidationError
from polyfabric.domain.jobs import WorkflowState
from polyfabric.domain.task_states import TERMINAL, TaskState
from polyfabric.workflow.engine import (
    Cancel,
    CancelTasks,
    EnqueueTask,
    FailTask,
    InstanceRecord,
    Pause,
    PriorityChanged,
    Resume,
    RetryFailed,
    RunFlags,
    SetPriority,
    SkipTask,
    Started,
    TaskFinished,
    TaskPreempted,
    WorkflowFinished,
    WorkflowRun,
    instance_key,
    parse_instance_key,
)
from polyfabric.workflow.spec import parse_workflow

S = TaskState


def make(tasks: dict[str, dict[str, Any]], **top: Any) -> WorkflowRun:
    doc = {"name": "w", "tasks": tasks, **top}
    return WorkflowRun(parse_workflow(doc))


def enqueued(commands: list[Any]) -> list[str]:
    return [c.instance.key for c in commands if isinstance(c, EnqueueTask)]


def by_key(commands: list[Any]) -> dict[str, Any]:
    return {c.instance.key: c.instance for c in commands if isinstance(c, EnqueueTask)}


def finished(commands: list[Any]) -> WorkflowFinished | None:
    found = [c for c in commands if isinstance(c, WorkflowFinished)]
    assert len(found) <= 1
    return found[0] if found else None


def ok(key: str, attempt: int = 1, result: Any = None) -> TaskFinished:
    return TaskFinished(key, attempt, S.SUCCEEDED, result)


def fail(key: str, attempt: int = 1, error: str = "boom") -> TaskFinished:
    return TaskFinished(key, attempt, S.FAILED, None, error)


# =================================================================================================
# The property-based harness
# =================================================================================================


class Harness:
    """Drives a run, mirrors what it was told, and checks every batch of commands."""

    def __init__(self, doc: dict[str, Any]) -> None:
        self.doc = doc
        self.spec = parse_workflow(doc)
        self.run = WorkflowRun(self.spec)
        self.twin: WorkflowRun | None = None
        self.now = 0.0
        self.inflight: dict[str, int] = {}  # key -> attempt
        self.attempts: dict[str, int] = {}  # key -> last attempt handed out
        self.seen: set[tuple[str, int]] = set()
        self.finish_count = 0
        self.persisted: dict[str, InstanceRecord] = {}
        self.flags = RunFlags()
        self.paused = False
        self.cancelled = False
        self.skips: set[str] = set()

    # -- driving ---------------------------------------------------------------------------------

    def send(self, event: Any) -> list[Any]:
        self.now += 1.0
        commands = self.run.handle(event, self.now)
        if self.twin is not None:
            assert self.twin.handle(event, self.now) == commands
            assert self.twin.snapshot() == self.run.snapshot()
        if isinstance(event, Pause) and not self.run.finished:
            self.paused = True
        if isinstance(event, Resume):
            self.paused = False
        if isinstance(event, Cancel):
            self.cancelled = self.run.cancelled
        if isinstance(event, RetryFailed):
            self.cancelled = False
            self.skips.clear()  # a retried run may skip the same tasks again
        if isinstance(event, TaskFinished | TaskPreempted) and self.inflight.get(event.key) == event.attempt:
            del self.inflight[event.key]
        self.check(event, commands)
        self.persist()
        return commands

    def fork(self) -> None:
        """From here on, a twin restored from the snapshot must behave identically."""
        snap = self.run.snapshot()
        self.twin = WorkflowRun.restore(self.spec, None, snap.instances, snap.flags)
        assert self.twin.snapshot() == snap
        assert self.twin.inflight == self.run.inflight
        assert self.twin.state == self.run.state

    def persist(self) -> None:
        changes = self.run.drain_changes()
        for key in changes.deleted:
            self.persisted.pop(key, None)
            self.attempts.pop(key, None)  # a re-created instance counts attempts afresh
            self.seen = {(k, a) for k, a in self.seen if k != key}
        for record in changes.records:
            self.persisted[record.key] = record
        self.flags = changes.flags
        snap = self.run.snapshot()
        # persisting only what changed reproduces the full snapshot
        assert {r.key: r for r in snap.instances} == self.persisted
        assert snap.flags == self.flags

    # -- checking --------------------------------------------------------------------------------

    def deps_ok(self, name: str) -> bool:
        task = self.spec.tasks[name]
        statuses = [self.run.task_status(d) for d in task.depends_on]
        assert all(s in TERMINAL for s in statuses), (name, statuses)
        if task.trigger == "all_success":
            return all(s is S.SUCCEEDED for s in statuses)
        if task.trigger == "one_success":
            return not statuses or any(s is S.SUCCEEDED for s in statuses)
        return True

    def when_ok(self, name: str) -> bool:
        when = self.spec.tasks[name].when
        if when is None or when == "true":
            return True
        if when == "false":
            return False
        dep, expected = when.removeprefix("tasks.").split(".status == ")
        return self.run.task_status(dep).value == expected.strip("'")

    def check(self, event: Any, commands: list[Any]) -> None:
        for command in commands:
            if isinstance(command, EnqueueTask):
                inst = command.instance
                assert not self.paused and not self.cancelled, "released while paused or cancelled"
                assert (inst.key, inst.attempt) not in self.seen, "an attempt was enqueued twice"
                assert inst.attempt == self.attempts.get(inst.key, 0) + 1
                self.seen.add((inst.key, inst.attempt))
                self.attempts[inst.key] = inst.attempt
                assert inst.key not in self.inflight
                self.inflight[inst.key] = inst.attempt
                assert self.deps_ok(inst.task), f"{inst.key} enqueued against its trigger rule"
                assert self.when_ok(inst.task)
                assert inst.not_before >= self.now or inst.attempt > 1
                name, index = parse_instance_key(inst.key)
                assert name == inst.task and index == inst.index
                if index is not None:
                    assert inst.command is not None and inst.command[-1] == str(self.item(name, index))
            elif isinstance(command, SkipTask):
                assert command.key not in self.skips
                self.skips.add(command.key)
                assert not (self.deps_ok(command.key) and self.when_ok(command.key)), command
            elif isinstance(command, CancelTasks):
                assert set(command.keys) <= set(self.inflight)
            elif isinstance(command, WorkflowFinished):
                self.finish_count += 1
                self.check_final(command)
        self.check_caps()

    def item(self, name: str, index: int) -> Any:
        return self.spec.tasks[name].foreach[index]  # type: ignore[index]

    def check_caps(self) -> None:
        per_task = Counter(parse_instance_key(k)[0] for k in self.inflight)
        for name, count in per_task.items():
            cap = self.spec.tasks[name].max_parallel
            assert cap is None or count <= cap, f"{name}: {count} in flight, cap {cap}"
            assert self.run.task_inflight(name) == count
        cap = self.spec.max_parallel
        assert cap is None or len(self.inflight) <= cap
        assert self.run.inflight == len(self.inflight)
        assert sorted(self.run.in_flight()) == sorted(self.inflight)

    def check_final(self, command: WorkflowFinished) -> None:
        assert self.run.finished
        assert not self.inflight
        statuses = {name: self.run.task_status(name) for name in self.spec.tasks}
        assert all(s in TERMINAL for s in statuses.values()), statuses
        values = set(statuses.values())
        if self.run.cancelled:
            expected = WorkflowState.CANCELLED
        elif S.FAILED in values:
            expected = WorkflowState.FAILED
        elif S.CANCELLED in values:
            expected = WorkflowState.CANCELLED
        else:
            expected = WorkflowState.SUCCEEDED
        assert command.status is expected
        for name, status in statuses.items():
            records = [self.run.instance(k) for k in self.run.instance_keys(name)]
            item_states = {r.status for r in records if r is not None}
            if status is S.SUCCEEDED:
                assert item_states <= {S.SUCCEEDED}
                if self.spec.tasks[name].is_foreach:
                    assert self.run.task_result(name) == [r.result for r in records if r]
            elif status is S.FAILED:
                assert S.FAILED in item_states or not records or self.run.instance(name).error  # type: ignore[union-attr]

    def settle_check(self) -> None:
        assert self.run.finished, "the run stopped with nothing in flight but is not finished"
        assert self.finish_count >= 1


@st.composite
def workflows(draw: st.DrawFn) -> dict[str, Any]:
    n = draw(st.integers(1, 6))
    names = [f"t{i}" for i in range(n)]
    tasks: dict[str, dict[str, Any]] = {}
    for i, name in enumerate(names):
        deps = draw(st.lists(st.sampled_from(names[:i]), unique=True, max_size=3)) if i else []
        body: dict[str, Any] = {"command": ["run", name], "depends_on": deps}
        body["trigger"] = draw(st.sampled_from(["all_success", "all_done", "one_success"]))
        if draw(st.booleans()):
            body["foreach"] = [f"i{j}" for j in range(draw(st.integers(0, 4)))]
            body["command"] = ["run", name, "{{ item }}"]
            if draw(st.booleans()):
                body["max_parallel"] = draw(st.integers(1, 3))
        body["retries"] = {"limit": draw(st.integers(0, 2)), "backoff": draw(st.sampled_from([0, 1, 5]))}
        choice = draw(st.integers(0, 7))
        if choice == 0:
            body["when"] = "false"
        elif choice == 1:
            body["when"] = "true"
        elif choice == 2 and deps:
            body["when"] = f"tasks.{deps[0]}.status == 'succeeded'"
        if draw(st.integers(0, 3)) == 0:
            body["priority"] = draw(st.integers(-2, 2))
        tasks[name] = body
    order = draw(st.permutations(names))
    doc: dict[str, Any] = {"name": "random", "tasks": {k: tasks[k] for k in order}}
    cap = draw(st.none() | st.integers(1, 4))
    if cap is not None:
        doc["max_parallel"] = cap
    return doc


OUTCOMES = st.sampled_from(["ok", "ok", "ok", "fail", "fail", "cancel", "preempt"])
SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def pick_event(data: st.DataObject, h: Harness, step: int) -> Any:
    key = data.draw(st.sampled_from(sorted(h.inflight)), label="key")
    attempt = h.inflight[key]
    outcome = data.draw(OUTCOMES, label="outcome")
    if outcome == "preempt" and step < 60:
        return TaskPreempted(key, attempt)
    if outcome in ("fail", "preempt"):
        return fail(key, attempt, error=f"{key} failed")
    if outcome == "cancel":
        return TaskFinished(key, attempt, S.CANCELLED)
    return ok(key, attempt, result={"key": key, "attempt": attempt})


@SETTINGS
@given(doc=workflows(), data=st.data())
def test_random_dags_run_to_completion_by_the_rules(doc: dict[str, Any], data: st.DataObject) -> None:
    h = Harness(doc)
    fork_at = data.draw(st.integers(-1, 30), label="fork_at")
    if fork_at == -1:
        h.fork()  # restored before it even started
    h.send(Started())
    step = 0
    while h.inflight:
        if step == fork_at:
            h.fork()
        if data.draw(st.integers(0, 9), label="stale") == 0:
            # a duplicate or stale report changes nothing
            key = sorted(h.inflight)[0]
            before = h.run.snapshot()
            assert h.send(ok(key, h.inflight[key] + 1)) == []
            assert h.run.snapshot() == before
        h.send(pick_event(data, h, step))
        step += 1
        assert step < 500
    h.settle_check()
    assert h.finish_count == 1
    # restoring the finished run gives the same run, and it emits nothing more
    snap = h.run.snapshot()
    again = WorkflowRun.restore(h.spec, None, snap.instances, snap.flags)
    assert again.snapshot() == snap and again.finished and again.state == h.run.state


@SETTINGS
@given(doc=workflows(), data=st.data())
def test_random_operator_events(doc: dict[str, Any], data: st.DataObject) -> None:
    """Pause, resume, cancel, priority changes and retry-failed mixed into random runs."""
    h = Harness(doc)
    fork_at = data.draw(st.integers(-1, 30), label="fork_at")
    retries_left = 2
    if fork_at == -1:
        h.send(Pause())
        h.fork()  # restored before it started: nothing may be released early
        assert h.send(SetPriority(1)) == []
        h.send(Resume())
    h.send(Started())
    step = 0
    while True:
        if step == fork_at:
            h.fork()
        step += 1
        assert step < 800
        if not h.inflight:
            if h.paused and not h.run.finished:
                h.send(Resume())
                continue
            h.settle_check()
            failed_or_cancelled = any(
                h.run.task_status(n) in (S.FAILED, S.CANCELLED) for n in h.spec.tasks
            )
            if retries_left and failed_or_cancelled and data.draw(st.booleans(), label="retry"):
                retries_left -= 1
                before = h.finish_count
                h.send(RetryFailed())
                assert h.finish_count in (before, before + 1)
                continue
            break
        op = data.draw(st.integers(0, 19), label="op")
        if op == 0:
            h.send(Pause())
        elif op in (1, 2):
            h.send(Resume())
        elif op == 3:
            commands = h.send(Cancel())
            assert all(not isinstance(c, EnqueueTask) for c in commands)
        elif op == 4:
            priority = data.draw(st.integers(-3, 3), label="priority")
            commands = h.send(SetPriority(priority))
            for c in commands:
                assert isinstance(c, PriorityChanged) and c.priority == priority
        else:
            h.send(pick_event(data, h, step))
    assert h.run.finished


# =================================================================================================
# Worked examples
# =================================================================================================


def test_linear_run_and_result() -> None:
    run = make({"a": {"command": ["a"]}, "b": {"command": ["b"], "depends_on": ["a"]}})
    assert run.state is WorkflowState.PENDING
    first = run.handle(Started(), 0.0)
    assert enqueued(first) == ["a"]
    inst = by_key(first)["a"]
    assert (inst.attempt, inst.not_before, inst.index, inst.task) == (1, 0.0, None, "a")
    assert run.state is WorkflowState.RUNNING
    assert enqueued(run.handle(ok("a", result=41), 1.0)) == ["b"]
    out = run.handle(ok("b", result=42), 2.0)
    assert out == [WorkflowFinished(WorkflowState.SUCCEEDED, {"b": 42})]
    assert run.state is WorkflowState.SUCCEEDED
    assert run.handle(Started(), 3.0) == []


def test_rendering_uses_params_item_and_upstream_results() -> None:
    run = make(
        {
            "split": {"command": ["split", "{{ params.n }}"]},
            "work": {
                "depends_on": ["split"],
                "foreach": "tasks.split.result",
                "function": "examples.stats:process",
                "args": {"shard": "{{ item }}", "label": "s{{ item }}", "all": "{{ tasks.split.result }}"},
                "env": {"SHARD": "{{ item }}", "N": "{{ params.n }}"},
                "resources": {"cpu": 2, "memory": "1Gi"},
                "timeout": "1m",
                "semaphore": "db",
                "workdir": "/w",
            },
        },
        params={"n": 2},
    )
    assert by_key(run.handle(Started(), 0.0))["split"].command == ("split", "2")
    out = by_key(run.handle(ok("split", result=[5, 6]), 1.0))
    work1 = out["work[1]"]
    assert work1.function == "examples.stats:process" and work1.command is None
    assert work1.args == {"shard": 6, "label": "s6", "all": [5, 6]}
    assert work1.env == {"SHARD": "6", "N": "2"}
    assert work1.resources.cpu_millis == 2000 and work1.resources.slots == 1
    assert (work1.timeout_s, work1.semaphore, work1.workdir) == (60.0, "db", "/w")


def test_retries_back_off_and_then_fail_downstream_is_skipped() -> None:
    run = make(
        {
            "a": {"command": ["a"], "retries": {"limit": 2, "backoff": "10s", "factor": 3}},
            "b": {"command": ["b"], "depends_on": ["a"]},
        }
    )
    run.handle(Started(), 0.0)
    retry = by_key(run.handle(fail("a", 1), 100.0))["a"]
    assert (retry.attempt, retry.not_before) == (2, 110.0)
    assert run.instance("a").failures == 1  # type: ignore[union-attr]
    retry = by_key(run.handle(fail("a", 2), 200.0))["a"]
    assert (retry.attempt, retry.not_before) == (3, 230.0)
    out = run.handle(fail("a", 3, error="still broken"), 300.0)
    assert out == [
        SkipTask("b", "dependency 'a' failed (trigger all_success)"),
        WorkflowFinished(WorkflowState.FAILED, {}),
    ]
    record = run.instance("a")
    assert record is not None and record.status is S.FAILED and record.error == "still broken"


def test_preemption_does_not_use_up_a_retry() -> None:
    run = make({"a": {"command": ["a"], "retries": 0}})
    run.handle(Started(), 0.0)
    again = by_key(run.handle(TaskPreempted("a", 1, "make room"), 5.0))["a"]
    assert (again.attempt, again.not_before) == (2, 5.0)
    again = by_key(run.handle(TaskPreempted("a", 2), 6.0))["a"]
    assert again.attempt == 3
    assert run.instance("a").failures == 0  # type: ignore[union-attr]
    assert finished(run.handle(ok("a", 3), 7.0)) == WorkflowFinished(WorkflowState.SUCCEEDED, {"a": None})


def test_stale_reports_are_ignored() -> None:
    run = make({"a": {"command": ["a"], "retries": 1}})
    run.handle(Started(), 0.0)
    run.handle(fail("a", 1), 1.0)
    before = run.snapshot()
    assert run.handle(ok("a", 1), 2.0) == []  # attempt 1 already failed
    assert run.handle(ok("nope", 1), 2.0) == []
    assert run.handle(TaskPreempted("a", 7), 2.0) == []
    assert run.snapshot() == before


def test_task_finished_refuses_other_states() -> None:
    with pytest.raises(ValidationError, match="succeeded, failed or cancelled"):
        TaskFinished("a", 1, S.RUNNING)
    assert TaskFinished("a", 1, "failed").status is S.FAILED  # type: ignore[arg-type]


def test_pause_holds_releases_and_resume_lets_them_go() -> None:
    run = make({"w": {"command": ["w", "{{ item }}"], "foreach": [0, 1, 2, 3], "max_parallel": 2}})
    assert enqueued(run.handle(Started(), 0.0)) == ["w[0]", "w[1]"]
    assert run.handle(Pause(), 1.0) == []
    assert run.state is WorkflowState.PAUSED
    assert run.handle(ok("w[0]"), 2.0) == []  # paused: nothing new
    assert enqueued(run.handle(Resume(), 3.0)) == ["w[2]"]
    assert enqueued(run.handle(ok("w[1]"), 4.0)) == ["w[3]"]


def test_pause_before_start_and_retry_while_paused() -> None:
    run = make({"a": {"command": ["a"], "retries": 1}})
    run.handle(Pause(), 0.0)
    assert run.handle(Started(), 1.0) == []
    assert enqueued(run.handle(Resume(), 2.0)) == ["a"]
    run.handle(Pause(), 3.0)
    assert run.handle(fail("a"), 4.0) == []
    retry = by_key(run.handle(Resume(), 100.0))["a"]
    assert (retry.attempt, retry.not_before) == (2, 100.0)  # the backoff (5.0) is long past


def test_cancel_stops_queued_work_and_waits_for_in_flight() -> None:
    run = make(
        {
            "a": {"command": ["a", "{{ item }}"], "foreach": [1, 2, 3], "max_parallel": 2},
            "b": {"command": ["b"], "depends_on": ["a"]},
            "c": {"command": ["c"]},
        }
    )
    assert enqueued(run.handle(Started(), 0.0)) == ["a[0]", "a[1]", "c"]
    out = run.handle(Cancel("operator said so"), 1.0)
    assert out == [CancelTasks(("a[0]", "a[1]", "c"), "operator said so")]
    assert run.state is WorkflowState.CANCELLING
    assert run.task_status("b") is S.CANCELLED
    assert run.instance("a[2]").status is S.CANCELLED  # type: ignore[union-attr]
    assert run.handle(Cancel(), 1.5) == []
    assert run.handle(TaskFinished("a[0]", 1, S.CANCELLED), 2.0) == []
    assert run.handle(ok("c"), 2.5) == []  # a success that overtook the cancel is kept
    assert run.handle(TaskPreempted("a[1]", 1), 3.0) == [WorkflowFinished(WorkflowState.CANCELLED, {"c": None})]
    assert run.instance("c").status is S.SUCCEEDED  # type: ignore[union-attr]
    assert run.handle(Resume(), 4.0) == []


def test_cancel_before_start_finishes_at_once() -> None:
    run = make({"a": {"command": ["a"]}})
    assert run.handle(Cancel(), 0.0) == [WorkflowFinished(WorkflowState.CANCELLED, {})]
    assert run.handle(Started(), 1.0) == []


def test_retry_failed_reruns_failures_and_what_they_skipped_keeping_successes() -> None:
    run = make(
        {
            "a": {"command": ["a"]},
            "w": {"command": ["w", "{{ item }}"], "depends_on": ["a"], "foreach": "tasks.a.result"},
            "r": {"command": ["r", "{{ tasks.w.result }}"], "depends_on": ["w"]},
            "side": {"command": ["side"], "depends_on": ["a"]},
        }
    )
    run.handle(Started(), 0.0)
    assert enqueued(run.handle(ok("a", result=["x", "y", "z"]), 1.0)) == ["w[0]", "w[1]", "w[2]", "side"]
    run.handle(ok("w[0]", result=0), 2.0)
    run.handle(fail("w[1]"), 3.0)
    run.handle(ok("side"), 3.5)
    out = run.handle(ok("w[2]", result=2), 4.0)
    assert out == [
        SkipTask("r", "dependency 'w' failed (trigger all_success)"),
        WorkflowFinished(WorkflowState.FAILED, {"side": None}),
    ]
    with pytest.raises(Conflict):
        make({"a": {"command": ["a"]}}).handle(RetryFailed(), 0.0)  # nothing finished yet
    out = run.handle(RetryFailed(), 10.0)
    assert enqueued(out) == ["w[1]"]
    assert by_key(out)["w[1]"].attempt == 2
    assert run.task_status("w") is S.RUNNING and run.task_status("r") is S.WAITING
    assert run.instance("w[0]").status is S.SUCCEEDED  # type: ignore[union-attr]
    assert run.state is WorkflowState.RUNNING
    out = run.handle(ok("w[1]", 2, result=1), 11.0)
    assert by_key(out)["r"].command == ("r", "[0,1,2]")
    assert finished(run.handle(ok("r", result="done"), 12.0)) == WorkflowFinished(
        WorkflowState.SUCCEEDED, {"r": "done", "side": None}
    )
    with pytest.raises(Conflict, match="nothing to retry"):
        run.handle(RetryFailed(), 13.0)


def test_retry_failed_after_cancel_and_reexpansion_drops_extra_items() -> None:
    run = make(
        {
            "a": {"command": ["a"]},
            "w": {
                "command": ["w", "{{ item }}"],
                "depends_on": ["a"],
                "trigger": "all_done",
                "foreach": "tasks.a.status == 'succeeded' ? [1] : [1, 2, 3]",
            },
        }
    )
    run.handle(Started(), 0.0)
    run.drain_changes()
    assert enqueued(run.handle(fail("a"), 1.0)) == ["w[0]", "w[1]", "w[2]"]
    run.handle(ok("w[0]", result="one"), 2.0)
    run.handle(ok("w[1]"), 2.0)
    assert finished(run.handle(fail("w[2]"), 3.0)) is not None
    run.drain_changes()
    assert enqueued(run.handle(RetryFailed(), 4.0)) == ["a"]
    out = run.handle(ok("a", 2), 5.0)
    assert finished(out) == WorkflowFinished(WorkflowState.SUCCEEDED, {"w": ["one"]})  # w[0] kept
    changes = run.drain_changes()
    assert set(changes.deleted) == {"w[1]", "w[2]"}
    assert run.instance_keys("w") == ["w[0]"]


def test_fan_in_sees_results_in_item_order() -> None:
    run = make(
        {
            "w": {"command": ["w", "{{ item }}"], "foreach": [10, 20, 30, 40]},
            "sum": {"command": ["echo", "{{ tasks.w.result }}"], "depends_on": ["w"],
                    "when": "size(tasks.w.result) == 4"},
        }
    )
    run.handle(Started(), 0.0)
    for i in (3, 1, 0):
        assert run.handle(ok(f"w[{i}]", result=i * 100), float(i)) == []
    out = run.handle(ok("w[2]", result=200), 9.0)
    assert by_key(out)["sum"].command == ("echo", "[0,100,200,300]")
    assert run.task_result("w") == [0, 100, 200, 300]


def test_empty_foreach_succeeds_with_an_empty_list() -> None:
    run = make(
        {
            "a": {"command": ["a"]},
            "w": {"command": ["w"], "depends_on": ["a"], "foreach": "tasks.a.result"},
            "r": {"command": ["r", "{{ tasks.w.result }}"], "depends_on": ["w"]},
        }
    )
    run.handle(Started(), 0.0)
    out = run.handle(ok("a", result=[]), 1.0)
    assert by_key(out)["r"].command == ("r", "[]")
    assert run.task_status("w") is S.SUCCEEDED and run.task_result("w") == []


def test_expression_errors_fail_the_task_without_retries() -> None:
    run = make(
        {
            "a": {"command": ["a"]},
            "w": {"command": ["w"], "depends_on": ["a"], "foreach": "tasks.a.result", "retries": 3},
            "v": {"command": ["v"], "depends_on": ["a"], "when": "tasks.a.result.ok", "retries": 3},
            "x": {"command": ["x", "{{ item.name }}"], "depends_on": ["a"], "foreach": [1, {"name": "n"}]},
            "cleanup": {"command": ["c"], "depends_on": ["w", "v", "x"], "trigger": "all_done"},
        }
    )
    run.handle(Started(), 0.0)
    out = run.handle(ok("a", result=5), 1.0)
    fails = {c.key: c.error for c in out if isinstance(c, FailTask)}
    assert fails["w"].startswith("foreach: 'tasks.a.result' must give a list, got 5")
    assert fails["v"].startswith("when: 'tasks.a.result.ok': cannot select 'ok'")
    assert fails["x[0]"].startswith("rendering failed: 'item.name': cannot select 'name' from a int")
    assert enqueued(out) == ["x[1]"]
    assert by_key(out)["x[1]"].command == ("x", "n")
    out = run.handle(ok("x[1]"), 2.0)
    assert enqueued(out) == ["cleanup"]  # all_done runs after failures
    assert finished(run.handle(ok("cleanup"), 3.0)) == WorkflowFinished(WorkflowState.FAILED, {"cleanup": None})
    assert run.task_result("w") == [] and run.task_status("x") is S.FAILED


def test_trigger_rules_and_when() -> None:
    run = make(
        {
            "good": {"command": ["g"]},
            "bad": {"command": ["b"]},
            "all_ok": {"command": ["x"], "depends_on": ["good", "bad"]},
            "any_ok": {"command": ["x"], "depends_on": ["good", "bad"], "trigger": "one_success"},
            "done": {"command": ["x"], "depends_on": ["good", "bad"], "trigger": "all_done"},
            "never": {"command": ["x"], "depends_on": ["good"], "when": "tasks.good.result > 5"},
            "after_skip": {"command": ["x"], "depends_on": ["never"], "trigger": "one_success"},
            "after_skip_done": {"command": ["x"], "depends_on": ["never"], "trigger": "all_done"},
        }
    )
    run.handle(Started(), 0.0)
    run.handle(fail("bad"), 1.0)
    out = run.handle(ok("good", result=1), 2.0)
    skipped = [c.key for c in out if isinstance(c, SkipTask)]
    assert skipped == ["all_ok", "never", "after_skip"]
    assert enqueued(out) == ["any_ok", "done", "after_skip_done"]


def test_workflow_cap_and_priority_decide_release_order() -> None:
    run = make(
        {
            "low": {"command": ["l", "{{ item }}"], "foreach": [1, 2, 3]},
            "high": {"command": ["h", "{{ item }}"], "foreach": [1, 2], "priority": 5},
        },
        max_parallel=2,
    )
    out = run.handle(Started(), 0.0)
    assert enqueued(out) == ["high[0]", "high[1]"]
    assert [by_key(out)[k].priority for k in ("high[0]", "high[1]")] == [5, 5]
    assert enqueued(run.handle(ok("high[0]"), 1.0)) == ["low[0]"]
    out = run.handle(SetPriority(9), 2.0)
    assert out == [PriorityChanged(("low[0]",), 9)]
    assert run.priority == 9 and run.flags.priority == 9
    out = run.handle(ok("high[1]"), 3.0)
    assert by_key(out)["low[1]"].priority == 9
    with pytest.raises(ValidationError):
        run.handle(SetPriority("high"), 4.0)  # type: ignore[arg-type]


def test_restore_accepts_coordinator_substates_and_continues() -> None:
    spec = parse_workflow(
        {"name": "w", "tasks": {"a": {"command": ["a"]},
                                "w": {"command": ["w"], "foreach": [1, 2, 3], "max_parallel": 1,
                                      "depends_on": ["a"]}}}
    )
    run = WorkflowRun(spec)
    run.handle(Started(), 0.0)
    run.handle(ok("a", result=1), 1.0)
    snap = run.snapshot()
    # the coordinator recorded w[0] as leased, then running
    records = [r if r.key != "w[0]" else InstanceRecord(**{**_fields(r), "status": S.RUNNING})
               for r in snap.instances]
    again = WorkflowRun.restore(spec, None, records, snap.flags)
    assert again.inflight == 1 and again.task_status("w") is S.RUNNING
    assert enqueued(again.handle(ok("w[0]"), 2.0)) == ["w[1]"]


def _fields(record: InstanceRecord) -> dict[str, Any]:
    return {name: getattr(record, name) for name in InstanceRecord.__dataclass_fields__}


def test_restore_refuses_records_that_match_nothing() -> None:
    spec = parse_workflow({"name": "w", "tasks": {"a": {"command": ["a"]}}})
    for key in ("zzz", "a[0]", "a[", "a[01]"):
        with pytest.raises(InternalFault):
            WorkflowRun.restore(spec, None, [InstanceRecord(key, S.WAITING)], RunFlags())
    spec = parse_workflow({"name": "w", "tasks": {"a": {"command": ["a"], "foreach": [1, 2]}}})
    with pytest.raises(InternalFault, match=r"not 0\.\.n-1"):
        WorkflowRun.restore(spec, None, [InstanceRecord("a[1]", S.WAITING)], RunFlags())


def test_instance_keys() -> None:
    assert instance_key("split", None) == "split"
    assert instance_key("work", 3) == "work[3]"
    assert parse_instance_key("work[3]") == ("work", 3)
    assert parse_instance_key("split") == ("split", None)
    with pytest.raises(ValidationError):
        parse_instance_key("work[x]")


def test_unknown_task_name() -> None:
    with pytest.raises(ValidationError, match="no task 'zzz'"):
        make({"a": {"command": ["a"]}}).task_status("zzz")


# =================================================================================================
# Performance: handling must be O(affected tasks)
# =================================================================================================


def _fan_out(n: int, cap: int | None) -> tuple[WorkflowRun, float]:
    work: dict[str, Any] = {
        "depends_on": ["split"],
        "foreach": "tasks.split.result",
        "function": "examples.stats:process",
        "args": {"shard": "{{ item }}"},
    }
    if cap:
        work["max_parallel"] = cap
    run = make(
        {
            "split": {"command": ["split"]},
            "work": work,
            "report": {"depends_on": ["work"], "when": "size(tasks.work.result) > 0",
                       "command": ["sh", "-c", "echo {{ tasks.work.result }}"]},
        }
    )
    run.handle(Started(), 0.0)
    start = time.perf_counter()
    run.handle(ok("split", result=list(range(n))), 1.0)
    return run, time.perf_counter() - start


@pytest.mark.parametrize("cap", [None, 4])
def test_ten_thousand_items_finish_in_well_under_a_second(cap: int | None) -> None:
    n = 10_000
    run, _ = _fan_out(n, cap)
    start = time.perf_counter()
    released = 0
    for i in range(n):
        released += len(run.handle(ok(f"work[{i}]", result=i), 2.0))
    elapsed = time.perf_counter() - start
    assert run.task_status("work") is S.SUCCEEDED
    assert run.task_result("work") == list(range(n))
    assert enqueued(run.handle(ok("report"), 3.0)) == []
    assert run.finished
    assert elapsed < 1.0, f"{n} TaskFinished events took {elapsed:.3f} s"
