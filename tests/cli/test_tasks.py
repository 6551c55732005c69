"""`polyfabric task show|logs` (following a running task to its end) and `polyfabric semaphore`."""

from __future__ import annotations

import json
import threading

from polyfabric.testing import wait_until

from .fake import FakeCoordinator

TALKER = """
    name: talker
    tasks:
      talk:
        command:
          - python3
          - -c
          - >-
            import sys,time; [print(f'tick {i}', flush=True) or time.sleep(0.3) for i in range(5)];
            print('bye', file=sys.stderr)
"""

SECOND_TIME_LUCKY = """
    name: lucky
    tasks:
      coin:
        retries: {limit: 1, backoff: 0s}
        command:
          - python3
          - -c
          - "import os,sys; a=os.environ['POLYFABRIC_ATTEMPT']; print('attempt', a); sys.exit(0 if a == '2' else 4)"
"""


def _task_id(cli, fake: FakeCoordinator, job_id: str, key: str) -> str:
    def find() -> str | None:
        detail = json.loads(cli("job", "show", job_id, "--json").stdout)
        return next((t["id"] for t in detail["tasks"] if t["key"] == key), None)

    return wait_until(find, timeout=10, message=f"task {key} of {job_id}")


def test_task_logs_follow_prints_everything_until_the_task_is_done(cli, fake: FakeCoordinator, workflow):
    job_id = cli("run", workflow(TALKER)).stdout.strip()
    task_id = _task_id(cli, fake, job_id, "talk")
    result = cli("task", "logs", task_id, "-f")
    assert result.exit_code == 0, result.output
    assert result.stdout == "".join(f"tick {i}\n" for i in range(5))
    assert result.stderr == "bye\n"
    assert fake.jobs[job_id].tasks["talk"]["status"] == "succeeded"
    # Followed through the long-poll: a request per batch of output, not a polling loop.
    follows = [q for _, p, q in fake.requests if p.endswith("/logs")]
    assert all(q.get("wait_s") == "30" for q in follows)
    assert len(follows) <= 10, len(follows)

    # Without -f: what there is, at once.
    again = cli("task", "logs", task_id)
    assert again.stdout == result.stdout and again.stderr == "bye\n"


def test_task_logs_follow_started_before_the_task_runs(cli, fake: FakeCoordinator, workflow):
    fake.auto_run = False
    job_id = cli("run", workflow(TALKER)).stdout.strip()
    task_id = _task_id(cli, fake, job_id, "talk")
    outcome: dict = {}
    follower = threading.Thread(target=lambda: outcome.update(result=cli("task", "logs", task_id, "--follow")))
    follower.start()
    wait_until(lambda: fake.calls("/logs") >= 1, message="the follower to ask")
    fake.release()  # now the "agent" runs it
    follower.join(30)
    assert not follower.is_alive()
    assert outcome["result"].exit_code == 0
    assert outcome["result"].stdout.count("tick") == 5


def test_task_show_and_earlier_attempts_logs(cli, fake: FakeCoordinator, workflow):
    job_id = cli("run", workflow(SECOND_TIME_LUCKY), "--wait")
    assert job_id.exit_code == 0, job_id.output
    job_id = job_id.stdout.splitlines()[0]
    task_id = _task_id(cli, fake, job_id, "coin")

    shown = json.loads(cli("task", "show", task_id, "--json").stdout)
    assert shown["status"] == "succeeded" and shown["attempt"] == 2
    assert [(a["attempt"], a["status"], a["exit_code"]) for a in shown["attempts"]] == [(1, "failed", 4),
                                                                                      (2, "succeeded", 0)]
    human = cli("task", "show", task_id).stdout
    assert f"Task:       coin ({task_id})" in human
    assert "Status:     succeeded, attempt 2 (failures 1, preemptions 0)" in human
    attempts = human.split("Attempts:")[1].splitlines()
    assert attempts[1].split()[:2] == ["#", "STATUS"]
    assert attempts[2].split()[:3] == ["1", "failed", "n-fake"] and "exit code 4" in attempts[2]

    assert cli("task", "logs", task_id, "--attempt", "1").stdout == "attempt 1\n"
    assert cli("task", "logs", task_id, "--attempt", "2").stdout == "attempt 2\n"
    every = cli("task", "logs", task_id)
    assert every.stdout == "attempt 1\nattempt 2\n"
    assert every.stderr == "--- attempt 2 ---\n"


def test_unknown_task_is_one_line(cli):
    result = cli("task", "logs", "t-0000000000000000", "-f")
    assert result.exit_code == 1
    assert result.stderr.strip() == "Error: no task 't-0000000000000000' (HTTP 404)"


def test_semaphore_set_and_ls(cli):
    result = cli("semaphore", "set", "licence", "2")
    assert result.exit_code == 0 and result.stdout.strip() == "semaphore licence: size 2, 0 in use"
    cli("semaphore", "set", "db", "5")
    assert json.loads(cli("semaphore", "ls", "--json").stdout) == [
        {"name": "db", "size": 5, "in_use": 0}, {"name": "licence", "size": 2, "in_use": 0}]
    assert cli("semaphore", "ls").stdout.splitlines() == ["NAME     SIZE  IN USE", "db       5     0",
                                                          "licence  2     0"]
    assert cli("semaphore", "set", "x", "-1").exit_code == 2
