"""Self-healing and fencing end to end: real `polyfabric server` and agents, SQLite and PostgreSQL.

* A real cut: an agent stopped with SIGSTOP past the Down bound while it runs a task; the task
  is requeued and finishes on another agent; the stopped agent, continued, reports its late result,
  which is refused and audited; exactly one result is accepted; the agent rejoins by itself.
* A node that keeps failing tasks that succeed elsewhere is quarantined automatically, with the
  reason in the audit chain, and released by `polyfabric node resume`.
* A drain waits for the node's work, then retires the node; with `--deadline`, the work still
  there afterwards is moved to another node (lost, not failed).

Coordinator settings (see conftest): heartbeat 0.5 s, Down after 3 s; quarantine defaults
(3 failures confirmed elsewhere within 600 s, at least half the node's attempts). Every test
starts its own agents and retires them at its end, so no other test's node takes its work. Tests
wait by polling with deadlines, never by sleeping.
"""

from __future__ import annotations

import json
import signal
from collections.abc import Callable, Iterator

import pytest
import sqlalchemy as sa

from polyfabric.testing import AgentProcess, wait_until

from .conftest import CHECK, DOWN

pytestmark = pytest.mark.e2e

DOWN_BOUND = DOWN + CHECK + 1.5  # as in test_failure_detection: the bound plus a margin for a busy CI box


def py(code: str) -> list[str]:
    """A command task running a python3 snippet (json, os, sys, time imported)."""
    return ["python3", "-c", f"import json, os, sys, time\n{code}"]


RESULT = "json.dump({'attempt': int(os.environ['POLYFABRIC_ATTEMPT'])}, open(os.environ['POLYFABRIC_RESULT'], 'w'))"


@pytest.fixture
def start(workflows, fabric) -> Iterator[Callable[..., list[AgentProcess]]]:
    """Start agents for this test; at its end they are retired (so they take no later test's
    work) and stopped."""
    started: list[AgentProcess] = []

    def _start(count: int, *, slots: int = 2, prefix: str = "heal") -> list[AgentProcess]:
        agents = workflows.start_agents(count, slots=slots, prefix=prefix)
        started.extend(agents)
        return agents

    yield _start
    for agent in started:
        node_id = agent.node_id
        if node_id and fabric.node(node_id)["state"] != "retired":
            fabric.admin.post(f"/v1/nodes/{node_id}/retire", {"reason": "test over"})
    for agent in started:
        agent.stop()


def _attempts(fabric, task_id: str) -> list[tuple[int, str, str]]:
    """(attempt, status, node) of every attempt of a task, straight from the coordinator's database."""
    query = sa.text("SELECT attempt, status, node_id FROM task_attempts WHERE task_id = :t ORDER BY attempt")
    with fabric.engine.connect() as conn:
        return [tuple(row) for row in conn.execute(query, {"t": task_id})]


def _node_of(agents: list[AgentProcess], node_id: str) -> AgentProcess:
    return next(a for a in agents if a.node_id == node_id)


# -- 1. fencing: a real cut -----------------------------------------------------------------------


def test_a_late_result_from_an_agent_cut_off_past_the_down_bound_is_refused_and_the_agent_rejoins(
        workflows, fabric, start):
    agents = start(2, slots=1, prefix="cut")
    pid_file = workflows.path(f"cut-{fabric.backend}.pid")
    pid_file.unlink(missing_ok=True)
    # Attempt 1 records its pid, works for 2 s, then succeeds; later attempts succeed at once.
    job = workflows.submit({"name": "cut", "tasks": {"t": {"retries": 0, "command": py(
        "if os.environ['POLYFABRIC_ATTEMPT'] == '1':\n"
        f"    open({str(pid_file)!r}, 'w').write(f'{{os.getpid()}}\\n')\n"
        "    time.sleep(2)\n" + RESULT)}}})
    running = workflows.wait_running(job, "t", attempt=1)
    victim = _node_of(agents, running["node_id"])
    rescuer = next(a for a in agents if a is not victim)
    task_pid = workflows.read_pid(pid_file)

    victim.kill(signal.SIGSTOP)  # the agent freezes; its task's process runs on and ends
    try:
        fabric.wait_state(victim.node_id, "down", timeout=DOWN_BOUND + 10)
        done = workflows.wait(job, timeout=30)
        assert done["status"] == "succeeded"
        wait_until(lambda: not workflows.pid_alive(task_pid), timeout=10, message="attempt 1's process to end")
    finally:
        victim.kill(signal.SIGCONT)

    task = workflows.task(job, "t")
    # The late report of attempt 1 arrives, is refused, and the refusal is in the audit chain.
    # (Its late log chunks, if it had any left to send, are refused alike, as `type: log`.)
    refused = wait_until(lambda: [r for r in fabric.audit(subject=f"task:{task['id']}", kind="task.report_refused")
                                  if r["details"].get("type") != "log"],
                         timeout=20, message="the late report to be refused")
    assert refused[0]["actor"] == f"node:{victim.node_id}"
    assert refused[0]["details"] == {"type": "finished", "attempt": 1}
    assert "not current" in refused[0]["cause"] and "fenced" in refused[0]["cause"]

    # Exactly one result was accepted: attempt 2's, on the other node.
    assert _attempts(fabric, task["id"]) == [(1, "lost", victim.node_id), (2, "succeeded", rescuer.node_id)]
    task = workflows.task(job, "t")
    assert task["result"] == {"attempt": 2}
    assert (task["status"], task["failures"], task["lost"], task["node_id"]) == (
        "succeeded", 0, 1, rescuer.node_id)
    assert workflows.jobs.result(job)["tasks"]["t"] == {"attempt": 2}

    # The cut-off agent comes back by itself.
    fabric.wait_state(victim.node_id, "active", timeout=20)
    back = fabric.transitions(victim.node_id)[-1]
    assert back["details"] == {"from": "down", "to": "active", "trigger": "health"}
    assert fabric.cli("task", "show", task["id"]).stdout.count("Lost:       1") == 1


# -- 2. a node that keeps failing tasks is quarantined ---------------------------------------------


def test_a_node_that_keeps_failing_tasks_is_quarantined_with_the_reason_audited_and_resumed_by_an_operator(
        workflows, fabric, start):
    good, bad = start(2, slots=2, prefix="quar")
    broken = bad.data_dir / "broken"  # this node's "disk": every task on it crashes
    broken.write_text("yes\n")
    fabric.cli_json("node", "cordon", good.name)  # first, only the bad node takes work
    job = workflows.submit({"name": "quar", "tasks": {"w": {
        "foreach": [0, 1, 2], "retries": {"limit": 30, "backoff": "0.2s", "factor": 1},
        "command": py("ws = os.environ['POLYFABRIC_WORKSPACE']\n"
                      "if os.path.exists(os.path.join(ws, '..', '..', 'broken')):\n"
                      "    sys.exit('this node is broken')\n" + RESULT)}}})
    for index in range(3):
        workflows.wait_task(job, f"w[{index}]", lambda t: t["failures"] >= 1, what="a failure on the bad node")
    fabric.cli_json("node", "uncordon", good.name)

    node = fabric.wait_state(bad.node_id, "quarantined", timeout=30)
    record = fabric.transitions(bad.node_id)[-1]
    assert record["actor"] == "system:lifecycle"
    assert record["details"] == {"from": "active", "to": "quarantined", "trigger": "policy", "rule": "failures"}
    assert record["cause"].startswith("failing tasks: ") and "then succeeded on other nodes" in record["cause"]
    assert node["quarantine"]["trigger"] == "policy" and node["quarantine"]["reason"] == record["cause"]
    shown = fabric.cli("node", "show", bad.name)
    assert shown.returncode == 0 and "Quarantine: since " in shown.stdout and "failing tasks: " in shown.stdout

    # The work gets done on the good node; failures on the bad one used retries, nothing else.
    assert workflows.wait(job, timeout=30)["status"] == "succeeded"
    for index in range(3):
        task = workflows.task(job, f"w[{index}]")
        assert task["node_id"] == good.node_id and task["result"]["attempt"] == task["attempt"]
    assert fabric.node(bad.node_id)["state"] == "quarantined"

    # The owner repairs it; an operator resumes it; it takes work again.
    broken.unlink()
    out = fabric.cli_json("node", "resume", bad.name, "--reason", "replaced the disk")
    assert out["state"] == "active"
    record = fabric.transitions(bad.node_id)[-1]
    assert record["details"] == {"from": "quarantined", "to": "active", "trigger": "operator", "action": "resume"}
    assert record["cause"] == "replaced the disk"
    fabric.cli_json("node", "cordon", good.name)
    again = workflows.submit({"name": "again", "tasks": {"t": {"command": py(RESULT)}}})
    assert workflows.wait(again, timeout=30)["status"] == "succeeded"
    assert workflows.task(again, "t")["node_id"] == bad.node_id
    assert fabric.node(bad.node_id)["state"] == "active"


# -- 3. drains --------------------------------------------------------------------------------------


def test_a_drain_waits_for_the_running_task_takes_nothing_new_and_retires_the_node(workflows, fabric, start):
    [agent] = start(1, slots=2, prefix="drain")
    release = workflows.path(f"drain-release-{fabric.backend}")
    release.unlink(missing_ok=True)
    job = workflows.submit({"name": "drain", "tasks": {"hold": {"command": py(
        f"while not os.path.exists({str(release)!r}):\n    time.sleep(0.05)\n" + RESULT)}}})
    workflows.wait_running(job, "hold")
    out = fabric.cli_json("node", "drain", agent.name, "--reason", "hardware refresh")
    assert (out["state"], out["drain_deadline"]) == ("draining", None)
    later = workflows.submit({"name": "later", "tasks": {"t": {"command": py(RESULT)}}})
    workflows.wait_task(later, "t", lambda t: bool(t["pending_reason"]), what="unplaced, with a reason")
    assert fabric.node(agent.node_id)["state"] == "draining"

    release.write_text("go\n")
    fabric.wait_state(agent.node_id, "retired", timeout=20)
    record = fabric.transitions(agent.node_id)[-1]
    assert (record["actor"], record["cause"], record["details"]) == (
        "system:lifecycle", "drain complete: no task left on the node",
        {"from": "draining", "to": "retired", "trigger": "system", "rule": "drain"})
    assert workflows.wait(job, timeout=10)["status"] == "succeeded"
    hold = workflows.task(job, "hold")
    assert (hold["attempt"], hold["lost"], hold["node_id"]) == (1, 0, agent.node_id)
    # The job submitted during the drain never went to the draining node.
    assert workflows.task(later, "t")["attempts"] == []
    workflows.cli("job", "cancel", later)


def test_a_drain_with_a_deadline_moves_the_remaining_task_to_another_node_as_lost_not_failed(
        workflows, fabric, start):
    a, b = start(2, slots=1, prefix="deadline")
    fabric.cli_json("node", "cordon", b.name)
    pid_file = workflows.path(f"deadline-{fabric.backend}.pid")
    pid_file.unlink(missing_ok=True)
    # Attempt 1 would run for a minute (talking all along); a later attempt finishes at once.
    job = workflows.submit({"name": "deadline", "tasks": {"t": {"retries": 0, "command": py(
        "if os.environ['POLYFABRIC_ATTEMPT'] == '1':\n"
        f"    open({str(pid_file)!r}, 'w').write(f'{{os.getpid()}}\\n')\n"
        "    for _ in range(600):\n        print('working', flush=True)\n        time.sleep(0.1)\n" + RESULT)}}})
    workflows.wait_running(job, "t", attempt=1)
    task_pid = workflows.read_pid(pid_file)
    fabric.cli_json("node", "uncordon", b.name)

    out = fabric.cli_json("node", "drain", a.name, "--deadline", "2s", "--reason", "moving racks")
    assert out["state"] == "draining" and out["drain_deadline"] is not None
    record = fabric.transitions(a.node_id)[-1]
    assert record["details"] == {"from": "active", "to": "draining", "trigger": "operator", "action": "drain",
                                 "deadline_s": 2.0}

    assert workflows.wait(job, timeout=30)["status"] == "succeeded"
    task = workflows.task(job, "t")
    assert task["result"] == {"attempt": 2}
    assert (task["failures"], task["lost"], task["node_id"]) == (0, 1, b.node_id)
    assert _attempts(fabric, task["id"]) == [(1, "evicted", a.node_id), (2, "succeeded", b.node_id)]
    [moved] = fabric.audit(node=a.node_id, kind="task.evicted")
    assert moved["actor"] == "system:lifecycle" and moved["cause"].startswith(f"drain deadline of node {a.node_id}")
    # Empty once the attempt is moved: retired on the lifecycle controller's next pass (the job may end first).
    fabric.wait_state(a.node_id, "retired", timeout=20)
    # The node was told to stop the moved attempt: its process is gone.
    wait_until(lambda: not workflows.pid_alive(task_pid), timeout=20, message="the moved attempt to be stopped")

    shown = fabric.cli("job", "show", job)
    assert shown.returncode == 0 and "Lost:       1 attempt(s) lost with their node" in shown.stdout
    header, row = (line.split() for line in shown.stdout.split("Tasks:")[1].strip().splitlines()[:2])
    assert header[:5] == ["KEY", "ID", "STATUS", "ATTEMPT", "LOST"] and row[:5] == [
        "t", task["id"], "succeeded", "2", "1"]
    detail = json.loads(fabric.cli("job", "show", job, "--json").stdout)
    assert detail["lost"] == 1 and detail["tasks"][0]["lost"] == 1
