"""The attempt lifecycle: slots are never exceeded, duplicates are ignored, cancels and shutdown, cleanup."""

from __future__ import annotations

import os
import sys

import psutil
import pytest

from polyfabric.domain.resources import Resources
from polyfabric.testing import wait_until

__all__: list[str] = []

pytestmark = pytest.mark.skipif(os.name != "posix", reason="tasks run as POSIX process groups")

F = "pf_test_functions"


def test_never_more_attempts_than_slots_and_the_rest_is_rejected(runner_factory, make_lease, view, tmp_path):
    runner = runner_factory(slots=2)
    marks = tmp_path / "marks"
    span = ("import sys, time; start = time.time(); time.sleep(0.2); "
            f"open({str(marks)!r}, 'a').write(f'{{start}} {{time.time()}}\\n')")
    command_leases = [make_lease([sys.executable, "-c", span]) for _ in range(2)]
    extra = make_lease(function=f"{F}:span", args={"seconds": 0.2, "marks": str(marks)})
    assert runner.free_slots() == 2
    started = runner.offer([*command_leases, extra])
    assert len(started) == 2 and runner.free_slots() == 0
    rejected = view.wait_final(extra["task_id"])
    assert rejected["type"] == "rejected" and rejected["reason"] == "not enough free slots: it needs 1, 0 of 2 free"
    assert view.types(extra["task_id"]) == ["rejected"]
    # Keep offering work as slots free up, as the lease poller does; record when each ran.
    later = [make_lease(function=f"{F}:span", args={"seconds": 0.1, "marks": str(marks)}) for _ in range(4)]
    pending = list(later)
    while pending:
        wait_until(lambda: runner.free_slots() > 0, timeout=10, interval=0.005)
        runner.offer([pending.pop(0)])
    assert runner.wait_idle(10)
    for lease in [*command_leases, *later]:
        assert view.final(lease["task_id"])["status"] == "succeeded"
    spans = [tuple(map(float, line.split())) for line in marks.read_text().splitlines()]
    assert len(spans) == 6
    for start, _ in spans:  # at no start were more than two running (itself included)
        assert sum(1 for s, e in spans if s <= start < e) <= 2


def test_a_lease_that_does_not_fit_the_capacity_is_rejected(runner_factory, make_lease, view):
    runner = runner_factory(slots=4, capacity=Resources(cpu_millis=2000, memory_bytes=2**30, gpus=0, slots=4))
    big = make_lease(["true"], resources={"cpu_millis": 500, "memory_bytes": 2 * 2**30, "gpus": 0, "slots": 1})
    gpu = make_lease(["true"], resources={"gpus": 1, "slots": 1})
    runner.offer([big, gpu])
    assert view.wait_final(big["task_id"])["reason"] == "not enough memory: it needs 2.0Gi, 1.0Gi of 1.0Gi free"
    assert view.wait_final(gpu["task_id"])["reason"] == "not enough GPUs: it needs 1, 0 of 0 free"


def test_a_known_attempt_is_ignored_when_offered_again(runner_factory, make_lease, view):
    runner = runner_factory(slots=2)
    lease = make_lease(["sh", "-c", "echo once"])
    assert len(runner.offer([lease, dict(lease)])) == 1  # the same answer twice
    view.wait_final(lease["task_id"])
    assert runner.offer([lease]) == []  # a late re-send after it finished
    retry = {**lease, "attempt": 2}  # a new attempt of the same task is new work
    assert len(runner.offer([retry])) == 1
    runner.wait_idle(5)
    assert view.types(lease["task_id"]) == ["started", "finished", "started", "finished"]
    assert view.text(lease["task_id"], "stdout") == "once\nonce\n"


def test_a_malformed_lease_fails_without_running(runner_factory, make_lease, view):
    runner = runner_factory()
    lease = make_lease(None, None)
    runner.offer([lease, {"nonsense": True}])
    final = view.wait_final(lease["task_id"])
    assert view.types(lease["task_id"]) == ["finished"]
    assert final["status"] == "failed" and "exactly one of command and function" in final["error"]


def test_cancel_of_an_unknown_attempt_is_reported_and_its_late_lease_ignored(runner_factory, make_lease, view):
    runner = runner_factory()
    lease = make_lease(["true"])
    runner.cancel([{"task_id": lease["task_id"], "attempt": 1, "reason": "job cancelled"}])
    assert view.final(lease["task_id"]) == {**view.final(lease["task_id"]), "type": "cancelled"}
    assert runner.offer([lease]) == []


def test_the_workspace_is_removed_once_the_final_report_is_acknowledged(runner_factory, make_lease, view, tmp_path):
    runner = runner_factory()
    # The command leaves a sleeper behind in its process group: killed with the workspace.
    script = 'sleep 30 & echo $! > "$POLYFABRIC_WORKSPACE/leftover"; echo 1 > "$POLYFABRIC_RESULT"'
    lease = make_lease(["sh", "-c", script])
    runner.offer([lease])
    view.wait_final(lease["task_id"])
    workspace = tmp_path / "data" / "work" / f"{lease['task_id']}-1"
    leftover = int((workspace / "leftover").read_text())
    batch = view.outbox.peek()
    runner.acknowledged(batch.events[:1])  # "started" alone removes nothing
    assert workspace.exists()
    view.outbox.ack(batch)
    runner.acknowledged(batch.events)
    wait_until(lambda: not workspace.exists(), timeout=5, interval=0.01)
    wait_until(lambda: not psutil.pid_exists(leftover) or psutil.Process(leftover).status() == "zombie",
               timeout=5, interval=0.01)


def test_shutdown_hands_running_attempts_back_as_rejected(runner_factory, make_lease, view):
    runner = runner_factory(slots=2)
    command = make_lease(["sleep", "30"])
    function = make_lease(function=f"{F}:sleepy", args={"seconds": 30})
    runner.offer([command, function])
    wait_until(lambda: len(view.events()) == 2, timeout=5, interval=0.005)
    runner.stop_accepting()
    assert runner.free_slots() == 0
    late = make_lease(["true"])
    runner.offer([late])
    assert view.final(late["task_id"])["reason"] == "the agent is shutting down"
    assert not runner.wait_idle(0.05)
    assert runner.interrupt_all() == 2
    assert runner.wait_idle(5)
    for lease in (command, function):
        final = view.final(lease["task_id"])
        assert final["type"] == "rejected" and final["reason"] == "the agent is shutting down"


def test_refused_attempts_are_stopped_quietly(runner_factory, make_lease, view):
    runner = runner_factory()
    lease = make_lease(["sleep", "30"])
    runner.offer([lease])
    wait_until(lambda: view.types(lease["task_id"]) == ["started"], timeout=5, interval=0.005)
    runner.refused([{"task_id": lease["task_id"], "attempt": 1, "reason": "attempt 1 is not current"}])
    assert runner.wait_idle(5)
    assert view.types(lease["task_id"]) == ["started"]
