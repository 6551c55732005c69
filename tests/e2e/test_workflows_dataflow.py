"""Workflows end to end, the data flowing: fan-out/fan-in, conditions, retries, refusal, the SDK.

Real `polyfabric server` and two `polyfabric agent` processes (4 slots each, tests/e2e on their
--pythonpath for the function tasks of workflow_functions.py) on SQLite and PostgreSQL; jobs are
submitted with the real CLI (`polyfabric run`) or the SDK, and inspected with `job show`,
`job result`, `task show` and `task logs`. Nothing sleeps to synchronize: `run --wait` and the
SDK ride the events long-poll.
"""

from __future__ import annotations

import json

import pytest

from polyfabric.sdk import ITEM, Client, Workflow

pytestmark = pytest.mark.e2e

RESULT = "open(os.environ['POLYFABRIC_RESULT'], 'w')"


def py(code: str) -> list[str]:
    """A command task running a python3 snippet (with json, os and sys imported)."""
    return ["python3", "-c", f"import json, os, sys\n{code}"]


@pytest.fixture(scope="module")
def agents(workflows):
    return workflows.start_agents(2, slots=4, prefix="flow")


def _run(workflows, name: str, doc: dict, *params: str) -> dict:
    """`polyfabric run FILE --wait --json`: {"job": final JobOut, "result": the job's result}."""
    path = workflows.write(name, doc)
    args = [arg for p in params for arg in ("-p", p)]
    done = workflows.run(path, *args, "--wait", "--json", "--timeout", "120s")
    assert done.returncode in (0, 1), f"{done.stdout}\n{done.stderr}\n{workflows.logs()}"
    return json.loads(done.stdout)


def _show(workflows, job_id: str) -> dict[str, dict]:
    """`job show --json --all`: every task by key."""
    detail = workflows.cli_json("job", "show", job_id, "--all")
    return {t["key"]: t for t in detail["tasks"]}


# -- 1. fan-out of 100 items, fan-in in item order ------------------------------------------------


FANOUT = {
    "name": "fanout",
    "params": {"count": 100},
    "tasks": {
        "split": {"command": py("json.dump(list(range({{ params.count }})), " + RESULT + ")")},
        "work": {"depends_on": ["split"], "foreach": "tasks.split.result",
                 "function": "workflow_functions:square", "args": {"n": "{{ item }}"}},
        # Two fan-ins: a function gets the list itself, a command gets it as JSON in its env.
        "gather": {"depends_on": ["work"], "function": "workflow_functions:gather",
                   "args": {"results": "{{ tasks.work.result }}"}},
        "tally": {"depends_on": ["work"], "env": {"RESULTS": "{{ tasks.work.result }}"},
                  "command": py("rs = json.loads(os.environ['RESULTS'])\n"
                                "json.dump({'items': [r['item'] for r in rs], 'squares': [r['square'] for r in rs]}, "
                                + RESULT + ")")},
    },
}


def test_a_fan_out_of_100_items_fans_in_their_results_in_item_order(workflows, agents):
    out = _run(workflows, "fanout.yaml", FANOUT)
    job = out["job"]
    assert job["status"] == "succeeded", (job, workflows.logs())
    assert job["counts"] == {"succeeded": 103} and job["total"] == 103  # split, 100 items, 2 fan-ins

    result = out["result"]
    items = list(range(100))
    work = result["tasks"]["work"]
    assert [(r["item"], r["square"]) for r in work] == [(i, i * i) for i in items]
    expected_gather = {"count": 100, "items": items, "total": sum(i * i for i in items)}
    expected_tally = {"items": items, "squares": [i * i for i in items]}
    assert result["tasks"]["gather"] == expected_gather
    assert result["tasks"]["tally"] == expected_tally
    assert result["tasks"]["split"] == items
    assert result["result"] == {"gather": expected_gather, "tally": expected_tally}
    assert result["status"] == "succeeded" and result["job_id"] == job["id"]

    # `job result --json` (a process of its own) says exactly the same.
    assert workflows.cli_json("job", "result", job["id"]) == result

    tasks = _show(workflows, job["id"])
    instances = [tasks[f"work[{i}]"] for i in items]
    assert all(t["status"] == "succeeded" and t["index"] == i for i, t in zip(items, instances, strict=True))
    assert tasks["work"]["is_group"] and tasks["work"]["status"] == "succeeded"
    ours = {a.node_id for a in agents}
    assert {t["node_id"] for t in instances} <= ours
    assert all(t["failures"] == 0 for t in tasks.values())


# -- 2. conditions ----------------------------------------------------------------------------------


BRANCHES = {
    "name": "branches",
    "params": {"threshold": 3},
    "tasks": {
        "probe": {"command": py("json.dump({'value': 5}, " + RESULT + ")")},
        "taken": {"depends_on": ["probe"], "when": "tasks.probe.result.value > params.threshold",
                  "command": py("json.dump('above', " + RESULT + ")")},
        "not_taken": {"depends_on": ["probe"], "when": "tasks.probe.result.value <= params.threshold",
                      "command": py("json.dump('at most', " + RESULT + ")")},
        # Downstream of each branch: the default trigger (all_success) and all_done.
        "after_taken": {"depends_on": ["taken"], "command": py("json.dump('after taken', " + RESULT + ")")},
        "strict": {"depends_on": ["not_taken"], "command": py("json.dump('strict ran', " + RESULT + ")")},
        "cleanup": {"depends_on": ["not_taken"], "trigger": "all_done",
                    "command": py("json.dump({'saw': '{{ tasks.not_taken.status }}'}, " + RESULT + ")")},
    },
}


@pytest.mark.parametrize(("threshold", "runs", "skipped"), [
    ("3", {"probe", "taken", "after_taken", "cleanup"}, {"not_taken", "strict"}),
    ("10", {"probe", "not_taken", "strict", "cleanup"}, {"taken", "after_taken"}),
])
def test_when_runs_the_true_branch_and_skips_the_false_one_and_triggers_decide_downstream(
        workflows, agents, threshold, runs, skipped):
    out = _run(workflows, f"branches-{threshold}.yaml", BRANCHES, f"threshold={threshold}")
    job = out["job"]
    assert job["status"] == "succeeded", (job, workflows.logs())  # a skip is not a failure
    assert job["counts"] == {"succeeded": 4, "skipped": 2}

    tasks = _show(workflows, job["id"])
    assert {k for k, t in tasks.items() if t["status"] == "succeeded"} == runs
    assert {k for k, t in tasks.items() if t["status"] == "skipped"} == skipped
    for key in skipped:  # never handed out
        assert tasks[key]["attempt"] == 0 and tasks[key]["node_id"] is None and tasks[key]["result"] is None
        assert workflows.jobs.task(tasks[key]["id"])["attempts"] == []

    results = out["result"]["tasks"]
    if threshold == "3":
        assert results["taken"] == "above" and results["after_taken"] == "after taken"
        # all_done ran although its dependency was skipped, and saw that it was.
        assert results["cleanup"] == {"saw": "skipped"}
        assert results["not_taken"] is None and results["strict"] is None
    else:
        assert results["not_taken"] == "at most" and results["strict"] == "strict ran"
        assert results["cleanup"] == {"saw": "succeeded"}
        assert results["taken"] is None and results["after_taken"] is None


# -- 3. retries ---------------------------------------------------------------------------------------


FLAKY = {
    "name": "flaky",
    "tasks": {
        "flaky": {
            "command": py("attempt = int(os.environ['POLYFABRIC_ATTEMPT'])\n"
                          "print(f'attempt {attempt} says hello', flush=True)\n"
                          "if attempt < 3:\n"
                          "    sys.exit(f'attempt {attempt} fails on purpose')\n"
                          "json.dump({'attempt': attempt}, " + RESULT + ")"),
            "retries": {"limit": 4, "backoff": "0s"},
        },
    },
}


def test_a_failing_task_is_retried_until_it_succeeds_and_every_attempt_stays_visible(workflows, agents):
    out = _run(workflows, "flaky.yaml", FLAKY)
    assert out["job"]["status"] == "succeeded", (out, workflows.logs())
    assert out["result"]["tasks"]["flaky"] == {"attempt": 3}

    task_id = _show(workflows, out["job"]["id"])["flaky"]["id"]
    task = workflows.cli_json("task", "show", task_id)
    assert (task["status"], task["attempt"], task["failures"], task["preemptions"]) == ("succeeded", 3, 2, 0)
    assert task["result"] == {"attempt": 3} and task["exit_code"] == 0
    attempts = task["attempts"]
    assert [a["attempt"] for a in attempts] == [1, 2, 3]
    assert [a["status"] for a in attempts] == ["failed", "failed", "succeeded"]
    assert [a["exit_code"] for a in attempts] == [1, 1, 0]
    assert attempts[0]["error"] == "exit code 1: attempt 1 fails on purpose"
    assert attempts[1]["error"] == "exit code 1: attempt 2 fails on purpose"
    assert attempts[2]["error"] is None
    assert all(a["node_id"] in {agent.node_id for agent in agents} for a in attempts)

    # Each attempt's logs stay readable: stdout to stdout, stderr to stderr.
    for number in (1, 2):
        logs = workflows.cli("task", "logs", task_id, "--attempt", str(number))
        assert logs.returncode == 0, logs.stderr
        assert logs.stdout == f"attempt {number} says hello\n"
        assert logs.stderr == f"attempt {number} fails on purpose\n"
    last = workflows.cli("task", "logs", task_id, "--attempt", "3")
    assert last.returncode == 0 and last.stdout == "attempt 3 says hello\n" and last.stderr == ""
    # Without --attempt: every attempt in order, each new one announced on stderr.
    every = workflows.cli("task", "logs", task_id)
    assert every.returncode == 0
    assert every.stdout == "".join(f"attempt {n} says hello\n" for n in (1, 2, 3))
    assert every.stderr == ("attempt 1 fails on purpose\n--- attempt 2 ---\n"
                            "attempt 2 fails on purpose\n--- attempt 3 ---\n")

    human = workflows.cli("task", "show", task_id)
    assert "failures 2" in human.stdout and "attempt 1 fails on purpose" in human.stdout


# -- 9. a cycle is refused, nothing is created ----------------------------------------------------------


CYCLIC = """\
name: cyclic
tasks:
  a: {command: ["true"], depends_on: [c]}
  b: {command: ["true"], depends_on: [a]}
  c: {command: ["true"], depends_on: [b]}
  fine: {command: ["true"]}
"""


def test_a_cyclic_workflow_is_refused_listing_the_cycle_and_nothing_is_created(workflows, agents):
    path = workflows.write("cyclic.yaml", CYCLIC)
    before = workflows.job_ids()
    for extra in ((), ("--wait",)):
        refused = workflows.run(path, *extra)
        assert refused.returncode == 2, (refused.stdout, refused.stderr)
        assert refused.stdout == ""
        assert refused.stderr.splitlines() == [
            "Error: workflow 'cyclic' is invalid (1 problem):",
            "  - cycle: a -> c -> b -> a (each task depends on the next)",
        ]
    assert workflows.job_ids() == before
    # The API says the same, as a list of problems.
    answer = workflows.fabric.http("POST", "/v1/jobs", json={
        "workflow": {"name": "cyclic", "tasks": {"a": {"command": ["true"], "depends_on": ["b"]},
                                                 "b": {"command": ["true"], "depends_on": ["a"]}}},
        "params": {}, "domain": workflows.domain})
    assert answer.status_code == 400
    assert answer.json()["error"]["problems"] == ["cycle: a -> b -> a (each task depends on the next)"]
    assert workflows.job_ids() == before


# -- 10. the SDK ------------------------------------------------------------------------------------


def test_a_workflow_built_with_the_sdk_runs_end_to_end_with_function_tasks(workflows, agents, workflow_functions):
    wf = Workflow("sdk-e2e", params={"count": 3})
    split = wf.command("split", ["python3", "-c", "import json, os; json.dump(list(range({{ params.count }})), "
                                 + RESULT + ")"])
    work = wf.function("work", workflow_functions.square, args={"n": ITEM}, foreach=split.result, retries=1,
                       timeout="30s")
    wf.function("total", workflow_functions.gather, args={"results": work.result})
    doc = wf.to_dict()
    # The nodes get a reference by module name, not the code; `total` depends on `work` by reading it.
    assert doc["tasks"]["work"]["function"] == "workflow_functions:square"
    assert doc["tasks"]["total"] == {"depends_on": ["work"], "function": "workflow_functions:gather",
                                     "args": {"results": "{{ tasks.work.result }}"}}

    with Client(workflows.fabric.url, workflows.fabric.admin_token) as client:
        run = client.run(wf, {"count": 7}, domain=workflows.domain, timeout=60)
        result = run.result()
        keys = [t["key"] for t in run.tasks()]
    assert run.succeeded and run.job["counts"] == {"succeeded": 9}
    expected = {"count": 7, "items": list(range(7)), "total": sum(i * i for i in range(7))}
    assert result["total"] == expected
    assert result.result == {"total": expected}
    assert [r["item"] for r in result["work"]] == list(range(7))
    assert keys == ["split", "total", "work", *(f"work[{i}]" for i in range(7))]
    # The same run through the CLI.
    assert workflows.cli_json("job", "result", run.id)["tasks"]["total"] == expected
