"""Fault: the leading coordinator is killed with SIGKILL, two standbys on the same PostgreSQL.

Three coordinators (leader lease with its default 5 s lifetime), three agents of 4 slots that know
every address (each list starting elsewhere). The workflow: 146 short function tasks and 4 long
ones that run until released, so work is running across the failover. Once 40 short tasks
succeeded the leader gets SIGKILL. Measured and reported: the time until another coordinator
leads (asserted under the documented 10 s), until the workflow progresses again, until every agent
heartbeats to the new leader; and the counts: lost 0, accepted twice 0, re-executed 0 (the long
tasks finish as their first attempt), no node declared Down.

PostgreSQL only (SQLite has one coordinator).
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from polyfabric.testing import wait_until

from .harness import Fleet, Ledger, now, short_seconds, tally

pytestmark = [pytest.mark.e2e, pytest.mark.pg]

SHORT, HOLD = 146, 4
KILL_AFTER = 40
FAILOVER_BOUND_S = 10.0


@pytest.fixture(scope="module")
def module_backend() -> str:
    return "postgresql"


@pytest.fixture(scope="module")
def fleet(module_db_url: str, fleet_root: Path) -> Iterator[Fleet]:
    fleet = Fleet(fleet_root, module_db_url, "postgresql", coordinators=3, down=6.0)
    try:
        fleet.start()
        fleet.start_agents(3, slots=4, prefix="lead")
        yield fleet
    finally:
        fleet.close()


def test_leader_kill_9_with_two_standbys_hands_over_within_the_bound(fleet: Fleet, fault_report) -> None:
    first = fleet.leader()
    ledger = Ledger(fleet.root / "ledger.txt")
    release = fleet.root / "release"
    release.unlink(missing_ok=True)
    nodes = [fleet.node_id(a) for a in fleet.agents]
    job = fleet.submit({"name": "leader-kill", "tasks": {
        "hold": {"foreach": [f"h{i}" for i in range(HOLD)], "function": "fault_functions:hold", "retries": 0,
                 "args": {"key": "{{ item }}", "release": str(release), "ledger": str(ledger.path)}},
        "work": {"foreach": [{"k": f"w{i:03d}", "s": short_seconds(i)} for i in range(SHORT)],
                 "function": "fault_functions:work", "retries": 0,
                 "args": {"key": "{{ item.k }}", "seconds": "{{ item.s }}", "ledger": str(ledger.path)}},
    }})
    wait_until(lambda: fleet.count(job, "succeeded") >= KILL_AFTER, timeout=120, interval=0.02,
               message=f"{KILL_AFTER} tasks to succeed\n{fleet.logs()}")

    in_flight = fleet.in_flight(job)
    done_at_kill = fleet.count(job, "succeeded")
    killed_wall, killed = now(), time.monotonic()
    first.kill(signal.SIGKILL)
    standbys = [c for c in fleet.coordinators if c is not first]
    second = fleet.leader(standbys, timeout=30)
    failover_s = time.monotonic() - killed
    wait_until(lambda: fleet.count(job, "succeeded") > done_at_kill, timeout=60, interval=0.02,
               message=f"progress under the new leader\n{fleet.logs()}")
    progress_s = time.monotonic() - killed
    wait_until(lambda: fleet.heartbeats_after(nodes, killed_wall + failover_s), timeout=30,
               message="every agent's heartbeat to reach the new leader")
    reconnect_s = time.monotonic() - killed
    holds = fleet.in_flight(job)
    release.write_text("go\n")
    status = fleet.wait_job(job, timeout=180)
    finished_s = time.monotonic() - killed

    result = tally(fleet, job, ledger)
    executions = ledger.executions()
    hold_ids = {task for task, key, _, _ in ledger.lines() if key.startswith("h")}
    downs = fleet.downs(nodes, since=killed_wall)
    row = fault_report(
        scenario="leader kill -9, two standbys", backend="postgresql", recovery_s=round(failover_s, 2),
        bound_s=FAILOVER_BOUND_S, progress_after_s=round(progress_s, 2), reconnect_s=round(reconnect_s, 2),
        finished_after_kill_s=round(finished_s, 1), in_flight_at_kill=len(in_flight), nodes_down=len(downs),
        new_leader=second.url, **result.figures(),
        notes=f"new leader after {failover_s:.1f}s (bound {FAILOVER_BOUND_S:g}s), progress after {progress_s:.1f}s, "
              f"{len(in_flight)} in flight at the kill, none re-run")
    assert failover_s < FAILOVER_BOUND_S, row
    assert status == "succeeded", f"{row}\n{fleet.logs()}"
    assert result.tasks == SHORT + HOLD
    assert result.lost == 0, (result.mismatched, row)
    assert result.accepted_twice == 0, result.accepted_twice_store
    assert result.re_executed == 0, (result.re_executed_keys, row)
    assert all(executions[t] == 1 for t in in_flight), in_flight
    assert len(hold_ids) == HOLD and all(holds.get(t) == in_flight.get(t) for t in hold_ids), (holds, in_flight)
    assert result.refused_reports == 0, row  # what the old leader committed comes again: a repeat
    assert downs == [], downs
    for agent in fleet.agents:
        assert agent.alive(), f"agent {agent.name} exited:\n{agent.log()[-3000:]}"
