"""`polyfabric run`: submit, refuse invalid workflows as a whole, wait and watch with the right exit code."""

from __future__ import annotations

import json
from pathlib import Path

from .fake import FakeCoordinator

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

OK = """
    name: ok
    params: {n: 3}
    tasks:
      split:
        command:
          - python3
          - -c
          - "import json,os; json.dump(list(range({{ params.n }})), open(os.environ['POLYFABRIC_RESULT'],'w'))"
      square:
        depends_on: [split]
        foreach: tasks.split.result
        command:
          - python3
          - -c
          - >-
            import json,os; print('item {{ item }}');
            json.dump({{ item }} ** 2, open(os.environ['POLYFABRIC_RESULT'],'w'))
      total:
        depends_on: [square]
        env: {XS: "{{ tasks.square.result }}"}
        command:
          - python3
          - -c
          - "import json,os; json.dump(sum(json.loads(os.environ['XS'])), open(os.environ['POLYFABRIC_RESULT'],'w'))"
"""

FAILS = """
    name: fails
    tasks:
      boom:
        command: [python3, -c, "import sys; print('going down', file=sys.stderr); sys.exit(3)"]
"""

SLOW = """
    name: slow
    tasks:
      nap:
        command: [python3, -c, "import time; time.sleep(30)"]
"""


def test_run_prints_the_job_id_and_the_job_is_listed(cli, fake: FakeCoordinator, workflow):
    result = cli("run", workflow(OK), "--domain", "test")
    assert result.exit_code == 0, result.output
    job_id = result.stdout.strip()
    assert job_id.startswith("j-") and job_id in fake.jobs
    listed = json.loads(cli("job", "ls", "--json").stdout)
    assert [j["id"] for j in listed] == [job_id]
    assert listed[0]["name"] == "ok" and listed[0]["domain"] == "test"


def test_run_takes_the_tokens_only_domain_and_refuses_to_guess_between_several(cli, fake, workflow):
    result = cli("run", workflow(OK))
    assert result.exit_code == 0, result.output
    assert fake.jobs[result.stdout.strip()].domain == "test"

    fake.domains = ["a", "b"]
    result = cli("run", workflow(OK))
    assert result.exit_code == 2
    assert result.stderr.strip() == ("Error: this token may submit to a, b: name the domain to submit to: "
                                     "pass --domain (or set POLYFABRIC_DOMAIN)")
    assert len(fake.jobs) == 1


def test_an_invalid_workflow_lists_every_problem_exits_2_and_creates_nothing(cli, fake, workflow):
    path = workflow("""
        name: broken
        params: {shards: 4}
        tasks:
          split:
            command: "echo not a list"
            colour: red
          work:
            depends_on: [splt]
            when: "params.shardz > 1"
            command: [echo, "{{ tasks.split.result }}"]
    """)
    result = cli("run", path, "--domain", "test", "-p", "size=3")
    assert result.exit_code == 2, result.output
    err = result.stderr
    assert "Traceback" not in result.output
    assert "workflow 'broken' is invalid" in err
    for problem in ("task 'split': unknown key 'colour'", "task 'split': command must be a list of strings",
                    "depends on 'splt', which does not exist; did you mean 'split'?",
                    "param 'size' is not declared by the workflow"):
        assert problem in err, err
    assert err.count("\n  - ") >= 4
    assert fake.jobs == {}
    assert result.stdout == ""


def test_a_yaml_syntax_error_names_the_line_and_column_and_sends_nothing(cli, fake, workflow):
    path = workflow("""
        name: bad
        tasks:
          a:
            command: [echo, "unclosed]
          b: {command: [true]}
    """)
    result = cli("run", path)
    assert result.exit_code == 2
    first = result.stderr.splitlines()[0]
    assert first.startswith(f"Error: {path}:") and "YAML syntax error" in first, result.stderr
    line, column = first.split(f"{path}:")[1].split(":")[:2]
    assert line.isdigit() and column.isdigit()
    assert fake.requests == []


def test_a_document_that_is_not_a_map_is_refused_locally(cli, fake, workflow):
    result = cli("run", workflow("- just\n- a list\n"))
    assert result.exit_code == 2
    assert "must be a map with at least 'name' and 'tasks'" in result.stderr
    assert fake.requests == []


def test_params_are_sent_as_text_and_typed_by_the_declared_default(cli, fake, workflow):
    result = cli("run", workflow(OK), "-p", "n=5", "--wait", "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["job"]["status"] == "succeeded"
    assert out["result"]["tasks"]["split"] == [0, 1, 2, 3, 4]
    assert out["result"]["tasks"]["total"] == 30
    post = next(q for m, p, q in fake.requests if m == "POST")
    assert post == {}
    result = cli("run", workflow(OK), "-p", "n=many")
    assert result.exit_code == 2 and "param 'n' expects an integer" in result.stderr
    result = cli("run", workflow(OK), "-p", "novalue")
    assert result.exit_code == 2 and "is not key=value" in result.stderr


def test_run_wait_exits_0_on_success_and_prints_the_result(cli, fake, workflow):
    result = cli("run", workflow(OK), "--wait")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith("j-")
    assert f"job {lines[0]} succeeded: 5/5 done (succeeded 5)" in result.stdout
    assert "  total: 5" in result.stdout
    # Waiting rode the long-poll: a handful of event requests, not a polling loop.
    assert fake.calls("/events") <= 12, fake.calls("/events")


def test_run_wait_exits_1_when_the_workflow_fails(cli, workflow):
    result = cli("run", workflow(FAILS), "--wait")
    assert result.exit_code == 1, result.output
    assert "failed" in result.stdout.splitlines()[1]


def test_run_timeout_exits_124_and_the_job_goes_on(cli, fake, workflow):
    result = cli("run", workflow(SLOW), "--timeout", "1s")
    assert result.exit_code == 124, result.output
    job_id = result.stdout.splitlines()[0]
    assert "is still running after 1s" in result.stdout
    assert fake.jobs[job_id].status == "running"
    assert cli("job", "cancel", job_id).exit_code == 0
    assert cli("job", "wait", job_id, "--timeout", "20s").exit_code == 1


def test_run_watch_without_a_terminal_prints_one_line_per_change_then_the_result(cli, workflow):
    result = cli("run", workflow(OK), "--watch")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert out.startswith("submitted ok as job j-")
    for key in ("split", "square[0]", "square[2]", "total"):
        assert f" {key} running (attempt 1 on n-fake)" in out, out
        assert f" {key} succeeded" in out
    assert "\x1b[" not in out  # no terminal control codes in a pipe
    assert "succeeded: 5/5 done" in out
    assert "  total: 5" in out


def test_run_watch_of_a_failing_workflow_exits_1(cli, workflow):
    result = cli("run", workflow(FAILS), "--watch")
    assert result.exit_code == 1
    assert " boom failed" in result.stdout


def test_the_example_workflow_runs_with_overrides(cli, workflow):
    path = str(EXAMPLES / "shard_stats.yaml")
    result = cli("run", path, "-p", "shards=3", "-p", "size=10", "--wait", "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["job"]["status"] == "succeeded"
    assert [r["shard"] for r in out["result"]["tasks"]["work"]] == [0, 1, 2]
    assert out["result"]["result"]["summary"]["branch"] == "low"
    assert out["result"]["result"]["summary"]["shards"] == 3


def test_an_unreachable_coordinator_is_one_line_not_a_traceback(cli, workflow):
    result = cli("run", workflow(OK), "--domain", "test", url="http://127.0.0.1:9")
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: cannot reach the coordinator at http://127.0.0.1:9")
    assert "Traceback" not in result.output
