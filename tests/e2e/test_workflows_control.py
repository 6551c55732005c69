"""Workflows end to end, under control: timeouts, cancel, pause/resume, concurrency limits.

Real `polyfabric server` and one `polyfabric agent` (6 slots, tests/e2e on its --pythonpath) on
SQLite and PostgreSQL. Where a task must be killed, it writes its pids to files the test reads, and
the test checks on /proc that the processes (and their process group) are gone. Where a task must
wait for the test, it waits for a file the test creates. No sleeps as synchronization: the test
polls with deadlines or rides the events long-poll.
"""

from __future__ import annotations

import json
import time

import pytest

from polyfabric.agent.runner.groups import group_members

pytestmark = pytest.mark.e2e

SLOTS = 6


@pytest.fixture(scope="module")
def agent(workflows):
    return workflows.start_agents(1, slots=SLOTS, prefix="ctl")[0]


def _pid_task(workflows, name: str, seconds: int) -> tuple[list[str], object, object]:
    """A command that records its own pid (= its process group) and a child's, then waits on the
    child (`sleep SECONDS`); the two pid files."""
    group, child = workflows.path(f"{name}.group"), workflows.path(f"{name}.child")
    for path in (group, child):
        path.unlink(missing_ok=True)
    script = f"echo $$ > '{group}'; sleep {seconds} & echo $! > '{child}'; wait"
    return ["sh", "-c", script], group, child


def _gone(workflows, pgid: int, child: int) -> None:
    assert not workflows.pid_alive(pgid), f"the task's shell {pgid} is still alive"
    assert not workflows.pid_alive(child), f"the task's child {child} is still alive"
    assert group_members(pgid) == [], f"process group {pgid} still has members"


# -- 4. a timeout kills the whole process group ---------------------------------------------------------


def test_a_task_over_its_timeout_fails_naming_it_and_its_process_group_is_gone(workflows, agent):
    command, group_file, child_file = _pid_task(workflows, "timeout", 120)
    path = workflows.write("slow.yaml", {"name": "slow", "tasks": {"nap": {"command": command, "timeout": "1s"}}})
    done = workflows.run(path, "--wait", "--json", "--timeout", "60s")
    assert done.returncode == 1, f"{done.stdout}\n{done.stderr}\n{workflows.logs()}"
    out = json.loads(done.stdout)
    assert out["job"]["status"] == "failed" and out["job"]["counts"] == {"failed": 1}

    task = workflows.task(out["job"]["id"], "nap")
    assert task["status"] == "failed" and task["attempt"] == 1
    assert task["error"] == "timed out after 1s"
    assert [(a["status"], a["error"]) for a in task["attempts"]] == [("failed", "timed out after 1s")]
    took = task["attempts"][0]["finished_at"] - task["attempts"][0]["started_at"]
    assert 1.0 <= took < 10.0, took  # killed at its timeout, not at the end of `sleep 120`

    # The job finished only after the agent had killed the group: nothing of it is left.
    _gone(workflows, workflows.read_pid(group_file), workflows.read_pid(child_file))


# -- 5. cancel kills a running process ----------------------------------------------------------------


def test_cancelling_a_job_kills_its_running_process_and_the_job_ends_cancelled(workflows, agent):
    command, group_file, child_file = _pid_task(workflows, "cancel", 300)
    path = workflows.write("long.yaml", {"name": "long", "tasks": {"nap": {"command": command}}})
    submitted = workflows.run(path)
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.strip()

    workflows.wait_running(job_id, "nap")
    pgid, child = workflows.read_pid(group_file), workflows.read_pid(child_file)
    assert workflows.pid_alive(pgid) and workflows.pid_alive(child)

    cancelled = workflows.cli_json("job", "cancel", job_id, "--reason", "e2e: stop it")
    assert cancelled["id"] == job_id
    waited = workflows.cli("job", "wait", job_id, "--timeout", "30s")
    assert waited.returncode == 1, f"{waited.stdout}\n{waited.stderr}\n{workflows.logs()}"
    assert f"job {job_id} cancelled" in waited.stdout

    task = workflows.task(job_id, "nap")
    assert task["status"] == "cancelled" and task["failures"] == 0
    assert [a["status"] for a in task["attempts"]] == ["cancelled"]
    assert "e2e: stop it" in task["attempts"][0]["error"]
    _gone(workflows, pgid, child)
    audited = [r for r in workflows.fabric.audit(kind="job.cancel") if r["subject"] == f"job:{job_id}"]
    assert len(audited) == 1 and audited[0]["cause"] == "e2e: stop it"


# -- 6. pause and resume ---------------------------------------------------------------------------------


ITEMS = 5


def test_a_paused_job_starts_no_new_task_until_it_is_resumed(workflows, agent):
    gate_file = workflows.path("gate.open")
    gate_file.unlink(missing_ok=True)
    doc = {
        "name": "gated",
        "tasks": {
            "gate": {"command": ["sh", "-c", f"while [ ! -e '{gate_file}' ]; do sleep 0.02; done"]},
            "work": {"depends_on": ["gate"], "foreach": list(range(ITEMS)), "function": "workflow_functions:square",
                     "args": {"n": "{{ item }}"}},
            "total": {"depends_on": ["work"], "function": "workflow_functions:gather",
                      "args": {"results": "{{ tasks.work.result }}"}},
        },
    }
    job_id = workflows.submit(doc)
    workflows.wait_running(job_id, "gate")

    assert workflows.cli_json("job", "pause", job_id, "--reason", "e2e pause")["status"] == "paused"
    tip = workflows.event_tip(job_id)
    gate_file.touch()  # the running gate goes on and succeeds while the job is paused
    workflows.wait_task(job_id, "gate", lambda t: t["status"] == "succeeded", what="succeeded")

    # For a second after the gate succeeded, not one task of the job is handed out or started.
    events, _ = workflows.events_for(job_id, 1.0, after=tip)
    handed = [e for e in events if e["key"] != "work" and e["status"] in ("ready", "leased", "running")]
    assert handed == [], handed
    detail = workflows.cli_json("job", "show", job_id, "--all")
    assert detail["status"] == "paused"
    tasks = {t["key"]: t for t in detail["tasks"]}
    assert [tasks[f"work[{i}]"]["status"] for i in range(ITEMS)] == ["waiting"] * ITEMS
    assert all(tasks[f"work[{i}]"]["attempt"] == 0 for i in range(ITEMS))
    assert tasks["total"]["status"] == "waiting"
    seen_paused = time.time()

    assert workflows.cli_json("job", "resume", job_id, "--reason", "e2e resume")["status"] == "running"
    final = workflows.wait(job_id)
    assert final["status"] == "succeeded", final
    assert final["counts"] == {"succeeded": ITEMS + 2}
    result = workflows.jobs.result(job_id)
    assert result["tasks"]["total"] == {"count": ITEMS, "items": list(range(ITEMS)),
                                        "total": sum(i * i for i in range(ITEMS))}
    # Each item ran once, handed out after the test last saw them waiting (the same machine's clock).
    for i in range(ITEMS):
        attempts = workflows.task(job_id, f"work[{i}]")["attempts"]
        assert [a["status"] for a in attempts] == ["succeeded"]
        assert attempts[0]["leased_at"] > seen_paused, (attempts, seen_paused)


# -- 8. concurrency limits: a semaphore shared by two jobs, and max_parallel ---------------------------------


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    """The most intervals open at one instant (an end and a start at the same instant do not overlap)."""
    points = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals],
                    key=lambda p: (p[0], p[1]))
    most = now = 0
    for _, step in points:
        now += step
        most = max(most, now)
    return most


def _intervals(result: dict, *names: str) -> list[tuple[float, float]]:
    return [(r["start"], r["end"]) for name in names for r in result["tasks"][name]]


def test_a_semaphore_shared_by_two_workflows_never_lets_more_than_its_size_run(workflows, agent):
    assert workflows.cli_json("semaphore", "set", "e2e-licence", "2") == {"name": "e2e-licence", "size": 2,
                                                                          "in_use": 0}

    def doc(name: str) -> dict:
        return {"name": name, "tasks": {"hold": {
            "foreach": list(range(4)), "semaphore": "e2e-licence", "function": "workflow_functions:timed",
            "args": {"tag": name + "-{{ item }}", "seconds": 0.4}}}}

    jobs = [workflows.submit(doc("licensed-a")), workflows.submit(doc("licensed-b"))]
    finals = [workflows.wait(job_id) for job_id in jobs]
    assert [f["status"] for f in finals] == ["succeeded", "succeeded"], finals

    intervals = [i for job_id in jobs for i in _intervals(workflows.jobs.result(job_id), "hold")]
    assert len(intervals) == 8
    # The agent had 6 free slots: only the semaphore held the 8 tasks to 2 at a time, and it was used up.
    assert max_overlap(intervals) == 2, sorted(intervals)
    listed = {s["name"]: s for s in workflows.cli_json("semaphore", "ls")}
    assert listed["e2e-licence"] == {"name": "e2e-licence", "size": 2, "in_use": 0}


def test_max_parallel_caps_a_workflow_and_a_task(workflows, agent):
    doc = {
        "name": "capped",
        "max_parallel": 3,
        "tasks": {
            "wide": {"foreach": list(range(5)), "function": "workflow_functions:timed",
                     "args": {"tag": "wide-{{ item }}", "seconds": 0.3}},
            "narrow": {"foreach": list(range(3)), "max_parallel": 1, "function": "workflow_functions:timed",
                       "args": {"tag": "narrow-{{ item }}", "seconds": 0.3}},
        },
    }
    job_id = workflows.submit(doc)
    final = workflows.wait(job_id)
    assert final["status"] == "succeeded", final
    result = workflows.jobs.result(job_id)
    everything = _intervals(result, "wide", "narrow")
    assert len(everything) == 8
    assert max_overlap(everything) == 3, sorted(everything)  # the workflow's cap, reached, not exceeded
    assert max_overlap(_intervals(result, "narrow")) == 1, sorted(_intervals(result, "narrow"))
