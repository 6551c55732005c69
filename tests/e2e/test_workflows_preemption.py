"""Preemption end to end: a high-priority task takes a slot from a running low-priority one.

Real `polyfabric server` and ONE `polyfabric agent` with 2 slots, on SQLite and PostgreSQL. A
low-priority job fills both slots with tasks that hold until the test creates a release file; a
high-priority job then needs a slot. Exactly one low-priority task is stopped (its attempt ends
`preempted`, audited `task.preempted` naming the high-priority task), the high-priority task runs
in its slot, and the preempted task goes back to the queue and succeeds later, counted as a
preemption and not as a failure.
"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def agent(workflows):
    return workflows.start_agents(1, slots=2, prefix="pre")[0]


def test_a_high_priority_task_preempts_one_low_priority_task_which_runs_again_later(workflows, agent):
    release = workflows.path("low.release")
    release.unlink(missing_ok=True)
    hold = (f"while [ ! -e '{release}' ]; do sleep 0.02; done; "
            'echo "{\\"item\\": {{ item }}, \\"attempt\\": $POLYFABRIC_ATTEMPT}" > "$POLYFABRIC_RESULT"')
    low = workflows.submit({"name": "low", "priority": 0, "tasks": {
        "hold": {"foreach": [0, 1], "command": ["sh", "-c", hold]}}})
    for key in ("hold[0]", "hold[1]"):
        workflows.wait_running(low, key)

    high = workflows.submit({"name": "high", "priority": 10, "tasks": {
        "urgent": {"command": ["sh", "-c", 'echo \'"done"\' > "$POLYFABRIC_RESULT"']}}})
    final = workflows.wait(high, timeout=60)
    assert final["status"] == "succeeded", (final, workflows.logs())
    urgent = workflows.task(high, "urgent")
    assert urgent["result"] == "done" and urgent["priority"] == 10
    assert [(a["status"], a["node_id"]) for a in urgent["attempts"]] == [("succeeded", agent.node_id)]

    # Exactly one low-priority task was preempted, for the urgent task.
    holds = {key: workflows.task(low, key) for key in ("hold[0]", "hold[1]")}
    victims = [t for t in holds.values() if t["preemptions"] == 1]
    assert len(victims) == 1, holds
    victim = victims[0]
    spared = next(t for t in holds.values() if t is not victim)
    first = victim["attempts"][0]
    assert (first["attempt"], first["status"], first["preempted_by"]) == (1, "preempted", urgent["id"])
    assert urgent["attempts"][0]["started_at"] >= first["finished_at"]  # its slot was free by then
    assert spared["status"] == "running" and [a["status"] for a in spared["attempts"]] == ["running"]
    audited = [r for r in workflows.fabric.audit(kind="task.preempted") if r["subject"] == f"task:{victim['id']}"]
    assert len(audited) == 1, audited
    assert audited[0]["actor"] == "system:scheduler"
    assert audited[0]["details"]["for_task"] == urgent["id"] and urgent["id"] in audited[0]["cause"]
    assert audited[0]["details"]["attempt"] == 1 and audited[0]["details"]["node"] == agent.node_id

    # The victim went back to the queue and runs again in the slot the urgent task left.
    workflows.wait_running(low, victim["key"], attempt=2)
    release.touch()
    done = workflows.wait(low, timeout=60)
    assert done["status"] == "succeeded", (done, workflows.logs())
    assert done["counts"] == {"succeeded": 2}

    victim = workflows.task(low, victim["key"])
    assert (victim["status"], victim["attempt"], victim["failures"], victim["preemptions"]) == ("succeeded", 2, 0, 1)
    assert [a["status"] for a in victim["attempts"]] == ["preempted", "succeeded"]
    assert victim["result"] == {"item": victim["index"], "attempt": 2}
    spared = workflows.task(low, spared["key"])
    assert (spared["status"], spared["attempt"], spared["failures"], spared["preemptions"]) == ("succeeded", 1, 0, 0)
    events = workflows.jobs.events(low)["events"]
    assert any(e["key"] == victim["key"] and (e["status"], e["attempt"]) == ("ready", 2) for e in events), events
    # `task show` says why the first attempt ended.
    shown = workflows.cli("task", "show", victim["id"])
    row = next(line for line in shown.stdout.splitlines() if line.split()[:2] == ["1", "preempted"])
    assert f"preempted for task {urgent['id']}" in row and "preemptions 1" in shown.stdout
