"""The lease and report loops against a fake coordinator: delivery, resends, refusals, cancels, restarts."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from polyfabric.agent.runner import Outbox, Sync, TaskRunner
from polyfabric.client import AgentClient
from polyfabric.testing import wait_until

__all__: list[str] = []

pytestmark = pytest.mark.skipif(os.name != "posix", reason="tasks run as POSIX process groups")


def _unsigned(method: str, url: str, headers: dict[str, str], body: bytes, now: float) -> dict[str, str]:
    return {}


def lease(number: int, command: list[str], **fields: Any) -> dict[str, Any]:
    body = {"task_id": f"t-{number:016x}", "job_id": "j-0000000000000001", "key": f"k{number}", "attempt": 1,
            "command": command, "function": None, "args": {}, "env": {}, "workdir": None, "timeout_s": None,
            "resources": {"cpu_millis": 0, "memory_bytes": 0, "gpus": 0, "slots": 1}}
    body.update(fields)
    return body


@pytest.fixture
def start_sync(tmp_path: Path) -> Iterator[Callable[..., tuple[TaskRunner, Sync]]]:
    started: list[tuple[TaskRunner, Sync, list[AgentClient]]] = []

    def start(url: str, slots: int = 2, **sync_options: Any) -> tuple[TaskRunner, Sync]:
        outbox = Outbox()
        runner = TaskRunner(data_dir=tmp_path / "data", slots=slots, outbox=outbox, kill_grace_s=0.5,
                            flush_interval_s=0.02).start()
        clients = [AgentClient(url, _unsigned, timeout=5.0), AgentClient(url, _unsigned, timeout=5.0)]
        sync_options.setdefault("lease_wait_s", 0.2)
        sync_options.setdefault("backoff_base_s", 0.05)
        sync = Sync(runner, outbox, clients[0], clients[1], **sync_options).start()
        started.append((runner, sync, clients))
        return runner, sync

    yield start
    for runner, sync, clients in started:
        runner.stop_accepting()
        sync.stop()
        runner.close()
        sync.poller.join(3.0)
        for client in clients:
            client.close()


def test_a_lease_runs_once_and_its_reports_arrive_in_order(coordinator, start_sync):
    runner, _ = start_sync(coordinator.url)
    work = lease(1, ["sh", "-c", "echo hello; echo '{\"n\": 1}' > \"$POLYFABRIC_RESULT\""])
    coordinator.add_lease(work)
    final = wait_until(lambda: coordinator.final(work["task_id"]), timeout=10, message="the finished event")
    assert final["status"] == "succeeded" and final["result"] == {"n": 1}
    assert [e["type"] for e in coordinator.events(work["task_id"])] == ["started", "finished"]
    assert [c["data"] for c in coordinator.logs(work["task_id"])] == ["hello\n"]
    assert all(call["free_slots"] in (1, 2) for call in coordinator.lease_calls)
    # the workspace goes once the final report was acknowledged
    wait_until(lambda: not (runner.work_root / f"{work['task_id']}-1").exists(), timeout=5)


def test_reports_are_resent_until_acknowledged(coordinator, start_sync):
    coordinator.fail_reports = 3
    start_sync(coordinator.url)
    work = lease(2, ["sh", "-c", "echo out"])
    coordinator.add_lease(work)
    wait_until(lambda: coordinator.final(work["task_id"]), timeout=15, message="the finished event")
    assert coordinator.failed_reports == 3
    assert [e["type"] for e in coordinator.events(work["task_id"])] == ["started", "finished"]
    assert [c["data"] for c in coordinator.logs(work["task_id"])] == ["out\n"]


def test_reports_survive_a_coordinator_restart(start_coordinator, start_sync):
    first = start_coordinator(0)
    runner, _ = start_sync(first.url)
    work = lease(7, [sys.executable, "-c", "import time; print('working', flush=True); time.sleep(0.3); print('done')"])
    first.add_lease(work)
    wait_until(lambda: first.events(work["task_id"]), timeout=10, message="the started event")
    first.close()  # the coordinator goes away while the task runs; it finishes meanwhile
    assert runner.wait_idle(5)
    second = start_coordinator(first.port)  # and comes back on the same address
    final = wait_until(lambda: second.final(work["task_id"]), timeout=10, message="the finished event")
    assert final["status"] == "succeeded"
    text = "".join(c["data"] for c in first.logs(work["task_id"]) + second.logs(work["task_id"]))
    assert text == "working\ndone\n"


def test_cancel_in_a_lease_answer_stops_the_attempt(coordinator, start_sync):
    runner, _ = start_sync(coordinator.url)
    work = lease(3, ["sleep", "30"])
    coordinator.add_lease(work)
    wait_until(lambda: coordinator.events(work["task_id"]), timeout=10, message="the started event")
    coordinator.cancel(work["task_id"], 1, "job cancelled by token:alice")
    final = wait_until(lambda: coordinator.final(work["task_id"]), timeout=10, message="the cancelled event")
    assert final["type"] == "cancelled" and final["reason"] == "job cancelled by token:alice"
    assert runner.running() == []


def test_cancel_in_a_report_answer_stops_the_attempt(coordinator, start_sync):
    start_sync(coordinator.url)
    slow = lease(4, ["sleep", "30"])
    coordinator.report_cancels.append({"task_id": slow["task_id"], "attempt": 1, "reason": "stop it"})
    coordinator.add_lease(slow)
    final = wait_until(lambda: coordinator.final(slow["task_id"]), timeout=10, message="the cancelled event")
    assert final == {**final, "type": "cancelled", "reason": "stop it"}


def test_a_refused_attempt_is_stopped_and_its_reports_dropped(coordinator, start_sync, caplog):
    runner, _ = start_sync(coordinator.url)
    stale = lease(5, ["sleep", "30"])
    coordinator.refuse[(stale["task_id"], 1)] = "attempt 1 is not the task's current attempt"
    coordinator.add_lease(stale)
    wait_until(lambda: coordinator.events(stale["task_id"]), timeout=10, message="the started event")
    assert runner.wait_idle(5)
    assert [e["type"] for e in coordinator.events(stale["task_id"])] == ["started"]
    assert "not the task's current attempt" in caplog.text


def test_running_attempts_are_listed_in_reports(coordinator, start_sync):
    start_sync(coordinator.url, idle_report_s=0.2)
    slow = lease(6, [sys.executable, "-c", "import time; time.sleep(1)"])
    coordinator.add_lease(slow)
    ident = {"task_id": slow["task_id"], "attempt": 1}
    wait_until(lambda: any(r["running"] == [ident] and not r["events"] for r in coordinator.reports), timeout=5,
               message="an idle report listing the running attempt")


def test_a_report_item_the_coordinator_cannot_take_is_isolated_and_dropped(coordinator, start_sync, caplog):
    start_sync(coordinator.url, batch_delay_s=0.05)
    bad = lease(8, ["sh", "-c", "echo bad"])
    good = lease(9, ["sh", "-c", "echo good"])
    coordinator.poison.add(bad["task_id"])
    coordinator.add_lease(bad)
    coordinator.add_lease(good)
    wait_until(lambda: coordinator.final(good["task_id"]), timeout=10, message="the good task's final event")
    # only its events were poison: its log chunk still arrives (maybe after the good task's report)
    wait_until(lambda: [c["data"] for c in coordinator.logs(bad["task_id"])] == ["bad\n"], timeout=10,
               message="the bad task's log chunk")
    assert coordinator.events(bad["task_id"]) == []
    assert "cannot be delivered" in caplog.text


def test_the_poller_does_not_spin_on_leases_it_already_has(coordinator, start_sync):
    coordinator.fail_reports = 1  # "started" is late by one backoff (0.5 s): the lease keeps being re-sent
    start_sync(coordinator.url, backoff_base_s=0.25)
    work = lease(10, ["true"])
    coordinator.add_lease(work)
    wait_until(lambda: coordinator.final(work["task_id"]), timeout=10, message="the final event")
    assert len(coordinator.lease_calls) < 25, len(coordinator.lease_calls)
