"""Fault: the coordinator is killed with SIGKILL while a workflow of 200 tasks runs, then restarted.

One coordinator (SQLite, then PostgreSQL) and three agents of 4 slots. The workflow: 196 short
function tasks (0.05-0.3 s each) and 4 long ones that run until the test releases them, so that
work is certainly running across the crash and the restart. Once 60 short tasks succeeded, the
coordinator gets SIGKILL and is started again on the same database and data dir. Checked and
reported: the workflow completes; every task's result was accepted exactly once (coordinator
records and the tasks' own ledger); no task was lost; no task was executed twice (a restart does
not re-run work that was running fine: the 4 long tasks and every attempt in flight at the kill
finish as the attempt they were); the agents reconnect by themselves (their heartbeats reach the
new process) and no node is declared Down.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from polyfabric.testing import wait_until

from .harness import Fleet, Ledger, now, short_seconds, tally

pytestmark = pytest.mark.e2e

SHORT, HOLD = 196, 4
AGENTS, SLOTS = 3, 4
KILL_AFTER = 60  # short tasks succeeded before the kill


@pytest.fixture(scope="module")
def fleet(module_backend: str, module_db_url: str, fleet_root: Path) -> Iterator[Fleet]:
    fleet = Fleet(fleet_root, module_db_url, module_backend)
    try:
        fleet.start()
        fleet.start_agents(AGENTS, slots=SLOTS, prefix="crash")
        yield fleet
    finally:
        fleet.close()


def workflow(ledger: Ledger, release: Path) -> dict:
    return {"name": "coordinator-crash", "tasks": {
        "hold": {"foreach": [f"h{i}" for i in range(HOLD)], "function": "fault_functions:hold", "retries": 0,
                 "args": {"key": "{{ item }}", "release": str(release), "ledger": str(ledger.path)}},
        "work": {"foreach": [{"k": f"w{i:03d}", "s": short_seconds(i)} for i in range(SHORT)],
                 "function": "fault_functions:work", "retries": 0,
                 "args": {"key": "{{ item.k }}", "seconds": "{{ item.s }}", "ledger": str(ledger.path)}},
    }}


def test_coordinator_kill_9_mid_workflow_loses_nothing_and_reruns_nothing(fleet: Fleet, fault_report) -> None:
    coordinator = fleet.coordinators[0]
    ledger = Ledger(fleet.root / "ledger.txt")
    release = fleet.root / "release"
    release.unlink(missing_ok=True)
    nodes = [fleet.node_id(a) for a in fleet.agents]
    job = fleet.submit(workflow(ledger, release))
    wait_until(lambda: fleet.count(job, "succeeded") >= KILL_AFTER, timeout=120, interval=0.02,
               message=f"{KILL_AFTER} tasks to succeed\n{fleet.logs()}")

    # -- kill -9 -----------------------------------------------------------------------------------
    in_flight = fleet.in_flight(job)  # read just before the kill: attempts that must not run again
    done_at_kill = fleet.count(job, "succeeded")
    killed_wall, killed = now(), time.monotonic()
    coordinator.kill(signal.SIGKILL)
    executions_at_kill = len(ledger.lines())

    # -- restart on the same database and data dir ---------------------------------------------------
    coordinator.start(timeout=60)
    restart_s = time.monotonic() - killed
    ran_while_down = len(ledger.lines()) - executions_at_kill
    wait_until(lambda: fleet.count(job, "succeeded") > done_at_kill, timeout=60, interval=0.02,
               message=f"progress after the restart\n{fleet.logs()}")
    recovery_s = time.monotonic() - killed
    restarted_wall = killed_wall + restart_s
    wait_until(lambda: fleet.heartbeats_after(nodes, restarted_wall), timeout=30,
               message="every agent's heartbeat to reach the restarted coordinator")
    reconnect_s = time.monotonic() - killed

    # The long tasks ran through the crash: still running, still their first attempt.
    holds = fleet.in_flight(job)
    release.write_text("go\n")
    status = fleet.wait_job(job, timeout=180)
    finished_s = time.monotonic() - killed

    result = tally(fleet, job, ledger)
    executions = ledger.executions()
    in_flight_rerun = sorted(t for t in in_flight if executions[t] != 1)
    downs = fleet.downs(nodes, since=killed_wall)
    row = fault_report(
        scenario="coordinator kill -9 mid-workflow (200 tasks)", backend=fleet.backend,
        recovery_s=round(recovery_s, 2), restart_s=round(restart_s, 2), reconnect_s=round(reconnect_s, 2),
        finished_after_kill_s=round(finished_s, 1), done_at_kill=done_at_kill, in_flight_at_kill=len(in_flight),
        ran_while_down=ran_while_down, nodes_down=len(downs), **result.figures(),
        notes=f"{len(in_flight)} attempts in flight at the kill, none re-run; {ran_while_down} executions "
              f"started while it was down; restart {restart_s:.1f}s")
    assert status == "succeeded", f"{row}\n{fleet.logs()}"
    assert result.tasks == SHORT + HOLD
    assert result.lost == 0, (result.mismatched, row)
    assert result.accepted_twice == 0, result.accepted_twice_store
    assert result.re_executed == 0, (result.re_executed_keys, row)
    assert result.executions == SHORT + HOLD
    assert in_flight and not in_flight_rerun, in_flight_rerun
    # The long ones were in flight at the kill and still ran as attempt 1 after the restart.
    hold_ids = {task for task, key, _, _ in ledger.lines() if key.startswith("h")}
    assert len(hold_ids) == HOLD and all(in_flight.get(t, (0, ""))[0] == 1 for t in hold_ids), in_flight
    assert all(holds.get(t) == in_flight[t] for t in hold_ids), (holds, in_flight)
    assert result.attempts_lost == 0
    # Reports the crashed process committed but never answered come again: repeats, not refusals.
    assert result.refused_reports == 0, row
    assert downs == [], downs
    for agent in fleet.agents:
        assert agent.alive(), f"agent {agent.name} exited:\n{agent.log()[-3000:]}"
