"""Function tasks on warm workers: results, exceptions, output per call, timeouts that replace the worker."""

from __future__ import annotations

import os
import statistics
import time

import pytest

from polyfabric.agent.runner import Lease, WorkerPool
from polyfabric.agent.runner.interrupt import Interrupt
from polyfabric.agent.runner.streams import LogWriter
from polyfabric.agent.runner.workspace import Workspace
from polyfabric.testing import wait_until

__all__: list[str] = []

pytestmark = pytest.mark.skipif(os.name != "posix", reason="tasks run as POSIX process groups")

F = "pf_test_functions"


def test_a_function_returns_its_result_and_sees_its_task_environment(runner_factory, make_lease, view, tmp_path):
    runner = runner_factory()
    add = make_lease(function=f"{F}:add", args={"a": 2, "b": 40})
    who = make_lease(function=f"{F}:whoami", env={"EXTRA": "yes"})
    runner.offer([add, who])
    final = view.wait_final(add["task_id"])
    assert final == {**final, "type": "finished", "status": "succeeded", "result": 42, "error": None,
                     "exit_code": None}
    result = view.wait_final(who["task_id"])["result"]
    workspace = str(tmp_path / "data" / "work" / f"{who['task_id']}-1")
    assert result["cwd"] == workspace and result["task"] == who["task_id"]
    assert result["tmp"] == workspace + "/tmp" and result["extra"] == "yes"
    assert view.types(add["task_id"]) == ["started", "finished"]


def test_the_task_environment_does_not_leak_into_the_next_call(runner_factory, make_lease, view):
    runner = runner_factory(slots=1)
    first = make_lease(function=f"{F}:whoami", env={"EXTRA": "one"})
    runner.offer([first])
    view.wait_final(first["task_id"])
    second = make_lease(function=f"{F}:whoami")
    runner.offer([second])
    result = view.wait_final(second["task_id"])["result"]
    assert result["extra"] is None and result["task"] == second["task_id"]


def test_an_exception_fails_with_its_message_and_the_traceback_goes_to_stderr(runner_factory, make_lease, view):
    runner = runner_factory()
    lease = make_lease(function=f"{F}:boom", args={"message": "no such shard"})
    runner.offer([lease])
    final = view.wait_final(lease["task_id"])
    assert final["status"] == "failed" and final["error"] == "ValueError: no such shard"
    stderr = view.text(lease["task_id"], "stderr")
    assert stderr.startswith("Traceback (most recent call last):") and "in boom" in stderr
    assert stderr.rstrip().endswith("ValueError: no such shard")


def test_import_problems_and_non_json_results_fail_clearly(runner_factory, make_lease, view):
    runner = runner_factory()
    missing = make_lease(function="no_such_module_xyz:fn")
    bad_attr = make_lease(function=f"{F}:nope")
    not_json = make_lease(function=f"{F}:not_json")
    runner.offer([missing, bad_attr])
    assert "No module named 'no_such_module_xyz'" in view.wait_final(missing["task_id"])["error"]
    assert "has no attribute 'nope'" in view.wait_final(bad_attr["task_id"])["error"]
    runner.offer([not_json])
    assert "not JSON" in view.wait_final(not_json["task_id"])["error"]


def test_output_is_captured_per_call_with_offsets(runner_factory, make_lease, view):
    runner = runner_factory(slots=1)
    first = make_lease(function=f"{F}:chatty", args={"lines": 3, "tag": "a"})
    second = make_lease(function=f"{F}:chatty", args={"lines": 2, "tag": "b"})
    runner.offer([first])
    view.wait_final(first["task_id"])
    runner.offer([second])
    view.wait_final(second["task_id"])
    out_a = view.text(first["task_id"], "stdout")
    out_b = view.text(second["task_id"], "stdout")
    assert sorted(out_a.splitlines()) == sorted(["a 0", "a 1", "a 2", "raw fd write"])
    assert sorted(out_b.splitlines()) == sorted(["b 0", "b 1", "raw fd write"])
    assert view.text(first["task_id"], "stderr") == "to stderr\n"
    for task in (first, second):
        assert view.logs(task["task_id"], "stdout")[0]["offset"] == 0


def test_warm_workers_are_reused(runner_factory, make_lease, view):
    runner = runner_factory(slots=1)
    pids = []
    for _ in range(3):
        lease = make_lease(function=f"{F}:whoami")
        runner.offer([lease])
        pids.append(view.wait_final(lease["task_id"])["result"]["pid"])
    assert len(set(pids)) == 1


def test_a_timeout_kills_the_worker_and_a_fresh_one_takes_its_place(runner_factory, make_lease, view, pid_gone):
    runner = runner_factory(slots=1)
    warm = make_lease(function=f"{F}:whoami")
    runner.offer([warm])
    old_pid = view.wait_final(warm["task_id"])["result"]["pid"]
    slow = make_lease(function=f"{F}:sleepy", args={"seconds": 30}, timeout_s=0.3)
    runner.offer([slow])
    final = view.wait_final(slow["task_id"])
    assert final["status"] == "failed" and final["error"] == "timed out after 0.3s"
    assert pid_gone(old_pid)
    after = make_lease(function=f"{F}:whoami")
    runner.offer([after])
    new_pid = view.wait_final(after["task_id"])["result"]["pid"]
    assert new_pid != old_pid


def test_a_cancelled_call_is_reported_cancelled(runner_factory, make_lease, view):
    runner = runner_factory(slots=1)
    slow = make_lease(function=f"{F}:sleepy", args={"seconds": 30})
    runner.offer([slow])
    wait_until(lambda: view.types(slow["task_id"]) == ["started"], timeout=5, interval=0.005)
    time.sleep(0.05)
    runner.cancel([{"task_id": slow["task_id"], "attempt": 1, "reason": "job cancelled"}])
    final = view.wait_final(slow["task_id"])
    assert final["type"] == "cancelled" and final["reason"] == "job cancelled"


def test_a_worker_that_dies_fails_its_call(runner_factory, make_lease, view):
    runner = runner_factory(slots=1)
    lease = make_lease(function=f"{F}:die", args={"code": 7})
    runner.offer([lease])
    final = view.wait_final(lease["task_id"])
    assert final["status"] == "failed" and "died (exit code 7)" in final["error"]


def test_per_call_overhead_of_a_trivial_function_is_well_under_a_millisecond(tmp_path, functions_dir, make_lease):
    pool = WorkerPool(1, cwd=tmp_path, pythonpath=[functions_dir])
    workspace = Workspace.create(tmp_path / "work", "t-bench", 1)
    lease = Lease.from_wire(make_lease(function=f"{F}:trivial"))
    interrupt = Interrupt()
    try:
        times = []
        for i in range(300):
            out, err = LogWriter(lambda *a: None, "stdout"), LogWriter(lambda *a: None, "stderr")
            started = time.perf_counter()
            outcome = pool.call(lease, workspace, stdout=out, stderr=err, interrupt=interrupt)
            if i >= 20:  # the first calls start the worker and import the module
                times.append(time.perf_counter() - started)
            assert outcome.status == "succeeded"
        median = statistics.median(times)
        p90 = statistics.quantiles(times, n=10)[-1]
        print(f"\nfunction call round trip: median {median * 1e6:.0f} us, p90 {p90 * 1e6:.0f} us")
        assert median < 0.002  # target well under 1 ms; loose so a busy CI machine does not flake
    finally:
        pool.close()


def test_a_worker_that_cannot_start_fails_the_call_with_its_error(tmp_path, make_lease):
    shadow = tmp_path / "shadow"
    shadow.mkdir()
    (shadow / "orjson.py").write_text("raise ImportError('orjson is broken on this node')\n")
    pool = WorkerPool(1, cwd=tmp_path, pythonpath=[shadow], start_timeout_s=10)
    workspace = Workspace.create(tmp_path / "work", "t-nostart", 1)
    lease = Lease.from_wire(make_lease(function=f"{F}:trivial"))
    try:
        outcome = pool.call(lease, workspace, stdout=LogWriter(lambda *a: None, "stdout"),
                            stderr=LogWriter(lambda *a: None, "stderr"), interrupt=Interrupt())
    finally:
        pool.close()
    assert outcome.status == "failed"
    assert outcome.error is not None and outcome.error.startswith("the Python worker did not start")
    assert "orjson is broken on this node" in outcome.error
