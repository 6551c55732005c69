"""`polyfabric job ...`: listing, showing a big job without printing all of it, results, logs, and steering."""

from __future__ import annotations

import json

from polyfabric.testing import wait_until

from .fake import FakeCoordinator

ECHO = """
    name: echo
    tasks:
      hello:
        command:
          - python3
          - -c
          - >-
            import json,os,sys; print('hello out'); print('hello err', file=sys.stderr);
            json.dump('hi', open(os.environ['POLYFABRIC_RESULT'],'w'))
      each:
        foreach: [a, b, c]
        command: [python3, -c, "print('line one of {{ item }}'); print('line two', end='')"]
"""

MANY = """
    name: many
    tasks:
      n:
        foreach: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24]
        command: [python3, -c, "pass"]
"""

SLOW = """
    name: slow
    tasks:
      first:
        command: [python3, -c, "import time; time.sleep(30)"]
      second:
        depends_on: [first]
        command: [python3, -c, "pass"]
"""

FLAKY = """
    name: flaky
    tasks:
      coin:
        command: [python3, -c, "import os,sys; sys.exit(0 if os.path.exists(os.environ['MARK']) else 1)"]
        env: {MARK: "%s"}
      after:
        depends_on: [coin]
        command: [python3, -c, "pass"]
"""


def _run(cli, path: str, *extra: str) -> str:
    result = cli("run", path, *extra)
    assert result.exit_code == 0, result.output
    return result.stdout.splitlines()[0]


def test_job_ls_json_and_filters(cli, workflow):
    first = _run(cli, workflow(ECHO), "--wait")
    second = _run(cli, workflow(SLOW))
    jobs = json.loads(cli("job", "ls", "--json").stdout)
    assert [j["id"] for j in jobs] == [second, first]  # newest first
    assert set(jobs[0]) >= {"id", "name", "domain", "status", "priority", "params", "submitted_by", "submitted_at",
                            "started_at", "finished_at", "counts", "total", "error"}
    running = json.loads(cli("job", "ls", "--status", "running", "--json").stdout)
    assert [j["id"] for j in running] == [second]
    assert json.loads(cli("job", "ls", "--domain", "elsewhere", "--json").stdout) == []
    table = cli("job", "ls").stdout.splitlines()
    assert table[0].split() == ["ID", "NAME", "DOMAIN", "STATUS", "PROGRESS", "PRIORITY", "SUBMITTED", "BY"]
    assert table[1].split()[:4] == [second, "slow", "test", "running"]
    assert cli("job", "ls", "--status", "bogus").exit_code == 2
    cli("job", "cancel", second)


def test_job_show_prints_counts_and_the_first_tasks_and_pages_with_all(cli, fake: FakeCoordinator, workflow):
    job_id = _run(cli, workflow(MANY), "--wait")
    out = cli("job", "show", job_id, "--limit", "5").stdout
    assert f"Job:        {job_id} (many)" in out
    assert "Progress:   25/25 done (succeeded 25)" in out
    assert "Tasks (the first 5 of 26; --all for every task):" in out
    rows = out.split("Tasks (")[1].splitlines()[2:]
    assert len(rows) == 5 and rows[0].split()[0] == "n"

    every = cli("job", "show", job_id, "--all").stdout
    keys = [line.split()[0] for line in every.split("Tasks:")[1].splitlines()[2:]]
    assert len(keys) == 26 and {f"n[{i}]" for i in range(25)} <= set(keys)
    # --all pages through the tasks endpoint.
    assert any(p.endswith("/tasks") for _, p, _ in fake.requests)

    detail = json.loads(cli("job", "show", job_id, "--json").stdout)
    assert detail["counts"] == {"succeeded": 25} and detail["total"] == 25
    task = next(t for t in detail["tasks"] if t["key"] == "n[3]")
    assert task["status"] == "succeeded" and task["attempt"] == 1 and task["node_id"] == "n-fake"
    only = json.loads(cli("job", "show", job_id, "--json", "--status", "succeeded").stdout)
    assert len(only["tasks"]) == 26  # the 25 items and the foreach task's own record


def test_job_result_and_logs_with_task_prefixes(cli, workflow):
    job_id = _run(cli, workflow(ECHO), "--wait")
    result = json.loads(cli("job", "result", job_id, "--json").stdout)
    assert result["status"] == "succeeded"
    assert result["tasks"]["hello"] == "hi"
    human = cli("job", "result", job_id).stdout
    assert human.startswith(f"job {job_id} succeeded\n") and '  hello: "hi"' in human

    logs = cli("job", "logs", job_id)
    assert logs.exit_code == 0
    assert "hello | hello out" in logs.stdout
    assert "hello | hello err" in logs.stderr
    for item, index in (("a", 0), ("b", 1), ("c", 2)):
        assert f"each[{index}] | line one of {item}" in logs.stdout
        assert f"each[{index}] | line two" in logs.stdout  # a last line without newline is flushed

    one = cli("job", "logs", job_id, "--task", "each[1]").stdout
    assert one.splitlines() == ["each[1] | line one of b", "each[1] | line two"]
    items = cli("job", "logs", job_id, "--task", "each").stdout
    assert [line.split(" | ")[0] for line in items.splitlines()] == ["each[0]"] * 2 + ["each[1]"] * 2 + ["each[2]"] * 2
    missing = cli("job", "logs", job_id, "--task", "nope")
    assert missing.exit_code == 1 and "has no task 'nope'" in missing.stderr


def test_job_logs_json_gives_each_tasks_streams_apart(cli, workflow):
    job_id = _run(cli, workflow(ECHO), "--wait")
    ids = {t["key"]: t["id"] for t in json.loads(cli("job", "show", job_id, "--json", "--all").stdout)["tasks"]}
    result = cli("job", "logs", job_id, "--json")
    assert result.exit_code == 0, result.output
    assert result.stderr == ""  # stderr chunks are in the JSON, not on the terminal
    entries = json.loads(result.stdout)
    # one entry per task that ran (not the foreach task's own record), in the listing's order
    assert [e["key"] for e in entries] == ["each[0]", "each[1]", "each[2]", "hello"]
    by_key = {e["key"]: e for e in entries}
    assert by_key["hello"] == {"key": "hello", "task_id": ids["hello"], "attempt": 1, "status": "succeeded",
                               "stdout": "hello out\n", "stderr": "hello err\n"}
    for item, index in (("a", 0), ("b", 1), ("c", 2)):
        entry = by_key[f"each[{index}]"]
        assert (entry["task_id"], entry["stdout"], entry["stderr"]) == (
            ids[f"each[{index}]"], f"line one of {item}\nline two", "")

    one = json.loads(cli("job", "logs", job_id, "--task", "each[1]", "--json").stdout)
    assert [(e["key"], e["stdout"]) for e in one] == [("each[1]", "line one of b\nline two")]
    items = json.loads(cli("job", "logs", job_id, "--task", "each", "--json").stdout)
    assert [e["key"] for e in items] == ["each[0]", "each[1]", "each[2]"]
    missing = cli("job", "logs", job_id, "--task", "nope", "--json")
    assert missing.exit_code == 1 and missing.stdout == "" and "has no task 'nope'" in missing.stderr


def test_job_wait_exit_codes(cli, workflow):
    ok = _run(cli, workflow(ECHO))
    result = cli("job", "wait", ok)
    assert result.exit_code == 0 and result.stdout.startswith(f"job {ok} succeeded")
    slow = _run(cli, workflow(SLOW))
    result = cli("job", "wait", slow, "--timeout", "0.5s", "--json")
    assert result.exit_code == 124
    assert json.loads(result.stdout)["status"] == "running"
    assert cli("job", "wait", slow, "--timeout", "soon").exit_code == 2


def test_pause_resume_priority_cancel(cli, fake: FakeCoordinator, workflow):
    job_id = _run(cli, workflow(SLOW))
    result = cli("job", "pause", job_id, "--reason", "maintenance")
    assert result.exit_code == 0 and result.stdout.strip() == f"job {job_id} is now paused"
    assert fake.jobs[job_id].status == "paused"
    assert json.loads(cli("job", "resume", job_id, "--json").stdout)["status"] == "running"
    result = cli("job", "set-priority", job_id, "7", "--reason", "urgent")
    assert result.stdout.strip() == f"job {job_id} now has priority 7"
    assert cli("job", "set-priority", job_id, "--", "-3").exit_code == 0
    assert fake.jobs[job_id].priority == -3
    posted = [(p, q) for m, p, q in fake.requests if m == "POST" and p.endswith("/priority")]
    assert len(posted) == 2

    assert cli("job", "cancel", job_id, "--reason", "not needed").exit_code == 0
    wait_until(lambda: fake.jobs[job_id].status == "cancelled", timeout=20, message="the job to be cancelled")
    result = cli("job", "wait", job_id)
    assert result.exit_code == 1 and f"job {job_id} cancelled" in result.stdout
    again = cli("job", "pause", job_id)
    assert again.exit_code == 1
    assert again.stderr.strip() == f"Error: job {job_id} is cancelled: nothing to pause (HTTP 409)"


def test_retry_reruns_the_failed_task_and_what_depends_on_it(cli, fake, workflow, tmp_path):
    mark = tmp_path / "mark"
    job_id = _run(cli, workflow(FLAKY % mark))
    assert cli("job", "wait", job_id).exit_code == 1
    detail = json.loads(cli("job", "show", job_id, "--json").stdout)
    assert {t["key"]: t["status"] for t in detail["tasks"]} == {"coin": "failed", "after": "skipped"}
    mark.write_text("")
    assert json.loads(cli("job", "retry", job_id, "--json").stdout)["id"] == job_id
    assert cli("job", "wait", job_id, "--timeout", "20s").exit_code == 0


def test_unknown_job_is_one_line(cli):
    for args in (("job", "show", "j-0000000000000000"), ("job", "wait", "j-0000000000000000"),
                 ("job", "result", "j-0000000000000000")):
        result = cli(*args)
        assert result.exit_code == 1
        assert result.stderr.strip() == "Error: no job 'j-0000000000000000' (HTTP 404)"
