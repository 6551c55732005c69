"""Faults of agents, on one coordinator (SQLite, then PostgreSQL), Down after 3 s.

* **Cut** (SIGSTOP past the Down bound, then SIGCONT): the stopped agent's tasks are requeued and
  finish elsewhere; when it runs again, its late results are refused and audited; every task's
  result is accepted exactly once.
* **A repeatedly crashing node** (its agent killed with SIGKILL while it runs tasks and started
  again, three times): quarantined automatically on its third Down (rule `flapping`, the reason in
  the audit chain); it stays Quarantined and gets no work when it comes back; the workflow it was
  part of loses nothing.
* **Agent kill -9 mid-task with checkpoint resume**: a checkpointing task's agent is killed; the
  task resumes on another node from its last checkpoint (at most the step in progress is redone).

Each scenario starts its own agents and retires them at its end, so no other scenario's node
takes its work.
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import polyfabric
from polyfabric.testing import AgentProcess, wait_until

from .harness import DOWN_BOUND, Fleet, Ledger, now, tally

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def fleet(module_backend: str, module_db_url: str, fleet_root: Path) -> Iterator[Fleet]:
    fleet = Fleet(fleet_root, module_db_url, module_backend)
    try:
        yield fleet.start()
    finally:
        fleet.close()


@pytest.fixture
def agents(fleet: Fleet) -> Iterator[Callable[..., list[AgentProcess]]]:
    started: list[AgentProcess] = []

    def start(count: int, *, slots: int, prefix: str) -> list[AgentProcess]:
        new = fleet.start_agents(count, slots=slots, prefix=prefix)
        started.extend(new)
        return new

    yield start
    for agent in started:
        agent.kill(signal.SIGCONT)
    fleet.retire(started)


def _running_on(fleet: Fleet, job: str) -> dict[str, list[str]]:
    """Node -> the tasks it runs (attempts leased or running) now."""
    out: dict[str, list[str]] = {}
    for task, (_, node) in fleet.in_flight(job).items():
        out.setdefault(node, []).append(task)
    return out


# -- (b) a cut agent: SIGSTOP past the Down bound, SIGCONT --------------------------------------------


def test_agent_cut_off_past_the_down_bound_its_late_results_are_refused(fleet: Fleet, agents, fault_report) -> None:
    a, b = agents(2, slots=2, prefix="cut")
    ledger = Ledger(fleet.root / f"cut-ledger-{fleet.backend}.txt")
    count = 6
    job = fleet.submit({"name": "cut", "tasks": {"t": {
        "foreach": [f"c{i}" for i in range(count)], "function": "fault_functions:slow_first", "retries": 0,
        "args": {"key": "{{ item }}", "first_s": 1.5, "then_s": 0.1, "ledger": str(ledger.path)}}}})
    by_node = {fleet.node_id(x): x for x in (a, b)}
    held = wait_until(lambda: (r := _running_on(fleet, job)) and max(r.items(), key=lambda kv: len(kv[1])),
                      timeout=60, message="tasks running")
    victim_node, victim_tasks = held
    victim = by_node[victim_node]
    wait_until(lambda: all(t in ledger.executions() for t in victim_tasks), timeout=30,
               message="the victim's tasks to start executing")

    stopped = time.monotonic()
    victim.kill(signal.SIGSTOP)  # frozen: no heartbeats, no reports; its tasks' processes run on and end
    try:
        fleet.wait_node_state(victim_node, "down", timeout=DOWN_BOUND + 15)
        down_s = time.monotonic() - stopped
        status = fleet.wait_job(job, timeout=60)
        recovery_s = time.monotonic() - stopped
    finally:
        victim.kill(signal.SIGCONT)
    continued = time.monotonic()

    # The late reports of the first attempts come in, are refused and audited.
    def refused() -> list[dict]:
        records = [r for r in fleet.audit("task.report_refused") if r["actor"] == f"node:{victim_node}"
                   and r["subject"].removeprefix("task:") in victim_tasks]
        return records if len(records) >= len(victim_tasks) else []

    late = wait_until(refused, timeout=30, message=f"the late reports of {victim_tasks} to be refused")
    refused_after_s = time.monotonic() - continued
    fleet.wait_node_state(victim_node, "active", timeout=30)  # it comes back by itself
    result = tally(fleet, job, ledger)
    row = fault_report(
        scenario="agent SIGSTOP past the Down bound, SIGCONT", backend=fleet.backend, recovery_s=round(recovery_s, 2),
        down_after_s=round(down_s, 2), victim_tasks=len(victim_tasks), late_refused=len(late),
        refused_after_continue_s=round(refused_after_s, 2), **result.figures(),
        notes=f"{len(victim_tasks)} tasks of the stopped agent ran again elsewhere; {len(late)} late results "
              f"refused+audited; Down after {down_s:.1f}s")
    assert status == "succeeded", row
    assert result.lost == 0, (result.mismatched, row)
    assert result.accepted_twice == 0, result.accepted_twice_store
    assert result.re_executed == len(victim_tasks), row
    assert result.attempts_lost == len(victim_tasks)
    for record in late:
        details = record["details"] if isinstance(record["details"], dict) else json.loads(record["details"])
        assert details == {"type": "finished", "attempt": 1}, record
        assert "not current" in record["cause"] and "fenced" in record["cause"]


# -- (d) a repeatedly crashing node is quarantined ----------------------------------------------------


def test_a_repeatedly_crashing_node_is_quarantined_with_the_reason_audited(fleet: Fleet, agents, fault_report) -> None:
    good, bad = agents(2, slots=2, prefix="crashy")
    good_node, bad_node = fleet.node_id(good), fleet.node_id(bad)
    ledger = Ledger(fleet.root / f"crashy-ledger-{fleet.backend}.txt")
    count = 12
    with fleet.leader().api(fleet.token) as api:  # while it crashes, only the crashing node takes work
        api.post(f"/v1/nodes/{good_node}/cordon", {"reason": "the crashing node first"})
    job = fleet.submit({"name": "crashy", "tasks": {"t": {
        "foreach": [f"k{i:02d}" for i in range(count)], "function": "fault_functions:work", "retries": 0,
        "args": {"key": "{{ item }}", "seconds": 1.5, "ledger": str(ledger.path)}}}})

    crashes = 0
    lost_with_crashes = 0
    crashed_tasks: set[str] = set()
    last_crash = time.monotonic()
    while crashes < 3:
        # Crash it while it runs something: tasks leased to it that began executing.
        def executing() -> list[str]:
            held = _running_on(fleet, job).get(bad_node, [])
            started = ledger.executions()
            return held if held and all(t in started for t in held) else []

        held = wait_until(executing, timeout=30, interval=0.02, message="the crashing node to run work")
        lost_with_crashes += len(held)
        crashed_tasks.update(held)
        last_crash = time.monotonic()
        bad.kill(signal.SIGKILL)
        crashes += 1
        fleet.wait_node_state(bad_node, "quarantined" if crashes == 3 else "down", timeout=DOWN_BOUND + 15)
        if crashes < 3:
            bad.start()  # a supervisor restarts it: same data dir, the same node
            fleet.wait_node_state(bad_node, "active", timeout=30)
    quarantined_s = time.monotonic() - last_crash

    [record] = [r for r in fleet.audit("node.transition", f"node:{bad_node}")
                if (r["details"] if isinstance(r["details"], dict) else json.loads(r["details"])).get("to")
                == "quarantined"]
    details = record["details"] if isinstance(record["details"], dict) else json.loads(record["details"])
    with fleet.leader().api(fleet.token) as api:
        api.post(f"/v1/nodes/{good_node}/uncordon", {"reason": "the rest goes to the good node"})
    back = now()
    bad.start()  # it comes back once more: it stays Quarantined and takes no work
    wait_until(lambda: fleet.heartbeats_after([bad_node], back), timeout=30, message="the node's heartbeats")
    status = fleet.wait_job(job, timeout=120)
    state_after = fleet.node_state(bad_node)
    result = tally(fleet, job, ledger)
    row = fault_report(
        scenario="node crashing 3 times (kill -9, restart) -> quarantined", backend=fleet.backend,
        recovery_s=round(quarantined_s, 2), crashes=crashes, rule=details.get("rule"),
        running_at_crashes=lost_with_crashes, **result.figures(),
        notes=f"quarantined {quarantined_s:.1f}s after the 3rd crash (rule {details.get('rule')}); "
              f"re-runs: the tasks it ran when it crashed ({lost_with_crashes} attempts)")
    assert status == "succeeded", row
    assert result.lost == 0, (result.mismatched, row)
    assert result.accepted_twice == 0, result.accepted_twice_store
    # Run again: the tasks it held when it crashed, one more execution per attempt lost with it (a
    # task that ended in the instant before the kill was accepted instead: not lost, not re-run).
    assert result.attempts_lost >= crashes and result.re_executed <= len(crashed_tasks), row
    assert result.executions - result.tasks == result.attempts_lost <= lost_with_crashes, row
    assert (record["actor"], details) == ("system:lifecycle", {"from": "down", "to": "quarantined",
                                                               "trigger": "health", "rule": "flapping"}), record
    assert "flapping" in record["cause"].lower() or "down 3 times" in record["cause"].lower(), record["cause"]
    assert state_after == "quarantined"
    with fleet.engine.connect() as conn:
        import sqlalchemy as sa

        late = conn.execute(sa.text("SELECT count(*) FROM task_attempts WHERE node_id = :n AND leased_at > :t"),
                            {"n": bad_node, "t": record["at"]}).scalar_one()
    assert late == 0, "a quarantined node was given work"
    assert good_node != bad_node


# -- (e) agent kill -9 mid-task, resumed from its checkpoint ----------------------------------------------


@pytest.mark.skipif(not hasattr(polyfabric, "task_context"), reason="checkpoints (polyfabric.task_context) "
                    "are not in this build yet")
def test_agent_kill_9_mid_task_resumes_from_the_last_checkpoint(fleet: Fleet, agents, fault_report) -> None:
    a, b = agents(2, slots=1, prefix="ckpt")
    ledger = Ledger(fleet.root / f"ckpt-ledger-{fleet.backend}.txt")
    progress = fleet.root / f"ckpt-progress-{fleet.backend}.txt"
    progress.unlink(missing_ok=True)
    steps, step_s = 12, 0.25
    job = fleet.submit({"name": "ckpt", "tasks": {"long": {
        "function": "fault_functions:steps", "retries": 0,
        "args": {"key": "long", "count": steps, "step_s": step_s, "ledger": str(ledger.path),
                 "progress": str(progress)}}}})

    def done_steps(attempt: int) -> list[int]:
        if not progress.exists():
            return []
        return [int(s) for _, a_, s in (line.split() for line in progress.read_text().splitlines())
                if int(a_) == attempt]

    wait_until(lambda: len(done_steps(1)) >= 5, timeout=60, message="five checkpointed steps")
    [(task_id, (_, node))] = fleet.in_flight(job).items()
    victim = next(x for x in (a, b) if x.node_id == node)
    killed = time.monotonic()
    victim.kill(signal.SIGKILL)
    at_kill = len(done_steps(1))
    fleet.wait_node_state(node, "down", timeout=DOWN_BOUND + 15)
    wait_until(lambda: done_steps(2), timeout=60, message="the second attempt to make progress")
    resumed_s = time.monotonic() - killed
    status = fleet.wait_job(job, timeout=60)
    with fleet.engine.connect() as conn:
        import sqlalchemy as sa

        final = conn.execute(sa.text("SELECT result FROM tasks WHERE id = :t"), {"t": task_id}).scalar_one()
    final = final if isinstance(final, dict) else json.loads(final)
    result = tally(fleet, job, ledger)
    redone = max(0, at_kill - int(final["started_at_step"]))
    row = fault_report(
        scenario="agent kill -9 mid-task, checkpoint resume", backend=fleet.backend, recovery_s=round(resumed_s, 2),
        steps=steps, steps_done_at_kill=at_kill, resumed_at_step=final["started_at_step"], steps_redone=redone,
        **result.figures(),
        notes=f"resumed at step {final['started_at_step']} of {steps} ({at_kill} done at the kill, {redone} redone)")
    assert status == "succeeded", row
    assert result.lost == 0 and result.accepted_twice == 0, row
    assert final["attempt"] == 2 and final["started_at_step"] >= at_kill - 1, row
    assert sorted(set(done_steps(2))) == list(range(final["started_at_step"], steps)), row
